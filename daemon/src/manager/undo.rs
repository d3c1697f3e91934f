//! `undo`: the workspace as it was before its last commit or discard, from the op
//! log.
//!
//! Each commit and discard entry records the trees before and after it, and the
//! store keeps them (gc counts every tree in a live workspace's log as reachable),
//! so undoing costs one batch, or for a discard one revert of the changed paths:
//! - a commit is undone by moving the source tree back; the view keeps its files,
//!   so the committed edits are uncommitted again (as `git reset --soft`);
//! - a discard is undone by writing the dropped edits back through the view; it is
//!   refused while the view has newer edits, which it would overwrite.
//!
//! Repeated undos walk back through the log, skipping what was undone already.
//! Opening and closing cannot be undone (close removes the workspace, log aside),
//! nor can an undo (commit or discard again instead).

use rocksdb::WriteBatch;

use super::{Caller, Manager, now_secs};
use crate::crash::crash_point;
use crate::error::Error;
use crate::workspace::{OpEntry, OpKind};

/// What an undo did.
#[derive(Clone, Debug)]
pub struct Undone {
    /// The entry it undid.
    pub entry: OpEntry,
    /// The entry it wrote.
    pub undo: OpEntry,
}

impl Manager {
    /// Undoes the workspace's last commit or discard not undone yet.
    pub fn undo(&self, caller: Caller, name: &str) -> Result<Undone, Error> {
        let _store = self.store_guard();
        self.with_workspace(caller, name, |mut ws| {
            let log = self.log(caller, name)?;
            let target = last_undoable(&log).ok_or_else(|| Error::Conflict {
                name: name.to_owned(),
                problem: "there is no commit or discard left to undo (opening, closing and undos cannot be undone)".to_owned(),
            })?;
            let conflict = |problem: String| Error::Conflict {
                name: name.to_owned(),
                problem,
            };
            if target.after != Some(ws.source_digest) {
                return Err(conflict(format!(
                    "its source tree is no longer the one entry {} left; nothing was changed",
                    target.seq
                )));
            }
            let before = target.before.ok_or_else(|| {
                self.db
                    .corrupt("op log", "a commit or discard without its tree")
            })?;
            let mut undo = OpEntry {
                seq: ws.next_op,
                op: OpKind::Undo,
                before: target.after,
                after: Some(ws.source_digest),
                changes: target.changes,
                message: None,
                time: now_secs(),
                undoes: Some(target.seq),
            };
            match target.op {
                OpKind::Commit => {
                    ws.source_digest = before;
                    undo.after = Some(before);
                    let mut batch = WriteBatch::default();
                    self.put_workspace(&mut batch, &mut ws, Some(undo.clone()));
                    crash_point!("undo-before-batch");
                    self.db.write(batch)?;
                    crash_point!("undo-after-batch");
                }
                OpKind::Discard => {
                    let status = self.status_of(ws.clone())?;
                    if !status.changes.is_empty() {
                        return Err(conflict(format!(
                            "it has {} uncommitted change(s) made since the discard, which undoing it would overwrite; commit or discard them first",
                            status.changes.len()
                        )));
                    }
                    // The edits come back through the view: recorded first, like
                    // the discard, so a crash midway is finished at the next start.
                    let reversal = treediff::diff::changes(&self.store, before, status.current)
                        .map_err(Error::store(name))?;
                    undo.changes = reversal.len() as u64;
                    self.write_through_view(ws, status.current, before, &reversal, undo.clone())?;
                }
                _ => unreachable!("last_undoable returns commits and discards"),
            }
            tracing::info!(
                workspace = name,
                undone = target.seq,
                op = target.op.name(),
                "undone"
            );
            Ok(Undone {
                entry: target.clone(),
                undo,
            })
        })
    }
}

/// The latest commit or discard that no undo has undone.
fn last_undoable(log: &[OpEntry]) -> Option<&OpEntry> {
    let undone: std::collections::HashSet<u64> = log.iter().filter_map(|e| e.undoes).collect();
    log.iter()
        .rev()
        .find(|e| matches!(e.op, OpKind::Commit | OpKind::Discard) && !undone.contains(&e.seq))
}
