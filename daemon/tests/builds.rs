//! Builds through the daemon's library, and what goes wrong in them: a write
//! outside the sandbox's writable places, a corrupt cached artifact, a failed
//! dependency, missing sources, a full disk while the artifact is captured, a
//! cancel. Each ends with a clear report or error naming the element and the
//! cause, and loses nothing. Real RocksDB, real mounts and sandboxes (root).

use std::path::{Path, PathBuf};

use daemon::manager::build::{ElementResult, Unobserved};
use daemon::sandbox::Cancel;
use daemon::{Caller, ErrorKind, Manager, StateDir};
use overlay::testsuite::privileged;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn manager(state: &Path) -> Manager {
    let mut m = Manager::open(StateDir::new(state.to_owned())).unwrap();
    m.set_sandbox_exe(PathBuf::from(env!("CARGO_BIN_EXE_wsd")));
    m
}

/// A project in `dir` with `toml` as its ws.toml and a source directory `src`.
fn project(dir: &Path, toml: &str) -> PathBuf {
    let root = dir.join("project");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/input"), "input\n").unwrap();
    std::fs::write(root.join("ws.toml"), toml).unwrap();
    root
}

fn build(m: &Manager, project: &Path, element: &str) -> Vec<daemon::manager::build::ElementReport> {
    m.build(ROOT, project, element, &Unobserved, &Cancel::new())
        .unwrap()
}

#[test]
fn a_write_outside_the_sandbox_fails_the_build_naming_the_path() {
    if !privileged("a_write_outside_the_sandbox_fails_the_build_naming_the_path") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("state"));
    let p = project(
        dir.path(),
        "[element.a]\nsources = \"src\"\nbuild = [\"touch /etc/ws-stray-build-test || true\", \"cp input $WS_INSTALLDIR/\"]\n",
    );
    let reports = build(&m, &p, "a");
    let a = reports.last().unwrap();
    assert_eq!(a.result, ElementResult::Failed, "{a:?}");
    let message = a.message.as_deref().unwrap();
    assert!(message.contains("/etc/ws-stray-build-test"), "{message}");
    assert!(!Path::new("/etc/ws-stray-build-test").exists());
    assert!(a.buildtree.is_some() && a.log.is_some());
    assert!(
        m.artifact(0, &a.cache_key)
            .unwrap()
            .unwrap()
            .artifact
            .is_none()
    );
}

/// A build that fills its in-memory filesystems fails, saying so, and
/// takes no more memory than its element allows; one that asks for more
/// than the daemon allows is refused before it runs.
#[test]
fn a_build_filling_its_tmpfs_fails_cleanly_within_its_limits() {
    if !privileged("a_build_filling_its_tmpfs_fails_cleanly_within_its_limits") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("state"));
    let p = project(
        dir.path(),
        "[element.tmp]\nsources = \"src\"\ntmpfs-size = \"8M\"\nbuild = [\"dd if=/dev/zero of=/tmp/big bs=1M count=16\"]\n\n\
         [element.shm]\nsources = \"src\"\ntmpfs-size = \"8M\"\nbuild = [\"dd if=/dev/zero of=/dev/shm/big bs=1M count=16\"]\n\n\
         [element.files]\nsources = \"src\"\ntmpfs-inodes = 100\nbuild = [\"for i in $(seq 200); do : > /tmp/f$i || exit 1; done\"]\n\n\
         [element.greedy]\nsources = \"src\"\ntmpfs-size = \"1T\"\nbuild = [\"true\"]\n",
    );
    for element in ["tmp", "shm", "files"] {
        let report = build(&m, &p, element).pop().unwrap();
        assert_eq!(
            report.result,
            ElementResult::Failed,
            "{element}: {report:?}"
        );
        let log =
            String::from_utf8(m.store().read(&report.log.unwrap()).unwrap().into_bytes()).unwrap();
        assert!(log.contains("No space left on device"), "{element}: {log}");
    }
    assert!(m.running_builds().unwrap().is_empty());
    let err = m
        .build(ROOT, &p, "greedy", &Unobserved, &Cancel::new())
        .unwrap_err();
    let text = daemon::dbus::describe(&err);
    assert!(
        text.contains("element greedy asks for tmpfs-size = 1T, more than this daemon allows (2G)"),
        "{text}"
    );
}

