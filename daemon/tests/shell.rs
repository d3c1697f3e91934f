//! `Manager::shell`: a command in an element's build environment, on its
//! sources or its buildtree, on a layer whose changes are dropped. Real RocksDB,
//! mounts and sandboxes (root).

use std::io::Read;
use std::path::{Path, PathBuf};

use daemon::manager::build::{
    ElementOpen, ElementResult, ShellEnd, ShellRequest, ShellStdio, Unobserved,
};
use daemon::sandbox::Cancel;
use daemon::{Caller, Error, ErrorKind, Manager, StateDir};
use overlay::testsuite::privileged;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// A base import (`include/base.h`) and `app`, whose commands are `build`.
fn project(dir: &Path, build: &str) -> PathBuf {
    let root = dir.join("project");
    std::fs::create_dir_all(root.join("base/include")).unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("base/include/base.h"), "#define BASE 1\n").unwrap();
    std::fs::write(root.join("src/input"), "input\n").unwrap();
    std::fs::write(
        root.join("ws.toml"),
        format!(
            "[element.base]\nkind = \"import\"\nsources = \"base\"\n\n[element.app]\nsources = \"src\"\ndepends = [\"base\"]\nenv = {{ GREETING = \"hello from ws.toml\" }}\nbuild = [{build:?}]\n"
        ),
    )
    .unwrap();
    root
}

fn manager(state: &Path) -> Manager {
    let mut m = Manager::open(StateDir::new(state.to_owned())).unwrap();
    m.set_sandbox_exe(PathBuf::from(env!("CARGO_BIN_EXE_wsd")));
    m
}

/// Runs `script` with `sh -c` in `element`'s environment as root; returns how
/// it ended, what it printed (stdout and stderr) and what the daemon said it
/// runs on.
fn shell(
    m: &Manager,
    project: &Path,
    element: &str,
    buildtree: bool,
    script: &str,
) -> (Result<ShellEnd, Error>, String, String) {
    shell_as(m, ROOT, project, element, buildtree, script)
}

/// [`shell`] as `caller`.
fn shell_as(
    m: &Manager,
    caller: Caller,
    project: &Path,
    element: &str,
    buildtree: bool,
    script: &str,
) -> (Result<ShellEnd, Error>, String, String) {
    let (stdin, stdin_w) = std::io::pipe().unwrap();
    drop(stdin_w);
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let err_w = out_w.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        out_r.read_to_string(&mut out).unwrap();
        out
    });
    let mut on = String::new();
    let end = m.shell(
        caller,
        project,
        element,
        ShellRequest {
            buildtree,
            command: vec!["sh".into(), "-c".into(), script.into()],
            terminal: false,
        },
        ShellStdio {
            stdin: stdin.into(),
            stdout: out_w.into(),
            stderr: err_w.into(),
        },
        &mut |what| on = what.to_owned(),
        &Cancel::new(),
    );
    (end, reader.join().unwrap(), on)
}

/// Nothing a shell made is left behind: nothing mounted, and its directory
/// goes (removed in the background, off the caller's path).
fn assert_nothing_left(state: &Path) {
    let builds = state.join("builds");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(builds.to_str().unwrap()),
        "mounted under {}",
        builds.display()
    );
    let left = || -> Vec<_> {
        std::fs::read_dir(&builds)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(left().is_empty(), "left in builds/: {:?}", left());
}

#[test]
fn a_shell_runs_in_the_build_environment_of_the_sources() {
    if !privileged("a_shell_runs_in_the_build_environment_of_the_sources") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let m = manager(&state);
    let p = project(dir.path(), "cp input $WS_INSTALLDIR/");
    m.build(ROOT, &p, "app", &Unobserved, &Cancel::new())
        .unwrap();
    let (end, out, on) = shell(
        &m,
        &p,
        "app",
        false,
        "pwd; cat input; cat $WS_SYSROOT/include/base.h; echo $GREETING; echo scribble > input; exit 4",
    );
    let end = end.unwrap();
    assert_eq!(end.code, 4, "{out}");
    assert!(!end.cancelled && end.stray_writes.is_empty());
    assert_eq!(
        out,
        "/ws/build\ninput\n#define BASE 1\nhello from ws.toml\n"
    );
    assert_eq!(on, "its sources");
    // The shell wrote through its own layer only.
    assert_eq!(
        std::fs::read_to_string(p.join("src/input")).unwrap(),
        "input\n"
    );
    let (_, again, _) = shell(&m, &p, "app", false, "cat input");
    assert_eq!(again, "input\n");
    assert_nothing_left(&state);
}

