//! Reading and checking a whole tree before anything is written.
//!
//! The tree is read breadth first, one level at a time, each level's nodes on a few
//! threads; every distinct node is read once (equal subtrees share a digest), decoded
//! and validated by [`Dir::read`]. A level past [`MAX_DEPTH`] stops the reading, so a
//! hostile chain costs at most that many reads. Each node is then summarised (its
//! height, whether properties occur below it, how much work it is to write) in one
//! pass over the distinct nodes; the checks run on the summaries, and only on an
//! error is the tree searched for the path to name.

use std::collections::{HashMap, HashSet};

use super::parallel::parallel_map;
use crate::digest::Digest;
use crate::names;
use crate::store::Store;
use crate::tree::{Dir, MAX_DEPTH, Node, TreeError};

/// Writing a file of this many bytes costs about as much as creating one more file;
/// used only to balance work between threads.
const BYTES_PER_UNIT: u64 = 256 << 10;

/// A distinct directory node and what is known about everything below it.
#[derive(Debug)]
struct Loaded {
    dir: Dir,
    /// 0 for a directory without subdirectories, else 1 + the highest child.
    height: usize,
    /// Whether the node or anything below it has buildtree properties.
    has_props: bool,
    /// The work of writing its entries and everything below (saturating).
    weight: u64,
    /// The work of writing its files and symlinks only.
    own_weight: u64,
}

/// A tree read into memory and checked: names valid, nodes canonical, depth within
/// [`MAX_DEPTH`].
#[derive(Debug)]
pub(super) struct Plan {
    root: Digest,
    nodes: HashMap<Digest, Loaded>,
}

impl Plan {
    /// Reads every directory node of `root` on up to `threads` threads and checks
    /// the tree's depth.
    pub(super) fn load(store: &Store, root: Digest, threads: usize) -> Result<Plan, TreeError> {
        let mut nodes = HashMap::new();
        let mut seen = HashSet::from([root]);
        let mut level = vec![(root, String::new())];
        let mut depth = 0;
        while !level.is_empty() {
            if depth > MAX_DEPTH {
                let (_, path) = level.swap_remove(0);
                return Err(TreeError::TooDeep { path });
            }
            let dirs = parallel_map(&level, threads, |(digest, path)| {
                Dir::read(store, *digest, path)
            });
            let mut next = Vec::new();
            for ((digest, path), dir) in level.into_iter().zip(dirs) {
                let dir = dir?;
                for entry in dir.entries() {
                    if let Node::Dir { digest: child } = entry.node
                        && seen.insert(child)
                    {
                        next.push((child, names::join(&path, &entry.name)));
                    }
                }
                let loaded = Loaded {
                    dir,
                    height: 0,
                    has_props: false,
                    weight: 0,
                    own_weight: 0,
                };
                nodes.insert(digest, loaded);
            }
            level = next;
            depth += 1;
        }
        let mut plan = Plan { root, nodes };
        plan.summarise();
        if plan.nodes[&root].height > MAX_DEPTH {
            let mut path = String::new();
            plan.descend_too_deep(root, &mut path, 0);
            return Err(TreeError::TooDeep { path });
        }
        Ok(plan)
    }

    /// Fills in every node's summary, children before parents, without recursion (a
    /// path through shared subtrees may be longer than the depth of any one read).
    fn summarise(&mut self) {
        let mut done: HashSet<Digest> = HashSet::with_capacity(self.nodes.len());
        let mut stack = vec![(self.root, 0usize)];
        while let Some(&mut (digest, ref mut next)) = stack.last_mut() {
            let entries = self.nodes[&digest].dir.entries();
            let pending = entries[*next..].iter().position(|e| match e.node {
                Node::Dir { digest: child } => !done.contains(&child),
                _ => false,
            });
            if let Some(offset) = pending {
                *next += offset + 1;
                if let Node::Dir { digest: child } = entries[*next - 1].node {
                    stack.push((child, 0));
                }
                continue;
            }
            stack.pop();
            if !done.insert(digest) {
                continue; // reached twice before it was finished
            }
            let node = &self.nodes[&digest];
            let mut height = 0;
            let mut has_props = node.dir.props.is_some();
            let mut own_weight = 0u64;
            let mut weight = 0u64;
            for entry in node.dir.entries() {
                has_props |= entry.props.is_some();
                match entry.node {
                    Node::Dir { digest: child } => {
                        let child = &self.nodes[&child];
                        height = height.max(child.height.saturating_add(1));
                        has_props |= child.has_props;
                        weight = weight.saturating_add(child.weight).saturating_add(1);
                    }
                    Node::File { digest, .. } => {
                        own_weight = own_weight.saturating_add(1 + digest.size() / BYTES_PER_UNIT);
                    }
                    Node::Symlink { .. } => own_weight = own_weight.saturating_add(1),
                }
            }
            let node = self.nodes.get_mut(&digest).unwrap();
            node.height = height;
            node.has_props = has_props;
            node.own_weight = own_weight;
            node.weight = weight.saturating_add(own_weight);
        }
    }

