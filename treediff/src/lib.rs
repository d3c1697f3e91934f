//! `treediff`: the content-addressed store of BLAKE3 Merkle trees.
//!
//! Blobs and REAPI `Directory` messages live in a [`Store`]; [`capture`] turns a
//! directory into a tree, [`checkout`] a tree into a directory, [`diff`] compares two
//! trees by skipping equal subtrees, [`apply`] rewrites a tree along a change set, and
//! [`fsck`] checks the store. Nothing here knows about mounts, D-Bus or builds.

pub mod apply;
pub mod blob;
pub mod capture;
pub mod checkout;
pub mod diff;
pub mod digest;
pub mod fsck;
pub mod gc;
mod race_point;
pub mod safe_fs;
pub mod store;
pub(crate) mod sys;

pub use blob::VerifiedBlob;
pub use digest::Digest;
pub use race_point::race_point;
pub use store::{Store, StoreError, StoreTxn};
pub mod names;
pub mod statcache;
pub mod textdiff;
pub mod tree;

pub use apply::{ApplyError, Edit, apply};
pub use capture::{
    CaptureError, CaptureMode, CaptureOptions, CaptureStats, SourceAccess, capture, import,
};
pub use checkout::{CheckoutError, CheckoutMode, CheckoutOptions, CheckoutStats, checkout};
pub use diff::{Change, ChangeKind, DiffError, DiffStats, diff, expand};
pub use fsck::{FsckReport, Problem, fsck};
pub use statcache::{FileStatCache, StatCache};
pub use sys::Mtime;
pub use textdiff::{TextDiffError, unified_diff};
pub use tree::{Dir, Entry, Node, Props, TreeError};
