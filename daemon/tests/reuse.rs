//! Whose results a build reuses: its caller's own, else the daemon's (a root
//! daemon's builds for root, and its pulls from the remotes its configuration
//! trusts), never another user's. A user's build runs as them, and they can
//! reach it through `/proc` while it runs, so what it records may hold anything
//! they put there. The element here installs the uid that built it, which
//! stands for such a trojan: the cache key is the same for every user, the
//! artifact is not. Real users (`wstest1`, `wstest2`), real sandboxes.

use std::path::{Path, PathBuf};

use daemon::manager::build::{ElementOpen, ElementReport, ElementResult, Unobserved};
use daemon::sandbox::Cancel;
use daemon::{Caller, Manager, StateDir};
use overlay::testsuite::privileged;
use treediff::{Dir, Node};

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod support;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn users() -> [Caller; 2] {
    support::users().map(|u| Caller {
        uid: u.uid,
        gid: u.gid,
    })
}

fn manager(state: &Path) -> Manager {
    let mut m = Manager::open(StateDir::new(state.to_owned())).unwrap();
    m.set_sandbox_exe(PathBuf::from(env!("CARGO_BIN_EXE_wsd")));
    m
}

/// A project every user may read: `a` installs `who` (the uid of its build),
/// `broken` fails after leaving `who` in its buildtree.
fn project(dir: &Path) -> PathBuf {
    let root = dir.join("project");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/input"), "input\n").unwrap();
    std::fs::write(
        root.join("ws.toml"),
        "[element.a]\nsources = \"src\"\ninstall = [\"id -u > $WS_INSTALLDIR/who\"]\n\n\
         [element.broken]\nsources = \"src\"\nbuild = [\"id -u > who\", \"false\"]\n",
    )
    .unwrap();
    root
}

fn build(m: &Manager, caller: Caller, p: &Path, element: &str) -> ElementReport {
    m.build(caller, p, element, &Unobserved, &Cancel::new())
        .unwrap()
        .pop()
        .unwrap()
}

/// The uid the artifact of `report` says built it.
fn who(m: &Manager, report: &ElementReport) -> u32 {
    let tree = report.artifact.expect("an artifact");
    let dir = Dir::read(m.store(), tree, "").unwrap();
    let entry = dir.entries().iter().find(|e| e.name == "who").unwrap();
    let Node::File { digest, .. } = &entry.node else {
        panic!("who is not a file")
    };
    let text = String::from_utf8(m.store().read(digest).unwrap().into_bytes()).unwrap();
    text.trim().parse().unwrap()
}

#[test]
fn a_user_never_reuses_what_another_user_built() {
    if !privileged("a_user_never_reuses_what_another_user_built") {
        return;
    }
    let dir = support::shared_tempdir();
    let p = project(dir.path());
    let m = manager(&dir.path().join("state"));
    let [a, b] = users();

    let theirs = build(&m, b, &p, "a");
    assert_eq!(
        (theirs.result, who(&m, &theirs)),
        (ElementResult::Built, b.uid)
    );
    let mine = build(&m, a, &p, "a");
    assert_eq!(mine.cache_key, theirs.cache_key, "one key for everyone");
    assert_eq!(
        (mine.result, who(&m, &mine)),
        (ElementResult::Built, a.uid),
        "a user reused another user's artifact"
    );
    // Each reuses their own from now on, and root reuses neither.
    let again = build(&m, a, &p, "a");
    assert_eq!(
        (again.result, who(&m, &again)),
        (ElementResult::Cached, a.uid)
    );
    let again = build(&m, b, &p, "a");
    assert_eq!(
        (again.result, who(&m, &again)),
        (ElementResult::Cached, b.uid)
    );
    let roots = build(&m, ROOT, &p, "a");
    assert_eq!((roots.result, who(&m, &roots)), (ElementResult::Built, 0));
    // `ws show` tells each what they would get.
    let shown = m.show(a, &p, "a").unwrap().pop().unwrap();
    assert_eq!(shown.state, daemon::manager::build::ElementState::Cached);
}

#[test]
fn what_root_built_is_reused_by_every_user() {
    if !privileged("what_root_built_is_reused_by_every_user") {
        return;
    }
    let dir = support::shared_tempdir();
    let p = project(dir.path());
    let m = manager(&dir.path().join("state"));
    let roots = build(&m, ROOT, &p, "a");
    assert_eq!(roots.result, ElementResult::Built);
    for user in users() {
        let reused = build(&m, user, &p, "a");
        assert_eq!(
            (reused.result, who(&m, &reused), reused.commands_run),
            (ElementResult::Cached, 0, 0)
        );
    }
}

#[test]
fn a_workspace_continues_only_its_owners_failed_build() {
    if !privileged("a_workspace_continues_only_its_owners_failed_build") {
        return;
    }
    let dir = support::shared_tempdir();
    let p = project(dir.path());
    let m = manager(&dir.path().join("state"));
    let [a, b] = users();
    let failed = build(&m, b, &p, "broken");
    assert_eq!(failed.result, ElementResult::Failed);
    let open = |caller: Caller| {
        m.open_element(
            caller,
            ElementOpen {
                project_dir: p.clone(),
                element: "broken".into(),
                fresh: false,
                path: None,
                backend: None,
                remotes: Default::default(),
            },
        )
        .unwrap()
    };
    let opened = open(a);
    assert!(
        !opened.continues_failed_build,
        "a workspace continued another user's failed build"
    );
    m.close(a, "broken", true).unwrap();
    assert!(
        open(b).continues_failed_build,
        "its owner's workspace continues it"
    );
    m.close(b, "broken", true).unwrap();
}
