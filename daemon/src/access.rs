//! Reading a caller's files with the caller's permissions.
//!
//! A root daemon imports a user's source directory on threads that take on the
//! user's uid, gid and supplementary groups (per thread, as Linux keeps them) while
//! they read, and go back to root only to write into the store. So the daemon reads
//! nothing the user could not: an unreadable subdirectory fails the import, naming
//! it. No helper process is forked: the walk's threads are the helper, and no copy
//! of the data crosses a pipe.
//!
//! What such a read found may be remembered (the stat cache, watched sources) only
//! under the identity of the credentials that read it ([`ReaderId`]): what one
//! set of credentials could read says nothing about what another may.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};
use rustix::fs::{Mode, OFlags};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
use treediff::SourceAccess;

use crate::manager::Caller;

/// The credentials a walking thread switches between.
#[derive(Debug)]
pub struct CallerAccess {
    reader: Credentials,
    writer: Credentials,
}

#[derive(Debug)]
struct Credentials {
    uid: rustix::process::Uid,
    gid: rustix::process::Gid,
    groups: Vec<rustix::process::Gid>,
}

impl Credentials {
    /// This process's own effective credentials.
    fn of_process() -> std::io::Result<Credentials> {
        Ok(Credentials {
            uid: rustix::process::Uid::from_raw(nix::unistd::geteuid().as_raw()),
            gid: rustix::process::Gid::from_raw(nix::unistd::getegid().as_raw()),
            groups: raw_groups(nix::unistd::getgroups()?),
        })
    }

    /// The identity of these credentials: the order of the groups does not matter.
    fn id(&self) -> ReaderId {
        let mut groups: Vec<u32> = self.groups.iter().map(|g| g.as_raw()).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut hasher = blake3::Hasher::new_derive_key("ws 2025 reader credentials");
        hasher.update(&self.uid.as_raw().to_be_bytes());
        hasher.update(&self.gid.as_raw().to_be_bytes());
        hasher.update(&(groups.len() as u32).to_be_bytes());
        for group in groups {
            hasher.update(&group.to_be_bytes());
        }
        ReaderId(*hasher.finalize().as_bytes())
    }
}

/// The identity of the credentials a caller's files are read with: uid, gid and
/// the sorted supplementary groups, hashed. Two reads under equal ids could
/// read the same files; under different ids, nothing is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReaderId([u8; 32]);

impl ReaderId {
    /// The id's bytes, for keys.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// How a caller's files are read: the credentials to switch to (none when the
/// process reads as the caller already), and their identity.
#[derive(Debug)]
pub struct Reader {
    access: Option<CallerAccess>,
    id: ReaderId,
}

impl Reader {
    /// The reader of `caller`'s files (the group database is read once here).
    pub fn for_caller(caller: Caller) -> std::io::Result<Reader> {
        let access = CallerAccess::for_caller(caller)?;
        let id = match &access {
            Some(access) => access.reader.id(),
            None => Credentials::of_process()?.id(),
        };
        Ok(Reader { access, id })
    }

    /// The credentials walking threads switch to, if any.
    pub fn access(&self) -> Option<&CallerAccess> {
        self.access.as_ref()
    }

    /// Whose reads these are.
    pub fn id(&self) -> ReaderId {
        self.id
    }

    /// Opens the directory `path` with the reader's credentials (following
    /// symlinks as the reader would): a caller's directory is never looked up
    /// with the daemon's own.
    pub fn open_dir(&self, path: &Path) -> std::io::Result<SourceDir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = as_reader_on_own_thread(self.access(), || {
            Ok(rustix::fs::open(path, flags, Mode::empty())?)
        })?;
        SourceDir::new(fd)
    }
}

/// A caller's directory, opened with the caller's credentials: read through its
/// descriptor, known by device and inode, and shown where the kernel says it is
/// (the text of its `/proc/self/fd` link, never a path resolved by the daemon).
#[derive(Debug)]
pub struct SourceDir {
    fd: OwnedFd,
    /// `st_dev` of the directory.
    pub dev: u64,
    /// `st_ino` of the directory.
    pub ino: u64,
}

impl SourceDir {
    fn new(fd: OwnedFd) -> std::io::Result<SourceDir> {
        let stat = rustix::fs::fstat(fd.as_fd())?;
        Ok(SourceDir {
            fd,
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }

    /// The path that reads through the descriptor (`/proc/self/fd/N`).
    pub fn walk_path(&self) -> PathBuf {
        fd_link(&self.fd)
    }

    /// Where the directory is, as the kernel names it, for messages and records.
    pub fn shown(&self) -> PathBuf {
        shown_path(&self.walk_path())
    }
}

impl AsFd for SourceDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The `/proc/self/fd` path of `fd`.
fn fd_link(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(fd)
    ))
}

