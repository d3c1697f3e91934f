//! `org.ws.Manager1` at `/org/ws`: open workspaces and find them.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use overlay::BackendKind;
use zbus::object_server::ObjectServer;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use super::args::{bool_options, bounded, counts, digest, fd_path, received, remote_options};
use super::{DbusError, Event, Objects, Shared, workspace_path};
use crate::manager::build::{BuildOptions, ElementOpen, ShellRequest, ShellStdio};
use crate::manager::{Caller, GcOptions, Manager, MountPoint, OpenRequest, RemoteOptions, Source};

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

impl ManagerIface {
    async fn open_element_with(
        &self,
        server: &ObjectServer,
        project: OwnedFd,
        element: String,
        mount_point: Option<MountPoint>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(OwnedObjectPath, bool, String), DbusError> {
        bounded("element", &element)?;
        let mut fresh = false;
        let mut backend = None;
        let mut options = options;
        let mut remotes = RemoteOptions::default();
        remote_options(&mut options, "open", &mut remotes)?;
        for (key, value) in options {
            match key.as_str() {
                "fresh" => {
                    fresh = bool::try_from(value).map_err(|_| {
                        DbusError::InvalidArgument("option \"fresh\" must be a boolean".into())
                    })?
                }
                "backend" => {
                    let name = String::try_from(value).map_err(|_| {
                        DbusError::InvalidArgument("option \"backend\" must be a string".into())
                    })?;
                    bounded("backend", &name)?;
                    if !name.is_empty() {
                        backend = Some(
                            name.parse::<BackendKind>()
                                .map_err(DbusError::InvalidArgument)?,
                        );
                    }
                }
                other => {
                    return Err(DbusError::InvalidArgument(format!(
                        "unknown option {}",
                        crate::workspace::shown(other)
                    )));
                }
            }
        }
        self.objects.ensure(server).await;
        let caller = self.caller;
        let opened = self
            .shared
            .run(move |m| {
                let request = ElementOpen {
                    project_dir: fd_path(&project),
                    element,
                    fresh,
                    path: mount_point,
                    backend,
                    remotes,
                };
                let opened = m.open_element(caller, request);
                drop(project);
                opened
            })
            .await?;
        let ws = opened.workspace;
        super::workspace_iface::add(server, &self.shared, caller, &ws)
            .await
            .map_err(DbusError::ZBus)?;
        let object = path(&ws.id)?;
        self.shared.notify(Event::Added { ws: Box::new(ws) });
        Ok((
            object,
            opened.continues_failed_build,
            opened.cache_key.to_string(),
        ))
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
        let source = received(source);
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
        let source = received(source);
        let at = MountPoint::from_fd(received(mount_point));
        let dir = Source::Dir(fd_path(&source));
        self.open_with(server, name, dir, vec![source], Some(at), backend)
            .await
    }

    /// Opens the workspace `name` over a tree already in the store
    /// (`<hex>/<size>`), which must be the caller's to read (as for
    /// `Store1.Checkout`).
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
        let counts = counts([
            ("objects", report.store.objects_checked),
            ("bytes", report.store.bytes_checked),
            ("trees", report.store.trees_checked),
            ("directories", report.store.dirs_checked),
            ("workspaces", report.workspaces_checked),
            ("snapshots", report.snapshots_checked),
        ]);
        Ok((report.is_clean(), problems, counts))
    }

    /// Collects garbage (root only); with `quota` > 0, evicts cached refs until
    /// the store's objects take at most `quota` bytes. Returns counts
    /// ("removed_objects", "removed_bytes", "kept_objects", "kept_bytes",
    /// "removed_snapshots", "removed_sysroots"), the evicted refs, and whether
    /// the quota holds.
    async fn gc(&self, quota: u64) -> Result<(HashMap<String, u64>, Vec<String>, bool), DbusError> {
        let caller = self.caller;
        let options = GcOptions {
            quota: (quota > 0).then_some(quota),
        };
        let report = self.shared.run(move |m| m.gc(caller, options)).await?;
        let counts = counts([
            ("removed_objects", report.sweep.removed_objects),
            ("removed_bytes", report.sweep.removed_bytes),
            ("kept_objects", report.sweep.kept_objects),
            ("kept_bytes", report.sweep.kept_bytes),
            ("removed_snapshots", report.removed_snapshots),
            ("removed_sysroots", report.removed_sysroots),
        ]);
        Ok((counts, report.evicted_refs, report.within_quota))
    }

