//! The build sandbox, run for real (as root; without root each test says it is
//! skipped, or fails under `WS_TEST_REQUIRE_PRIVILEGED=1`): output and headers,
//! the commands' uid, failing steps, stray writes recorded without touching the
//! host, the network, read-only and private places, hidden paths, cancelling,
//! the environment, setup errors.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon::sandbox::{
    self, Cancel, Outcome, SandboxError, Spec, Stdio, Step, StepFailure, TmpfsLimits,
};
use overlay::testsuite::privileged;

const NOBODY: u32 = 65534;

/// A run's directories: build, install, scratch (kept for the test's length).
struct Dirs {
    _top: tempfile::TempDir,
    build: PathBuf,
    install: PathBuf,
    scratch: PathBuf,
}

fn dirs() -> Dirs {
    dirs_in(&std::env::temp_dir())
}

/// [`dirs`] under `base` (on the root filesystem, `/var/tmp`, they are also
/// visible inside at their host paths, through the overlay).
fn dirs_in(base: &Path) -> Dirs {
    let top = tempfile::tempdir_in(base).unwrap();
    let build = top.path().join("build");
    let install = top.path().join("install");
    let scratch = top.path().join("scratch");
    for dir in [&build, &install, &scratch] {
        std::fs::create_dir(dir).unwrap();
    }
    for dir in [&build, &install] {
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // The build user must reach the build directory through the temp dir.
    std::fs::set_permissions(
        top.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    Dirs {
        _top: top,
        build,
        install,
        scratch,
    }
}

fn sh(phase: &str, command: &str) -> Step {
    Step {
        phase: phase.to_owned(),
        argv: vec!["/bin/sh".into(), "-c".into(), command.into()],
        display: command.to_owned(),
    }
}

fn spec(dirs: &Dirs, steps: Vec<Step>) -> Spec {
    Spec {
        build_dir: dirs.build.clone(),
        install_dir: Some(dirs.install.clone()),
        sysroot: None,
        caches: Vec::new(),
        hide: Vec::new(),
        scratch: dirs.scratch.clone(),
        network: false,
        uid: NOBODY,
        gid: NOBODY,
        env: BTreeMap::new(),
        steps,
        interactive: false,
        terminal: false,
        tmpfs: TmpfsLimits::default(),
    }
}

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wsd"))
}

/// Runs `spec` with captured output: the outcome and the output.
fn run(spec: &Spec) -> (Result<Outcome, SandboxError>, String) {
    let mut output = Vec::new();
    let result = sandbox::run(
        exe(),
        spec,
        Stdio::Captured,
        &mut |chunk| output.extend_from_slice(chunk),
        &Cancel::new(),
    );
    (result, String::from_utf8_lossy(&output).into_owned())
}

fn run_ok(spec: &Spec) -> (Outcome, String) {
    let (result, output) = run(spec);
    match result {
        Ok(outcome) => (outcome, output),
        Err(e) => panic!("the run failed: {e}\noutput:\n{output}"),
    }
}

#[test]
fn steps_write_the_build_and_install_dirs_as_the_given_user() {
    if !privileged("steps_write_the_build_and_install_dirs_as_the_given_user") {
        return;
    }
    let dirs = dirs();
    let spec = spec(
        &dirs,
        vec![
            sh("configure", "id -u; id -g; id -G; pwd; hostname"),
            sh("build", "echo built > out.txt; echo to-stderr >&2"),
            sh("install", "cp out.txt /ws/install/out.txt"),
        ],
    );
    let (outcome, output) = run_ok(&spec);
    assert_eq!(
        outcome,
        Outcome {
            succeeded: 3,
            failed: None,
            cancelled: false,
            stray_writes: vec![],
        },
        "{output}"
    );
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines,
        [
            "▶ configure: id -u; id -g; id -G; pwd; hostname",
            "65534",
            "65534",
            "65534",
            "/ws/build",
            "ws-sandbox",
            "▶ build: echo built > out.txt; echo to-stderr >&2",
            "to-stderr",
            "▶ install: cp out.txt /ws/install/out.txt",
        ]
    );
    for file in [dirs.build.join("out.txt"), dirs.install.join("out.txt")] {
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "built\n");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (NOBODY, NOBODY),
            "{}",
            file.display()
        );
    }
}

