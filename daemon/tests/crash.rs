//! Crash safety: a child process (this test binary, re-run) is killed by a named
//! crash point at each step of open, commit, discard, close and undo; the parent then
//! opens the state again, as a restarted daemon would, and checks that the
//! workspace is exactly in its old or its new state, that nothing is left mounted
//! or stored half-way, and that the store is sound.

use overlay::testsuite::privileged;
use std::path::{Path, PathBuf};
use std::process::Command;

use daemon::{Caller, Manager, OpKind, OpenRequest, Source, State, StateDir};
use overlay::BackendKind;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn manager(state: &Path) -> Manager {
    Manager::open(StateDir::new(state.to_owned())).unwrap()
}

fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("README"), "readme\n").unwrap();
    std::fs::write(src.join("sub/file"), "file\n").unwrap();
    std::fs::write(src.join("data"), "data\n").unwrap();
    src
}

fn open(m: &Manager, src: &Path) -> daemon::Workspace {
    m.open_workspace(
        ROOT,
        OpenRequest {
            name: "w".into(),
            source: Source::Dir(src.to_owned()),
            path: None,
            backend: Some(BackendKind::Overlayfs),
        },
    )
    .unwrap()
}

/// The child: runs `action` on the state in `WS_CRASH_STATE` with the crash point
/// `WS_CRASH_POINT` armed. Reaching the end means the point was not reached.
#[test]
fn crash_child() {
    let (Ok(state), Ok(point), Ok(action)) = (
        std::env::var("WS_CRASH_STATE"),
        std::env::var("WS_CRASH_POINT"),
        std::env::var("WS_CRASH_ACTION"),
    ) else {
        return;
    };
    let state = PathBuf::from(state);
    let m = manager(&state);
    // `WS_CRASH_SKIP=k`: the point lets k passes go by, and crashes at the next.
    let actions = match std::env::var("WS_CRASH_SKIP") {
        Ok(k) => format!("{k}*off->return"),
        Err(_) => "return".to_owned(),
    };
    fail::cfg(point.as_str(), &actions).unwrap();
    match action.as_str() {
        "open" => {
            open(&m, &source(state.parent().unwrap()));
        }
        "commit" => {
            m.commit(ROOT, "w", Some("crash".into())).unwrap();
        }
        "discard" => {
            m.discard(ROOT, "w").unwrap();
        }
        "close" => m.close(ROOT, "w", true).unwrap(),
        "undo" => {
            m.undo(ROOT, "w").unwrap();
        }
        "write-back" => {
            let src = state.parent().unwrap().join("src");
            let dir = daemon::MountPoint::open(&src).unwrap();
            m.write_back(ROOT, "w", &dir).unwrap();
        }
        other => panic!("unknown action {other}"),
    }
    panic!("crash point {point} was not reached");
}

/// Runs the child for `action` with `point` armed; it must die by SIGABRT.
fn crash(state: &Path, action: &str, point: &str) {
    crash_after(state, action, point, None);
}

/// Runs the child for `action` with `point` armed after `skip` passes; it must
/// die by SIGABRT.
fn crash_after(state: &Path, action: &str, point: &str, skip: Option<usize>) {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("WS_CRASH_STATE", state)
        .env("WS_CRASH_POINT", point)
        .env("WS_CRASH_ACTION", action);
    if let Some(skip) = skip {
        child.env("WS_CRASH_SKIP", skip.to_string());
    }
    let out = child.output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(nix::libc::SIGABRT),
        "{action} at {point} (after {skip:?} passes) did not crash:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What every restart must give: a sound store and no mount left behind by a
/// workspace the database does not know.
fn check_consistent(m: &Manager, state: &Path) {
    let report = m.fsck(ROOT).unwrap();
    assert!(report.is_clean(), "fsck: {report:?}");
    let known: Vec<PathBuf> = m.list(ROOT).unwrap().into_iter().map(|w| w.path).collect();
    for mount in overlay::mount_table().unwrap() {
        if mount.target.starts_with(state) {
            assert!(
                known.contains(&mount.target),
                "stray mount {}",
                mount.target.display()
            );
        }
    }
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for mount in overlay::mount_table().unwrap_or_default() {
            if mount.target.starts_with(&self.0) {
                let _ = overlay::unmount(&mount.target);
            }
        }
    }
}

