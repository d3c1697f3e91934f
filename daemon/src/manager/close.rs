//! Closing a workspace: unmount, drop its snapshot, forget its name.

use super::{Caller, Manager, is_mounted, name_key, now_secs, op_key};
use crate::crash::crash_point;
use crate::db::cf;
use crate::error::Error;
use crate::workspace::{OpEntry, OpKind, State};

impl Manager {
    /// Unmounts and forgets the workspace. Refused while it has uncommitted changes,
    /// unless `force`; refused while files are open in it.
    pub fn close(&self, caller: Caller, name: &str, force: bool) -> Result<(), Error> {
        let _store = self.store_guard();
        self.with_workspace(caller, name, |ws| {
            if !force && ws.state == State::Open {
                let status = self.status_of(ws.clone())?;
                if !status.changes.is_empty() {
                    return Err(Error::Conflict {
                        name: name.to_owned(),
                        problem: format!(
                            "it has {} uncommitted change(s); commit or discard them, or close with --force",
                            status.changes.len()
                        ),
                    });
                }
            }
            if ws.mounted_by_daemon && is_mounted(&ws.path) {
                match ws.mount_id {
                    Some(id) => {
                        overlay::unmount_checked(&ws.path, id).map_err(Error::snapshot(name))?
                    }
                    // Recorded before mount ids were kept: the mount there that
                    // uses the daemon's layers, if any, never what the path
                    // leads to.
                    None => {
                        let unmounted = overlay::unmount_listed(&ws.path, self.dirs.root())
                            .map_err(Error::snapshot(name))?;
                        if !unmounted {
                            return Err(Error::Conflict {
                                name: name.to_owned(),
                                problem: format!(
                                    "what is mounted at {} does not use this daemon's layers, so it may not be the workspace's view, and was left alone; unmount it yourself (`umount {}`) if it is, then close again",
                                    ws.path.display(),
                                    ws.path.display()
                                ),
                            });
                        }
                    }
                }
            }
            crash_point!("close-after-unmount");
            let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
            let mut txn = snapper.snap.begin();
            snapper
                .snap
                .remove(&mut txn, &ws.snapshot)
                .map_err(Error::snapshot(name))?;
            let entry = OpEntry {
                seq: ws.next_op,
                op: OpKind::Close,
                before: Some(ws.source_digest),
                after: None,
                changes: 0,
                message: None,
                time: now_secs(),
                undoes: None,
            };
            self.commit_snapshots(
                &snapper,
                txn,
                name,
                |batch| {
                    batch.put_cf(
                        self.db.cf(cf::OPLOG),
                        op_key(&ws.id, entry.seq),
                        serde_json::to_vec(&entry).expect("op log entries serialize"),
                    );
                    batch.delete_cf(self.db.cf(cf::WORKSPACES), ws.id.as_bytes());
                    batch.delete_cf(self.db.cf(cf::NAMES), name_key(ws.owner, &ws.name));
                    crash_point!("close-before-batch");
                },
                // Before the snapshot's directory goes to the trash.
                || {
                    crash_point!("close-after-batch");
                },
            )?;
            self.locks.lock().unwrap().remove(&ws.id);
            tracing::info!(workspace = name, "closed");
            Ok(())
        })
    }
}
