//! Whose record a pull makes (docs/security.md, "Reuse across users"): the
//! caller's own, which no other user reuses, unless the daemon's configuration
//! trusts the remote and the daemon has no record under the key yet. Every
//! build of `app` writes a random `part`, so each record shows whose build it
//! came from. Machine A (root, a CI runner) pushes; on machine B root built
//! the same key itself, and the users `wstest1` and `wstest2` pull and build.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use daemon::manager::RemoteOptions;
use daemon::manager::build::{BuildOptions, ElementResult, TransferTarget, Unobserved};
use daemon::project::parse_daemon_config;
use daemon::sandbox::Cancel;
use daemon::{Caller, Manager, StateDir};
use overlay::testsuite::privileged;

use super::builds::{ROOT, app, file_in, machine, user_config};
use super::support;
use super::{nonce, server};

fn users() -> [Caller; 2] {
    support::users().map(|u| Caller {
        uid: u.uid,
        gid: u.gid,
    })
}

/// What `part` the artifact recorded by `producer` under the key holds.
fn part_of(m: &Manager, producer: u32, key: &daemon::project::CacheKey) -> Option<String> {
    let record = m.artifact_of(producer, key).unwrap()?;
    Some(file_in(m, record.artifact.unwrap(), "part"))
}

fn build(m: &Manager, caller: Caller, project: &Path) -> (ElementResult, String) {
    let report = m
        .build_with(
            caller,
            project,
            "app",
            BuildOptions {
                remotes: RemoteOptions {
                    user_config: None,
                    disabled: true,
                },
                ..BuildOptions::default()
            },
            &Unobserved,
            &Cancel::new(),
        )
        .unwrap()
        .pop()
        .unwrap();
    (report.result, file_in(m, report.artifact.unwrap(), "part"))
}

fn pull(m: &Manager, caller: Caller, project: &Path, remote: &RemoteOptions) {
    m.pull(
        caller,
        TransferTarget::Element {
            project_dir: project.to_owned(),
            element: "app".into(),
        },
        remote,
    )
    .unwrap();
}

#[test]
fn a_users_pull_is_theirs_alone_unless_the_daemon_trusts_the_remote() {
    let test = "a_users_pull_is_theirs_alone_unless_the_daemon_trusts_the_remote";
    if !privileged(test) {
        return;
    }
    let Some(url) = server(test) else { return };
    let dir = support::shared_tempdir();
    let nonce = nonce(test);
    let a = machine(
        dir.path(),
        "a",
        &format!(
            "[[remote]]\nurl = \"{url}\"\npush = true\n\n{}",
            app(&nonce)
        ),
        &nonce,
    );
    std::fs::write(a.project.join("src/fixed"), "").unwrap();
    let pushed = a.build(RemoteOptions::default()).pop().unwrap();
    assert_eq!(pushed.remote.pushed_to, vec![url.clone()], "{pushed:?}");
    let key = pushed.cache_key.clone();
    let from_a = file_in(&a.m, pushed.artifact.unwrap(), "part");

    let b = machine(dir.path(), "b", &app(&nonce), &nonce);
    std::fs::write(b.project.join("src/fixed"), "").unwrap();
    let (_, roots) = build(&b.m, ROOT, &b.project);
    assert_ne!(roots, from_a, "two builds, two parts");
    // The users may read the project and the configuration naming the remote.
    for d in [dir.path().join("b"), b.project.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let remote = user_config(dir.path(), &url);

    // wstest1's pull is theirs: root's record stays, wstest2 reuses root's.
    let [one, two] = users();
    pull(&b.m, one, &b.project, &remote);
    assert_eq!(part_of(&b.m, one.uid, &key), Some(from_a.clone()));
    assert_eq!(
        part_of(&b.m, ROOT.uid, &key),
        Some(roots.clone()),
        "a user's pull replaced root's record"
    );
    assert_eq!(
        build(&b.m, two, &b.project),
        (ElementResult::Cached, roots.clone())
    );
    assert_eq!(
        build(&b.m, one, &b.project),
        (ElementResult::Cached, from_a.clone())
    );

    // A daemon that trusts the remote records a pull as its own when it has
    // none, and every user reuses it; with one, the pull stays the caller's.
    let config = parse_daemon_config(
        &dir.path().join("wsd.toml"),
        &format!("[[trusted-remote]]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let c = machine(dir.path(), "c", &app(&nonce), &nonce);
    std::fs::write(c.project.join("src/fixed"), "").unwrap();
    drop(c.m);
    let trusting = |name: &str| {
        let mut m = Manager::open_configured(
            StateDir::new(dir.path().join(name).join("state")),
            config.clone(),
        )
        .unwrap();
        m.set_sandbox_exe(std::path::PathBuf::from(env!("CARGO_BIN_EXE_wsd")));
        m
    };
    let c_m = trusting("c");
    for d in [dir.path().join("c"), c.project.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    pull(&c_m, one, &c.project, &remote);
    assert_eq!(part_of(&c_m, ROOT.uid, &key), Some(from_a.clone()));
    assert_eq!(part_of(&c_m, one.uid, &key), None);
    assert_eq!(
        build(&c_m, two, &c.project),
        (ElementResult::Cached, from_a.clone())
    );

    drop(b.m);
    let b_m = trusting("b");
    pull(&b_m, two, &b.project, &remote);
    assert_eq!(
        part_of(&b_m, ROOT.uid, &key),
        Some(roots),
        "root's record stays"
    );
    assert_eq!(part_of(&b_m, two.uid, &key), Some(from_a));
}