#[test]
fn a_crash_while_opening_leaves_no_workspace_or_the_whole_one() {
    if !privileged("a_crash_while_opening") {
        return;
    }
    for (point, opened) in [
        ("open-after-import", false),
        ("open-before-mount", false),
        ("open-before-batch", false),
        ("open-after-batch", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _cleanup = Cleanup(dir.path().to_owned());
        crash(&state, "open", point);
        let m = manager(&state);
        check_consistent(&m, &state);
        let list = m.list(ROOT).unwrap();
        assert_eq!(list.len(), usize::from(opened), "{point}: {list:?}");
        if opened {
            assert_eq!(list[0].state, State::Open);
            assert_eq!(
                std::fs::read_to_string(list[0].path.join("README")).unwrap(),
                "readme\n"
            );
        } else {
            // The name is free and opening works.
            let ws = open(&m, &source(dir.path()));
            assert_eq!(
                std::fs::read_to_string(ws.path.join("README")).unwrap(),
                "readme\n"
            );
        }
    }
}

#[test]
fn a_crash_while_committing_gives_the_old_or_the_new_state_with_the_edits() {
    if !privileged("a_crash_while_committing") {
        return;
    }
    for (point, committed) in [("commit-before-batch", false), ("commit-after-batch", true)] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _cleanup = Cleanup(dir.path().to_owned());
        let base = {
            let m = manager(&state);
            let ws = open(&m, &source(dir.path()));
            std::fs::write(ws.path.join("README"), "edited\n").unwrap();
            ws.source_digest
        };
        crash(&state, "commit", point);
        let m = manager(&state);
        check_consistent(&m, &state);
        let status = m.status(ROOT, "w").unwrap();
        assert_eq!(
            std::fs::read_to_string(status.workspace.path.join("README")).unwrap(),
            "edited\n"
        );
        let log: Vec<OpKind> = m.log(ROOT, "w").unwrap().iter().map(|e| e.op).collect();
        if committed {
            assert_ne!(status.workspace.source_digest, base, "{point}");
            assert!(status.changes.is_empty());
            assert_eq!(log, [OpKind::Open, OpKind::Commit]);
        } else {
            assert_eq!(status.workspace.source_digest, base, "{point}");
            assert_eq!(status.changes.len(), 1, "the edit is still there to commit");
            assert_eq!(log, [OpKind::Open]);
        }
    }
}

#[test]
fn a_crash_while_discarding_or_closing_gives_the_old_or_the_new_state() {
    if !privileged("a_crash_while_discarding_or_closing") {
        return;
    }
    for (action, point, gone) in [
        ("discard", "view-write-before-log", false),
        ("discard", "view-write-after-log", false),
        ("close", "close-after-unmount", false),
        ("close", "close-before-batch", false),
        ("close", "close-after-batch", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _cleanup = Cleanup(dir.path().to_owned());
        let path = {
            let m = manager(&state);
            let ws = open(&m, &source(dir.path()));
            std::fs::write(ws.path.join("scratch"), "scratch\n").unwrap();
            ws.path
        };
        crash(&state, action, point);
        let m = manager(&state);
        check_consistent(&m, &state);
        let list = m.list(ROOT).unwrap();
        if gone {
            assert!(list.is_empty(), "{point}");
            let snapshots = state.join("snapshots/overlayfs/snapshots");
            let dirs = std::fs::read_dir(&snapshots).unwrap().count();
            assert_eq!(dirs, 1, "{point}: only the base's directory is left");
            continue;
        }
        assert_eq!(list.len(), 1, "{point}");
        assert_eq!(list[0].state, State::Open, "{point}: mounted again");
        let status = m.status(ROOT, "w").unwrap();
        if action == "discard" {
            // The reversal was written (or finished at the restart).
            assert!(status.changes.is_empty(), "{point}");
            assert!(!path.join("scratch").exists());
        } else {
            assert_eq!(status.changes.len(), 1, "{point}: the edit survives");
        }
    }
}

#[test]
fn a_crash_while_undoing_gives_the_old_or_the_new_state_with_the_edits() {
    if !privileged("a_crash_while_undoing") {
        return;
    }
    for (point, undone) in [("undo-before-batch", false), ("undo-after-batch", true)] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _cleanup = Cleanup(dir.path().to_owned());
        let (base, committed) = {
            let m = manager(&state);
            let ws = open(&m, &source(dir.path()));
            std::fs::write(ws.path.join("README"), "edited\n").unwrap();
            let committed = m.commit(ROOT, "w", None).unwrap().workspace.source_digest;
            (ws.source_digest, committed)
        };
        crash(&state, "undo", point);
        let m = manager(&state);
        check_consistent(&m, &state);
        let status = m.status(ROOT, "w").unwrap();
        assert_eq!(
            std::fs::read_to_string(status.workspace.path.join("README")).unwrap(),
            "edited\n",
            "{point}: the view keeps its files"
        );
        let expected = if undone { base } else { committed };
        assert_eq!(status.workspace.source_digest, expected, "{point}");
        assert_eq!(status.changes.len(), usize::from(undone), "{point}");
    }
}

