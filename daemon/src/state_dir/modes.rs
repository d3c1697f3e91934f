//! Who may reach what under the state directory, set through descriptors.
//!
//! A root daemon's state directory is shared by every user of the machine, and
//! what is under it (blobs, layers, the database, default mount points) holds
//! copies of users' private files. So, for a root daemon:
//!
//! - `<state>` is 0711: users reach the socket and their own `workspaces/<uid>`
//!   by name, but cannot list it;
//! - every other directory at its top (`cas`, `db`, `snapshots`, `builds`,
//!   `sysroots`, `mounting`, and any other) is 0700 and root's, every file 0600,
//!   but the socket record, which clients read (0644);
//! - `workspaces/` is 0711 and `workspaces/<uid>/` 0700, owned by that user: a
//!   user's default mount points are reachable by that user alone.
//!
//! A user daemon's state is its user's: `<state>` and `workspaces/` are 0700 too.
//!
//! [`prepare`] makes this layout at every start and tightens what an older
//! release left (0755 everywhere, `workspaces/<uid>` root's). Modes and owners
//! change through descriptors opened with `O_NOFOLLOW`, never by path: only the
//! daemon creates entries at the top, but `workspaces/<uid>` belongs to its
//! user, who may put symlinks in it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;

/// The top-level directories only the daemon uses: the store, the database,
/// the snapshotters' layers, builds, sysroots, and the staging of bind mounts.
pub const PRIVATE_DIRS: [&str; 6] = ["cas", "db", "snapshots", "builds", "sysroots", "mounting"];

/// Where default mount points are: `workspaces/<uid>/<name>`.
pub const WORKSPACES: &str = "workspaces";

/// The daemon's socket in the state directory.
pub const SOCKET: &str = "wsd.sock";

/// The file naming the socket when it is elsewhere.
pub const SOCKET_RECORD: &str = "wsd.socket";

/// The mode of a directory only its owner may enter.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The mode of a file only the daemon reads.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Whom a daemon's state is shared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// A root daemon: every user of the machine reaches it.
    AllUsers,
    /// A user daemon: its own user only.
    OneUser,
}

impl Sharing {
    /// This process's: all users when it runs as root.
    pub fn of_this_process() -> Sharing {
        if rustix::process::geteuid().is_root() {
            Sharing::AllUsers
        } else {
            Sharing::OneUser
        }
    }

    /// `<state>` and `workspaces/`: searchable, never listable, by the users
    /// who reach names under them.
    pub fn passage_mode(self) -> u32 {
        match self {
            Sharing::AllUsers => 0o711,
            Sharing::OneUser => PRIVATE_DIR_MODE,
        }
    }

    /// The socket: what a client needs to connect.
    pub fn socket_mode(self) -> u32 {
        match self {
            Sharing::AllUsers => 0o666,
            Sharing::OneUser => 0o600,
        }
    }

    /// The socket record and the directory of a socket outside the state
    /// directory: what a client needs to find the socket.
    pub fn record_mode(self) -> u32 {
        match self {
            Sharing::AllUsers => 0o644,
            Sharing::OneUser => PRIVATE_FILE_MODE,
        }
    }
}

