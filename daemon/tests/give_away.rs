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
        if std::os::unix::fs::symlink(victim, &link).is_ok() && exchange(&link, &sub) {
            swaps.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Exchanges the entries `a` and `b` in one step (`RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> bool {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .is_ok()
}

/// Directories in the tree of each round of the restore loop, and files in each
/// (and in the root-owned directory of the same names the attack aims at).
const LOOP_DIRS: usize = 4;
const LOOP_FILES: usize = 16;

/// A race loop over the restore of a build's cache (1,000 rounds,
/// `WS_RACE_ROUNDS` for more). `restore_caches` restores a cache with
/// `treediff::checkout::checkout` in copy mode with `owner` set to the
/// caller; this loop calls exactly that, with a small tree each round
/// (`d0..d3`, each with files, a symlink and a subdirectory), while the
/// user, on a thread of their own, swaps every directory they can reach in
/// the round's target for a symlink to a root-owned directory of the same
/// name holding files of the same names (and does the same inside the
/// directories moved aside). Even rounds check out into a fresh target in a
/// root-owned directory, as the restore does: the user reaches it only once
/// it is theirs and complete (a swap counted as made "while writing" there
/// came in the moment between the last `fchown` and the return). Odd rounds
/// check out into an empty directory of the user's, where they can swap the
/// checkout's half-made directories (root's, 0700, until complete) while it
/// writes; a checkout that finds one swapped refuses it. Whatever each
/// checkout answers, the root-owned directory keeps its entries, owners,
/// modes and contents, checked after every round. All of it on a tmpfs: on
/// this machine's ext4 (mounted `discard`) the loop took ten times as long.
#[test]
fn a_user_racing_a_thousand_small_cache_restores_gets_nothing_outside_them() {
    if !privileged("a_user_racing_a_thousand_small_cache_restores_gets_nothing_outside_them") {
        return;
    }
    let caller = user();
    let rounds = std::env::var("WS_RACE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let _tmpfs = overlay::testsuite::SmallTmpfs::mount(&tmp.path().join("fs"), "64m");
    let dir = tmp.path().join("fs");
    for d in [tmp.path(), &dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = treediff::Store::open(&dir.join("state")).unwrap();
    let (source, victim) = (dir.join("source"), dir.join("victim"));
    for (top, content) in [(&source, "the cache's\n"), (&victim, "root's own\n")] {
        for d in 0..LOOP_DIRS {
            std::fs::create_dir_all(top.join(format!("d{d}"))).unwrap();
            for f in 0..LOOP_FILES {
                std::fs::write(top.join(format!("d{d}/f{f}")), content).unwrap();
            }
            std::fs::create_dir(top.join(format!("d{d}/sub"))).unwrap();
            for f in 0..4 {
                std::fs::write(top.join(format!("d{d}/sub/g{f}")), content).unwrap();
            }
        }
    }
    for d in 0..LOOP_DIRS {
        std::os::unix::fs::symlink("f0", source.join(format!("d{d}/link"))).unwrap();
    }
    let (tree, _) =
        treediff::import(&store, &source, &treediff::CaptureOptions::default()).unwrap();
    let victim_before = victim_state(&victim);
    let targets = dir.join("targets");
    std::fs::create_dir(&targets).unwrap();
    std::fs::set_permissions(&targets, std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = treediff::CheckoutOptions {
        mode: treediff::CheckoutMode::Copy,
        owner: Some((caller.uid, caller.gid)),
    };

    // The round whose target the user attacks (`usize::MAX`: none, between
    // checkouts), and the swaps made while that round's checkout ran.
    let current = AtomicUsize::new(usize::MAX);
    let during = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let access = CallerAccess::for_caller(caller).unwrap().unwrap();
    let (mut failed, mut raced_fresh, mut raced_existing) = (0, 0, 0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            access.as_reader().unwrap();
            while !stop.load(Ordering::Relaxed) {
                let round = current.load(Ordering::Relaxed);
                if round == usize::MAX {
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                let swapped = swap_dirs(&targets.join(round.to_string()), &victim);
                if swapped > 0 && current.load(Ordering::Relaxed) == round {
                    during.fetch_add(swapped, Ordering::Relaxed);
                }
            }
        });
        let _stop = StopOnDrop(&stop);
        for round in 0..rounds {
            let target = targets.join(round.to_string());
            if round % 2 == 1 {
                std::fs::create_dir(&target).unwrap();
                std::os::unix::fs::chown(&target, Some(caller.uid), Some(caller.gid)).unwrap();
            }
            let before = during.load(Ordering::Relaxed);
            current.store(round, Ordering::Relaxed);
            let result = treediff::checkout::checkout(&store, tree, &target, &options);
            current.store(usize::MAX, Ordering::Relaxed);
            if during.load(Ordering::Relaxed) != before {
                *[&mut raced_fresh, &mut raced_existing][round % 2] += 1;
            }
            if let Err(e) = result {
                failed += 1;
                if std::env::var_os("WS_RACE_VERBOSE").is_some() {
                    eprintln!("round {round}: {e}");
                }
            }
            let now = victim_state(&victim);
            if now != victim_before {
                let changed: Vec<_> = now.iter().filter(|e| !victim_before.contains(e)).collect();
                panic!(
                    "round {round}: {} entries of root's {} changed (owner, mode, content) or appeared, first {:?}",
                    changed.len(),
                    victim.display(),
                    &changed[..changed.len().min(3)]
                );
            }
            let _ = std::fs::remove_dir_all(&target);
        }
    });
    eprintln!(
        "cache restore race: {rounds} checkouts in {:.1} s, {failed} failed; raced while writing: {raced_fresh} into a fresh target, {raced_existing} into the user's directory ({} swaps)",
        started.elapsed().as_secs_f64(),
        during.load(Ordering::Relaxed)
    );
    assert!(
        raced_existing >= rounds / 20,
        "the user swapped a directory during only {raced_existing} of {} checkouts into their directory: the race proves little",
        rounds / 2
    );
}

/// Stops the attacking thread when the loop ends, also by a failed assertion.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Every entry of `victim`, with its owner, mode and, for files, content.
fn victim_state(victim: &Path) -> Vec<(PathBuf, u32, u32, String)> {
    let mut out: Vec<_> = walkdir::WalkDir::new(victim)
        .into_iter()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let content = if meta.is_file() {
                std::fs::read_to_string(entry.path()).unwrap()
            } else {
                String::new()
            };
            (entry.into_path(), meta.uid(), meta.mode(), content)
        })
        .collect();
    out.sort();
    out
}

/// One pass of the attack on a round's target: each directory in `dir` the
/// user may list that is not swapped yet trades places with a symlink to the
/// directory of the same name in `victim` (in one atomic exchange, the
/// directory then at `.l-NAME`), and the same is done inside the directories
/// moved aside. Returns the swaps made.
fn swap_dirs(dir: &Path, victim: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut swapped = 0;
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(moved) = name.strip_prefix(".l-") {
            swapped += swap_dirs(&entry.path(), &victim.join(moved));
            continue;
        }
        let link = dir.join(format!(".l-{name}"));
        let _ = std::fs::remove_file(&link);
        if std::os::unix::fs::symlink(victim.join(&name), &link).is_ok()
            && exchange(&link, &entry.path())
        {
            swapped += 1;
        }
    }
    swapped
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
