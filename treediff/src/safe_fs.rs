//! Opening, statting and giving away files without following a path someone
//! else could change: the one place for these rules in every crate of `ws`.
//!
//! A root daemon serves users who can rename, replace and symlink anything in
//! the directories they own, at any moment. So, **as root**, a location a user
//! could influence is never resolved as a path string:
//!
//! - it is opened beneath a descriptor the daemon holds, one component at a
//!   time with `O_NOFOLLOW` ([`open_dir_at`]), or in one `openat2` call that
//!   refuses symlinks, magic links and `..` escapes ([`open_dir_beneath`]);
//! - a recorded absolute path (a view's mount point) is opened with `openat2`
//!   refusing a symlink in *any* component ([`open_dir_no_symlinks`],
//!   [`open_path_no_symlinks`]), and what was opened is then checked (owner,
//!   mount id) through the descriptor, never by a second lookup;
//! - metadata comes from `statx`/`fstatat` with `AT_SYMLINK_NOFOLLOW` below a
//!   descriptor ([`lstat_at`]), owners are given with `fchown` on the
//!   descriptor that made or opened the entry ([`fchown`]), or, for a symlink,
//!   by name below its directory's descriptor without following it
//!   ([`chown_at_nofollow`]);
//! - where only a path will do (a mount or unmount syscall, an inotify watch),
//!   the path is the descriptor's own `/proc/self/fd/N` link ([`proc_fd_path`]),
//!   which names the very file opened, whatever its path leads to meanwhile.
//!
//! **As the caller** (a thread that took on the caller's uid, gid and groups to
//! read their sources, `ws.toml` or configs) following symlinks is fine: the
//! kernel checks everything against what the caller may do, so a path can lead
//! them nowhere they could not go anyway. Those opens live with the credential
//! switch (`daemon::access`), not here.
//!
//! Errors are rustix's `Errno`, which callers match on (`ELOOP`: a symlink was
//! refused) and which converts into `std::io::Error` with `?` or `.into()`.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// The flags of a directory opened for reading, never through a symlink.
const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory `name` below `dir` (or `dir` itself for "."), refusing a
/// symlink there (`ELOOP`, or `ENOTDIR` for anything but a directory).
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, name, DIR, Mode::empty())
}

/// Opens the directory `rel` (one or more components; empty for `dir` itself)
/// below `dir`, refusing symlinks, magic links and any way out of `dir`
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        dir,
        rel,
        DIR,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Opens the directory at the absolute `path` without following a symlink in
/// any of its components (`ELOOP` if one is). For paths the daemon recorded
/// itself (a view's mount point): whoever can write a directory on the way can
/// still move things, so check what was opened through the descriptor.
pub fn open_dir_no_symlinks(path: &Path) -> rustix::io::Result<OwnedFd> {
    open_no_symlinks(path, DIR)
}

/// Like [`open_dir_no_symlinks`], as an `O_PATH` descriptor: it names the
/// directory without opening it, which is all a `statx` or an unmount below it
/// needs, and works where the daemon may not read.
pub fn open_path_no_symlinks(path: &Path) -> rustix::io::Result<OwnedFd> {
    open_no_symlinks(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)
}

fn open_no_symlinks(path: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Makes the directory `name` below `dir`, and, through the descriptor that
/// opens it (never following a symlink), gives it to `owner` (`(uid, gid)`),
/// if any, and then `mode`, whatever the process's umask. It is 0700 and the
/// process's until then, so no one else can use it half made.
pub fn make_dir_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
    let made = open_dir_at(dir, name)?;
    if let Some((uid, gid)) = owner {
        fchown(made.as_fd(), uid, gid)?;
    }
    rustix::fs::fchmod(&made, Mode::from_raw_mode(mode))?;
    Ok(made)
}

/// `lstat` of `name` below `dir`: a symlink is described, not followed.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<rustix::fs::Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// Gives an open file or directory to `uid` and `gid`: by its descriptor, so
/// what is given is what was opened, whatever its path leads to meanwhile.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> rustix::io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
}

/// Gives the entry `name` below `dir` to `uid` and `gid` without following it:
/// for symlinks, which cannot be opened.
pub fn chown_at_nofollow(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    uid: u32,
    gid: u32,
) -> rustix::io::Result<()> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// The `/proc/self/fd/N` path of `fd`, joined with `name` if given: a path that
/// reaches the very file `fd` opened (and `name` in it, looked up there), for
/// the syscalls that take only paths. Valid while `fd` is open.
pub fn proc_fd_path(fd: BorrowedFd<'_>, name: Option<&OsStr>) -> PathBuf {
    let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    match name {
        Some(name) => link.join(name),
        None => link,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_refused_at_every_level() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/blink")).unwrap();
        let top = open_dir_no_symlinks(root).unwrap();

        assert!(open_dir_at(top.as_fd(), OsStr::new("a")).is_ok());
        assert!(open_dir_at(top.as_fd(), OsStr::new("link")).is_err());
        assert!(open_dir_beneath(top.as_fd(), Path::new("a/b")).is_ok());
        assert!(open_dir_beneath(top.as_fd(), Path::new("")).is_ok());
        assert!(open_dir_beneath(top.as_fd(), Path::new("link/b")).is_err());
        assert!(open_dir_beneath(top.as_fd(), Path::new("a/blink")).is_err());
        assert!(open_dir_beneath(top.as_fd(), Path::new("a/../..")).is_err());
        assert!(open_dir_no_symlinks(&root.join("a/b")).is_ok());
        assert!(open_dir_no_symlinks(&root.join("link/b")).is_err());
        assert!(open_path_no_symlinks(&root.join("link")).is_err());
        let st = lstat_at(top.as_fd(), OsStr::new("link")).unwrap();
        assert_eq!(
            rustix::fs::FileType::from_raw_mode(st.st_mode),
            rustix::fs::FileType::Symlink
        );
    }

    #[test]
    fn a_made_directory_has_its_mode_whatever_the_umask_and_refuses_what_is_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let top = open_dir_no_symlinks(dir.path()).unwrap();
        make_dir_at(top.as_fd(), OsStr::new("d"), 0o755, None).unwrap();
        let mode = std::fs::metadata(dir.path().join("d"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        std::os::unix::fs::symlink(dir.path().join("d"), dir.path().join("link")).unwrap();
        assert_eq!(
            make_dir_at(top.as_fd(), OsStr::new("link"), 0o755, None).unwrap_err(),
            rustix::io::Errno::EXIST
        );
    }

    #[test]
    fn a_proc_path_reaches_the_opened_directory_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/f"), "x").unwrap();
        let a = open_dir_no_symlinks(&dir.path().join("a")).unwrap();
        std::fs::rename(dir.path().join("a"), dir.path().join("moved")).unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        let f = proc_fd_path(a.as_fd(), Some(OsStr::new("f")));
        assert_eq!(std::fs::read(f).unwrap(), b"x");
    }
}
