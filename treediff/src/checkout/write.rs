//! Writing a checked tree into the target, one directory file descriptor per level.
//!
//! Every name is created below a descriptor of a directory this checkout created,
//! with `O_EXCL|O_NOFOLLOW` (files), `mkdirat` + `O_NOFOLLOW|O_DIRECTORY` (dirs),
//! `symlinkat` (symlinks, never followed) or `linkat` (hardlinks); names were
//! validated when the tree was read. Nothing here resolves a path of more than one
//! component inside the target, so nothing can be written outside it.
//!
//! With an owner, entries are given the same way: through the descriptor that
//! made them (files, directories) or by name below their directory's descriptor
//! without following (symlinks); a directory once complete, so that until then
//! only the checkout can enter it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::plan::{Plan, push_name};
use super::{Access, CheckoutError, CheckoutMode, CheckoutStats};
use crate::digest::Digest;
use crate::store::{OBJECT_MTIME, ObjectKind, Store, StoreError};
use crate::sys::{self, Mtime};
use crate::tree::{Node, Props};

/// Files up to this size are read whole, verified, then written; larger ones are
/// streamed through a buffer of this size while being hashed.
const BUF_SIZE: usize = 1 << 20;

/// Directories are created owner-only and get their final mode when complete.
const DIR_CREATE_MODE: u32 = 0o700;
const DIR_MODE: u32 = 0o755;
/// Files are created owner-only and get their final mode with `fchmod`.
const FILE_CREATE_MODE: u32 = 0o600;
const FILE_MODE: u32 = 0o644;
const EXEC_FILE_MODE: u32 = 0o755;

/// What every worker of one checkout shares.
#[derive(Debug)]
pub(super) struct Shared<'a> {
    pub store: &'a Store,
    pub plan: &'a Plan,
    pub mode: CheckoutMode,
    /// Who the entries are given to, `(uid, gid)`; see the module doc.
    pub owner: Option<(u32, u32)>,
    pub target: &'a Path,
    /// Cleared at the first "this filesystem cannot reflink" answer, after which
    /// every file is copied without trying again.
    pub reflink: AtomicBool,
    /// The credentials the workers write with and the store is read with.
    pub access: Access<'a>,
}

/// One thread's state: its buffer, the tree path being written, its counts.
#[derive(Debug)]
pub(super) struct Worker<'a> {
    shared: &'a Shared<'a>,
    buf: Vec<u8>,
    /// The tree path of the entry being written.
    path: String,
    /// `blobs/ab/<64 hex>` or `exec/ab/<64 hex>`, rewritten in place per file.
    object: [u8; OBJECT_PATH_MAX],
    pub stats: CheckoutStats,
}

pub(super) const OBJECT_PATH_MAX: usize = "blobs/".len() + 3 + 64;

