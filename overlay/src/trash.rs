//! The trash: removing a snapshot's directory is a rename into `<root>/trash`
//! (O(1) for the caller), and the deletion happens on a background thread. A crash
//! leaves entries in the trash, which the next [`Trash::empty_in_background`]
//! deletes: removal is idempotent.

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
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
/// leaves its `work/work` directory with mode 000, which a daemon without
/// `CAP_DAC_OVERRIDE` cannot list: every directory is then made its owner's to
/// enter (0700) and the removal tried again.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            open_up(path)?;
            std::fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes `path` and every directory below it 0700, through descriptors: a
/// layer's owner may still hold a descriptor inside it (a mirror's view is the
/// layer itself) and swap a directory for a symlink meanwhile, and a chmod by
/// path would follow it. Each directory is opened with `O_PATH` (which needs
/// no permission on it), not followed, and changed through its own
/// `/proc/self/fd` link.
fn open_up(path: &Path) -> std::io::Result<()> {
    use std::ffi::OsStr;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let parent = std::rc::Rc::new(treediff::safe_fs::open_dir_no_symlinks(parent)?);
    let mut todo = vec![(parent, name.to_owned())];
    while let Some((dir, name)) = todo.pop() {
        let Ok(handle) = rustix::fs::openat(
            &dir,
            &name,
            rustix::fs::OFlags::PATH
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) else {
            continue;
        };
        let link = treediff::safe_fs::proc_fd_path(handle.as_fd(), None);
        if rustix::fs::chmod(&link, rustix::fs::Mode::from_raw_mode(0o700)).is_err() {
            continue;
        }
        // The very directory changed, opened again for listing through its
        // handle (an O_PATH descriptor serves as the directory of `openat`).
        let Ok(opened) = treediff::safe_fs::open_dir_at(handle.as_fd(), OsStr::new(".")) else {
            continue;
        };
        let children: Vec<std::ffi::OsString> = crate::sys::list_dir(opened.as_fd())?
            .into_iter()
            .filter(|(_, kind)| {
                matches!(
                    kind,
                    rustix::fs::FileType::Directory | rustix::fs::FileType::Unknown
                )
            })
            .map(|(child, _)| OsStr::from_bytes(&child).to_owned())
            .collect();
        let opened = std::rc::Rc::new(opened);
        for child in children {
            todo.push((opened.clone(), child));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn opening_up_a_tree_changes_its_directories_and_nothing_a_symlink_leads_to() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::set_permissions(&victim, PermissionsExt::from_mode(0o751)).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/file"), "x").unwrap();
        std::fs::set_permissions(tree.join("a/file"), PermissionsExt::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink(&victim, tree.join("a/link")).unwrap();
        for d in ["a/b", "a", ""] {
            std::fs::set_permissions(tree.join(d), PermissionsExt::from_mode(0o000)).unwrap();
        }
        open_up(&tree).unwrap();
        assert_eq!(mode(&tree), 0o700);
        assert_eq!(mode(&tree.join("a")), 0o700);
        assert_eq!(mode(&tree.join("a/b")), 0o700);
        assert_eq!(mode(&tree.join("a/file")), 0o640);
        assert_eq!(mode(&victim), 0o751);
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(victim.exists());
    }
}
