//! Helpers for the end-to-end tests: find the real binaries, run `ws` against a
//! private state directory, and lay out source trees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the workspace's binaries (`target/<profile>`): the test
/// executable lives in its `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_owned()
}

/// The path of a workspace binary, which `cargo test --workspace` builds.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// `ws` with its own state directory, removed at the end of the test.
#[derive(Debug)]
pub struct Ws {
    pub state: tempfile::TempDir,
    /// Holds the user configuration `ws` reads (`WS_CONFIG`): none unless a
    /// test writes one with [`Ws::configure`], never the real user's.
    pub config: tempfile::TempDir,
}

/// What a finished `ws` run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Ws {
    /// Stops the daemon this test started and unmounts its workspaces.
    fn drop(&mut self) {
        for pid in self.daemons() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for target in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if Path::new(target).starts_with(self.state.path()) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

impl Default for Ws {
    fn default() -> Self {
        Ws::new()
    }
}

impl Ws {
    pub fn new() -> Ws {
        Ws {
            state: tempfile::tempdir().unwrap(),
            config: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes the user configuration file `ws` passes to the daemon.
    pub fn configure(&self, toml: &str) {
        std::fs::write(self.config.path().join("config.toml"), toml).unwrap();
    }

    /// A `ws` command using this state directory (through the environment).
    pub fn command(&self) -> Command {
        let mut command = Command::new(binary("ws"));
        command.env("WS_STATE_DIR", self.state.path());
        command.env("WS_CONFIG", self.config.path().join("config.toml"));
        command
    }

    /// Runs `ws ARGS…` and returns what happened.
    pub fn run(&self, args: &[&str]) -> Run {
        self.command().args(args).output().expect("ws runs").into()
    }

    /// Runs `ws ARGS…`, which must succeed, and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "ws {args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// The daemons serving this state directory (found by their command lines).
    pub fn daemons(&self) -> Vec<i32> {
        let wanted = format!("--state-dir\0{}\0", self.state.path().display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                    let cmd = String::from_utf8_lossy(&cmd);
                    cmd.split('\0')
                        .next()
                        .is_some_and(|exe| exe.ends_with("wsd"))
                        && cmd.contains(&wanted)
                })
            })
            .collect()
    }

    /// Imports `dir` and returns the digest.
    pub fn import(&self, dir: &Path) -> String {
        self.ok(&["store", "import", dir.to_str().unwrap()])
            .trim()
            .to_owned()
    }
}

/// Writes `content` at `root/rel`, creating parents.
pub fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// The repository's `examples/` directory.
pub fn examples() -> PathBuf {
    manifest_dir().parent().unwrap().join("examples")
}

/// Whether this test may do what needs root (mounts, other users). Without root it
/// says it is skipped, unless `WS_TEST_REQUIRE_PRIVILEGED` is set (CI), where it
/// fails instead.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("WS_TEST_REQUIRE_PRIVILEGED").is_none(),
        "{test}: WS_TEST_REQUIRE_PRIVILEGED is set but this test needs root"
    );
    eprintln!("{test}: skipped (needs root)");
    false
}

/// The URL of the REAPI server the remote cache tests use (`WS_TEST_REAPI_URL`,
/// a BuildGrid that `.ci/run` starts). Without one the test says it is skipped,
/// unless `WS_TEST_REQUIRE_REAPI=1` (CI), where it fails instead.
pub fn reapi_server(test: &str) -> Option<String> {
    match std::env::var("WS_TEST_REAPI_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("WS_TEST_REQUIRE_REAPI").as_deref(),
                Ok("1"),
                "{test}: WS_TEST_REQUIRE_REAPI=1 but WS_TEST_REAPI_URL is not set"
            );
            eprintln!("{test}: skipped (no REAPI server: see .ci/buildgrid/start.sh)");
            None
        }
    }
}

/// The package's directory, as cargo gives it when it runs the test: not the
/// one compiled in, which a build reused from a clone at another path (CI's
/// fixed target directory) would get wrong.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
