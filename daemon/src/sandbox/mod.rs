//! The build sandbox: runs a build's commands in private namespaces, with the
//! host root seen through a throw-away overlay so that every write outside the
//! allowed places is *recorded* (and the build fails listing those paths), even
//! when a command swallowed the error (docs/design.md, "Builds").
//!
//! # How a run goes
//!
//! The crates deny `unsafe`, so there is no `pre_exec` and no raw `clone`: the
//! namespaces are entered by re-executing the `wsd` binary, in two stages.
//!
//! 1. [`run`] (in the daemon, as root) writes the [`Spec`] to
//!    `<scratch>/spec.json` and spawns `wsd __sandbox <scratch>/spec.json` in a new
//!    process group, its stdout and stderr one pipe (builds) or the client's
//!    descriptors (`ws shell`). It reads the pipe to its end on the calling thread,
//!    waits, and reads `<scratch>/report.json`.
//! 2. Stage A (`__sandbox`, [`child`]) creates the report file, unshares the pid,
//!    IPC, UTS and (unless the spec asks for the network) network namespaces, and
//!    spawns stage B, which becomes pid 1 of the new pid namespace.
//! 3. Stage B (`__sandbox-init`) unshares the mount namespace, makes every mount
//!    private, builds the sandbox's root (an overlay of the host root with a tmpfs
//!    upper, the build, install, sysroot and cache directories bound at `/ws/...`,
//!    a private `/tmp`, `/proc`, a read-only `/sys`, a minimal `/dev`, empty
//!    read-only directories over the hidden paths), `pivot_root`s into it, runs
//!    the steps as the spec's uid and gid, and then lists what the steps left in
//!    the overlay's upper ([`stray`]). It writes the [`Outcome`] (or what failed
//!    while setting up) to the report.
//!
//! Cancelling kills the process group (stages A and B); when B, pid 1 of its
//! namespace, dies, the kernel kills every process left in the namespace, so
//! backgrounded or daemonized commands cannot outlive the run.
//!
//! Stage B unshares the mount namespace itself, rather than stage A: `pivot_root`
//! moves the root of every process of the mount namespace that is at the old
//! root, and stage A, which writes to the host's report file and reports B's
//! end, is better left in the host's view.
//!
//! # What the commands see
//!
//! - `/`: the host's root filesystem, writable through the overlay; writes land in
//!   a tmpfs that vanishes with the run and are reported as
//!   [`Outcome::stray_writes`]. Only the root filesystem: other host mounts (a
//!   separate `/home` or `/var`) show as the empty directories under them, and
//!   the overlay is `nosuid,nodev`, so set-uid programs (`sudo`) do not elevate.
//! - `/ws/build` (the working directory), `/ws/install`, `/ws/cache/<name>`:
//!   the host directories, writable; `/ws/sysroot` read-only.
//! - `/tmp` and `/dev/shm`: private tmpfs (in memory; they vanish with the run).
//! - `/proc` of the sandbox's pid namespace, `/sys` read-only, and in `/dev` only
//!   `null`, `zero`, `full`, `random`, `urandom`, `tty`, a private `pts` and the
//!   `fd`, `stdin`, `stdout`, `stderr` links.
//! - Without network: a new network namespace, whose only interface is a loopback
//!   that is down.
//!
//! The commands start with umask 022, whatever the daemon's (077).
//!
//! A build run as uid 0 has every capability inside, so the sandbox only keeps
//! honest builds honest for root; for any other uid it is a boundary (the commands
//! run with that uid and gid and no supplementary groups).

mod child;
mod stray;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use child::child_main;

/// argv\[1\] of stage A: `wsd __sandbox <scratch>/spec.json`. `wsd`'s `main`
/// hands every argv\[1\] starting with this to [`child_main`] before anything else
/// starts (allocator aside: no logging, no runtime, no argument parser).
pub const SUBCOMMAND: &str = "__sandbox";

/// argv\[1\] of stage B, pid 1 of the sandbox's pid namespace.
const INIT_SUBCOMMAND: &str = "__sandbox-init";

