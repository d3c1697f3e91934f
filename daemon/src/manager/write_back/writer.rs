//! Writing a planned write-back into the caller's directory. The thread calling
//! these methods has taken on the caller's credentials: the files are theirs,
//! and nothing is written where they could not write.
//!
//! Every directory is opened from the descriptor the client passed with
//! `openat2` refusing symlinks and `..` (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`),
//! and every entry is made, renamed or removed relative to its parent's
//! descriptor by its one-component name, so a symlink in the directory can send
//! nothing elsewhere. The order makes each file's replacement atomic:
//! 1. [`Writer::stage`]: each file and symlink is written in full under a
//!    temporary name in its destination directory (`.wsd-writeback-<id>-<n>`,
//!    the daemon's reserved prefix, which no capture records), with its mode;
//!    missing directories are made; temporary files an earlier, killed
//!    write-back left in a directory it opens are removed first;
//! 2. [`Writer::sync`]: one `syncfs` per filesystem staged on, not one fsync
//!    per file (an fsync costs milliseconds; a write-back may have thousands);
//! 3. [`Writer::commit`]: renames into place (a reader sees the old file or the
//!    new one, never part of one), then removals, then the directories they
//!    emptied, then what had to wait for a removal (a file where a directory
//!    was, a directory where a file was).
//!
//! [`Writer::abandon`] removes the temporary files a failure left; what was
//! renamed or removed stays, and [`Counts::done`] says how much that was.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use treediff::{Node, safe_fs};

use super::plan::{DiskCheck, Step};
use super::{Conflict, ConflictCause};
use crate::crash::{crash_point, error_point};

/// A step that failed: what was being done, on which path of the directory.
#[derive(Debug)]
pub(super) struct Failure {
    pub op: &'static str,
    pub path: String,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    pub fn new<E: Into<std::io::Error>>(
        op: &'static str,
        path: &str,
    ) -> impl FnOnce(E) -> Failure + use<E> {
        let path = path.to_owned();
        move |e| Failure {
            op,
            path,
            source: Box::new(e.into()),
        }
    }
}

/// What a writer did.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Files and symlinks renamed into place.
    pub written: u64,
    /// Directories made.
    pub made_dirs: u64,
    /// Files, symlinks and directories removed.
    pub removed: u64,
    /// Directories left because they hold entries the trees do not list.
    pub kept: Vec<String>,
    /// Changes made past staging (what a failure leaves in place).
    pub done: usize,
}

/// A file or symlink written under a temporary name.
#[derive(Debug)]
struct Staged {
    /// The directory it is in.
    dir: String,
    temp: String,
    /// Where it goes.
    dest: String,
    /// Whether it waits for a removal (its destination directory is not there
    /// yet, or a directory is where it goes).
    deferred: bool,
    renamed: bool,
}

/// Writes one write-back's steps into one directory.
#[derive(Debug)]
pub(super) struct Writer<'a> {
    root: BorrowedFd<'a>,
    prefix: String,
    next: u64,
    /// Give what is made to the owner of the file it replaces or of the
    /// directory it is made in: a root caller writing into another user's tree
    /// must not leave root's files there.
    inherit_owner: bool,
    /// Directories whose leftover temporary files were removed.
    swept: std::collections::HashSet<String>,
    /// The directory opened last: paths come in tree order, so neighbours share it.
    cached: Option<(String, Rc<OwnedFd>)>,
    /// A directory of each filesystem something was staged on, for `syncfs`.
    filesystems: HashMap<u64, OwnedFd>,
    staged: Vec<Staged>,
    /// Directories that wait for a removal before they can be made.
    deferred_dirs: Vec<String>,
    /// Directories made while staging, in the order made.
    made: Vec<String>,
    pub counts: Counts,
}

