//! Garbage collection of the store: mark what a set of root trees reaches, then
//! sweep every other object.
//!
//! The caller decides the roots and must keep anyone from adding a reference to an
//! object between [`mark`] and [`sweep`] (the daemon holds its gc lock, which every
//! transaction takes shared). Swept objects are renamed into the trash, which a
//! background thread empties: a sweep costs one rename per object, never the
//! deletion on the caller's path.

use std::collections::HashSet;
use std::path::Path;

use crate::digest::Digest;
use crate::store::{Store, StoreError};
use crate::tree::{Dir, Node, TreeError};

/// The objects some root reaches, by hash.
#[derive(Debug, Default)]
pub struct Reachable {
    hashes: HashSet<[u8; 32]>,
    /// Directory nodes read.
    pub dirs: u64,
}

impl Reachable {
    /// Whether `digest` was reached.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.hashes.contains(digest.hash())
    }

    /// How many distinct objects were reached.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether nothing was reached.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// Marks every object the trees `roots` reach, each directory node read once. A
/// root or node that is missing or damaged fails the mark: sweeping on a partial
/// mark would delete what the damaged part still names. (`fsck` reports damage.)
pub fn mark(store: &Store, roots: &[Digest]) -> Result<Reachable, TreeError> {
    let mut reachable = Reachable::default();
    let mut stack: Vec<(Digest, String)> = Vec::new();
    for root in roots {
        if reachable.hashes.insert(*root.hash()) {
            stack.push((*root, String::new()));
        }
    }
    while let Some((digest, path)) = stack.pop() {
        let dir = Dir::read(store, digest, &path)?;
        reachable.dirs += 1;
        for entry in dir.entries() {
            match &entry.node {
                Node::File { digest, .. } => {
                    reachable.hashes.insert(*digest.hash());
                }
                Node::Dir { digest } => {
                    if reachable.hashes.insert(*digest.hash()) {
                        stack.push((*digest, crate::names::join(&path, &entry.name)));
                    }
                }
                Node::Symlink { .. } => {}
            }
        }
    }
    Ok(reachable)
}

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepStats {
    /// Object files removed (blobs and their executable twins).
    pub removed_objects: u64,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Object files kept.
    pub kept_objects: u64,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// Removes every object file `reachable` does not hold (executable twins follow
/// their blob). Trees recorded by imports are roots the caller passes, not
/// something a sweep removes.
pub fn sweep(store: &Store, reachable: &Reachable) -> Result<SweepStats, StoreError> {
    let mut stats = SweepStats::default();
    let swept = store.new_sweep_dir()?;
    let result = sweep_into(store, reachable, &swept, &mut stats);
    // What was moved goes to the trash even if the sweep stopped half-way.
    store.trash(&swept);
    result.map(|()| stats)
}

fn sweep_into(
    store: &Store,
    reachable: &Reachable,
    swept: &Path,
    stats: &mut SweepStats,
) -> Result<(), StoreError> {
    for kind in ["blobs", "exec"] {
        let top = store.root().join(kind);
        for shard in read_dir(&top)? {
            for object in read_dir(&shard)? {
                let Some(hash) = object
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_hash)
                else {
                    continue; // Not an object: fsck reports it, gc leaves it.
                };
                let size = std::fs::symlink_metadata(&object)
                    .map(|m| m.len())
                    .unwrap_or(0);
                if reachable.hashes.contains(&hash) {
                    stats.kept_objects += 1;
                    stats.kept_bytes += size;
                    continue;
                }
                let to = swept.join(stats.removed_objects.to_string());
                std::fs::rename(&object, to)
                    .map_err(StoreError::io("move to the trash", &object))?;
                stats.removed_objects += 1;
                stats.removed_bytes += size;
            }
        }
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<std::path::PathBuf>, StoreError> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
        paths.push(entry.map_err(StoreError::io("list", dir))?.path());
    }
    Ok(paths)
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}
