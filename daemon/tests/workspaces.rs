//! Workspaces through the daemon's library: open over a directory or a tree,
//! edit, status, commit, discard, close, the op log, names and mount points, and a
//! restart that finds its views unmounted. Real RocksDB, real mounts (root).

use overlay::testsuite::privileged;
use std::path::{Path, PathBuf};

use daemon::{Caller, Error, ErrorKind, Manager, OpKind, OpenRequest, Source, State, StateDir};
use overlay::BackendKind;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

struct Setup {
    dir: tempfile::TempDir,
    manager: Option<Manager>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for (path, content) in [
            ("README", "readme\n"),
            ("src/main.c", "int main(void) { return 0; }\n"),
            ("src/util.c", "util\n"),
            (".wsignore", "*.o\n"),
        ] {
            std::fs::create_dir_all(src.join(path).parent().unwrap()).unwrap();
            std::fs::write(src.join(path), content).unwrap();
        }
        std::fs::write(src.join("main.o"), "ignored\n").unwrap();
        let manager = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
        Setup {
            dir,
            manager: Some(manager),
        }
    }

    fn m(&self) -> &Manager {
        self.manager.as_ref().unwrap()
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn open(&self, name: &str, backend: BackendKind) -> daemon::Workspace {
        self.m()
            .open_workspace(
                ROOT,
                OpenRequest {
                    name: name.to_owned(),
                    source: Source::Dir(self.src()),
                    path: None,
                    backend: Some(backend),
                },
            )
            .unwrap_or_else(|e| panic!("open {name}: {}", chain(&e)))
    }

    /// Restarts the daemon's state (drop, open again).
    fn restart(&mut self) {
        self.manager = None;
        self.manager = Some(Manager::open(StateDir::new(self.dir.path().join("state"))).unwrap());
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(m) = &self.manager
            && let Ok(list) = m.list(ROOT)
        {
            for ws in list {
                let _ = overlay::unmount(&ws.path);
            }
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn paths(status: &daemon::Status) -> Vec<String> {
    status
        .changes
        .iter()
        .map(|c| format!("{:?} {}", c.kind, c.path))
        .collect()
}

fn lifecycle(backend: BackendKind) {
    let s = Setup::new();
    let ws = s.open("hello", backend);
    assert_eq!(ws.state, State::Open);
    assert_eq!(ws.base_source_digest, ws.source_digest);
    let view = ws.path.clone();
    assert_eq!(
        std::fs::read_to_string(view.join("README")).unwrap(),
        "readme\n"
    );
    assert!(
        !view.join("main.o").exists(),
        ".wsignore applies to the import"
    );
    assert!(paths(&s.m().status(ROOT, "hello").unwrap()).is_empty());

    std::fs::write(view.join("README"), "edited\n").unwrap();
    std::fs::write(view.join("NEWS"), "news\n").unwrap();
    std::fs::write(view.join("build.o"), "ignored\n").unwrap();
    let status = s.m().status(ROOT, "hello").unwrap();
    assert_eq!(paths(&status), ["Added NEWS", "Modified README"]);

    let committed = s.m().commit(ROOT, "hello", Some("first".into())).unwrap();
    assert!(committed.changes.is_empty());
    assert_eq!(committed.workspace.source_digest, status.current);
    assert_ne!(committed.workspace.source_digest, ws.base_source_digest);
    assert!(
        paths(&s.m().status(ROOT, "hello").unwrap()).is_empty(),
        "clean after commit"
    );

    std::fs::write(view.join("README"), "not kept\n").unwrap();
    std::fs::remove_file(view.join("NEWS")).unwrap();
    std::fs::write(view.join("scratch"), "scratch\n").unwrap();
    let dropped = s.m().discard(ROOT, "hello").unwrap();
    assert_eq!(dropped.len(), 3);
    assert_eq!(
        std::fs::read_to_string(view.join("README")).unwrap(),
        "edited\n"
    );
    assert_eq!(
        std::fs::read_to_string(view.join("NEWS")).unwrap(),
        "news\n"
    );
    assert!(!view.join("scratch").exists());
    assert!(
        paths(&s.m().status(ROOT, "hello").unwrap()).is_empty(),
        "clean after discard"
    );

    let log: Vec<OpKind> = s
        .m()
        .log(ROOT, "hello")
        .unwrap()
        .iter()
        .map(|e| e.op)
        .collect();
    assert_eq!(log, [OpKind::Open, OpKind::Commit, OpKind::Discard]);
    let commit = &s.m().log(ROOT, "hello").unwrap()[1];
    assert_eq!(commit.message.as_deref(), Some("first"));
    assert_eq!(commit.changes, 2);

    std::fs::write(view.join("dirty"), "dirty\n").unwrap();
    let err = s.m().close(ROOT, "hello", false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    s.m().close(ROOT, "hello", true).unwrap();
    assert!(s.m().list(ROOT).unwrap().is_empty());
    assert!(
        !overlay::mount_table()
            .unwrap()
            .iter()
            .any(|m| m.target == view)
    );
    // The name is free again.
    s.open("hello", backend);
}

#[test]
fn lifecycle_on_overlayfs() {
    if privileged("lifecycle_on_overlayfs") {
        lifecycle(BackendKind::Overlayfs);
    }
}

#[test]
fn lifecycle_on_fuse_overlayfs() {
    if privileged("lifecycle_on_fuse_overlayfs") {
        lifecycle(BackendKind::FuseOverlayfs);
    }
}

#[test]
fn lifecycle_on_the_mirror() {
    if privileged("lifecycle_on_the_mirror") {
        lifecycle(BackendKind::Mirror);
    }
}

#[test]
fn a_restart_mounts_open_workspaces_again_with_their_edits() {
    if !privileged("a_restart_mounts_open_workspaces_again") {
        return;
    }
    let mut s = Setup::new();
    let ws = s.open("hello", BackendKind::Overlayfs);
    std::fs::write(ws.path.join("README"), "uncommitted\n").unwrap();
    s.m().commit(ROOT, "hello", None).unwrap();
    std::fs::write(ws.path.join("NEWS"), "not committed yet\n").unwrap();
    // As after a crash and a reboot: the mount is gone.
    overlay::unmount(&ws.path).unwrap();
    s.restart();
    let status = s.m().status(ROOT, "hello").unwrap();
    assert_eq!(status.workspace.state, State::Open);
    assert_eq!(paths(&status), ["Added NEWS"]);
    assert_eq!(
        std::fs::read_to_string(ws.path.join("README")).unwrap(),
        "uncommitted\n"
    );
}

#[test]
fn names_are_per_owner_and_others_workspaces_are_invisible() {
    if !privileged("names_are_per_owner") {
        return;
    }
    let s = Setup::new();
    s.open("hello", BackendKind::Overlayfs);
    let err = s
        .m()
        .open_workspace(
            ROOT,
            OpenRequest {
                name: "hello".into(),
                source: Source::Dir(s.src()),
                path: None,
                backend: Some(BackendKind::Overlayfs),
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    for bad in ["", "../x", "a/b", ".hidden", "-rf", "x\0y", &"n".repeat(65)] {
        let err = s
            .m()
            .open_workspace(
                ROOT,
                OpenRequest {
                    name: bad.into(),
                    source: Source::Dir(s.src()),
                    path: None,
                    backend: None,
                },
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
    }
    let other = Caller {
        uid: 1000,
        gid: 1000,
    };
    assert!(s.m().list(other).unwrap().is_empty());
    let err = s.m().status(other, "hello").unwrap_err();
    assert!(matches!(err, Error::NoSuchWorkspace { .. }), "{err}");
    assert_eq!(s.m().list(ROOT).unwrap().len(), 1);
}

#[test]
fn a_caller_imports_only_what_it_may_read() {
    use std::os::unix::fs::PermissionsExt;
    if !privileged("a_caller_imports_only_what_it_may_read") {
        return;
    }
    let s = Setup::new();
    let nobody = Caller {
        uid: 65534,
        gid: 65534,
    };
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // The caller may reach the source; root owns everything in it.
    mode(s.dir.path(), 0o755);
    let open = |name: &str| {
        s.m().open_workspace(
            nobody,
            OpenRequest {
                name: name.into(),
                source: Source::Dir(s.src()),
                path: None,
                backend: Some(BackendKind::Overlayfs),
            },
        )
    };
    let ws = open("readable").unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(ws.owner, 65534);

    // A subdirectory only root may list.
    std::fs::create_dir(s.src().join("secret")).unwrap();
    std::fs::write(s.src().join("secret/key"), "root only\n").unwrap();
    mode(&s.src().join("secret"), 0o700);
    let err = open("secret-dir").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{}", chain(&err));
    assert!(chain(&err).contains("secret"), "{}", chain(&err));

    // A file only root may read, in a directory the caller may list.
    mode(&s.src().join("secret"), 0o755);
    mode(&s.src().join("secret/key"), 0o600);
    let err = open("secret-file").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{}", chain(&err));
    assert!(chain(&err).contains("secret/key"), "{}", chain(&err));

    // Root reads it all, and the daemon's own threads are root again.
    s.open("as-root", BackendKind::Overlayfs);
    assert!(s.m().list(nobody).unwrap().iter().all(|w| w.owner == 65534));
}

#[test]
fn undo_walks_back_through_commits_and_discards() {
    if !privileged("undo_walks_back_through_commits_and_discards") {
        return;
    }
    let s = Setup::new();
    let ws = s.open("hello", BackendKind::Overlayfs);
    let view = ws.path.clone();
    let read = |path: &str| std::fs::read_to_string(view.join(path)).unwrap();
    let err = s.m().undo(ROOT, "hello").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "nothing to undo: {err}");

    std::fs::write(view.join("README"), "committed\n").unwrap();
    let first = s.m().commit(ROOT, "hello", None).unwrap().workspace;
    std::fs::write(view.join("README"), "dropped\n").unwrap();
    std::fs::write(view.join("scratch"), "scratch\n").unwrap();
    s.m().discard(ROOT, "hello").unwrap();
    assert_eq!(read("README"), "committed\n");

    // Undoing the discard writes the dropped edits back, uncommitted.
    let undone = s.m().undo(ROOT, "hello").unwrap();
    assert_eq!(undone.entry.op, OpKind::Discard);
    assert_eq!(read("README"), "dropped\n");
    assert_eq!(read("scratch"), "scratch\n");
    let status = s.m().status(ROOT, "hello").unwrap();
    assert_eq!(status.workspace.source_digest, first.source_digest);
    assert_eq!(paths(&status), ["Modified README", "Added scratch"]);

    // The next undo takes back the commit: its edit is uncommitted again.
    let undone = s.m().undo(ROOT, "hello").unwrap();
    assert_eq!(undone.entry.op, OpKind::Commit);
    let status = s.m().status(ROOT, "hello").unwrap();
    assert_eq!(status.workspace.source_digest, ws.base_source_digest);
    assert_eq!(paths(&status), ["Modified README", "Added scratch"]);
    let err = s.m().undo(ROOT, "hello").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "the open stays: {err}");

    // A discard is not undone over newer edits, which it would overwrite.
    s.m().discard(ROOT, "hello").unwrap();
    std::fs::write(view.join("newer"), "newer\n").unwrap();
    let err = s.m().undo(ROOT, "hello").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(read("newer"), "newer\n");
    assert_eq!(read("README"), "readme\n");

    let log: Vec<(OpKind, Option<u64>)> = s
        .m()
        .log(ROOT, "hello")
        .unwrap()
        .iter()
        .map(|e| (e.op, e.undoes))
        .collect();
    assert_eq!(
        log,
        [
            (OpKind::Open, None),
            (OpKind::Commit, None),
            (OpKind::Discard, None),
            (OpKind::Undo, Some(2)),
            (OpKind::Undo, Some(1)),
            (OpKind::Discard, None),
        ]
    );
}

#[test]
fn concurrent_opens_of_one_name_give_it_out_once() {
    if !privileged("concurrent_opens_of_one_name_give_it_out_once") {
        return;
    }
    let s = Setup::new();
    let results: Vec<Result<daemon::Workspace, Error>> = std::thread::scope(|scope| {
        let opens: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    s.m().open_workspace(
                        ROOT,
                        OpenRequest {
                            name: "same".into(),
                            source: Source::Dir(s.src()),
                            path: None,
                            backend: Some(BackendKind::Overlayfs),
                        },
                    )
                })
            })
            .collect();
        opens.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    }
    assert_eq!(s.m().list(ROOT).unwrap().len(), 1);
}

#[test]
fn mount_points_must_be_empty_directories_of_the_caller() {
    if !privileged("mount_points_must_be_empty_directories_of_the_caller") {
        return;
    }
    let s = Setup::new();
    let request = |name: &str, path: &Path| OpenRequest {
        name: name.into(),
        source: Source::Dir(s.src()),
        path: Some(daemon::MountPoint::open(path).unwrap()),
        backend: Some(BackendKind::Overlayfs),
    };
    let full = s.dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "x").unwrap();
    let err = s.m().open_workspace(ROOT, request("a", &full)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let theirs = s.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(1000.into()), Some(1000.into())).unwrap();
    let err = s
        .m()
        .open_workspace(ROOT, request("b", &theirs))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    let mine = s.dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    // A path through a symlink is not opened: it could be swapped for one to /etc.
    let link = s.dir.path().join("link");
    std::os::unix::fs::symlink(&mine, &link).unwrap();
    assert!(daemon::MountPoint::open(&link).is_err());
    assert!(daemon::MountPoint::open(&link.join(".")).is_err());
    let ws = s.m().open_workspace(ROOT, request("c", &mine)).unwrap();
    assert_eq!(ws.path, mine);
    assert_eq!(
        std::fs::read_to_string(mine.join("README")).unwrap(),
        "readme\n"
    );
    assert!(
        s.m().list(ROOT).unwrap().len() == 1,
        "failed opens record nothing"
    );
}

#[test]
fn a_workspace_opens_over_a_tree_in_the_store() {
    if !privileged("a_workspace_opens_over_a_tree_in_the_store") {
        return;
    }
    let s = Setup::new();
    let first = s.open("first", BackendKind::Overlayfs);
    let ws = s
        .m()
        .open_workspace(
            ROOT,
            OpenRequest {
                name: "second".into(),
                source: Source::Tree(first.source_digest),
                path: None,
                backend: Some(BackendKind::Overlayfs),
            },
        )
        .unwrap();
    assert_eq!(ws.base_snapshot, first.base_snapshot, "the base is shared");
    assert_eq!(
        std::fs::read_to_string(ws.path.join("README")).unwrap(),
        "readme\n"
    );
    let missing: treediff::Digest = format!("{}/3", "ab".repeat(32)).parse().unwrap();
    let err = s
        .m()
        .open_workspace(
            ROOT,
            OpenRequest {
                name: "third".into(),
                source: Source::Tree(missing),
                path: None,
                backend: None,
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

#[test]
fn a_commit_racing_a_discard_ends_in_a_defined_state() {
    if !privileged("a_commit_racing_a_discard") {
        return;
    }
    let s = Setup::new();
    let ws = s.open("race", BackendKind::Overlayfs);
    let mut busy = 0;
    for round in 0..20 {
        std::fs::write(ws.path.join("README"), format!("round {round}\n")).unwrap();
        let barrier = std::sync::Barrier::new(2);
        let (commit, discard) = std::thread::scope(|scope| {
            let c = scope.spawn(|| {
                barrier.wait();
                s.m().commit(ROOT, "race", None).map(|_| ())
            });
            let d = scope.spawn(|| {
                barrier.wait();
                s.m().discard(ROOT, "race").map(|_| ())
            });
            (c.join().unwrap(), d.join().unwrap())
        });
        for result in [&commit, &discard] {
            if let Err(e) = result {
                assert_eq!(e.kind(), ErrorKind::Busy, "round {round}: {e}");
                busy += 1;
            }
        }
        // Whichever won, the view and the record agree: nothing is left half-done.
        let status = s.m().status(ROOT, "race").unwrap();
        let readme = std::fs::read_to_string(ws.path.join("README")).unwrap();
        if status.changes.is_empty() {
            let committed = status.workspace.source_digest;
            let tree = treediff::import(s.m().store(), &ws.path, &Default::default())
                .unwrap()
                .0;
            assert_eq!(tree, committed, "round {round}: view {readme:?}");
        } else {
            assert!(
                commit.is_err(),
                "round {round}: a successful commit leaves nothing to commit"
            );
        }
    }
    eprintln!("{busy} of 40 operations were refused as busy");
}

#[test]
fn a_full_disk_fails_the_commit_clearly_and_it_succeeds_once_space_is_freed() {
    if !privileged("a_full_disk_fails_the_commit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _tmpfs = overlay::testsuite::SmallTmpfs::mount(&state, "96m");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("README"), "readme\n").unwrap();
    let m = Manager::open(StateDir::new(state.clone())).unwrap();
    let ws = m
        .open_workspace(
            ROOT,
            OpenRequest {
                name: "full".into(),
                source: Source::Dir(src),
                path: None,
                backend: Some(BackendKind::Overlayfs),
            },
        )
        .unwrap();
    let big: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(ws.path.join("big.bin"), &big).unwrap();
    // Fill what is left.
    let filler = state.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![1u8; 1 << 20];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    let err = m.commit(ROOT, "full", None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{}", chain(&err));
    assert!(
        chain(&err).contains("\"full\""),
        "the error names the workspace: {}",
        chain(&err)
    );
    // Reading the view stages its blobs in the store too, so status waits for space.
    std::fs::remove_file(&filler).unwrap();
    let after = m.status(ROOT, "full").unwrap();
    assert_eq!(
        after.workspace.source_digest, ws.source_digest,
        "nothing was recorded"
    );
    assert_eq!(after.changes.len(), 1, "the edit is still there");
    let committed = m.commit(ROOT, "full", None).unwrap();
    assert_ne!(committed.workspace.source_digest, ws.source_digest);
}
