//! Staging what a build sees: its dependencies' artifacts merged into one
//! read-only sysroot, and the build's own working directories.

use std::path::{Path, PathBuf};

use treediff::checkout::{CheckoutMode, CheckoutOptions};
use treediff::{Digest, Dir, Entry, Node, Store, StoreTxn};

use crate::error::Error;
use crate::manager::{Manager, new_id};

/// The tree holding every tree of `trees` merged, later ones winning where two
/// hold the same path (directories merge entry by entry); `None` for no trees.
pub fn merge_trees(txn: &StoreTxn<'_>, trees: &[Digest]) -> Result<Option<Digest>, Error> {
    let mut merged: Option<Digest> = None;
    for tree in trees {
        merged = Some(match merged {
            None => *tree,
            Some(base) => merge_two(txn, base, *tree, "")?,
        });
    }
    Ok(merged)
}

fn merge_two(txn: &StoreTxn<'_>, base: Digest, over: Digest, path: &str) -> Result<Digest, Error> {
    if base == over {
        return Ok(base);
    }
    let store = txn.store();
    let read = |d: Digest| {
        Dir::read(store, d, path).map_err(Error::store_on("the dependencies' artifacts".into()))
    };
    let (a, b) = (read(base)?, read(over)?);
    let mut entries: Vec<Entry> = Vec::new();
    for entry in a.entries() {
        if b.get(&entry.name).is_none() {
            entries.push(entry.clone());
        }
    }
    for entry in b.entries() {
        let merged = match (a.get(&entry.name), &entry.node) {
            (
                Some(Entry {
                    node: Node::Dir { digest: under },
                    ..
                }),
                Node::Dir { digest },
            ) => Entry {
                node: Node::Dir {
                    digest: merge_two(
                        txn,
                        *under,
                        *digest,
                        &treediff::names::join(path, &entry.name),
                    )?,
                },
                ..entry.clone()
            },
            _ => entry.clone(),
        };
        entries.push(merged);
    }
    let dir = Dir::new(entries, b.props.or(a.props)).map_err(|problem| Error::Invalid {
        what: "dependency artifacts",
        problem,
    })?;
    dir.write(txn)
        .map_err(Error::store_on("the dependencies' artifacts".into()))
}

impl Manager {
    /// A read-only directory holding `tree` (the merged artifacts of a build's
    /// dependencies): a hardlink checkout kept under `<state>/sysroots/`, made
    /// once per tree (into a new directory renamed into place, so a crash never
    /// leaves a partial one under the final name).
    pub(in crate::manager) fn sysroot(&self, tree: Digest) -> Result<PathBuf, Error> {
        let root = self.dirs.root().join("sysroots");
        let path = root.join(format!("{}-{}", tree.hex(), tree.size()));
        if path.is_dir() {
            return Ok(path);
        }
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { op, path, source }
        };
        std::fs::create_dir_all(&root).map_err(io("create", &root))?;
        let temp = root.join(format!(".new-{}", new_id()));
        treediff::checkout::checkout(
            &self.store,
            tree,
            &temp,
            &CheckoutOptions {
                mode: CheckoutMode::Hardlink,
                owner: None,
            },
        )
        .map_err(Error::store_on(format!("the sysroot {}", temp.display())))?;
        match std::fs::rename(&temp, &path) {
            Ok(()) => Ok(path),
            // Another build made it meanwhile: equal content by its name.
            Err(_) if path.is_dir() => {
                trash(&temp);
                Ok(path)
            }
            Err(e) => Err(io("rename into place", &path)(e)),
        }
    }
}

/// Removes `path` on a thread of its own: deleting many files is slow here, and
/// never done on a caller's path.
pub fn trash(path: &Path) {
    let path = path.to_owned();
    std::thread::spawn(move || {
        if let Err(e) = std::fs::remove_dir_all(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove");
        }
    });
}

/// The tree holding the log blob `log` as `build.log`, so that a ref keeps it.
pub fn log_tree(txn: &StoreTxn<'_>, log: Digest) -> Result<Digest, Error> {
    let dir = Dir::new(
        vec![Entry {
            name: "build.log".to_owned(),
            node: Node::File {
                digest: log,
                executable: false,
            },
            props: None,
        }],
        None,
    )
    .expect("one valid name");
    dir.write(txn)
        .map_err(Error::store_on("the build log".into()))
}

/// Whether every node and blob of `tree` is in the store and matches its
/// digest (each is read and hashed): a cached artifact is used only then, and a
/// damaged one is rebuilt, never used.
pub fn is_intact(store: &Store, tree: Digest) -> bool {
    fn walk(store: &Store, tree: Digest, path: &str) -> Result<(), ()> {
        let dir = Dir::read(store, tree, path).map_err(|_| ())?;
        for entry in dir.entries() {
            match &entry.node {
                Node::Dir { digest } => {
                    walk(store, *digest, &treediff::names::join(path, &entry.name))?
                }
                Node::File { digest, .. } => {
                    store.read(digest).map_err(|_| ())?;
                }
                Node::Symlink { .. } => {}
            }
        }
        Ok(())
    }
    walk(store, tree, "").is_ok()
}
