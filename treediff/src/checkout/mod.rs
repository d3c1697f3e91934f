//! Checkout: a tree from the store written out as a directory.
//!
//! [`checkout`] reads the whole tree first: every directory node is read with
//! [`Dir::read`](crate::Dir::read), which refuses hostile names (`/`, `.`, `..`, NUL,
//! empty), duplicate or unsorted entries and non-canonical encodings, and the depth
//! is checked against [`MAX_DEPTH`](crate::tree::MAX_DEPTH). Every file's store
//! object is looked up and its size checked. Only then is the target created, so an
//! invalid tree or a missing object writes nothing at all.
//!
//! Three [`CheckoutMode`]s put the files in place:
//!
//! - **hardlink**: each file is a hard link to its store object, the 0444 blob or,
//!   for executables, its 0555 twin (made first, in one store transaction, if
//!   missing). For read-only lower directories: the inode is shared, so a tree with
//!   buildtree properties (mtimes, modes) is refused. An object that already has
//!   the most links its filesystem allows is copied instead.
//! - **reflink**: each file shares its object's extents (`FICLONE`); where the
//!   filesystem cannot, it is copied as in copy mode.
//!
//!   Linked and reflinked bytes are not read, so not hashed: the object's size is
//!   checked, its content is trusted (`ws store fsck` verifies it). Executable twins
//!   are verified when they are made.
//! - **copy**: each file's bytes are read from the store, hashed and written; a
//!   mismatch fails the checkout naming the digest, and the file is removed.
//!
//! In every mode, files without buildtree properties carry the store's fixed
//! [`OBJECT_MTIME`](crate::store::OBJECT_MTIME), so unedited sources look equally
//! old whichever mode made them. Reflinked and copied files get mode 0755
//! (executable) or 0644 with `fchmod`, whatever the umask; directories 0755. Where a
//! buildtree has properties, files, directories and the root get their `unix_mode`
//! and `mtime`, symlinks their `mtime` (Linux symlinks have no mode of their own).
//! A directory's mode and mtime are set once all its entries are written. A target
//! that already existed (empty) keeps its own mode unless the tree's root has
//! properties.
//!
//! Reading the tree, checking its objects and writing it each run on up to four
//! threads (see `parallel`): a large tree is written as independent subtrees.
//!
//! # Owner
//!
//! With [`CheckoutOptions::owner`] (a root daemon writing a user's layer), every
//! entry is given to that owner as it is written, through what the checkout
//! holds: a file by `fchown` on the descriptor that created it, a symlink by
//! `fchownat` of its name below its directory's descriptor without following
//! it, a directory by `fchown` on its descriptor once all its entries are
//! written, the target last. Until then a directory the checkout created is its
//! own (mode 0700), so the owner cannot enter it, let alone swap what is in it,
//! and no path is ever walked to change an owner. (An existing target the owner
//! can write lets them race the checkout inside it, still only through
//! descriptors.) Hardlink mode refuses an owner: its files are the store's
//! objects.
//!
//! # Safety rules
//!
//! A checkout never writes outside its target. All work is relative to directory
//! descriptors of directories the checkout itself created, one component at a time:
//! directories are opened with `O_NOFOLLOW|O_DIRECTORY`, files created with
//! `O_EXCL|O_NOFOLLOW`, symlinks are created as data and never followed (their
//! mtime is set with `AT_SYMLINK_NOFOLLOW`). The target itself must not be a
//! symlink, and must be absent (its parent present) or an empty directory.
//!
//! # Credentials
//!
//! [`checkout_as`] writes a target of another user with that user's credentials
//! (a daemon running as root, checking out into a user's directory) while the
//! store, private to the process, is read with the process's own: the threads
//! switch around each object they open, as capture's do around each store write.
//!
//! # Crash safety
//!
//! A checkout is not a transaction. An error or a crash after the target was
//! created leaves a partial target, which the caller discards (errors say so);
//! nothing outside the target is ever touched. The only store change is the
//! addition of executable twins, which is a committed [`StoreTxn`](crate::StoreTxn).

mod error;
mod parallel;
mod plan;
mod write;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use nix::sys::stat::SFlag;

pub use error::CheckoutError;

use crate::capture::SourceAccess;
use crate::digest::Digest;
use crate::store::{ObjectKind, Store, StoreError};
use crate::sys;
use crate::tree::TreeError;
use plan::Plan;
use write::{Shared, Worker};

