//! The mirror backend: each active snapshot is a real directory, a checkout of its
//! parent's tree cloned from the store's objects (reflink where the filesystem
//! can, else copied). It needs no privilege and no mount. Its changes are found by
//! capturing the whole directory with a stat cache, so a commit costs a stat per
//! file plus hashing what changed: O(tree), not O(changes) as on the overlay
//! backends.
//!
//! # On disk
//!
//! `snapshots/<id>/fs` is the view; `snapshots/<id>/statcache` its stat cache.
//! Committed snapshots are trees in the store and need no directory.
//!
//! # The seeded stat cache
//!
//! Right after the clone every file's digest is known from the tree, so the cache
//! is filled then, and the first commit does not hash the whole tree. An entry is
//! trusted only while the file's ctime is older than the entry's recording time;
//! that time is read from the filesystem's own clock (a probe file's ctime) once it
//! has moved past every cloned file's ctime. A write after the clone, even within
//! the same clock tick as the clone, therefore makes the file's entry untrusted.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use treediff::statcache::{FileId, StatRecord};
use treediff::{CaptureOptions, CheckoutMode, Digest, Dir, FileStatCache, Node, StatCache, Store};

use crate::error::SnapshotError;
use crate::info::{Content, Info, Kind, Owner};
use crate::plan::MountPlan;
use crate::probe::BackendKind;
use crate::records::RecordStore;
use crate::root::{Cleaned, SnapshotRoot, Usage, checkout_options, create_view_root, now_secs};
use crate::snapshotter::{ChangeOptions, ChangeSet, Snapshotter};
use crate::txn::Txn;

/// Snapshots as real directories; see the module doc.
#[derive(Debug)]
pub struct MirrorSnapshotter {
    root: SnapshotRoot,
    options: MirrorOptions,
}

/// Options of a mirror snapshotter.
#[derive(Clone, Copy, Debug, Default)]
pub struct MirrorOptions {
    /// Who the views belong to, if not the snapshotter's user (which must then be
    /// root).
    pub owner: Option<Owner>,
}

impl MirrorSnapshotter {
    /// Opens the snapshotter in `dir` (created if missing).
    pub fn open(
        dir: &Path,
        records: Arc<dyn RecordStore>,
        store: Arc<Store>,
        options: MirrorOptions,
    ) -> Result<MirrorSnapshotter, SnapshotError> {
        Ok(MirrorSnapshotter {
            root: SnapshotRoot::open(dir, records, store)?,
            options,
        })
    }

    fn fs(&self, info: &Info) -> PathBuf {
        self.root.dir(&info.id).join("fs")
    }

    fn stat_cache_path(&self, info: &Info) -> PathBuf {
        self.root.dir(&info.id).join("statcache")
    }

    /// Makes an active snapshot or a view: a clone of the parent's tree.
    fn make(
        &self,
        txn: &mut Txn<'_>,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        content: Content,
    ) -> Result<MountPlan, SnapshotError> {
        self.root.check_new_key(txn, key)?;
        let parent_info = match parent {
            Some(p) => Some(self.root.expect(
                txn,
                if kind == Kind::View {
                    "view"
                } else {
                    "prepare on"
                },
                p,
                Kind::Committed,
            )?),
            None => None,
        };
        let info = Info {
            key: key.to_owned(),
            id: self.root.new_id(),
            kind,
            parent: parent.map(str::to_owned),
            tree: None,
            content: parent_info.as_ref().map(|p| p.content).unwrap_or(content),
            created: now_secs(),
        };
        let dir = self.root.dir(&info.id);
        std::fs::create_dir(&dir).map_err(SnapshotError::io(key, "create", &dir))?;
        txn.created(dir);
        let fs = self.fs(&info);
        match parent_info.as_ref().and_then(|p| p.tree) {
            Some(tree) => {
                // Every entry is given to the owner as it is written; the seed
                // reads the ctimes that giving them set.
                let options = checkout_options(CheckoutMode::Reflink, self.options.owner);
                treediff::checkout(&self.root.store, tree, &fs, &options).map_err(|source| {
                    SnapshotError::Checkout {
                        key: key.to_owned(),
                        source: Box::new(source),
                    }
                })?;
                self.seed_stat_cache(&info, tree)?;
            }
            None => {
                create_view_root(key, &self.root.dir(&info.id), self.options.owner)?;
            }
        }
        let plan = MountPlan::Direct {
            path: fs,
            read_only: kind == Kind::View,
        };
        txn.put(info);
        Ok(plan)
    }

