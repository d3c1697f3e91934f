//! The layered backends: kernel overlayfs and fuse-overlayfs. Both keep each
//! snapshot as an upper directory over the layers of its parent chain, and differ
//! only in how the layers are mounted and how the upper marks whiteouts and opaque
//! directories.
//!
//! # On disk
//!
//! `snapshots/<id>/fs` is the snapshot's layer (an active snapshot's upper, or a
//! committed layer); `snapshots/<id>/work` is overlay's work directory, trashed at
//! commit; `snapshots/<id>/flat` is a committed snapshot's whole tree checked out
//! in one directory, made when a chain on it grows past [`MAX_LOWERS`] layers (the
//! chain is squashed into that one lower). A base made by `commit_tree` holds its
//! tree checked out in `fs`.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use treediff::{CheckoutMode, Digest, Store};

use crate::error::SnapshotError;
use crate::info::{Content, Info, Kind, Owner};
use crate::layer::{LayerFormat, read_layer};
use crate::plan::{MountPlan, OverlayPlan, Upper};
use crate::probe::BackendKind;
use crate::records::RecordStore;
use crate::root::{Cleaned, SnapshotRoot, Usage, checkout_options, create_view_root, now_secs};
use crate::snapshotter::{ChangeOptions, ChangeSet, Snapshotter};
use crate::txn::Txn;

/// Lowers past which a chain is squashed into one checked-out layer. The kernel
/// takes up to 500 with `lowerdir+`; every layer costs lookups in every directory,
/// so chains are kept much shorter.
pub const MAX_LOWERS: usize = 128;

/// The mount driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Kernel overlayfs; `userxattr` when mounting in a user namespace.
    Kernel {
        /// Pass `userxattr` (overlay xattrs in `user.`).
        userxattr: bool,
    },
    /// fuse-overlayfs.
    Fuse,
}

/// Options of a layered snapshotter.
#[derive(Clone, Copy, Debug)]
pub struct LayeredOptions {
    /// How to mount.
    pub driver: Driver,
    /// How `commit_tree` and squashing put files in place. Reflink (the default)
    /// gives ordinary writable files, cloned where the filesystem can; hardlinks are
    /// fastest but show store objects' read-only modes in the view.
    pub checkout: CheckoutMode,
    /// See [`MAX_LOWERS`].
    pub max_lowers: usize,
    /// Who the layers belong to, if not the snapshotter's user (which must then
    /// be root); needs a checkout mode that copies or clones.
    pub owner: Option<Owner>,
}

impl LayeredOptions {
    /// Defaults for a driver.
    pub fn new(driver: Driver) -> LayeredOptions {
        LayeredOptions {
            driver,
            checkout: CheckoutMode::Reflink,
            max_lowers: MAX_LOWERS,
            owner: None,
        }
    }
}

/// Snapshots as overlay layers; see the module doc.
#[derive(Debug)]
pub struct LayeredSnapshotter {
    root: SnapshotRoot,
    options: LayeredOptions,
}

impl LayeredSnapshotter {
    /// Opens the snapshotter in `dir` (created if missing), with `records` holding
    /// its records and `store` its trees.
    pub fn open(
        dir: &Path,
        records: Arc<dyn RecordStore>,
        store: Arc<Store>,
        options: LayeredOptions,
    ) -> Result<LayeredSnapshotter, SnapshotError> {
        if options.owner.is_some() && options.checkout == CheckoutMode::Hardlink {
            return Err(SnapshotError::Unavailable {
                backend: "layered",
                reason: "layers checked out as hard links share the store's objects and cannot be given to another owner; use reflink or copy checkouts".to_owned(),
            });
        }
        Ok(LayeredSnapshotter {
            root: SnapshotRoot::open(dir, records, store)?,
            options,
        })
    }

    fn fs(&self, info: &Info) -> PathBuf {
        self.root.dir(&info.id).join("fs")
    }

    fn format(&self) -> LayerFormat {
        match self.options.driver {
            Driver::Kernel { userxattr } => LayerFormat::Kernel { userxattr },
            Driver::Fuse => LayerFormat::Fuse,
        }
    }

    /// The mount plan of `info`, whose parent chain (parent first) is `chain`.
    fn plan(&self, info: &Info, chain: &[Info]) -> Result<MountPlan, SnapshotError> {
        let mut lowers: Vec<PathBuf> = chain.iter().map(|i| self.fs(i)).collect();
        if lowers.len() > self.options.max_lowers {
            lowers = vec![self.flat(&chain[0])?];
        }
        let upper = (info.kind == Kind::Active).then(|| Upper {
            dir: self.fs(info),
            work: self.root.dir(&info.id).join("work"),
        });
        if lowers.is_empty() {
            return Ok(MountPlan::Bind {
                source: self.fs(info),
                read_only: false,
            });
        }
        if upper.is_none() && lowers.len() == 1 {
            return Ok(MountPlan::Bind {
                source: lowers.remove(0),
                read_only: true,
            });
        }
        let overlay = OverlayPlan {
            lowers,
            upper,
            userxattr: matches!(self.options.driver, Driver::Kernel { userxattr: true }),
        };
        Ok(match self.options.driver {
            Driver::Kernel { .. } => MountPlan::Overlay(overlay),
            Driver::Fuse => MountPlan::Fuse(overlay),
        })
    }