/// The edits of the reversal tests, one change each ([`EDITS`] of them): a file
/// changed, one added, a directory added, a file made a directory and a
/// directory made a file, a symlink and an executable added.
const EDITS: usize = 7;

fn edit_many(view: &Path) {
    std::fs::write(view.join("README"), "edited readme\n").unwrap();
    std::fs::write(view.join("added"), "added\n").unwrap();
    std::fs::remove_dir_all(view.join("sub")).unwrap();
    std::fs::write(view.join("sub"), "a file now\n").unwrap();
    std::fs::remove_file(view.join("data")).unwrap();
    std::fs::create_dir(view.join("data")).unwrap();
    std::fs::write(view.join("data/inside"), "inside\n").unwrap();
    std::fs::create_dir_all(view.join("newdir/deep")).unwrap();
    std::fs::write(view.join("newdir/deep/a"), "a\n").unwrap();
    std::fs::write(view.join("newdir/b"), "b\n").unwrap();
    std::os::unix::fs::symlink("README", view.join("link")).unwrap();
    std::fs::write(view.join("tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        view.join("tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
}

/// Every file, symlink and directory under `dir` with its content, in order.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name().min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap()
            .display()
            .to_string();
        let kind = entry.file_type();
        let what = if kind.is_symlink() {
            format!("-> {}", std::fs::read_link(entry.path()).unwrap().display())
        } else if kind.is_dir() {
            "dir".to_owned()
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata().unwrap().permissions().mode() & 0o100;
            format!(
                "{mode:o} {}",
                std::fs::read_to_string(entry.path()).unwrap()
            )
        };
        out.push((rel, what));
    }
    out
}

/// What a discard (or its undo) must leave however it was cut off: after the
/// restart the view holds `expected`, the log ends with `last`, the store is
/// sound, and no daemon temporary file is anywhere in the view.
fn check_finished(m: &Manager, state: &Path, expected: &[(String, String)], last: OpKind) {
    check_consistent(m, state);
    let status = m.status(ROOT, "w").unwrap();
    let view = &status.workspace.path;
    assert_eq!(snapshot(view), expected);
    assert!(status.workspace.pending.is_none());
    let log = m.log(ROOT, "w").unwrap();
    assert_eq!(log.last().unwrap().op, last, "{log:?}");
    assert!(
        snapshot(view).iter().all(|(p, _)| !p.contains(".wsd-")),
        "a daemon file is left: {:?}",
        snapshot(view)
    );
}

#[test]
fn a_discard_cut_off_at_any_path_is_finished_at_restart_and_undo_brings_back_every_edit() {
    if !privileged("a_discard_cut_off_at_any_path") {
        return;
    }
    let mut points: Vec<(&str, Option<usize>)> = vec![
        ("view-write-after-intent", None),
        ("view-write-before-log", None),
        ("view-write-after-log", None),
    ];
    // One crash after each path of the reversal but the last (after it comes
    // `view-write-before-log`).
    points.extend((0..EDITS - 1).map(|k| ("view-write-between-paths", Some(k))));
    for (point, skip) in points {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _cleanup = Cleanup(dir.path().to_owned());
        let (committed, edited) = {
            let m = manager(&state);
            let ws = open(&m, &source(dir.path()));
            let committed = snapshot(&ws.path);
            edit_many(&ws.path);
            (committed, snapshot(&ws.path))
        };
        crash_after(&state, "discard", point, skip);
        let m = manager(&state);
        check_finished(&m, &state, &committed, OpKind::Discard);
        let discard = m.log(ROOT, "w").unwrap().pop().unwrap();
        assert_eq!(
            discard.changes, EDITS as u64,
            "{point} {skip:?}: {discard:?}"
        );
        m.undo(ROOT, "w").unwrap();
        let view = m.status(ROOT, "w").unwrap().workspace.path;
        assert_eq!(
            snapshot(&view),
            edited,
            "{point} {skip:?}: undo brings back every edit"
        );
    }
}

