//! Reading a caller's files with the caller's permissions.
//!
//! A root daemon imports a user's source directory on threads that take on the
//! user's uid, gid and supplementary groups (per thread, as Linux keeps them) while
//! they read, and go back to root only to write into the store. So the daemon reads
//! nothing the user could not: an unreadable subdirectory fails the import, naming
//! it. No helper process is forked: the walk's threads are the helper, and no copy
//! of the data crosses a pipe.

use nix::unistd::{Gid, Uid, User};
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

impl CallerAccess {
    /// The access `caller` needs from this process: `None` when the process reads
    /// as the caller already (or the caller is root, who may read everything).
    pub fn for_caller(caller: Caller) -> std::io::Result<Option<CallerAccess>> {
        let euid = nix::unistd::geteuid().as_raw();
        if caller.uid == euid || caller.uid == 0 {
            return Ok(None);
        }
        let writer = Credentials {
            uid: rustix::process::Uid::from_raw(euid),
            gid: rustix::process::Gid::from_raw(nix::unistd::getegid().as_raw()),
            groups: raw_groups(nix::unistd::getgroups()?),
        };
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

/// Reads the file `path` with `caller`'s permissions, on a thread of its own that
/// takes on the caller's credentials (so the daemon's other threads keep theirs).
/// `None` when it does not exist.
pub fn read_file_as(caller: Caller, path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
    let access = CallerAccess::for_caller(caller)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(access) = &access {
                    access.as_reader()?;
                }
                match std::fs::read(path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the reading thread panicked")))
    })
}
