//! What a write-back must do, decided from trees alone: the steps from the tree
//! the directory is expected to hold to the committed one, the paths where the
//! directory holds something else (conflicts), and what only the directory
//! itself can tell (checks for ignored entries, made by the writer as the caller).

use std::collections::HashMap;

use treediff::{Digest, Dir, Entry, Node, Store, TreeError};

use super::{Conflict, ConflictCause};

/// The trees a write-back compares.
#[derive(Clone, Copy, Debug)]
pub(super) struct Trees {
    /// What the workspace was opened over.
    pub base: Digest,
    /// What the directory should hold: what the last write-back into it left,
    /// else the base.
    pub expected: Digest,
    /// What is to be written: the workspace's committed source tree.
    pub committed: Digest,
    /// What the directory holds now, read with the ignore rules of the base.
    pub current: Digest,
}

/// One change to make in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Put the committed file or symlink `node` at `path`; `replaces_dir` when a
    /// directory is there now (its contents have their own `Remove` steps).
    Put {
        path: String,
        node: Node,
        replaces_dir: bool,
    },
    /// Make the empty directory `path`.
    MakeDir { path: String },
    /// Remove the file or symlink (`dir` false) or empty directory at `path`.
    Remove { path: String, dir: bool },
}

/// What only the directory can tell: the trees do not list ignored entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum DiskCheck {
    /// Nothing may be at `path`, which the directory's tree does not have:
    /// anything there is ignored, and a step would write over it.
    Absent { path: String },
    /// The directory `path`, which a file replaces, may hold only what its tree
    /// lists: `(directory, its entries' names)` for it and every directory below.
    OnlyListed {
        path: String,
        listing: Vec<(String, Vec<String>)>,
    },
}

/// A write-back, planned.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// In tree order (parents before children).
    pub steps: Vec<Step>,
    /// Directories that may be left empty by the steps and that the committed
    /// tree does not have as directories, deepest first: removed if empty.
    pub prune: Vec<String>,
    /// Paths the directory holds differently from every tree the workspace knows.
    pub conflicts: Vec<Conflict>,
    /// For the writer, before it writes anything.
    pub checks: Vec<DiskCheck>,
    /// Changed paths the directory holds as committed already.
    pub already: u64,
}

/// Plans writing `trees.committed` over what the directory holds.
pub(super) fn plan(store: &Store, trees: Trees) -> Result<Plan, PlanError> {
    let mut leaves = Vec::new();
    treediff::diff(store, trees.expected, trees.committed, &mut |change| {
        treediff::expand(store, &change, &mut |leaf| {
            leaves.push(leaf);
            Ok(())
        })
        .map(|_| ())
    })?;
    let mut nodes = Nodes::new(store);
    let mut plan = Plan::default();
    let mut prune = std::collections::BTreeSet::new();
    for leaf in leaves {
        let path = leaf.path.as_str();
        // A directory's own properties: source trees have none to write.
        if path.is_empty() || (leaf.old_is_dir() && leaf.new_is_dir()) {
            continue;
        }
        let current = nodes.node(trees.current, path)?;
        let target = leaf.new.as_ref().map(|e| &e.node);
        let committed_is_dir = matches!(nodes.node(trees.committed, path)?, Some(Node::Dir { .. }));
        let done = match target {
            Some(node) => current.as_ref() == Some(node),
            // The removal of a file that a directory replaces is done once the
            // directory is there.
            None => {
                current.is_none()
                    || (committed_is_dir
                        && !leaf.old_is_dir()
                        && matches!(current, Some(Node::Dir { .. })))
            }
        };
        if done {
            plan.already += 1;
            // A removal done by an earlier write-back that was cut off may
            // have left the directories above it, now empty, behind.
            if target.is_none() {
                prune_above(&mut nodes, trees.committed, path, &mut prune)?;
            }
            continue;
        }
        let expected = nodes.node(trees.expected, path)?;
        let base = nodes.node(trees.base, path)?;
        if !nodes.known(current.as_ref(), &[expected.as_ref(), base.as_ref()])? {
            plan.conflicts.push(Conflict {
                path: leaf.path.clone(),
                cause: ConflictCause::Changed,
            });
            continue;
        }
        if current.is_none()
            && let Some(absent) = nodes.first_absent(trees.current, path)?
        {
            plan.checks.push(DiskCheck::Absent { path: absent });
        }
        let step = match (leaf.new, &current) {
            (
                Some(Entry {
                    node: Node::Dir { .. },
                    ..
                }),
                current,
            ) => {
                if current.is_some() && !matches!(current, Some(Node::Dir { .. })) {
                    plan.steps.push(Step::Remove {
                        path: leaf.path.clone(),
                        dir: false,
                    });
                }
                Step::MakeDir { path: leaf.path }
            }
            (Some(entry), current) => {
                let replaces_dir = matches!(current, Some(Node::Dir { .. }));
                if let Some(Node::Dir { digest }) = current {
                    let mut listing = Vec::new();
                    nodes.listing(*digest, path, &mut listing)?;
                    plan.checks.push(DiskCheck::OnlyListed {
                        path: leaf.path.clone(),
                        listing,
                    });
                    prune.insert(leaf.path.clone());
                }
                Step::Put {
                    path: leaf.path,
                    node: entry.node,
                    replaces_dir,
                }
            }
            (None, current) => {
                let dir = matches!(current, Some(Node::Dir { .. }));
                prune_above(&mut nodes, trees.committed, path, &mut prune)?;
                Step::Remove {
                    path: leaf.path,
                    dir,
                }
            }
        };
        plan.steps.push(step);
    }
    // Deepest first, so that a directory is emptied before its parent is tried.
    plan.prune = prune.into_iter().collect();
    plan.prune
        .sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    Ok(plan)
}