#[test]
fn a_corrupt_cached_artifact_is_rebuilt_and_never_used() {
    if !privileged("a_corrupt_cached_artifact_is_rebuilt_and_never_used") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let m = manager(&state);
    let p = project(
        dir.path(),
        "[element.a]\nsources = \"src\"\ninstall = [\"echo made-by-the-build > $WS_INSTALLDIR/out\"]\n",
    );
    let first = build(&m, &p, "a").pop().unwrap();
    assert_eq!(first.result, ElementResult::Built);
    assert_eq!(
        build(&m, &p, "a").pop().unwrap().result,
        ElementResult::Cached
    );

    // Damage the artifact's one blob in the store.
    let blob = blake3::hash(b"made-by-the-build\n").to_hex().to_string();
    let path = state.join("cas/blobs").join(&blob[..2]).join(&blob);
    assert!(path.exists(), "{}", path.display());
    std::fs::write(&path, "made-by-somebody-else\n").unwrap();

    let again = build(&m, &p, "a").pop().unwrap();
    assert_eq!(again.result, ElementResult::Built, "{again:?}");
    assert_eq!(again.commands_run, 1);
    assert_eq!(again.artifact, first.artifact);
}

#[test]
fn a_failed_dependency_stops_the_build_before_its_dependents() {
    if !privileged("a_failed_dependency_stops_the_build_before_its_dependents") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("state"));
    let p = project(
        dir.path(),
        "[element.lib]\nsources = \"src\"\nbuild = [\"echo lib fails; exit 3\"]\n\n[element.app]\nsources = \"src\"\ndepends = [\"lib\"]\nbuild = [\"true\"]\n",
    );
    let reports = build(&m, &p, "app");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].element, "lib");
    assert_eq!(reports[0].result, ElementResult::Failed);
    let message = reports[0].message.as_deref().unwrap();
    assert!(
        message.contains("echo lib fails; exit 3") && message.contains("code 3"),
        "{message}"
    );
    let shown = m.show(ROOT, &p, "app").unwrap();
    assert_eq!(shown[0].state.name(), "failed");
    assert_eq!(shown[1].state.name(), "waiting");
}

#[test]
fn missing_sources_are_an_error_naming_the_element() {
    let dir = tempfile::tempdir().unwrap();
    if !privileged("missing_sources_are_an_error_naming_the_element") {
        return;
    }
    let m = manager(&dir.path().join("state"));
    let p = project(
        dir.path(),
        "[element.a]\nsources = \"nowhere\"\nbuild = [\"true\"]\n",
    );
    let err = m
        .build(ROOT, &p, "a", &Unobserved, &Cancel::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let text = daemon::dbus::describe(&err);
    assert!(text.contains("a:") && text.contains("nowhere"), "{text}");
}

#[test]
fn a_cancelled_build_ends_as_a_failure_and_leaves_nothing_running() {
    if !privileged("a_cancelled_build_ends_as_a_failure_and_leaves_nothing_running") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let m = manager(&state);
    let p = project(
        dir.path(),
        "[element.a]\nsources = \"src\"\nbuild = [\"sleep 1001 & sleep 1002\"]\n",
    );
    let cancel = Cancel::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(700));
            cancel.cancel();
        })
    };
    let started = std::time::Instant::now();
    let report = m
        .build(ROOT, &p, "a", &Unobserved, &cancel)
        .unwrap()
        .pop()
        .unwrap();
    canceller.join().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(report.result, ElementResult::Failed);
    assert!(report.message.unwrap().contains("cancelled"));
    assert!(
        !sleeping("1001") && !sleeping("1002"),
        "a command outlived the cancel"
    );
    assert!(
        !overlay::mount_table()
            .unwrap()
            .iter()
            .any(|mount| mount.target.starts_with(state.join("builds"))),
        "the build's view is still mounted"
    );
}

/// Whether a `sleep SECONDS` runs anywhere on the machine.
fn sleeping(seconds: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| c == format!("sleep\0{seconds}\0").as_bytes())
    })
}

