//! `ws store …` through the daemon: import a caller's directory, check a tree out
//! into a caller's directory, diff two trees, check the store.
//!
//! The store is shared by every user of the daemon, so knowing a tree's digest
//! is not enough to read it: a caller reads only trees their own records lead
//! to (see `grants`). Writes into a caller's directory are made with the
//! caller's credentials (the files are theirs, and nothing is written where
//! they could not write); the store, private to the daemon, is read with the
//! daemon's.

use treediff::checkout::{CheckoutMode, CheckoutOptions, CheckoutStats};
use treediff::{Change, Digest, SourceAccess};

use super::{Caller, Manager, MountPoint};
use crate::access::CallerAccess;
use crate::error::Error;

/// One changed path between two trees, as `ws store diff` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeChange {
    /// The path; an added or deleted empty directory ends in `/`.
    pub path: String,
    /// The change's name (see [`super::change_name`]).
    pub change: &'static str,
    /// Its unified patch, when asked for.
    pub patch: Option<String>,
}

impl Manager {
    /// Writes `tree` into `dest`, an empty directory the caller owns (checked
    /// through the descriptor), with the caller's credentials.
    pub fn store_checkout(
        &self,
        caller: Caller,
        tree: Digest,
        dest: &MountPoint,
        mode: CheckoutMode,
    ) -> Result<CheckoutStats, Error> {
        self.serves(caller)?;
        let _store = self.store_guard();
        self.check_readable(caller, tree)?;
        // Root may write anywhere; anyone else only into their own directory.
        let owner = (caller.uid != 0).then_some(caller.uid);
        let path = dest.checked_path(owner, "checkout target")?;
        let access = CallerAccess::for_caller(caller).map_err(|source| Error::Io {
            op: "read the groups of the caller, to check out into",
            path: path.clone(),
            source,
        })?;
        if mode == CheckoutMode::Hardlink && access.is_some() {
            return Err(Error::Denied {
                problem: "hardlink checkouts share the store's own files, which only the daemon's user may link; use --mode reflink or copy".to_owned(),
            });
        }
        // By the checked path: the checkout writes with the caller's credentials,
        // so a path swapped meanwhile could only lead it where the caller may
        // write. It reads the store, which only the daemon may, as the daemon.
        let options = CheckoutOptions { mode, owner: None };
        let access = access.as_ref().map(|a| a as &dyn SourceAccess);
        treediff::checkout::checkout_as(&self.store, tree, &path, &options, access)
            .map_err(|e| Error::store_on(format!("checkout of {tree} into {}", path.display()))(e))
    }

    /// The changes from `old` to `new` for `caller`, who must be allowed to read
    /// both: each directory added or deleted expanded to its files, with
    /// unified patches (`context` lines) if `patches`.
    pub fn store_diff(
        &self,
        caller: Caller,
        old: Digest,
        new: Digest,
        patches: bool,
        context: usize,
    ) -> Result<Vec<TreeChange>, Error> {
        self.serves(caller)?;
        let _store = self.store_guard();
        self.check_readable(caller, old)?;
        self.check_readable(caller, new)?;
        self.diff_trees(old, new, patches, context)
    }

    /// [`Manager::store_diff`] for the daemon's own use, unchecked.
    pub(super) fn diff_trees(
        &self,
        old: Digest,
        new: Digest,
        patches: bool,
        context: usize,
    ) -> Result<Vec<TreeChange>, Error> {
        let _store = self.store_guard();
        let subject = || format!("diff of {old} and {new}");
        let mut leaves: Vec<Change> = Vec::new();
        treediff::diff(&self.store, old, new, &mut |change| {
            treediff::expand(&self.store, &change, &mut |leaf| {
                leaves.push(leaf);
                Ok(())
            })
            .map(|_| ())
        })
        .map_err(Error::store_on(subject()))?;
        leaves
            .into_iter()
            .map(|leaf| {
                let patch = if patches {
                    Some(
                        treediff::unified_diff(&self.store, &leaf, context)
                            .map_err(Error::store_on(subject()))?,
                    )
                } else {
                    None
                };
                Ok(TreeChange {
                    path: shown_path(&leaf),
                    change: super::change_name(leaf.kind),
                    patch,
                })
            })
            .collect()
    }

    /// Checks every object of the store and the trees `roots`, with every tree
    /// imports recorded (the daemon's own roots are `fsck`'s).
    pub fn store_fsck(
        &self,
        caller: Caller,
        roots: &[Digest],
    ) -> Result<treediff::fsck::FsckReport, Error> {
        if caller.uid != 0 && caller.uid != self.euid {
            return Err(Error::Denied {
                problem: "checking the store reads every user's objects; run it as root".to_owned(),
            });
        }
        let _store = self.store_guard();
        treediff::fsck(&self.store, roots).map_err(Error::store_on("the store".to_owned()))
    }
}

/// A thread acting with a caller's credentials until dropped.
pub(super) struct AsCaller<'a>(&'a CallerAccess);

impl AsCaller<'_> {
    pub(super) fn enter(access: &CallerAccess) -> std::io::Result<AsCaller<'_>> {
        access.as_reader()?;
        Ok(AsCaller(access))
    }
}

impl Drop for AsCaller<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.as_writer() {
            // A daemon thread that cannot become root again must not serve anyone.
            panic!("cannot restore the daemon's credentials: {e}");
        }
    }
}

/// A path as listed: an added or deleted empty directory ends in `/`.
fn shown_path(change: &Change) -> String {
    let is_dir = if change.kind == treediff::ChangeKind::Deleted {
        change.old_is_dir()
    } else {
        change.new_is_dir()
    };
    if is_dir {
        format!("{}/", treediff::names::display(&change.path))
    } else {
        change.path.clone()
    }
}
