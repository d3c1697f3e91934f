//! Apply: a new tree from a base tree and a set of edits.
//!
//! The edits are grouped by directory first. Each directory on the path of an edit
//! is read once, gets all its edits, and is written back as a new node; its parent
//! then points at the new digest, up to the root. Every other subtree is reused by
//! its digest and never read. Because the encoding is canonical (entries sorted by
//! name), the new root is exactly the digest of the same tree built from scratch.
//!
//! The base tree's directories must be published in the store (they are read
//! through [`Store::read`](crate::Store::read)); the new nodes are staged in the
//! caller's transaction. Blobs that `Put` entries refer to are not checked here.

use std::collections::BTreeMap;

use crate::diff::{Change, ChangeKind};
use crate::digest::Digest;
use crate::names::{self, validate_name};
use crate::store::{StoreError, StoreTxn};
use crate::tree::{Dir, Entry, MAX_DEPTH, Node, Props, TreeError};

/// One edit of a tree, at a tree path (`"src/main.c"`: components joined by `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Sets the entry at `path`, replacing what is there (a directory entry replaces
    /// the whole subtree with the one its digest names). Missing parent directories
    /// are created. `entry.name` must be the last component of `path`.
    Put {
        /// Where.
        path: String,
        /// The new entry.
        entry: Entry,
    },
    /// Removes the entry at `path` (a directory with everything under it); it must
    /// exist.
    Delete {
        /// Where.
        path: String,
    },
    /// Sets the own properties (buildtree `unix_mode`, `mtime`) of the existing
    /// directory at `path`, keeping its contents and any other edits under it. The
    /// root is `""`; without such an edit, every rewritten directory, the root
    /// included, keeps the properties it had in the base.
    SetDirProps {
        /// Where.
        path: String,
        /// The properties; `None` for a source tree.
        props: Option<Props>,
    },
}

impl Edit {
    /// The path the edit is at.
    pub fn path(&self) -> &str {
        match self {
            Edit::Put { path, .. } | Edit::Delete { path } | Edit::SetDirProps { path, .. } => path,
        }
    }
}

impl Change {
    /// The edit that makes the old side of this change into the new side: `Put` of
    /// the new entry, `Delete` when there is none, and `SetDirProps` for a
    /// directory's own `ModeChanged`.
    pub fn to_edit(&self) -> Edit {
        let path = self.path.clone();
        match &self.new {
            None => Edit::Delete { path },
            Some(new)
                if self.kind == ChangeKind::ModeChanged && matches!(new.node, Node::Dir { .. }) =>
            {
                Edit::SetDirProps {
                    path,
                    props: new.props,
                }
            }
            Some(new) => Edit::Put {
                path,
                entry: new.clone(),
            },
        }
    }
}

impl From<&Change> for Edit {
    fn from(change: &Change) -> Edit {
        change.to_edit()
    }
}

impl From<Change> for Edit {
    fn from(change: Change) -> Edit {
        change.to_edit()
    }
}

