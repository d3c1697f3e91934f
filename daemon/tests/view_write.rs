//! Writes through a view while the user edits: an edit saved while a discard
//! runs is never overwritten by it, and shows in the next status. The edit is
//! made from the crash point between two paths of the reversal (a callback, in a
//! test binary of its own: failpoints are global to the process).

use std::path::Path;

use daemon::{Caller, Manager, OpenRequest, Source, StateDir};
use overlay::BackendKind;
use overlay::testsuite::privileged;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

#[test]
fn an_edit_saved_while_a_discard_runs_is_kept_and_shows_in_the_next_status() {
    if !privileged("an_edit_saved_while_a_discard_runs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(src.join(name), format!("{name}\n")).unwrap();
    }
    let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
    let ws = m
        .open_workspace(
            ROOT,
            OpenRequest {
                name: "w".into(),
                source: Source::Dir(src.clone()),
                path: None,
                backend: Some(BackendKind::Overlayfs),
            },
        )
        .unwrap();
    let view = ws.path.clone();
    for name in ["a", "b", "c"] {
        std::fs::write(view.join(name), format!("{name} edited\n")).unwrap();
    }
    // After the reversal of `a`, the editor saves `c` again, before the
    // reversal reaches it, and adds a new file.
    let saved = view.clone();
    fail::cfg_callback("view-write-between-paths", move || {
        let c = saved.join("c");
        if std::fs::read_to_string(&c).unwrap() == "c edited\n" {
            std::fs::write(&c, "c saved during the discard\n").unwrap();
            std::fs::write(saved.join("new"), "new\n").unwrap();
        }
    })
    .unwrap();
    let dropped = m.discard(ROOT, "w").unwrap();
    fail::remove("view-write-between-paths");
    assert_eq!(dropped.len(), 3, "the discard dropped what it captured");
    assert_eq!(read(&view, "a"), "a\n");
    assert_eq!(read(&view, "b"), "b\n");
    assert_eq!(
        read(&view, "c"),
        "c saved during the discard\n",
        "never overwritten"
    );
    let status = m.status(ROOT, "w").unwrap();
    let changed: Vec<&str> = status.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        changed,
        ["c", "new"],
        "the edits made meanwhile are in the next status"
    );
    // The discard's own edits come back with undo once those are dealt with.
    m.commit(ROOT, "w", None).unwrap();
    let log = m.log(ROOT, "w").unwrap();
    assert_eq!(log.len(), 3, "open, discard, commit: {log:?}");
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}
