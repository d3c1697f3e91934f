//! Builds that share a remote cache: two state directories stand for two
//! machines (A, a CI runner that pushes; B, a developer's that pulls), each with
//! its own daemon library, store and database, and the same project. Real
//! sandboxes (root) and a real BuildGrid.

use std::path::{Path, PathBuf};

use daemon::manager::RemoteOptions;
use daemon::manager::build::{ElementOpen, ElementResult, TransferTarget, Unobserved};
use daemon::sandbox::Cancel;
use daemon::{Caller, ErrorKind, Manager, StateDir};
use overlay::testsuite::privileged;
use treediff::{Dir, Node};

use super::{nonce, server, server_cas};

pub(super) const ROOT: Caller = Caller { uid: 0, gid: 0 };

pub(super) fn manager(state: &Path) -> Manager {
    let mut m = Manager::open(StateDir::new(state.to_owned())).unwrap();
    m.set_sandbox_exe(PathBuf::from(env!("CARGO_BIN_EXE_wsd")));
    m
}

/// The element `app` of the projects: its first command runs once per
/// buildtree (it leaves `part` behind, an hour in the future like a build on a
/// machine whose clock is ahead), its second fails until the sources hold
/// `fixed`. `nonce` makes its key new in every run.
pub(super) fn app(nonce: &str) -> String {
    format!(
        "[element.base]\nkind = \"import\"\nsources = \"base\"\n\n\
         [element.app]\nsources = \"src\"\ndepends = [\"base\"]\n\
         build = [\"[ -f part ] || {{ echo {nonce} $(cat /proc/sys/kernel/random/uuid) > part; touch -d '1 hour' part; }}\", \"test -f fixed\"]\n\
         install = [\"cp part $WS_INSTALLDIR/part\"]\n"
    )
}

/// A machine: its state and its copy of the project.
pub(super) struct Machine {
    pub(super) m: Manager,
    pub(super) project: PathBuf,
}

/// A machine `name` with the project `toml`, whose sources (the imported `base`
/// too) are unique to `nonce`, so that no other test or run shares their keys.
pub(super) fn machine(dir: &Path, name: &str, toml: &str, nonce: &str) -> Machine {
    let project = dir.join(name).join("project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::create_dir_all(project.join("base")).unwrap();
    std::fs::write(project.join("src/input"), "input\n").unwrap();
    std::fs::write(
        project.join("base/header.h"),
        format!("#define BASE 1 /* {nonce} */\n"),
    )
    .unwrap();
    std::fs::write(project.join("ws.toml"), toml).unwrap();
    Machine {
        m: manager(&dir.join(name).join("state")),
        project,
    }
}

impl Machine {
    pub(super) fn build(
        &self,
        options: RemoteOptions,
    ) -> Vec<daemon::manager::build::ElementReport> {
        let options = daemon::manager::build::BuildOptions {
            remotes: options,
            ..Default::default()
        };
        self.m
            .build_with(
                ROOT,
                &self.project,
                "app",
                options,
                &Unobserved,
                &Cancel::new(),
            )
            .unwrap()
    }
}

/// A user configuration naming the remote at `url`, pull only.
pub(super) fn user_config(dir: &Path, url: &str) -> RemoteOptions {
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("[[remote]]\nurl = \"{url}\"\n")).unwrap();
    RemoteOptions {
        user_config: Some(path),
        disabled: false,
    }
}

/// The content of the file `name` at the top of `tree`.
pub(super) fn file_in(m: &Manager, tree: treediff::Digest, name: &str) -> String {
    let dir = Dir::read(m.store(), tree, "").unwrap();
    let entry = dir.entries().iter().find(|e| e.name == name).unwrap();
    let Node::File { digest, .. } = &entry.node else {
        panic!("{name} is not a file")
    };
    String::from_utf8(m.store().read(digest).unwrap().into_bytes()).unwrap()
}

