//! Commit and discard: move the source tree to the view, or the view back to it.

use rocksdb::WriteBatch;
use treediff::Change;

use super::{Caller, Manager, Status, now_secs};
use crate::crash::crash_point;
use crate::error::Error;
use crate::workspace::{OpEntry, OpKind};

impl Manager {
    /// Records the view's current tree as the workspace's source tree. Returns the
    /// status as committed (no changes left), or the unchanged status when there
    /// was nothing to commit.
    ///
    /// # Crash safety
    ///
    /// Reading the layer makes the new tree durable in the store; one batch then
    /// moves the workspace's source digest and appends the op log entry. The layer
    /// keeps the edits (an editor may hold them open): the view does not change.
    pub fn commit(
        &self,
        caller: Caller,
        name: &str,
        message: Option<String>,
    ) -> Result<Status, Error> {
        let _store = self.store_guard();
        self.with_workspace(caller, name, |ws| {
            let status = self.status_of(ws)?;
            if status.changes.is_empty() {
                return Ok(status);
            }
            let mut ws = status.workspace;
            let entry = OpEntry {
                seq: ws.next_op,
                op: OpKind::Commit,
                before: Some(ws.source_digest),
                after: Some(status.current),
                changes: status.changes.len() as u64,
                message,
                time: now_secs(),
                undoes: None,
            };
            ws.source_digest = status.current;
            let mut batch = WriteBatch::default();
            self.put_workspace(&mut batch, &mut ws, Some(entry));
            crash_point!("commit-before-batch");
            self.db.write(batch)?;
            crash_point!("commit-after-batch");
            tracing::info!(workspace = name, source = %status.current, changes = status.changes.len(), "committed");
            Ok(Status {
                workspace: ws,
                current: status.current,
                changes: Vec::new(),
            })
        })
    }

    /// Makes the view equal to the workspace's source tree again, writing the
    /// reversal through it (files open in an editor stay valid). Returns what was
    /// dropped; the dropped edits stay in the store, named in the op log.
    ///
    /// # Crash safety
    ///
    /// The edits are captured into the store and the intent recorded before the
    /// view is touched; a discard cut off is finished and logged at the next
    /// start (see `view_write`). An edit saved while it runs is kept.
    pub fn discard(&self, caller: Caller, name: &str) -> Result<Vec<Change>, Error> {
        let _store = self.store_guard();
        self.with_workspace(caller, name, |ws| {
            let status = self.status_of(ws)?;
            if status.changes.is_empty() {
                return Ok(Vec::new());
            }
            let ws = status.workspace;
            let entry = OpEntry {
                seq: ws.next_op,
                op: OpKind::Discard,
                before: Some(status.current),
                after: Some(ws.source_digest),
                changes: status.changes.len() as u64,
                message: None,
                time: now_secs(),
                undoes: None,
            };
            let to = ws.source_digest;
            // The status's changes, from the last commit to the view: what the
            // reversal undoes.
            self.write_through_view(ws, status.current, to, &status.changes, entry)?;
            tracing::info!(
                workspace = name,
                changes = status.changes.len(),
                "discarded"
            );
            Ok(status.changes)
        })
    }
}
