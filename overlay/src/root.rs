//! The state every backend shares: the snapshotter's directory, its records, the
//! store, the write lock and per-snapshot locks, the trash, and the checks that do
//! not depend on the backend (keys, parents, children, mounts, orphans).

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use treediff::{CheckoutMode, CheckoutOptions, Store};

use crate::error::SnapshotError;
use crate::info::{Info, Kind, Owner, validate_key};
use crate::layer::ReadStats;
use crate::records::RecordStore;
use crate::snapshotter::ChangeSet;
use crate::trash::Trash;
use crate::txn::Txn;

/// What a [`Snapshotter::cleanup`](crate::Snapshotter::cleanup) removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cleaned {
    /// Directories under `snapshots/` that no record names.
    pub orphans: Vec<PathBuf>,
    /// Mounts of orphans that were unmounted first.
    pub unmounted: Vec<PathBuf>,
    /// Orphans kept because a mount on or of them could not be unmounted (in
    /// use, or not the mount the table listed any more), with why: collected
    /// at a later cleanup.
    pub left: Vec<(PathBuf, String)>,
}

/// What a snapshot's own directory holds on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Bytes allocated (blocks × 512).
    pub bytes: u64,
    /// Files, directories and symlinks.
    pub inodes: u64,
}

#[derive(Debug)]
pub(crate) struct SnapshotRoot {
    /// `<root>/snapshots`: one directory per snapshot, named by its id.
    pub snapshots: PathBuf,
    pub records: Arc<dyn RecordStore>,
    pub store: Arc<Store>,
    pub trash: Trash,
    write_lock: Mutex<()>,
    key_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl SnapshotRoot {
    /// Opens (creating) the snapshotter directory `dir`, and starts emptying its
    /// trash.
    pub fn open(
        dir: &Path,
        records: Arc<dyn RecordStore>,
        store: Arc<Store>,
    ) -> Result<SnapshotRoot, SnapshotError> {
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(SnapshotError::io("", "create", &snapshots))?;
        let trash_dir = dir.join("trash");
        let trash =
            Trash::open(trash_dir.clone()).map_err(SnapshotError::io("", "create", trash_dir))?;
        trash.empty_in_background();
        Ok(SnapshotRoot {
            snapshots,
            records,
            store,
            trash,
            write_lock: Mutex::new(()),
            key_locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn begin(&self) -> Txn<'_> {
        Txn::begin(
            self,
            self.write_lock.lock().unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// A fresh directory name: time, process and a counter, never reused.
    pub fn new_id(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{nanos:x}-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The directory of the snapshot with this id.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.snapshots.join(id)
    }

    /// The lock held while a snapshot's layer is read or reverted.
    pub fn key_lock(&self, key: &str) -> Arc<Mutex<()>> {
        self.key_locks
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// A committed record by key, for reads outside a transaction.
    pub fn get(&self, key: &str) -> Result<Info, SnapshotError> {
        self.records
            .get(key)
            .map_err(SnapshotError::Records)?
            .ok_or_else(|| SnapshotError::NotFound {
                key: key.to_owned(),
            })
    }

    /// The record of the active snapshot `key`, for `op`.
    pub fn get_active(&self, op: &'static str, key: &str) -> Result<Info, SnapshotError> {
        let info = self.get(key)?;
        if info.kind != Kind::Active {
            return Err(SnapshotError::WrongKind {
                op,
                key: key.to_owned(),
                kind: info.kind,
                wanted: "an active snapshot",
            });
        }
        Ok(info)
    }

    /// The record of `key`, which must be an active snapshot or a view.
    pub fn get_mountable(&self, key: &str) -> Result<Info, SnapshotError> {
        let info = self.get(key)?;
        if info.kind == Kind::Committed {
            return Err(SnapshotError::WrongKind {
                op: "mount",
                key: key.to_owned(),
                kind: info.kind,
                wanted: "an active snapshot or a view",
            });
        }
        Ok(info)
    }

    /// Removes `key` in `txn`: its record now, its directory once `txn` commits.
    pub fn remove(&self, txn: &mut Txn<'_>, key: &str) -> Result<(), SnapshotError> {
        let info = txn.get(key)?.ok_or_else(|| SnapshotError::NotFound {
            key: key.to_owned(),
        })?;
        self.check_removable(txn, &info)?;
        txn.delete(key);
        txn.doom(self.dir(&info.id));
        Ok(())
    }

    /// Calls `visit` for every committed record.
    pub fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotError> {
        for info in self.records.list().map_err(SnapshotError::Records)? {
            visit(&info);
        }
        Ok(())
    }

    /// Reads a snapshot's content with `read` into a store transaction, makes it
    /// durable, and diffs it against `parent_tree` (the empty tree when `None`).
    pub fn change_set(
        &self,
        key: &str,
        parent_tree: Option<treediff::Digest>,
        read: impl FnOnce(
            &treediff::StoreTxn<'_>,
        ) -> Result<(treediff::Digest, ReadStats), SnapshotError>,
    ) -> Result<ChangeSet, SnapshotError> {
        let txn = self.store.begin().map_err(SnapshotError::store(key))?;
        let empty = treediff::Dir::default()
            .write(&txn)
            .map_err(SnapshotError::store(key))?;
        let (tree, stats) = read(&txn)?;
        txn.commit().map_err(SnapshotError::store(key))?;
        let parent_tree = parent_tree.unwrap_or(empty);
        let changes = treediff::diff::changes(&self.store, parent_tree, tree)
            .map_err(SnapshotError::tree(key, "diff against the parent"))?;
        Ok(ChangeSet {
            parent_tree,
            tree,
            changes,
            stats,
        })
    }

    /// Checks that `key` is valid and free in `txn`.
    pub fn check_new_key(&self, txn: &Txn<'_>, key: &str) -> Result<(), SnapshotError> {
        txn.check_root(self);
        validate_key(key).map_err(|problem| SnapshotError::InvalidKey {
            key: key.to_owned(),
            problem,
        })?;
        if txn.get(key)?.is_some() {
            return Err(SnapshotError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        Ok(())
    }

    /// The record of `key`, which must be of kind `kind` for `op`.
    pub fn expect(
        &self,
        txn: &Txn<'_>,
        op: &'static str,
        key: &str,
        kind: Kind,
    ) -> Result<Info, SnapshotError> {
        let info = txn.get(key)?.ok_or_else(|| SnapshotError::NotFound {
            key: key.to_owned(),
        })?;
        if info.kind != kind {
            return Err(SnapshotError::WrongKind {
                op,
                key: key.to_owned(),
                kind: info.kind,
                wanted: match kind {
                    Kind::Active => "an active snapshot",
                    Kind::View => "a view",
                    Kind::Committed => "a committed snapshot",
                },
            });
        }
        Ok(info)
    }

    /// The chain below a snapshot whose parent is `parent`: the parent first, then
    /// its parent, down to the base.
    pub fn chain(
        &self,
        parent: Option<&str>,
        get: impl Fn(&str) -> Result<Option<Info>, SnapshotError>,
    ) -> Result<Vec<Info>, SnapshotError> {
        let mut chain = Vec::new();
        let mut next = parent.map(str::to_owned);
        while let Some(key) = next {
            let info = get(&key)?.ok_or_else(|| SnapshotError::NotFound { key: key.clone() })?;
            next = info.parent.clone();
            chain.push(info);
        }
        Ok(chain)
    }

    /// Refuses to remove `info` while other snapshots sit on it or a mount uses
    /// its directory.
    pub fn check_removable(&self, txn: &Txn<'_>, info: &Info) -> Result<(), SnapshotError> {
        let children: Vec<String> = txn
            .list()?
            .into_iter()
            .filter(|i| i.parent.as_deref() == Some(info.key.as_str()))
            .map(|i| i.key)
            .collect();
        if !children.is_empty() {
            return Err(SnapshotError::HasChildren {
                key: info.key.clone(),
                children,
            });
        }
        self.check_unmounted(info)
    }

    /// Refuses when a mount (kernel overlay, bind) uses the snapshot's
    /// directory, or a fuse-overlayfs server of this process serves it.
    pub fn check_unmounted(&self, info: &Info) -> Result<(), SnapshotError> {
        let dir = self.dir(&info.id);
        let table = crate::sys::mount_table().map_err(SnapshotError::io(
            &info.key,
            "read the mount table for",
            &dir,
        ))?;
        if let Some(mount) = table.iter().find(|m| m.uses(&dir)) {
            return Err(SnapshotError::Busy {
                key: info.key.clone(),
                detail: format!("its layer is mounted at {}", mount.target.display()),
            });
        }
        if let Some(view) = crate::sys::fuse::views_using(&dir).first() {
            let server = match view.pid {
                Some(pid) => format!("fuse-overlayfs (pid {pid})"),
                None => "fuse-overlayfs (started before this daemon)".to_owned(),
            };
            return Err(SnapshotError::Busy {
                key: info.key.clone(),
                detail: format!("{server} serves its layer at {}", view.path.display()),
            });
        }
        Ok(())
    }

    /// Collects directories that no record names (left by a crash between making
    /// them and the caller's commit), unmounting the mounts that use them (kernel
    /// mounts found in the mount table, and fuse-overlayfs views this process
    /// recorded), and empties the trash.
    pub fn cleanup(&self) -> Result<Cleaned, SnapshotError> {
        let txn = self.begin();
        let ids: HashSet<String> = txn.list()?.into_iter().map(|i| i.id).collect();
        let mut cleaned = Cleaned::default();
        let entries = std::fs::read_dir(&self.snapshots).map_err(SnapshotError::io(
            "",
            "list",
            &self.snapshots,
        ))?;
        let table = crate::sys::mount_table().map_err(SnapshotError::io(
            "",
            "read the mount table for",
            &self.snapshots,
        ))?;
        for entry in entries {
            let entry = entry.map_err(SnapshotError::io("", "list", &self.snapshots))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.contains(&name) {
                continue;
            }
            let path = entry.path();
            let mut targets: Vec<PathBuf> = table
                .iter()
                .filter(|m| m.uses(&path) || m.target.starts_with(&path))
                .map(|m| m.target.clone())
                .collect();
            targets.sort_unstable();
            targets.dedup();
            let unmounted = || -> Result<(), SnapshotError> {
                for target in targets {
                    // Wherever it is attached (a user's mount point, perhaps):
                    // by the id the table gives, never by what the path leads
                    // to now.
                    if crate::sys::unmount_listed(&target, &path)? {
                        cleaned.unmounted.push(target);
                    }
                }
                for view in crate::sys::fuse::views_using(&path) {
                    crate::sys::unmount_checked(&view.path, view.mount_id)?;
                    cleaned.unmounted.push(view.path);
                }
                Ok(())
            };
            // One orphan that cannot be unmounted (a user may stack a mount of
            // their own on a view they own) must not stop the others', nor
            // the daemon's start.
            if let Err(e) = unmounted() {
                cleaned.left.push((path, e.to_string()));
                continue;
            }
            self.trash
                .put(&path)
                .map_err(SnapshotError::io("", "move to the trash", &path))?;
            cleaned.orphans.push(path);
        }
        drop(txn);
        self.trash.empty_in_background();
        Ok(cleaned)
    }

    /// The space and inodes under `key`'s directory.
    pub fn usage(&self, info: &Info) -> Result<Usage, SnapshotError> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.dir(&info.id);
        let mut usage = Usage::default();
        if !dir.exists() {
            return Ok(usage);
        }
        for entry in walkdir::WalkDir::new(&dir)
            .same_file_system(true)
            .min_depth(1)
        {
            let entry =
                entry.map_err(|e| SnapshotError::io(&info.key, "measure", &dir)(e.into()))?;
            let meta = entry
                .metadata()
                .map_err(|e| SnapshotError::io(&info.key, "measure", entry.path())(e.into()))?;
            usage.bytes += meta.blocks() * 512;
            usage.inodes += 1;
        }
        Ok(usage)
    }
}

/// Makes `fs` in `parent` (a directory of the snapshotter's own, which no user
/// can change), the directory that becomes a view's root (an upper, an empty
/// mirror), and gives it to `owner`, if any, who must be able to write it. 0755
/// like the checkouts under it, whatever the process's umask (a daemon's is
/// 077), since the view shows its mode. Through descriptors opened without
/// following a symlink, never by path. Trees checked out for an owner are given
/// by the checkout itself, entry by entry ([`treediff::CheckoutOptions::owner`]).
pub(crate) fn create_view_root(
    key: &str,
    parent: &Path,
    owner: Option<Owner>,
) -> Result<(), SnapshotError> {
    let path = parent.join("fs");
    let parent_fd = std::fs::File::open(parent).map_err(SnapshotError::io(key, "open", parent))?;
    let owner = owner.map(|o| (o.uid, o.gid));
    treediff::safe_fs::make_dir_at(parent_fd.as_fd(), "fs".as_ref(), 0o755, owner)
        .map_err(|e| SnapshotError::io(key, "create", &path)(e.into()))?;
    Ok(())
}

/// The checkout options that give every entry to `owner`, if any.
pub(crate) fn checkout_options(mode: CheckoutMode, owner: Option<Owner>) -> CheckoutOptions {
    CheckoutOptions {
        mode,
        owner: owner.map(|o| (o.uid, o.gid)),
    }
}

/// Seconds since the epoch, for records.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
