//! Recovery at start: reconcile the database, snapshot directories and mounts.

use rocksdb::WriteBatch;

use super::{Caller, Manager, is_mounted, parse_snapper_dir};
use crate::error::Error;
use crate::workspace::State;

impl Manager {
    /// Reconciles the database, the snapshot directories and the mount table after
    /// a start: snapshot directories that no record names (a crash before a
    /// commit's batch) are collected, with any mount on them; every open
    /// workspace's view is mounted again if it is not; a workspace whose view cannot
    /// be mounted is marked unmounted (and tried again at the next start).
    pub fn recover(&self) -> Result<(), Error> {
        let workspaces = self.list(Caller { uid: 0, gid: 0 })?;
        for dir in std::fs::read_dir(self.dirs.snapshots()).map_err(|source| Error::Io {
            op: "list",
            path: self.dirs.snapshots(),
            source,
        })? {
            let dir = dir.map_err(|source| Error::Io {
                op: "list",
                path: self.dirs.snapshots(),
                source,
            })?;
            let name = dir.file_name().to_string_lossy().into_owned();
            let Some((backend, owner)) = parse_snapper_dir(&name) else {
                continue;
            };
            let group = workspaces
                .iter()
                .find(|w| Some(w.owner) == owner)
                .map_or(0, |w| w.group);
            let snapper = self.snapper(backend, owner.unwrap_or(self.euid), group)?;
            let cleaned = snapper.snap.cleanup().map_err(Error::snapshot(""))?;
            if !cleaned.orphans.is_empty() {
                tracing::info!(
                    snapshotter = name,
                    orphans = cleaned.orphans.len(),
                    unmounted = cleaned.unmounted.len(),
                    "collected what a crash left"
                );
            }
        }
        for mut ws in workspaces {
            if !ws.mounted_by_daemon || is_mounted(&ws.path) {
                continue;
            }
            let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
            let mounted = snapper
                .snap
                .mounts(&ws.snapshot)
                .map_err(Error::snapshot(&ws.name))
                .and_then(|plan| {
                    let target = self.reopen_target(&ws.path, ws.owner)?;
                    self.mount_view(&ws.name, &plan, &target, true)
                });
            let state = match &mounted {
                Ok(_) => State::Open,
                Err(e) => {
                    tracing::error!(workspace = ws.name, error = %e, "cannot mount the view again");
                    State::Unmounted
                }
            };
            if state != ws.state {
                ws.state = state;
                let mut batch = WriteBatch::default();
                self.put_workspace(&mut batch, &mut ws, None);
                self.db.write(batch)?;
            }
        }
        Ok(())
    }
}
