//! Capturing one entry on its own: a file or symlink named relative to an open
//! directory, for callers that walk a directory of their own format (an overlay
//! upper, with its whiteouts) but must hash exactly as [`capture`](super::capture)
//! does, retrying a file that changes while it is read.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::path::Path;

use super::file::hash_file;
use super::walk::{mtime_of, props_of};
use super::{CaptureError, CaptureMode};
use crate::store::StoreTxn;
use crate::sys;
use crate::tree::{Entry, Node, Props};

/// Captures the regular file or symlink `name` in `dir` into `txn`. `path` names it
/// in errors. A file is hashed between two stats that must agree; FIFOs, sockets,
/// devices and directories are refused (directories are the caller's to walk).
pub fn capture_entry_at(
    txn: &StoreTxn<'_>,
    dir: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    mode: CaptureMode,
) -> Result<Entry, CaptureError> {
    let io = |op| {
        move |source| CaptureError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let stat = sys::lstat_at(dir, OsStr::new(name)).map_err(io("stat"))?;
    let buildtree = mode == CaptureMode::Buildtree;
    let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    let (node, props) = match kind {
        rustix::fs::FileType::RegularFile => {
            let (digest, stat) = hash_file(txn, dir, name, stat, &mut Vec::new(), None)
                .map_err(|e| e.at(path.to_owned()))?;
            let node = Node::File {
                digest,
                executable: stat.st_mode & 0o100 != 0,
            };
            (node, buildtree.then(|| props_of(&stat)))
        }
        rustix::fs::FileType::Symlink => {
            let target = sys::readlink_at(dir, OsStr::new(name))
                .map_err(io("read symlink"))?
                .into_string()
                .map_err(|_| CaptureError::TargetNotUtf8 {
                    path: path.to_owned(),
                })?;
            let props = buildtree.then(|| Props {
                mtime: Some(mtime_of(&stat)),
                unix_mode: None,
            });
            (Node::Symlink { target }, props)
        }
        rustix::fs::FileType::Directory => {
            return Err(CaptureError::Invalid {
                path: path.to_owned(),
                problem: "expected a file or symlink, found a directory".to_owned(),
            });
        }
        other => {
            return Err(CaptureError::Unsupported {
                path: path.to_owned(),
                kind: match other {
                    rustix::fs::FileType::Fifo => "FIFO",
                    rustix::fs::FileType::Socket => "socket",
                    rustix::fs::FileType::BlockDevice => "block device",
                    _ => "character device",
                },
            });
        }
    };
    Ok(Entry {
        name: name.to_owned(),
        node,
        props,
    })
}
