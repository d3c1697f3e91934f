//! Importing a caller's directory into the store, with its stat cache.

use std::path::Path;

use treediff::{CaptureMode, CaptureOptions, CaptureStats, Digest, SourceAccess};

use super::{Caller, Manager};
use crate::access::CallerAccess;
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

impl Manager {
    /// Imports the directory `dir` (a path the caller's descriptor names) for
    /// `caller`, reading with the caller's permissions (see [`CallerAccess`]);
    /// returns its tree, durable in the store.
    pub fn import_source(
        &self,
        caller: Caller,
        dir: &Path,
        options: &ImportOptions,
    ) -> Result<(Digest, CaptureStats), Error> {
        let _store = self.store_guard();
        self.serves(caller)?;
        let access = CallerAccess::for_caller(caller).map_err(|source| Error::Io {
            op: "read the groups of the caller, to import",
            path: dir.to_owned(),
            source,
        })?;
        // The stat cache is keyed by where the directory really is; the walk reads
        // through `dir` itself (the caller's descriptor), never by that name.
        let real = dir.canonicalize().map_err(|e| Error::Invalid {
            what: "source directory",
            problem: format!("{}: {e}", dir.display()),
        })?;
        let cache = RocksStatCache::new(self.db.clone(), real.as_os_str().as_encoded_bytes());
        let capture = CaptureOptions {
            mode: options.mode,
            ignore_patterns: &options.ignore,
            stat_cache: Some(&cache),
            access: access.as_ref().map(|a| a as &dyn SourceAccess),
            threads: options
                .threads
                .unwrap_or(treediff::capture::DEFAULT_THREADS),
            ..CaptureOptions::default()
        };
        let subject = format!("source directory {}", real.display());
        let txn = self
            .store
            .begin()
            .map_err(Error::store_on(subject.clone()))?;
        let (tree, stats) = treediff::capture(&txn, dir, &capture)
            .map_err(|e| Error::store_on(subject.clone())(CaptureFailed::new(e, dir, &real)))?;
        if options.record {
            txn.record_tree(tree);
        }
        txn.commit().map_err(Error::store_on(subject))?;
        tracing::debug!(source = %real.display(), files = stats.files, hashed = stats.hashed_files, %tree, "imported");
        Ok((tree, stats))
    }
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
