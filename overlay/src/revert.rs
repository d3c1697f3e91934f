//! Writing a change set through a mounted view: a workspace's reversal (discard,
//! undo of a discard) and a build's delta (`lay_over`, `restamp`).
//!
//! The view may be open in an editor, so the upper cannot be swapped under it;
//! the reversal is written through the view like any other edit, and compaction
//! (a fresh upper) waits until the view is idle. Every path is walked one
//! component at a time from the view's root descriptor with `O_NOFOLLOW`, so a
//! symlink made in the view cannot send a write outside it. Restored files are
//! written to a temporary name (the daemon's reserved prefix, which no capture
//! records) and renamed over the current entry, so a reader sees the old file or
//! the restored one, never a partial one. Restored files get the current time as
//! their mtime (make and ninja must see them as changed) and ordinary modes: 0755
//! if executable, else 0644, or the buildtree's recorded mode.
//!
//! # A reversal destroys nothing it was not given
//!
//! [`reverse`] takes the changes from the tree to go back to (each change's old
//! side) to the tree the caller captured (the new side), and writes a path only
//! while it holds the captured entry, nothing, or already the target: a path
//! that holds anything else was edited after the capture, and is left as it is
//! (reported as kept). So the reversal can be run again after it was cut off,
//! any number of times, and ends at the same view; an edit made while it runs is
//! never overwritten by it. Files are compared by content (hashed), directories
//! entry by entry as they are emptied.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use treediff::{Change, ChangeKind, Digest, Dir, Entry, Mtime, Node, Store};

use crate::error::SnapshotError;
use crate::info::Owner;
use crate::snapshotter::ChangeSet;

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Makes the view whose root is `view` (shown as `shown`), whose content `set`
/// describes, equal to the tree `to` (`set`'s parent tree when `None`), giving
/// what it makes to `owner`; returns the changes that were reverted.
pub(crate) fn revert_to(
    store: &Store,
    key: &str,
    (view, shown): (BorrowedFd<'_>, &Path),
    owner: Option<Owner>,
    set: ChangeSet,
    to: Option<Digest>,
) -> Result<ChangeSet, SnapshotError> {
    let set = match to {
        Some(to) if to != set.parent_tree => {
            let changes = treediff::diff::changes(store, to, set.tree).map_err(
                SnapshotError::tree(key, "diff against the tree to revert to"),
            )?;
            ChangeSet {
                parent_tree: to,
                changes,
                ..set
            }
        }
        _ => set,
    };
    reverse(
        store,
        key,
        view,
        shown,
        owner,
        &set.changes,
        Run::Again,
        &mut |_| {},
    )?;
    Ok(set)
}

/// Whether a [`reverse`] is the first run over its changes, or a run again
/// after one was cut off (which also removes what that one left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Nothing of it ran before.
    First,
    /// A run over the same changes was cut off (a crash): sweep the directories
    /// written in for the daemon's temporary files.
    Again,
}

/// What a [`reverse`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reversal {
    /// Changes whose path now holds the target's entry (written now or before).
    pub done: usize,
    /// Paths left as they were: they held what neither side of their change
    /// has, an edit made after the capture, which stays in the view.
    pub kept: Vec<String>,
}