/// An edit could not be applied; each names the path of the edit.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The path is not a tree path: empty, or a component that is empty (a leading,
    /// trailing or doubled `/`), `.`, `..`, or otherwise not a valid name.
    #[error("invalid edit path {path:?}: {problem}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A `Put`'s entry is not named after the last component of its path.
    #[error("cannot put {path}: its entry is named {name:?}, not after the path's last component")]
    NameMismatch {
        /// The edit's path.
        path: String,
        /// The entry's name.
        name: String,
    },
    /// A `Put`'s entry or a `SetDirProps`'s properties are not valid in a tree.
    #[error("cannot edit {}: {problem}", names::display(path))]
    InvalidEntry {
        /// The edit's path.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The edit would rewrite a directory deeper than [`MAX_DEPTH`] levels below
    /// the root (the limit of [`diff`](mod@crate::diff) too).
    #[error("cannot edit {path}: its directory is deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// The edit's path.
        path: String,
    },
    /// Two edits have the same path.
    #[error("{} is edited twice in one change set", names::display(path))]
    Duplicate {
        /// The path.
        path: String,
    },
    /// An edit is under a path that another edit replaces or deletes.
    #[error("cannot edit {path}: another edit of the same set replaces or deletes {ancestor}")]
    Conflict {
        /// The inner edit's path.
        path: String,
        /// The path that is replaced or deleted.
        ancestor: String,
    },
    /// A component of the path (or the path itself, for `SetDirProps`) is a file or
    /// symlink in the base tree.
    #[error("cannot edit {path}: {parent} is a {kind}, not a directory")]
    NotADirectory {
        /// The edit's path.
        path: String,
        /// The component that is not a directory.
        parent: String,
        /// What it is ("file", "symlink").
        kind: &'static str,
    },
    /// A `Delete` or `SetDirProps` of a path that the base tree does not have.
    #[error("cannot {op} {path}: there is no such entry in the base tree")]
    NotFound {
        /// The edit's path.
        path: String,
        /// The edit ("delete", "set the properties of").
        op: &'static str,
    },
    /// A directory of the base tree could not be read (names its digest and path).
    /// Boxed, as a `TreeError` is large.
    #[error(transparent)]
    Tree(Box<TreeError>),
    /// A new directory node could not be staged.
    #[error("cannot stage the new directory {}", names::display(path))]
    Store {
        /// The directory's tree path.
        path: String,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
}

impl From<TreeError> for ApplyError {
    fn from(e: TreeError) -> ApplyError {
        ApplyError::Tree(Box::new(e))
    }
}

/// Applies `edits`, in any order, to the tree `base` and returns the new root's
/// digest. New directory nodes are staged in `txn`; nothing is published until the
/// caller commits it. Without edits, `base` is returned unread.
pub fn apply(
    txn: &StoreTxn<'_>,
    base: Digest,
    edits: impl IntoIterator<Item = Edit>,
) -> Result<Digest, ApplyError> {
    let mut root = Pending::default();
    for edit in edits {
        root.insert(edit)?;
    }
    if root.children.is_empty() && root.op.is_none() {
        return Ok(base);
    }
    let props = match &root.op {
        Some(Op::Props(props)) => Some(*props),
        _ => None,
    };
    rewrite(txn, Some(base), "", &root, props)
}

/// What an edit does at its path.
#[derive(Debug)]
enum Op {
    Put(Entry),
    Delete,
    Props(Option<Props>),
}

/// The edits at and under one path, by child name.
#[derive(Debug, Default)]
struct Pending {
    op: Option<Op>,
    children: BTreeMap<String, Pending>,
}

impl Pending {
    fn insert(&mut self, edit: Edit) -> Result<(), ApplyError> {
        let (path, op) = match edit {
            Edit::Put { path, entry } => (path, Op::Put(entry)),
            Edit::Delete { path } => (path, Op::Delete),
            Edit::SetDirProps { path, props } => (path, Op::Props(props)),
        };
        let components = split_path(&path, matches!(op, Op::Props(_)))?;
        match &op {
            Op::Put(entry) => {
                if components.last() != Some(&entry.name.as_str()) {
                    return Err(ApplyError::NameMismatch {
                        path,
                        name: entry.name.clone(),
                    });
                }
                Dir::new(vec![entry.clone()], None).map_err(|problem| {
                    ApplyError::InvalidEntry {
                        path: path.clone(),
                        problem,
                    }
                })?;
            }
            Op::Props(props) => {
                Dir::new(Vec::new(), *props).map_err(|problem| ApplyError::InvalidEntry {
                    path: path.clone(),
                    problem,
                })?;
            }
            Op::Delete => {}
        }
        let mut node = self;
        for component in components {
            node = node.children.entry(component.to_owned()).or_default();
        }
        if node.op.is_some() {
            return Err(ApplyError::Duplicate { path });
        }
        node.op = Some(op);
        Ok(())
    }

    /// The path of the first edit at or under this node (which is at `path`).
    fn first_edit(&self, path: &str) -> String {
        if self.op.is_some() {
            return path.to_owned();
        }
        match self.children.iter().next() {
            Some((name, child)) => child.first_edit(&names::join(path, name)),
            None => path.to_owned(),
        }
    }
}