impl<'a> Writer<'a> {
    /// A writer into the directory `root`; `id` makes its temporary names unique.
    pub fn new(root: BorrowedFd<'a>, id: &str, inherit_owner: bool) -> Writer<'a> {
        Writer {
            root,
            prefix: format!("{WRITEBACK_TEMP}{id}-"),
            next: 0,
            inherit_owner,
            swept: Default::default(),
            cached: None,
            filesystems: HashMap::new(),
            staged: Vec::new(),
            deferred_dirs: Vec::new(),
            made: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// The conflicts only the directory shows: ignored entries in the way.
    pub fn check(&mut self, checks: &[DiskCheck]) -> Result<Vec<Conflict>, Failure> {
        let mut conflicts = Vec::new();
        for check in checks {
            match check {
                DiskCheck::Absent { path } => {
                    let (parent, name) = split(path);
                    let dir = match self.open(parent) {
                        Ok(dir) => dir,
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(Failure::new("open", parent)(e)),
                    };
                    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(_) => conflicts.push(Conflict {
                            path: path.clone(),
                            cause: ConflictCause::Ignored,
                        }),
                        Err(Errno::NOENT) => {}
                        Err(e) => return Err(Failure::new("look at", path)(e)),
                    }
                }
                DiskCheck::OnlyListed { path, listing } => {
                    if self.holds_unlisted(listing)? {
                        conflicts.push(Conflict {
                            path: path.clone(),
                            cause: ConflictCause::HoldsIgnored,
                        });
                    }
                }
            }
        }
        Ok(conflicts)
    }

    /// Whether a directory of `listing` holds an entry it does not list.
    fn holds_unlisted(&mut self, listing: &[(String, Vec<String>)]) -> Result<bool, Failure> {
        for (dir, names) in listing {
            let fd = self.open(dir).map_err(Failure::new("open", dir))?;
            let entries = rustix::fs::Dir::read_from(&*fd).map_err(Failure::new("list", dir))?;
            for entry in entries {
                let entry = entry.map_err(Failure::new("list", dir))?;
                let name = entry.file_name().to_bytes();
                if !matches!(name, b"." | b"..") && !names.iter().any(|n| n.as_bytes() == name) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Prepares `step` without replacing or removing anything: a file or
    /// symlink is written under a temporary name (`content` is a file's),
    /// a directory is made where nothing is.
    pub fn stage(&mut self, step: &Step, content: Option<&[u8]>) -> Result<(), Failure> {
        match step {
            Step::Put {
                path,
                node,
                replaces_dir,
            } => self.stage_put(path, node, *replaces_dir, content),
            Step::MakeDir { path } => {
                let (parent, name) = split(path);
                if self.make_dirs(parent)?.is_some() {
                    self.deferred_dirs.push(path.clone());
                    return Ok(());
                }
                let dir = self.open(parent).map_err(Failure::new("open", parent))?;
                match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Err(Errno::NOENT) => self.make_dir(parent, name, path),
                    Ok(st) if file_type(&st) == FileType::Directory => Ok(()),
                    Ok(_) => {
                        self.deferred_dirs.push(path.clone());
                        Ok(())
                    }
                    Err(e) => Err(Failure::new("look at", path)(e)),
                }
            }
            Step::Remove { .. } => Ok(()),
        }
    }

    fn stage_put(
        &mut self,
        path: &str,
        node: &Node,
        replaces_dir: bool,
        content: Option<&[u8]>,
    ) -> Result<(), Failure> {
        let (parent, name) = split(path);
        let (dir_path, deferred) = match self.make_dirs(parent)? {
            None => (parent.to_owned(), replaces_dir),
            // A file or symlink is where a directory of the path goes: stage in
            // the deepest directory there is, and rename once it is removed.
            Some(deepest) => (deepest, true),
        };
        let temp = format!("{}{}", self.prefix, self.next);
        self.next += 1;
        let dir = self
            .open(&dir_path)
            .map_err(Failure::new("open", &dir_path))?;
        let replaced = if deferred {
            None
        } else {
            match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(Failure::new("look at", path)(e)),
            }
        };
        let dir_stat = rustix::fs::fstat(&dir).map_err(Failure::new("look at", &dir_path))?;
        // A new name only (O_EXCL), so nothing there is ever written through.
        const NEW_FILE: OFlags = OFlags::WRONLY
            .union(OFlags::CREATE)
            .union(OFlags::EXCL)
            .union(OFlags::NOFOLLOW)
            .union(OFlags::CLOEXEC);
        let file = match node {
            Node::File { .. } => Some(
                rustix::fs::openat(&dir, temp.as_str(), NEW_FILE, Mode::from_raw_mode(0o600))
                    .map_err(Failure::new("create a temporary file for", path))?,
            ),
            Node::Symlink { target } => {
                rustix::fs::symlinkat(target.as_str(), &dir, temp.as_str())
                    .map_err(Failure::new("create a temporary symlink for", path))?;
                None
            }
            Node::Dir { .. } => unreachable!("the plan puts only files and symlinks"),
        };
        // Recorded at once, so that a failure below removes it.
        self.staged.push(Staged {
            dir: dir_path.clone(),
            temp: temp.clone(),
            dest: path.to_owned(),
            deferred,
            renamed: false,
        });
        if let (Some(fd), Node::File { executable, .. }) = (file, node) {
            if error_point!("write-back-stage", path) {
                return Err(Failure::new("write", path)(Errno::NOSPC));
            }
            let mut file = std::fs::File::from(fd);
            file.write_all(content.unwrap_or_default())
                .map_err(|e| Failure {
                    op: "write",
                    path: path.to_owned(),
                    source: Box::new(e),
                })?;
            let existing = replaced
                .as_ref()
                .filter(|st| file_type(st) == FileType::RegularFile)
                .map(|st| st.st_mode);
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode_for(*executable, existing)))
                .map_err(Failure::new("set the mode of", path))?;
        }
        if self.inherit_owner {
            let (uid, gid) = replaced
                .map(|st| (st.st_uid, st.st_gid))
                .unwrap_or((dir_stat.st_uid, dir_stat.st_gid));
            give(&dir, &temp, uid, gid).map_err(Failure::new("give to its owner", path))?;
        }
        if let std::collections::hash_map::Entry::Vacant(slot) =
            self.filesystems.entry(dir_stat.st_dev)
        {
            let dup = rustix::io::fcntl_dupfd_cloexec(&dir, 0)
                .map_err(Failure::new("open", &dir_path))?;
            slot.insert(dup);
        }
        Ok(())
    }

    /// Makes the missing directories of `path`. Returns the deepest directory
    /// there is when a file or symlink is where one of them goes.
    fn make_dirs(&mut self, path: &str) -> Result<Option<String>, Failure> {
        match self.open(path) {
            Ok(_) => return Ok(None),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {}
            Err(e) => return Err(Failure::new("open", path)(e)),
        }
        let mut walked = String::new();
        for part in path.split('/') {
            let here = treediff::names::join(&walked, part);
            let dir = self.open(&walked).map_err(Failure::new("open", &walked))?;
            match rustix::fs::statat(&dir, part, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == FileType::Directory => {}
                Ok(_) => return Ok(Some(walked)),
                Err(Errno::NOENT) => self.make_dir(&walked, part, &here)?,
                Err(e) => return Err(Failure::new("look at", &here)(e)),
            }
            walked = here;
        }
        Ok(None)
    }

    /// Makes the directory `name` in `parent` (whose path is `path`).
    fn make_dir(&mut self, parent: &str, name: &str, path: &str) -> Result<(), Failure> {
        let dir = self.open(parent).map_err(Failure::new("open", parent))?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))
            .map_err(Failure::new("make the directory", path))?;
        // 0755 whatever the daemon's umask (077), as the mkdir of a shell would.
        let made = safe_fs::open_dir_at(dir.as_fd(), OsStr::new(name))
            .map_err(Failure::new("open", path))?;
        rustix::fs::fchmod(&made, Mode::from_raw_mode(0o755))
            .map_err(Failure::new("set the mode of", path))?;
        if self.inherit_owner {
            let st = rustix::fs::fstat(&dir).map_err(Failure::new("look at", parent))?;
            give(&dir, name, st.st_uid, st.st_gid)
                .map_err(Failure::new("give to its owner", path))?;
        }
        self.made.push(path.to_owned());
        self.counts.made_dirs += 1;
        Ok(())
    }

    /// Makes what was staged durable: one `syncfs` per filesystem.
    pub fn sync(&mut self) -> Result<(), Failure> {
        for fd in self.filesystems.values() {
            rustix::fs::syncfs(fd).map_err(Failure::new("sync the filesystem of", ""))?;
        }
        Ok(())
    }

    /// Replaces and removes: see the module documentation for the order.
    pub fn commit(&mut self, steps: &[Step], prune: &[String]) -> Result<(), Failure> {
        for i in 0..self.staged.len() {
            if !self.staged[i].deferred {
                self.rename(i)?;
            }
        }
        for step in steps.iter().rev() {
            if let Step::Remove { path, dir } = step {
                self.remove(path, *dir)?;
            }
        }
        for path in prune {
            self.remove(path, true)?;
        }
        let deferred_dirs = std::mem::take(&mut self.deferred_dirs);
        for path in &deferred_dirs {
            if self.make_dirs(path)?.is_some() {
                return Err(Failure::new("make the directory", path)(Errno::NOTDIR));
            }
            self.counts.done += 1;
        }
        for i in 0..self.staged.len() {
            if self.staged[i].deferred {
                let (parent, _) = split(&self.staged[i].dest);
                let parent = parent.to_owned();
                if self.make_dirs(&parent)?.is_some() {
                    return Err(Failure::new("make the directory", &parent)(Errno::NOTDIR));
                }
                self.rename(i)?;
            }
        }
        Ok(())
    }

    /// Renames the staged file `i` into place.
    fn rename(&mut self, i: usize) -> Result<(), Failure> {
        let (from_dir, temp, dest) = {
            let s = &self.staged[i];
            (s.dir.clone(), s.temp.clone(), s.dest.clone())
        };
        let (parent, name) = split(&dest);
        let to = self.open(parent).map_err(Failure::new("open", parent))?;
        let from = self
            .open(&from_dir)
            .map_err(Failure::new("open", &from_dir))?;
        if error_point!("write-back-rename", dest) {
            return Err(Failure::new("rename into place", &dest)(Errno::NOSPC));
        }
        rustix::fs::renameat(&from, temp.as_str(), &to, name)
            .map_err(Failure::new("rename into place", &dest))?;
        self.staged[i].renamed = true;
        self.counts.written += 1;
        self.counts.done += 1;
        crash_point!("write-back-between-paths");
        Ok(())
    }

    /// Removes the entry `path`; a directory only if it is empty: one that is
    /// not holds what the trees do not list (ignored entries), and is kept.
    fn remove(&mut self, path: &str, dir: bool) -> Result<(), Failure> {
        let (parent, name) = split(path);
        let fd = match self.open(parent) {
            Ok(fd) => fd,
            // Its parent is gone already: an earlier write-back removed it.
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Failure::new("open", parent)(e)),
        };
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(&fd, name, flags) {
            Ok(()) => {
                self.counts.removed += 1;
                self.counts.done += 1;
                crash_point!("write-back-between-paths");
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            Err(Errno::NOTEMPTY | Errno::EXIST) if dir => {
                self.counts.kept.push(path.to_owned());
                Ok(())
            }
            Err(e) => Err(Failure::new("remove", path)(e)),
        }
    }

    /// After a failure: removes the temporary files not renamed and, if nothing
    /// was changed yet, the directories made. Best effort: it runs on the way out
    /// of an error that is reported as it is.
    pub fn abandon(&mut self) {
        let left: Vec<(String, String)> = self
            .staged
            .iter()
            .filter(|s| !s.renamed)
            .map(|s| (s.dir.clone(), s.temp.clone()))
            .collect();
        for (dir, temp) in left {
            if let Ok(fd) = self.open(&dir) {
                let _ = rustix::fs::unlinkat(&fd, temp.as_str(), AtFlags::empty());
            }
        }
        if self.counts.done == 0 {
            for path in std::mem::take(&mut self.made).iter().rev() {
                let (parent, name) = split(path);
                if let Ok(fd) = self.open(parent) {
                    let _ = rustix::fs::unlinkat(&fd, name, AtFlags::REMOVEDIR);
                }
            }
        }
    }

    /// The directory `path` below the root, never through a symlink.
    fn open(&mut self, path: &str) -> Result<Rc<OwnedFd>, Errno> {
        if let Some((cached, fd)) = &self.cached
            && cached == path
        {
            return Ok(fd.clone());
        }
        let fd = Rc::new(safe_fs::open_dir_beneath(self.root, Path::new(path))?);
        if self.swept.insert(path.to_owned()) {
            sweep(&fd)?;
        }
        self.cached = Some((path.to_owned(), fd.clone()));
        Ok(fd)
    }
}

