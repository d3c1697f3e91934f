//! Hashing one regular file: from the stat cache when it may be trusted, else by
//! reading it (relative to its directory's fd) between two stats that must agree.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::stat::FileStat as Stat;

use super::walk::Local;
use super::{CaptureError, CaptureOptions, MAX_ATTEMPTS, SourceAccess, as_writer, count};
use crate::digest::Digest;
use crate::statcache::{FileStat, StatRecord};
use crate::store::StoreTxn;
use crate::store::txn::STREAM_THRESHOLD;
use crate::sys;

/// The digest of the regular file `name` in `dir`, whose `lstat` is `stat`. Returns
/// the stat the digest belongs to (newer than `stat` if the file changed meanwhile).
pub(super) fn file_digest(
    txn: &StoreTxn<'_>,
    dir: BorrowedFd<'_>,
    name: &str,
    stat: Stat,
    options: &CaptureOptions<'_>,
    local: &mut Local<'_>,
) -> Result<(Digest, Stat), CaptureError> {
    let key = FileStat::from_stat(&stat);
    if let Some(cache) = options.stat_cache
        && let Some(record) = cache.get(key.id)
        && record.is_trusted_for(&key)
    {
        local.cache_entries.push((key.id, record));
        local.walked.stats.cache_hits += 1;
        return Ok((record.digest, stat));
    }
    let (digest, stat) = hash_file(txn, dir, name, stat, &mut local.buf, options.access)
        .map_err(|e| e.at(local.path(name)))?;
    let size = stat.st_size as u64;
    local.walked.stats.hashed_files += 1;
    local.walked.stats.hashed_bytes += size;
    count(options.progress, 0, size);
    if options.stat_cache.is_some() {
        let key = FileStat::from_stat(&stat);
        let record = StatRecord {
            size: key.size,
            mtime_ns: key.mtime_ns,
            ctime_ns: key.ctime_ns,
            recorded_ns: local.recorded_ns,
            digest,
        };
        local.cache_entries.push((key.id, record));
    }
    Ok((digest, stat))
}

/// A failure of [`hash_file`], named with its path by the caller.
pub(super) enum HashError {
    Io(&'static str, std::io::Error),
    KeepsChanging,
    Store(crate::store::StoreError),
}

impl From<crate::store::StoreError> for HashError {
    fn from(e: crate::store::StoreError) -> Self {
        HashError::Store(e)
    }
}

impl From<std::io::Error> for HashError {
    fn from(e: std::io::Error) -> Self {
        HashError::Io("switch credentials for", e)
    }
}

impl HashError {
    pub(super) fn at(self, path: std::path::PathBuf) -> CaptureError {
        match self {
            HashError::Io(op, source) => CaptureError::Io { op, path, source },
            HashError::KeepsChanging => CaptureError::KeepsChanging { path },
            HashError::Store(e) => CaptureError::Store(e),
        }
    }
}

/// Hashes and stages one file. `baseline` is its stat before opening; the `fstat`
/// after reading must equal it (same inode, size, mtime and ctime) and the bytes
/// read must be `size`, else the file changed while being read and is read again,
/// against the newer stat. Small files take one `read`: `read_to_end`'s size probe
/// and seek would cost two more syscalls per file.
pub(super) fn hash_file(
    txn: &StoreTxn<'_>,
    dir: BorrowedFd<'_>,
    name: &str,
    mut baseline: Stat,
    buf: &mut Vec<u8>,
    access: Option<&dyn SourceAccess>,
) -> Result<(Digest, Stat), HashError> {
    for _ in 0..MAX_ATTEMPTS {
        if !sys::is_regular(&baseline) {
            return Err(HashError::KeepsChanging);
        }
        let mut file: File = sys::open_source_file_at(dir, OsStr::new(name))
            .map_err(|e| HashError::Io("open", e))?;
        let size = baseline.st_size as u64;
        let (digest, small) = if size <= STREAM_THRESHOLD {
            buf.resize(size as usize, 0);
            let read = read_up_to(&mut file, buf).map_err(|e| HashError::Io("read", e))?;
            buf.truncate(read);
            (Digest::of(buf), true)
        } else {
            // The file is open: reading it needs no permission, staging does.
            let digest = as_writer(access, || {
                txn.put_stream(&mut file).map_err(HashError::from)
            })?;
            (digest, false)
        };
        let after = sys::fstat(file.as_fd()).map_err(|e| HashError::Io("stat", e))?;
        if FileStat::from_stat(&baseline) == FileStat::from_stat(&after) && digest.size() == size {
            if small {
                as_writer(access, || {
                    txn.put_hashed(digest, buf).map_err(HashError::from)
                })?;
            }
            return Ok((digest, after));
        }
        baseline = after;
    }
    Err(HashError::KeepsChanging)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