#[test]
fn a_full_disk_while_the_artifact_is_captured_fails_cleanly_and_a_retry_works() {
    if !privileged("a_full_disk_while_the_artifact_is_captured_fails_cleanly_and_a_retry_works") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _tmpfs = overlay::testsuite::SmallTmpfs::mount(&state, "96m");
    let m = manager(&state);
    // 60 MiB fit in the install directory; a second copy in the store does not.
    let p = project(
        dir.path(),
        "[element.big]\nsources = \"src\"\ninstall = [\"head -c 62914560 /dev/urandom > $WS_INSTALLDIR/big\"]\n",
    );
    let err = m
        .build(ROOT, &p, "big", &Unobserved, &Cancel::new())
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NoSpace,
        "{}",
        daemon::dbus::describe(&err)
    );
    let text = daemon::dbus::describe(&err);
    assert!(text.contains("big"), "{text}");
    assert!(m.running_builds().unwrap().is_empty());
    let key = m.show(ROOT, &p, "big").unwrap()[0].cache_key.clone();
    assert!(
        m.artifact(0, &key).unwrap().is_none(),
        "nothing was recorded"
    );

    // With a smaller output the same build goes through.
    std::fs::write(
        p.join("ws.toml"),
        "[element.big]\nsources = \"src\"\ninstall = [\"head -c 1048576 /dev/urandom > $WS_INSTALLDIR/big\"]\n",
    )
    .unwrap();
    let report = build(&m, &p, "big").pop().unwrap();
    assert_eq!(report.result, ElementResult::Built, "{report:?}");
}

#[test]
fn caches_persist_between_successful_builds_only() {
    if !privileged("caches_persist_between_successful_builds_only") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("state"));
    let toml = |then: &str| {
        format!(
            "[element.a]\nsources = \"src\"\ncaches = [\"ccache\"]\nbuild = [\"echo run >> $WS_CACHEDIR/ccache/runs\", \"{then}\"]\ninstall = [\"cp $WS_CACHEDIR/ccache/runs $WS_INSTALLDIR/\"]\n"
        )
    };
    let p = project(dir.path(), &toml("true"));
    let runs = |m: &Manager, report: &daemon::manager::build::ElementReport| {
        let tree = report.artifact.expect("an artifact");
        let node = treediff::Dir::read(m.store(), tree, "").unwrap();
        let Some(treediff::Entry {
            node: treediff::Node::File { digest, .. },
            ..
        }) = node.get("runs")
        else {
            panic!("no runs file in {tree}");
        };
        String::from_utf8(m.store().read(digest).unwrap().bytes().to_vec())
            .unwrap()
            .lines()
            .count()
    };
    let first = build(&m, &p, "a").pop().unwrap();
    assert_eq!(first.result, ElementResult::Built, "{first:?}");
    assert_eq!(runs(&m, &first), 1);

    // Another source: a new key, and the cache the first build saved.
    std::fs::write(p.join("src/input"), "input 2\n").unwrap();
    let second = build(&m, &p, "a").pop().unwrap();
    assert_eq!(runs(&m, &second), 2);

    // A failed build writes into the cache, which is not saved.
    std::fs::write(p.join("ws.toml"), toml("exit 1")).unwrap();
    let failed = build(&m, &p, "a").pop().unwrap();
    assert_eq!(failed.result, ElementResult::Failed);
    std::fs::write(p.join("ws.toml"), toml("true")).unwrap();
    std::fs::write(p.join("src/input"), "input 3\n").unwrap();
    let third = build(&m, &p, "a").pop().unwrap();
    assert_eq!(runs(&m, &third), 3, "the failed build's write was dropped");
}

#[test]
fn an_edit_of_the_project_sources_right_after_a_build_is_built() {
    if !privileged("an_edit_of_the_project_sources_right_after_a_build_is_built") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("state"));
    let p = project(
        dir.path(),
        "[element.a]\nsources = \"src\"\ninstall = [\"cp -r . $WS_INSTALLDIR/\"]\n",
    );
    let first = build(&m, &p, "a").pop().unwrap();
    assert_eq!(first.result, ElementResult::Built);
    // The sources are watched since that import; each edit, made just before
    // the build, must change the key (never the remembered tree reused).
    let edits: [&dyn Fn(); 3] = [
        &|| std::fs::write(p.join("src/input"), "edited\n").unwrap(),
        &|| std::fs::create_dir_all(p.join("src/new/dir")).unwrap(),
        &|| std::fs::write(p.join("src/new/dir/file"), "x").unwrap(),
    ];
    let mut keys = vec![first.cache_key.clone()];
    for edit in edits {
        edit();
        let again = build(&m, &p, "a").pop().unwrap();
        assert_eq!(again.result, ElementResult::Built, "{again:?}");
        assert!(!keys.contains(&again.cache_key));
        keys.push(again.cache_key.clone());
        let unchanged = build(&m, &p, "a").pop().unwrap();
        assert_eq!(unchanged.result, ElementResult::Cached);
        assert_eq!(unchanged.cache_key, again.cache_key);
    }
}

