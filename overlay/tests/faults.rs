//! Faults: a full disk while checking out, copying up or capturing; a busy
//! unmount; an option the kernel refuses; a backend this machine lacks. Each
//! error names the snapshot or mount point and the cause, and leaves nothing
//! half-made registered or mounted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use overlay::testsuite::{self, BASE, Fixture, Spec, privileged};
use overlay::{
    BackendKind, ChangeOptions, Content, Driver, FileRecords, LayeredOptions, LayeredSnapshotter,
    MountPlan, Probe, SnapshotError, Snapshotter,
};
use treediff::Store;

/// A tmpfs of `size` on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn kernel() -> LayeredOptions {
    LayeredOptions::new(Driver::Kernel { userxattr: false })
}

fn open_layered(dir: &Path, store: &Arc<Store>, records: &Arc<FileRecords>) -> LayeredSnapshotter {
    LayeredSnapshotter::open(dir, records.clone(), store.clone(), kernel()).unwrap()
}

/// Commits BASE as the snapshot "base", prepares "ws" on it and mounts it at
/// `dir/mnt`, which it returns.
fn mount_workspace(
    snap: &LayeredSnapshotter,
    store: &Store,
    records: &FileRecords,
    dir: &Path,
) -> PathBuf {
    let src = tempfile::tempdir().unwrap();
    Fixture::write(src.path(), BASE);
    let (tree, _) = treediff::import(store, src.path(), &Default::default()).unwrap();
    let mut txn = snap.begin();
    snap.commit_tree(&mut txn, "base", tree, Content::Source)
        .unwrap();
    let plan = snap
        .prepare(&mut txn, "ws", Some("base"), Content::Source)
        .unwrap();
    txn.commit_to(records).unwrap();
    let target = dir.join("mnt");
    std::fs::create_dir(&target).unwrap();
    overlay::mount(&plan, &target).unwrap();
    target
}

fn snapshot_dirs(snapshots: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// 3 MiB of incompressible bytes, to fill a small filesystem.
fn big() -> String {
    (0..3 << 20)
        .map(|i: u32| char::from(b'a' + (i.wrapping_mul(2654435761) >> 27) as u8 % 26))
        .collect()
}

#[test]
fn full_disk_during_a_base_checkout_names_the_snapshot_and_leaves_nothing() {
    if !privileged("full_disk_during_a_base_checkout") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&state.path().join("state")).unwrap());
    let records = Arc::new(FileRecords::open(&state.path().join("records.json")).unwrap());
    let small = Tmpfs::mount("1m");
    let snap = open_layered(small.path(), &store, &records);
    let src = tempfile::tempdir().unwrap();
    let content = big();
    Fixture::write(
        src.path(),
        &[Spec::File("big", &content), Spec::File("small", "s\n")],
    );
    let (tree, _) = treediff::import(&store, src.path(), &Default::default()).unwrap();
    let mut txn = snap.begin();
    let err = snap
        .commit_tree(&mut txn, "base", tree, Content::Source)
        .unwrap_err();
    drop(txn);
    let text = testsuite::chain(&err);
    assert!(
        matches!(err, SnapshotError::Checkout { ref key, .. } if key == "base"),
        "{text}"
    );
    assert!(text.contains("No space left on device"), "{text}");
    assert!(snap.stat("base").is_err(), "nothing is registered");
    // The half-made checkout went to the trash, which is emptied in the background.
    assert!(snapshot_dirs(&small.path().join("snapshots")).is_empty());
}

#[test]
fn full_disk_during_copy_up_fails_the_write_and_the_layer_stays_readable() {
    if !privileged("full_disk_during_copy_up") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&state.path().join("state")).unwrap());
    let records = Arc::new(FileRecords::open(&state.path().join("records.json")).unwrap());
    let small = Tmpfs::mount("2m");
    let snap = open_layered(small.path(), &store, &records);
    let target = mount_workspace(&snap, &store, &records, state.path());
    let result = std::fs::write(target.join("huge"), big());
    let err = result.expect_err("the upper is full");
    assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
    std::fs::remove_file(target.join("huge")).unwrap();
    std::fs::write(target.join("README"), "fits\n").unwrap();
    let set = snap.changes("ws", &ChangeOptions::default()).unwrap();
    let summary: Vec<String> = set
        .changes
        .iter()
        .map(|c| format!("{:?} {}", c.kind, c.path))
        .collect();
    assert_eq!(summary, ["Modified README"]);
    overlay::unmount(&target).unwrap();
}

