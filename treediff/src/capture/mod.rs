//! Capture: a directory on disk becomes a tree in the store.
//!
//! The walk runs on many threads ([`CaptureOptions::threads`], 16 by default: reading
//! a cold tree of small files is latency-bound, so many reads in flight beat one per
//! core), hashing each file that the [stat cache](crate::statcache) cannot vouch for
//! and staging its blob in the caller's transaction; the directory nodes are then
//! assembled bottom-up. The result is deterministic whatever the thread schedule.
//!
//! # What a tree holds
//!
//! Regular files, directories (empty ones too) and symlinks (their target stored as
//! data, never followed). Hardlinked files are captured as separate files. FIFOs,
//! sockets and devices are refused with an error naming the path (a source or build
//! tree has no use for them; ignore them with `.wsignore`). Names and symlink
//! targets must be UTF-8. In [`CaptureMode::Source`] only the owner's executable bit is
//! kept; in [`CaptureMode::Buildtree`] each entry also records its mtime and its
//! permission bits, with setuid, setgid and sticky stripped.
//!
//! # Ignore rules
//!
//! A `.wsignore` file in any directory, in gitignore syntax, excludes paths below it,
//! as do [`CaptureOptions::ignore_patterns`] (root-relative, gitignore syntax). The
//! `.wsignore` files themselves are captured. Nothing is ignored by default.
//!
//! # Concurrent writers
//!
//! A file is hashed between two `fstat`s of the open file; if its size, mtime or
//! ctime moved, it is hashed again (up to [`MAX_ATTEMPTS`] times). A write that lands
//! after the second stat changes the ctime, so the next capture hashes the file again:
//! a racing write is in this capture or the next, never lost.

mod assemble;
mod entry;
mod file;
mod rules;
mod walk;

pub use entry::capture_entry_at;
pub use rules::{Patterns as IgnorePatterns, Rules as IgnoreRules};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::statcache::StatCache;
use crate::store::{Store, StoreError, StoreTxn};

/// Default number of walker threads: cold reads of small files are latency-bound,
/// so many reads in flight beat one per core (measured here: 16 readers hash a cold
/// 100k-file tree 4x faster than 2).
pub const DEFAULT_THREADS: usize = 16;

/// How often a file that keeps changing while it is hashed is tried.
pub const MAX_ATTEMPTS: usize = 4;

/// Which metadata a tree records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureMode {
    /// Content and the executable bit only: equal sources give equal digests.
    #[default]
    Source,
    /// Also mtimes and permission bits, which incremental builds depend on.
    Buildtree,
}

/// How to capture.
#[derive(Clone, Copy, Debug)]
pub struct CaptureOptions<'a> {
    /// Source or buildtree.
    pub mode: CaptureMode,
    /// Extra root-relative ignore patterns in gitignore syntax (per-element rules).
    pub ignore_patterns: &'a [String],
    /// Where known digests are looked up and recorded; `None` hashes everything.
    pub stat_cache: Option<&'a dyn StatCache>,
    /// Threads walking and hashing.
    pub threads: usize,
    /// Counters that another thread may read to draw progress.
    pub progress: Option<&'a CaptureProgress>,
    /// Whose permissions the source is read with; `None` for the process's own.
    pub access: Option<&'a dyn SourceAccess>,
}

/// Reading a source with someone else's permissions: a root daemon imports a
/// user's directory as that user, so it reads nothing the user could not.
///
/// Each walking thread is switched to the reader before it touches the source and
/// back to the writer around every write to the store (which the reader may not
/// write). On Linux credentials are per thread, so the switch affects the walking
/// thread alone. The directory handed to the capture is opened as the reader too.
pub trait SourceAccess: Sync {
    /// Makes the current thread read with the reader's permissions.
    fn as_reader(&self) -> std::io::Result<()>;
    /// Makes the current thread act with the process's own permissions again.
    fn as_writer(&self) -> std::io::Result<()>;
}

/// Runs `f` as the writer, then goes back to reading as the reader.
pub(crate) fn as_writer<T, E: From<std::io::Error>>(
    access: Option<&dyn SourceAccess>,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let Some(access) = access else {
        return f();
    };
    access.as_writer()?;
    let result = f();
    access.as_reader()?;
    result
}

impl Default for CaptureOptions<'_> {
    fn default() -> Self {
        CaptureOptions {
            mode: CaptureMode::Source,
            ignore_patterns: &[],
            stat_cache: None,
            threads: DEFAULT_THREADS,
            progress: None,
            access: None,
        }
    }
}