/// Splits and validates a tree path; `""` (the root) only if `root_ok`.
fn split_path(path: &str, root_ok: bool) -> Result<Vec<&str>, ApplyError> {
    let invalid = |problem: String| ApplyError::InvalidPath {
        path: path.to_owned(),
        problem,
    };
    if path.is_empty() {
        if root_ok {
            return Ok(Vec::new());
        }
        return Err(invalid(
            "the path is empty (only the root's properties can be set)".into(),
        ));
    }
    if path.starts_with('/') {
        return Err(invalid(
            "tree paths are relative and do not start with '/'".into(),
        ));
    }
    let components: Vec<&str> = path.split('/').collect();
    for component in &components {
        validate_name(component).map_err(|e| invalid(format!("component {component:?}: {e}")))?;
    }
    // The deepest directory rewritten is the parent of the path, or the path itself
    // for SetDirProps; diff reads directories down to MAX_DEPTH, so the two agree.
    let deepest_dir = if root_ok {
        components.len()
    } else {
        components.len() - 1
    };
    if deepest_dir > MAX_DEPTH {
        return Err(ApplyError::TooDeep {
            path: path.to_owned(),
        });
    }
    Ok(components)
}

/// Rewrites the directory at `path` (`base`, or a new empty one if `None`) with the
/// edits under `pending`, and stages it. `props` overrides the base's own properties.
fn rewrite(
    txn: &StoreTxn<'_>,
    base: Option<Digest>,
    path: &str,
    pending: &Pending,
    props: Option<Option<Props>>,
) -> Result<Digest, ApplyError> {
    let (mut entries, base_props) = match base {
        Some(digest) => {
            let dir = Dir::read(txn.store(), digest, path)?;
            let props = dir.props;
            let entries: BTreeMap<String, Entry> = dir
                .entries()
                .iter()
                .map(|e| (e.name.clone(), e.clone()))
                .collect();
            (entries, props)
        }
        None => (BTreeMap::new(), None),
    };
    for (name, child) in &pending.children {
        let child_path = names::join(path, name);
        match &child.op {
            Some(op @ (Op::Put(_) | Op::Delete)) => {
                if let Some((inner, grandchild)) = child.children.iter().next() {
                    return Err(ApplyError::Conflict {
                        path: grandchild.first_edit(&names::join(&child_path, inner)),
                        ancestor: child_path,
                    });
                }
                match op {
                    Op::Put(entry) => {
                        entries.insert(name.clone(), entry.clone());
                    }
                    _ => {
                        if entries.remove(name).is_none() {
                            return Err(ApplyError::NotFound {
                                path: child_path,
                                op: "delete",
                            });
                        }
                    }
                }
            }
            Some(Op::Props(_)) | None => {
                let sub_base = match entries.get(name) {
                    Some(Entry {
                        node: Node::Dir { digest },
                        ..
                    }) => Some(*digest),
                    Some(other) => {
                        return Err(ApplyError::NotADirectory {
                            path: child.first_edit(&child_path),
                            parent: child_path,
                            kind: other.node.kind_name(),
                        });
                    }
                    None if child.op.is_some() => {
                        return Err(ApplyError::NotFound {
                            path: child_path,
                            op: "set the properties of",
                        });
                    }
                    None => None,
                };
                let props = match &child.op {
                    Some(Op::Props(props)) => Some(*props),
                    _ => None,
                };
                let digest = rewrite(txn, sub_base, &child_path, child, props)?;
                entries.insert(
                    name.clone(),
                    Entry {
                        name: name.clone(),
                        node: Node::Dir { digest },
                        props: None,
                    },
                );
            }
        }
    }
    let dir = Dir::new(entries.into_values().collect(), props.unwrap_or(base_props)).map_err(
        |problem| ApplyError::InvalidEntry {
            path: path.to_owned(),
            problem,
        },
    )?;
    dir.write(txn).map_err(|source| ApplyError::Store {
        path: path.to_owned(),
        source: Box::new(source),
    })
}
