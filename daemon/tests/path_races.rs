//! A race loop: while a real user (`wstest1`) swaps the path of their view
//! in a loop (for a moment at random times, the view's parent moved away and
//! a symlink to a root-owned directory, a decoy directory of theirs or
//! nothing put in its place, then back), root's daemon discards, undoes and
//! closes and opens again, a thousand times (`WS_RACE_ROUNDS` for more).
//! Whatever each operation answers, nothing outside the user's own files may
//! change owner, content or mounts: root's directory keeps its files, every
//! file under the user's home stays theirs, and nothing is mounted but the
//! user's view. Most operations meet the real view (the path is swapped a
//! small part of the time), and each loop reports how many went through and
//! fails below a quarter, so that it cannot pass by refusing everything.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use daemon::{Caller, Manager, MountPoint, OpenRequest, Source, StateDir};
use overlay::BackendKind;
use overlay::testsuite::privileged;

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod support;

const USER: &str = "wstest1";
const ROUNDS: usize = 1000;

/// The first test user, as the daemon sees a caller.
fn user() -> Caller {
    let user = support::users()[0];
    Caller {
        uid: user.uid,
        gid: user.gid,
    }
}

/// The user's swapping loop (this test binary run as the user, see
/// [`swapper_side`]), until killed. `at`, if given, is the file where the
/// test notes where the daemon recorded the view: `p` or `moved`.
fn swapper(home: &Path, secret: &Path, at: Option<&Path>) -> Child {
    let mut cmd = support::rerun_as(support::users()[0], "swapper_side");
    cmd.env("WS_SWAPPER_HOME", home)
        .env("WS_SWAPPER_SECRET", secret);
    if let Some(at) = at {
        cmd.env("WS_SWAPPER_AT", at);
    }
    cmd.spawn().unwrap()
}

/// The user's side of the races (a child process run as the user, see
/// `support::rerun_as`): nothing unless `WS_SWAPPER_HOME` names their home.
///
/// The view's parent (the directory `p` of the home at first) is kept where
/// the daemon recorded the view, `p` or `moved` (the file `WS_SWAPPER_AT`
/// says which; `p` without it): a view opened while the parent was swapped
/// away is recorded where the kernel found it, and stays there for the
/// daemon, as if the user had moved it themselves. Most of the time (10 to
/// 50 ms at a time) the parent is there, so that most of the daemon's
/// operations meet the real view; for a moment in between (2 ms) it is moved
/// to the other name and a symlink to root's directory `WS_SWAPPER_SECRET`, a
/// decoy directory of the user's, or nothing is in its place. It is put back
/// as soon as a decoy is no longer in the way (one the daemon mounted a view
/// on stays until the view is closed). Stops after 10 minutes.
#[test]
fn swapper_side() {
    let (Some(home), Some(secret)) = (
        std::env::var_os("WS_SWAPPER_HOME"),
        std::env::var_os("WS_SWAPPER_SECRET"),
    ) else {
        return;
    };
    let home = PathBuf::from(home);
    let at = std::env::var_os("WS_SWAPPER_AT").map(PathBuf::from);
    let lstat = |path: &Path| std::fs::symlink_metadata(path).ok();
    // The real parent, known by its inode (decoys are new directories).
    let real = lstat(&home.join("p")).unwrap().ino();
    let is_real = |path: &Path| lstat(path).is_some_and(|m| m.is_dir() && m.ino() == real);
    let end = Instant::now() + Duration::from_secs(600);
    while Instant::now() < end {
        // Randomness enough for timing: the clock's nanoseconds.
        let r = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        std::thread::sleep(Duration::from_millis(u64::from(10 + r % 41)));
        let recorded = at
            .as_ref()
            .and_then(|at| std::fs::read_to_string(at).ok())
            .unwrap_or_else(|| "p".to_owned());
        let (here, other) = match recorded.trim() {
            "moved" => (home.join("moved"), home.join("p")),
            _ => (home.join("p"), home.join("moved")),
        };
        if is_real(&here) && lstat(&other).is_none() && std::fs::rename(&here, &other).is_ok() {
            let _ = match (r / 64) % 3 {
                0 => std::os::unix::fs::symlink(&secret, &here),
                1 => std::fs::create_dir_all(here.join("view")),
                _ => Ok(()),
            };
            std::thread::sleep(Duration::from_millis(2));
        }
        // Back: what stands in the real parent's place goes (a decoy unless
        // the daemon mounted a view on it: a mount has a device of its own),
        // and the real parent returns.
        let (real_at, stand_in) = if is_real(&here) {
            (&here, &other)
        } else {
            (&other, &here)
        };
        match lstat(stand_in) {
            Some(m) if m.is_symlink() => {
                let _ = std::fs::remove_file(stand_in);
            }
            Some(m) if m.is_dir() => {
                let view = lstat(&stand_in.join("view"));
                if view.is_none_or(|v| v.dev() == m.dev()) {
                    let _ = std::fs::remove_dir_all(stand_in);
                }
            }
            _ => {}
        }
        if real_at == &other && lstat(&here).is_none() {
            let _ = std::fs::rename(&other, &here);
        }
    }
}

