//! `org.ws.Workspace1`, one object per workspace at `/org/ws/workspace/<id>`:
//! its state as properties (with `PropertiesChanged`), and the operations on it.

use std::sync::Arc;

use std::collections::HashMap;

use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::{OwnedValue, Value};

use super::args::received;
use super::{DbusError, Event, Shared, workspace_path};
use crate::manager::{Caller, MountPoint};
use crate::workspace::Workspace;

/// One workspace's object on one connection.
#[derive(Debug)]
pub struct WorkspaceIface {
    shared: Arc<Shared>,
    caller: Caller,
    ws: Workspace,
    dirty: u32,
}

/// Adds `ws`'s object to `server` (a no-op if it is there).
pub(super) async fn add(
    server: &ObjectServer,
    shared: &Arc<Shared>,
    caller: Caller,
    ws: &Workspace,
) -> zbus::Result<bool> {
    let iface = WorkspaceIface {
        shared: shared.clone(),
        caller,
        ws: ws.clone(),
        dirty: 0,
    };
    server.at(workspace_path(&ws.id), iface).await
}

/// Shows `ws` (with `dirty` changed paths) on its object, announcing what changed.
pub(super) async fn show(server: &ObjectServer, ws: Workspace, dirty: u32) -> zbus::Result<()> {
    let Ok(iface) = server
        .interface::<_, WorkspaceIface>(workspace_path(&ws.id))
        .await
    else {
        return Ok(());
    };
    let mut current = iface.get_mut().await;
    let emitter = iface.signal_emitter();
    let old = std::mem::replace(&mut current.ws, ws);
    if current.dirty != dirty {
        current.dirty = dirty;
        current.dirty_changed(emitter).await?;
    }
    if old.source_digest != current.ws.source_digest {
        current.source_digest_changed(emitter).await?;
    }
    if old.state != current.ws.state {
        current.state_changed(emitter).await?;
    }
    if old.dependency_hash != current.ws.dependency_hash {
        current.dependency_hash_changed(emitter).await?;
    }
    if old.artifact_ref != current.ws.artifact_ref {
        current.artifact_ref_changed(emitter).await?;
    }
    if old.last_build != current.ws.last_build {
        current.last_build_changed(emitter).await?;
    }
    Ok(())
}

impl WorkspaceIface {
    fn name_of(&self) -> String {
        self.ws.name.clone()
    }

    /// Commits, and shows the outcome on this object and the owner's others;
    /// returns the source digest.
    async fn commit_shown(
        &mut self,
        emitter: &SignalEmitter<'_>,
        message: String,
    ) -> Result<String, DbusError> {
        let (caller, name) = (self.caller, self.name_of());
        let message = (!message.is_empty()).then_some(message);
        let status = self
            .shared
            .run(move |m| m.commit(caller, &name, message))
            .await?;
        let digest = status.workspace.source_digest.to_string();
        if status.workspace.source_digest != self.ws.source_digest {
            self.ws = status.workspace;
            self.dirty = 0;
            self.source_digest_changed(emitter)
                .await
                .map_err(DbusError::ZBus)?;
            self.dirty_changed(emitter).await.map_err(DbusError::ZBus)?;
            // The owner's other connections.
            self.shared.notify(Event::Changed {
                ws: Box::new(self.ws.clone()),
                dirty: 0,
            });
        }
        Ok(digest)
    }
}

#[zbus::interface(name = "org.ws.Workspace1")]
impl WorkspaceIface {
    /// The owner's name for it.
    #[zbus(property)]
    fn name(&self) -> String {
        self.ws.name.clone()
    }

    /// Where its files are.
    #[zbus(property)]
    fn path(&self) -> String {
        self.ws.path.display().to_string()
    }

    /// "open" or "unmounted".
    #[zbus(property)]
    fn state(&self) -> String {
        self.ws.state.name().to_owned()
    }

    /// "overlayfs", "fuse-overlayfs" or "mirror".
    #[zbus(property)]
    fn backend(&self) -> String {
        self.ws.backend.to_string()
    }

