//! The store's stat cache in RocksDB, one key range per source directory: the
//! second `ws open` of the same directory costs stats, not hashing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rocksdb::WriteBatch;
use treediff::statcache::{FileId, StatRecord};
use treediff::{Digest, StatCache};

use super::{Db, cf};

/// The stat cache of one source (named by a 64-bit id derived from its path).
#[derive(Debug)]
pub struct RocksStatCache {
    db: Arc<Db>,
    source: [u8; 8],
    /// What `get` found, so that `put` writes only what changed: a re-import of
    /// an unchanged tree confirms every entry, and rewriting them all would cost
    /// a write per file.
    found: Mutex<HashMap<FileId, StatRecord>>,
}

const VALUE_BYTES: usize = 8 * 4 + 40;

impl RocksStatCache {
    /// The cache of the source directory known by `source_key` (its path).
    pub fn new(db: Arc<Db>, source_key: &[u8]) -> RocksStatCache {
        let hash = blake3::hash(source_key);
        let mut source = [0u8; 8];
        source.copy_from_slice(&hash.as_bytes()[..8]);
        RocksStatCache {
            db,
            source,
            found: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, id: FileId) -> [u8; 24] {
        let mut key = [0u8; 24];
        key[..8].copy_from_slice(&self.source);
        key[8..16].copy_from_slice(&id.dev.to_be_bytes());
        key[16..].copy_from_slice(&id.ino.to_be_bytes());
        key
    }
}

fn encode(r: &StatRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_BYTES);
    for n in [
        r.size,
        r.mtime_ns as u64,
        r.ctime_ns as u64,
        r.recorded_ns as u64,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(r.digest.hash());
    out.extend_from_slice(&r.digest.size().to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<StatRecord> {
    if bytes.len() != VALUE_BYTES {
        return None;
    }
    let n = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    let hash: [u8; 32] = bytes[32..64].try_into().unwrap();
    Some(StatRecord {
        size: n(0),
        mtime_ns: n(1) as i64,
        ctime_ns: n(2) as i64,
        recorded_ns: n(3) as i64,
        digest: Digest::from_parts(hash, n(8)),
    })
}

impl StatCache for RocksStatCache {
    fn get(&self, id: FileId) -> Option<StatRecord> {
        // A cache: an unreadable or damaged entry is a miss.
        let bytes = self
            .db
            .get(self.db.cf(cf::STATCACHE), &self.key(id))
            .ok()??;
        let record = decode(&bytes)?;
        self.found.lock().unwrap().insert(id, record);
        Some(record)
    }

    fn put(&self, entries: &[(FileId, StatRecord)]) {
        let cf = self.db.cf(cf::STATCACHE);
        let found = self.found.lock().unwrap();
        let mut batch = WriteBatch::default();
        for (id, record) in entries {
            if found.get(id) != Some(record) {
                batch.put_cf(cf, self.key(*id), encode(record));
            }
        }
        if !batch.is_empty() {
            let _ = self.db.write_cache(batch);
        }
    }
}