    /// Fills the stat cache of a fresh clone of `tree`; see the module doc.
    fn seed_stat_cache(&self, info: &Info, tree: Digest) -> Result<(), SnapshotError> {
        let fs = self.fs(info);
        let root = std::fs::File::open(&fs).map_err(SnapshotError::io(&info.key, "open", &fs))?;
        let mut entries = Vec::new();
        let mut newest_ctime = i64::MIN;
        self.seed_dir(
            info,
            root.as_fd(),
            tree,
            "",
            &mut entries,
            &mut newest_ctime,
        )?;
        let recorded_ns = self.clock_after(info, newest_ctime)?;
        for (_, record) in &mut entries {
            record.recorded_ns = recorded_ns;
        }
        let cache = FileStatCache::load(&self.stat_cache_path(info));
        cache.put(&entries);
        let path = self.stat_cache_path(info);
        cache
            .save()
            .map_err(SnapshotError::io(&info.key, "write the stat cache", path))
    }

    fn seed_dir(
        &self,
        info: &Info,
        dir: BorrowedFd<'_>,
        digest: Digest,
        rel: &str,
        out: &mut Vec<(FileId, StatRecord)>,
        newest_ctime: &mut i64,
    ) -> Result<(), SnapshotError> {
        let node = Dir::read(&self.root.store, digest, rel)
            .map_err(SnapshotError::tree(&info.key, "read the parent tree"))?;
        for entry in node.entries() {
            let child_rel = treediff::names::join(rel, &entry.name);
            let io = |op| SnapshotError::io(&info.key, op, self.fs(info).join(&child_rel));
            match &entry.node {
                Node::File { digest, .. } => {
                    let st = treediff::safe_fs::lstat_at(dir, OsStr::new(&entry.name))
                        .map_err(std::io::Error::from)
                        .map_err(io("stat"))?;
                    let ctime_ns = st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64;
                    *newest_ctime = (*newest_ctime).max(ctime_ns);
                    out.push((
                        FileId {
                            dev: st.st_dev,
                            ino: st.st_ino,
                        },
                        StatRecord {
                            size: st.st_size as u64,
                            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
                            ctime_ns,
                            recorded_ns: 0,
                            digest: *digest,
                        },
                    ));
                }
                Node::Dir { digest } => {
                    let fd = treediff::safe_fs::open_dir_at(dir, OsStr::new(&entry.name))
                        .map_err(std::io::Error::from)
                        .map_err(io("open"))?;
                    self.seed_dir(info, fd.as_fd(), *digest, &child_rel, out, newest_ctime)?;
                }
                Node::Symlink { .. } => {}
            }
        }
        Ok(())
    }

    /// A time from the filesystem's clock strictly after `ctime_ns`: the ctime of a
    /// probe file, touched until it has moved past.
    fn clock_after(&self, info: &Info, ctime_ns: i64) -> Result<i64, SnapshotError> {
        let path = self.root.dir(&info.id).join("clock");
        let file =
            std::fs::File::create(&path).map_err(SnapshotError::io(&info.key, "create", &path))?;
        loop {
            let st = rustix::fs::fstat(&file)
                .map_err(|e| SnapshotError::io(&info.key, "stat", &path)(e.into()))?;
            let now = st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64;
            if now > ctime_ns {
                return Ok(now);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            file.set_len(0)
                .map_err(SnapshotError::io(&info.key, "touch", &path))?;
            rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o644))
                .map_err(|e| SnapshotError::io(&info.key, "touch", &path)(e.into()))?;
        }
    }

    fn read(&self, info: &Info, options: &ChangeOptions<'_>) -> Result<ChangeSet, SnapshotError> {
        let key = &info.key;
        let parent_tree = match &info.parent {
            Some(p) => self.root.get(p)?.tree,
            None => None,
        };
        let cache = FileStatCache::load(&self.stat_cache_path(info));
        let capture = CaptureOptions {
            mode: info.content.capture_mode(),
            ignore_patterns: options.ignore_patterns,
            stat_cache: Some(&cache),
            ..CaptureOptions::default()
        };
        let set = self.root.change_set(key, parent_tree, |txn| {
            let (tree, stats) = treediff::capture(txn, &self.fs(info), &capture)
                .map_err(SnapshotError::capture(key))?;
            let stats = crate::layer::ReadStats {
                entries: stats.files + stats.dirs + stats.symlinks,
                hashed_files: stats.hashed_files,
                parent_dirs_read: 0,
            };
            Ok((tree, stats))
        })?;
        // A lost cache costs hashing next time, never a wrong digest.
        let _ = cache.save();
        Ok(set)
    }
}