    /// The directory it was opened over (for an element workspace, the element's
    /// sources in the project); "" when it was opened over a tree.
    #[zbus(property)]
    fn source(&self) -> String {
        self.ws
            .source
            .as_ref()
            // Records made before the real path was kept hold the path of the
            // descriptor the source was read through, which names nothing now
            // (and, opened by a client, would name one of its own descriptors).
            .filter(|p| !p.starts_with("/proc/self/fd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// The source tree it was opened over (`<hex>/<size>`).
    #[zbus(property)]
    fn base_source_digest(&self) -> String {
        self.ws.base_source_digest.to_string()
    }

    /// The source tree as of its last commit.
    #[zbus(property)]
    fn source_digest(&self) -> String {
        self.ws.source_digest.to_string()
    }

    /// The project element it was opened for ("" for a plain directory).
    #[zbus(property)]
    fn element(&self) -> String {
        self.ws
            .element
            .as_ref()
            .map(|b| b.element.clone())
            .unwrap_or_default()
    }

    /// The dependency hash of its last successful build ("" before one).
    #[zbus(property)]
    fn dependency_hash(&self) -> String {
        self.ws.dependency_hash.clone().unwrap_or_default()
    }

    /// The artifact of its last successful build (`artifact/<cache key>`, ""
    /// before one).
    #[zbus(property)]
    fn artifact_ref(&self) -> String {
        self.ws.artifact_ref.clone().unwrap_or_default()
    }

    /// Its last build: "id", "cache_key", "result" ("built" or "failed"),
    /// "incremental", "buildtree" and "time"; empty before one.
    #[zbus(property)]
    fn last_build(&self) -> HashMap<String, OwnedValue> {
        let Some(b) = &self.ws.last_build else {
            return HashMap::new();
        };
        let pairs: Vec<(&str, Value<'_>)> = vec![
            ("id", b.id.clone().into()),
            ("cache_key", b.cache_key.clone().into()),
            ("result", b.result.clone().into()),
            ("incremental", b.incremental.into()),
            (
                "buildtree",
                b.buildtree
                    .map(|d| d.to_string())
                    .unwrap_or_default()
                    .into(),
            ),
            ("time", b.time.into()),
        ];
        super::args::dict(pairs)
    }

    /// How many paths changed since the last commit, as of the last `Status` or
    /// operation (reading the view costs I/O, so it is not re-read on every get).
    #[zbus(property)]
    fn dirty(&self) -> u32 {
        self.dirty
    }

    /// Reads the view: the paths changed since the last commit, with the change
    /// ("added", "deleted", "modified", "mode_changed", "type_changed"). Updates
    /// `Dirty`.
    async fn status(
        &mut self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<Vec<(String, String)>, DbusError> {
        let (caller, name) = (self.caller, self.name_of());
        let status = self.shared.run(move |m| m.status(caller, &name)).await?;
        let changes: Vec<(String, String)> = status
            .changes
            .iter()
            .map(|c| {
                (
                    c.path.clone(),
                    crate::manager::change_name(c.kind).to_owned(),
                )
            })
            .collect();
        if self.dirty != changes.len() as u32 {
            self.dirty = changes.len() as u32;
            self.dirty_changed(&emitter)
                .await
                .map_err(DbusError::ZBus)?;
        }
        Ok(changes)
    }

    /// The changes since the last commit as a unified patch.
    async fn diff(&self) -> Result<String, DbusError> {
        let (caller, name) = (self.caller, self.name_of());
        self.shared.run(move |m| m.patch(caller, &name)).await
    }

    /// Records the view's files as the workspace's source tree; returns the new
    /// source digest (the old one if nothing changed).
    async fn commit(
        &mut self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        message: String,
    ) -> Result<String, DbusError> {
        self.commit_shown(&emitter, message).await
    }

    /// As `Commit`, with `options`: "write_back" (h), a directory the client
    /// opened, into which the committed source tree is then written with the
    /// caller's permissions (refused, writing nothing, where the directory
    /// changed since the workspace was opened; see docs/dbus.md). Returns
    /// "source_digest" (s), "committed" (b: whether there was anything to
    /// commit) and, with "write_back", "write_back_dir" (s), "written",
    /// "made_dirs", "removed", "already" (t: paths that held the committed
    /// entry already) and "kept" (as: directories the commit deletes that hold
    /// ignored files). A refused or failed write-back is an error; the commit
    /// before it stays recorded.
    async fn commit_with(
        &mut self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        message: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<HashMap<String, OwnedValue>, DbusError> {
        let mut write_back = None;
        for (key, value) in options {
            match key.as_str() {
                "write_back" => {
                    let fd = zbus::zvariant::Fd::try_from(value).map_err(|_| {
                        DbusError::InvalidArgument(
                            "option \"write_back\" must be a descriptor (h) of a directory".into(),
                        )
                    })?;
                    write_back = Some(MountPoint::from_fd(received(fd.into())));
                }
                other => {
                    return Err(DbusError::InvalidArgument(format!(
                        "unknown commit option {}; known: write_back",
                        crate::workspace::shown(other)
                    )));
                }
            }
        }
        let before = self.ws.source_digest.to_string();
        let digest = self.commit_shown(&emitter, message).await?;
        let mut pairs: Vec<(&str, Value<'_>)> = vec![
            ("committed", (digest != before).into()),
            ("source_digest", digest.into()),
        ];
        if let Some(dir) = write_back {
            let (caller, name) = (self.caller, self.name_of());
            let report = self
                .shared
                .run(move |m| m.write_back(caller, &name, &dir))
                .await?;
            pairs.extend([
                ("write_back_dir", report.dir.display().to_string().into()),
                ("written", report.written.into()),
                ("made_dirs", report.made_dirs.into()),
                ("removed", report.removed.into()),
                ("already", report.already.into()),
                ("kept", report.kept.into()),
            ]);
        }
        Ok(super::args::dict(pairs))
    }

    /// Drops the changes since the last commit, writing the reversal through the
    /// view; returns how many paths were reverted.
    async fn discard(
        &mut self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<u32, DbusError> {
        let (caller, name) = (self.caller, self.name_of());
        let dropped = self.shared.run(move |m| m.discard(caller, &name)).await?;
        if self.dirty != 0 {
            self.dirty = 0;
            self.dirty_changed(&emitter)
                .await
                .map_err(DbusError::ZBus)?;
        }
        if !dropped.is_empty() {
            self.shared.notify(Event::Changed {
                ws: Box::new(self.ws.clone()),
                dirty: 0,
            });
        }
        Ok(dropped.len() as u32)
    }

    /// Undoes the last commit or discard not undone yet (see `ws undo`); returns
    /// the op log entry it undid: (seq, op).
    async fn undo(
        &mut self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(u64, String), DbusError> {
        let (caller, name) = (self.caller, self.name_of());
        let undone = self
            .shared
            .run(move |m| {
                let undone = m.undo(caller, &name)?;
                let status = m.status(caller, &name)?;
                Ok((undone, status))
            })
            .await?;
        let (undone, status) = undone;
        let dirty = status.changes.len() as u32;
        let source_changed = status.workspace.source_digest != self.ws.source_digest;
        self.ws = status.workspace;
        if source_changed {
            self.source_digest_changed(&emitter)
                .await
                .map_err(DbusError::ZBus)?;
        }
        if dirty != self.dirty {
            self.dirty = dirty;
            self.dirty_changed(&emitter)
                .await
                .map_err(DbusError::ZBus)?;
        }
        self.shared.notify(Event::Changed {
            ws: Box::new(self.ws.clone()),
            dirty,
        });
        Ok((undone.entry.seq, undone.entry.op.name().to_owned()))
    }

    /// Unmounts and forgets the workspace; refused while it has uncommitted
    /// changes unless `force`.
    async fn close(&self, force: bool) -> Result<(), DbusError> {
        let (caller, name) = (self.caller, self.name_of());
        self.shared
            .run(move |m| m.close(caller, &name, force))
            .await?;
        self.shared.notify(Event::Removed {
            id: self.ws.id.clone(),
            owner: self.ws.owner,
        });
        Ok(())
    }

    /// The op log, oldest first: (seq, op, before, after, changes, message, time).
    async fn log(&self) -> Result<Vec<(u64, String, String, String, u64, String, u64)>, DbusError> {
        let (caller, name) = (self.caller, self.name_of());
        let log = self.shared.run(move |m| m.log(caller, &name)).await?;
        Ok(log
            .into_iter()
            .map(|e| {
                (
                    e.seq,
                    e.op.name().to_owned(),
                    e.before.map(|d| d.to_string()).unwrap_or_default(),
                    e.after.map(|d| d.to_string()).unwrap_or_default(),
                    e.changes,
                    e.message.unwrap_or_default(),
                    e.time,
                )
            })
            .collect())
    }
}
