//! The directory of a socket that cannot be `<state>/wsd.sock` (that path is too
//! long for a socket address): `/run/ws` for root, `$XDG_RUNTIME_DIR/ws` for a
//! user, else `/tmp/ws-<uid>`.
//!
//! In `/tmp` anyone may have made `ws-<uid>` first, to receive the daemon's
//! socket and so its clients' requests and descriptors. So the directory is
//! made with the daemon's mode, and refused unless it is a directory (not a
//! symlink) that the daemon's user owns; its mode is then set through that
//! descriptor.

use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::modes::{PRIVATE_DIR_MODE, Sharing, set_mode};
use crate::error::Error;

/// Where short-lived runtime files go: `/run/ws` for root, `$XDG_RUNTIME_DIR/ws`
/// for a user, else `/tmp/ws-<uid>`.
pub fn runtime_dir() -> PathBuf {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/ws");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("ws"),
        None => PathBuf::from(format!("/tmp/ws-{}", uid.as_raw())),
    }
}

/// Makes the runtime directory `dir` if needed and checks that it is this
/// process's own directory, then gives it its mode: 0755 for a root daemon
/// (every user's client connects), 0700 for a user's.
pub fn prepare(dir: &Path) -> Result<(), Error> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(not_private(dir, "it has no parent directory".to_owned()));
    };
    let io = |op| {
        move |e: Errno| Error::Io {
            op,
            path: dir.to_owned(),
            source: e.into(),
        }
    };
    let mode = match Sharing::of_this_process() {
        Sharing::AllUsers => 0o755,
        Sharing::OneUser => PRIVATE_DIR_MODE,
    };
    let parent = rustix::fs::open(parent, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io("open the parent of"))?;
    match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io("create")(e)),
    }
    let fd = treediff::safe_fs::open_dir_at(std::os::fd::AsFd::as_fd(&parent), name).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => not_private(dir, format!("it is not a directory but a symlink or a file, and the daemon puts its socket only in a directory of its own; {}", remedy(dir))),
        e => io("open")(e),
    })?;
    let owner = rustix::fs::fstat(&fd).map_err(io("look at"))?.st_uid;
    let me = rustix::process::geteuid().as_raw();
    if owner != me {
        return Err(not_private(
            dir,
            format!(
                "it belongs to uid {owner}, not to uid {me} that the daemon runs as: someone else made it, perhaps to receive your requests; {}",
                remedy(dir)
            ),
        ));
    }
    set_mode(&fd, mode, dir)
}

/// What to do about a runtime directory that is not the daemon's own.
fn remedy(dir: &Path) -> String {
    format!(
        "have {} removed (by its owner or root), or set XDG_RUNTIME_DIR to a directory of your own, or use a shorter --state-dir",
        dir.display()
    )
}

fn not_private(dir: &Path, problem: String) -> Error {
    Error::NotPrivate {
        path: dir.to_owned(),
        problem,
    }
}