#[test]
fn gc_removes_the_buildtrees_nothing_needs_and_keeps_a_workspaces() {
    use daemon::manager::GcOptions;
    use daemon::manager::build::ElementOpen;
    if !privileged("gc_removes_the_buildtrees_nothing_needs_and_keeps_a_workspaces") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("state"));
    let p = project(
        dir.path(),
        "[element.a]\nsources = \"src\"\nbuild = [\"cat input > out\"]\ninstall = [\"cp out $WS_INSTALLDIR/\"]\n",
    );
    let first = build(&m, &p, "a").pop().unwrap();
    std::fs::write(p.join("src/input"), "second\n").unwrap();
    let second = build(&m, &p, "a").pop().unwrap();
    assert_ne!(first.cache_key, second.cache_key);

    // Without a quota every cached buildtree is kept.
    let kept = m.gc(ROOT, GcOptions::default()).unwrap();
    assert_eq!(kept.removed_snapshots, 0, "{kept:?}");
    let snapshot = |key| m.artifact(0, key).unwrap().unwrap().snapshot;
    assert!(snapshot(&first.cache_key).is_some() && snapshot(&second.cache_key).is_some());

    // A workspace continues from the second key's buildtree; the quota evicts
    // both keys' refs: the first buildtree goes, the workspace's stays.
    let opened = m
        .open_element(
            ROOT,
            ElementOpen {
                project_dir: p.clone(),
                element: "a".into(),
                fresh: false,
                path: None,
                backend: None,
                remotes: Default::default(),
            },
        )
        .unwrap();
    assert_eq!(
        build(&m, &p, "a").pop().unwrap().result,
        ElementResult::Cached
    );
    let evicted = m.gc(ROOT, GcOptions { quota: Some(1) }).unwrap();
    assert!(evicted.removed_snapshots >= 1, "{evicted:?}");
    assert_eq!(snapshot(&first.cache_key), None, "the record forgets it");
    // The workspace still builds incrementally over its buildtree.
    std::fs::write(opened.workspace.path.join("input"), "third\n").unwrap();
    let third = build(&m, &p, "a").pop().unwrap();
    assert_eq!(third.result, ElementResult::Built, "{third:?}");
    assert!(third.incremental, "{third:?}");
}

#[test]
fn gc_removes_unused_sysroots_and_builds_make_them_again() {
    use daemon::manager::GcOptions;
    if !privileged("gc_removes_unused_sysroots_and_builds_make_them_again") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let m = manager(&state);
    let p = project(
        dir.path(),
        "[element.base]\nkind = \"import\"\nsources = \"src\"\n\n[element.app]\nsources = \"src\"\ndepends = [\"base\"]\ninstall = [\"cp $WS_SYSROOT/input $WS_INSTALLDIR/\"]\n",
    );
    assert_eq!(
        build(&m, &p, "app").pop().unwrap().result,
        ElementResult::Built
    );
    let sysroots = || -> Vec<String> {
        std::fs::read_dir(state.join("sysroots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".trash-"))
            .collect()
    };
    assert_eq!(sysroots().len(), 1);
    let report = m.gc(ROOT, GcOptions::default()).unwrap();
    assert_eq!(report.removed_sysroots, 1, "{report:?}");
    assert!(sysroots().is_empty());
    // The next build that needs it makes it again.
    std::fs::write(p.join("src/input"), "changed\n").unwrap();
    let again = build(&m, &p, "app").pop().unwrap();
    assert_eq!(again.result, ElementResult::Built, "{again:?}");
    assert_eq!(sysroots().len(), 1);
}