#[test]
fn an_undo_of_a_discard_cut_off_at_any_path_is_finished_at_restart() {
    if !privileged("an_undo_of_a_discard_cut_off") {
        return;
    }
    let mut points: Vec<(&str, Option<usize>)> = vec![
        ("view-write-after-intent", None),
        ("view-write-before-log", None),
    ];
    points.extend((0..EDITS - 1).map(|k| ("view-write-between-paths", Some(k))));
    for (point, skip) in points {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _cleanup = Cleanup(dir.path().to_owned());
        let edited = {
            let m = manager(&state);
            let ws = open(&m, &source(dir.path()));
            edit_many(&ws.path);
            let edited = snapshot(&ws.path);
            m.discard(ROOT, "w").unwrap();
            edited
        };
        crash_after(&state, "undo", point, skip);
        let m = manager(&state);
        check_finished(&m, &state, &edited, OpKind::Undo);
    }
}

#[test]
fn a_write_back_cut_off_at_any_path_is_finished_by_running_it_again() {
    if !privileged("a_write_back_cut_off_at_any_path") {
        return;
    }
    // The write-back renames 5 files into place and removes one directory's
    // worth (sub/file, then sub).
    for skip in 0..7 {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _cleanup = Cleanup(dir.path().to_owned());
        let committed = {
            let m = manager(&state);
            let ws = open(&m, &source(dir.path()));
            std::fs::write(ws.path.join("README"), "edited readme\n").unwrap();
            std::fs::remove_dir_all(ws.path.join("sub")).unwrap();
            for name in ["a", "b", "c", "d"] {
                std::fs::write(ws.path.join(name), format!("{name}\n")).unwrap();
            }
            m.commit(ROOT, "w", None).unwrap();
            snapshot(&ws.path)
        };
        crash_after(&state, "write-back", "write-back-between-paths", Some(skip));
        let src = dir.path().join("src");
        let m = manager(&state);
        check_consistent(&m, &state);
        let report = m
            .write_back(ROOT, "w", &daemon::MountPoint::open(&src).unwrap())
            .unwrap_or_else(|e| panic!("after {skip} paths: {e}"));
        assert!(
            report.already > 0 || skip == 0,
            "after {skip} paths: {report:?}"
        );
        assert_eq!(snapshot(&src), committed, "after {skip} paths");
        assert!(
            snapshot(&src).iter().all(|(p, _)| !p.contains(".wsd-")),
            "after {skip} paths: a daemon file is left"
        );
    }
}

/// A write-back killed after its last rename and before its log entry leaves
/// the directory holding the committed tree, unrecorded. Its rerun finds
/// everything in place and must record it all the same: before, it logged
/// nothing, and the next write-back, taking the directory to still hold the
/// tree of the one before, refused every file as changed there since.
#[test]
fn a_write_back_killed_before_its_log_entry_is_recorded_by_its_rerun() {
    if !privileged("a_write_back_killed_before_its_log_entry_is_recorded_by_its_rerun") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _cleanup = Cleanup(dir.path().to_owned());
    let view = {
        let m = manager(&state);
        let ws = open(&m, &source(dir.path()));
        std::fs::write(ws.path.join("README"), "edited readme\n").unwrap();
        m.commit(ROOT, "w", None).unwrap();
        ws.path
    };
    crash(&state, "write-back", "write-back-before-log");
    let src = dir.path().join("src");
    let m = manager(&state);
    let point = || daemon::MountPoint::open(&src).unwrap();
    let rerun = m.write_back(ROOT, "w", &point()).unwrap();
    assert_eq!(rerun.written, 0, "{rerun:?}");
    assert!(rerun.already > 0, "{rerun:?}");
    std::fs::write(view.join("README"), "edited again\n").unwrap();
    m.commit(ROOT, "w", None).unwrap();
    let next = m
        .write_back(ROOT, "w", &point())
        .unwrap_or_else(|e| panic!("the write-back after: {}", daemon::error::message(&e)));
    assert_eq!(next.written, 1, "{next:?}");
    assert_eq!(
        std::fs::read_to_string(src.join("README")).unwrap(),
        "edited again\n"
    );
}