/// How files are put in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckoutMode {
    /// Hard links to the store's read-only objects: fastest, for immutable lower
    /// directories; refuses trees with buildtree properties.
    Hardlink,
    /// Copy-on-write clones of the objects, falling back to verified copies where
    /// the filesystem cannot clone.
    Reflink,
    /// Verified copies.
    #[default]
    Copy,
}

/// How to check out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckoutOptions {
    /// How files are put in place.
    pub mode: CheckoutMode,
    /// Who every entry written, and the target, belong to, as `(uid, gid)`:
    /// `None` leaves them to the process's user. Needs a mode that copies or
    /// clones (hard links are the store's own objects) and the privilege to
    /// give files away.
    pub owner: Option<(u32, u32)>,
}

/// What a checkout wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckoutStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created below the target (the target itself is not counted).
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// The total size of the files, however they were put in place.
    pub bytes: u64,
    /// Files that are hard links to store objects.
    pub hardlinked: u64,
    /// Files that share their store object's extents.
    pub reflinked: u64,
    /// Files whose bytes were copied (and verified).
    pub copied: u64,
}

impl CheckoutStats {
    fn add(&mut self, other: &CheckoutStats) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.bytes += other.bytes;
        self.hardlinked += other.hardlinked;
        self.reflinked += other.reflinked;
        self.copied += other.copied;
    }
}

/// Writes the tree `tree` from `store` into `target`, which must not exist (its
/// parent must) or be an empty directory. See the module doc for the modes and the
/// safety rules. On error, a target that was already created is left partial, for
/// the caller to remove; errors raised before it was touched say "nothing was
/// written".
pub fn checkout(
    store: &Store,
    tree: Digest,
    target: &Path,
    options: &CheckoutOptions,
) -> Result<CheckoutStats, CheckoutError> {
    checkout_as(store, tree, target, options, None)
}

/// [`checkout`] into a target of another user, written with their credentials:
/// `access`'s reader's (see [`SourceAccess`]). The target is inspected, created
/// and written as the reader, on threads that start as the reader; the store,
/// which only the process may read, is read with the process's own credentials
/// (the plan and the objects' checks before, and each object's opening, with a
/// switch around it). The calling thread acts as the process before and after.
pub fn checkout_as(
    store: &Store,
    tree: Digest,
    target: &Path,
    options: &CheckoutOptions,
    access: Option<&dyn SourceAccess>,
) -> Result<CheckoutStats, CheckoutError> {
    let place = as_reader(access, tree, target, || Place::inspect(tree, target))?;
    let threads = parallel::threads();
    let plan = Plan::load(store, tree, threads).map_err(|source| CheckoutError::Tree {
        tree,
        target: target.to_owned(),
        path: tree_error_path(&source).to_owned(),
        source: Box::new(source),
    })?;
    if options.mode == CheckoutMode::Hardlink && options.owner.is_some() {
        return Err(CheckoutError::HardlinkOwner {
            tree,
            target: target.to_owned(),
        });
    }
    if options.mode == CheckoutMode::Hardlink
        && let Some(path) = plan.first_props_path()
    {
        return Err(CheckoutError::HardlinkProps {
            tree,
            target: target.to_owned(),
            path,
        });
    }
    let twins = check_objects(store, &plan, options.mode, target, threads)?;
    if !twins.is_empty() {
        add_exec_twins(store, &plan, &twins, target)?;
    }

    let shared = Shared {
        store,
        plan: &plan,
        mode: options.mode,
        owner: options.owner,
        target,
        reflink: AtomicBool::new(true),
        access: Access(access),
    };
    as_reader(access, tree, target, || {
        let (root, created) = place.open(tree, target)?;
        let stats = parallel::write_tree(&shared, root.as_fd(), threads)?;
        let mut worker = Worker::new(&shared);
        if created || plan.dir(tree).props.is_some() {
            worker.finish_dir(root.as_fd(), tree)?;
        } else {
            // An existing target keeps its mode, and is given like every directory.
            worker.give(root.as_fd(), tree)?;
        }
        Ok(stats)
    })
}