/// Brings the view whose root is `view` (shown as `shown` in errors) from each
/// change's new side back to its old side, in order, path by path, giving
/// what it makes to `owner` if one is named (a root daemon writing into a
/// user's view must not leave root's files there); `after_each`
/// runs after each change (the daemon's crash points). A path is written only
/// while it holds the new side's entry, nothing, or the old side's already (then
/// nothing is done); anything else there is kept (see the module doc). Entries
/// with the daemon's temporary prefix in the directories it writes in are
/// removed when `run` is [`Run::Again`]: a reversal cut off earlier may have
/// left them, and only there (a first run finds none: capture never records
/// them, and a cut-off reversal is always run again before anything else).
#[allow(
    clippy::too_many_arguments,
    reason = "the view, the changes, who gets what is made, and how the run is observed and resumed"
)]
pub fn reverse(
    store: &Store,
    key: &str,
    view: BorrowedFd<'_>,
    shown: &Path,
    owner: Option<Owner>,
    changes: &[Change],
    run: Run,
    after_each: &mut dyn FnMut(&str),
) -> Result<Reversal, SnapshotError> {
    let ctx = Ctx {
        store,
        key,
        view: shown,
        owner,
    };
    let mut done = Reversal::default();
    let mut swept = std::collections::HashSet::new();
    for change in changes {
        let parent = change.path.rsplit_once('/').map_or("", |(p, _)| p);
        if run == Run::Again && !change.path.is_empty() && swept.insert(parent.to_owned()) {
            ctx.sweep_temps(view, parent)?;
        }
        if ctx.reverse_one(view, change)? {
            done.done += 1;
        } else {
            done.kept.push(change.path.clone());
        }
        after_each(&change.path);
    }
    Ok(done)
}

/// Makes the view mounted at `view` show the tree `to` at every path where `to`
/// differs from `from` (whose blobs and nodes are in `store`), and leaves every
/// other path alone; returns the changes from `from` to `to`.
///
/// A build lays the sources' changes since the previous build over that build's
/// tree this way (docs/design.md, "Workspaces and incremental builds"): the view holds sources and build outputs,
/// and only the sources' changed paths are touched. Files written get the current
/// time as their mtime, so make and ninja see them as newer than every output of
/// the previous build. New entries are given to `owner` when one is named (the
/// build runs as the workspace's owner and may rewrite them).
pub fn lay_over(
    store: &Store,
    key: &str,
    view: &Path,
    from: Digest,
    to: Digest,
    owner: Option<Owner>,
) -> Result<Vec<Change>, SnapshotError> {
    // Reverting the changes from `to` to `from` writes `to`'s side of each.
    let reversed = treediff::diff::changes(store, to, from).map_err(SnapshotError::tree(
        key,
        "diff the trees to lay over the view",
    ))?;
    write_reversal(store, key, view, &reversed, owner)?;
    treediff::diff::changes(store, from, to).map_err(SnapshotError::tree(
        key,
        "diff the trees to lay over the view",
    ))
}

/// Sets the mtimes of the paths `stamps` names in the view mounted at `view`
/// (symlinks' own, never their targets'), walking each path one component at a
/// time with `O_NOFOLLOW`. A build restamps a buildtree made on a machine whose
/// clock was ahead of this one's (see the daemon's `build::clock`).
pub fn restamp(
    store: &Store,
    key: &str,
    view: &Path,
    stamps: &[(String, Mtime)],
) -> Result<(), SnapshotError> {
    let (ctx, root) = Ctx::open(store, key, view, None)?;
    for (path, mtime) in stamps {
        let time = rustix::fs::Timespec {
            tv_sec: mtime.seconds,
            tv_nsec: mtime.nanos as _,
        };
        let times = rustix::fs::Timestamps {
            last_access: time,
            last_modification: time,
        };
        let set = |e: rustix::io::Errno| ctx.io("set the mtime of", path)(e.into());
        match path.rsplit_once('/') {
            _ if path.is_empty() => rustix::fs::futimens(&root, &times).map_err(set)?,
            split => {
                let (parent, name) = split.unwrap_or(("", path.as_str()));
                let dir = ctx.open_path(root.as_fd(), parent)?;
                let dir = dir.as_ref().map(|d| d.as_fd()).unwrap_or(root.as_fd());
                rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(set)?
            }
        }
    }
    Ok(())
}

fn write_reversal(
    store: &Store,
    key: &str,
    view: &Path,
    changes: &[Change],
    owner: Option<Owner>,
) -> Result<(), SnapshotError> {
    let (ctx, root) = Ctx::open(store, key, view, owner)?;
    for change in changes {
        ctx.revert_one(root.as_fd(), change)?;
    }
    Ok(())
}

