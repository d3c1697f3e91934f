//! The store's stat cache in RocksDB, one key range per source directory and
//! reader: the second `ws open` of the same directory costs stats, not hashing.
//!
//! An entry says "these credentials read this file, and it hashed to this", so
//! the range is chosen by the credentials that read now ([`ReaderId`]) as well
//! as by the directory (device and inode): a hit hands out a digest without
//! opening the file, which is only right for credentials that opened it
//! before. Another user importing the same directory misses and hashes it once.
//!
//! The database is touched only by [`RocksStatCache::load`] and
//! [`RocksStatCache::flush`], on the daemon's own thread, never by `get` and
//! `put`: those run on the walking threads, which hold the caller's
//! credentials, and the database's files are the daemon's. Flushing after the
//! store transaction commits also means that no entry names a blob the store
//! does not hold.
//!
//! [`ReaderId`]: crate::access::ReaderId

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rocksdb::WriteBatch;
use treediff::statcache::{FileId, StatRecord};
use treediff::{Digest, StatCache};

use super::{Db, cf};

/// The stat cache of one source directory as one reader sees it, loaded whole.
#[derive(Debug)]
pub struct RocksStatCache {
    db: Arc<Db>,
    source: [u8; SOURCE_BYTES],
    /// The range's entries as loaded: what `get` answers from, and what `put`
    /// compares with, so that a re-import of an unchanged tree writes nothing.
    loaded: HashMap<FileId, StatRecord>,
    /// Entries put that differ from the loaded ones, not yet flushed.
    pending: Mutex<Vec<(FileId, StatRecord)>>,
}

/// The bytes of a range's id in each key: 128 bits, so that no two readers' or
/// directories' ranges meet by chance.
const SOURCE_BYTES: usize = 16;

const KEY_BYTES: usize = SOURCE_BYTES + 16;

const VALUE_BYTES: usize = 8 * 4 + 40;

impl RocksStatCache {
    /// Loads the entries of the directory `root` (device, inode) as read by
    /// `reader` (the bytes of the [`ReaderId`](crate::access::ReaderId) of the
    /// credentials the walk reads with). Call it with the daemon's credentials.
    /// A cache: entries that cannot be read are misses.
    pub fn load(db: Arc<Db>, reader: &[u8; 32], root: FileId) -> RocksStatCache {
        let source = source_id(reader, root);
        let entries = db.scan(db.cf(cf::STATCACHE), &source).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the stat cache: the import hashes every file");
            Vec::new()
        });
        let loaded = entries
            .iter()
            .filter_map(|(key, value)| Some((decode_key(key)?, decode(value)?)))
            .collect();
        RocksStatCache {
            db,
            source,
            loaded,
            pending: Mutex::new(Vec::new()),
        }
    }

    fn key(&self, id: FileId) -> [u8; KEY_BYTES] {
        let mut key = [0u8; KEY_BYTES];
        key[..SOURCE_BYTES].copy_from_slice(&self.source);
        key[SOURCE_BYTES..SOURCE_BYTES + 8].copy_from_slice(&id.dev.to_be_bytes());
        key[SOURCE_BYTES + 8..].copy_from_slice(&id.ino.to_be_bytes());
        key
    }

    /// Writes the entries put since the last flush, with the calling thread's
    /// credentials: call it from the daemon's own thread, once the store
    /// transaction holding their blobs has committed. A cache: a failed write
    /// costs a re-hash later, so it is only logged.
    pub fn flush(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        let cf = self.db.cf(cf::STATCACHE);
        let mut batch = WriteBatch::default();
        for (id, record) in &pending {
            batch.put_cf(cf, self.key(*id), encode(record));
        }
        if !batch.is_empty()
            && let Err(e) = self.db.write_cache(batch)
        {
            tracing::warn!(error = %e, "cannot write the stat cache: the next import hashes again");
        }
    }
}

/// The id of the key range of `root` as read by `reader`.
fn source_id(reader: &[u8; 32], root: FileId) -> [u8; SOURCE_BYTES] {
    let mut hasher = blake3::Hasher::new_derive_key("ws 2025 stat cache source");
    hasher.update(reader);
    hasher.update(&root.dev.to_be_bytes());
    hasher.update(&root.ino.to_be_bytes());
    let mut source = [0u8; SOURCE_BYTES];
    source.copy_from_slice(&hasher.finalize().as_bytes()[..SOURCE_BYTES]);
    source
}

fn decode_key(key: &[u8]) -> Option<FileId> {
    let id = key.get(SOURCE_BYTES..).filter(|id| id.len() == 16)?;
    Some(FileId {
        dev: u64::from_be_bytes(id[..8].try_into().ok()?),
        ino: u64::from_be_bytes(id[8..].try_into().ok()?),
    })
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
    /// From the loaded entries: this runs on a walking thread, with the
    /// caller's credentials.
    fn get(&self, id: FileId) -> Option<StatRecord> {
        self.loaded.get(&id).copied()
    }

    /// Keeps the entries that changed for [`RocksStatCache::flush`]: this runs
    /// on a walking thread, with the caller's credentials.
    fn put(&self, entries: &[(FileId, StatRecord)]) {
        let changed = entries
            .iter()
            .filter(|(id, record)| self.loaded.get(id) != Some(record));
        self.pending.lock().unwrap().extend(changed);
    }
}
