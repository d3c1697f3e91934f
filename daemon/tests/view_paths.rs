//! A root daemon writing through a user's view must write into that view and
//! nowhere else, whatever the user does to the path that leads to it. The user
//! (`wstest1`, a real account made with `useradd` if absent) opens a workspace
//! on a directory of theirs, edits it, then moves the view's parent away and
//! puts in its place a symlink to a root-owned directory, or a directory of
//! their own holding a plain `view` directory: `discard`, `undo` and `close` are
//! refused, and nothing outside the user's own files changes. The swaps are
//! made by the user (`runuser`), as an attacker would make them.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use daemon::{Caller, ErrorKind, Manager, MountPoint, OpenRequest, Source, StateDir};
use overlay::BackendKind;
use overlay::testsuite::privileged;

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod support;

const USER: &str = "wstest1";

/// The first test user, as the daemon sees a caller.
fn user() -> Caller {
    let user = support::users()[0];
    Caller {
        uid: user.uid,
        gid: user.gid,
    }
}

/// Runs `sh -c script` as the test user.
fn as_user(script: &str) {
    let out = Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Setup {
    /// First, so that it is dropped before the directory is removed.
    _unmounts: UnmountUnder,
    dir: tempfile::TempDir,
    manager: Manager,
    caller: Caller,
}

impl Setup {
    /// A root manager, a user's home with `home/p/view` opened as workspace `w`
    /// and edited (a file changed, one added), and a root-owned directory
    /// `secret/view` with a file the attack aims at.
    fn new(backend: BackendKind) -> Setup {
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
        let secret = dir.path().join("secret/view");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("README"), "root's own\n").unwrap();
        std::fs::write(secret.join("main.c"), "root's main\n").unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("p/view")).unwrap();
        for d in [home.clone(), home.join("p"), home.join("p/view")] {
            std::os::unix::fs::chown(&d, Some(caller.uid), Some(caller.gid)).unwrap();
        }
        for f in ["README", "main.c"] {
            std::os::unix::fs::chown(src.join(f), Some(caller.uid), Some(caller.gid)).unwrap();
        }
        std::os::unix::fs::chown(&src, Some(caller.uid), Some(caller.gid)).unwrap();
        let manager = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
        let view = home.join("p/view");
        manager
            .open_workspace(
                caller,
                OpenRequest {
                    name: "w".into(),
                    source: Source::Dir(src),
                    path: Some(MountPoint::open(&view).unwrap()),
                    backend: Some(backend),
                },
            )
            .unwrap();
        as_user(&format!(
            "echo edited > {v}/README && echo new > {v}/added",
            v = view.display()
        ));
        Setup {
            _unmounts: UnmountUnder(dir.path().to_owned()),
            dir,
            manager,
            caller,
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn secret(&self) -> PathBuf {
        self.dir.path().join("secret/view")
    }

    /// What the root-owned directory holds, with owners.
    fn secret_state(&self) -> Vec<(String, String, u32)> {
        let mut out: Vec<_> = std::fs::read_dir(self.secret())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap_or_default(),
                    meta.uid(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// Unmounts, when dropped, whatever is mounted under its directory.
struct UnmountUnder(PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        for mount in overlay::mount_table().unwrap_or_default() {
            if mount.target.starts_with(&self.0) {
                let _ = overlay::unmount(&mount.target);
            }
        }
    }
}

/// A way to redirect the view's path: its name, and the user's moves.
type Attack = (&'static str, fn(&Setup));

fn attacks() -> [Attack; 2] {
    [
        ("a symlink to a root-owned directory", |s| {
            as_user(&format!(
                "mv {h}/p {h}/moved && ln -s {secret} {h}/p",
                h = s.home().display(),
                secret = s.secret().parent().unwrap().display()
            ))
        }),
        ("a plain directory of the user's", |s| {
            as_user(&format!(
                "mv {h}/p {h}/moved && mkdir -p {h}/p/view && echo mine > {h}/p/view/README",
                h = s.home().display()
            ))
        }),
    ]
}

#[test]
fn discard_undo_and_close_refuse_a_view_whose_path_a_user_redirected() {
    if !privileged("discard_undo_and_close_refuse_a_view_whose_path_a_user_redirected") {
        return;
    }
    for backend in [BackendKind::Overlayfs, BackendKind::Mirror] {
        for (attack, swap) in attacks() {
            let s = Setup::new(backend);
            let m = &s.manager;
            // Something to undo later: one discard before the swap.
            m.discard(s.caller, "w").unwrap();
            as_user(&format!(
                "echo again > {}/p/view/README",
                s.home().display()
            ));
            let secret = s.secret_state();
            swap(&s);
            for (op, result) in [
                ("discard", m.discard(s.caller, "w").map(|_| ())),
                ("undo", m.undo(s.caller, "w").map(|_| ())),
                ("close", m.close(s.caller, "w", true)),
            ] {
                let err = result.expect_err(&format!("{backend} {attack}: {op} went ahead"));
                assert!(
                    matches!(
                        err.kind(),
                        ErrorKind::Conflict | ErrorKind::Io | ErrorKind::Busy
                    ),
                    "{backend} {attack}: {op}: {err}"
                );
                assert_eq!(
                    s.secret_state(),
                    secret,
                    "{backend} {attack}: {op} changed root's files"
                );
            }
            // The view itself, where it went, is untouched and still mounted.
            let moved = s.home().join("moved/view");
            assert_eq!(
                std::fs::read_to_string(moved.join("README")).unwrap(),
                "again\n",
                "{backend} {attack}"
            );
            // What the path leads to now (the decoy, or root's files) is untouched.
            let now = std::fs::read_to_string(s.home().join("p/view/README")).unwrap();
            assert!(
                now == "mine\n" || now == "root's own\n",
                "{backend} {attack}: {now:?}"
            );
        }
    }
}

#[test]
fn a_view_moved_back_is_written_again() {
    if !privileged("a_view_moved_back_is_written_again") {
        return;
    }
    let s = Setup::new(BackendKind::Overlayfs);
    let h = s.home();
    as_user(&format!("mv {h}/p {h}/moved", h = h.display()));
    assert!(s.manager.discard(s.caller, "w").is_err());
    as_user(&format!("mv {h}/moved {h}/p", h = h.display()));
    let dropped = s.manager.discard(s.caller, "w").unwrap();
    assert_eq!(dropped.len(), 2);
    assert_eq!(
        std::fs::read_to_string(h.join("p/view/README")).unwrap(),
        "readme\n"
    );
}

/// Makes every workspace record of the state directory `state` look like an
/// older release's, which kept no mount id.
fn forget_mount_ids(state: &std::path::Path) {
    let path = state.join("db");
    let mut options = rocksdb::Options::default();
    options.create_if_missing(false);
    let families = rocksdb::DB::list_cf(&options, &path).unwrap();
    let db = rocksdb::DB::open_cf(&options, &path, &families).unwrap();
    let cf = db.cf_handle("workspaces").unwrap();
    let records: Vec<_> = db
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(Result::unwrap)
        .collect();
    for (key, value) in records {
        let mut ws: serde_json::Value = serde_json::from_slice(&value).unwrap();
        ws.as_object_mut().unwrap().remove("mount_id");
        db.put_cf(cf, key, serde_json::to_vec(&ws).unwrap())
            .unwrap();
    }
}

/// A workspace recorded by an older release (no mount id) is written through
/// and closed only while its path leads to a mount of the daemon's: a mount
/// stacked on the view there (standing for anything not the daemon's) makes
/// discard and close refuse and leaves it mounted. Before, any mount root at
/// the path was taken for the view.
#[test]
fn a_view_recorded_without_a_mount_id_is_written_only_while_it_is_the_daemons() {
    if !privileged("a_view_recorded_without_a_mount_id_is_written_only_while_it_is_the_daemons") {
        return;
    }
    let Setup {
        _unmounts,
        dir,
        manager,
        caller,
    } = Setup::new(BackendKind::Overlayfs);
    drop(manager);
    let state = dir.path().join("state");
    forget_mount_ids(&state);
    let s = Setup {
        _unmounts,
        manager: Manager::open(StateDir::new(state)).unwrap(),
        dir,
        caller,
    };
    let view = s.home().join("p/view");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0755", "decoy"])
        .arg(&view)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(view.join("README"), "the decoy's\n").unwrap();
    let discard = s.manager.discard(s.caller, "w");
    let close = s.manager.close(s.caller, "w", true);
    let decoy = std::fs::read_to_string(view.join("README"));
    let _ = nix::mount::umount2(&view, nix::mount::MntFlags::MNT_DETACH);
    let err = discard.expect_err("discard wrote through a mount that is not the daemon's");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("daemon's layers"), "{err}");
    let err = close.expect_err("close unmounted a mount that is not the daemon's");
    let text = format!("{err:#}: {err:?}");
    assert!(text.contains("another mount is there"), "{text}");
    assert_eq!(decoy.unwrap(), "the decoy's\n");

    // The view itself, uncovered, is written and closed as before.
    let dropped = s.manager.discard(s.caller, "w").unwrap();
    assert_eq!(dropped.len(), 2);
    s.manager.close(s.caller, "w", true).unwrap();
    assert!(
        !overlay::mount_table()
            .unwrap()
            .iter()
            .any(|m| m.target == view)
    );
}
