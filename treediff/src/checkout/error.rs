//! The errors of a checkout: each names the tree path, the filesystem path and the
//! digest involved, says what failed, and what to do about it.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::names;
use crate::store::StoreError;
use crate::tree::TreeError;

/// A checkout failed. Errors raised before anything was written say "nothing was
/// written"; the others leave a partial target that the caller removes.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The target cannot take a checkout: it is not empty, not a directory, a
    /// symlink, or its parent is missing. Nothing was written.
    #[error("cannot check out tree {tree} into {}: {problem}", target.display())]
    Target {
        /// The tree being checked out.
        tree: Digest,
        /// The target as given.
        target: PathBuf,
        /// What is wrong with it and what to do, as a phrase.
        problem: String,
        /// The operating system's reason, when a syscall failed.
        #[source]
        source: Option<io::Error>,
    },
    /// A directory node of the tree is missing, unreadable, invalid (a hostile name,
    /// duplicate or unsorted entries, not canonical) or nested too deep. The whole
    /// tree is read and checked before anything is written, so nothing was written.
    #[error(
        "refusing to check out tree {tree} into {}: its {} is missing, invalid or too deep (see the cause); nothing was written",
        target.display(),
        dir_label(path)
    )]
    Tree {
        /// The tree being checked out.
        tree: Digest,
        /// The target directory.
        target: PathBuf,
        /// The tree path of the offending directory ("" for the root).
        path: String,
        /// What is wrong, naming the node's digest.
        #[source]
        source: Box<TreeError>,
    },
    /// Hardlink mode was asked for a tree with buildtree properties (mtimes,
    /// modes), which links to shared, read-only store objects cannot carry.
    #[error(
        "cannot hardlink tree {tree} into {}: {} has buildtree properties (mode or mtime) that links to shared store objects cannot carry; check buildtrees out with reflink or copy mode instead; nothing was written",
        target.display(),
        if path.is_empty() { "its root directory" } else { path.as_str() }
    )]
    HardlinkProps {
        /// The tree being checked out.
        tree: Digest,
        /// The target directory.
        target: PathBuf,
        /// The first tree path (depth first, by name) that has properties.
        path: String,
    },
    /// Hardlink mode was asked with an owner: giving the links away would give
    /// away the store's own objects, which every checkout shares.
    #[error(
        "cannot hardlink tree {tree} into {} for another owner: hard links are the store's own objects, which cannot be given away; check out with reflink or copy mode instead; nothing was written",
        target.display()
    )]
    HardlinkOwner {
        /// The tree being checked out.
        tree: Digest,
        /// The target directory.
        target: PathBuf,
    },
    /// A file's store object is missing, has the wrong size, or cannot be read.
    #[error(
        "cannot check out file {} ({digest}) into {}: its store object is missing or damaged (see the cause); run `ws store fsck` to list every damaged object; {}",
        names::display(path),
        target.display(),
        leftover(*partial)
    )]
    Object {
        /// The file's content digest.
        digest: Digest,
        /// The first tree path that holds it.
        path: String,
        /// The target directory.
        target: PathBuf,
        /// Whether the target had already been partly written.
        partial: bool,
        /// The store's report, naming the object file.
        #[source]
        source: Box<StoreError>,
    },
    /// A blob's bytes did not match its digest while being copied out. The file
    /// being written was removed: readers only ever get verified bytes.
    #[error(
        "cannot copy file {} ({digest}) to {}: its blob is corrupt (see the cause), so the file was removed; the checkout in {} is incomplete: remove it",
        names::display(path),
        target.join(path).display(),
        target.display()
    )]
    Corrupt {
        /// The digest the blob is stored under.
        digest: Digest,
        /// The tree path being written.
        path: String,
        /// The target directory.
        target: PathBuf,
        /// The store's report ([`StoreError::Corrupt`]), naming the object file and
        /// what does not match.
        #[source]
        source: Box<StoreError>,
    },
    /// Adding the executable twins that hardlink mode needs to the store failed.
    #[error(
        "cannot add the executable twins of tree {tree}'s files to the store (needed to hardlink it into {}); nothing was written",
        target.display()
    )]
    Store {
        /// The tree being checked out.
        tree: Digest,
        /// The target directory.
        target: PathBuf,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// The thread could not switch between the credentials of the target's user
    /// and the process's own.
    #[error(
        "cannot check out tree {tree} into {}: cannot {op}; the checkout in it may be incomplete: remove it and retry",
        target.display()
    )]
    Credentials {
        /// The tree being checked out.
        tree: Digest,
        /// The target directory.
        target: PathBuf,
        /// Which switch failed.
        op: &'static str,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// Writing into the target failed.
    #[error(
        "cannot {op} {} (tree path {}, digest {digest}); the checkout in {} is incomplete: remove it, fix the cause and retry",
        target.join(path).display(),
        names::display(path),
        target.display()
    )]
    Io {
        /// What was being done ("create file", "hardlink", "set the mtime of").
        op: &'static str,
        /// The tree path it was done on (below `target`).
        path: String,
        /// The file's content digest, or for a directory its node's digest, or for
        /// a symlink the digest of the directory that holds it.
        digest: Digest,
        /// The target directory.
        target: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

/// "root directory" or "directory <path>".
fn dir_label(path: &str) -> String {
    if path.is_empty() {
        "root directory".to_owned()
    } else {
        format!("directory {path}")
    }
}

fn leftover(partial: bool) -> &'static str {
    if partial {
        "the checkout is incomplete: remove it"
    } else {
        "nothing was written"
    }
}
