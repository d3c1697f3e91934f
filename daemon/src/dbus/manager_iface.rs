//! `org.ws.Manager1` at `/org/ws`: open workspaces and find them.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use overlay::BackendKind;
use zbus::object_server::ObjectServer;
use zbus::zvariant::OwnedObjectPath;

use super::args::{bounded, digest, fd_path};
use super::{DbusError, Event, Objects, Shared, workspace_path};
use crate::manager::{Caller, GcOptions, MountPoint, OpenRequest, Source};

/// The manager interface of one connection.
#[derive(Debug)]
pub struct ManagerIface {
    shared: Arc<Shared>,
    caller: Caller,
    objects: Arc<Objects>,
}

impl ManagerIface {
    pub(super) fn new(shared: Arc<Shared>, caller: Caller, objects: Arc<Objects>) -> ManagerIface {
        ManagerIface {
            shared,
            caller,
            objects,
        }
    }

    async fn open_with(
        &self,
        server: &ObjectServer,
        name: String,
        source: Source,
        keep: Vec<OwnedFd>,
        mount_point: Option<MountPoint>,
        backend: String,
    ) -> Result<OwnedObjectPath, DbusError> {
        bounded("name", &name)?;
        bounded("backend", &backend)?;
        let backend = match backend.as_str() {
            "" => None,
            other => Some(
                other
                    .parse::<BackendKind>()
                    .map_err(DbusError::InvalidArgument)?,
            ),
        };
        let caller = self.caller;
        let request = OpenRequest {
            name,
            source,
            path: mount_point,
            backend,
        };
        self.objects.ensure(server).await;
        let ws = self
            .shared
            .run(move |m| {
                // The descriptors stay open while their /proc/self/fd paths are used.
                let _keep = keep;
                m.open_workspace(caller, request)
            })
            .await?;
        super::workspace_iface::add(server, &self.shared, caller, &ws)
            .await
            .map_err(DbusError::ZBus)?;
        let path = path(&ws.id);
        self.shared.notify(Event::Added { ws: Box::new(ws) });
        path
    }
}

fn path(id: &str) -> Result<OwnedObjectPath, DbusError> {
    OwnedObjectPath::try_from(workspace_path(id)).map_err(|e| DbusError::Io(e.to_string()))
}

#[zbus::interface(name = "org.ws.Manager1")]
impl ManagerIface {
    /// Opens the workspace `name` over the directory `source` (a descriptor the
    /// client opened: the daemon reads nothing the client could not name) and
    /// mounts it under the daemon's state directory. `backend` is "overlayfs",
    /// "fuse-overlayfs", "mirror" or "" for the daemon's choice. Returns the
    /// workspace's object.
    async fn open(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        source: zbus::zvariant::OwnedFd,
        backend: String,
    ) -> Result<OwnedObjectPath, DbusError> {
        let source: OwnedFd = source.into();
        let dir = Source::Dir(fd_path(&source));
        self.open_with(server, name, dir, vec![source], None, backend)
            .await
    }

    /// As `Open`, mounted on `mount_point`: a descriptor of an empty directory the
    /// caller owns (checked and mounted on through the descriptor itself).
    async fn open_at(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        source: zbus::zvariant::OwnedFd,
        mount_point: zbus::zvariant::OwnedFd,
        backend: String,
    ) -> Result<OwnedObjectPath, DbusError> {
        let source: OwnedFd = source.into();
        let at = MountPoint::from_fd(mount_point.into());
        let dir = Source::Dir(fd_path(&source));
        self.open_with(server, name, dir, vec![source], Some(at), backend)
            .await
    }

    /// Opens the workspace `name` over a tree already in the store
    /// (`<hex>/<size>`).
    async fn open_tree(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
        tree: String,
        backend: String,
    ) -> Result<OwnedObjectPath, DbusError> {
        let tree = digest("tree", &tree)?;
        self.open_with(server, name, Source::Tree(tree), Vec::new(), None, backend)
            .await
    }

    /// The caller's workspace named `name`.
    async fn get(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        name: String,
    ) -> Result<OwnedObjectPath, DbusError> {
        bounded("name", &name)?;
        self.objects.ensure(server).await;
        let caller = self.caller;
        let ws = self.shared.run(move |m| m.get(caller, &name)).await?;
        path(&ws.id)
    }

    /// The caller's workspaces: (name, object).
    async fn list(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<Vec<(String, OwnedObjectPath)>, DbusError> {
        self.objects.ensure(server).await;
        let caller = self.caller;
        let list = self.shared.run(move |m| m.list(caller)).await?;
        list.into_iter()
            .filter(|ws| ws.owner == caller.uid)
            .map(|ws| Ok((ws.name.clone(), path(&ws.id)?)))
            .collect()
    }

    /// Checks the store and the daemon's database (root only): whether all is
    /// well, each problem as a sentence, and counts ("objects", "bytes", "trees",
    /// "directories", "workspaces", "snapshots").
    async fn fsck(&self) -> Result<(bool, Vec<String>, HashMap<String, u64>), DbusError> {
        let caller = self.caller;
        let report = self.shared.run(move |m| m.fsck(caller)).await?;
        let problems = report
            .store
            .problems
            .iter()
            .map(|p| p.to_string())
            .chain(report.problems.iter().map(|p| p.to_string()))
            .collect();
        let counts = HashMap::from([
            ("objects".to_owned(), report.store.objects_checked),
            ("bytes".to_owned(), report.store.bytes_checked),
            ("trees".to_owned(), report.store.trees_checked),
            ("directories".to_owned(), report.store.dirs_checked),
            ("workspaces".to_owned(), report.workspaces_checked),
            ("snapshots".to_owned(), report.snapshots_checked),
        ]);
        Ok((report.is_clean(), problems, counts))
    }

    /// Collects garbage (root only); with `quota` > 0, evicts cached refs until
    /// the store's objects take at most `quota` bytes. Returns counts
    /// ("removed_objects", "removed_bytes", "kept_objects", "kept_bytes",
    /// "removed_snapshots"), the evicted refs, and whether the quota holds.
    async fn gc(&self, quota: u64) -> Result<(HashMap<String, u64>, Vec<String>, bool), DbusError> {
        let caller = self.caller;
        let options = GcOptions {
            quota: (quota > 0).then_some(quota),
        };
        let report = self.shared.run(move |m| m.gc(caller, options)).await?;
        let counts = HashMap::from([
            ("removed_objects".to_owned(), report.sweep.removed_objects),
            ("removed_bytes".to_owned(), report.sweep.removed_bytes),
            ("kept_objects".to_owned(), report.sweep.kept_objects),
            ("kept_bytes".to_owned(), report.sweep.kept_bytes),
            ("removed_snapshots".to_owned(), report.removed_snapshots),
        ]);
        Ok((counts, report.evicted_refs, report.within_quota))
    }

    /// The interface's version.
    #[zbus(property)]
    fn version(&self) -> u32 {
        1
    }

    /// The daemon's build.
    #[zbus(property)]
    fn daemon_version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }
}
