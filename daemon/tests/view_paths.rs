//! A root daemon writing through a user's view must write into that view and
//! nowhere else, whatever the user does to the path that leads to it. The user
//! (`wstest1`, a real account made with `useradd` if absent) opens a workspace
//! on a directory of theirs, edits it, then moves the view's parent away and
//! puts in its place a symlink to a root-owned directory, or a directory of
//! their own holding a plain `view` directory: `discard`, `undo` and `close` are
//! refused, and nothing outside the user's own files changes. The swaps are
//! made by the user (`runuser`), as an attacker would make them.

use std::process::Command;

use daemon::{ErrorKind, Manager, StateDir};
use overlay::BackendKind;
use overlay::testsuite::privileged;

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod support;

use support::user_view::{Setup, as_user, attacks};

#[test]
fn discard_undo_and_close_refuse_a_view_whose_path_a_user_redirected() {
    if !privileged("discard_undo_and_close_refuse_a_view_whose_path_a_user_redirected") {
        return;
    }
    for backend in [BackendKind::Overlayfs, BackendKind::Mirror] {
        for attack in attacks() {
            let name = attack.name;
            let s = Setup::new(backend);
            let m = &s.manager;
            // Something to undo later: one discard before the swap.
            m.discard(s.caller, "w").unwrap();
            as_user(&format!(
                "echo again > {}/p/view/README",
                s.home().display()
            ));
            let secret = s.secret_state();
            s.redirect(&attack);
            for (op, result) in [
                ("discard", m.discard(s.caller, "w").map(|_| ())),
                ("undo", m.undo(s.caller, "w").map(|_| ())),
                ("close", m.close(s.caller, "w", true)),
            ] {
                let err = result.expect_err(&format!("{backend} {name}: {op} went ahead"));
                assert!(
                    matches!(
                        err.kind(),
                        ErrorKind::Conflict | ErrorKind::Io | ErrorKind::Busy
                    ),
                    "{backend} {name}: {op}: {err}"
                );
                assert_eq!(
                    s.secret_state(),
                    secret,
                    "{backend} {name}: {op} changed root's files"
                );
            }
            // The view itself, where it went, is untouched and still mounted.
            let moved = s.home().join("p.moved/view");
            assert_eq!(
                std::fs::read_to_string(moved.join("README")).unwrap(),
                "again\n",
                "{backend} {name}"
            );
            s.assert_redirect_untouched("p", &format!("{backend} {name}"));
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
