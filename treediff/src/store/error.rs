//! Errors of the store: each names the blob or path it concerns.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::sys;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation on a store path failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("create", "read blob").
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The filesystem holding the store is full; nothing partial was published.
    #[error("no space left on the filesystem holding {} (while trying to {op}): free some space and retry; nothing was stored", path.display())]
    NoSpace {
        /// What was being done.
        op: &'static str,
        /// The path being written.
        path: PathBuf,
    },
    /// A blob that a tree or caller refers to is not in the store.
    #[error("blob {digest} is missing from the store (expected at {})", path.display())]
    Missing {
        /// The blob's digest.
        digest: Digest,
        /// Where it should be.
        path: PathBuf,
    },
    /// A blob's bytes do not match its digest.
    #[error("blob {digest} is corrupt ({}): {problem}; run `ws store fsck` to list every damaged object", path.display())]
    Corrupt {
        /// The digest the blob is stored under.
        digest: Digest,
        /// Its file.
        path: PathBuf,
        /// What does not match.
        problem: String,
    },
}

impl StoreError {
    /// A mapper from `io::Error` for `op` on `path`, telling "disk full" apart.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| {
            if sys::is_no_space(&source) {
                StoreError::NoSpace { op, path }
            } else {
                StoreError::Io { op, path, source }
            }
        }
    }
}
