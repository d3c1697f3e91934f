//! The trash: removing a snapshot's directory is a rename into `<root>/trash`
//! (O(1) for the caller), and the deletion happens on a background thread. A crash
//! leaves entries in the trash, which the next [`Trash::empty_in_background`]
//! deletes: removal is idempotent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A directory of things waiting to be deleted.
#[derive(Debug, Clone)]
pub(crate) struct Trash {
    dir: PathBuf,
    /// Whether a background thread is emptying it (one at a time is enough).
    emptying: Arc<AtomicBool>,
}

impl Trash {
    /// The trash in `dir`, created if missing.
    pub fn open(dir: PathBuf) -> std::io::Result<Trash> {
        std::fs::create_dir_all(&dir)?;
        Ok(Trash {
            dir,
            emptying: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Moves `path` (on the trash's filesystem) into the trash. A missing `path` is
    /// not an error: after a crash, removal is simply done again.
    pub fn put(&self, path: &Path) -> std::io::Result<()> {
        let name = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match std::fs::rename(path, self.dir.join(name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Deletes everything in the trash on a background thread, unless one is at it
    /// already (it looks again before it stops).
    pub fn empty_in_background(&self) {
        if self.emptying.swap(true, Ordering::AcqRel) {
            return;
        }
        let trash = self.clone();
        std::thread::spawn(move || {
            loop {
                let removed = trash.empty();
                trash.emptying.store(false, Ordering::Release);
                // What could not be deleted stays for the next attempt; what was
                // put in meanwhile is deleted now.
                let more = std::fs::read_dir(&trash.dir).is_ok_and(|mut d| d.next().is_some());
                if removed == 0 || !more || trash.emptying.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// Deletes everything in the trash now; what cannot be deleted stays for the
    /// next attempt. Returns how many entries went.
    pub fn empty(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|entry| remove_tree(&entry.path()).is_ok())
            .count()
    }
}

/// Deletes `path` and everything under it, without following symlinks. Overlay
/// leaves its `work/work` directory with mode 000: a directory that cannot be read
/// is made readable by its owner and tried again.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
                if entry.file_type().is_dir() {
                    let _ = std::fs::set_permissions(
                        entry.path(),
                        std::fs::Permissions::from_mode(0o700),
                    );
                }
            }
            std::fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
