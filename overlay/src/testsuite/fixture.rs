//! The fixture of the conformance suite: a store, records and a snapshotter in a
//! fresh directory, trees built from short specs, mounts that are undone when the
//! fixture is dropped, and the naive comparison every change set is checked with.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use treediff::{CaptureOptions, Digest, Store};

use crate::{ChangeOptions, ChangeSet, Content, FileRecords, Info, Owner, Snapshotter};

/// One entry of a tree spec.
#[derive(Clone, Copy, Debug)]
pub enum Spec<'a> {
    /// A file and its content.
    File(&'a str, &'a str),
    /// An executable file.
    Exec(&'a str, &'a str),
    /// An (empty) directory.
    Dir(&'a str),
    /// A symlink and its target.
    Link(&'a str, &'a str),
}

/// Makes a snapshotter in a directory, given its records, its store, and who its
/// files should belong to.
pub type Factory =
    Box<dyn Fn(&Path, Arc<FileRecords>, Arc<Store>, Option<Owner>) -> Box<dyn Snapshotter>>;

/// A store, records and a snapshotter in a fresh directory.
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The store.
    pub store: Arc<Store>,
    /// The records.
    pub records: Arc<FileRecords>,
    /// The snapshotter under test.
    pub snap: Box<dyn Snapshotter>,
    factory: Factory,
    mounted: RefCell<Vec<PathBuf>>,
    scratch: RefCell<u32>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Fixture {
    /// A fixture in a new directory under `parent` (the filesystem under test).
    pub fn new(parent: &Path, factory: Factory) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("ws-conformance-")
            .tempdir_in(parent)
            .expect("make the fixture directory");
        let store = Arc::new(Store::open(&dir.path().join("state")).expect("open the store"));
        let records = Arc::new(
            FileRecords::open(&dir.path().join("records.json")).expect("open the records"),
        );
        let snap = factory(
            &dir.path().join("snapshotter"),
            records.clone(),
            store.clone(),
            None,
        );
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Fixture {
            dir,
            store,
            records,
            snap,
            factory,
            mounted: RefCell::new(Vec::new()),
            scratch: RefCell::new(0),
        }
    }

    /// Another snapshotter of the same backend, on the same store, whose files
    /// belong to `owner`, with its records in `records`.
    pub fn snapshotter_for(&self, owner: Owner, records: Arc<FileRecords>) -> Box<dyn Snapshotter> {
        let dir = self.root().join(format!("snapshotter-{}", owner.uid));
        (self.factory)(&dir, records, self.store.clone(), Some(owner))
    }

    /// The fixture's directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh scratch directory.
    pub fn scratch(&self) -> PathBuf {
        let mut n = self.scratch.borrow_mut();
        *n += 1;
        let path = self.root().join(format!("scratch-{n}"));
        std::fs::create_dir(&path).unwrap();
        path
    }

    /// Writes `spec` into `dir`.
    pub fn write(dir: &Path, spec: &[Spec<'_>]) {
        use std::os::unix::fs::PermissionsExt;
        for entry in spec {
            let (path, mode) = match entry {
                Spec::File(p, _) | Spec::Exec(p, _) | Spec::Dir(p) | Spec::Link(p, _) => {
                    (dir.join(p), matches!(entry, Spec::Exec(..)))
                }
            };
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            match entry {
                Spec::File(_, content) | Spec::Exec(_, content) => {
                    std::fs::write(&path, content).unwrap();
                    let bits = if mode { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
                }
                Spec::Dir(_) => std::fs::create_dir_all(&path).unwrap(),
                Spec::Link(_, target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            }
        }
    }

    /// A source tree in the store made from `spec`.
    pub fn tree(&self, spec: &[Spec<'_>]) -> Digest {
        let dir = self.scratch();
        Fixture::write(&dir, spec);
        treediff::import(&self.store, &dir, &CaptureOptions::default())
            .expect("import the tree")
            .0
    }

    /// Commits a base snapshot `name` holding `spec`.
    pub fn base(&self, name: &str, spec: &[Spec<'_>]) -> Info {
        let tree = self.tree(spec);
        let mut txn = self.snap.begin();
        let info = self
            .snap
            .commit_tree(&mut txn, name, tree, Content::Source)
            .expect("commit_tree");
        txn.commit_to(&self.records).expect("commit the records");
        info
    }

    /// Prepares `key` on `parent` and mounts it; returns where its files are.
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> PathBuf {
        let mut txn = self.snap.begin();
        let plan = self
            .snap
            .prepare(&mut txn, key, parent, Content::Source)
            .expect("prepare");
        txn.commit_to(&self.records).expect("commit the records");
        self.mount(key, &plan)
    }

    /// Makes a view `key` of `parent` and mounts it.
    pub fn view(&self, key: &str, parent: &str) -> PathBuf {
        let mut txn = self.snap.begin();
        let plan = self.snap.view(&mut txn, key, parent).expect("view");
        txn.commit_to(&self.records).expect("commit the records");
        self.mount(key, &plan)
    }

    /// Mounts the existing snapshot `key`.
    pub fn mount_existing(&self, key: &str) -> PathBuf {
        let plan = self.snap.mounts(key).expect("mounts");
        self.mount(key, &plan)
    }

    fn mount(&self, key: &str, plan: &crate::MountPlan) -> PathBuf {
        let target = self.target(key);
        std::fs::create_dir_all(&target).unwrap();
        crate::mount(plan, &target)
            .unwrap_or_else(|e| panic!("mount {key}: {}", crate::testsuite::chain(&e)));
        if !matches!(plan, crate::MountPlan::Direct { .. }) {
            self.mounted.borrow_mut().push(target.clone());
        }
        plan.view_path(&target).to_owned()
    }

    /// Unmounts `target` when the fixture is dropped (a mount made by hand).
    pub fn track_mount(&self, target: &Path) {
        self.mounted.borrow_mut().push(target.to_owned());
    }

    /// Forgets a mount that something else unmounted.
    pub fn forget_mount(&self, target: &Path) {
        self.mounted.borrow_mut().retain(|m| m != target);
    }

    /// Where `key` is mounted.
    pub fn target(&self, key: &str) -> PathBuf {
        self.root().join("mnt").join(key)
    }

    /// Unmounts `key` if it is mounted.
    pub fn unmount(&self, key: &str) {
        let target = self.target(key);
        let mut mounted = self.mounted.borrow_mut();
        if let Some(i) = mounted.iter().position(|m| *m == target) {
            crate::unmount(&target).expect("unmount");
            mounted.remove(i);
        }
    }

    /// Unmounts `key` and commits it as `name`.
    pub fn commit(&self, name: &str, key: &str) -> Info {
        self.unmount(key);
        let mut txn = self.snap.begin();
        let info = self
            .snap
            .commit(&mut txn, name, key)
            .unwrap_or_else(|e| panic!("commit: {}", crate::testsuite::chain(&e)));
        txn.commit_to(&self.records).expect("commit the records");
        info
    }

    /// Unmounts and removes `key`.
    pub fn remove(&self, key: &str) {
        self.unmount(key);
        let mut txn = self.snap.begin();
        self.snap
            .remove(&mut txn, key)
            .unwrap_or_else(|e| panic!("remove {key}: {}", crate::testsuite::chain(&e)));
        txn.commit_to(&self.records).expect("commit the records");
    }

    /// The tree of whatever is at `view` now, captured naively (the whole tree).
    pub fn capture(&self, view: &Path) -> Digest {
        treediff::import(&self.store, view, &CaptureOptions::default())
            .unwrap_or_else(|e| {
                panic!(
                    "capture {}: {}",
                    view.display(),
                    crate::testsuite::chain(&e)
                )
            })
            .0
    }

    /// Reads `key`'s changes and checks them against a naive comparison: the tree
    /// must be what a capture of the whole view gives, and the changes what a diff
    /// of that capture against the parent's tree gives.
    pub fn changes(&self, key: &str, view: &Path) -> ChangeSet {
        let set = self
            .snap
            .changes(key, &ChangeOptions::default())
            .unwrap_or_else(|e| panic!("changes of {key}: {}", crate::testsuite::chain(&e)));
        self.check_set(&set, view);
        set
    }

    /// Checks a change set against a capture of `view`.
    pub fn check_set(&self, set: &ChangeSet, view: &Path) {
        let naive = self.capture(view);
        assert_eq!(
            set.tree,
            naive,
            "the tree read from the layer differs from a capture of the view:\n{}",
            dump(view)
        );
        let naive_changes = treediff::diff::changes(&self.store, set.parent_tree, naive).unwrap();
        assert_eq!(
            set.changes, naive_changes,
            "the change list differs from a naive diff"
        );
    }

    /// The paths of a change set with their kinds, for assertions.
    pub fn summary(set: &ChangeSet) -> Vec<String> {
        set.changes
            .iter()
            .map(|c| format!("{:?} {}", c.kind, c.path))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for target in self.mounted.borrow().iter().rev() {
            if crate::unmount(target).is_err() {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Every entry under `dir` by relative path: `dir`, `file <content> [exec]` or
/// `link -> <target>`.
pub fn listing(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = entry.path().symlink_metadata().unwrap();
        let what = if meta.is_dir() {
            "dir".to_owned()
        } else if meta.file_type().is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(entry.path()).unwrap().display()
            )
        } else {
            let content =
                std::fs::read(entry.path()).map(|b| String::from_utf8_lossy(&b).into_owned());
            let exec = if meta.permissions().mode() & 0o100 != 0 {
                " exec"
            } else {
                ""
            };
            match content {
                Ok(c) => format!("file {c}{exec}"),
                Err(e) => format!("unreadable: {e}"),
            }
        };
        out.insert(rel, what);
    }
    out
}

/// A `find`-like dump of `dir` with types and modes, for failure messages.
pub fn dump(dir: &Path) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = String::new();
    for entry in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_char_device() {
            "c"
        } else if ft.is_file() {
            "f"
        } else {
            "?"
        };
        out.push_str(&format!(
            "{kind} {:o} {:>6} {}\n",
            meta.mode() & 0o7777,
            meta.len(),
            entry.path().display()
        ));
    }
    out
}

/// A loop-mounted XFS image (reflinks), unmounted when dropped. Needs root and
/// `mkfs.xfs` (xfsprogs); panics naming what is missing otherwise.
#[derive(Debug)]
pub struct LoopXfs {
    dir: tempfile::TempDir,
}

impl LoopXfs {
    /// Makes a sparse 1 GiB image and mounts it.
    pub fn mount() -> LoopXfs {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("xfs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let run = |cmd: &mut std::process::Command| {
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install xfsprogs)"));
            assert!(
                out.status.success(),
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(std::process::Command::new("mkfs.xfs").arg("-q").arg(&image));
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir.path().join("mnt")));
        LoopXfs { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for LoopXfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.path())
            .status();
    }
}
