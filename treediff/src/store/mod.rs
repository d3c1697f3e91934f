//! The content-addressed store: blobs named by their BLAKE3 digest, on disk.
//!
//! Layout under `<state>/cas/` (see `docs/format.md`):
//!
//! ```text
//! blobs/<2 hex>/<64 hex>   every blob (file contents and Directory messages), mode 0444
//! exec/<2 hex>/<64 hex>    a 0555 twin of a blob, made on demand for hardlink checkouts
//! trees/<hex>-<size>       the root trees that were imported (what fsck walks)
//! staging/<boot>-<pid>-<n>/<shard>/<n>  a transaction's new objects before publishing
//! trash/                   staging dirs of finished transactions and gc sweeps, deleted in the background
//! ```
//!
//! Every object file carries the fixed mtime [`OBJECT_MTIME`], so a checkout that
//! hardlinks objects shows unedited sources as older than anything a build writes.
//! Objects are written only through a [`StoreTxn`]; readers get [`VerifiedBlob`]s.

mod error;
pub(crate) mod txn;

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use error::StoreError;
pub use txn::StoreTxn;

use crate::blob::VerifiedBlob;
use crate::digest::Digest;
use crate::sys::{self, Mtime};

/// The mtime of every object file: 1980-01-01T00:00:00Z. Old enough that every build
/// output is newer, and not the epoch, which zip and some tar tools refuse.
pub const OBJECT_MTIME: Mtime = Mtime {
    seconds: 315_532_800,
    nanos: 0,
};

/// The permission bits of object files: read-only, because hardlink checkouts share
/// them; executables get a separate 0555 twin.
const BLOB_MODE: u32 = 0o444;
const EXEC_MODE: u32 = 0o555;

/// Which of the two object files of a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ObjectKind {
    /// The blob itself, 0444.
    Blob,
    /// Its executable twin, 0555.
    Exec,
}

impl ObjectKind {
    fn dir(self) -> &'static str {
        match self {
            ObjectKind::Blob => "blobs",
            ObjectKind::Exec => "exec",
        }
    }

    fn mode(self) -> u32 {
        match self {
            ObjectKind::Blob => BLOB_MODE,
            ObjectKind::Exec => EXEC_MODE,
        }
    }
}

