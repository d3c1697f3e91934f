//! What a root daemon gives to a user it gives through descriptors, never by
//! path: a user racing it with every move they may make on what is theirs
//! gets nothing outside it. The user is `wstest1` (a real account, made with
//! `useradd` if absent); the attacker is a thread of this test that takes on
//! the user's uid, gid and groups (per thread, as the daemon's own readers do).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use daemon::access::CallerAccess;
use daemon::manager::build::{ElementResult, Unobserved};
use daemon::sandbox::Cancel;
use daemon::{Caller, Manager, StateDir};
use overlay::testsuite::privileged;
use treediff::SourceAccess;

const USER: &str = "wstest1";

/// Files in the cache's subdirectory, and in the root-owned directory the
/// attack aims at (same names).
const FILES: usize = 3000;

fn user() -> Caller {
    if nix::unistd::User::from_name(USER).unwrap().is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", USER])
            .output()
            .unwrap();
        // 9: made meanwhile by another test process.
        assert!(out.status.success() || out.status.code() == Some(9));
    }
    let entry = nix::unistd::User::from_name(USER).unwrap().unwrap();
    Caller {
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
    }
}

/// A project whose element fills its cache `c` with `sub/f0..f2999` the first
/// time, in a directory every user can enter.
fn project(dir: &Path) -> PathBuf {
    let root = dir.join("project");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/input"), "input\n").unwrap();
    let fill = format!(
        "[ -e $WS_CACHEDIR/c/sub ] || [ -L $WS_CACHEDIR/c/sub ] || (mkdir $WS_CACHEDIR/c/sub && cd $WS_CACHEDIR/c/sub && i=0 && while [ $i -lt {FILES} ]; do : > f$i; i=$((i+1)); done)"
    );
    std::fs::write(
        root.join("ws.toml"),
        format!(
            "[element.a]\nsources = \"src\"\ncaches = [\"c\"]\nbuild = [\"{fill}\", \"sleep 1\"]\ninstall = [\"touch $WS_INSTALLDIR/out\"]\n"
        ),
    )
    .unwrap();
    root
}

/// A user's build restores its cache (a saved tree of 3000 files in `sub`)
/// under `<state>/builds/<id>/caches/c`. A root daemon's `builds/` is its own
/// alone (0700); this test opens it up to every user, as the state directory
/// of older releases was, to check that the restore holds even then. The user swaps `sub` for a symlink to a root-owned
/// directory holding files of the same names as soon as `sub` is theirs. Before,
/// the restored cache was given to them by a walk by path, top first: once
/// `c` was theirs, the walk went on through the symlink and gave them the
/// root-owned files. Now the restore gives each entry as it makes it, through
/// its descriptor, and `c` itself last.
#[test]
fn a_user_racing_the_restore_of_their_cache_gets_nothing_outside_it() {
    if !privileged("a_user_racing_the_restore_of_their_cache_gets_nothing_outside_it") {
        return;
    }
    let caller = user();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    for i in 0..FILES {
        std::fs::write(victim.join(format!("f{i}")), "root's own\n").unwrap();
    }
    let state = dir.path().join("state");
    let mut m = Manager::open(StateDir::new(state.clone())).unwrap();
    for open_up in [&state, &state.join("builds")] {
        std::fs::set_permissions(open_up, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    m.set_sandbox_exe(PathBuf::from(env!("CARGO_BIN_EXE_wsd")));
    let p = project(dir.path());
    let first = m
        .build(caller, &p, "a", &Unobserved, &Cancel::new())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(first.result, ElementResult::Built, "{first:?}");

    // A new key: the second build restores the cache the first one saved.
    std::fs::write(p.join("src/input"), "input 2\n").unwrap();
    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let access = CallerAccess::for_caller(caller).unwrap().unwrap();
    let builds = state.join("builds");
    std::thread::scope(|scope| {
        scope.spawn(|| {
            access.as_reader().unwrap();
            while !stop.load(Ordering::Relaxed) {
                swap_cache_dirs(&builds, &victim, caller.uid, &swaps);
            }
        });
        let second = m.build(caller, &p, "a", &Unobserved, &Cancel::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        while swaps.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        // The swap may fail the build; what matters is what root gave away.
        eprintln!(
            "the raced build: {:?}",
            second.map(|mut r| r.pop().map(|r| (r.result, r.message)))
        );
    });
    assert!(
        swaps.load(Ordering::Relaxed) > 0,
        "the user never reached the restored cache: the test proves nothing"
    );
    let given: Vec<PathBuf> = std::iter::once(victim.clone())
        .chain((0..FILES).map(|i| victim.join(format!("f{i}"))))
        .filter(|p| std::fs::symlink_metadata(p).unwrap().uid() != 0)
        .collect();
    assert!(
        given.is_empty(),
        "root gave {USER} {} of the {} entries of {} through the swapped cache directory, first {:?}",
        given.len(),
        FILES + 1,
        victim.display(),
        given.first()
    );
}

/// One pass of the attack: every `<builds>/<id>/caches/c/sub` that root has
/// given to `uid` already (so a walk by path would be about to enter it, or in
/// it) is swapped for a symlink to `victim`, in one atomic exchange.
fn swap_cache_dirs(builds: &Path, victim: &Path, uid: u32, swaps: &AtomicUsize) {
    let Ok(ids) = std::fs::read_dir(builds) else {
        return;
    };
    for id in ids.flatten() {
        let cache = id.path().join("caches/c");
        let sub = cache.join("sub");
        if !std::fs::symlink_metadata(&sub).is_ok_and(|m| m.is_dir() && m.uid() == uid) {
            continue;
        }
        let link = cache.join(".link");
        let _ = std::fs::remove_file(&link);
        if std::os::unix::fs::symlink(victim, &link).is_ok()
            && nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                link.as_path(),
                nix::fcntl::AT_FDCWD,
                sub.as_path(),
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .is_ok()
        {
            swaps.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A user's configure commands leave a symlink to a root-owned file where the
/// daemon puts its configured marker. Before, root wrote the marker by path,
/// following the symlink, and truncated the file. Now the marker is made
/// beneath the buildtree's descriptor, without following, in place of what
/// the commands left.
#[test]
fn a_symlink_where_the_configured_marker_goes_is_replaced_not_followed() {
    if !privileged("a_symlink_where_the_configured_marker_goes_is_replaced_not_followed") {
        return;
    }
    let caller = user();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "root's own\n").unwrap();
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/input"), "input\n").unwrap();
    std::fs::write(
        root.join("ws.toml"),
        format!(
            "[element.a]\nsources = \"src\"\nconfigure = [\"ln -s {} .ws-configured\"]\nbuild = [\"true\"]\ninstall = [\"touch $WS_INSTALLDIR/out\"]\n",
            victim.display()
        ),
    )
    .unwrap();
    let mut m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
    m.set_sandbox_exe(PathBuf::from(env!("CARGO_BIN_EXE_wsd")));
    let built = m
        .build(caller, &root, "a", &Unobserved, &Cancel::new())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(built.result, ElementResult::Built, "{built:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own\n");
    assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
}