/// argv\[1\] of the stage that gives a command its terminal ([`Spec::terminal`]):
/// `/proc/self/exe __sandbox-tty ARGV...`, run as the command's user.
const TTY_SUBCOMMAND: &str = "__sandbox-tty";

/// The spec's file name in the scratch directory.
const SPEC_FILE: &str = "spec.json";

/// The report's file name in the scratch directory.
const REPORT_FILE: &str = "report.json";

/// What one sandboxed run does; written as JSON to `<scratch>/spec.json` for the child.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    /// Host directory mounted read-write at /ws/build, the commands' working directory.
    pub build_dir: PathBuf,
    /// Host directory mounted read-write at /ws/install (None: /ws/install is an empty read-only dir).
    pub install_dir: Option<PathBuf>,
    /// Host directory mounted read-only at /ws/sysroot (None: empty dir): the dependencies' artifacts.
    pub sysroot: Option<PathBuf>,
    /// (name, host dir): mounted read-write at /ws/cache/<name> (persisted caches such as a ccache dir).
    pub caches: Vec<(String, PathBuf)>,
    /// Host paths covered by an empty read-only tmpfs inside the sandbox (the
    /// daemon's state directory: the store must not be readable from builds). A
    /// path that is not a directory is covered by an empty file instead; a path
    /// that does not exist is skipped. The scratch directory is always hidden.
    pub hide: Vec<PathBuf>,
    /// An empty host directory owned by root that the run may use for its own
    /// files (spec.json, report.json, mount points). Not visible inside. The
    /// caller removes it after the run (the spec in it holds the environment).
    pub scratch: PathBuf,
    /// Network: false = a new, empty network namespace (only a down loopback).
    pub network: bool,
    /// Who the commands run as (never root unless uid is 0).
    pub uid: u32,
    /// The commands' group; they have no supplementary groups (unless uid and gid are 0).
    pub gid: u32,
    /// The commands' environment, on top of the defaults: PATH=/usr/local/bin:/usr/bin:/bin
    /// (overridable), HOME=/tmp, WS_BUILDDIR=/ws/build, WS_INSTALLDIR=/ws/install,
    /// WS_SYSROOT=/ws/sysroot, WS_CACHEDIR=/ws/cache, LANG=C.UTF-8 (overridable).
    /// Nothing else from the daemon's environment leaks in.
    pub env: BTreeMap<String, String>,
    /// Run in order; the run stops at the first that fails.
    pub steps: Vec<Step>,
    /// false (builds): stdin is /dev/null, and output (stdout and stderr of every
    /// command, interleaved in one stream) goes to the pipe `run` reads. true (`ws
    /// shell`): the commands use the stdio the caller handed to `run` (a terminal).
    pub interactive: bool,
    /// With `interactive`: stdin is a terminal (a pty the client relays), made
    /// each command's controlling terminal in a session of its own, so that a
    /// shell has job control and Ctrl-C reaches its foreground job.
    #[serde(default)]
    pub terminal: bool,
    /// The limits of each writable in-memory filesystem of the sandbox.
    #[serde(default)]
    pub tmpfs: TmpfsLimits,
}

/// The size and inodes of each writable in-memory filesystem of a sandbox:
/// `/tmp`, `/dev/shm`, `/dev`, and the layer that takes writes outside the
/// bound directories. A tmpfs without them may take half the machine's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsLimits {
    /// Bytes.
    pub size: u64,
    /// Files, directories and symlinks.
    pub inodes: u64,
}

impl TmpfsLimits {
    /// What an element gets unless it asks for less, and the most it may ask
    /// for, unless the daemon's configuration says otherwise (`[limits]`
    /// `sandbox-tmpfs-size`, `sandbox-tmpfs-inodes`).
    pub const DEFAULT: TmpfsLimits = TmpfsLimits {
        size: 2 << 30,
        inodes: 500_000,
    };

    /// The mount options that set them.
    pub fn options(self) -> String {
        format!("size={},nr_inodes={}", self.size, self.inodes)
    }
}

