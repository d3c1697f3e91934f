//! Finding the writes outside the allowed places: what the commands left in the
//! upper of the overlay over the host's root.
//!
//! The writable places (/ws/build, /ws/install, /ws/cache/*, /tmp) are mounts of
//! their own, so nothing written there reaches the upper; anything in the upper
//! is a write elsewhere, except:
//!
//! - the mount points the setup made (and their parents, such as `/ws`), which
//!   are walked but not reported;
//! - directories of the host copied up only because something under them was
//!   written: a directory that is a directory on the host too, is not opaque and
//!   has the host's mode and owner is walked but not reported.
//!
//! What is reported, by absolute path inside the sandbox, sorted:
//!
//! - a whiteout (a character device 0/0): a host file or directory deleted;
//! - any other non-directory: a file created, written, or changed (kernel overlay
//!   copies a file up on any open for writing, `chmod` or `touch`);
//! - a directory new to the host, or opaque (it replaced a host directory's
//!   contents), as one entry: what is under it is not listed (a `make install`
//!   into `/usr/local` that made a tree is one line per new directory, not one
//!   per file);
//! - a host directory whose mode or owner changed (and what changed under it).
//!
//! Names are shown as UTF-8, lossily: a stray write is reported either way.
//!
//! The walk goes through directory descriptors from the kept descriptors of the
//! upper and of the host's root (neither is reachable by path after the
//! `pivot_root`), one component at a time, following no symlink.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Stat};

/// The paths the commands wrote outside the writable places (see the module
/// doc): the upper `upper` of the overlay whose lower is `host`, less the
/// directories `made` by the setup (relative paths, such as `ws/cache`).
pub(super) fn stray_writes(
    upper: BorrowedFd<'_>,
    host: BorrowedFd<'_>,
    made: &BTreeSet<String>,
) -> std::io::Result<Vec<String>> {
    let mut found = BTreeSet::new();
    walk(upper, Some(host), "", made, &mut found)?;
    Ok(found.into_iter().collect())
}

fn walk(
    upper: BorrowedFd<'_>,
    host: Option<BorrowedFd<'_>>,
    prefix: &str,
    made: &BTreeSet<String>,
    found: &mut BTreeSet<String>,
) -> std::io::Result<()> {
    for entry in rustix::fs::Dir::read_from(upper)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{prefix}/{}", name.to_string_lossy())
        };
        let st = rustix::fs::statat(upper, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::Directory {
            // A whiteout (a deletion) or a file written: reported alike.
            found.insert(format!("/{rel}"));
            continue;
        }
        let on_host = host.and_then(|h| {
            rustix::fs::statat(h, name, AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
        });
        let sub_upper = treediff::safe_fs::open_dir_at(upper, name)?;
        let mine = made.contains(&rel);
        if !mine {
            if on_host.is_none() || opaque(sub_upper.as_fd())? {
                found.insert(format!("/{rel}"));
                continue;
            }
            if on_host.as_ref().is_some_and(|h| !same_metadata(&st, h)) {
                found.insert(format!("/{rel}"));
            }
        }
        let sub_host = match (host, &on_host) {
            (Some(h), Some(_)) => Some(treediff::safe_fs::open_dir_at(h, name)?),
            _ => None,
        };
        walk(
            sub_upper.as_fd(),
            sub_host.as_ref().map(|d| d.as_fd()),
            &rel,
            made,
            found,
        )?;
    }
    Ok(())
}

/// Whether the upper directory hides the host directory's contents (it was
/// deleted and made again).
fn opaque(dir: BorrowedFd<'_>) -> std::io::Result<bool> {
    let mut buf = [0u8; 8];
    match rustix::fs::fgetxattr(dir, "trusted.overlay.opaque", &mut buf[..]) {
        Ok(n) => Ok(&buf[..n] == b"y"),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::RANGE) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether a copied-up directory still has the host directory's permissions and
/// owner (its times change with every entry made in it, so they are not compared).
fn same_metadata(upper: &Stat, host: &Stat) -> bool {
    (upper.st_mode & 0o7777, upper.st_uid, upper.st_gid)
        == (host.st_mode & 0o7777, host.st_uid, host.st_gid)
}