    /// Extends `path` (the node `digest` at `depth`, whose subtree reaches deeper than
    /// the limit) to the first directory past the limit.
    fn descend_too_deep(&self, mut digest: Digest, path: &mut String, mut depth: usize) {
        while depth <= MAX_DEPTH {
            let next = self.nodes[&digest]
                .dir
                .entries()
                .iter()
                .find_map(|e| match e.node {
                    Node::Dir { digest: child }
                        if depth + 1 + self.nodes[&child].height > MAX_DEPTH =>
                    {
                        Some((&e.name, child))
                    }
                    _ => None,
                });
            let Some((name, child)) = next else { return };
            push_name(path, name);
            digest = child;
            depth += 1;
        }
    }

    /// The root's digest.
    pub(super) fn root(&self) -> Digest {
        self.root
    }

    /// The node `digest`, which is part of the tree.
    pub(super) fn dir(&self, digest: Digest) -> &Dir {
        &self.nodes[&digest].dir
    }

    /// The work of writing everything below the node `digest`.
    pub(super) fn weight(&self, digest: Digest) -> u64 {
        self.nodes[&digest].weight
    }

    /// The work of writing the files and symlinks of the node `digest`.
    pub(super) fn own_weight(&self, digest: Digest) -> u64 {
        self.nodes[&digest].own_weight
    }

    /// The first tree path (depth first, by name; the root is "") that carries
    /// buildtree properties, if any does.
    pub(super) fn first_props_path(&self) -> Option<String> {
        let mut path = String::new();
        self.find_props(self.root, &mut path).then_some(path)
    }

    fn find_props(&self, digest: Digest, path: &mut String) -> bool {
        let node = &self.nodes[&digest];
        if !node.has_props {
            return false;
        }
        if node.dir.props.is_some() {
            return true;
        }
        for entry in node.dir.entries() {
            let len = path.len();
            push_name(path, &entry.name);
            let found = match entry.node {
                Node::Dir { digest: child } => self.find_props(child, path),
                _ => entry.props.is_some(),
            };
            if found {
                return true;
            }
            path.truncate(len);
        }
        false
    }

    /// Every distinct (content digest, executable bit) of the tree's files.
    pub(super) fn objects(&self) -> Vec<(Digest, bool)> {
        let mut objects = HashSet::new();
        for node in self.nodes.values() {
            for entry in node.dir.entries() {
                if let Node::File { digest, executable } = entry.node {
                    objects.insert((digest, executable));
                }
            }
        }
        objects.into_iter().collect()
    }

    /// The first tree path of a file with this content (and, if given, this
    /// executable bit), for error messages.
    pub(super) fn first_path_of(&self, digest: Digest, executable: Option<bool>) -> String {
        let mut path = String::new();
        let mut searched = HashSet::new();
        self.find_file(self.root, digest, executable, &mut path, &mut searched);
        path
    }

    fn find_file(
        &self,
        node: Digest,
        digest: Digest,
        executable: Option<bool>,
        path: &mut String,
        searched: &mut HashSet<Digest>,
    ) -> bool {
        if !searched.insert(node) {
            return false;
        }
        for entry in self.nodes[&node].dir.entries() {
            let len = path.len();
            push_name(path, &entry.name);
            let found = match entry.node {
                Node::File {
                    digest: d,
                    executable: x,
                } => d == digest && executable.is_none_or(|e| e == x),
                Node::Dir { digest: child } => {
                    self.find_file(child, digest, executable, path, searched)
                }
                Node::Symlink { .. } => false,
            };
            if found {
                return true;
            }
            path.truncate(len);
        }
        false
    }
}

/// Appends `name` to the tree path `path`.
pub(super) fn push_name(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('/');
    }
    path.push_str(name);
}