impl Default for TmpfsLimits {
    fn default() -> TmpfsLimits {
        TmpfsLimits::DEFAULT
    }
}

/// One command of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// "configure", "build", "install", "shell": shown in the output header and in failures.
    pub phase: String,
    /// argv; project commands are ["/bin/sh", "-c", "<command>"]. (For builds the
    /// child writes a header line `▶ <phase>: <display>` into the output stream
    /// before each step.)
    pub argv: Vec<String>,
    /// How the step is shown (the command text).
    pub display: String,
}

/// How a run went. A command that fails is not an error of the sandbox: it is
/// [`Outcome::failed`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// How many steps ran and exited 0.
    pub succeeded: usize,
    /// The first step that failed, if any: its index, and its exit code or signal.
    pub failed: Option<StepFailure>,
    /// Whether the run was cancelled (then `failed` may be None).
    pub cancelled: bool,
    /// Paths (absolute, as seen inside the sandbox, sorted) that the commands
    /// created, changed or deleted outside the writable places (/ws/build,
    /// /ws/install, /ws/cache/*, /tmp). A non-empty list means the build must fail
    /// even if every command exited 0. A new directory is one entry (what is in
    /// it is not listed); a deleted host file is listed by its path.
    pub stray_writes: Vec<String>,
}

impl Outcome {
    /// The outcome of a run cancelled before anything ran.
    fn cancelled() -> Outcome {
        Outcome {
            succeeded: 0,
            failed: None,
            cancelled: true,
            stray_writes: Vec::new(),
        }
    }
}

/// The step that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    /// Its index in [`Spec::steps`].
    pub step: usize,
    /// Its exit code, if it exited (127: it could not be started, and the output
    /// says why).
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

/// What the child writes to `<scratch>/report.json`: the outcome, or what failed
/// while setting the sandbox up.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Report {
    /// The sandbox could not be set up.
    Error {
        /// What failed, on what.
        error: String,
    },
    /// The steps ran.
    Done(Outcome),
}

/// The sandbox could not run: it could not be set up, started or heard from. A
/// failing command is not one of these (see [`Outcome::failed`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// This daemon cannot make sandboxes.
    #[error("cannot run a build sandbox: {reason}")]
    Unsupported {
        /// Why, and what to do.
        reason: String,
    },
    /// The spec is malformed (a bug of the caller).
    #[error("invalid sandbox spec: {what} {problem}")]
    InvalidSpec {
        /// Which field.
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Writing or reading the run's files in the scratch directory failed.
    #[error("cannot {op} {}: {source}; check that the scratch directory exists and is root's", path.display())]
    Scratch {
        /// "write", "read", ...
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox process could not be started or waited for.
    #[error("cannot {op} the sandbox process {}: {source}", exe.display())]
    Spawn {
        /// "start", "wait for", "read the output of".
        op: &'static str,
        /// The binary.
        exe: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not be set up: what failed, on what (from the child).
    #[error("cannot set up the build sandbox: {0}")]
    Setup(String),
    /// The child ended without a usable report (it was killed or crashed).
    #[error("the build sandbox ended ({status}) without a {problem} in {}; it was killed or crashed, see the daemon's log and the build output", path.display())]
    NoReport {
        /// How the child ended.
        status: String,
        /// "report", "readable report: <why>".
        problem: String,
        /// The report file.
        path: PathBuf,
    },
}

/// Cancels a run from another thread: kills the sandbox's whole process group
/// (and so its pid namespace). Cloneable, Send + Sync; [`Cancel::cancel`] before
/// the spawn makes [`run`] return at once with `cancelled = true`. Once
/// cancelled, it stays cancelled: use a new one for the next run.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    inner: Arc<Mutex<CancelState>>,
}

#[derive(Debug, Default)]
struct CancelState {
    cancelled: bool,
    /// The running sandbox's process group, while its leader is not reaped (so
    /// the id cannot have been reused by another group).
    group: Option<Pid>,
}

impl Cancel {
    /// A cancel handle for one run.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels the run: kills the sandbox's processes now if it is running, and
    /// makes [`run`] return without starting it otherwise.
    pub fn cancel(&self) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.cancelled = true;
        if let Some(group) = state.group {
            kill_group(group);
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancelled
    }

    /// Records the running sandbox's group (killing it at once if cancelled).
    fn register(&self, group: Pid) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if state.cancelled {
            kill_group(group);
        }
        state.group = Some(group);
    }

    /// Forgets the group, before its leader is reaped.
    fn unregister(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).group = None;
    }
}

