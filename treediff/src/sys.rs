//! The few syscalls the store makes, as dirfd-relative wrappers returning `io::Error`.
//!
//! Everything that creates or opens a path inside a checkout or the store goes through
//! here, relative to a directory file descriptor and with `O_NOFOLLOW`, so that a
//! symlink planted in a tree can never redirect a write outside its root. The
//! rules, and what other crates use, are in [`crate::safe_fs`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

fn io(errno: Errno) -> io::Error {
    io::Error::from(errno)
}

/// [`crate::safe_fs::open_dir_at`], with the `io::Error` the store's code uses.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(crate::safe_fs::open_dir_at(dir, name)?)
}

/// [`crate::safe_fs::fchown`], with an `io::Error`.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    Ok(crate::safe_fs::fchown(fd, uid, gid)?)
}

/// [`crate::safe_fs::chown_at_nofollow`], with an `io::Error`.
pub fn chown_at_nofollow(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(crate::safe_fs::chown_at_nofollow(dir, name, uid, gid)?)
}

/// Opens a directory by path (following symlinks in the path: the caller named it).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, Mode::empty()).map_err(io)
}

/// Opens the regular file `name` below `dir` for reading, refusing symlinks.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    nix::fcntl::openat(dir, name, flags, Mode::empty())
        .map(File::from)
        .map_err(io)
}

/// Opens the regular file `name` below `dir` for capture: like [`open_file_at`], and
/// non-blocking, so that a file swapped for a FIFO since it was stat'ed cannot hang.
pub fn open_source_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK;
    nix::fcntl::openat(dir, name, flags, Mode::empty())
        .map(File::from)
        .map_err(io)
}

/// Creates the file `name` below `dir`, failing if anything exists under that name.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(mode))
        .map(File::from)
        .map_err(io)
}

/// Creates the directory `name` below `dir`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode)).map_err(io)
}

/// Creates the symlink `name` below `dir` pointing at `target` (stored as data).
pub fn symlink_at(dir: BorrowedFd<'_>, name: &OsStr, target: &OsStr) -> io::Result<()> {
    nix::unistd::symlinkat(target, dir, name).map_err(io)
}

/// Reads the target of the symlink `name` below `dir`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    nix::fcntl::readlinkat(dir, name).map_err(io)
}

/// Hard-links `from` (a path, typically a store object) as `name` below `dir`.
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    nix::unistd::linkat(from_dir, from, dir, name, AtFlags::empty()).map_err(io)
}

/// Renames `from` to `to` unless `to` exists; `Ok(false)` when it already did.
pub fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<bool> {
    match nix::fcntl::renameat2(from_dir, from, to_dir, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(errno) => Err(io(errno)),
    }
}

/// Removes the file `name` below `dir`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(io)
}

/// `lstat` of `name` below `dir`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<FileStat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)
}

/// `fstat` of an open file.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    nix::sys::stat::fstat(fd).map_err(io)
}

/// Whether a stat is of a regular file.
pub fn is_regular(stat: &FileStat) -> bool {
    stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG
}

/// Flushes every dirty page and inode of the filesystem holding `fd`: one call makes
/// a whole transaction durable, instead of one fsync (~2.5 ms here) per object.
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::unistd::syncfs(fd).map_err(io)
}

/// Sets the permission bits of an open file.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode)).map_err(io)
}

/// A modification time, as seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before).
    pub seconds: i64,
    /// Nanoseconds within the second, 0..1e9.
    pub nanos: u32,
}

fn timespecs(mtime: Mtime) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::UTIME_OMIT,
        TimeSpec::new(mtime.seconds, i64::from(mtime.nanos)),
    )
}

/// Sets the mtime of an open file (atime untouched).
pub fn set_mtime(fd: BorrowedFd<'_>, mtime: Mtime) -> io::Result<()> {
    let (atime, mtime) = timespecs(mtime);
    nix::sys::stat::futimens(fd, &atime, &mtime).map_err(io)
}

/// Sets the mtime of `name` below `dir` without following it if it is a symlink.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: Mtime) -> io::Result<()> {
    let (atime, mtime) = timespecs(mtime);
    nix::sys::stat::utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(io)
}

/// Makes `dst` share `src`'s extents (FICLONE). Fails with `EOPNOTSUPP`/`EXDEV`/`EINVAL`
/// where the filesystem cannot, and the caller then copies.
pub fn ficlone(dst: &File, src: &File) -> io::Result<()> {
    rustix::fs::ioctl_ficlone(dst.as_fd(), src.as_fd()).map_err(io::Error::from)
}

/// True for errors that mean "this filesystem cannot reflink", as opposed to a failure.
pub fn is_reflink_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY | Errno::ENOSYS)
    )
}

/// True when the error means the filesystem is out of space or quota.
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSPC | Errno::EDQUOT)
    )
}

/// The first entry of the directory `dir` other than `.` and `..`, if any: an empty
/// directory gives `None`. Reads through a fresh descriptor, so `dir`'s position is
/// untouched.
pub fn first_entry(dir: BorrowedFd<'_>) -> io::Result<Option<OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let entries = rustix::fs::Dir::read_from(dir).map_err(io::Error::from)?;
    for entry in entries {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(Some(OsStr::from_bytes(name).to_owned()));
        }
    }
    Ok(None)
}

/// True when a hard link failed because the file already has the most links its
/// filesystem allows (`EMLINK`, 65000 on ext4).
pub fn is_too_many_links(err: &io::Error) -> bool {
    err.raw_os_error() == Some(Errno::EMLINK as i32)
}