/// What `path` is shown as: the target of a descriptor's `/proc/self/fd` link
/// (its text, read without resolving anything), or `path` itself when it is no
/// such link or the directory was deleted.
pub fn shown_path(path: &Path) -> PathBuf {
    match std::fs::read_link(path) {
        Ok(target) if target.is_absolute() && !target.to_string_lossy().ends_with(" (deleted)") => {
            target
        }
        _ => path.to_owned(),
    }
}

impl CallerAccess {
    /// The access `caller` needs from this process: `None` when the process reads
    /// as the caller already (or the caller is root, who may read everything).
    pub fn for_caller(caller: Caller) -> std::io::Result<Option<CallerAccess>> {
        let euid = nix::unistd::geteuid().as_raw();
        if caller.uid == euid || caller.uid == 0 {
            return Ok(None);
        }
        let writer = Credentials::of_process()?;
        let reader = Credentials {
            uid: rustix::process::Uid::from_raw(caller.uid),
            gid: rustix::process::Gid::from_raw(caller.gid),
            groups: raw_groups(caller_groups(caller)),
        };
        Ok(Some(CallerAccess { reader, writer }))
    }
}

impl SourceAccess for CallerAccess {
    fn as_reader(&self) -> std::io::Result<()> {
        // Groups and gid first, while the thread still has the capability to set them.
        set_thread_groups(&self.reader.groups)?;
        set_thread_res_gid(None, self.reader.gid, None)?;
        // Only the effective uid: the saved uid stays root, so the thread can go back.
        set_thread_res_uid(None, self.reader.uid, None)?;
        Ok(())
    }

    fn as_writer(&self) -> std::io::Result<()> {
        set_thread_res_uid(None, self.writer.uid, None)?;
        set_thread_res_gid(None, self.writer.gid, None)?;
        set_thread_groups(&self.writer.groups)?;
        Ok(())
    }
}

/// The caller's supplementary groups, as the group database gives them (what a
/// login session of that user gets); only the primary group if the user is unknown.
fn caller_groups(caller: Caller) -> Vec<Gid> {
    let primary = Gid::from_raw(caller.gid);
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(caller.uid)) else {
        return vec![primary];
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![primary];
    };
    nix::unistd::getgrouplist(&name, primary).unwrap_or_else(|_| vec![primary])
}

fn raw_groups(groups: Vec<Gid>) -> Vec<rustix::process::Gid> {
    groups
        .into_iter()
        .map(|g| rustix::process::Gid::from_raw(g.as_raw()))
        .collect()
}

/// Reads the input file `path` (see [`crate::input_file`]: a regular file of
/// at most 1 MiB) with `caller`'s permissions, on a thread of its own that
/// takes on the caller's credentials (so the daemon's other threads keep
/// theirs). `None` when it does not exist.
pub fn read_file_as(caller: Caller, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let access = CallerAccess::for_caller(caller)?;
    as_reader_on_own_thread(access.as_ref(), || crate::input_file::read(path))
}

/// Runs `f` with `reader`'s credentials, on a thread of its own (which ends
/// with them), or here when there is nothing to switch: what `f` opens, lists
/// or watches, the kernel checks against the caller's rights.
pub fn as_reader<T: Send>(
    reader: &Reader,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    as_reader_on_own_thread(reader.access(), f)
}

/// Runs `f` with `access`'s reader credentials, on a thread of its own (which
/// ends with them), or here when there is nothing to switch.
fn as_reader_on_own_thread<T: Send>(
    access: Option<&CallerAccess>,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let Some(access) = access else {
        return f();
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                access.as_reader()?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the reading thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            uid: rustix::process::Uid::from_raw(uid),
            gid: rustix::process::Gid::from_raw(gid),
            groups: groups
                .iter()
                .map(|g| rustix::process::Gid::from_raw(*g))
                .collect(),
        }
    }

    #[test]
    fn a_reader_is_its_uid_gid_and_set_of_groups() {
        let id = credentials(1000, 1000, &[1000, 27, 100]).id();
        assert_eq!(id, credentials(1000, 1000, &[100, 1000, 27, 27]).id());
        for other in [
            credentials(1001, 1000, &[1000, 27, 100]),
            credentials(1000, 1001, &[1000, 27, 100]),
            credentials(1000, 1000, &[1000, 100]),
            credentials(1000, 1000, &[1000, 27, 100, 4]),
        ] {
            assert_ne!(id, other.id(), "{other:?}");
        }
    }
}
