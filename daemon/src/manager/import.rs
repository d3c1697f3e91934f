//! Importing a caller's directory into the store, with its stat cache.

use std::path::Path;

use treediff::{CaptureMode, CaptureOptions, CaptureStats, Digest};

use super::{Caller, Manager};
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
}

impl Manager {
    /// Imports the directory `dir` (a path the caller's descriptor names) for
    /// `caller`; returns its tree, durable in the store.
    pub fn import_source(
        &self,
        caller: Caller,
        dir: &Path,
        options: &ImportOptions,
    ) -> Result<(Digest, CaptureStats), Error> {
        let _ = caller;
        let subject = format!("source directory {}", dir.display());
        let dir = dir.canonicalize().map_err(|e| Error::Invalid {
            what: "source directory",
            problem: format!("{}: {e}", dir.display()),
        })?;
        let cache = RocksStatCache::new(self.db.clone(), dir.as_os_str().as_encoded_bytes());
        let capture = CaptureOptions {
            mode: options.mode,
            ignore_patterns: &options.ignore,
            stat_cache: Some(&cache),
            ..CaptureOptions::default()
        };
        let txn = self
            .store
            .begin()
            .map_err(Error::store_on(subject.clone()))?;
        let (tree, stats) =
            treediff::capture(&txn, &dir, &capture).map_err(Error::store_on(subject.clone()))?;
        if options.record {
            txn.record_tree(tree);
        }
        txn.commit().map_err(Error::store_on(subject.clone()))?;
        tracing::debug!(source = %dir.display(), files = stats.files, hashed = stats.hashed_files, %tree, "imported");
        Ok((tree, stats))
    }
}