    /// The squashed layer of the committed snapshot `info`: its tree checked out in
    /// `<id>/flat`, made once (in a temporary directory renamed into place, so a
    /// crash leaves no half-made layer in use).
    fn flat(&self, info: &Info) -> Result<PathBuf, SnapshotError> {
        let flat = self.root.dir(&info.id).join("flat");
        if flat.exists() {
            return Ok(flat);
        }
        let tree = info.tree.expect("committed snapshots record their tree");
        let tmp = self
            .root
            .dir(&info.id)
            .join(format!("flat-{}", self.root.new_id()));
        self.checkout(&info.key, tree, &tmp)?;
        crate::sys::syncfs(&tmp).map_err(SnapshotError::io(&info.key, "sync", &tmp))?;
        std::fs::rename(&tmp, &flat).map_err(SnapshotError::io(
            &info.key,
            "rename into place",
            &flat,
        ))?;
        Ok(flat)
    }

    /// Checks `tree` out into `target`, every entry given to the owner as it is
    /// written (no walk by path afterwards, which a swapped directory could lead
    /// out of the layer).
    fn checkout(&self, key: &str, tree: Digest, target: &Path) -> Result<(), SnapshotError> {
        let options = checkout_options(self.options.checkout, self.options.owner);
        treediff::checkout(&self.root.store, tree, target, &options).map_err(|source| {
            SnapshotError::Checkout {
                key: key.to_owned(),
                source: Box::new(source),
            }
        })?;
        Ok(())
    }

    fn chain_in(&self, txn: &Txn<'_>, parent: Option<&str>) -> Result<Vec<Info>, SnapshotError> {
        self.root.chain(parent, |k| txn.get(k))
    }

    /// Reads the committed active snapshot `key`'s layer; the caller holds its lock.
    fn read_active(
        &self,
        key: &str,
        options: &ChangeOptions<'_>,
    ) -> Result<ChangeSet, SnapshotError> {
        let info = self.root.get_active("read the changes of", key)?;
        let parent = info
            .parent
            .as_deref()
            .map(|p| self.root.get(p))
            .transpose()?;
        self.read(&info, parent.as_ref(), options)
    }

    /// Reads `info`'s layer: the new tree, made durable, and the changes.
    fn read(
        &self,
        info: &Info,
        parent: Option<&Info>,
        options: &ChangeOptions<'_>,
    ) -> Result<ChangeSet, SnapshotError> {
        let key = &info.key;
        if self.options.driver == Driver::Fuse {
            // fuse-overlayfs mounts cache writes in the kernel (writeback cache):
            // flush them to the upper before reading it.
            let dir = self.root.dir(&info.id);
            crate::sys::fuse::flush_views_using(&dir).map_err(SnapshotError::io(
                key,
                "flush the writes of the views of",
                &dir,
            ))?;
        }
        self.read_dir(info, &self.fs(info), parent.and_then(|p| p.tree), options)
    }

    /// Reads the layer `dir` of `info` as edits of `parent_tree`.
    fn read_dir(
        &self,
        info: &Info,
        dir: &Path,
        parent_tree: Option<Digest>,
        options: &ChangeOptions<'_>,
    ) -> Result<ChangeSet, SnapshotError> {
        let key = &info.key;
        self.root.change_set(key, parent_tree, |txn| {
            read_layer(
                txn,
                key,
                dir,
                parent_tree,
                self.format(),
                info.content.capture_mode(),
                options.ignore_patterns,
            )
        })
    }
}

impl Snapshotter for LayeredSnapshotter {
    fn kind(&self) -> BackendKind {
        match self.options.driver {
            Driver::Kernel { .. } => BackendKind::Overlayfs,
            Driver::Fuse => BackendKind::FuseOverlayfs,
        }
    }