/// Whether `entry` is a file or a symlink (which a rename can put in place of
/// another).
fn is_leaf(entry: &Entry) -> bool {
    !matches!(entry.node, Node::Dir { .. })
}

/// What a path holds, against the two sides of its change.
enum Holds {
    /// The side to go back to: nothing to do.
    Old,
    /// The captured side: to be written.
    New,
    /// Nothing: to be written (the old side restored, if it has an entry).
    Nothing,
    /// Something neither side has: kept.
    Other,
}

struct Ctx<'a> {
    store: &'a Store,
    key: &'a str,
    view: &'a Path,
    /// Who new entries are given to (`None`: whoever writes them).
    owner: Option<Owner>,
}

impl<'a> Ctx<'a> {
    /// The context of writes through the view at `view`, and the view's root.
    fn open(
        store: &'a Store,
        key: &'a str,
        view: &'a Path,
        owner: Option<Owner>,
    ) -> Result<(Ctx<'a>, OwnedFd), SnapshotError> {
        let root: OwnedFd = std::fs::File::open(view)
            .map_err(SnapshotError::io(key, "open the view", view))?
            .into();
        Ok((
            Ctx {
                store,
                key,
                view,
                owner,
            },
            root,
        ))
    }
    fn io(&self, op: &'static str, rel: &str) -> impl FnOnce(std::io::Error) -> SnapshotError {
        SnapshotError::io(self.key, op, self.view.join(rel))
    }