#[test]
fn full_store_while_reading_a_layer_names_the_snapshot_and_records_nothing() {
    if !privileged("full_store_while_reading_a_layer") {
        return;
    }
    let small = Tmpfs::mount("4m");
    let state = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&small.path().join("state")).unwrap());
    let records = Arc::new(FileRecords::open(&state.path().join("records.json")).unwrap());
    let snap = open_layered(&state.path().join("snap"), &store, &records);
    let target = mount_workspace(&snap, &store, &records, state.path());
    let content = big();
    std::fs::write(target.join("a"), &content).unwrap();
    std::fs::write(target.join("b"), content.replace('a', "b")).unwrap();
    let mut txn = snap.begin();
    overlay::unmount(&target).unwrap();
    let err = snap.commit(&mut txn, "v1", "ws").unwrap_err();
    drop(txn);
    let text = testsuite::chain(&err);
    assert!(text.contains("\"ws\""), "{text}");
    assert!(text.to_lowercase().contains("no space left"), "{text}");
    assert!(snap.stat("v1").is_err(), "nothing is registered");
    assert_eq!(
        snap.stat("ws").unwrap().kind,
        overlay::Kind::Active,
        "ws is as it was"
    );
}

#[test]
fn unmounting_a_view_in_use_is_refused_as_busy() {
    if !privileged("unmounting_a_view_in_use") {
        return;
    }
    let factory: testsuite::Factory = Box::new(|dir, records, store, owner| {
        let options = LayeredOptions { owner, ..kernel() };
        Box::new(LayeredSnapshotter::open(dir, records, store, options).unwrap())
            as Box<dyn Snapshotter>
    });
    let fx = Fixture::new(&std::env::temp_dir(), factory);
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    let open = std::fs::File::open(view.join("README")).unwrap();
    let err = overlay::unmount(&view).unwrap_err();
    assert!(matches!(err, SnapshotError::Busy { .. }), "{err}");
    assert!(
        err.to_string().contains(&view.display().to_string()),
        "{err}"
    );
    drop(open);
}

#[test]
fn an_option_the_kernel_refuses_is_reported_with_the_kernels_reason() {
    if !privileged("an_option_the_kernel_refuses") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = Tmpfs::mount("1m");
    for d in ["lower", "upper", "mnt"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    // The work directory must be on the upper's filesystem.
    let plan = MountPlan::Overlay(overlay::OverlayPlan {
        lowers: vec![dir.path().join("lower")],
        upper: Some(overlay::Upper {
            dir: dir.path().join("upper"),
            work: elsewhere.path().to_owned(),
        }),
        userxattr: false,
    });
    let target = dir.path().join("mnt");
    let err = overlay::mount(&plan, &target).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&target.display().to_string()), "{text}");
    assert!(
        text.contains("overlay"),
        "the kernel's reason is quoted: {text}"
    );
    assert!(
        !overlay::mount_table()
            .unwrap()
            .iter()
            .any(|m| m.target == target)
    );
}

#[test]
fn an_unavailable_backend_is_refused_with_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe: Probe = overlay::probe::probe(dir.path()).unwrap();
    probe.fuse_overlayfs.available = false;
    probe.fuse_overlayfs.reason = "fuse-overlayfs is not on PATH".to_owned();
    let store = Arc::new(Store::open(&dir.path().join("state")).unwrap());
    let records = Arc::new(FileRecords::open(&dir.path().join("records.json")).unwrap());
    let result = overlay::open(
        BackendKind::FuseOverlayfs,
        &probe,
        &dir.path().join("snap"),
        records.clone(),
        store.clone(),
        None,
    );
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Unavailable {
                backend: "fuse-overlayfs",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("fuse-overlayfs"), "{err}");
    assert!(!dir.path().join("snap").exists(), "nothing was made");
    let mirror = overlay::open(
        BackendKind::Mirror,
        &probe,
        &dir.path().join("snap"),
        records,
        store,
        None,
    )
    .unwrap();
    assert_eq!(mirror.kind(), BackendKind::Mirror);
}