    fn begin(&self) -> Txn<'_> {
        self.root.begin()
    }

    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        self.root.get(key)
    }

    fn mounts(&self, key: &str) -> Result<MountPlan, SnapshotError> {
        let info = self.root.get_mountable(key)?;
        let chain = self.root.chain(info.parent.as_deref(), |k| {
            self.root.records.get(k).map_err(SnapshotError::Records)
        })?;
        self.plan(&info, &chain)
    }

    fn prepare(
        &self,
        txn: &mut Txn<'_>,
        key: &str,
        parent: Option<&str>,
        content: Content,
    ) -> Result<MountPlan, SnapshotError> {
        self.root.check_new_key(txn, key)?;
        if let Some(parent) = parent {
            self.root
                .expect(txn, "prepare on", parent, Kind::Committed)?;
        }
        let chain = self.chain_in(txn, parent)?;
        let info = Info {
            key: key.to_owned(),
            id: self.root.new_id(),
            kind: Kind::Active,
            parent: parent.map(str::to_owned),
            tree: None,
            content,
            created: now_secs(),
        };
        let dir = self.root.dir(&info.id);
        std::fs::create_dir(&dir).map_err(SnapshotError::io(key, "create", &dir))?;
        txn.created(dir.clone());
        // The upper's root is the view's root: its owner must be able to write it.
        create_view_root(key, &dir, self.options.owner)?;
        let work = dir.join("work");
        std::fs::create_dir(&work).map_err(SnapshotError::io(key, "create", &work))?;
        let plan = self.plan(&info, &chain)?;
        txn.put(info);
        Ok(plan)
    }

    fn view(&self, txn: &mut Txn<'_>, key: &str, parent: &str) -> Result<MountPlan, SnapshotError> {
        self.root.check_new_key(txn, key)?;
        self.root.expect(txn, "view", parent, Kind::Committed)?;
        let chain = self.chain_in(txn, Some(parent))?;
        let info = Info {
            key: key.to_owned(),
            id: self.root.new_id(),
            kind: Kind::View,
            parent: Some(parent.to_owned()),
            tree: None,
            content: chain[0].content,
            created: now_secs(),
        };
        let plan = self.plan(&info, &chain)?;
        txn.put(info);
        Ok(plan)
    }

    fn commit(&self, txn: &mut Txn<'_>, name: &str, key: &str) -> Result<Info, SnapshotError> {
        let info = self.root.expect(txn, "commit", key, Kind::Active)?;
        self.root.check_new_key(txn, name)?;
        self.root.check_unmounted(&info)?;
        let lock = self.root.key_lock(key);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let parent = match &info.parent {
            Some(p) => Some(self.root.expect(txn, "commit on", p, Kind::Committed)?),
            None => None,
        };
        let read = self.read(&info, parent.as_ref(), &ChangeOptions::default())?;
        let committed = Info {
            key: name.to_owned(),
            kind: Kind::Committed,
            tree: Some(read.tree),
            created: now_secs(),
            ..info.clone()
        };
        txn.delete(key);
        txn.put(committed.clone());
        txn.doom(self.root.dir(&info.id).join("work"));
        // The upper, written by whoever edited the view, becomes a lower.
        txn.sync_before_commit();
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
        let info = Info {
            key: name.to_owned(),
            id: self.root.new_id(),
            kind: Kind::Committed,
            parent: None,
            tree: Some(tree),
            content,
            created: now_secs(),
        };
        let dir = self.root.dir(&info.id);
        std::fs::create_dir(&dir).map_err(SnapshotError::io(name, "create", &dir))?;
        txn.created(dir);
        self.checkout(name, tree, &self.fs(&info))?;
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
        let info = self.root.get(key)?;
        let Some(recorded) = info.tree.filter(|_| info.kind == Kind::Committed) else {
            return Ok(None);
        };
        let parent = info
            .parent
            .as_deref()
            .map(|p| self.root.get(p))
            .transpose()?;
        let own = self.read(&info, parent.as_ref(), &ChangeOptions::default())?;
        if own.tree != recorded {
            return Ok(Some(own.tree));
        }
        // The squashed copy, if one was made, holds the whole tree.
        let flat = self.root.dir(&info.id).join("flat");
        if flat.exists() {
            let whole = self.read_dir(&info, &flat, None, &ChangeOptions::default())?;
            if whole.tree != recorded {
                return Ok(Some(whole.tree));
            }
        }
        Ok(None)
    }

    fn renew(&self, txn: &mut Txn<'_>, key: &str) -> Result<Info, SnapshotError> {
        let info = self.root.expect(txn, "renew", key, Kind::Committed)?;
        let tree = info.tree.expect("committed snapshots record their tree");
        let renewed = Info {
            id: self.root.new_id(),
            parent: None,
            ..info.clone()
        };
        let dir = self.root.dir(&renewed.id);
        std::fs::create_dir(&dir).map_err(SnapshotError::io(key, "create", &dir))?;
        txn.created(dir);
        self.checkout(key, tree, &self.fs(&renewed))?;
        txn.put(renewed.clone());
        txn.doom(self.root.dir(&info.id));
        txn.sync_before_commit();
        Ok(renewed)
    }

    fn changes(&self, key: &str, options: &ChangeOptions<'_>) -> Result<ChangeSet, SnapshotError> {
        let lock = self.root.key_lock(key);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.read_active(key, options)
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
        let set = self.read_active(key, options)?;
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
