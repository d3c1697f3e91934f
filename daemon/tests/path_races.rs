//! A race loop: while a real user (`wstest1`) swaps the path of their view in a
//! tight loop (the view's parent moved away and back, a symlink to a root-owned
//! directory or a decoy directory of theirs put in its place for a moment), root's daemon discards, undoes and closes and
//! opens again, a thousand times (`WS_RACE_ROUNDS` for more). Whatever each
//! operation answers, nothing outside the user's own files may change owner,
//! content or mounts: root's directory keeps its files, every file under the
//! user's home stays theirs, and nothing is mounted but the user's view.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

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

/// The user's swapping loop, until killed (or after 10 minutes).
fn swapper(home: &Path, secret: &Path) -> Child {
    // Each round puts the view's parent back, so that the daemon's operations
    // meet the real view as often as a swapped path.
    // Each round puts the view's parent back (also after a step that failed,
    // say a decoy the daemon mounted a view on), so that the daemon's
    // operations meet the real view as often as a swapped path.
    let script = format!(
        "cd {home} && end=$(( $(date +%s) + 600 )); while [ $(date +%s) -lt $end ]; do \
         if [ -d p ] && [ ! -L p ] && [ ! -e moved ]; then \
         mv -T p moved; ln -s {secret} p; sleep 0.002; rm -f p; \
         mkdir -p p/view; sleep 0.002; rm -rf p 2>/dev/null; fi; \
         if [ -e moved ] && [ ! -e p ]; then mv -T moved p; fi; \
         if [ -e moved ] && [ -d p ] && [ ! -L p ]; then rmdir p/view p 2>/dev/null; fi; \
         sleep 0.005; done",
        home = home.display(),
        secret = secret.display()
    );
    Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c", &script])
        .spawn()
        .unwrap()
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

#[test]
fn path_swaps_racing_discard_undo_close_and_open_change_nothing_of_anyone_else() {
    if !privileged("path_swaps_racing_discard_undo_close_and_open") {
        return;
    }
    let rounds = std::env::var("WS_RACE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ROUNDS);
    let caller = user();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
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
    let open = |m: &Manager| {
        let view = home.join("p/view");
        let Ok(point) = MountPoint::open(&view) else {
            return false;
        };
        m.open_workspace(
            caller,
            OpenRequest {
                name: "w".into(),
                source: Source::Dir(src.clone()),
                path: Some(point),
                backend: Some(BackendKind::Overlayfs),
            },
        )
        .is_ok()
    };
    assert!(open(&m));
    let mut swaps = swapper(&home, &secret);
    let (mut done, mut refused) = (0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        // An edit, made by the user through whichever path leads to the view now.
        let _ = Command::new("runuser")
            .args(["-u", USER, "--", "sh", "-c"])
            .arg(format!(
                "cd {} && (echo {round} > p/view/added || echo {round} > moved/view/added) 2>/dev/null",
                home.display()
            ))
            .status();
        let result = match round % 4 {
            0 | 1 => m.discard(caller, "w").map(|_| ()),
            2 => m.undo(caller, "w").map(|_| ()),
            _ => m.close(caller, "w", true).and_then(|()| {
                if open(&m) {
                    Ok(())
                } else {
                    Err(daemon::Error::Denied {
                        problem: "the mount point moved".into(),
                    })
                }
            }),
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
        if m.list(caller).unwrap().is_empty() {
            open(&m);
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
    assert!(
        done > 0,
        "no operation went through: the race proves nothing"
    );
    let report = format!(
        "path races: {rounds} rounds in {:.1} s, {done} operations done, {refused} refused\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
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
    let rounds = std::env::var("WS_RACE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ROUNDS);
    let caller = user();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
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
    let mut swaps = swapper(&home, &secret);
    let (mut done, mut refused) = (0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        let name = format!("out-{round}");
        let _ = Command::new("runuser")
            .args(["-u", USER, "--", "sh", "-c"])
            .arg(format!(
                "cd {} && (mkdir p/view/{name} || mkdir moved/view/{name}) 2>/dev/null",
                home.display()
            ))
            .status();
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
    assert!(
        done > 0,
        "no operation went through: the race proves nothing"
    );
    let report = format!(
        "path races (checkout, write-back): {rounds} rounds in {:.1} s, {done} done, {refused} refused\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
}
