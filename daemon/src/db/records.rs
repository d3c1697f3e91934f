//! Snapshot records in RocksDB: the overlay crate's `RecordStore` (reads) and
//! `RecordBatch` (writes into the daemon's own batch), so a snapshot and the
//! workspace that uses it change in one atomic write.

use std::sync::Arc;

use overlay::{Info, RecordBatch, RecordStore};
use rocksdb::WriteBatch;

use super::{Db, cf};

/// The records of one snapshotter (one backend), under the key prefix
/// `<backend>/`.
#[derive(Debug, Clone)]
pub struct RocksRecords {
    db: Arc<Db>,
    prefix: Vec<u8>,
}

impl RocksRecords {
    /// The records of the snapshotter named `backend`.
    pub fn new(db: Arc<Db>, backend: &str) -> RocksRecords {
        RocksRecords {
            db,
            prefix: format!("{backend}/").into_bytes(),
        }
    }

    fn key(&self, key: &str) -> Vec<u8> {
        [self.prefix.as_slice(), key.as_bytes()].concat()
    }

    /// A batch view that writes this snapshotter's records into `batch`.
    pub fn batch<'a>(&'a self, batch: &'a mut WriteBatch) -> RocksBatch<'a> {
        RocksBatch {
            records: self,
            batch,
        }
    }
}

fn io(e: super::DbError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl RecordStore for RocksRecords {
    fn get(&self, key: &str) -> std::io::Result<Option<Info>> {
        let Some(bytes) = self
            .db
            .get(self.db.cf(cf::SNAPSHOTS), &self.key(key))
            .map_err(io)?
        else {
            return Ok(None);
        };
        Info::decode(&bytes)
            .map(Some)
            .map_err(|problem| io(self.db.corrupt("snapshot", problem)))
    }

    fn list(&self) -> std::io::Result<Vec<Info>> {
        self.db
            .scan(self.db.cf(cf::SNAPSHOTS), &self.prefix)
            .map_err(io)?
            .into_iter()
            .map(|(_, bytes)| {
                Info::decode(&bytes).map_err(|problem| io(self.db.corrupt("snapshot", problem)))
            })
            .collect()
    }
}

/// [`RocksRecords`] writing into a caller's `WriteBatch`.
pub struct RocksBatch<'a> {
    records: &'a RocksRecords,
    batch: &'a mut WriteBatch,
}

impl std::fmt::Debug for RocksBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksBatch").finish_non_exhaustive()
    }
}

impl RecordBatch for RocksBatch<'_> {
    fn put(&mut self, info: &Info) {
        let cf = self.records.db.cf(cf::SNAPSHOTS);
        self.batch
            .put_cf(cf, self.records.key(&info.key), info.encode());
    }

    fn delete(&mut self, key: &str) {
        let cf = self.records.db.cf(cf::SNAPSHOTS);
        self.batch.delete_cf(cf, self.records.key(key));
    }
}