/// Runs `f` with `access`'s reader's credentials, then the process's again.
fn as_reader<T>(
    access: Option<&dyn SourceAccess>,
    tree: Digest,
    target: &Path,
    f: impl FnOnce() -> Result<T, CheckoutError>,
) -> Result<T, CheckoutError> {
    let Some(access) = access else {
        return f();
    };
    let switch = |op: &'static str| {
        move |source| CheckoutError::Credentials {
            tree,
            target: target.to_owned(),
            op,
            source,
        }
    };
    access
        .as_reader()
        .map_err(switch("take on the credentials of the target's user"))?;
    let result = f();
    if let Err(e) = access.as_writer() {
        // A thread left with another user's credentials would act for whoever
        // the process serves next with them: it must not go on.
        panic!("cannot take on the process's own credentials again after a checkout: {e}");
    }
    result
}

/// The credentials a checkout switches between, if any.
#[derive(Clone, Copy)]
pub(super) struct Access<'a>(pub Option<&'a dyn SourceAccess>);

impl std::fmt::Debug for Access<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Access(switched)"
        } else {
            "Access(none)"
        })
    }
}

/// The tree path a tree error is about.
fn tree_error_path(error: &TreeError) -> &str {
    match error {
        TreeError::Store { path, .. }
        | TreeError::Invalid { path, .. }
        | TreeError::TooDeep { path } => path,
    }
}

