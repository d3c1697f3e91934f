//! Where snapshot records live: a small metadata interface that the snapshotter
//! reads through and whose writes go into the caller's batch, so that a snapshot
//! and the caller's own state (a workspace head, an op log entry) change in one
//! atomic write. The daemon implements it on RocksDB; [`FileRecords`] serves tests
//! and tools.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::info::Info;

/// Reading the committed records. Implementations are shared between threads.
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// The record under `key`, if any.
    fn get(&self, key: &str) -> std::io::Result<Option<Info>>;
    /// Every record, in no particular order.
    fn list(&self) -> std::io::Result<Vec<Info>>;
}

/// The caller's batch: the snapshotter's record changes are written into it, and
/// the caller commits it (durably) with its own changes.
pub trait RecordBatch {
    /// Adds or replaces a record.
    fn put(&mut self, info: &Info);
    /// Removes the record under `key`.
    fn delete(&mut self, key: &str);
}

/// One change to the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordOp {
    /// Adds or replaces a record.
    Put(Info),
    /// Removes a record.
    Delete(String),
}

impl RecordOp {
    /// Writes this change into `batch`.
    pub fn write_into(&self, batch: &mut dyn RecordBatch) {
        match self {
            RecordOp::Put(info) => batch.put(info),
            RecordOp::Delete(key) => batch.delete(key),
        }
    }
}

/// Records in one JSON file, rewritten whole and atomically (temp file, fsync,
/// rename, fsync of the directory) by [`FileRecords::write`]. For tests and tools;
/// a daemon keeps its records in its database.
#[derive(Debug)]
pub struct FileRecords {
    path: PathBuf,
    records: Mutex<BTreeMap<String, Info>>,
}

/// A batch for [`FileRecords`].
#[derive(Debug, Default)]
pub struct FileBatch {
    ops: Vec<RecordOp>,
}

impl RecordBatch for FileBatch {
    fn put(&mut self, info: &Info) {
        self.ops.push(RecordOp::Put(info.clone()));
    }

    fn delete(&mut self, key: &str) {
        self.ops.push(RecordOp::Delete(key.to_owned()));
    }
}

impl FileRecords {
    /// Opens the records in `path`, or none if it does not exist.
    pub fn open(path: &Path) -> std::io::Result<FileRecords> {
        let records = match std::fs::read(path) {
            Ok(bytes) => {
                let list: Vec<Info> = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: invalid snapshot records: {e}", path.display()),
                    )
                })?;
                list.into_iter().map(|i| (i.key.clone(), i)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(FileRecords {
            path: path.to_owned(),
            records: Mutex::new(records),
        })
    }

    /// Applies `batch` durably: on return the records are on disk.
    pub fn write(&self, batch: FileBatch) -> std::io::Result<()> {
        let mut records = self.records.lock().unwrap();
        let mut next = records.clone();
        for op in batch.ops {
            match op {
                RecordOp::Put(info) => {
                    next.insert(info.key.clone(), info);
                }
                RecordOp::Delete(key) => {
                    next.remove(&key);
                }
            }
        }
        let list: Vec<&Info> = next.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).expect("records always serialize");
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *records = next;
        Ok(())
    }
}

impl RecordStore for FileRecords {
    fn get(&self, key: &str) -> std::io::Result<Option<Info>> {
        Ok(self.records.lock().unwrap().get(key).cloned())
    }

    fn list(&self) -> std::io::Result<Vec<Info>> {
        Ok(self.records.lock().unwrap().values().cloned().collect())
    }
}