/// Runs the shell command `script` as the user; whether it worked is its
/// own business.
fn as_user(script: &str) {
    let _ = Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c", script])
        .status();
}

/// Every entry under `dir` (not following symlinks, not into mounts) with its
/// owner and, for files, content.
fn entries(dir: &Path) -> Vec<(PathBuf, u32, String)> {
    let mut out = Vec::new();
    let dev = std::fs::symlink_metadata(dir).unwrap().dev();
    for entry in walkdir::WalkDir::new(dir).same_file_system(true) {
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.dev() != dev {
            continue;
        }
        let content = if meta.is_file() {
            std::fs::read_to_string(entry.path()).unwrap_or_default()
        } else {
            String::new()
        };
        out.push((entry.path().to_owned(), meta.uid(), content));
    }
    out.sort();
    out
}

/// The rounds of each loop: `WS_RACE_ROUNDS`, else [`ROUNDS`].
fn rounds() -> usize {
    std::env::var("WS_RACE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ROUNDS)
}

#[test]
fn path_swaps_racing_discard_undo_close_and_open_change_nothing_of_anyone_else() {
    if !privileged("path_swaps_racing_discard_undo_close_and_open") {
        return;
    }
    let rounds = rounds();
    let caller = user();
    let dir = support::shared_tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README"), "readme\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(secret.join("view")).unwrap();
    std::fs::write(secret.join("view/README"), "root's own\n").unwrap();
    std::fs::write(secret.join("view/added"), "root's added\n").unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("p/view")).unwrap();
    for d in [&home, &home.join("p"), &home.join("p/view"), &src] {
        std::os::unix::fs::chown(d, Some(caller.uid), Some(caller.gid)).unwrap();
    }
    std::os::unix::fs::chown(src.join("README"), Some(caller.uid), Some(caller.gid)).unwrap();
    let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
    let secret_before = entries(&secret);
    // Where the daemon recorded the view (`p` or `moved`), for the swapper,
    // which keeps the view's parent there; opened there again.
    let at = dir.path().join("at");
    let open = |m: &Manager| {
        let recorded = std::fs::read_to_string(&at).unwrap_or_else(|_| "p".to_owned());
        let view = home.join(recorded).join("view");
        let point = MountPoint::open(&view).map_err(|e| daemon::Error::Denied {
            problem: format!("the mount point moved: {e}"),
        })?;
        let ws = m.open_workspace(
            caller,
            OpenRequest {
                name: "w".into(),
                source: Source::Dir(src.clone()),
                path: Some(point),
                backend: Some(BackendKind::Overlayfs),
            },
        )?;
        let parent = ws.path.parent().and_then(|p| p.file_name()).unwrap();
        std::fs::write(&at, parent.as_encoded_bytes()).unwrap();
        Ok(())
    };
    open(&m).unwrap();
    let mut swaps = swapper(&home, &secret, Some(&at));
    let (mut done, mut refused, mut reopens_refused) = (0, 0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        // An edit for each discard to discard, made by the user through
        // whichever path leads to the view now (none before an undo, which
        // it would keep from undoing the discard).
        if round % 4 < 2 {
            as_user(&format!(
                "cd {} && (echo {round} > p/view/added || echo {round} > moved/view/added) 2>/dev/null",
                home.display()
            ));
        }
        let result = match round % 4 {
            0 | 1 => m.discard(caller, "w").map(|_| ()),
            2 => m.undo(caller, "w").map(|_| ()),
            _ => m.close(caller, "w", true).and_then(|()| open(&m)),
        };
        match result {
            Ok(()) => done += 1,
            Err(e) => {
                if std::env::var_os("WS_RACE_VERBOSE").is_some() {
                    eprintln!("round {round}: {e}: {:?}", std::error::Error::source(&e));
                }
                refused += 1
            }
        }
        // Each round starts with the workspace open: one the swaps kept from
        // opening again is opened as soon as its path is back.
        let closed = Instant::now();
        while m.list(caller).unwrap().is_empty() {
            let Err(e) = open(&m) else { break };
            reopens_refused += 1;
            if std::env::var_os("WS_RACE_VERBOSE").is_some() {
                eprintln!("round {round}, opening again: {e}");
            }
            assert!(
                closed.elapsed() < Duration::from_secs(10),
                "the view could not be opened again for 10 s: {e}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let _ = swaps.kill();
    let _ = swaps.wait();
    assert_eq!(entries(&secret), secret_before, "root's directory changed");
    for (path, uid, _) in entries(&home) {
        assert_eq!(uid, caller.uid, "{} is not the user's", path.display());
    }
    // The user's view may be wherever they moved it in their home; nothing
    // else may be mounted, and nothing twice.
    let mounts: Vec<PathBuf> = overlay::mount_table()
        .unwrap()
        .into_iter()
        .map(|m| m.target)
        .filter(|t| t.starts_with(dir.path()) && !t.starts_with(dir.path().join("state")))
        .collect();
    assert!(
        mounts.len() <= 1,
        "more than the one view is mounted: {mounts:?}"
    );
    for mount in &mounts {
        assert!(
            mount.starts_with(&home),
            "a mount outside the user's home: {}",
            mount.display()
        );
    }
    for mount in overlay::mount_table().unwrap() {
        if mount.target.starts_with(dir.path()) {
            let _ = overlay::unmount(&mount.target);
        }
    }
    let report = format!(
        "path races: {rounds} rounds in {:.1} s, {done} operations done, {refused} refused; {reopens_refused} opens refused between rounds\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
    assert!(
        done >= rounds / 4,
        "only {done} of {rounds} operations went through: the race proves little"
    );
}

/// The same race over the operations that write into a directory the user
/// names: `ws store checkout` and `ws commit --write-back`. Each round the user
/// makes a fresh empty directory through whichever path leads to their
/// directory now, root's daemon is handed it (opened without following a
/// symlink, as `ws` opens it) and writes into it as the user; the swapper
/// meanwhile puts a symlink to a root-owned directory, or a decoy, where its
/// parent was. Nothing outside the user's own files may change.
#[test]
fn path_swaps_racing_checkouts_and_write_backs_change_nothing_of_anyone_else() {
    if !privileged("path_swaps_racing_checkouts_and_write_backs") {
        return;
    }
    let rounds = rounds();
    let caller = user();
    let dir = support::shared_tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README"), "readme\n").unwrap();
    std::fs::write(src.join("main.c"), "int main;\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(secret.join("view")).unwrap();
    std::fs::write(secret.join("view/README"), "root's own\n").unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("p/view")).unwrap();
    for d in [&home, &home.join("p"), &home.join("p/view"), &src] {
        std::os::unix::fs::chown(d, Some(caller.uid), Some(caller.gid)).unwrap();
    }
    for f in ["README", "main.c"] {
        std::os::unix::fs::chown(src.join(f), Some(caller.uid), Some(caller.gid)).unwrap();
    }
    let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
    let ws = m
        .open_workspace(
            caller,
            OpenRequest {
                name: "w".into(),
                source: Source::Dir(src.clone()),
                path: None,
                backend: Some(BackendKind::Overlayfs),
            },
        )
        .unwrap();
    std::fs::write(ws.path.join("added"), "added\n").unwrap();
    m.commit(caller, "w", Some("an edit".into())).unwrap();
    let tree = m.list(caller).unwrap()[0].source_digest;
    let secret_before = entries(&secret);
    let mut swaps = swapper(&home, &secret, None);
    let (mut done, mut refused) = (0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        let name = format!("out-{round}");
        as_user(&format!(
            "cd {} && (mkdir p/view/{name} || mkdir moved/view/{name}) 2>/dev/null",
            home.display()
        ));
        let result = MountPoint::open(&home.join("p/view").join(&name))
            .map_err(|e| daemon::Error::Denied {
                problem: format!("the directory moved: {e}"),
            })
            .and_then(|point| {
                if round % 2 == 0 {
                    m.store_checkout(caller, tree, &point, treediff::CheckoutMode::Copy)
                        .map(|_| ())
                } else {
                    m.write_back(caller, "w", &point).map(|_| ())
                }
            });
        match result {
            Ok(()) => done += 1,
            Err(e) => {
                if std::env::var_os("WS_RACE_VERBOSE").is_some() {
                    eprintln!("round {round}: {e}");
                }
                refused += 1
            }
        }
    }
    let _ = swaps.kill();
    let _ = swaps.wait();
    assert_eq!(entries(&secret), secret_before, "root's directory changed");
    for (path, uid, _) in entries(&home) {
        assert_eq!(uid, caller.uid, "{} is not the user's", path.display());
    }
    let _ = m.close(caller, "w", true);
    let report = format!(
        "path races (checkout, write-back): {rounds} rounds in {:.1} s, {done} done, {refused} refused\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
    assert!(
        done >= rounds / 4,
        "only {done} of {rounds} operations went through: the race proves little"
    );
}