/// Makes the state directory `root` (the admin's or the user's path, followed)
/// and its top level private as the module doc says.
pub fn prepare(root: &Path) -> Result<(), Error> {
    let sharing = Sharing::of_this_process();
    std::fs::create_dir_all(root).map_err(|source| Error::Io {
        op: "create the state directory",
        path: root.to_owned(),
        source,
    })?;
    let dir = rustix::fs::open(root, OPEN_NAMED, Mode::empty())
        .map_err(io("open the state directory", root))?;
    check_own(&dir, root)?;
    // Before anything is tightened: could other users reach the layers? Then
    // their owners could have changed them; the mark, made first, says to
    // check them against their trees, whenever the daemon gets to it.
    let layers_were_reachable = sharing == Sharing::AllUsers
        && rustix::fs::statat(&dir, "snapshots", AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_mode & 0o077 != 0);
    if layers_were_reachable {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat(&dir, VERIFY_LAYERS, flags, Mode::from_raw_mode(0o600))
            .and_then(|mark| rustix::fs::fsync(&mark))
            .and_then(|()| rustix::fs::fsync(&dir))
            .map_err(io("mark the layers to be checked in", root))?;
    }
    set_mode(&dir, sharing.passage_mode(), root)?;
    for name in PRIVATE_DIRS {
        own_dir(&dir, name, PRIVATE_DIR_MODE, &root.join(name))?;
    }
    let workspaces = own_dir(
        &dir,
        WORKSPACES,
        sharing.passage_mode(),
        &root.join(WORKSPACES),
    )?;
    tighten_top(&dir, root, sharing)?;
    if sharing == Sharing::AllUsers {
        give_user_dirs(&workspaces, &root.join(WORKSPACES))?;
    }
    Ok(())
}

/// The mark [`prepare`] leaves at the top of the state directory when it finds
/// `snapshots/` open to other users (an older release's state): the layers are
/// to be checked against their trees once (see `Manager::recover`), and the
/// mark removed when that is done.
pub const VERIFY_LAYERS: &str = "verify-layers";

/// Opens `workspaces/` of the state directory `root`.
pub fn open_workspaces(root: &Path) -> Result<OwnedFd, Error> {
    let dir = rustix::fs::open(root, OPEN_NAMED, Mode::empty())
        .map_err(io("open the state directory", root))?;
    let path = root.join(WORKSPACES);
    treediff::safe_fs::open_dir_at(dir.as_fd(), WORKSPACES.as_ref())
        .map_err(io("open the directory of default mount points", &path))
}

/// `workspaces/<uid>` (`path`), beneath the descriptor `workspaces`, made if
/// needed: 0700 and the user's (with group `gid` when it is given to them now).
pub fn user_dir(
    workspaces: &OwnedFd,
    uid: u32,
    gid: Option<u32>,
    path: &Path,
) -> Result<OwnedFd, Error> {
    let dir = make_dir_at(workspaces, &uid.to_string(), PRIVATE_DIR_MODE, path)?;
    set_mode(&dir, PRIVATE_DIR_MODE, path)?;
    give(&dir, uid, gid, path)?;
    Ok(dir)
}

/// A directory `name` beneath `parent` (the user's own `workspaces/<uid>`),
/// made if needed and given to `uid`: a symlink there is refused, never
/// followed.
pub fn mount_dir(
    parent: &OwnedFd,
    name: &str,
    uid: u32,
    gid: u32,
    path: &Path,
) -> Result<OwnedFd, Error> {
    let dir = make_dir_at(parent, name, PRIVATE_DIR_MODE, path)?;
    give(&dir, uid, Some(gid), path)?;
    Ok(dir)
}

/// Makes `name` beneath `parent` with `mode` unless it exists, and opens it as a
/// directory without following a symlink.
fn make_dir_at(parent: &OwnedFd, name: &str, mode: u32, path: &Path) -> Result<OwnedFd, Error> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io("create", path)(e)),
    }
    treediff::safe_fs::open_dir_at(parent.as_fd(), name.as_ref()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => Error::NotPrivate {
            path: path.to_owned(),
            problem: "it is not a directory but a symlink or a file, which the daemon never follows or replaces there; remove it".to_owned(),
        },
        e => io("open", path)(e),
    })
}

/// The top-level directory `name` of the state directory `root`: made if
/// needed, the daemon's, with `mode`.
fn own_dir(root: &OwnedFd, name: &str, mode: u32, path: &Path) -> Result<OwnedFd, Error> {
    let dir = make_dir_at(root, name, mode, path)?;
    check_own(&dir, path)?;
    set_mode(&dir, mode, path)?;
    Ok(dir)
}

