//! Diff: the changes between two trees, found by skipping equal subtrees.
//!
//! [`diff`] walks both trees together. Two entries with the same digest are equal,
//! so a subtree whose digest is the same on both sides is skipped without being
//! read: the cost is the number of changed paths times their depth, never the size
//! of the tree. Changes are streamed to a visitor in tree order: per directory,
//! entries by name byte order, a directory's own change before its contents (which
//! is the order of paths compared component by component).
//!
//! A directory that exists on one side only is reported once, as the entry that
//! names it, without reading it; [`expand`] lists what is under it for display.
//! [`apply`](mod@crate::apply) turns changes back into a tree.

use std::cmp::Ordering;

use crate::digest::Digest;
use crate::names;
use crate::store::Store;
use crate::tree::{Dir, Entry, MAX_DEPTH, Node, TreeError};

/// What happened at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Only in the new tree. A directory is reported once, not per file.
    Added,
    /// Only in the old tree. A directory is reported once, not per file.
    Deleted,
    /// Same type, different content: a file's digest or a symlink's target. A file
    /// whose content and executable bit both changed is `Modified`.
    Modified,
    /// Same content, different executable bit or buildtree properties (`unix_mode`,
    /// `mtime`); for a directory, its own properties.
    ModeChanged,
    /// A file, symlink or directory became another of the three. Reported once at
    /// the path, also when a side is a directory (its contents are not listed).
    TypeChanged,
}

/// One change between two trees.
///
/// In a tree, a directory's own properties live in its node and its entry carries
/// none. The one change that reports a directory present on both sides, its own
/// `ModeChanged`, carries the nodes' properties in the entries' `props`, so that it
/// can be applied without the store. The root's own change has the path `""` and
/// entries named `""`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The tree path, components joined by `/` (`"src/main.c"`); the root is `""`.
    pub path: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The entry in the old tree (`None` if added).
    pub old: Option<Entry>,
    /// The entry in the new tree (`None` if deleted).
    pub new: Option<Entry>,
}

impl Change {
    /// Whether the old side is a directory.
    pub fn old_is_dir(&self) -> bool {
        is_dir(self.old.as_ref())
    }

    /// Whether the new side is a directory.
    pub fn new_is_dir(&self) -> bool {
        is_dir(self.new.as_ref())
    }
}

fn is_dir(entry: Option<&Entry>) -> bool {
    matches!(
        entry,
        Some(Entry {
            node: Node::Dir { .. },
            ..
        })
    )
}

/// What a diff cost and found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Directory nodes read from the store.
    pub dirs_read: usize,
    /// Changes passed to the visitor.
    pub changes: usize,
}

/// A diff failed: a tree could not be read, or the visitor stopped it.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A directory node could not be read or is invalid (names its digest and path),
    /// or the tree is deeper than [`MAX_DEPTH`]. Boxed, as a `TreeError` is large.
    #[error(transparent)]
    Tree(Box<TreeError>),
    /// The visitor failed while handling the change at `path`.
    #[error("cannot handle the change at {}", names::display(path))]
    Visit {
        /// The change's path.
        path: String,
        /// The visitor's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The visitor asked to stop early; not a failure of the trees.
    #[error("the diff was stopped by its visitor")]
    Stopped,
}

impl From<TreeError> for DiffError {
    fn from(e: TreeError) -> DiffError {
        DiffError::Tree(Box::new(e))
    }
}

/// The visitor that receives changes; returning an error ends the walk with it.
pub type Visitor<'a> = dyn FnMut(Change) -> Result<(), DiffError> + 'a;

/// Streams the changes from tree `old` to tree `new` to `visit`, in tree order.
///
/// Subtrees with equal digests are skipped unread, so a change `d` levels deep
/// costs `2 × (d + 1)` directory reads at most, whatever the size of the trees.
pub fn diff(
    store: &Store,
    old: Digest,
    new: Digest,
    visit: &mut Visitor<'_>,
) -> Result<DiffStats, DiffError> {
    let mut walk = Walk {
        store,
        visit,
        stats: DiffStats::default(),
    };
    if old != new {
        walk.dirs(old, new, "", "", 0)?;
    }
    Ok(walk.stats)
}

/// All changes from `old` to `new`, collected (for callers that want them all).
pub fn changes(store: &Store, old: Digest, new: Digest) -> Result<Vec<Change>, DiffError> {
    let mut out = Vec::new();
    diff(store, old, new, &mut |change| {
        out.push(change);
        Ok(())
    })?;
    Ok(out)
}