#[test]
fn a_shell_on_a_failed_buildtree_sees_its_outputs_and_changes_nothing() {
    if !privileged("a_shell_on_a_failed_buildtree_sees_its_outputs_and_changes_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let m = manager(&state);
    let p = project(dir.path(), "echo half-done > part.o; exit 1");
    let failed = m
        .build(ROOT, &p, "app", &Unobserved, &Cancel::new())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(failed.result, ElementResult::Failed);

    let (end, out, on) = shell(
        &m,
        &p,
        "app",
        true,
        "cat part.o; rm part.o; echo more > new.o; echo stray > /etc/ws-shell-test",
    );
    let end = end.unwrap();
    assert_eq!(end.code, 0, "{out}");
    assert_eq!(out, "half-done\n");
    assert!(on.starts_with("its failed buildtree (key "), "{on}");
    assert_eq!(end.stray_writes, vec!["/etc/ws-shell-test".to_owned()]);
    assert!(!Path::new("/etc/ws-shell-test").exists());

    // The cached buildtree is as the build left it.
    let (_, out, _) = shell(&m, &p, "app", true, "cat part.o; ls new.o 2>&1 || true");
    assert!(
        out.starts_with("half-done\n") && out.contains("No such file"),
        "{out}"
    );
    let record = m.artifact(0, &failed.cache_key).unwrap().unwrap();
    assert_eq!(record.buildtree, failed.buildtree);
    assert_nothing_left(&state);
}

#[test]
fn a_shell_on_a_workspace_buildtree_has_the_edits_since_its_build() {
    if !privileged("a_shell_on_a_workspace_buildtree_has_the_edits_since_its_build") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let m = manager(&state);
    let p = project(dir.path(), "cat input > out.o; cp out.o $WS_INSTALLDIR/");
    let opened = m
        .open_element(
            ROOT,
            ElementOpen {
                project_dir: p.clone(),
                element: "app".into(),
                fresh: false,
                path: None,
                backend: None,
                remotes: Default::default(),
            },
        )
        .unwrap();
    let built = m
        .build(ROOT, &p, "app", &Unobserved, &Cancel::new())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(built.result, ElementResult::Built);
    std::fs::write(opened.workspace.path.join("input"), "edited\n").unwrap();

    let (end, out, on) = shell(&m, &p, "app", true, "cat out.o input");
    assert_eq!(end.unwrap().code, 0);
    assert_eq!(out, "input\nedited\n");
    assert!(on.contains("workspace app's last build"), "{on}");
    // Without --buildtree: the workspace's sources as they are now, no outputs.
    let (_, out, _) = shell(&m, &p, "app", false, "cat input; ls out.o 2>&1 || true");
    assert!(
        out.starts_with("edited\n") && out.contains("No such file"),
        "{out}"
    );
    assert_nothing_left(&state);
}

#[test]
fn a_shell_needs_what_it_runs_on_built() {
    if !privileged("a_shell_needs_what_it_runs_on_built") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let m = manager(&state);
    let p = project(dir.path(), "true");

    let (end, _, _) = shell(&m, &p, "app", false, "true");
    let e = end.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let message = e.to_string();
    assert!(
        message.contains("app") && message.contains("dependency base is not built"),
        "{message}"
    );

    m.build(ROOT, &p, "base", &Unobserved, &Cancel::new())
        .unwrap();
    let (end, _, _) = shell(&m, &p, "app", true, "true");
    let message = end.unwrap_err().to_string();
    assert!(message.contains("no buildtree is cached"), "{message}");

    let (end, _, _) = shell(&m, &p, "base", false, "true");
    let message = end.unwrap_err().to_string();
    assert!(message.contains("is an import"), "{message}");
    assert_nothing_left(&state);
}

#[test]
fn a_shell_runs_as_its_caller_never_as_root() {
    if !privileged("a_shell_runs_as_its_caller_never_as_root") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: Caller = Caller {
        uid: 65534,
        gid: 65534,
    };
    let dir = tempfile::tempdir().unwrap();
    // The caller reads the project with their own permissions.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let m = manager(&state);
    let p = project(dir.path(), "true");
    m.build(NOBODY, &p, "base", &Unobserved, &Cancel::new())
        .unwrap();
    let (end, out, _) = shell_as(
        &m,
        NOBODY,
        &p,
        "app",
        false,
        "id -u; id -g; touch mine; stat -c %u mine",
    );
    assert_eq!(end.unwrap().code, 0, "{out}");
    assert_eq!(out, "65534\n65534\n65534\n");
    assert_nothing_left(&state);
}