impl std::fmt::Debug for dyn SourceAccess + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceAccess")
    }
}

impl std::fmt::Debug for dyn StatCache + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatCache")
    }
}

/// Live counters of a running capture.
#[derive(Debug, Default)]
pub struct CaptureProgress {
    /// Entries seen so far.
    pub entries: AtomicU64,
    /// Bytes hashed so far (files the stat cache vouched for are not hashed).
    pub hashed_bytes: AtomicU64,
}

/// What a capture did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStats {
    /// Regular files in the tree.
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Total size of the files.
    pub bytes: u64,
    /// Files that had to be read and hashed.
    pub hashed_files: u64,
    /// Bytes read to hash them.
    pub hashed_bytes: u64,
    /// Files whose digest came from the stat cache.
    pub cache_hits: u64,
}

impl CaptureStats {
    fn add(&mut self, other: &CaptureStats) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.bytes += other.bytes;
        self.hashed_files += other.hashed_files;
        self.hashed_bytes += other.hashed_bytes;
        self.cache_hits += other.cache_hits;
    }
}

/// A capture failed; nothing was published unless the caller commits its transaction.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The root to capture is not a directory.
    #[error("cannot capture {}: it is not a directory", path.display())]
    NotADirectory {
        /// The root as given.
        path: PathBuf,
    },
    /// Reading the source failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file name that a tree cannot hold (names are protobuf strings).
    #[error("cannot capture {}: its name is not valid UTF-8; rename it or list it in .wsignore", path.display())]
    NameNotUtf8 {
        /// The path, lossily shown.
        path: PathBuf,
    },
    /// A symlink whose target a tree cannot hold.
    #[error("cannot capture symlink {}: its target is not valid UTF-8", path.display())]
    TargetNotUtf8 {
        /// The symlink.
        path: PathBuf,
    },
    /// A FIFO, socket or device.
    #[error("cannot capture {}: it is a {kind}, and trees hold only files, directories and symlinks; remove it or list it in .wsignore", path.display())]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// "FIFO", "socket", "block device" or "character device".
        kind: &'static str,
    },
    /// A file changed every time it was hashed.
    #[error("cannot capture {}: it changed while being read, {MAX_ATTEMPTS} times in a row; stop whatever is writing it and retry", path.display())]
    KeepsChanging {
        /// The file.
        path: PathBuf,
    },
    /// An ignore pattern or `.wsignore` file could not be used.
    #[error("invalid ignore rules: {message}")]
    Ignore {
        /// What the parser said, with the file and line where it has them.
        message: String,
    },
    /// The tree nests deeper than trees may.
    #[error("cannot capture {}: it is deeper than {} levels below the root", path.display(), crate::tree::MAX_DEPTH)]
    TooDeep {
        /// The first path too deep.
        path: PathBuf,
    },
    /// A directory that cannot be encoded as a tree node, or an entry that is not
    /// what the caller expected.
    #[error("cannot capture {}: {problem}", path.display())]
    Invalid {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Writing to the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Captures the directory `root` into `txn` and returns the root tree's digest.
/// Nothing is published until the caller commits `txn`.
pub fn capture(
    txn: &StoreTxn<'_>,
    root: &Path,
    options: &CaptureOptions<'_>,
) -> Result<(Digest, CaptureStats), CaptureError> {
    let meta = std::fs::metadata(root).map_err(|source| CaptureError::Io {
        op: "read",
        path: root.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(CaptureError::NotADirectory {
            path: root.to_owned(),
        });
    }
    let walked = walk::walk(txn, root, options)?;
    assemble::assemble(txn, walked)
}

/// Captures `root` in a transaction of its own, records it as an imported tree, and
/// commits: on return the tree is durable. For scripting (`ws store import`).
pub fn import(
    store: &Store,
    root: &Path,
    options: &CaptureOptions<'_>,
) -> Result<(Digest, CaptureStats), CaptureError> {
    let txn = store.begin()?;
    let (digest, stats) = capture(&txn, root, options)?;
    txn.record_tree(digest);
    txn.commit()?;
    Ok((digest, stats))
}

pub(crate) fn count(progress: Option<&CaptureProgress>, entries: u64, bytes: u64) {
    if let Some(p) = progress {
        p.entries.fetch_add(entries, Ordering::Relaxed);
        p.hashed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}
