//! What the tests that run code as real users share: the two test users
//! (`wstest1`, `wstest2`, made with `useradd` if absent), directories they can
//! enter, and this test binary re-executed as one of them.

#[allow(dead_code, reason = "only the tests that attack views use it")]
pub mod user_view;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// The two test users, made once per test process.
pub fn users() -> [User; 2] {
    static USERS: OnceLock<[User; 2]> = OnceLock::new();
    *USERS.get_or_init(|| ["wstest1", "wstest2"].map(user))
}

fn user(name: &str) -> User {
    if nix::unistd::User::from_name(name).unwrap().is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", name])
            .output()
            .unwrap();
        // 9: made meanwhile by another test process.
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let entry = nix::unistd::User::from_name(name).unwrap().unwrap();
    User {
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
    }
}

/// A temporary directory every user can enter.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// This test binary, run as `user`, running only the test `test` (which does
/// something only when the environment the caller adds says so).
pub fn rerun_as(user: User, test: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .current_dir("/")
        // Also drops root's supplementary groups.
        .uid(user.uid)
        .gid(user.gid);
    cmd
}

/// The `@@` lines a user's side (a `rerun_as` child) prints on `stdout`, as
/// they come; what precedes `@@` is dropped (libtest may print "test user_side
/// ... " first).
#[allow(
    dead_code,
    reason = "only the tests that keep a user's side running use it"
)]
pub fn report_lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some((_, line)) = line.split_once("@@")
                && send.send(line.to_owned()).is_err()
            {
                break;
            }
        }
    });
    lines
}

/// Stops `child` (a `wsd`) with SIGTERM, as systemd would, and reaps it.
#[allow(dead_code, reason = "only some tests run a wsd of their own")]
pub fn terminate(child: &mut std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}
