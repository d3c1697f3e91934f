//! Mounts the daemon finds in the mount table rather than in its records (an
//! orphan's, a view recorded by an older release) are unmounted where the
//! table says they are, by the id it gives, and only if they use the daemon's
//! layers: never whatever their old path leads to now.

use std::path::Path;
use std::sync::Arc;

use overlay::testsuite::{BASE, Fixture, privileged};
use overlay::{Content, Driver, FileRecords, LayeredOptions, LayeredSnapshotter, Snapshotter};
use treediff::Store;

fn kernel_snapshotter(
    dir: &Path,
    records: &Arc<FileRecords>,
    store: &Arc<Store>,
) -> LayeredSnapshotter {
    let options = LayeredOptions::new(Driver::Kernel { userxattr: false });
    LayeredSnapshotter::open(dir, records.clone(), store.clone(), options).unwrap()
}

fn mounted_at(path: &Path) -> bool {
    overlay::mount_table()
        .unwrap()
        .iter()
        .any(|m| m.target == path)
}

fn mount_tmpfs(at: &Path) {
    std::fs::create_dir_all(at).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(at)
        .status()
        .unwrap();
    assert!(status.success(), "mount a tmpfs on {}", at.display());
}

fn detach(at: &Path) {
    let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
}

/// A kernel snapshotter in `dir/snap` with a base and a workspace on it,
/// mounted at `dir/user/mnt`; returns its store. The snapshotter is dropped:
/// the tests open it again with the records lost.
fn mount_a_view(dir: &Path) -> Arc<Store> {
    let store = Arc::new(Store::open(&dir.join("store")).unwrap());
    let records = Arc::new(FileRecords::open(&dir.join("records.json")).unwrap());
    let snap = kernel_snapshotter(&dir.join("snap"), &records, &store);
    let src = tempfile::tempdir().unwrap();
    Fixture::write(src.path(), BASE);
    let (tree, _) = treediff::import(&store, src.path(), &Default::default()).unwrap();
    let mut txn = snap.begin();
    snap.commit_tree(&mut txn, "base", tree, Content::Source)
        .unwrap();
    let plan = snap
        .prepare(&mut txn, "ws", Some("base"), Content::Source)
        .unwrap();
    txn.commit_to(&records).unwrap();
    let view = dir.join("user/mnt");
    std::fs::create_dir_all(&view).unwrap();
    overlay::mount(&plan, &view).unwrap();
    store
}

/// A view mounted in a user's directory whose records a crash lost. Before the
/// daemon starts again, the user moves the directory away and puts a symlink
/// to another mount (a decoy tmpfs, standing for another user's view) in its
/// place. Cleanup unmounts the orphan's view where it now is and leaves the
/// decoy mounted. (The mount table is read after the swap here, so this held
/// before as well; the check by id is what the stacked-mount test below
/// shows.)
#[test]
fn cleanup_unmounts_an_orphans_view_where_it_is_never_what_its_old_path_leads_to() {
    if !privileged("cleanup_unmounts_an_orphans_view_where_it_is") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = mount_a_view(dir.path());
    let user = dir.path().join("user");

    let decoy = dir.path().join("decoy");
    mount_tmpfs(&decoy.join("mnt"));
    let moved = dir.path().join("user-moved");
    std::fs::rename(&user, &moved).unwrap();
    std::os::unix::fs::symlink(&decoy, &user).unwrap();

    // The crash lost every record: the same directories, opened with none.
    let lost = Arc::new(FileRecords::open(&dir.path().join("lost.json")).unwrap());
    let snap = kernel_snapshotter(&dir.path().join("snap"), &lost, &store);
    let cleaned = snap.cleanup();
    let still_decoy = mounted_at(&decoy.join("mnt"));
    let still_view = mounted_at(&moved.join("mnt"));
    detach(&decoy.join("mnt"));
    detach(&moved.join("mnt"));
    let cleaned = cleaned.unwrap();
    assert!(
        still_decoy,
        "cleanup unmounted the decoy the old path led to"
    );
    assert!(!still_view, "cleanup left the orphan's view mounted");
    assert_eq!(cleaned.unmounted, vec![moved.join("mnt")]);
}

/// A mount that uses none of the daemon's layers is not the daemon's, even at
/// a path where a view was: it is left mounted.
#[test]
fn a_mount_that_uses_no_layer_of_the_daemon_is_left_alone() {
    if !privileged("a_mount_that_uses_no_layer_of_the_daemon_is_left_alone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("mnt");
    mount_tmpfs(&at);
    let layers = dir.path().join("state");
    std::fs::create_dir(&layers).unwrap();
    let unmounted = overlay::unmount_listed(&at, &layers);
    let still = mounted_at(&at);
    detach(&at);
    assert!(!unmounted.unwrap());
    assert!(still);
}

/// A mount stacked on an orphan's view (a user may mount a FUSE filesystem of
/// their own on a directory they own) hides the view: cleanup unmounts
/// neither, keeps the orphan's directory for a later start and says why.
/// Before, it unmounted the path the table named for the view, which took
/// away the mount on top.
#[test]
fn cleanup_leaves_a_mount_stacked_on_an_orphans_view_and_keeps_the_orphan() {
    if !privileged("cleanup_leaves_a_mount_stacked_on_an_orphans_view") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = mount_a_view(dir.path());
    let view = dir.path().join("user/mnt");
    mount_tmpfs(&view);

    let lost = Arc::new(FileRecords::open(&dir.path().join("lost.json")).unwrap());
    let snap = kernel_snapshotter(&dir.path().join("snap"), &lost, &store);
    let cleaned = snap.cleanup();
    let mounts = overlay::mount_table()
        .unwrap()
        .iter()
        .filter(|m| m.target == view)
        .count();
    detach(&view);
    detach(&view);
    let cleaned = cleaned.unwrap();
    assert_eq!(mounts, 2, "cleanup unmounted what was stacked on the view");
    assert!(cleaned.unmounted.is_empty(), "{cleaned:?}");
    assert!(!cleaned.left.is_empty(), "{cleaned:?}");
    assert!(
        cleaned
            .left
            .iter()
            .all(|(_, why)| why.contains("another mount is there")),
        "{cleaned:?}"
    );
    for (orphan, _) in &cleaned.left {
        assert!(orphan.exists(), "{} was removed", orphan.display());
    }
}