#[test]
fn a_build_that_failed_on_one_machine_continues_on_another() {
    let test = "a_build_that_failed_on_one_machine_continues_on_another";
    if !privileged(test) {
        return;
    }
    let Some(url) = server(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let nonce = nonce(test);
    // A's project file names the remote, with push; B's does not: remotes are
    // not part of any key. B names it in its user configuration, pull only.
    let a = machine(
        dir.path(),
        "a",
        &format!(
            "[[remote]]\nurl = \"{url}\"\npush = true\n\n{}",
            app(&nonce)
        ),
        &nonce,
    );
    let b = machine(dir.path(), "b", &app(&nonce), &nonce);
    let b_remote = user_config(dir.path(), &url);

    let failed = a.build(RemoteOptions::default());
    let (base, app) = (&failed[0], &failed[1]);
    assert_eq!(base.result, ElementResult::Built);
    assert_eq!(app.result, ElementResult::Failed, "{app:?}");
    assert_eq!(app.remote.pushed_to, vec![url.clone()], "{app:?}");
    assert_eq!(base.remote.pushed_to, vec![url.clone()], "{base:?}");
    let part = file_in(&a.m, app.buildtree.unwrap(), "part");

    let opened =
        b.m.open_element(
            ROOT,
            ElementOpen {
                project_dir: b.project.clone(),
                element: "app".into(),
                fresh: false,
                path: None,
                backend: None,
                remotes: b_remote.clone(),
            },
        )
        .unwrap();
    assert_eq!(
        opened.cache_key, app.cache_key,
        "the same key on both machines"
    );
    assert!(opened.continues_failed_build);
    assert_eq!(opened.pulled_from.as_deref(), Some(url.as_str()));
    // The fix, made in B's workspace.
    std::fs::write(opened.workspace.path.join("fixed"), "").unwrap();

    let continued = b.build(b_remote.clone());
    let app_b = continued.last().unwrap();
    assert_eq!(app_b.result, ElementResult::Built, "{app_b:?}");
    assert!(app_b.incremental, "{app_b:?}");
    assert_eq!(
        file_in(&b.m, app_b.artifact.unwrap(), "part"),
        part,
        "the first step did not run again: its output came from A"
    );
    assert!(app_b.remote.problems.is_empty(), "{app_b:?}");
}

#[test]
fn an_artifact_built_on_one_machine_is_reused_on_another_with_nothing_run() {
    let test = "an_artifact_built_on_one_machine_is_reused_on_another";
    if !privileged(test) {
        return;
    }
    let Some(url) = server(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let nonce = nonce(test);
    let toml = format!(
        "[[remote]]\nurl = \"{url}\"\npush = true\n\n{}",
        app(&nonce)
    );
    let a = machine(dir.path(), "a", &toml, &nonce);
    std::fs::write(a.project.join("src/fixed"), "").unwrap();
    let b = machine(dir.path(), "b", &toml, &nonce);
    std::fs::write(b.project.join("src/fixed"), "").unwrap();

    let built = a.build(RemoteOptions::default());
    assert_eq!(built[1].result, ElementResult::Built, "{built:?}");
    let reused = b.build(RemoteOptions::default());
    for (a_report, b_report) in built.iter().zip(&reused) {
        assert_eq!(b_report.commands_run, 0);
        assert_eq!(b_report.cache_key, a_report.cache_key);
        assert_eq!(b_report.artifact, a_report.artifact);
    }
    // The import is its sources, which B has; the build comes from A.
    assert_eq!(reused[0].result, ElementResult::Built);
    assert!(reused[0].remote.pulled_from.is_none());
    let app_b = &reused[1];
    assert_eq!(app_b.result, ElementResult::Cached, "{app_b:?}");
    assert_eq!(app_b.remote.pulled_from.as_deref(), Some(url.as_str()));
    assert!(
        app_b.message.as_deref().unwrap().contains("pulled from"),
        "{app_b:?}"
    );
    assert_eq!(
        file_in(&b.m, reused[1].artifact.unwrap(), "part"),
        file_in(&a.m, built[1].artifact.unwrap(), "part")
    );
    // Now it is local: the next build asks no remote.
    let again = b.build(RemoteOptions::default());
    assert!(
        again
            .iter()
            .all(|r| r.result == ElementResult::Cached && r.remote.pulled_from.is_none())
    );

    // `--no-remote` on a third machine builds it itself.
    let c = machine(dir.path(), "c", &toml, &nonce);
    std::fs::write(c.project.join("src/fixed"), "").unwrap();
    let local = c.build(RemoteOptions {
        disabled: true,
        ..Default::default()
    });
    assert_eq!(local[1].result, ElementResult::Built);
    assert!(local[1].remote.pushed_to.is_empty());
}

#[test]
fn push_and_pull_by_element_and_by_key() {
    let test = "push_and_pull_by_element_and_by_key";
    if !privileged(test) {
        return;
    }
    let Some(url) = server(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let nonce = nonce(test);
    let a = machine(dir.path(), "a", &app(&nonce), &nonce);
    std::fs::write(a.project.join("src/fixed"), "").unwrap();
    let built = a.build(RemoteOptions::default());
    let key = built[1].cache_key.clone();

    // Nothing is configured to take pushes: refused, naming what to set.
    let pushing = user_config(dir.path(), &url);
    let e =
        a.m.push(
            ROOT,
            TransferTarget::Element {
                project_dir: a.project.clone(),
                element: "app".into(),
            },
            &pushing,
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("push = true"), "{e}");

    std::fs::write(
        dir.path().join("config.toml"),
        format!("[[remote]]\nurl = \"{url}\"\npush = true\n"),
    )
    .unwrap();
    let pushed =
        a.m.push(
            ROOT,
            TransferTarget::Element {
                project_dir: a.project.clone(),
                element: "app".into(),
            },
            &pushing,
        )
        .unwrap();
    assert_eq!(pushed.cache_key, key);
    assert!(pushed.transfers[0].moved_blobs > 0, "{pushed:?}");
    let again =
        a.m.push(
            ROOT,
            TransferTarget::Key {
                key: key.clone(),
                project_dir: None,
            },
            &pushing,
        )
        .unwrap();
    assert_eq!(again.transfers[0].moved_blobs, 0, "nothing is sent twice");

    // B pulls by key alone (no project): the entry carries the sources too.
    let b = manager(&dir.path().join("b-state"));
    let pulled = b
        .pull(
            ROOT,
            TransferTarget::Key {
                key: key.clone(),
                project_dir: None,
            },
            &pushing,
        )
        .unwrap();
    assert_eq!(pulled.element, "app");
    assert_eq!(pulled.artifact, built[1].artifact);
    assert_eq!(pulled.buildtree, built[1].buildtree);
    let record = b.artifact(0, &key).unwrap().unwrap();
    assert_eq!(
        record.source_digest,
        a.m.artifact(0, &key).unwrap().unwrap().source_digest
    );
    assert!(record.newest_mtime.is_some());

    // A key nobody built is a clear miss.
    let unknown = daemon::project::CacheKey::parse(&"7".repeat(64)).unwrap();
    let e = b
        .pull(
            ROOT,
            TransferTarget::Key {
                key: unknown,
                project_dir: None,
            },
            &pushing,
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no remote cache has a usable result"),
        "{e}"
    );
}

#[test]
fn a_corrupt_remote_entry_is_a_miss_and_the_build_runs_here() {
    let test = "a_corrupt_remote_entry_is_a_miss_and_the_build_runs_here";
    if !privileged(test) {
        return;
    }
    let (Some(url), Some(cas)) = (server(test), server_cas(test)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nonce = nonce(test);
    let toml = format!(
        "[[remote]]\nurl = \"{url}\"\npush = true\n\n{}",
        app(&nonce)
    );
    let a = machine(dir.path(), "a", &toml, &nonce);
    std::fs::write(a.project.join("src/fixed"), "").unwrap();
    let built = a.build(RemoteOptions::default());
    assert_eq!(built[1].remote.pushed_to, vec![url.clone()]);

    // Damage the artifact's one file on the server (its name is the SHA-256
    // of its content, which only this test's build wrote).
    let part = file_in(&a.m, built[1].artifact.unwrap(), "part");
    let sha = sha256_hex(part.as_bytes());
    let object = cas.join(&sha[..2]).join(&sha[2..]);
    std::fs::write(&object, "not what was built\n").unwrap();

    let b = machine(dir.path(), "b", &toml, &nonce);
    std::fs::write(b.project.join("src/fixed"), "").unwrap();
    let rebuilt = b.build(RemoteOptions::default());
    let app_b = &rebuilt[1];
    assert_eq!(app_b.result, ElementResult::Built, "{app_b:?}");
    assert!(app_b.commands_run > 0);
    assert!(
        app_b
            .remote
            .problems
            .iter()
            .any(|p| p.contains("unusable") && p.contains("corrupt")),
        "{app_b:?}"
    );
    assert_ne!(
        file_in(&b.m, app_b.artifact.unwrap(), "part"),
        "not what was built\n"
    );
}

#[test]
fn an_unreachable_remote_is_noted_and_local_work_goes_on() {
    let test = "an_unreachable_remote_is_noted_and_local_work_goes_on";
    if !privileged(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nonce = nonce(test);
    // Port 1 on loopback: nothing listens there.
    let toml = format!(
        "[[remote]]\nurl = \"grpc://127.0.0.1:1\"\npush = true\n\n{}",
        app(&nonce)
    );
    let a = machine(dir.path(), "a", &toml, &nonce);
    std::fs::write(a.project.join("src/fixed"), "").unwrap();
    let built = a.build(RemoteOptions::default());
    let app = &built[1];
    assert_eq!(app.result, ElementResult::Built, "{app:?}");
    assert!(
        app.remote
            .problems
            .iter()
            .any(|p| p.starts_with("grpc://127.0.0.1:1: ") && p.contains("GetCapabilities")),
        "{app:?}"
    );
    let e =
        a.m.pull(
            ROOT,
            TransferTarget::Element {
                project_dir: a.project.clone(),
                element: "app".into(),
            },
            &RemoteOptions::default(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    daemon::remote::Function::Sha256.digest(bytes).hex()
}