/// An open store. Cheap to share between threads by reference.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    cas: OwnedFd,
    boot_id: String,
    /// The process umask, read once: objects need an `fchmod` only where it would
    /// strip their mode bits.
    umask: u32,
    /// Whether a thread is emptying the trash.
    emptying: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Opens the store under `state_dir`, creating its directories if needed, and
    /// starts deleting what aborted or crashed transactions left behind.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let root = state_dir.join("cas");
        let fanout_done = root.join("exec/ff");
        if !fanout_done.is_dir() {
            create_layout(&root)?;
        }
        let cas = sys::open_dir(&root).map_err(StoreError::io("open store directory", &root))?;
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "noboot".to_owned());
        let store = Store {
            root,
            cas,
            boot_id,
            umask: process_umask(),
            emptying: Default::default(),
        };
        store.collect_leftovers();
        Ok(store)
    }

    /// The store's directory (`<state>/cas`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts a transaction: new objects are staged, then published together by
    /// [`StoreTxn::commit`] with one `syncfs` before and one after the renames.
    pub fn begin(&self) -> Result<StoreTxn<'_>, StoreError> {
        StoreTxn::begin(self)
    }

    /// The path of a blob's object file (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(relative_path(ObjectKind::Blob, digest))
    }

    /// The path of an object file of either kind (which may not exist).
    pub(crate) fn object_path(&self, kind: ObjectKind, digest: &Digest) -> PathBuf {
        self.root.join(relative_path(kind, digest))
    }

    /// Whether the store holds the object (its content is not checked here).
    pub(crate) fn has_object(&self, kind: ObjectKind, digest: &Digest) -> Result<bool, StoreError> {
        let rel = relative_path(kind, digest);
        match sys::lstat_at(self.cas.as_fd(), rel.as_os_str()) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("look up", self.root.join(rel))(e)),
        }
    }

    /// Whether the store holds the blob (its content is not checked here).
    pub fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.has_object(ObjectKind::Blob, digest)
    }

    /// Opens a blob's object file, checking that its size matches the digest.
    pub(crate) fn open_object(
        &self,
        kind: ObjectKind,
        digest: &Digest,
    ) -> Result<File, StoreError> {
        let rel = relative_path(kind, digest);
        let path = || self.root.join(&rel);
        let file = sys::open_file_at(self.cas.as_fd(), rel.as_os_str()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::Missing {
                    digest: *digest,
                    path: path(),
                }
            } else {
                StoreError::io("open blob", path())(e)
            }
        })?;
        let size = file
            .metadata()
            .map_err(StoreError::io("stat blob", path()))?
            .len();
        if size != digest.size() {
            return Err(StoreError::Corrupt {
                digest: *digest,
                path: path(),
                problem: format!(
                    "its file has {size} bytes, the digest says {}",
                    digest.size()
                ),
            });
        }
        Ok(file)
    }

    /// Reads a blob, checking its size and hash.
    pub fn read(&self, digest: &Digest) -> Result<VerifiedBlob, StoreError> {
        let mut file = self.open_object(ObjectKind::Blob, digest)?;
        let mut bytes = Vec::with_capacity(digest.size() as usize);
        file.read_to_end(&mut bytes)
            .map_err(StoreError::io("read blob", self.blob_path(digest)))?;
        VerifiedBlob::verify(*digest, bytes).map_err(|mismatch| StoreError::Corrupt {
            digest: *digest,
            path: self.blob_path(digest),
            problem: format!("its content hashes to {}", mismatch.actual),
        })
    }

    /// The root trees recorded by imports, in no particular order.
    pub fn recorded_trees(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.root.join("trees");
        let mut trees = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io("list", &dir))? {
            let entry = entry.map_err(StoreError::io("list", &dir))?;
            let name = entry.file_name();
            // Names are "<hex>-<size>"; anything else is not ours and is ignored.
            if let Some(digest) = name
                .to_str()
                .and_then(|n| n.replacen('-', "/", 1).parse().ok())
            {
                trees.push(digest);
            }
        }
        Ok(trees)
    }

    /// Renames stale staging dirs into the trash and empties the trash on a
    /// background thread: cleanup never runs on a caller's path (deleting 10k files
    /// can take 20 s here). Staging dirs of this boot whose process is alive stay.
    fn collect_leftovers(&self) {
        let staging = self.root.join("staging");
        let trash = self.root.join("trash");
        if let Ok(entries) = std::fs::read_dir(&staging) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !self.staging_is_live(&name) {
                    let _ = std::fs::rename(entry.path(), trash.join(&name));
                }
            }
        }
        let has_trash = std::fs::read_dir(&trash)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if has_trash {
            self.empty_trash_in_background();
        }
    }

    /// A new empty directory to move objects into (gc), among the staging dirs:
    /// not in the trash, whose emptier would remove it while it fills. Hand it to
    /// [`Store::trash`] when done.
    pub(crate) fn new_sweep_dir(&self) -> Result<PathBuf, StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Named like a transaction's (`<boot>-<pid>-<n>`), so a crash leaves it to
        // the next open's collection.
        let name = format!(
            "{}-{}-gc{}",
            self.boot_id,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.root.join("staging").join(name);
        std::fs::create_dir(&dir).map_err(StoreError::io("create", &dir))?;
        Ok(dir)
    }

    /// Moves the directory `dir` (under the store) into the trash, emptied in the
    /// background.
    pub(crate) fn trash(&self, dir: &Path) {
        if let Some(name) = dir.file_name() {
            let _ = std::fs::rename(dir, self.root.join("trash").join(name));
        }
        self.empty_trash_in_background();
    }

    /// Empties the trash on a background thread: one at a time, which keeps
    /// going while more arrives, so a burst of transactions starts one thread.
    pub(crate) fn empty_trash_in_background(&self) {
        if self
            .emptying
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let trash = self.root.join("trash");
        let emptying = self.emptying.clone();
        std::thread::spawn(move || {
            loop {
                empty_trash(&trash);
                emptying.store(false, std::sync::atomic::Ordering::Release);
                let more = std::fs::read_dir(&trash).is_ok_and(|mut d| d.next().is_some());
                // Whatever arrived after the last pass is this thread's again,
                // unless another thread has taken it on.
                if !more || emptying.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// A staging dir is live if it belongs to a running process of this boot.
    fn staging_is_live(&self, name: &OsStr) -> bool {
        let Some(name) = name.to_str() else {
            return false;
        };
        let mut parts = name.rsplitn(3, '-');
        let (_seq, pid, boot) = (parts.next(), parts.next(), parts.next());
        boot == Some(self.boot_id.as_str())
            && pid.is_some_and(|pid| Path::new("/proc").join(pid).exists())
    }

    /// The bytes free for the daemon on the store's filesystem.
    pub fn available_bytes(&self) -> Result<u64, StoreError> {
        let st = rustix::fs::fstatvfs(self.cas_fd())
            .map_err(|e| StoreError::io("read the free space of", self.root())(e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    pub(crate) fn cas_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.cas.as_fd()
    }

    pub(crate) fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// Whether files created with `mode` come out with fewer bits (the umask).
    pub(crate) fn umask_strips(&self, mode: u32) -> bool {
        mode & self.umask != 0
    }
}

/// `blobs/ab/abcd…` relative to the store root.
pub(crate) fn relative_path(kind: ObjectKind, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    PathBuf::from(kind.dir()).join(&hex[..2]).join(hex)
}

/// The umask, from `/proc/self/status` (setting it to read it back would race with
/// other threads creating files). If it cannot be read, assume the strictest.
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
        })
        .unwrap_or(0o777)
}

fn create_layout(root: &Path) -> Result<(), StoreError> {
    for dir in ["staging", "trash", "trees"] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(StoreError::io("create", &path))?;
    }
    // The fan-out dirs are made once, so publishing an object never needs a mkdir.
    for kind in [ObjectKind::Blob, ObjectKind::Exec] {
        for byte in 0..=255u8 {
            let path = root.join(kind.dir()).join(format!("{byte:02x}"));
            std::fs::create_dir_all(&path).map_err(StoreError::io("create", &path))?;
        }
    }
    Ok(())
}

fn empty_trash(trash: &Path) {
    if let Ok(entries) = std::fs::read_dir(trash) {
        for entry in entries.flatten() {
            let path = entry.path();
            make_writable(&path);
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Staged objects are read-only files in writable dirs, so they can be removed as is;
/// this only guards against a dir left read-only by an interrupted operation.
fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.is_dir()
        && meta.permissions().mode() & 0o200 == 0
    {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
    }
}
