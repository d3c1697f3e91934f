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

impl Default for Ws {
    fn default() -> Self {
        Ws::new()
    }
}

impl Ws {
    pub fn new() -> Ws {
        Ws {
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// A `ws` command using this state directory (through the environment).
    pub fn command(&self) -> Command {
        let mut command = Command::new(binary("ws"));
        command.env("WS_STATE_DIR", self.state.path());
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
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples")
}
