//! The stat cache: what a file hashed to, keyed by its inode and remembered with
//! its stat, so that capturing an unchanged tree again costs only `lstat`s.
//!
//! # When an entry is trusted
//!
//! Only when the file's size, mtime and ctime equal the recorded ones **and** its
//! mtime and ctime are strictly older than the moment the entry was recorded (git's
//! racily-clean rule): a file written in the same timestamp tick as its hashing could
//! change again without changing its stat. The recorded moment is the capture's start
//! minus [`RECORD_MARGIN`], because file timestamps come from the kernel's coarse
//! clock (and on some filesystems have 1–2 s granularity), which can lag the clock
//! we read. ctime cannot be set by users, so `touch -d` or `cp -a` cannot fake a
//! match.
//!
//! The cache is behind [`StatCache`] so the daemon can keep it in its database;
//! [`FileStatCache`] keeps it in one file and serves the CLI and tests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;

/// How far before a capture's start its entries are dated; see the module doc.
pub const RECORD_MARGIN: Duration = Duration::from_secs(2);

/// A file's identity: device and inode. Hardlinks share it, and so share an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// The stat a file had when it hashed to `digest`, and when that was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatRecord {
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// `st_ctime` in nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// When the entry was recorded, in nanoseconds since the epoch.
    pub recorded_ns: i64,
    /// What the content hashed to.
    pub digest: Digest,
}

impl StatRecord {
    /// Whether this entry may stand in for hashing a file whose stat is now `current`
    /// (see the module doc for the rule).
    pub fn is_trusted_for(&self, current: &FileStat) -> bool {
        self.size == current.size
            && self.mtime_ns == current.mtime_ns
            && self.ctime_ns == current.ctime_ns
            && current.mtime_ns < self.recorded_ns
            && current.ctime_ns < self.recorded_ns
    }
}