impl<'a> Worker<'a> {
    pub(super) fn new(shared: &'a Shared<'a>) -> Worker<'a> {
        Worker {
            shared,
            // Allocated at the first copy: hardlink mode copies only objects at their
            // link limit, and finishing a directory copies nothing.
            buf: Vec::new(),
            path: String::new(),
            object: [0; OBJECT_PATH_MAX],
            stats: CheckoutStats::default(),
        }
    }

    /// Writes the entries of the node `digest` into the open directory `fd`, whose
    /// tree path is `path`: all of them, recursively, or (`files_only`) only its
    /// files and symlinks. The directory's own mode and mtime are left to the caller
    /// ([`Worker::finish_dir`]).
    pub(super) fn write_dir(
        &mut self,
        fd: BorrowedFd<'_>,
        digest: Digest,
        path: &str,
        files_only: bool,
    ) -> Result<(), CheckoutError> {
        self.set_path(path);
        self.write_entries(fd, digest, files_only)
    }

    /// Creates the directory `name` below `fd` (whose tree path is `parent_path`) and
    /// writes the subtree `digest` into it, mode and mtime included.
    pub(super) fn write_subtree(
        &mut self,
        fd: BorrowedFd<'_>,
        name: &str,
        digest: Digest,
        parent_path: &str,
    ) -> Result<(), CheckoutError> {
        self.set_path(parent_path);
        push_name(&mut self.path, name);
        self.write_subdir(fd, OsStr::new(name), digest)
    }

    fn write_entries(
        &mut self,
        fd: BorrowedFd<'_>,
        digest: Digest,
        files_only: bool,
    ) -> Result<(), CheckoutError> {
        let plan = self.shared.plan;
        let dir = plan.dir(digest);
        for entry in dir.entries() {
            if files_only && matches!(entry.node, Node::Dir { .. }) {
                continue;
            }
            let len = self.path.len();
            push_name(&mut self.path, &entry.name);
            let name = OsStr::new(&entry.name);
            match &entry.node {
                Node::File {
                    digest: blob,
                    executable,
                } => {
                    self.write_file(fd, name, *blob, *executable, entry.props)?;
                    self.stats.files += 1;
                    self.stats.bytes += blob.size();
                }
                Node::Symlink { target } => {
                    sys::symlink_at(fd, name, OsStr::new(target))
                        .map_err(|e| self.io("create symlink", digest, e))?;
                    if let Some((uid, gid)) = self.shared.owner {
                        sys::chown_at_nofollow(fd, name, uid, gid)
                            .map_err(|e| self.io("change the owner of symlink", digest, e))?;
                    }
                    if let Some(mtime) = entry.props.and_then(|p| p.mtime) {
                        sys::set_mtime_at(fd, name, mtime)
                            .map_err(|e| self.io("set the mtime of symlink", digest, e))?;
                    }
                    self.stats.symlinks += 1;
                }
                Node::Dir { digest: child } => self.write_subdir(fd, name, *child)?,
            }
            self.path.truncate(len);
        }
        Ok(())
    }

    /// Creates the directory `name` below `fd` and writes the node `digest` into it;
    /// the current tree path is the new directory's.
    fn write_subdir(
        &mut self,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        digest: Digest,
    ) -> Result<(), CheckoutError> {
        let sub = self.make_dir(fd, name, digest)?;
        self.write_entries(sub.as_fd(), digest, false)?;
        self.finish_dir(sub.as_fd(), digest)
    }

    /// Creates and opens the directory `name` below `fd` for the node `digest`; the
    /// current tree path is the new directory's.
    pub(super) fn make_dir(
        &mut self,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        digest: Digest,
    ) -> Result<OwnedFd, CheckoutError> {
        sys::mkdir_at(fd, name, DIR_CREATE_MODE)
            .map_err(|e| self.io("create directory", digest, e))?;
        self.stats.dirs += 1;
        // O_NOFOLLOW|O_DIRECTORY: whatever was swapped in since the mkdir is refused.
        let dir = sys::open_dir_at(fd, name).map_err(|e| self.io("open directory", digest, e))?;
        // From here on the directory is reached only through `dir`.
        crate::race_point("checkout-dir-made");
        Ok(dir)
    }

    /// Gives the complete directory `fd` (the node `digest`, at the current tree
    /// path) its owner, its mode and, for buildtrees, its mtime: after its
    /// entries, because writing them changes its mtime, a read-only mode would
    /// forbid them, and its owner could move them while they are written.
    pub(super) fn finish_dir(
        &mut self,
        fd: BorrowedFd<'_>,
        digest: Digest,
    ) -> Result<(), CheckoutError> {
        self.give(fd, digest)?;
        let props = self.shared.plan.dir(digest).props;
        let mode = props.and_then(|p| p.unix_mode).unwrap_or(DIR_MODE) & 0o777;
        sys::fchmod(fd, mode).map_err(|e| self.io("set the mode of directory", digest, e))?;
        if let Some(mtime) = props.and_then(|p| p.mtime) {
            sys::set_mtime(fd, mtime)
                .map_err(|e| self.io("set the mtime of directory", digest, e))?;
        }
        Ok(())
    }

    /// Gives the open file or directory `fd` (of the node or blob `digest`, at
    /// the current tree path) to the owner, if there is one.
    pub(super) fn give(&self, fd: BorrowedFd<'_>, digest: Digest) -> Result<(), CheckoutError> {
        match self.shared.owner {
            Some((uid, gid)) => {
                sys::fchown(fd, uid, gid).map_err(|e| self.io("change the owner of", digest, e))
            }
            None => Ok(()),
        }
    }

    /// Sets the tree path reported by [`Worker::finish_dir`] errors.
    pub(super) fn set_path(&mut self, path: &str) {
        self.path.clear();
        self.path.push_str(path);
    }

    fn write_file(
        &mut self,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        digest: Digest,
        executable: bool,
        props: Option<Props>,
    ) -> Result<(), CheckoutError> {
        if self.shared.mode == CheckoutMode::Hardlink {
            let kind = if executable {
                ObjectKind::Exec
            } else {
                ObjectKind::Blob
            };
            let object = object_path(&mut self.object, kind, &digest);
            match sys::link_at(self.shared.store.cas_fd(), object, fd, name) {
                Ok(()) => {
                    self.stats.hardlinked += 1;
                    return Ok(());
                }
                // The object has all the links its filesystem allows: copy it.
                Err(e) if sys::is_too_many_links(&e) => {}
                Err(e) => return Err(self.io("hardlink", digest, e)),
            }
        }
        let src = self.open_object(digest)?;
        let dst = sys::create_file_at(fd, name, FILE_CREATE_MODE)
            .map_err(|e| self.io("create file", digest, e))?;
        self.give(dst.as_fd(), digest)?;
        let mut cloned = false;
        if self.shared.mode == CheckoutMode::Reflink && self.shared.reflink.load(Ordering::Relaxed)
        {
            match sys::ficlone(&dst, &src) {
                Ok(()) => cloned = true,
                Err(e) if sys::is_reflink_unsupported(&e) => {
                    self.shared.reflink.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(self.io("reflink", digest, e)),
            }
        }
        if cloned {
            self.stats.reflinked += 1;
        } else {
            self.copy_verified(src, &dst, fd, name, digest)?;
            self.stats.copied += 1;
        }
        let default_mode = if executable {
            EXEC_FILE_MODE
        } else {
            FILE_MODE
        };
        let mode = props.and_then(|p| p.unix_mode).unwrap_or(default_mode) & 0o777;
        sys::fchmod(dst.as_fd(), mode).map_err(|e| self.io("set the mode of", digest, e))?;
        let mtime: Mtime = props.and_then(|p| p.mtime).unwrap_or(OBJECT_MTIME);
        sys::set_mtime(dst.as_fd(), mtime).map_err(|e| self.io("set the mtime of", digest, e))
    }

    /// Opens the blob of `digest` with the process's own credentials, which
    /// alone may read the store, when the thread writes with another user's.
    fn open_object(&self, digest: Digest) -> Result<File, CheckoutError> {
        let open = || {
            self.shared
                .store
                .open_object(ObjectKind::Blob, &digest)
                .map_err(|source| self.object_error(digest, source))
        };
        let Some(access) = self.shared.access.0 else {
            return open();
        };
        access.as_writer().map_err(|e| {
            self.io(
                "take on the process's credentials to read the object of",
                digest,
                e,
            )
        })?;
        let file = open();
        // Failing here, the thread still has the process's credentials: it stops,
        // and writes nothing more.
        access.as_reader().map_err(|e| {
            self.io(
                "take on the target user's credentials again to write",
                digest,
                e,
            )
        })?;
        file
    }

    /// Copies the object `src` into `dst` while hashing it; on a mismatch removes
    /// `dst` (readers only get verified bytes) and fails naming the digest.
    fn copy_verified(
        &mut self,
        mut src: File,
        mut dst: &File,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        digest: Digest,
    ) -> Result<(), CheckoutError> {
        let size = digest.size();
        if size == 0 && digest != Digest::empty() {
            let _ = sys::unlink_at(fd, name);
            return Err(self.corrupt(
                digest,
                format!("it is empty, whose digest is {}", Digest::empty()),
            ));
        }
        if self.buf.is_empty() {
            self.buf = vec![0; BUF_SIZE];
        }
        let mut hasher = blake3::Hasher::new();
        let mut done = 0u64;
        while done < size {
            let want = (size - done).min(self.buf.len() as u64) as usize;
            let got = read_full(&mut src, &mut self.buf[..want]).map_err(|e| {
                let path = self.shared.store.object_path(ObjectKind::Blob, &digest);
                self.object_error(digest, StoreError::io("read blob", path)(e))
            })?;
            if got < want {
                let _ = sys::unlink_at(fd, name);
                return Err(self.corrupt(
                    digest,
                    format!(
                        "its file ended after {} bytes, the digest says {size}",
                        done + got as u64
                    ),
                ));
            }
            let chunk = &self.buf[..want];
            if want as u64 == size {
                // The whole file: verify before writing a byte.
                let actual = blake3::hash(chunk);
                if actual.as_bytes() != digest.hash() {
                    let _ = sys::unlink_at(fd, name);
                    let actual = Digest::from_parts(*actual.as_bytes(), size);
                    return Err(self.corrupt(digest, format!("its content hashes to {actual}")));
                }
            } else {
                hasher.update(chunk);
            }
            dst.write_all(chunk)
                .map_err(|e| self.io("write file", digest, e))?;
            done += want as u64;
        }
        if size > self.buf.len() as u64 {
            let actual = Digest::from_hasher(&hasher, size);
            if actual != digest {
                let _ = sys::unlink_at(fd, name);
                return Err(self.corrupt(digest, format!("its content hashes to {actual}")));
            }
        }
        Ok(())
    }

    fn io(&self, op: &'static str, digest: Digest, source: io::Error) -> CheckoutError {
        CheckoutError::Io {
            op,
            path: self.path.clone(),
            digest,
            target: self.shared.target.to_owned(),
            source,
        }
    }

    fn object_error(&self, digest: Digest, source: StoreError) -> CheckoutError {
        CheckoutError::Object {
            digest,
            path: self.path.clone(),
            target: self.shared.target.to_owned(),
            partial: true,
            source: Box::new(source),
        }
    }

    fn corrupt(&self, digest: Digest, problem: String) -> CheckoutError {
        CheckoutError::Corrupt {
            digest,
            path: self.path.clone(),
            target: self.shared.target.to_owned(),
            source: Box::new(StoreError::Corrupt {
                digest,
                path: self.shared.store.object_path(ObjectKind::Blob, &digest),
                problem,
            }),
        }
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_full(src: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Writes the object's path relative to the store root into `buf`, without
/// allocating: the same as `store::relative_path`.
pub(super) fn object_path<'b>(
    buf: &'b mut [u8; OBJECT_PATH_MAX],
    kind: ObjectKind,
    digest: &Digest,
) -> &'b OsStr {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix: &[u8] = match kind {
        ObjectKind::Blob => b"blobs/",
        ObjectKind::Exec => b"exec/",
    };
    let mut at = prefix.len();
    buf[..at].copy_from_slice(prefix);
    let hash = digest.hash();
    buf[at] = HEX[usize::from(hash[0] >> 4)];
    buf[at + 1] = HEX[usize::from(hash[0] & 0xf)];
    buf[at + 2] = b'/';
    at += 3;
    for byte in hash {
        buf[at] = HEX[usize::from(byte >> 4)];
        buf[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    OsStr::from_bytes(&buf[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_path_matches_the_store_layout() {
        let digest = Digest::of(b"some content");
        let mut buf = [0; OBJECT_PATH_MAX];
        for kind in [ObjectKind::Blob, ObjectKind::Exec] {
            assert_eq!(
                object_path(&mut buf, kind, &digest),
                crate::store::relative_path(kind, &digest).as_os_str()
            );
        }
    }
}