/// Turns one change into per-entry changes for display: an added or deleted
/// directory becomes an `Added` or `Deleted` change for every file, symlink and
/// empty directory under it, in tree order. A `TypeChanged` with a directory on one
/// side becomes the change of the other side at the path (`Added` or `Deleted`),
/// then that of every entry under the directory. Any other change is passed on as
/// is. The changes it makes are for showing, not for [`apply`](mod@crate::apply).
pub fn expand(
    store: &Store,
    change: &Change,
    visit: &mut Visitor<'_>,
) -> Result<DiffStats, DiffError> {
    let mut walk = Walk {
        store,
        visit,
        stats: DiffStats::default(),
    };
    let old_dir = change.old_is_dir();
    let new_dir = change.new_is_dir();
    if old_dir == new_dir {
        // Neither side is a directory, or both are (a directory's own ModeChanged).
        walk.emit(change.clone())?;
        return Ok(walk.stats);
    }
    let depth = if change.path.is_empty() {
        0
    } else {
        change.path.split('/').count()
    };
    let (dir, other, kind) = if old_dir {
        (
            change.old.as_ref(),
            change.new.as_ref(),
            ChangeKind::Deleted,
        )
    } else {
        (change.new.as_ref(), change.old.as_ref(), ChangeKind::Added)
    };
    if let Some(other) = other {
        let other_kind = match kind {
            ChangeKind::Deleted => ChangeKind::Added,
            _ => ChangeKind::Deleted,
        };
        walk.one_side(other_kind, &change.path, other.clone())?;
    }
    if let Some(dir) = dir {
        walk.leaves(kind, &change.path, dir, depth)?;
    }
    Ok(walk.stats)
}

struct Walk<'a, 'v> {
    store: &'a Store,
    visit: &'a mut Visitor<'v>,
    stats: DiffStats,
}

impl Walk<'_, '_> {
    fn emit(&mut self, change: Change) -> Result<(), DiffError> {
        self.stats.changes += 1;
        (self.visit)(change)
    }

    fn read(&mut self, digest: Digest, path: &str, depth: usize) -> Result<Dir, DiffError> {
        if depth > MAX_DEPTH {
            return Err(TreeError::TooDeep {
                path: path.to_owned(),
            }
            .into());
        }
        self.stats.dirs_read += 1;
        Ok(Dir::read(self.store, digest, path)?)
    }

    /// Compares two different directory nodes at `path` (depth = its component count).
    fn dirs(
        &mut self,
        old: Digest,
        new: Digest,
        path: &str,
        name: &str,
        depth: usize,
    ) -> Result<(), DiffError> {
        let old_dir = self.read(old, path, depth)?;
        let new_dir = self.read(new, path, depth)?;
        if old_dir.props != new_dir.props {
            let side = |digest, props| Entry {
                name: name.to_owned(),
                node: Node::Dir { digest },
                props,
            };
            self.emit(Change {
                path: path.to_owned(),
                kind: ChangeKind::ModeChanged,
                old: Some(side(old, old_dir.props)),
                new: Some(side(new, new_dir.props)),
            })?;
        }
        let (a, b) = (old_dir.entries(), new_dir.entries());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match order {
                Ordering::Less => {
                    self.one_side(
                        ChangeKind::Deleted,
                        &names::join(path, &a[i].name),
                        a[i].clone(),
                    )?;
                    i += 1;
                }
                Ordering::Greater => {
                    self.one_side(
                        ChangeKind::Added,
                        &names::join(path, &b[j].name),
                        b[j].clone(),
                    )?;
                    j += 1;
                }
                Ordering::Equal => {
                    self.pair(&a[i], &b[j], path, depth)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn one_side(&mut self, kind: ChangeKind, path: &str, entry: Entry) -> Result<(), DiffError> {
        let (old, new) = match kind {
            ChangeKind::Deleted => (Some(entry), None),
            _ => (None, Some(entry)),
        };
        self.emit(Change {
            path: path.to_owned(),
            kind,
            old,
            new,
        })
    }

    /// Compares two entries of the same name in directories at depth `depth`.
    fn pair(
        &mut self,
        old: &Entry,
        new: &Entry,
        parent: &str,
        depth: usize,
    ) -> Result<(), DiffError> {
        if old == new {
            return Ok(());
        }
        let path = names::join(parent, &old.name);
        let kind = match (&old.node, &new.node) {
            (Node::Dir { digest: a }, Node::Dir { digest: b }) => {
                return self.dirs(*a, *b, &path, &old.name, depth + 1);
            }
            (Node::File { digest: a, .. }, Node::File { digest: b, .. }) if a != b => {
                ChangeKind::Modified
            }
            (Node::Symlink { target: a }, Node::Symlink { target: b }) if a != b => {
                ChangeKind::Modified
            }
            (Node::File { .. }, Node::File { .. })
            | (Node::Symlink { .. }, Node::Symlink { .. }) => ChangeKind::ModeChanged,
            _ => ChangeKind::TypeChanged,
        };
        self.emit(Change {
            path,
            kind,
            old: Some(old.clone()),
            new: Some(new.clone()),
        })
    }

    /// Reports `entry` at `path` as `kind` (Added or Deleted), or, if it is a
    /// non-empty directory at depth `depth`, every leaf under it.
    fn leaves(
        &mut self,
        kind: ChangeKind,
        path: &str,
        entry: &Entry,
        depth: usize,
    ) -> Result<(), DiffError> {
        if let Node::Dir { digest } = &entry.node {
            let dir = self.read(*digest, path, depth)?;
            if !dir.entries().is_empty() {
                for child in dir.entries() {
                    self.leaves(kind, &names::join(path, &child.name), child, depth + 1)?;
                }
                return Ok(());
            }
        }
        self.one_side(kind, path, entry.clone())
    }
}
