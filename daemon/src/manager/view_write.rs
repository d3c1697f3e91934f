//! Writes through a workspace's view (discard, undo of a discard): the one
//! place where the daemon changes files a user may have open, and so the one
//! rule for doing it without losing an edit.
//!
//! # Crash safety
//!
//! The view's tree is captured into the store first (O(changes): the layer is
//! read, not the tree), and the intent, "bring the view from tree E to tree C,
//! then log this entry", is recorded in the workspace's record with a synced
//! batch ([`PendingWrite`]) *before* the first write. Then the reversal is
//! written path by path, and one batch logs the entry and drops the intent. A
//! crash anywhere in between leaves the intent: recovery at start (or, if the
//! view could not be mounted then, the next operation on the workspace) runs
//! the same reversal again and logs it, so the log always names E, and `ws undo`
//! always has the edits. The reversal can be run any number of times
//! (`overlay::reverse` writes a path only while it holds E's entry, nothing, or
//! C's), and it removes the temporary files a cut-off run left.
//!
//! # Edits made meanwhile
//!
//! An edit saved while a reversal runs is never overwritten by it: a path that
//! holds neither E's nor C's entry is left as it is, and shows in the next
//! status. The one window is the instant between the check of a path and its
//! rename, the same as between any two programs writing one file.
//!
//! # Paths
//!
//! The view's root is opened without following a symlink anywhere in its path,
//! and, when the daemon mounted it, checked to be the mount the daemon made (its
//! unique mount id, recorded at mount time): a user who moves the mount point's
//! parent and puts a symlink or another directory in its place gets a refusal,
//! not a write elsewhere.

use std::os::fd::{AsFd, OwnedFd};

use rocksdb::WriteBatch;
use treediff::{Change, Digest};

use super::Manager;
use crate::crash::crash_point;
use crate::error::Error;
use crate::workspace::{OpEntry, PendingWrite, Workspace};

impl Manager {
    /// Brings `ws`'s view from the captured tree `from` to `to` and logs
    /// `entry`, recording the intent first (see the module doc). `changes` are
    /// the changes from `to` to `from`, which the caller has at hand (a diff of
    /// two large trees costs milliseconds; a recovery computes it). The view is
    /// found and checked before anything is recorded: a view whose path leads
    /// elsewhere is refused with nothing changed. Returns the workspace as
    /// recorded after.
    pub(super) fn write_through_view(
        &self,
        mut ws: Workspace,
        from: Digest,
        to: Digest,
        changes: &[Change],
        entry: OpEntry,
    ) -> Result<Workspace, Error> {
        let root = self.view_root(&ws)?;
        ws.pending = Some(PendingWrite { from, to, entry });
        let mut batch = WriteBatch::default();
        self.put_workspace(&mut batch, &mut ws, None);
        self.db.write(batch)?;
        crash_point!("view-write-after-intent");
        self.finish_pending_at(ws, root, changes, overlay::Run::First)
    }

    /// Finishes `ws`'s pending write, if it has one: writes what is left of
    /// the reversal through the view, then logs its entry and drops the intent
    /// in one batch. Returns the workspace as recorded after.
    pub(super) fn finish_pending(&self, ws: Workspace) -> Result<Workspace, Error> {
        if ws.pending.is_none() {
            return Ok(ws);
        }
        let root = self.view_root(&ws)?;
        let Some(pending) = &ws.pending else {
            return Ok(ws);
        };
        let changes = treediff::diff::changes(&self.store, pending.to, pending.from)
            .map_err(Error::store(&ws.name))?;
        self.finish_pending_at(ws, root, &changes, overlay::Run::Again)
    }

    /// [`Manager::finish_pending`] through the view's root `root`, checked,
    /// given the `changes` of the intent (from its `to` to its `from`); `run`
    /// says whether a reversal of the intent was cut off before.
    fn finish_pending_at(
        &self,
        mut ws: Workspace,
        root: OwnedFd,
        changes: &[Change],
        run: overlay::Run,
    ) -> Result<Workspace, Error> {
        let Some(pending) = ws.pending.clone() else {
            return Ok(ws);
        };
        // A root daemon writing into a user's view gives what it makes to them.
        let owner = (ws.owner != self.euid).then_some(overlay::Owner {
            uid: ws.owner,
            gid: ws.group,
        });
        let key = ws.snapshot.clone();
        let done = overlay::reverse(
            &self.store,
            &key,
            root.as_fd(),
            &ws.path,
            owner,
            changes,
            run,
            &mut |_| {
                crash_point!("view-write-between-paths");
            },
        )
        .map_err(Error::snapshot(&ws.name))?;
        drop(root);
        if !done.kept.is_empty() {
            tracing::warn!(
                workspace = ws.name,
                kept = done.kept.len(),
                first = done.kept[0],
                "paths edited while the view was written were left as they are"
            );
        }
        crash_point!("view-write-before-log");
        ws.pending = None;
        let mut batch = WriteBatch::default();
        self.put_workspace(&mut batch, &mut ws, Some(pending.entry));
        // Not synced: were it lost, the synced intent would be finished and
        // logged again at the next start. One sync per discard, not two.
        self.db.write_recoverable(batch)?;
        crash_point!("view-write-after-log");
        Ok(ws)
    }

    /// The root of `ws`'s view, open: reached without following a symlink, and,
    /// if the daemon mounted it, the very mount it made.
    pub(super) fn view_root(&self, ws: &Workspace) -> Result<OwnedFd, Error> {
        let root =
            treediff::safe_fs::open_dir_no_symlinks(&ws.path).map_err(|source| Error::Io {
                op: "open the view",
                path: ws.path.clone(),
                source: source.into(),
            })?;
        if !ws.mounted_by_daemon {
            // The daemon's own directory (a mirror it could not mount).
            return Ok(root);
        }
        let moved = |why: &str| {
            tracing::warn!(workspace = ws.name, owner = ws.owner, path = %ws.path.display(), why, "refused to write through a view whose path changed");
            Error::Conflict {
                name: ws.name.clone(),
                problem: format!(
                    "{} is no longer the view the daemon mounted ({why}); nothing was written. Put the directory back, or close the workspace and open it again",
                    ws.path.display()
                ),
            }
        };
        let io = |e: std::io::Error| Error::Io {
            op: "check the mount of",
            path: ws.path.clone(),
            source: e,
        };
        if !overlay::is_mount_root(root.as_fd()).map_err(io)? {
            return Err(moved("nothing is mounted there"));
        }
        match ws.mount_id {
            Some(id) if overlay::mount_id(root.as_fd()).map_err(io)? != id => {
                Err(moved("another mount is there"))
            }
            // Recorded before mount ids were kept: at least one of the
            // daemon's mounts, never one a user put there.
            None if !overlay::mount_uses(root.as_fd(), self.dirs.root()).map_err(io)? => {
                Err(moved("the mount there does not use the daemon's layers"))
            }
            _ => Ok(root),
        }
    }
}