fn kill_group(group: Pid) {
    // ESRCH: the group is gone already.
    let _ = kill(Pid::from_raw(-group.as_raw()), Signal::SIGKILL);
}

/// Where the commands' stdio goes.
#[derive(Debug)]
pub enum Stdio {
    /// Builds: output is read from a pipe and passed to `on_output` as it comes.
    Captured,
    /// `ws shell`: these fds (from the client) are the commands' stdin, stdout,
    /// stderr. With [`Spec::terminal`], stdin is a terminal that becomes the
    /// commands' controlling terminal.
    Inherit {
        /// The commands' stdin.
        stdin: OwnedFd,
        /// The commands' stdout.
        stdout: OwnedFd,
        /// The commands' stderr.
        stderr: OwnedFd,
    },
}

/// Runs `spec` in a sandbox by executing `exe` (the wsd binary:
/// `std::env::current_exe()` in the daemon, `env!("CARGO_BIN_EXE_wsd")` in tests)
/// as `exe __sandbox <scratch>/spec.json`. Blocks until the run ends; calls
/// `on_output` with every chunk of output ([`Stdio::Captured`]) on the calling
/// thread. Must be called by root.
///
/// The sandbox dies with the calling *thread* (its parent-death signal fires when
/// the thread that spawned it exits, not the process): this function keeps the
/// thread until the sandbox has ended, so call it on a thread of its own (tokio's
/// `spawn_blocking` is fine). If `on_output` panics, the sandbox is killed.
pub fn run(
    exe: &Path,
    spec: &Spec,
    stdio: Stdio,
    on_output: &mut dyn FnMut(&[u8]),
    cancel: &Cancel,
) -> Result<Outcome, SandboxError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::Unsupported {
            reason: format!(
                "the daemon runs as uid {}, and sandboxes need root (a user daemon's sandbox in a user namespace is not done yet); build with the system daemon",
                nix::unistd::geteuid()
            ),
        });
    }
    check(spec)?;
    if cancel.is_cancelled() {
        return Ok(Outcome::cancelled());
    }
    let spec_path = spec.scratch.join(SPEC_FILE);
    let report_path = spec.scratch.join(REPORT_FILE);
    let json = serde_json::to_vec(spec).expect("a spec serializes");
    write_private(&spec_path, &json).map_err(|source| SandboxError::Scratch {
        op: "write",
        path: spec_path.clone(),
        source,
    })?;
    match std::fs::remove_file(&report_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SandboxError::Scratch {
                op: "remove the old report",
                path: report_path,
                source,
            });
        }
    }

    let spawn_error = |op, source| SandboxError::Spawn {
        op,
        exe: exe.to_owned(),
        source,
    };
    let mut command = Command::new(exe);
    command
        .arg(SUBCOMMAND)
        .arg(&spec_path)
        .env_clear()
        .current_dir("/")
        .process_group(0);
    let reader = match stdio {
        Stdio::Captured => {
            let (reader, writer) =
                std::io::pipe().map_err(|e| spawn_error("make a pipe for", e))?;
            let writer2 = writer
                .try_clone()
                .map_err(|e| spawn_error("make a pipe for", e))?;
            command
                .stdin(std::process::Stdio::null())
                .stdout(writer)
                .stderr(writer2);
            Some(reader)
        }
        Stdio::Inherit {
            stdin,
            stdout,
            stderr,
        } => {
            command.stdin(stdin).stdout(stdout).stderr(stderr);
            None
        }
    };
    let child = command.spawn().map_err(|e| spawn_error("start", e))?;
    // The command holds our copies of the pipe's write end: without dropping
    // it, the pipe would never reach its end.
    drop(command);
    let mut running = Running {
        pid: Pid::from_raw(child.id() as i32),
        child,
        cancel,
        reaped: false,
    };
    cancel.register(running.pid);

    if let Some(mut reader) = reader {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => on_output(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(spawn_error("read the output of", e)),
            }
        }
    }
    let status = running.wait().map_err(|e| spawn_error("wait for", e))?;

    let bytes = std::fs::read(&report_path);
    let report: Option<Report> = bytes
        .as_ref()
        .ok()
        .and_then(|b| serde_json::from_slice(b).ok());
    if cancel.is_cancelled() {
        // What ran before the kill, if the report made it; a cancelled run is
        // no setup error even if it was cancelled while setting up.
        return Ok(match report {
            Some(Report::Done(outcome)) => Outcome {
                cancelled: true,
                ..outcome
            },
            _ => Outcome::cancelled(),
        });
    }
    match report {
        Some(Report::Done(outcome)) => Ok(outcome),
        Some(Report::Error { error }) => Err(SandboxError::Setup(error)),
        None => Err(SandboxError::NoReport {
            status: describe(status),
            problem: match &bytes {
                Ok(b) if b.is_empty() => "report".to_owned(),
                Ok(b) => format!(
                    "readable report (it reads {:?})",
                    String::from_utf8_lossy(&b[..b.len().min(200)])
                ),
                Err(e) => format!("report ({e})"),
            },
            path: report_path,
        }),
    }
}