#[test]
fn a_failing_step_stops_the_run() {
    if !privileged("a_failing_step_stops_the_run") {
        return;
    }
    let dirs = dirs();
    let spec = spec(
        &dirs,
        vec![
            sh("configure", "echo one"),
            sh("build", "echo two; exit 3"),
            sh("install", "echo three; touch ran"),
        ],
    );
    let (outcome, output) = run_ok(&spec);
    assert_eq!(outcome.succeeded, 1);
    assert_eq!(
        outcome.failed,
        Some(StepFailure {
            step: 1,
            code: Some(3),
            signal: None
        })
    );
    assert!(!outcome.cancelled);
    assert_eq!(
        output,
        "▶ configure: echo one\none\n▶ build: echo two; exit 3\ntwo\n"
    );
    assert!(!dirs.build.join("ran").exists());

    // Killed by a signal; a program that does not exist.
    let spec2 = Spec {
        steps: vec![sh("build", "kill -9 $$")],
        ..spec.clone()
    };
    let (outcome, _) = run_ok(&spec2);
    assert_eq!(
        outcome.failed,
        Some(StepFailure {
            step: 0,
            code: None,
            signal: Some(9)
        })
    );
    let spec3 = Spec {
        steps: vec![Step {
            phase: "build".into(),
            argv: vec!["/nonexistent/tool".into()],
            display: "tool".into(),
        }],
        ..spec
    };
    let (outcome, output) = run_ok(&spec3);
    assert_eq!(outcome.failed.unwrap().code, Some(127));
    assert!(output.contains("cannot run /nonexistent/tool"), "{output}");
}

#[test]
fn writes_outside_the_writable_places_are_recorded_not_made() {
    if !privileged("writes_outside_the_writable_places_are_recorded_not_made") {
        return;
    }
    // A host file for the build to delete, on the root filesystem.
    let victim_dir = tempfile::Builder::new()
        .prefix("ws-sandbox-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        victim_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let victim = victim_dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let stray_etc = Path::new("/etc/ws-stray-test");
    let stray_opt = format!("/opt/ws-stray-test-{}", std::process::id());
    let dirs = dirs();
    let mut spec = spec(
        &dirs,
        vec![sh(
            "build",
            &format!(
                "touch {etc}; rm -f {victim}; echo x > {opt} || true; mkdir -p /opt/ws-new-dir/a/b; \
                 echo t > /tmp/t; echo b > /ws/build/b; mkdir /ws/cache/c 2>/dev/null; true",
                etc = stray_etc.display(),
                victim = victim.display(),
                opt = stray_opt,
            ),
        )],
    );
    spec.uid = 0;
    spec.gid = 0;
    let (outcome, output) = run_ok(&spec);
    assert_eq!(outcome.succeeded, 1, "{output}");
    assert_eq!(
        outcome.stray_writes,
        [
            stray_etc.display().to_string(),
            "/opt/ws-new-dir".to_owned(),
            stray_opt.clone(),
            victim.display().to_string(),
            "/ws/cache/c".to_owned(),
        ],
        "{output}"
    );
    // The host saw none of it.
    assert!(!stray_etc.exists());
    assert!(!Path::new(&stray_opt).exists());
    assert!(!Path::new("/opt/ws-new-dir").exists());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert_eq!(
        std::fs::read_to_string(dirs.build.join("b")).unwrap(),
        "b\n"
    );

    // A build user's writes to a world-writable host directory are recorded
    // too, and a chmod of a host directory.
    let mut spec = spec.clone();
    spec.uid = NOBODY;
    spec.gid = NOBODY;
    let shared = victim_dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, Some(NOBODY), Some(NOBODY)).unwrap();
    spec.steps = vec![sh(
        "build",
        &format!(
            "echo x > {shared}/file; mkdir {shared}/sub; chmod 700 {shared}; touch /etc/passwd 2>/dev/null; true",
            shared = shared.display()
        ),
    )];
    let (outcome, output) = run_ok(&spec);
    assert_eq!(
        outcome.stray_writes,
        [
            shared.display().to_string(),
            format!("{}/file", shared.display()),
            format!("{}/sub", shared.display()),
        ],
        "{output}"
    );
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
}

