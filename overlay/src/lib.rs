//! `overlay`: snapshots of directory trees for workspaces and builds, behind one
//! [`Snapshotter`] trait with three backends: kernel overlayfs and fuse-overlayfs
//! ([`LayeredSnapshotter`]), and real directories cloned from the store
//! ([`MirrorSnapshotter`]).
//!
//! Snapshots are described as [`MountPlan`]s (data) and mounted by [`mount`], the
//! one place with mount syscalls. A layer is read as a change set of its parent's
//! tree ([`layer`]); a view is reverted by writing through it ([`Snapshotter::revert`]).
//! Records go through [`RecordStore`] and the caller's [`RecordBatch`]: this crate
//! knows nothing of the daemon's database, of D-Bus or of builds. [`probe`] says what
//! the machine supports and picks a backend.

mod error;
mod info;
pub mod layer;
mod layered;
mod mirror;
mod open;
mod plan;
pub mod probe;
mod records;
mod revert;
mod root;
mod snapshotter;
mod sys;
#[cfg(feature = "testsuite")]
pub mod testsuite;
mod trash;
mod txn;

pub use error::SnapshotError;
pub use info::{Content, Info, Kind, Owner};
pub use layered::{Driver, LayeredOptions, LayeredSnapshotter, MAX_LOWERS};
pub use mirror::{MirrorOptions, MirrorSnapshotter};
pub use open::open;
pub use plan::{MountPlan, OVERLAY_OPTIONS, OverlayPlan, Upper};
pub use probe::{BackendKind, Probe};
pub use records::{FileBatch, FileRecords, RecordBatch, RecordOp, RecordStore};
pub use revert::{Reversal, Run, lay_over, restamp, reverse};
pub use root::{Cleaned, Usage};
pub use snapshotter::{ChangeOptions, ChangeSet, Snapshotter};
pub use sys::{
    FUSE_OVERLAYFS, MountEntry, adopt_fuse_view, is_mount_root, mount, mount_id, mount_on,
    mount_table, mount_uses, unmount, unmount_checked, unmount_listed,
};
pub use txn::{CommitError, Txn};
