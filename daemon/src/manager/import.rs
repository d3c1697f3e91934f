//! Importing a caller's directory into the store, with its stat cache.
//!
//! The directory is opened with the caller's credentials, walked through that
//! descriptor, shown where the kernel says it is and keyed (in the stat cache)
//! by its device and inode and by who read it: no path a caller gives is
//! resolved with the daemon's own credentials. The tree is granted to the
//! caller (see `grants`): they may read it by digest later.

use std::path::{Path, PathBuf};

use treediff::statcache::FileId;
use treediff::{CaptureMode, CaptureOptions, CaptureStats, Digest, SourceAccess};

use super::long_work::Work;
use super::{Caller, Manager};
use crate::access::{Reader, SourceDir, shown_path};
use crate::db::RocksStatCache;
use crate::error::Error;

/// How to import a directory.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Source (the executable bit only) or buildtree (mtimes and modes too).
    pub mode: CaptureMode,
    /// Extra ignore patterns (gitignore syntax), on top of `.wsignore` files.
    pub ignore: Vec<String>,
    /// Record the tree as imported (`ws store import`): fsck checks it and gc keeps
    /// it. A workspace's source needs no record: the workspace holds it.
    pub record: bool,
    /// Threads walking and hashing; `None` for the default.
    pub threads: Option<usize>,
}

/// What an import made.
#[derive(Debug)]
pub(super) struct Imported {
    /// The tree, durable in the store.
    pub tree: Digest,
    /// What the walk did.
    pub stats: CaptureStats,
    /// Where the directory is, as the kernel names its descriptor.
    pub shown: PathBuf,
}

impl Manager {
    /// Imports the directory `dir` (a path the caller's descriptor names) for
    /// `caller`, reading with the caller's permissions (see [`Reader`]);
    /// returns its tree, durable in the store.
    pub fn import_source(
        &self,
        caller: Caller,
        dir: &Path,
        options: &ImportOptions,
    ) -> Result<(Digest, CaptureStats), Error> {
        let imported = self.import_dir(caller, dir, options)?;
        Ok((imported.tree, imported.stats))
    }

    /// [`Manager::import_source`], saying where the directory is.
    pub(super) fn import_dir(
        &self,
        caller: Caller,
        dir: &Path,
        options: &ImportOptions,
    ) -> Result<Imported, Error> {
        self.serves(caller)?;
        let reader = reader_of(caller, dir)?;
        let source = reader.open_dir(dir).map_err(|source| Error::Unreadable {
            what: "source directory",
            path: shown_path(dir),
            source,
        })?;
        self.import_opened(caller, &reader, &source, options)
    }

    /// Imports `source`, a directory opened with `reader`'s credentials, for
    /// `caller`; the walk reads through its descriptor.
    pub(super) fn import_opened(
        &self,
        caller: Caller,
        reader: &Reader,
        source: &SourceDir,
        options: &ImportOptions,
    ) -> Result<Imported, Error> {
        let _slot = self.long_work.enter(caller.uid, Work::Import);
        let _store = self.store_guard();
        self.serves(caller)?;
        let shown = source.shown();
        let root = FileId {
            dev: source.dev,
            ino: source.ino,
        };
        let cache = RocksStatCache::load(self.db.clone(), reader.id().as_bytes(), root);
        let capture = CaptureOptions {
            mode: options.mode,
            ignore_patterns: &options.ignore,
            stat_cache: Some(&cache),
            access: reader.access().map(|a| a as &dyn SourceAccess),
            threads: options
                .threads
                .unwrap_or(treediff::capture::DEFAULT_THREADS),
            ..CaptureOptions::default()
        };
        let subject = format!("source directory {}", shown.display());
        let txn = self
            .store
            .begin()
            .map_err(Error::store_on(subject.clone()))?;
        let walked = source.walk_path();
        let (tree, stats) = treediff::capture(&txn, &walked, &capture).map_err(|e| {
            Error::store_on(subject.clone())(CaptureFailed::new(e, &walked, &shown))
        })?;
        if options.record {
            txn.record_tree(tree);
        }
        txn.commit().map_err(Error::store_on(subject))?;
        // Here, with the daemon's credentials, and only now that the blobs the
        // entries name are in the store.
        cache.flush();
        self.grant(caller.uid, &[tree])?;
        tracing::debug!(source = %shown.display(), files = stats.files, hashed = stats.hashed_files, %tree, "imported");
        Ok(Imported { tree, stats, shown })
    }
}

/// The reader of `caller`'s files, for importing `dir`.
pub(super) fn reader_of(caller: Caller, dir: &Path) -> Result<Reader, Error> {
    Reader::for_caller(caller).map_err(|source| Error::Io {
        op: "read the groups of the caller, to import",
        path: shown_path(dir),
        source,
    })
}

/// A capture error named with the caller's path: the walk went through the
/// descriptor's `/proc/self/fd/N` path, which means nothing to the caller. The
/// innermost OS error stays the cause, so its kind (no space, access denied)
/// still decides the error's.
#[derive(Debug)]
struct CaptureFailed {
    message: String,
    cause: Option<std::io::Error>,
}

impl CaptureFailed {
    fn new(error: treediff::CaptureError, walked: &Path, real: &Path) -> CaptureFailed {
        let message = error
            .to_string()
            .replace(&*walked.to_string_lossy(), &real.to_string_lossy());
        let cause =
            std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .last()
            .map(|io| match io.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(io.kind(), io.to_string()),
            });
        CaptureFailed { message, cause }
    }
}

impl std::fmt::Display for CaptureFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CaptureFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|e| e as _)
    }
}
