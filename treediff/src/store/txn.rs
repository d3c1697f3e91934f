//! `StoreTxn`: stage new objects, then publish them all at once.
//!
//! # Crash safety
//!
//! Objects are written into a staging dir named `<boot id>-<pid>-<n>`, not under
//! their digest. [`StoreTxn::commit`] makes them durable with one `syncfs`, renames
//! each into place without overwriting (an object that already exists is equal by
//! definition, so "exists" is success), and calls `syncfs` once more so the names
//! are durable before the caller records anything that points at them. A crash at
//! any point leaves either no object under a digest or a complete one; the staging
//! dir is collected by the next [`Store::open`]. An fsync error fails the commit:
//! it is never retried into a success.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::{OBJECT_MTIME, ObjectKind, Store, StoreError, relative_path};
use crate::blob::VerifiedBlob;
use crate::digest::Digest;
use crate::sys;

/// Files at most this large are read into memory whole; larger ones are streamed.
pub(crate) const STREAM_THRESHOLD: u64 = 1 << 20;

static NEXT_TXN: AtomicU64 = AtomicU64::new(0);

/// Subdirectories of a staging directory; see `new_file_name`.
const STAGING_SHARDS: usize = 16;

/// Threads renaming staged objects into place at commit.
const PUBLISH_THREADS: usize = 4;

/// An open transaction on the store. Share it by reference between threads that
/// stage objects; dropping it without [`commit`](StoreTxn::commit) publishes nothing.
#[must_use = "a transaction publishes nothing unless committed"]
#[derive(Debug)]
pub struct StoreTxn<'s> {
    store: &'s Store,
    name: String,
    /// The staging directory, made when the first object is staged: a
    /// transaction that adds nothing (a status of an unchanged view, a re-import)
    /// touches no directory at all.
    dir: OnceLock<OwnedFd>,
    making_dir: Mutex<()>,
    next_file: AtomicU64,
    /// Objects staged so far: (digest, kind) → staging file name.
    staged: Mutex<HashMap<(Digest, ObjectKind), OsString>>,
    trees: Mutex<Vec<Digest>>,
    finished: bool,
}