impl Snapshotter for MirrorSnapshotter {
    fn kind(&self) -> BackendKind {
        BackendKind::Mirror
    }

    fn begin(&self) -> Txn<'_> {
        self.root.begin()
    }

    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        self.root.get(key)
    }

    fn mounts(&self, key: &str) -> Result<MountPlan, SnapshotError> {
        let info = self.root.get_mountable(key)?;
        Ok(MountPlan::Direct {
            path: self.fs(&info),
            read_only: info.kind == Kind::View,
        })
    }

    fn prepare(
        &self,
        txn: &mut Txn<'_>,
        key: &str,
        parent: Option<&str>,
        content: Content,
    ) -> Result<MountPlan, SnapshotError> {
        self.make(txn, key, parent, Kind::Active, content)
    }

    fn view(&self, txn: &mut Txn<'_>, key: &str, parent: &str) -> Result<MountPlan, SnapshotError> {
        self.make(txn, key, Some(parent), Kind::View, Content::Source)
    }

    fn commit(&self, txn: &mut Txn<'_>, name: &str, key: &str) -> Result<Info, SnapshotError> {
        let info = self.root.expect(txn, "commit", key, Kind::Active)?;
        self.root.check_new_key(txn, name)?;
        let lock = self.root.key_lock(key);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let read = self.read(&info, &ChangeOptions::default())?;
        let committed = Info {
            key: name.to_owned(),
            kind: Kind::Committed,
            tree: Some(read.tree),
            created: now_secs(),
            ..info.clone()
        };
        txn.delete(key);
        txn.put(committed.clone());
        txn.doom(self.root.dir(&info.id));
        Ok(committed)
    }

    fn commit_tree(
        &self,
        txn: &mut Txn<'_>,
        name: &str,
        tree: Digest,
        content: Content,
    ) -> Result<Info, SnapshotError> {
        self.root.check_new_key(txn, name)?;
        // Fails early, naming the snapshot, if the tree is not in the store.
        Dir::read(&self.root.store, tree, "")
            .map_err(SnapshotError::tree(name, "read the tree"))?;
        let info = Info {
            key: name.to_owned(),
            id: self.root.new_id(),
            kind: Kind::Committed,
            parent: None,
            tree: Some(tree),
            content,
            created: now_secs(),
        };
        txn.put(info.clone());
        Ok(info)
    }

    fn remove(&self, txn: &mut Txn<'_>, key: &str) -> Result<(), SnapshotError> {
        self.root.remove(txn, key)
    }

    fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotError> {
        self.root.walk(visit)
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        self.root.usage(&self.root.get(key)?)
    }

    fn cleanup(&self) -> Result<Cleaned, SnapshotError> {
        self.root.cleanup()
    }

    fn verify(&self, key: &str) -> Result<Option<Digest>, SnapshotError> {
        // A committed snapshot is its tree in the store: nothing on disk.
        self.root.get(key).map(|_| None)
    }

    fn renew(&self, txn: &mut Txn<'_>, key: &str) -> Result<Info, SnapshotError> {
        self.root.expect(txn, "renew", key, Kind::Committed)
    }

    fn changes(&self, key: &str, options: &ChangeOptions<'_>) -> Result<ChangeSet, SnapshotError> {
        let lock = self.root.key_lock(key);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let info = self.root.get_active("read the changes of", key)?;
        self.read(&info, options)
    }

    fn revert(
        &self,
        key: &str,
        view: BorrowedFd<'_>,
        shown: &Path,
        to: Option<Digest>,
        options: &ChangeOptions<'_>,
    ) -> Result<ChangeSet, SnapshotError> {
        let lock = self.root.key_lock(key);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let info = self.root.get(key)?;
        let set = self.read(&info, options)?;
        crate::revert::revert_to(
            &self.root.store,
            key,
            (view, shown),
            self.options.owner,
            set,
            to,
        )
    }
}