/// Every other entry at the top of the state directory becomes the daemon's
/// alone: directories 0700, files 0600 (the socket record as `sharing` says).
/// Symlinks, the socket and other special files are left as they are.
fn tighten_top(root: &OwnedFd, path: &Path, sharing: Sharing) -> Result<(), Error> {
    for name in entries(root, path)? {
        if name == WORKSPACES || name == SOCKET || PRIVATE_DIRS.contains(&name.as_str()) {
            continue;
        }
        let mode = match file_type_at(root, &name) {
            Some(FileType::Directory) => PRIVATE_DIR_MODE,
            Some(FileType::RegularFile) if name == SOCKET_RECORD => sharing.record_mode(),
            Some(FileType::RegularFile) => PRIVATE_FILE_MODE,
            _ => continue,
        };
        let entry = path.join(&name);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(root, name.as_str(), flags, Mode::empty())
            .map_err(io("open", &entry))?;
        set_mode(&fd, mode, &entry)?;
    }
    Ok(())
}

/// Gives each `workspaces/<uid>` to its user, 0700 (an older release made them
/// root's and 0755, under a state directory anyone could walk).
fn give_user_dirs(workspaces: &OwnedFd, path: &Path) -> Result<(), Error> {
    for name in entries(workspaces, path)? {
        let Ok(uid) = name.parse::<u32>() else {
            continue;
        };
        if file_type_at(workspaces, &name) == Some(FileType::Directory) {
            user_dir(workspaces, uid, None, &path.join(&name))?;
        }
    }
    Ok(())
}

/// The names in the directory `dir` (at `path`), without `.` and `..`.
fn entries(dir: &OwnedFd, path: &Path) -> Result<Vec<String>, Error> {
    let list = io("list", path);
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(io("list", path))? {
        let entry = entry.map_err(&list)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// What `name` in `dir` is, not following a symlink; `None` if it is gone.
fn file_type_at(dir: &OwnedFd, name: &str) -> Option<FileType> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    Some(FileType::from_raw_mode(st.st_mode))
}

/// Refuses a directory this process does not own: another user could change
/// what is in it.
fn check_own(dir: &OwnedFd, path: &Path) -> Result<(), Error> {
    let owner = rustix::fs::fstat(dir).map_err(io("look at", path))?.st_uid;
    let me = rustix::process::geteuid().as_raw();
    if owner != me {
        return Err(Error::NotPrivate {
            path: path.to_owned(),
            problem: format!(
                "it belongs to uid {owner}, not to uid {me} that the daemon runs as, so someone else could change what is in it; give it to uid {me} (chown) or use another state directory"
            ),
        });
    }
    Ok(())
}

/// Sets the permission bits of `fd` to `mode` unless they are that already.
pub fn set_mode(fd: &impl AsFd, mode: u32, path: &Path) -> Result<(), Error> {
    let st = rustix::fs::fstat(fd).map_err(io("look at", path))?;
    if st.st_mode & 0o7777 != mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(io("set the mode of", path))?;
    }
    Ok(())
}

/// Gives `dir` to `uid` (and `gid`, if given) unless `uid` owns it already.
fn give(dir: &OwnedFd, uid: u32, gid: Option<u32>, path: &Path) -> Result<(), Error> {
    let st = rustix::fs::fstat(dir).map_err(io("look at", path))?;
    if st.st_uid == uid {
        return Ok(());
    }
    rustix::fs::fchown(
        dir,
        Some(rustix::process::Uid::from_raw(uid)),
        gid.map(rustix::process::Gid::from_raw),
    )
    .map_err(io("give its user", path))
}

/// The state directory, opened by the path the admin (or the user, for their
/// own daemon) configured: symlinks followed, since whoever wrote the
/// configuration chose where it leads; below it nothing is followed.
const OPEN_NAMED: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// A closure for `map_err` turning an errno into [`Error::Io`].
fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(Errno) -> Error + 'a {
    move |e| Error::Io {
        op,
        path: path.to_owned(),
        source: e.into(),
    }
}