    /// Builds `element` of the project whose directory `project` is (a descriptor
    /// the client opened; its `ws.toml` and sources are read with the caller's
    /// permissions) and what it depends on. Returns the build's object
    /// (`org.ws.Build1`) at once; subscribe to its signals before calling.
    /// `options`: "verify" (b): once the target is built or reused, rebuild it
    /// cleanly on a scratch layer and compare the artifacts (its report says
    /// "verify": "identical", "differs" or "failed", with "differences").
    async fn build(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &zbus::Connection,
        project: zbus::zvariant::OwnedFd,
        element: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, DbusError> {
        bounded("element", &element)?;
        let mut build = BuildOptions::default();
        let mut options = options;
        remote_options(&mut options, "build", &mut build.remotes)?;
        bool_options(options, "build", &mut [("verify", &mut build.verify)])?;
        self.objects.ensure(server).await;
        super::build_job::start(
            &self.shared,
            server,
            conn,
            self.caller,
            received(project),
            element,
            build,
        )
        .await
    }

    /// Runs `command` (an interactive shell if empty) in `element`'s build
    /// environment, on a throw-away layer over its sources, or over its
    /// buildtree with the option "buildtree": true (the one cached under its
    /// current key, a failed one included, else its workspace's last). The
    /// command runs on `stdin`, `stdout` and `stderr`; with "terminal": true,
    /// `stdin` is a terminal (a pty the client relays) that becomes its
    /// controlling terminal. Returns the shell's object (`org.ws.Shell1`) at
    /// once; subscribe to its signals before calling. Options: "buildtree" (b),
    /// "terminal" (b).
    #[allow(clippy::too_many_arguments)]
    async fn shell(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &zbus::Connection,
        project: zbus::zvariant::OwnedFd,
        element: String,
        command: Vec<String>,
        stdin: zbus::zvariant::OwnedFd,
        stdout: zbus::zvariant::OwnedFd,
        stderr: zbus::zvariant::OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, DbusError> {
        bounded("element", &element)?;
        for arg in &command {
            bounded("command argument", arg)?;
        }
        let mut request = ShellRequest {
            command,
            ..ShellRequest::default()
        };
        bool_options(
            options,
            "shell",
            &mut [
                ("buildtree", &mut request.buildtree),
                ("terminal", &mut request.terminal),
            ],
        )?;
        let stdio = ShellStdio {
            stdin: received(stdin),
            stdout: received(stdout),
            stderr: received(stderr),
        };
        super::shell_job::start(
            &self.shared,
            server,
            conn,
            self.caller,
            received(project),
            element,
            request,
            stdio,
        )
        .await
    }

    /// What building `element` would do, dependencies first: for each element
    /// an `a{sv}` with "element", "cache_key", "state" ("cached", "failed",
    /// "buildable" or "waiting" for dependencies), "source_digest",
    /// "dependency_hash", "workspace" and "kind".
    async fn show(
        &self,
        project: zbus::zvariant::OwnedFd,
        element: String,
    ) -> Result<Vec<HashMap<String, OwnedValue>>, DbusError> {
        bounded("element", &element)?;
        let project = received(project);
        let caller = self.caller;
        let shown = self
            .shared
            .run(move |m| m.show(caller, &fd_path(&project), &element))
            .await?;
        Ok(shown.iter().map(super::build_job::shown_value).collect())
    }

    /// Uploads the result recorded under `target`'s cache key (its artifact,
    /// buildtree, sources and log, then its action cache entry) to every remote
    /// cache that takes pushes. `target` is an element of the project
    /// `project`, or a cache key with the option "key": true. Options: "key"
    /// (b), "project" (b: false to use no project's remotes), "user-config"
    /// (s), "remote" (b). Returns a report (see docs/dbus.md).
    async fn push(
        &self,
        project: zbus::zvariant::OwnedFd,
        target: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<HashMap<String, OwnedValue>, DbusError> {
        super::transfer::run(
            &self.shared,
            self.caller,
            "push",
            project,
            target,
            options,
            Manager::push,
        )
        .await
    }

    /// Fetches the result under `target`'s cache key from the first remote
    /// cache that has a usable one (every blob verified) and records it here.
    /// Arguments, options and report as for `Push`.
    async fn pull(
        &self,
        project: zbus::zvariant::OwnedFd,
        target: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<HashMap<String, OwnedValue>, DbusError> {
        super::transfer::run(
            &self.shared,
            self.caller,
            "pull",
            project,
            target,
            options,
            Manager::pull,
        )
        .await
    }

    /// Opens a workspace named after `element` on its sources in the project
    /// `project`; if the element's current cache key has a failed build cached,
    /// the workspace continues from its buildtree (unless `options` has
    /// "fresh": true); when only a remote cache has that failed build, its
    /// buildtree is pulled. `options`: "fresh" (b), "backend" (s),
    /// "user-config" (s), "remote" (b). Returns the
    /// workspace, whether it continues a failed build, and the cache key.
    async fn open_element(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        project: zbus::zvariant::OwnedFd,
        element: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(OwnedObjectPath, bool, String), DbusError> {
        self.open_element_with(server, received(project), element, None, options)
            .await
    }

    /// As `OpenElement`, mounted on `mount_point` (as for `OpenAt`).
    async fn open_element_at(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        project: zbus::zvariant::OwnedFd,
        element: String,
        mount_point: zbus::zvariant::OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(OwnedObjectPath, bool, String), DbusError> {
        let at = MountPoint::from_fd(received(mount_point));
        self.open_element_with(server, received(project), element, Some(at), options)
            .await
    }

    /// The caller's saved element caches: (element, name, tree, size in bytes,
    /// last use in seconds since the epoch).
    async fn caches(&self) -> Result<Vec<(String, String, String, u64, u64)>, DbusError> {
        let caller = self.caller;
        let caches = self.shared.run(move |m| m.saved_caches(caller)).await?;
        Ok(caches
            .into_iter()
            .map(|c| (c.element, c.name, c.tree.to_string(), c.size, c.last_used))
            .collect())
    }

    /// Drops the caller's saved cache `name` of `element` ("" for all of the
    /// element's): its next build starts it empty. Returns the names dropped.
    async fn drop_cache(&self, element: String, name: String) -> Result<Vec<String>, DbusError> {
        bounded("element", &element)?;
        bounded("name", &name)?;
        let caller = self.caller;
        self.shared
            .run(move |m| {
                let name = (!name.is_empty()).then_some(name);
                m.drop_caches(caller, &element, name.as_deref())
            })
            .await
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