    fn revert_one(&self, root: BorrowedFd<'_>, change: &Change) -> Result<(), SnapshotError> {
        let (parent_rel, name) = match change.path.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", change.path.as_str()),
        };
        let dir = self.open_path(root, parent_rel)?;
        let dir = dir.as_ref().map(|d| d.as_fd()).unwrap_or(root);
        if change.path.is_empty() {
            // The root's own properties (buildtrees).
            if let Some(old) = &change.old {
                self.set_props(root, "", old, true)?;
            }
            return Ok(());
        }
        match (&change.old, change.kind) {
            (Some(old), ChangeKind::ModeChanged) => {
                let is_dir = matches!(old.node, Node::Dir { .. });
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io("open", &change.path)(e.into()))?;
                self.set_props(fd.as_fd(), &change.path, old, is_dir)
            }
            (Some(old), _) => {
                // A rename replaces a file or symlink in one step, but cannot put
                // a directory over anything nor anything over a directory.
                if change.new_is_dir() || change.old_is_dir() {
                    self.remove_at(dir, name, &change.path)?;
                }
                self.restore_at(dir, name, &change.path, old)
            }
            (None, _) => self.remove_at(dir, name, &change.path),
        }
    }

    /// Brings `change.path` from the new side back to the old one if it holds
    /// the new side, nothing, or the old side already; returns false (and
    /// writes nothing) if it holds anything else.
    fn reverse_one(&self, root: BorrowedFd<'_>, change: &Change) -> Result<bool, SnapshotError> {
        if change.path.is_empty() || change.kind == ChangeKind::ModeChanged {
            // Modes and a directory's own properties: nothing is destroyed by
            // setting them again.
            self.revert_one(root, change)?;
            return Ok(true);
        }
        let (parent_rel, name) = change.path.rsplit_once('/').unwrap_or(("", &change.path));
        let dir = match self.open_path(root, parent_rel) {
            Ok(dir) => dir,
            // The parent is gone: an entry the new side deleted lies below a
            // directory removed since; bring back the old side's missing parents.
            Err(_) if change.old.is_some() => return Ok(false),
            Err(e) => return Err(e),
        };
        let dir = dir.as_ref().map(|d| d.as_fd()).unwrap_or(root);
        let rel = change.path.as_str();
        let exists = match self.holds(dir, name, rel, change.old.as_ref(), change.new.as_ref())? {
            Holds::Old => return Ok(true),
            Holds::Other => return Ok(false),
            Holds::New => true,
            Holds::Nothing => false,
        };
        let captured_dir = match &change.new {
            Some(Entry {
                node: Node::Dir { digest },
                ..
            }) => Some(*digest),
            _ => None,
        };
        match (exists, captured_dir) {
            (false, _) => {}
            // A directory the capture saw: remove what of it the capture saw.
            (true, Some(digest)) => {
                if !self.remove_captured(dir, name, rel, digest)? {
                    return Ok(false);
                }
            }
            // The captured file or symlink, checked above: removed when nothing
            // takes its place, or a directory does (a rename cannot put a
            // directory over a file); else the rename below replaces it.
            (true, None) if !change.old.as_ref().is_some_and(is_leaf) => {
                match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(self.io("remove", rel)(e.into())),
                }
            }
            (true, None) => {}
        }
        if let Some(old) = &change.old {
            self.restore_at(dir, name, rel, old)?;
        }
        Ok(true)
    }

    /// What `name` in `dir` holds, compared with the two sides of its change.
    /// Files are compared by content and executable bit, symlinks by target,
    /// directories by type only ([`Ctx::remove_captured`] compares their
    /// entries as it empties them).
    fn holds(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        rel: &str,
        old: Option<&Entry>,
        new: Option<&Entry>,
    ) -> Result<Holds, SnapshotError> {
        let st = match treediff::safe_fs::lstat_at(dir, OsStr::new(name)) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(Holds::Nothing),
            Err(e) => return Err(self.io("stat", rel)(e.into())),
        };
        // The old side's directory is only ever put in place whole (renamed
        // from a temporary name), so a directory there where the new side has
        // none is the old one.
        if let Some(old) = old
            && self.matches(dir, name, rel, &st, old)?
            && !(matches!(old.node, Node::Dir { .. })
                && new.is_some_and(|n| matches!(n.node, Node::Dir { .. })))
        {
            return Ok(Holds::Old);
        }
        if let Some(new) = new
            && self.matches(dir, name, rel, &st, new)?
        {
            return Ok(Holds::New);
        }
        Ok(Holds::Other)
    }

    /// Whether the entry `name` in `dir`, whose lstat is `st`, holds `entry`.
    fn matches(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        rel: &str,
        st: &rustix::fs::Stat,
        entry: &Entry,
    ) -> Result<bool, SnapshotError> {
        let kind = FileType::from_raw_mode(st.st_mode);
        match &entry.node {
            Node::Dir { .. } => Ok(kind == FileType::Directory),
            Node::Symlink { target } => {
                if kind != FileType::Symlink {
                    return Ok(false);
                }
                let link = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| self.io("read the symlink", rel)(e.into()))?;
                Ok(link.as_bytes() == target.as_bytes())
            }
            Node::File { digest, executable } => {
                if kind != FileType::RegularFile
                    || (st.st_mode & 0o100 != 0) != *executable
                    || st.st_size as u64 != digest.size()
                {
                    return Ok(false);
                }
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io("open", rel)(e.into()))?;
                let mut hasher = blake3::Hasher::new();
                let mut file = std::fs::File::from(fd);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut buf).map_err(self.io("read", rel))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                Ok(Digest::from_hasher(&hasher, digest.size()) == *digest)
            }
        }
    }

    /// Removes from the directory `name` in `dir` what the captured tree
    /// `digest` holds there, entry by entry, and the directory itself once it
    /// is empty; returns false if it kept something the capture did not see
    /// (the directory then stays, with only that in it).
    fn remove_captured(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        rel: &str,
        digest: Digest,
    ) -> Result<bool, SnapshotError> {
        let node = Dir::read(self.store, digest, rel)
            .map_err(SnapshotError::tree(self.key, "read the captured tree"))?;
        let fd = treediff::safe_fs::open_dir_at(dir, OsStr::new(name))
            .map_err(std::io::Error::from)
            .map_err(self.io("open", rel))?;
        let mut emptied = true;
        for (child, _) in crate::sys::list_dir(fd.as_fd()).map_err(self.io("list", rel))? {
            let child = String::from_utf8_lossy(&child).into_owned();
            let child_rel = treediff::names::join(rel, &child);
            if treediff::names::is_daemon_temp(&child) {
                self.remove_at(fd.as_fd(), &child, &child_rel)?;
                continue;
            }
            let Some(entry) = node.get(&child) else {
                emptied = false;
                continue;
            };
            let st = treediff::safe_fs::lstat_at(fd.as_fd(), OsStr::new(&child))
                .map_err(std::io::Error::from)
                .map_err(self.io("stat", &child_rel))?;
            if !self.matches(fd.as_fd(), &child, &child_rel, &st, entry)? {
                emptied = false;
            } else if let Node::Dir { digest } = entry.node {
                emptied &= self.remove_captured(fd.as_fd(), &child, &child_rel, digest)?;
            } else {
                rustix::fs::unlinkat(fd.as_fd(), child.as_str(), AtFlags::empty())
                    .map_err(|e| self.io("remove", &child_rel)(e.into()))?;
            }
        }
        if !emptied {
            return Ok(false);
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
            .map_err(|e| self.io("remove", rel)(e.into()))?;
        Ok(true)
    }

    /// Removes the daemon's temporary entries from the directory `rel` (if it
    /// exists): what a reversal cut off by a crash left there.
    fn sweep_temps(&self, root: BorrowedFd<'_>, rel: &str) -> Result<(), SnapshotError> {
        let dir = match self.open_path(root, rel) {
            Ok(dir) => dir,
            Err(_) => return Ok(()),
        };
        let dir = dir.as_ref().map(|d| d.as_fd()).unwrap_or(root);
        for (child, _) in crate::sys::list_dir(dir).map_err(self.io("list", rel))? {
            let child = String::from_utf8_lossy(&child).into_owned();
            if treediff::names::is_daemon_temp(&child) {
                self.remove_at(dir, &child, &treediff::names::join(rel, &child))?;
            }
        }
        Ok(())
    }

    /// Opens the directory `rel` below `root`, one component at a time, never
    /// following a symlink; `None` for the root itself.
    fn open_path(&self, root: BorrowedFd<'_>, rel: &str) -> Result<Option<OwnedFd>, SnapshotError> {
        if rel.is_empty() {
            return Ok(None);
        }
        let mut current: Option<OwnedFd> = None;
        for component in rel.split('/') {
            let base = current.as_ref().map(|f| f.as_fd()).unwrap_or(root);
            let next = treediff::safe_fs::open_dir_at(base, OsStr::new(component))
                .map_err(std::io::Error::from)
                .map_err(self.io("open", rel))?;
            current = Some(next);
        }
        Ok(current)
    }

    /// Removes `name` in `dir` and, if it is a directory, everything under it.
    fn remove_at(&self, dir: BorrowedFd<'_>, name: &str, rel: &str) -> Result<(), SnapshotError> {
        let st = match treediff::safe_fs::lstat_at(dir, OsStr::new(name)) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.io("stat", rel)(e.into())),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let fd = treediff::safe_fs::open_dir_at(dir, OsStr::new(name))
                .map_err(std::io::Error::from)
                .map_err(self.io("open", rel))?;
            for (child, _) in crate::sys::list_dir(fd.as_fd()).map_err(self.io("list", rel))? {
                let child = String::from_utf8_lossy(&child).into_owned();
                self.remove_at(fd.as_fd(), &child, &treediff::names::join(rel, &child))?;
            }
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
                .map_err(|e| self.io("remove", rel)(e.into()))
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| self.io("remove", rel)(e.into()))
        }
    }

    /// Puts the parent's `entry` at `name` in `dir`, replacing a file or symlink
    /// there (a directory there was removed by the caller).
    fn restore_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        rel: &str,
        entry: &Entry,
    ) -> Result<(), SnapshotError> {
        let temp = format!(
            "{}revert-{}-{}",
            treediff::names::DAEMON_TEMP_PREFIX,
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        );
        match &entry.node {
            Node::File { digest, executable } => {
                let blob = self
                    .store
                    .read(digest)
                    .map_err(SnapshotError::store(self.key))?;
                let fd = rustix::fs::openat(
                    dir,
                    temp.as_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.io("create", rel)(e.into()))?;
                let mut file = std::fs::File::from(fd);
                file.write_all(blob.bytes())
                    .map_err(self.io("write", rel))?;
                let mode = entry
                    .props
                    .and_then(|p| p.unix_mode)
                    .unwrap_or(if *executable { 0o755 } else { 0o644 });
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(|e| self.io("set the mode of", rel)(e.into()))?;
            }
            Node::Symlink { target } => {
                rustix::fs::symlinkat(target.as_str(), dir, temp.as_str())
                    .map_err(|e| self.io("create symlink", rel)(e.into()))?;
            }
            Node::Dir { digest } => {
                rustix::fs::mkdirat(dir, temp.as_str(), Mode::from_raw_mode(0o700))
                    .map_err(|e| self.io("create directory", rel)(e.into()))?;
                let fd = treediff::safe_fs::open_dir_at(dir, OsStr::new(&temp))
                    .map_err(std::io::Error::from)
                    .map_err(self.io("open", rel))?;
                let node = Dir::read(self.store, *digest, rel)
                    .map_err(SnapshotError::tree(self.key, "read the parent tree"))?;
                for child in node.entries() {
                    self.restore_at(
                        fd.as_fd(),
                        &child.name,
                        &treediff::names::join(rel, &child.name),
                        child,
                    )?;
                }
                let mode = node.props.and_then(|p| p.unix_mode).unwrap_or(0o755);
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                    .map_err(|e| self.io("set the mode of", rel)(e.into()))?;
            }
        }
        if let Some(owner) = self.owner {
            rustix::fs::chownat(
                dir,
                temp.as_str(),
                Some(rustix::process::Uid::from_raw(owner.uid)),
                Some(rustix::process::Gid::from_raw(owner.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.io("give to the owner", rel)(e.into()))?;
        }
        rustix::fs::renameat(dir, temp.as_str(), dir, name)
            .map_err(|e| self.io("rename into place", rel)(e.into()))
    }

    /// Restores the mode (and a directory's buildtree mtime) of an entry whose
    /// content did not change.
    fn set_props(
        &self,
        fd: BorrowedFd<'_>,
        rel: &str,
        old: &Entry,
        is_dir: bool,
    ) -> Result<(), SnapshotError> {
        let mode = match (&old.node, old.props.and_then(|p| p.unix_mode)) {
            (_, Some(mode)) => mode,
            (
                Node::File {
                    executable: true, ..
                },
                None,
            ) => 0o755,
            (Node::Dir { .. }, None) => 0o755,
            _ => 0o644,
        };
        if is_dir || matches!(old.node, Node::File { .. }) {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
                .map_err(|e| self.io("set the mode of", rel)(e.into()))?;
        }
        if let Some(mtime) = old.props.and_then(|p| p.mtime) {
            let time = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: mtime.seconds,
                    tv_nsec: mtime.nanos as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: mtime.seconds,
                    tv_nsec: mtime.nanos as _,
                },
            };
            rustix::fs::futimens(fd, &time)
                .map_err(|e| self.io("set the mtime of", rel)(e.into()))?;
        }
        Ok(())
    }
}
