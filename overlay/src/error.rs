//! `SnapshotError`: every way a snapshot operation fails, each naming the
//! snapshot and, where there is one, the path.

use std::path::PathBuf;

use crate::info::Kind;

/// A snapshot operation failed. Nothing half-made stays registered: records change
/// only when the caller's batch commits, and directories made by a failed
/// transaction go to the trash.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No snapshot has this key or name.
    #[error("snapshot {key:?} does not exist")]
    NotFound {
        /// The key or name.
        key: String,
    },
    /// The key or name is taken.
    #[error("snapshot {key:?} already exists; choose another key or remove it first")]
    AlreadyExists {
        /// The key or name.
        key: String,
    },
    /// The key or name cannot be used.
    #[error("invalid snapshot key {key:?}: {problem}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The operation needs another kind of snapshot.
    #[error("cannot {op} snapshot {key:?}: it is {} snapshot, and only {wanted} can be", article(*kind))]
    WrongKind {
        /// What was being done.
        op: &'static str,
        /// The snapshot.
        key: String,
        /// What it is.
        kind: Kind,
        /// What it should have been ("an active snapshot").
        wanted: &'static str,
    },
    /// Committed snapshots that others sit on cannot be removed.
    #[error("cannot remove snapshot {key:?}: {} snapshot(s) sit on it ({}); remove them first", children.len(), children.join(", "))]
    HasChildren {
        /// The snapshot.
        key: String,
        /// The keys of its children.
        children: Vec<String>,
    },
    /// The snapshot is mounted, or otherwise in use.
    #[error("snapshot {key:?} is in use: {detail}; unmount it first")]
    Busy {
        /// The snapshot.
        key: String,
        /// Where or by what.
        detail: String,
    },
    /// This backend cannot work here.
    #[error("the {backend} backend is not available: {reason}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// What is missing and what to do.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("snapshot {key:?}: cannot {op} {}", path.display())]
    Io {
        /// The snapshot (empty for the snapshotter's own directories).
        key: String,
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A layer holds something that ws never writes there and will not read:
    /// a device node, or overlay metadata that would redirect lookups.
    #[error("snapshot {key:?}: {} {problem}", path.display())]
    Layer {
        /// The snapshot.
        key: String,
        /// The offending path in the layer.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// Capturing the snapshot's files failed.
    #[error("snapshot {key:?}: cannot capture its files")]
    Capture {
        /// The snapshot.
        key: String,
        /// Why.
        #[source]
        source: Box<treediff::CaptureError>,
    },
    /// Writing a tree out as files failed.
    #[error("snapshot {key:?}: cannot check out its tree")]
    Checkout {
        /// The snapshot.
        key: String,
        /// Why.
        #[source]
        source: Box<treediff::CheckoutError>,
    },
    /// A tree could not be read, diffed or rewritten.
    #[error("snapshot {key:?}: {op} failed")]
    Tree {
        /// The snapshot.
        key: String,
        /// "apply the changes", "diff against the parent", ...
        op: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store failed.
    #[error("snapshot {key:?}: the store failed")]
    Store {
        /// The snapshot.
        key: String,
        /// Why.
        #[source]
        source: Box<treediff::StoreError>,
    },
    /// Reading the records failed.
    #[error("cannot read the snapshot records")]
    Records(#[source] std::io::Error),
    /// Mounting or unmounting failed.
    #[error("cannot {op} {}: {source}{detail}", target.display())]
    Mount {
        /// "mount overlay on", "unmount", ...
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// What the kernel or the helper said, or what the error code means here,
        /// as " (...)"; empty when there is nothing to add.
        detail: String,
        /// The error code.
        #[source]
        source: std::io::Error,
    },
}

fn article(kind: Kind) -> &'static str {
    match kind {
        Kind::Active => "an active",
        Kind::View => "a view",
        Kind::Committed => "a committed",
    }
}

impl SnapshotError {
    /// A closure for `map_err` that wraps an I/O error with its context.
    pub(crate) fn io(
        key: &str,
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> SnapshotError {
        let key = key.to_owned();
        let path = path.into();
        move |source| SnapshotError::Io {
            key,
            op,
            path,
            source,
        }
    }

    /// A closure for `map_err` that wraps a store error.
    pub(crate) fn store(key: &str) -> impl FnOnce(treediff::StoreError) -> SnapshotError {
        let key = key.to_owned();
        move |source| SnapshotError::Store {
            key,
            source: Box::new(source),
        }
    }

    /// A closure for `map_err` that wraps a tree error.
    pub(crate) fn tree<E: std::error::Error + Send + Sync + 'static>(
        key: &str,
        op: &'static str,
    ) -> impl FnOnce(E) -> SnapshotError {
        let key = key.to_owned();
        move |source| SnapshotError::Tree {
            key,
            op,
            source: Box::new(source),
        }
    }

    /// A closure for `map_err` that wraps a capture error.
    pub(crate) fn capture(key: &str) -> impl FnOnce(treediff::CaptureError) -> SnapshotError {
        let key = key.to_owned();
        move |source| SnapshotError::Capture {
            key,
            source: Box::new(source),
        }
    }
}