#[test]
fn the_network_is_off_unless_asked_for() {
    if !privileged("the_network_is_off_unless_asked_for") {
        return;
    }
    let interfaces = |output: &str| -> Vec<String> {
        output
            .lines()
            .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
            .filter(|name| !name.starts_with('▶') && !name.contains('|'))
            .collect()
    };
    let dirs = dirs();
    let mut spec = spec(&dirs, vec![sh("build", "cat /proc/net/dev")]);
    let (_, output) = run_ok(&spec);
    assert_eq!(interfaces(&output), ["lo"], "{output}");

    spec.network = true;
    let (_, output) = run_ok(&spec);
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(interfaces(&output), interfaces(&host), "{output}");
}

#[test]
fn the_sysroot_is_read_only_tmp_is_private_and_hidden_paths_are_empty() {
    if !privileged("the_sysroot_is_read_only_tmp_is_private_and_hidden_paths_are_empty") {
        return;
    }
    let dirs = dirs_in(Path::new("/var/tmp"));
    let sysroot = tempfile::tempdir().unwrap();
    std::fs::write(sysroot.path().join("lib.a"), "artifact").unwrap();
    std::fs::set_permissions(
        sysroot.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // On the root filesystem (the host's /tmp is not visible inside at all).
    let secret = tempfile::Builder::new()
        .prefix("ws-sandbox-secret-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::write(secret.path().join("store"), "secret").unwrap();
    std::fs::set_permissions(
        secret.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let secret_file = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
    std::fs::write(secret_file.path(), "secret").unwrap();
    let host_tmp = tempfile::NamedTempFile::new_in("/tmp").unwrap();

    let mut spec = spec(
        &dirs,
        vec![sh(
            "build",
            &format!(
                "cat /ws/sysroot/lib.a; echo; \
                 if touch /ws/sysroot/x 2>/dev/null; then echo sysroot-writable; fi; \
                 if [ -e {host_tmp} ]; then echo host-tmp-visible; fi; \
                 echo mine > /tmp/mine; cat /tmp/mine; \
                 echo hidden: $(ls -A {secret}); cat {secret_file}; echo; \
                 if touch {secret}/x 2>/dev/null; then echo hidden-writable; fi; \
                 if touch /ws/install/x 2>/dev/null; then echo install-writable; fi; \
                 echo > /dev/null && head -c 4 /dev/zero | wc -c; ls /ws/cache/ccache; \
                 echo build: $(ls -A {build}) scratch: $(ls -A {scratch}); echo x > /ws/build/x",
                build = dirs.build.display(),
                scratch = dirs.scratch.display(),
                host_tmp = host_tmp.path().display(),
                secret = secret.path().display(),
                secret_file = secret_file.path().display(),
            ),
        )],
    );
    spec.sysroot = Some(sysroot.path().to_owned());
    spec.install_dir = None;
    // The build directory's host path (as the daemon hides its state directory,
    // which holds build directories): /ws/build is still the build directory.
    spec.hide = vec![
        secret.path().to_owned(),
        secret_file.path().to_owned(),
        dirs.build.clone(),
    ];
    let ccache = dirs.build.parent().unwrap().join("ccache");
    std::fs::create_dir(&ccache).unwrap();
    std::fs::write(ccache.join("entry"), "").unwrap();
    spec.caches = vec![("ccache".into(), ccache)];
    let (outcome, output) = run_ok(&spec);
    assert_eq!(outcome.succeeded, 1, "{output}");
    assert_eq!(outcome.stray_writes, Vec::<String>::new(), "{output}");
    assert_eq!(
        output.lines().skip(1).collect::<Vec<_>>(),
        [
            "artifact",
            "mine",
            "hidden:",
            "",
            "4",
            "entry",
            "build: scratch:"
        ],
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(dirs.build.join("x")).unwrap(),
        "x\n"
    );
    assert!(!Path::new("/tmp/mine").exists());
    assert_eq!(std::fs::read_dir(sysroot.path()).unwrap().count(), 1);
}

#[test]
fn cancel_kills_the_whole_sandbox() {
    if !privileged("cancel_kills_the_whole_sandbox") {
        return;
    }
    let dirs = dirs();
    let spec = spec(
        &dirs,
        vec![sh(
            "build",
            "sleep 1234.5 & sleep 1234.5; echo not-cancelled",
        )],
    );
    let cancel = Cancel::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let mut output = Vec::new();
    let outcome = sandbox::run(
        exe(),
        &spec,
        Stdio::Captured,
        &mut |chunk| output.extend_from_slice(chunk),
        &cancel,
    )
    .unwrap();
    let took = started.elapsed();
    canceller.join().unwrap();
    assert!(outcome.cancelled);
    assert_eq!(outcome.succeeded, 0);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let output = String::from_utf8_lossy(&output);
    assert!(!output.lines().any(|l| l == "not-cancelled"), "{output}");
    assert_eq!(sleepers(), 0, "sleep processes are left");

    // Cancelled before: nothing runs.
    let outcome = sandbox::run(exe(), &spec, Stdio::Captured, &mut |_| {}, &cancel).unwrap();
    assert_eq!(
        outcome,
        Outcome {
            succeeded: 0,
            failed: None,
            cancelled: true,
            stray_writes: vec![]
        }
    );
}

/// How many `sleep 1234.5` processes the host has, after giving the kernel a
/// moment to finish killing them.
fn sleepers() -> usize {
    let count = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|cmdline| cmdline == b"sleep\x001234.5\x00")
            .count()
    };
    for _ in 0..20 {
        if count() == 0 {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    count()
}

#[test]
fn the_environment_is_the_documented_one() {
    if !privileged("the_environment_is_the_documented_one") {
        return;
    }
    let dirs = dirs();
    let mut spec = spec(
        &dirs,
        vec![Step {
            phase: "build".into(),
            // Found on the spec's PATH.
            argv: vec!["env".into()],
            display: "env".into(),
        }],
    );
    spec.env = BTreeMap::from([
        ("PATH".to_owned(), "/nowhere:/usr/bin:/bin".to_owned()),
        ("CFLAGS".to_owned(), "-O2 -g".to_owned()),
    ]);
    // Nothing of this process's environment leaks in: the list is exact.
    let (outcome, output) = run_ok(&spec);
    assert_eq!(outcome.succeeded, 1, "{output}");
    let mut env: Vec<&str> = output.lines().skip(1).collect();
    env.sort();
    assert_eq!(
        env,
        [
            "CFLAGS=-O2 -g",
            "HOME=/tmp",
            "LANG=C.UTF-8",
            "PATH=/nowhere:/usr/bin:/bin",
            "WS_BUILDDIR=/ws/build",
            "WS_CACHEDIR=/ws/cache",
            "WS_INSTALLDIR=/ws/install",
            "WS_SYSROOT=/ws/sysroot",
        ]
    );
}

#[test]
fn descriptors_of_the_daemon_do_not_reach_the_commands() {
    if !privileged("descriptors_of_the_daemon_do_not_reach_the_commands") {
        return;
    }
    // Not close-on-exec, like the descriptors zbus receives from clients.
    let file = std::fs::File::open("/etc/hostname").unwrap();
    let leaky = nix::unistd::dup(&file).unwrap();
    let dirs = dirs();
    let spec = spec(&dirs, vec![sh("build", "ls /proc/self/fd")]);
    let (outcome, output) = run_ok(&spec);
    drop(leaky);
    assert_eq!(outcome.succeeded, 1, "{output}");
    // ls's own directory descriptor is 3.
    assert_eq!(
        output.lines().skip(1).collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{output}"
    );
}

#[test]
fn a_setup_error_names_what_failed() {
    if !privileged("a_setup_error_names_what_failed") {
        return;
    }
    let dirs = dirs();
    let mut spec = spec(&dirs, vec![sh("build", "echo should-not-run")]);
    spec.build_dir = PathBuf::from("/nonexistent/ws-sandbox-build");
    let (result, output) = run(&spec);
    let error = result.unwrap_err();
    assert!(matches!(error, SandboxError::Setup(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("/nonexistent/ws-sandbox-build"),
        "{message}"
    );
    assert!(!output.contains("should-not-run"), "{output}");

    // A malformed spec is refused before anything runs.
    spec.build_dir = PathBuf::from("relative");
    assert!(matches!(
        run(&spec).0,
        Err(SandboxError::InvalidSpec { .. })
    ));
}

#[test]
fn interactive_runs_use_the_given_descriptors() {
    if !privileged("interactive_runs_use_the_given_descriptors") {
        return;
    }
    let dirs = dirs();
    let mut spec = spec(
        &dirs,
        vec![sh("shell", "read line; echo got $line; echo err >&2")],
    );
    spec.interactive = true;
    let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
    let (out_r, out_w) = std::io::pipe().unwrap();
    let err_w = out_w.try_clone().unwrap();
    std::io::Write::write_all(&mut stdin_w, b"hello\n").unwrap();
    drop(stdin_w);
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut { out_r }, &mut out).unwrap();
        out
    });
    let outcome = sandbox::run(
        exe(),
        &spec,
        Stdio::Inherit {
            stdin: stdin_r.into(),
            stdout: out_w.into(),
            stderr: err_w.into(),
        },
        &mut |_| panic!("no output is captured"),
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(outcome.succeeded, 1);
    assert_eq!(reader.join().unwrap(), "got hello\nerr\n");
}

#[test]
fn a_terminal_becomes_the_controlling_terminal_of_the_commands() {
    if !privileged("a_terminal_becomes_the_controlling_terminal_of_the_commands") {
        return;
    }
    use rustix::pty::OpenptFlags;
    let dirs = dirs();
    // Field 5 of /proc/PID/stat is the process group, 7 the terminal, 8 the
    // terminal's foreground group: a session leader in the foreground.
    let mut spec = spec(
        &dirs,
        vec![sh(
            "shell",
            "test -t 0 && awk '{print ($7 != 0 && $8 == $5 && $6 == $1) ? \"foreground\" : \"no terminal\"}' /proc/$$/stat",
        )],
    );
    spec.interactive = true;
    spec.terminal = true;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags).unwrap();
    // The commands run as nobody, and reopen the terminal as its owner would.
    rustix::fs::fchown(&slave, Some(rustix::fs::Uid::from_raw(NOBODY)), None).unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut file = std::fs::File::from(master);
        let mut buf = [0u8; 1024];
        // EIO once the commands, the last holders of the slave, are gone.
        while let Ok(n @ 1..) = std::io::Read::read(&mut file, &mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let outcome = sandbox::run(
        exe(),
        &spec,
        Stdio::Inherit {
            stdin: slave.try_clone().unwrap(),
            stdout: slave.try_clone().unwrap(),
            stderr: slave,
        },
        &mut |_| panic!("no output is captured"),
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(outcome.succeeded, 1, "{outcome:?}");
    assert_eq!(reader.join().unwrap().trim(), "foreground");
}

#[test]
fn a_terminal_needs_an_interactive_run() {
    let dirs = dirs();
    let mut spec = spec(&dirs, vec![sh("build", "true")]);
    spec.terminal = true;
    assert!(matches!(
        run(&spec).0,
        Err(SandboxError::InvalidSpec { .. })
    ));
}

/// Prints how long trivial runs take (spawn to report): `cargo test -p daemon
/// --test sandbox -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_of_trivial_runs() {
    if !privileged("timing_of_trivial_runs") {
        return;
    }
    let dirs = dirs();
    let spec = spec(
        &dirs,
        vec![Step {
            phase: "build".into(),
            argv: vec!["/bin/true".into()],
            display: "true".into(),
        }],
    );
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (outcome, _) = run_ok(&spec);
        times.push(started.elapsed());
        assert_eq!(outcome.succeeded, 1);
    }
    times.sort();
    eprintln!(
        "20 runs of true: min {:?}, median {:?}, max {:?}",
        times[0], times[10], times[19]
    );
}