/// Every directory above `path` that the `committed` tree does not have goes
/// into `prune`: removing `path` may leave it empty.
fn prune_above(
    nodes: &mut Nodes<'_>,
    committed: Digest,
    path: &str,
    prune: &mut std::collections::BTreeSet<String>,
) -> Result<(), PlanError> {
    let mut above = path;
    while let Some((parent, _)) = above.rsplit_once('/') {
        if !matches!(nodes.node(committed, parent)?, Some(Node::Dir { .. })) {
            prune.insert(parent.to_owned());
        }
        above = parent;
    }
    Ok(())
}

/// Planning failed: a tree could not be read from the store.
#[derive(Debug, thiserror::Error)]
pub(super) enum PlanError {
    #[error(transparent)]
    Diff(#[from] treediff::DiffError),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Nodes of trees by path, each directory node read once.
struct Nodes<'a> {
    store: &'a Store,
    dirs: HashMap<Digest, Dir>,
}

impl<'a> Nodes<'a> {
    fn new(store: &'a Store) -> Nodes<'a> {
        Nodes {
            store,
            dirs: HashMap::new(),
        }
    }

    fn dir(&mut self, digest: Digest, path: &str) -> Result<&Dir, TreeError> {
        if !self.dirs.contains_key(&digest) {
            let dir = Dir::read(self.store, digest, path)?;
            self.dirs.insert(digest, dir);
        }
        Ok(&self.dirs[&digest])
    }

    /// The node at `path` (not the root) in the tree `root`, if it has one.
    fn node(&mut self, root: Digest, path: &str) -> Result<Option<Node>, TreeError> {
        let mut digest = root;
        let mut walked = String::new();
        let mut parts = path.split('/').peekable();
        while let Some(part) = parts.next() {
            let Some(entry) = self.dir(digest, &walked)?.get(part) else {
                return Ok(None);
            };
            if parts.peek().is_none() {
                return Ok(Some(entry.node.clone()));
            }
            let Node::Dir { digest: below } = entry.node else {
                return Ok(None);
            };
            digest = below;
            walked = treediff::names::join(&walked, part);
        }
        Ok(None)
    }

    /// The shortest prefix of `path` that `root` has no entry for, reached
    /// through directories; `None` when the walk meets a file or symlink first
    /// (nothing can be on disk below it) or `path` is in the tree.
    fn first_absent(&mut self, root: Digest, path: &str) -> Result<Option<String>, TreeError> {
        let mut digest = root;
        let mut walked = String::new();
        for part in path.split('/') {
            let here = treediff::names::join(&walked, part);
            match self.dir(digest, &walked)?.get(part).map(|e| e.node.clone()) {
                None => return Ok(Some(here)),
                Some(Node::Dir { digest: below }) => digest = below,
                Some(_) => return Ok(None),
            }
            walked = here;
        }
        Ok(None)
    }

    /// Whether `current` is one of `known`, or a directory all of whose
    /// entries one of the known directories has (what is left of one after an
    /// earlier write-back removed part of it).
    fn known(
        &mut self,
        current: Option<&Node>,
        known: &[Option<&Node>],
    ) -> Result<bool, TreeError> {
        if known.contains(&current) {
            return Ok(true);
        }
        let Some(Node::Dir { digest }) = current else {
            return Ok(false);
        };
        for node in known {
            if let Some(Node::Dir { digest: of }) = node
                && self.within(*digest, *of)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether every entry under the directory `inner` is under `outer` too.
    fn within(&mut self, inner: Digest, outer: Digest) -> Result<bool, TreeError> {
        if inner == outer {
            return Ok(true);
        }
        let entries = self.dir(inner, "")?.entries().to_vec();
        for entry in entries {
            let other = self
                .dir(outer, "")?
                .get(&entry.name)
                .map(|e| e.node.clone());
            let fits = match (&entry.node, other) {
                (Node::Dir { digest: a }, Some(Node::Dir { digest: b })) => self.within(*a, b)?,
                (node, other) => other.as_ref() == Some(node),
            };
            if !fits {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The names in the directory `digest` at `path` and in every directory below.
    fn listing(
        &mut self,
        digest: Digest,
        path: &str,
        out: &mut Vec<(String, Vec<String>)>,
    ) -> Result<(), TreeError> {
        let entries = self.dir(digest, path)?.entries().to_vec();
        out.push((
            path.to_owned(),
            entries.iter().map(|e| e.name.clone()).collect(),
        ));
        for entry in entries {
            if let Node::Dir { digest } = entry.node {
                self.listing(digest, &treediff::names::join(path, &entry.name), out)?;
            }
        }
        Ok(())
    }
}
