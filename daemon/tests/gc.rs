//! gc, quota eviction and fsck through the daemon's library: what a workspace,
//! its op log, a ref or a snapshot reaches stays; the rest goes; damage is found.

use overlay::testsuite::privileged;
use std::path::{Path, PathBuf};

use daemon::manager::{GcOptions, ImportOptions, RefKind};
use daemon::{Caller, Manager, OpenRequest, Source, StateDir};
use overlay::BackendKind;
use treediff::Digest;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn tree(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (path, content) in files {
        std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
        std::fs::write(dir.join(path), content).unwrap();
    }
    dir.to_owned()
}

fn open(m: &Manager, name: &str, src: &Path) -> daemon::Workspace {
    m.open_workspace(
        ROOT,
        OpenRequest {
            name: name.into(),
            source: Source::Dir(src.to_owned()),
            path: None,
            backend: Some(BackendKind::Overlayfs),
        },
    )
    .unwrap()
}

fn unmount_all(m: &Manager) {
    for ws in m.list(ROOT).unwrap() {
        let _ = overlay::unmount(&ws.path);
    }
}

#[test]
fn gc_keeps_what_workspaces_reach_and_drops_what_closed_ones_left() {
    if !privileged("gc_keeps_what_workspaces_reach") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kept = tree(
        &dir.path().join("kept"),
        &[("a.c", "kept a\n"), ("shared.h", "shared\n")],
    );
    let gone = tree(
        &dir.path().join("gone"),
        &[("b.c", "gone b\n"), ("shared.h", "shared\n")],
    );
    let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
    let ws = open(&m, "kept", &kept);
    std::fs::write(ws.path.join("a.c"), "committed a\n").unwrap();
    m.commit(ROOT, "kept", None).unwrap();
    std::fs::write(ws.path.join("a.c"), "discarded a\n").unwrap();
    m.discard(ROOT, "kept").unwrap();
    open(&m, "gone", &gone);
    m.close(ROOT, "gone", false).unwrap();

    let report = m.gc(ROOT, GcOptions::default()).unwrap();
    assert!(report.sweep.removed_objects >= 2, "{report:?}");
    assert_eq!(report.removed_snapshots, 1, "gone's base: {report:?}");
    let store = m.store();
    assert!(!store.contains(&Digest::of(b"gone b\n")).unwrap());
    for kept in ["shared\n", "kept a\n", "committed a\n", "discarded a\n"] {
        assert!(
            store.contains(&Digest::of(kept.as_bytes())).unwrap(),
            "{kept:?}"
        );
    }
    let fsck = m.fsck(ROOT).unwrap();
    assert!(fsck.is_clean(), "{fsck:?}");
    // A second gc finds nothing more.
    let again = m.gc(ROOT, GcOptions::default()).unwrap();
    assert_eq!(again.sweep.removed_objects, 0, "{again:?}");
    // The op log still undoes: the discarded edit comes back from the store.
    m.undo(ROOT, "kept").unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.path.join("a.c")).unwrap(),
        "discarded a\n"
    );
    // Only root collects.
    let err = m
        .gc(
            Caller {
                uid: 1000,
                gid: 1000,
            },
            GcOptions::default(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), daemon::ErrorKind::AccessDenied);
    unmount_all(&m);
}

#[test]
fn the_quota_evicts_least_recently_used_refs_and_never_pinned_ones() {
    if !privileged("the_quota_evicts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
    let import = |name: &str, byte: u8| {
        let src = tree(&dir.path().join(name), &[]);
        std::fs::write(src.join("blob"), vec![byte; 100_000]).unwrap();
        m.import_source(ROOT, &src, &ImportOptions::default())
            .unwrap()
            .0
    };
    let (old, new, pinned) = (import("old", 1), import("new", 2), import("pinned", 3));
    m.put_ref("artifact/old", old, RefKind::Artifact, 100_000)
        .unwrap();
    m.put_ref("buildtree/new", new, RefKind::Buildtree, 100_000)
        .unwrap();
    m.put_ref("pinned", pinned, RefKind::Pinned, 100_000)
        .unwrap();
    // "old" was used least recently: "new" is used again a second later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    m.use_ref("buildtree/new").unwrap();

    let report = m
        .gc(
            ROOT,
            GcOptions {
                quota: Some(250_000),
            },
        )
        .unwrap();
    assert_eq!(report.evicted_refs, ["artifact/old"], "{report:?}");
    assert!(report.within_quota, "{report:?}");
    assert!(!m.store().contains(&Digest::of(&[1; 100_000])).unwrap());
    assert!(m.store().contains(&Digest::of(&[2; 100_000])).unwrap());

    let report = m.gc(ROOT, GcOptions { quota: Some(1) }).unwrap();
    assert_eq!(report.evicted_refs, ["buildtree/new"], "{report:?}");
    assert!(
        !report.within_quota,
        "a pinned ref stays over quota: {report:?}"
    );
    assert!(m.store().contains(&Digest::of(&[3; 100_000])).unwrap());
    let names: Vec<String> = m.refs().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["pinned"]);
}

#[test]
fn fsck_finds_a_workspace_tree_the_store_lost() {
    if !privileged("fsck_finds_a_workspace_tree_the_store_lost") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(&dir.path().join("src"), &[("a.c", "int a;\n")]);
    let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
    open(&m, "ws", &src);
    assert!(m.fsck(ROOT).unwrap().is_clean());
    let blob = m.store().blob_path(&Digest::of(b"int a;\n"));
    std::fs::remove_file(&blob).unwrap();
    let report = m.fsck(ROOT).unwrap();
    assert!(!report.is_clean());
    let shown = format!("{:?}", report.store.problems);
    assert!(shown.contains("a.c"), "{shown}");
    unmount_all(&m);
}