/// The parts of a file's stat that the cache looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Identity.
    pub id: FileId,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` in nanoseconds.
    pub mtime_ns: i64,
    /// `st_ctime` in nanoseconds.
    pub ctime_ns: i64,
}

impl FileStat {
    /// From a raw `stat`.
    pub(crate) fn from_stat(st: &nix::sys::stat::FileStat) -> FileStat {
        FileStat {
            id: FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            },
            size: st.st_size as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec),
            ctime_ns: st
                .st_ctime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_ctime_nsec),
        }
    }
}

/// The moment entries recorded by a capture starting now are dated.
pub fn record_time_for_capture_starting_now() -> i64 {
    let now = SystemTime::now()
        .checked_sub(RECORD_MARGIN)
        .unwrap_or(UNIX_EPOCH);
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Storage for stat-cache entries. `get` and `put` are called from many capture
/// threads at once. A capture `put`s every file it sees (hit or miss), in batches
/// (one per walker thread, at its end), so an implementation may drop entries that
/// were not put since it was opened.
pub trait StatCache: Sync {
    /// The newest entry for a file, if any. Trust is decided by the caller.
    fn get(&self, id: FileId) -> Option<StatRecord>;
    /// Records (or confirms) entries.
    fn put(&self, entries: &[(FileId, StatRecord)]);
}

/// A stat cache kept in one file, loaded whole and rewritten whole (atomically) by
/// [`FileStatCache::save`], keeping only the entries put since it was loaded. It is
/// a cache: a lost or damaged file costs a re-hash, never a wrong digest, so it is
/// written without fsync and a file that fails its checksum is ignored.
#[derive(Debug)]
pub struct FileStatCache {
    path: PathBuf,
    loaded: IdMap,
    /// Entries put since loading. Written once per walker thread, read by every
    /// lookup: a read lock costs no sleeping.
    seen: RwLock<IdMap>,
}

const MAGIC: &[u8; 8] = b"WSSTAT01";

/// Entries by inode. Inode and device numbers are not chosen by an adversary and are
/// already spread out, so a multiply-shift hash does (SipHash was 7% of a re-import).
type IdMap = HashMap<FileId, StatRecord, std::hash::BuildHasherDefault<IdHasher>>;

/// See [`IdMap`].
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}
const RECORD_BYTES: usize = 8 * 6 + 32 + 8;

impl FileStatCache {
    /// Loads the cache at `path`; a missing or damaged file gives an empty cache.
    pub fn load(path: &Path) -> FileStatCache {
        let loaded = std::fs::read(path)
            .ok()
            .and_then(|bytes| parse(&bytes))
            .unwrap_or_default();
        FileStatCache {
            path: path.to_owned(),
            loaded,
            seen: RwLock::new(IdMap::default()),
        }
    }

    /// How many entries were loaded.
    pub fn loaded_len(&self) -> usize {
        self.loaded.len()
    }

    /// Writes the entries put since loading, if they differ from what was loaded.
    pub fn save(&self) -> std::io::Result<()> {
        let seen = self.seen.read().unwrap();
        if *seen == self.loaded {
            return Ok(());
        }
        let mut entries: Vec<_> = seen.iter().collect();
        entries.sort_by_key(|(id, _)| **id);
        let mut bytes = Vec::with_capacity(16 + entries.len() * RECORD_BYTES + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (id, r) in entries {
            for n in [
                id.dev,
                id.ino,
                r.size,
                r.mtime_ns as u64,
                r.ctime_ns as u64,
                r.recorded_ns as u64,
            ] {
                bytes.extend_from_slice(&n.to_le_bytes());
            }
            bytes.extend_from_slice(r.digest.hash());
            bytes.extend_from_slice(&r.digest.size().to_le_bytes());
        }
        let checksum = blake3::hash(&bytes);
        bytes.extend_from_slice(checksum.as_bytes());
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
    }
}

fn parse(bytes: &[u8]) -> Option<IdMap> {
    let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != checksum || !body.starts_with(MAGIC) {
        return None;
    }
    let count = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?) as usize;
    let records = body.get(16..)?;
    if records.len() != count.checked_mul(RECORD_BYTES)? {
        return None;
    }
    let mut map = IdMap::with_capacity_and_hasher(count, Default::default());
    for chunk in records.chunks_exact(RECORD_BYTES) {
        let n = |i: usize| u64::from_le_bytes(chunk[i * 8..i * 8 + 8].try_into().unwrap());
        let hash: [u8; 32] = chunk[48..80].try_into().unwrap();
        let digest_size = u64::from_le_bytes(chunk[80..88].try_into().unwrap());
        let record = StatRecord {
            size: n(2),
            mtime_ns: n(3) as i64,
            ctime_ns: n(4) as i64,
            recorded_ns: n(5) as i64,
            digest: Digest::from_parts(hash, digest_size),
        };
        map.insert(
            FileId {
                dev: n(0),
                ino: n(1),
            },
            record,
        );
    }
    Some(map)
}

impl StatCache for FileStatCache {
    /// The loaded entry first, without locking: when a cache object serves several
    /// captures, an entry put by an earlier one is found only where the file had none
    /// before, and a stale loaded entry just fails the trust check.
    fn get(&self, id: FileId) -> Option<StatRecord> {
        self.loaded
            .get(&id)
            .copied()
            .or_else(|| self.seen.read().unwrap().get(&id).copied())
    }

    fn put(&self, entries: &[(FileId, StatRecord)]) {
        self.seen.write().unwrap().extend(entries.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64, mtime_ns: i64, ctime_ns: i64) -> FileStat {
        FileStat {
            id: FileId { dev: 1, ino: 2 },
            size,
            mtime_ns,
            ctime_ns,
        }
    }

    fn record(recorded_ns: i64) -> StatRecord {
        StatRecord {
            size: 5,
            mtime_ns: 100,
            ctime_ns: 100,
            recorded_ns,
            digest: Digest::of(b"hello"),
        }
    }

    #[test]
    fn entry_is_trusted_only_when_stat_matches_and_is_older_than_the_record() {
        assert!(record(101).is_trusted_for(&stat(5, 100, 100)));
        assert!(
            !record(100).is_trusted_for(&stat(5, 100, 100)),
            "racily clean: same tick"
        );
        assert!(
            !record(101).is_trusted_for(&stat(6, 100, 100)),
            "size changed"
        );
        assert!(
            !record(101).is_trusted_for(&stat(5, 99, 100)),
            "mtime changed"
        );
        assert!(
            !record(101).is_trusted_for(&stat(5, 100, 101)),
            "ctime changed"
        );
    }

    #[test]
    fn file_cache_keeps_only_entries_put_since_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let cache = FileStatCache::load(&path);
        cache.put(&[
            (FileId { dev: 1, ino: 1 }, record(7)),
            (FileId { dev: 1, ino: 2 }, record(8)),
        ]);
        cache.save().unwrap();
        let cache = FileStatCache::load(&path);
        assert_eq!(cache.get(FileId { dev: 1, ino: 2 }), Some(record(8)));
        cache.put(&[(FileId { dev: 1, ino: 2 }, record(8))]);
        cache.save().unwrap();
        let cache = FileStatCache::load(&path);
        assert_eq!(cache.loaded_len(), 1);
    }

    #[test]
    fn damaged_cache_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let cache = FileStatCache::load(&path);
        cache.put(&[(FileId { dev: 1, ino: 1 }, record(7))]);
        cache.save().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(FileStatCache::load(&path).loaded_len(), 0);
    }
}