/// The start of a write-back's temporary names.
const WRITEBACK_TEMP: &str = ".wsd-writeback-";

/// Removes the temporary files a killed write-back left in `dir` (a file or
/// symlink each: staging makes nothing else under such a name).
fn sweep(dir: &OwnedFd) -> Result<(), Errno> {
    let mut leftovers = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(WRITEBACK_TEMP) {
            leftovers.push(name);
        }
    }
    for name in leftovers {
        match rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The permission bits of a file written back: a buildtree's own mode is not
/// in source trees, so a replaced file keeps its bits (a group-writable file
/// stays so) with the executable bits set where it is readable, or cleared,
/// as committed; a new file gets 0755 or 0644.
fn mode_for(executable: bool, existing: Option<u32>) -> u32 {
    match existing.map(|m| m & 0o777) {
        Some(m) if executable => m | ((m & 0o444) >> 2),
        Some(m) => m & !0o111,
        None if executable => 0o755,
        None => 0o644,
    }
}

fn give(dir: &OwnedFd, name: &str, uid: u32, gid: u32) -> Result<(), Errno> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

fn file_type(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

#[cfg(test)]
mod tests {
    use super::mode_for;

    #[test]
    fn a_replaced_file_keeps_its_bits_with_the_executable_ones_as_committed() {
        assert_eq!(mode_for(true, Some(0o100664)), 0o775);
        assert_eq!(mode_for(false, Some(0o100775)), 0o664);
        assert_eq!(mode_for(true, Some(0o100600)), 0o700);
        assert_eq!(mode_for(false, None), 0o644);
        assert_eq!(mode_for(true, None), 0o755);
    }
}
