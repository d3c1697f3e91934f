//! Input files a user names (a project's `ws.toml`, their configuration, a
//! remote's TLS and token files) cannot make a root daemon wait or fill its
//! memory: a FIFO, a device or a huge file is refused at once, naming it, and
//! is read before any lock, so a `ws gc` (which takes the store exclusively)
//! never waits behind it. The user is `wstest1`, a real account; the reads are
//! made with their credentials.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use daemon::manager::build::{BuildOptions, TransferTarget, Unobserved};
use daemon::manager::{GcOptions, RemoteOptions};
use daemon::sandbox::Cancel;
use daemon::{Caller, Manager, StateDir};
use overlay::testsuite::privileged;

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod support;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// Long enough for any refusal on a loaded machine; a read that waits on a
/// FIFO never ends by itself.
const HANG: Duration = Duration::from_secs(60);

fn user() -> Caller {
    let user = support::users()[0];
    Caller {
        uid: user.uid,
        gid: user.gid,
    }
}

/// A project of the user's whose `ws.toml` is whatever `make` leaves there.
fn project(dir: &Path, make: impl FnOnce(&Path)) -> PathBuf {
    let root = dir.join("project");
    std::fs::create_dir_all(root.join("src")).unwrap();
    make(&root.join("ws.toml"));
    let user = user();
    for path in [&root, &root.join("src")] {
        std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).unwrap();
    }
    let _ = std::os::unix::fs::lchown(root.join("ws.toml"), Some(user.uid), Some(user.gid));
    root
}

fn fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Runs `op` on a thread while root's gc runs here, and returns what `op`
/// gave. Fails if either waits: the FIFO, if the daemon opened it, gets a
/// writer that closes at once, so the test ends either way.
fn with_gc_beside<T: Send>(m: &Manager, fifo: Option<&Path>, op: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || tx.send(op()).unwrap());
        let gc = {
            let (tx, rx) = mpsc::channel();
            scope.spawn(move || {
                tx.send(m.gc(ROOT, GcOptions::default()).map(|_| ()))
                    .unwrap()
            });
            rx.recv_timeout(HANG)
        };
        let got = rx.recv_timeout(HANG);
        if got.is_err() || gc.is_err() {
            // Unblock a reader waiting on the FIFO, so the threads end.
            if let Some(fifo) = fifo {
                use std::os::unix::fs::OpenOptionsExt;
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_NONBLOCK)
                    .open(fifo);
            }
        }
        gc.expect("root's gc waited behind a user's input file")
            .expect("gc");
        got.expect("the daemon waited on a user's input file")
    })
}

fn build_error(m: &Manager, p: &Path, options: BuildOptions, fifo: Option<&Path>) -> String {
    let err = with_gc_beside(m, fifo, || {
        m.build_with(user(), p, "a", options, &Unobserved, &Cancel::new())
    })
    .expect_err("a build with that input went ahead");
    daemon::dbus::describe(&err)
}

#[test]
fn a_fifo_or_a_device_as_a_project_file_is_refused_and_no_one_waits() {
    if !privileged("a_fifo_or_a_device_as_a_project_file_is_refused_and_no_one_waits") {
        return;
    }
    for (what, make, expected) in [
        ("a FIFO", fifo as fn(&Path), "is a FIFO, not a regular file"),
        (
            "/dev/zero",
            |p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
            "is a character device, not a regular file",
        ),
        (
            "a file of 2 MiB",
            |p: &Path| std::fs::write(p, vec![b'#'; 2 << 20]).unwrap(),
            "holds more than 1024 KiB",
        ),
    ] {
        let dir = support::shared_tempdir();
        let p = project(dir.path(), make);
        let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
        let fifo = p.join("ws.toml");
        let err = build_error(&m, &p, BuildOptions::default(), Some(&fifo));
        assert!(err.contains(expected), "{what}: {err}");
        assert!(
            err.contains("ws.toml"),
            "{what}: the error names the file: {err}"
        );
    }
}

#[test]
fn a_fifo_or_a_device_as_a_users_configuration_is_refused_and_no_one_waits() {
    if !privileged("a_fifo_or_a_device_as_a_users_configuration_is_refused_and_no_one_waits") {
        return;
    }
    for (what, config, expected) in [
        ("a FIFO", "fifo", "is a FIFO, not a regular file"),
        ("/dev/zero", "zero", "is a character device"),
    ] {
        let dir = support::shared_tempdir();
        let p = project(dir.path(), |p| {
            std::fs::write(p, "[element.a]\nkind = \"import\"\nsources = \"src\"\n").unwrap()
        });
        fifo(&dir.path().join("fifo"));
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
        let config = dir.path().join(config);
        let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
        let options = BuildOptions {
            remotes: RemoteOptions {
                user_config: Some(config.clone()),
                disabled: false,
            },
            ..BuildOptions::default()
        };
        let err = build_error(&m, &p, options, Some(&dir.path().join("fifo")));
        assert!(err.contains(expected), "{what}: {err}");
        assert!(err.contains(&config.display().to_string()), "{what}: {err}");
    }
}

/// A remote's token file that is a FIFO fails that remote, naming the file;
/// the pull says so, and nothing waited.
#[test]
fn a_fifo_as_a_remotes_token_file_fails_that_remote_and_no_one_waits() {
    if !privileged("a_fifo_as_a_remotes_token_file_fails_that_remote_and_no_one_waits") {
        return;
    }
    let dir = support::shared_tempdir();
    let token = dir.path().join("token");
    fifo(&token);
    let p = project(dir.path(), |p| {
        std::fs::write(
            p,
            format!(
                "[element.a]\nkind = \"import\"\nsources = \"src\"\n\n[[remote]]\nurl = \"grpcs://127.0.0.1:1\"\naccess-token-file = \"{}\"\n",
                token.display()
            ),
        )
        .unwrap()
    });
    let m = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
    let err = with_gc_beside(&m, Some(&token), || {
        m.pull(
            user(),
            TransferTarget::Element {
                project_dir: p.clone(),
                element: "a".into(),
            },
            &RemoteOptions::default(),
        )
    })
    .expect_err("a pull through a FIFO token went ahead");
    let err = daemon::dbus::describe(&err);
    assert!(err.contains("is a FIFO, not a regular file"), "{err}");
    assert!(err.contains(&token.display().to_string()), "{err}");
}