/// The sandbox's leader process, killed and reaped if `run` leaves early (an
/// error reading the output, a panicking `on_output`).
struct Running<'a> {
    pid: Pid,
    child: std::process::Child,
    cancel: &'a Cancel,
    reaped: bool,
}

impl Running<'_> {
    /// Waits for the leader to end, forgets its group (before reaping it, so a
    /// late cancel cannot kill a new group that reuses the id), reaps it.
    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            match waitid(
                Id::Pid(self.pid),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.cancel.unregister();
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.reaped {
            kill_group(self.pid);
            let _ = self.wait();
        }
    }
}

/// How a process ended, for messages.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {signal}"),
        },
        _ => status.to_string(),
    }
}

/// Refuses specs the child would misread: relative paths, cache names that are
/// not one path component, steps without a program.
fn check(spec: &Spec) -> Result<(), SandboxError> {
    let invalid = |what: String, problem: &str| SandboxError::InvalidSpec {
        what,
        problem: problem.to_owned(),
    };
    let absolute = |what: String, path: &Path| {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(invalid(
                format!("{what} {}", path.display()),
                "is not an absolute path",
            ))
        }
    };
    if spec.terminal && !spec.interactive {
        return Err(invalid(
            "terminal".into(),
            "needs interactive: a build's output is captured, not a terminal",
        ));
    }
    absolute("build_dir".into(), &spec.build_dir)?;
    absolute("scratch".into(), &spec.scratch)?;
    if let Some(dir) = &spec.install_dir {
        absolute("install_dir".into(), dir)?;
    }
    if let Some(dir) = &spec.sysroot {
        absolute("sysroot".into(), dir)?;
    }
    for path in &spec.hide {
        absolute("hide".into(), path)?;
    }
    for (name, path) in &spec.caches {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(invalid(
                format!("cache name {name:?}"),
                "is not a single path component",
            ));
        }
        absolute(format!("cache {name:?}"), path)?;
    }
    for (i, step) in spec.steps.iter().enumerate() {
        if step.argv.is_empty() || step.argv[0].is_empty() {
            return Err(invalid(
                format!("step {i} ({})", step.phase),
                "has no program",
            ));
        }
        if step.argv.iter().any(|a| a.contains('\0')) {
            return Err(invalid(
                format!("step {i} ({})", step.phase),
                "has a NUL byte in its argv",
            ));
        }
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(invalid(
                format!("environment variable {key:?}"),
                "is not a valid name or value",
            ));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` (created or truncated), readable by root only: the
/// spec holds the build's environment.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}
