//! The `Snapshotter` trait: the one interface every backend implements.

use std::os::fd::BorrowedFd;
use std::path::Path;

use treediff::{Change, Digest};

use crate::error::SnapshotError;
use crate::info::{Content, Info};
use crate::layer::ReadStats;
use crate::plan::MountPlan;
use crate::probe::BackendKind;
use crate::root::{Cleaned, Usage};
use crate::txn::Txn;

/// Snapshots of directory trees, on the model of containerd's snapshotter.
///
/// # Vocabulary
///
/// A *snapshot* is a directory tree that a workspace or a build sees, kept as a
/// *layer* (its own changes) over a *parent chain* of committed snapshots. Each
/// snapshot is known by one string:
///
/// - an **active** snapshot, made by [`prepare`](Self::prepare), is writable and is
///   known by its **key**;
/// - a **view**, made by [`view`](Self::view), is a read-only active snapshot, also
///   known by a key;
/// - a **committed** snapshot is immutable and is known by its **name**; only a
///   committed snapshot can be a parent. Every committed snapshot records the
///   [tree](Info::tree) of its whole content in the store.
///
/// An active snapshot never becomes committed in place: [`commit`](Self::commit)
/// makes a new committed snapshot, under a new name, from an active one, and the key
/// is gone. A committed snapshot is made from a tree in the store with
/// [`commit_tree`](Self::commit_tree) (a base), or from an active one.
///
/// # Lifecycle
///
/// ```text
/// commit_tree(base, T) ─► prepare(ws, base) ─► mounts(ws) ─► edit ─► changes(ws)
///                                             └► revert(ws) ─► commit(v1, ws) ─► prepare(ws2, v1) ...
/// remove(key) at any point for a snapshot with no children
/// ```
///
/// The snapshotter never mounts anything: `prepare`, `view` and `mounts` return a
/// [`MountPlan`] (data), and [`crate::mount`] performs it. Mutations happen inside a
/// [`Txn`] from [`begin`](Self::begin), whose record changes the caller writes into
/// its own batch (see [`crate::txn`] for the protocol and crash safety);
/// [`cleanup`](Self::cleanup) collects what a crash left behind.
///
/// # Locking
///
/// A `Txn` holds the snapshotter's write lock: mutations are serialized, and a
/// transaction's reads see the records as they were when it began plus its own
/// changes. Reading a layer ([`changes`](Self::changes)) or reverting it takes that
/// snapshot's own lock, so it may run while other snapshots change.
pub trait Snapshotter: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Starts a change to the snapshots; holds the write lock until committed or
    /// dropped.
    fn begin(&self) -> Txn<'_>;

    /// The record of `key` (active or view) or `name` (committed).
    fn stat(&self, key: &str) -> Result<Info, SnapshotError>;

    /// How to mount the active snapshot or view `key`.
    fn mounts(&self, key: &str) -> Result<MountPlan, SnapshotError>;

    /// Makes an active snapshot `key` over the committed snapshot `parent` (or
    /// empty), whose content will be captured as `content`.
    fn prepare(
        &self,
        txn: &mut Txn<'_>,
        key: &str,
        parent: Option<&str>,
        content: Content,
    ) -> Result<MountPlan, SnapshotError>;

    /// Makes a read-only view `key` of the committed snapshot `parent`.
    fn view(&self, txn: &mut Txn<'_>, key: &str, parent: &str) -> Result<MountPlan, SnapshotError>;

    /// Makes the committed snapshot `name` from the active snapshot `key`, which must
    /// not be mounted, and removes `key`. The new snapshot records the tree of its
    /// content, captured from the layer; its blobs are durable on return.
    fn commit(&self, txn: &mut Txn<'_>, name: &str, key: &str) -> Result<Info, SnapshotError>;

    /// Makes the committed snapshot `name` whose content is `tree`, from the store,
    /// with no parent: a base to prepare workspaces on.
    fn commit_tree(
        &self,
        txn: &mut Txn<'_>,
        name: &str,
        tree: Digest,
        content: Content,
    ) -> Result<Info, SnapshotError>;

    /// Removes the snapshot `key`. Its record goes with the caller's batch; its
    /// directory goes to the trash after, so removal is O(1) for the caller.
    /// Refused while a snapshot sits on it or a mount uses it.
    fn remove(&self, txn: &mut Txn<'_>, key: &str) -> Result<(), SnapshotError>;

    /// Calls `visit` for every snapshot, in no particular order.
    fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotError>;

    /// The space the snapshot's own directory takes (not its parents').
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError>;

    /// Reads the committed snapshot `key`'s layers on disk again (its own layer
    /// and any squashed copy) and returns the tree they hold where it is not
    /// the recorded one; `None` when they hold it, or when the backend keeps no
    /// layer for committed snapshots. For layers someone else could have
    /// written: an older release left them where their owner could reach them.
    fn verify(&self, key: &str) -> Result<Option<Digest>, SnapshotError>;

    /// Replaces the committed snapshot `key`'s layers with a fresh checkout of
    /// its recorded tree, on no parent (its content is whole in it), in a new
    /// directory; the old one goes to the trash once the caller's batch is
    /// written. No mounted view may use it meanwhile: the caller unmounts them.
    fn renew(&self, txn: &mut Txn<'_>, key: &str) -> Result<Info, SnapshotError>;

    /// Collects what a crash left behind: directories no record names (unmounting
    /// them first) and the trash. Idempotent.
    fn cleanup(&self) -> Result<Cleaned, SnapshotError>;

    /// Reads the active snapshot `key`'s changes against its parent, while it may
    /// be mounted and in use: the new tree (staged and made durable in the store)
    /// and the change list. Costs O(changes) on the overlay backends.
    fn changes(&self, key: &str, options: &ChangeOptions<'_>) -> Result<ChangeSet, SnapshotError>;

    /// Makes the active snapshot `key`, mounted with its root at the descriptor
    /// `view` (shown as `shown` in errors) and possibly in use, equal to the tree
    /// `to` (its parent's when `None`) by writing the reversal through the view:
    /// what was added is removed, what was changed or deleted is restored (see
    /// [`crate::reverse`], which a caller that must log its intent first uses
    /// directly).
    /// Ignored paths (as in [`changes`](Self::changes)) are left alone. Returns the
    /// changes that were reverted, from `to` to what the view held.
    ///
    /// `to` lets a workspace whose edits were committed (recorded as a tree while
    /// the layer still holds them) be reverted to that commit rather than to the
    /// parent; its blobs and directory nodes must be in the store.
    fn revert(
        &self,
        key: &str,
        view: BorrowedFd<'_>,
        shown: &Path,
        to: Option<Digest>,
        options: &ChangeOptions<'_>,
    ) -> Result<ChangeSet, SnapshotError>;
}

/// How to read a layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChangeOptions<'a> {
    /// Extra root-relative ignore patterns (gitignore syntax), on top of the
    /// `.wsignore` files of the view.
    pub ignore_patterns: &'a [String],
}

/// What changed in an active snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeSet {
    /// The tree of the parent (the empty tree when there is none).
    pub parent_tree: Digest,
    /// The tree of the snapshot's whole content now.
    pub tree: Digest,
    /// The changes from `parent_tree` to `tree`, in tree order.
    pub changes: Vec<Change>,
    /// What reading cost.
    pub stats: ReadStats,
}