impl<'s> StoreTxn<'s> {
    pub(super) fn begin(store: &'s Store) -> Result<StoreTxn<'s>, StoreError> {
        let seq = NEXT_TXN.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{seq}", store.boot_id(), std::process::id());
        Ok(StoreTxn {
            store,
            name,
            dir: OnceLock::new(),
            making_dir: Mutex::new(()),
            next_file: AtomicU64::new(0),
            staged: Mutex::new(HashMap::new()),
            trees: Mutex::new(Vec::new()),
            finished: false,
        })
    }

    /// The staging directory with its shards, made on first use.
    fn dir(&self) -> Result<&OwnedFd, StoreError> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir);
        }
        let _making = self.making_dir.lock().unwrap();
        if let Some(dir) = self.dir.get() {
            return Ok(dir);
        }
        let rel = PathBuf::from("staging").join(&self.name);
        let path = self.store.root().join(&rel);
        sys::mkdir_at(self.store.cas_fd(), rel.as_os_str(), 0o700)
            .map_err(StoreError::io("create staging directory", &path))?;
        let dir = sys::open_dir_at(self.store.cas_fd(), rel.as_os_str())
            .map_err(StoreError::io("open staging directory", &path))?;
        for shard in 0..STAGING_SHARDS {
            let name = std::ffi::OsString::from(format!("{shard:x}"));
            sys::mkdir_at(dir.as_fd(), &name, 0o700)
                .map_err(StoreError::io("create staging directory", path.join(&name)))?;
        }
        Ok(self.dir.get_or_init(|| dir))
    }

    /// The store this transaction writes to.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    fn staging_path(&self, file: &OsString) -> PathBuf {
        self.store
            .root()
            .join("staging")
            .join(&self.name)
            .join(file)
    }

    /// True if the object is already in the store or staged here. Otherwise it is
    /// reserved (recorded as staged under `file`), so that of several threads staging
    /// the same content, only one writes it.
    fn reserve(&self, digest: Digest, kind: ObjectKind) -> Result<Option<OsString>, StoreError> {
        if self.staged.lock().unwrap().contains_key(&(digest, kind)) {
            return Ok(None);
        }
        if self.store.has_object(kind, &digest)? {
            return Ok(None);
        }
        let file = self.new_file_name();
        let mut staged = self.staged.lock().unwrap();
        if staged.contains_key(&(digest, kind)) {
            return Ok(None);
        }
        staged.insert((digest, kind), file.clone());
        Ok(Some(file))
    }

    fn unreserve(&self, digest: Digest, kind: ObjectKind) {
        self.staged.lock().unwrap().remove(&(digest, kind));
    }

    /// `<shard>/<n>`: staged files are spread over [`STAGING_SHARDS`] directories so
    /// that publishing can rename in parallel without contending for one directory.
    fn new_file_name(&self) -> OsString {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("{:x}/{n}", n % STAGING_SHARDS as u64))
    }

    /// Creates a staging file with the object mode; the caller fills it.
    fn create(&self, file: &OsString, kind: ObjectKind) -> Result<File, StoreError> {
        sys::create_file_at(self.dir()?.as_fd(), file, kind.mode()).map_err(StoreError::io(
            "create staging file",
            self.staging_path(file),
        ))
    }

    /// Gives a staged file its object mode (explicitly: the caller's umask must not
    /// decide what hardlink checkouts show) and the fixed object mtime.
    fn finish_file(&self, out: &File, file: &OsString, kind: ObjectKind) -> Result<(), StoreError> {
        if self.store.umask_strips(kind.mode()) {
            sys::fchmod(out.as_fd(), kind.mode())
                .map_err(StoreError::io("set the mode of", self.staging_path(file)))?;
        }
        sys::set_mtime(out.as_fd(), OBJECT_MTIME)
            .map_err(StoreError::io("set the mtime of", self.staging_path(file)))
    }

    /// Stages `bytes` as a blob and returns its digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        self.put_hashed(digest, bytes)?;
        Ok(digest)
    }

    /// Stages a blob whose digest the caller computed from these very bytes.
    pub(crate) fn put_hashed(&self, digest: Digest, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_object(digest, ObjectKind::Blob, bytes)
    }

    fn put_object(&self, digest: Digest, kind: ObjectKind, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(file) = self.reserve(digest, kind)? else {
            return Ok(());
        };
        let result = self.create(&file, kind).and_then(|mut out| {
            out.write_all(bytes)
                .map_err(StoreError::io("write", self.staging_path(&file)))?;
            self.finish_file(&out, &file, kind)
        });
        if result.is_err() {
            self.unreserve(digest, kind);
        }
        result
    }

    /// Stages the executable twin of a blob already in the store (for hardlink
    /// checkouts); its content is verified on the way.
    pub(crate) fn put_exec_twin(&self, digest: Digest) -> Result<(), StoreError> {
        if self.store.has_object(ObjectKind::Exec, &digest)? {
            return Ok(());
        }
        let blob: VerifiedBlob = self.store.read(&digest)?;
        self.put_object(digest, ObjectKind::Exec, blob.bytes())
    }

    /// Streams `reader` into a staging file while hashing it, and stages it as a blob
    /// unless the store already has it. Returns the digest and the byte count.
    pub fn put_stream(&self, reader: &mut dyn Read) -> Result<Digest, StoreError> {
        let file = self.new_file_name();
        let path = self.staging_path(&file);
        let mut out = self.create(&file, ObjectKind::Blob)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; STREAM_THRESHOLD as usize];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.discard(&file);
                    return Err(StoreError::Io {
                        op: "read the source of",
                        path,
                        source: e,
                    });
                }
            };
            hasher.update(&buf[..n]);
            if let Err(e) = out.write_all(&buf[..n]) {
                self.discard(&file);
                return Err(StoreError::io("write", path)(e));
            }
            size += n as u64;
        }
        let digest = Digest::from_hasher(&hasher, size);
        let keep = !self.store.has_object(ObjectKind::Blob, &digest)? && {
            let mut staged = self.staged.lock().unwrap();
            match staged.entry((digest, ObjectKind::Blob)) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(file.clone());
                    true
                }
            }
        };
        if keep {
            self.finish_file(&out, &file, ObjectKind::Blob)?;
        } else {
            self.discard(&file);
        }
        Ok(digest)
    }

    fn discard(&self, file: &OsString) {
        if let Some(dir) = self.dir.get() {
            let _ = sys::unlink_at(dir.as_fd(), file);
        }
    }

    /// Records `tree` as an imported root tree, published with the transaction.
    pub fn record_tree(&self, tree: Digest) {
        self.trees.lock().unwrap().push(tree);
    }

    /// How many new objects this transaction will publish.
    pub fn staged_count(&self) -> usize {
        self.staged.lock().unwrap().len()
    }

    /// Publishes every staged object: `syncfs`, renames, `syncfs`. See the module doc.
    /// A transaction that adds nothing (re-importing an unchanged tree) syncs nothing.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let staged: Vec<_> = std::mem::take(&mut *self.staged.lock().unwrap())
            .into_iter()
            .collect();
        let mut changed = !staged.is_empty();
        if changed {
            let staging = self.store.root().join("staging").join(&self.name);
            sys::syncfs(self.dir()?.as_fd())
                .map_err(StoreError::io("sync staged objects in", &staging))?;
            self.publish(&staged)?;
        }
        let cas = self.store.cas_fd();
        for tree in self.trees.lock().unwrap().iter() {
            let rel = PathBuf::from("trees").join(format!("{}-{}", tree.hex(), tree.size()));
            match sys::create_file_at(cas, rel.as_os_str(), 0o444) {
                Ok(_) => changed = true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(StoreError::io("record tree", self.store.root().join(rel))(
                        e,
                    ));
                }
            }
        }
        if changed {
            sys::syncfs(cas).map_err(StoreError::io(
                "sync published objects in",
                self.store.root(),
            ))?;
        }
        self.finished = true;
        self.trash_staging_dir();
        Ok(())
    }

    /// Renames every staged object into place, on a few threads: renames are
    /// latency-bound metadata operations, and 100k of them in a row take seconds.
    fn publish(&self, staged: &[((Digest, ObjectKind), OsString)]) -> Result<(), StoreError> {
        let chunk = staged.len().div_ceil(PUBLISH_THREADS).max(1);
        let cas = self.store.cas_fd();
        let dir = self.dir()?;
        std::thread::scope(|scope| {
            let workers: Vec<_> = staged
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || -> Result<(), StoreError> {
                        for ((digest, kind), file) in part {
                            let target = relative_path(*kind, digest);
                            let placed =
                                sys::rename_noreplace(dir.as_fd(), file, cas, target.as_os_str())
                                    .map_err(StoreError::io(
                                    "publish object",
                                    self.store.root().join(&target),
                                ))?;
                            if !placed {
                                self.discard(file);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("publishing threads do not panic"))
        })
    }

    /// Moves the staging directory (empty after a commit, or holding an aborted
    /// transaction's objects) into the trash, emptied in the background: removing
    /// its 17 directories here would cost milliseconds on the caller's path.
    fn trash_staging_dir(&self) {
        if self.dir.get().is_none() {
            return;
        }
        let from = PathBuf::from("staging").join(&self.name);
        let to = PathBuf::from("trash").join(&self.name);
        let _ = nix::fcntl::renameat(self.store.cas_fd(), &from, self.store.cas_fd(), &to);
        self.store.empty_trash_in_background();
    }
}

impl Drop for StoreTxn<'_> {
    /// An aborted transaction publishes nothing; its staging dir goes to the trash.
    fn drop(&mut self) {
        if !self.finished {
            self.trash_staging_dir();
        }
    }
}