/// Looks up every distinct object the checkout needs and checks its size, so that a
/// missing or truncated object fails before anything is written. Returns the
/// digests whose executable twin hardlink mode still has to make.
fn check_objects(
    store: &Store,
    plan: &Plan,
    mode: CheckoutMode,
    target: &Path,
    threads: usize,
) -> Result<Vec<Digest>, CheckoutError> {
    let objects = plan.objects();
    let checked = parallel::parallel_map(&objects, threads, |&(digest, executable)| {
        let kind = if mode == CheckoutMode::Hardlink && executable {
            ObjectKind::Exec
        } else {
            ObjectKind::Blob
        };
        let mut buf = [0; write::OBJECT_PATH_MAX];
        let rel = write::object_path(&mut buf, kind, &digest);
        let path = || store.root().join(rel);
        match sys::lstat_at(store.cas_fd(), rel) {
            Ok(stat) if file_kind(stat.st_mode) != SFlag::S_IFREG => Err(StoreError::Corrupt {
                digest,
                path: path(),
                problem: "its object is not a regular file".to_owned(),
            }),
            Ok(stat) if stat.st_size as u64 != digest.size() => Err(StoreError::Corrupt {
                digest,
                path: path(),
                problem: format!(
                    "its file has {} bytes, the digest says {}",
                    stat.st_size,
                    digest.size()
                ),
            }),
            Ok(_) => Ok(false),
            // put_exec_twin reads and verifies the blob, and names it if it is missing.
            Err(e) if e.kind() == io::ErrorKind::NotFound && kind == ObjectKind::Exec => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::Missing {
                digest,
                path: path(),
            }),
            Err(e) => Err(StoreError::io("look up", path())(e)),
        }
    });
    let mut twins = Vec::new();
    for (&(digest, executable), result) in objects.iter().zip(checked) {
        match result {
            Ok(false) => {}
            Ok(true) => twins.push(digest),
            Err(source) => {
                let exec_only = (mode == CheckoutMode::Hardlink && executable).then_some(true);
                return Err(CheckoutError::Object {
                    digest,
                    path: plan.first_path_of(digest, exec_only),
                    target: target.to_owned(),
                    partial: false,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(twins)
}

/// The file type bits of an `st_mode`.
fn file_kind(st_mode: u32) -> SFlag {
    SFlag::from_bits_truncate(st_mode) & SFlag::S_IFMT
}

/// Makes the missing 0555 twins of executables, verifying each blob on the way, in
/// one committed transaction.
fn add_exec_twins(
    store: &Store,
    plan: &Plan,
    twins: &[Digest],
    target: &Path,
) -> Result<(), CheckoutError> {
    let store_error = |source| CheckoutError::Store {
        tree: plan.root(),
        target: target.to_owned(),
        source: Box::new(source),
    };
    let txn = store.begin().map_err(store_error)?;
    for digest in twins {
        txn.put_exec_twin(*digest)
            .map_err(|source| CheckoutError::Object {
                digest: *digest,
                path: plan.first_path_of(*digest, Some(true)),
                target: target.to_owned(),
                partial: false,
                source: Box::new(source),
            })?;
    }
    txn.commit().map_err(store_error)
}

/// The target, inspected but not yet written.
#[derive(Debug)]
enum Place {
    /// It does not exist: create `name` below `parent`.
    Create { parent: OwnedFd, name: OsString },
    /// It is an empty directory, open.
    Empty(OwnedFd),
}

impl Place {
    /// Checks that `target` is absent with a parent, or an empty directory, and not
    /// a symlink.
    fn inspect(tree: Digest, target: &Path) -> Result<Place, CheckoutError> {
        let refuse = |problem: String, source: Option<io::Error>| CheckoutError::Target {
            tree,
            target: target.to_owned(),
            problem,
            source,
        };
        let Some(name) = target.file_name() else {
            // "/", "..", "a/..": a directory the caller named; it can only be used empty.
            let fd = sys::open_dir(target)
                .map_err(|e| refuse("cannot open it as a directory".to_owned(), Some(e)))?;
            check_empty(&fd, &refuse)?;
            return Ok(Place::Empty(fd));
        };
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let parent_fd = sys::open_dir(parent).map_err(|e| {
            let problem = if e.kind() == io::ErrorKind::NotFound {
                format!(
                    "its parent {} does not exist: create it first",
                    parent.display()
                )
            } else {
                format!("cannot open its parent directory {}", parent.display())
            };
            refuse(problem, Some(e))
        })?;
        match sys::lstat_at(parent_fd.as_fd(), name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Place::Create {
                parent: parent_fd,
                name: name.to_owned(),
            }),
            Err(e) => Err(refuse("cannot look it up".to_owned(), Some(e))),
            Ok(stat) => {
                let kind = file_kind(stat.st_mode);
                if kind == SFlag::S_IFLNK {
                    return Err(refuse(symlink_problem(&parent_fd, name), None));
                }
                if kind != SFlag::S_IFDIR {
                    return Err(refuse(
                        "it exists and is not a directory: check out into a new path or an empty directory".to_owned(),
                        None,
                    ));
                }
                let fd = sys::open_dir_at(parent_fd.as_fd(), name)
                    .map_err(|e| refuse("cannot open it".to_owned(), Some(e)))?;
                check_empty(&fd, &refuse)?;
                Ok(Place::Empty(fd))
            }
        }
    }

    /// Creates the target if needed and opens it. Returns whether it was created.
    fn open(self, tree: Digest, target: &Path) -> Result<(OwnedFd, bool), CheckoutError> {
        let refuse = |problem: &str, source: io::Error| CheckoutError::Target {
            tree,
            target: target.to_owned(),
            problem: problem.to_owned(),
            source: Some(source),
        };
        match self {
            Place::Empty(fd) => Ok((fd, false)),
            Place::Create { parent, name } => {
                sys::mkdir_at(parent.as_fd(), &name, 0o700).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        refuse(
                            "something else created it meanwhile: retry into a new path",
                            e,
                        )
                    } else {
                        refuse("cannot create it; nothing was written", e)
                    }
                })?;
                // O_NOFOLLOW: a symlink swapped in since the mkdir is refused.
                let fd = sys::open_dir_at(parent.as_fd(), &name).map_err(|e| {
                    refuse("cannot open it after creating it; remove it and retry", e)
                })?;
                Ok((fd, true))
            }
        }
    }
}

fn symlink_problem(parent: &OwnedFd, name: &OsStr) -> String {
    let to = sys::readlink_at(parent.as_fd(), name)
        .map(|t| format!(" (to {})", Path::new(&t).display()))
        .unwrap_or_default();
    format!(
        "it is a symlink{to}, and a checkout never follows one: give the real directory's path or a new path"
    )
}

fn check_empty(
    fd: &OwnedFd,
    refuse: &impl Fn(String, Option<io::Error>) -> CheckoutError,
) -> Result<(), CheckoutError> {
    match sys::first_entry(fd.as_fd()) {
        Ok(None) => Ok(()),
        Ok(Some(entry)) => Err(refuse(
            format!(
                "it is not empty (it holds {:?}): check out into a new path or an empty directory",
                Path::new(&entry)
            ),
            None,
        )),
        Err(e) => Err(refuse("cannot list it".to_owned(), Some(e))),
    }
}
