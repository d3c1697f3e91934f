//! `Txn`: one change to the snapshots, published with the caller's own changes.
//!
//! The protocol (docs/design.md, "The commit protocol"): the snapshotter makes directories and
//! stages record changes in the `Txn`; [`Txn::commit`] makes the directories
//! durable (one `syncfs`), hands the record changes to the caller, who writes them
//! into its batch and commits that durably, and only then moves removed snapshots'
//! directories to the trash. A `Txn` dropped without committing, or whose caller's
//! write fails, moves the directories it made to the trash: nothing half-made stays
//! registered, and a crash at any point leaves at worst orphan directories, which
//! [`Snapshotter::cleanup`](crate::Snapshotter::cleanup) collects.
//!
//! A `Txn` holds the snapshotter's write lock from `begin` to its end, so the
//! records it reads cannot change under it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::MutexGuard;

use crate::error::SnapshotError;
use crate::info::Info;
use crate::records::{FileBatch, FileRecords, RecordOp};
use crate::root::SnapshotRoot;

/// An open change to the snapshots; see the module doc.
#[must_use = "a transaction records nothing unless committed"]
pub struct Txn<'s> {
    root: &'s SnapshotRoot,
    _lock: MutexGuard<'s, ()>,
    pending: BTreeMap<String, Option<Info>>,
    ops: Vec<RecordOp>,
    created: Vec<PathBuf>,
    doomed: Vec<PathBuf>,
    /// Files were written under the snapshots that the records will rely on.
    needs_sync: bool,
    finished: bool,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("ops", &self.ops)
            .field("created", &self.created)
            .field("doomed", &self.doomed)
            .finish()
    }
}

/// Committing a [`Txn`] failed; nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum CommitError<E: std::error::Error + 'static> {
    /// The snapshots' directories could not be made durable.
    #[error(transparent)]
    Sync(SnapshotError),
    /// The caller's write failed.
    #[error("cannot write the snapshot records")]
    Write(#[source] E),
}

impl<'s> Txn<'s> {
    pub(crate) fn begin(root: &'s SnapshotRoot, lock: MutexGuard<'s, ()>) -> Txn<'s> {
        Txn {
            root,
            _lock: lock,
            pending: BTreeMap::new(),
            ops: Vec::new(),
            created: Vec::new(),
            doomed: Vec::new(),
            needs_sync: false,
            finished: false,
        }
    }

    /// Checks that this transaction belongs to `root`.
    pub(crate) fn check_root(&self, root: &SnapshotRoot) {
        assert!(
            std::ptr::eq(self.root, root),
            "a Txn is used with the snapshotter that began it"
        );
    }

    /// The record under `key` as this transaction sees it.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Info>, SnapshotError> {
        match self.pending.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.root.records.get(key).map_err(SnapshotError::Records),
        }
    }

    /// Every record as this transaction sees it.
    pub(crate) fn list(&self) -> Result<Vec<Info>, SnapshotError> {
        let mut all: BTreeMap<String, Info> = self
            .root
            .records
            .list()
            .map_err(SnapshotError::Records)?
            .into_iter()
            .map(|i| (i.key.clone(), i))
            .collect();
        for (key, pending) in &self.pending {
            match pending {
                Some(info) => all.insert(key.clone(), info.clone()),
                None => all.remove(key),
            };
        }
        Ok(all.into_values().collect())
    }

    pub(crate) fn put(&mut self, info: Info) {
        self.pending.insert(info.key.clone(), Some(info.clone()));
        self.ops.push(RecordOp::Put(info));
    }

    pub(crate) fn delete(&mut self, key: &str) {
        self.pending.insert(key.to_owned(), None);
        self.ops.push(RecordOp::Delete(key.to_owned()));
    }

    /// A directory this transaction made: trashed if it does not commit.
    pub(crate) fn created(&mut self, dir: PathBuf) {
        self.created.push(dir);
    }

    /// Files under the snapshots (an upper that becomes a committed layer) must be
    /// durable before the records point at them.
    pub(crate) fn sync_before_commit(&mut self) {
        self.needs_sync = true;
    }

    /// A directory to trash once the records are durable.
    pub(crate) fn doom(&mut self, dir: PathBuf) {
        self.doomed.push(dir);
    }

    /// The record changes so far, in order.
    pub fn ops(&self) -> &[RecordOp] {
        &self.ops
    }

    /// Commits: makes new directories durable, calls `write` with the record
    /// changes (the caller writes them into its batch and commits it durably before
    /// returning), then trashes removed snapshots' directories. If `write` fails,
    /// the transaction is rolled back.
    pub fn commit<E: std::error::Error + 'static>(
        mut self,
        write: impl FnOnce(&[RecordOp]) -> Result<(), E>,
    ) -> Result<(), CommitError<E>> {
        if !self.created.is_empty() || self.needs_sync {
            crate::sys::syncfs(&self.root.snapshots).map_err(|source| {
                CommitError::Sync(SnapshotError::Io {
                    key: String::new(),
                    op: "sync the snapshots in",
                    path: self.root.snapshots.clone(),
                    source,
                })
            })?;
        }
        write(&self.ops).map_err(CommitError::Write)?;
        self.finished = true;
        for dir in std::mem::take(&mut self.doomed) {
            // A failure leaves an orphan for cleanup: its record is gone already.
            let _ = self.root.trash.put(&dir);
        }
        self.root.trash.empty_in_background();
        Ok(())
    }

    /// Commits into [`FileRecords`] (tests and tools).
    pub fn commit_to(self, records: &FileRecords) -> Result<(), SnapshotError> {
        self.commit(|ops| {
            let mut batch = FileBatch::default();
            for op in ops {
                op.write_into(&mut batch);
            }
            records.write(batch)
        })
        .map_err(|e| match e {
            CommitError::Sync(e) => e,
            CommitError::Write(e) => SnapshotError::Records(e),
        })
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for dir in self.created.iter().rev() {
            let _ = self.root.trash.put(dir);
        }
        if !self.created.is_empty() {
            self.root.trash.empty_in_background();
        }
    }
}
