//! Imports take turns across users (`manager::long_work`): with one import at a
//! time, a user who asks for one while another user has four queued gets the
//! next slot, not the fifth. Real users (`wstest1` opens four workspaces over
//! directories of their own, `wstest2` one), a root manager.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use daemon::project::parse_daemon_config;
use daemon::{Caller, Manager, OpenRequest, Source, StateDir};
use overlay::testsuite::privileged;

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod support;

/// Files in each directory: enough that an import takes a while.
const FILES: usize = 4000;

fn users() -> [Caller; 2] {
    support::users().map(|u| Caller {
        uid: u.uid,
        gid: u.gid,
    })
}

/// A directory of `caller`'s with `FILES` files, all its own.
fn source(dir: &Path, name: &str, caller: Caller) -> PathBuf {
    let root = dir.join(name);
    std::fs::create_dir(&root).unwrap();
    for i in 0..FILES {
        std::fs::write(root.join(format!("f{i}")), format!("{name} {i}\n")).unwrap();
    }
    for entry in std::fs::read_dir(&root).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(caller.uid), Some(caller.gid))
            .unwrap();
    }
    std::os::unix::fs::chown(&root, Some(caller.uid), Some(caller.gid)).unwrap();
    root
}

#[test]
fn a_user_with_one_import_goes_before_another_users_queue() {
    if !privileged("a_user_with_one_import_goes_before_another_users_queue") {
        return;
    }
    let dir = support::shared_tempdir();
    let [a, b] = users();
    let theirs: Vec<PathBuf> = (0..4)
        .map(|i| source(dir.path(), &format!("a{i}"), a))
        .collect();
    let mine = source(dir.path(), "b0", b);
    let config =
        parse_daemon_config(&dir.path().join("wsd.toml"), "[limits]\nmax-imports = 1\n").unwrap();
    let m = Manager::open_configured(StateDir::new(dir.path().join("state")), config).unwrap();
    let done = Mutex::new(Vec::new());
    let open = |caller: Caller, name: String, src: PathBuf| {
        m.open_workspace(
            caller,
            OpenRequest {
                name: name.clone(),
                source: Source::Dir(src),
                path: None,
                backend: None,
            },
        )
        .unwrap();
        done.lock().unwrap().push(name);
    };
    std::thread::scope(|scope| {
        for (i, src) in theirs.iter().enumerate() {
            let open = &open;
            scope.spawn(move || open(a, format!("a{i}"), src.clone()));
        }
        // wstest1's four are queued, the first one running.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            done.lock().unwrap().is_empty(),
            "an import of {FILES} files ended within 200 ms: the test cannot queue behind it"
        );
        let open = &open;
        scope.spawn(move || open(b, "b0".into(), mine.clone()));
    });
    let order = done.into_inner().unwrap();
    for (caller, name) in order.iter().map(|n| (if n == "b0" { b } else { a }, n)) {
        m.close(caller, name, true).unwrap();
    }
    let rank = order.iter().position(|n| n == "b0").unwrap() + 1;
    // Without turns it would be fifth; without a bound on imports, the five
    // run at once and end in any order.
    assert_eq!(
        rank, 2,
        "wstest2's import should take the slot after wstest1's first: {order:?}"
    );
}
