//! A BuildGrid of a test's own: started by `.ci/buildgrid/start.sh` in a fresh
//! directory on a free port, with the default or another configuration, and
//! stopped (`stop.sh`) when dropped, also when the test fails. It needs the venv
//! of `install.sh`: `WS_TEST_BGD_VENV`, default `/var/tmp/ws-ci-buildgrid-venv`.
//! The tests that use it run where the shared server does (`WS_TEST_REAPI_URL`
//! is set: BuildGrid is installed) and skip with a note otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The venv holding `bgd`.
pub fn venv() -> PathBuf {
    std::env::var_os("WS_TEST_BGD_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/ws-ci-buildgrid-venv"))
}

/// `.ci/buildgrid/NAME` in this repository.
pub fn script(name: &str) -> PathBuf {
    manifest_dir().join("../.ci/buildgrid").join(name)
}

/// A free loopback port (never 50051, someone's server).
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port != 50051 {
            return port;
        }
    }
}

/// A running bgd; stopped when dropped.
#[derive(Debug)]
pub struct Bgd {
    /// Its directory: `bgd.pid`, `bgd.log`, the disk CAS under `cas/`.
    pub dir: PathBuf,
    /// Its (first) port.
    pub port: u16,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Bgd {
    /// Starts bgd in `dir` on `port`, with `config` (default: buildgrid.yml) and
    /// more environment for it; panics with its log if it does not come up.
    pub fn start(dir: &Path, port: u16, config: Option<&Path>, env: &[(&str, String)]) -> Bgd {
        let bgd = Bgd {
            dir: dir.to_owned(),
            port,
            config: config.map(Path::to_owned),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        bgd.run_start();
        bgd
    }

    fn run_start(&self) {
        let mut command = Command::new(script("start.sh"));
        command
            .arg(&self.dir)
            .arg(self.port.to_string())
            .env("BGD_VENV", venv());
        if let Some(config) = &self.config {
            command.env("BGD_CONFIG", config);
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "start.sh {} {} failed: {}{}",
            self.dir.display(),
            self.port,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The pid of bgd.
    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("bgd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Kills bgd with SIGKILL (by the pid in its directory) and waits until it
    /// is gone.
    pub fn kill(&self) {
        let pid = self.pid();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        // Gone, or a zombie (not our child: init reaps it).
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| !s.trim_start().starts_with('Z'))
        }) {
            assert!(Instant::now() < deadline, "bgd {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(self.dir.join("bgd.pid"));
        let _ = std::fs::remove_file(self.dir.join("bgd.ready"));
    }

    /// Starts bgd again on the same directory and port.
    pub fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        // The killed server's port may take a moment to be free again.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "port {} stays taken", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.run_start();
    }

    /// The last lines of its log, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("bgd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Bgd {
    fn drop(&mut self) {
        let _ = Command::new(script("stop.sh")).arg(&self.dir).output();
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
