//! The connection to `wsd`: the socket of the state directory, and starting the
//! daemon when none answers there.
//!
//! Two clients starting at once may both spawn a daemon; the daemon's lock on the
//! state directory lets one of them serve and the other exit, and both clients wait
//! for the socket. A daemon that lost the lock to one that never answers (the
//! last processes of a killed daemon still hold it) is spawned again, a few times
//! with a growing pause, until one gets the lock or another answers.
//!
//! A daemon that accepts the connection and closes it before the handshake is
//! over is alive (a dead one's socket refuses connections): it holds each user
//! to a number of connections and a deadline (docs/security.md, "The daemon
//! survives its clients"). Once that has happened a few times in a row, the
//! client says so, rather than start a daemon that cannot take the lock.
//!
//! A client hands the daemon its requests and descriptors (sources, mount
//! points, terminals), so it talks only to a daemon running as root or as its
//! own user, whatever socket it found: the kernel says who serves it
//! (`SO_PEERCRED`), and a socket served by anyone else (someone who made the
//! directory first, to catch the requests) is refused, not replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zbus::zvariant::OwnedObjectPath;

use crate::error::CliError;

/// How long a starting daemon may take (it probes the machine and opens its
/// database, and recovers what a crash left).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a daemon that lost the lock is spawned again while nobody answers.
const RESPAWNS: u32 = 8;

/// How many times in a row a daemon may close the connection during the
/// handshake (a moment at its connection limit) before the client gives up:
/// with the pause of [`closed_pause`], about 1.5 s.
const CLOSED_RETRIES: u32 = 5;

/// The pause after the `n`th connection closed during the handshake.
fn closed_pause(n: u32) -> Duration {
    Duration::from_millis(100 * u64::from(n + 1))
}

/// The pause before spawning again after the `n`th daemon lost the lock: 100 ms,
/// doubling, at most 2 s (about 10 s over all [`RESPAWNS`]).
fn respawn_pause(n: u32) -> Duration {
    Duration::from_millis(100u64 << n.min(5)).min(Duration::from_secs(2))
}

#[zbus::proxy(
    interface = "org.ws.Manager1",
    default_service = "org.ws.Daemon",
    default_path = "/org/ws"
)]
pub trait Manager1 {
    fn open(
        &self,
        name: &str,
        source: zbus::zvariant::Fd<'_>,
        backend: &str,
    ) -> zbus::Result<OwnedObjectPath>;
    fn open_at(
        &self,
        name: &str,
        source: zbus::zvariant::Fd<'_>,
        mount_point: zbus::zvariant::Fd<'_>,
        backend: &str,
    ) -> zbus::Result<OwnedObjectPath>;
    fn get(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn build(
        &self,
        project: zbus::zvariant::Fd<'_>,
        element: &str,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn show(
        &self,
        project: zbus::zvariant::Fd<'_>,
        element: &str,
    ) -> zbus::Result<Vec<HashMap<String, zbus::zvariant::OwnedValue>>>;
    #[allow(clippy::too_many_arguments)]
    fn shell(
        &self,
        project: zbus::zvariant::Fd<'_>,
        element: &str,
        command: Vec<String>,
        stdin: zbus::zvariant::Fd<'_>,
        stdout: zbus::zvariant::Fd<'_>,
        stderr: zbus::zvariant::Fd<'_>,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn open_element(
        &self,
        project: zbus::zvariant::Fd<'_>,
        element: &str,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<(OwnedObjectPath, bool, String)>;
    fn open_element_at(
        &self,
        project: zbus::zvariant::Fd<'_>,
        element: &str,
        mount_point: zbus::zvariant::Fd<'_>,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<(OwnedObjectPath, bool, String)>;
    fn list(&self) -> zbus::Result<Vec<(String, OwnedObjectPath)>>;
    fn fsck(&self) -> zbus::Result<(bool, Vec<String>, HashMap<String, u64>)>;
    fn caches(&self) -> zbus::Result<Vec<(String, String, String, u64, u64)>>;
    fn drop_cache(&self, element: &str, name: &str) -> zbus::Result<Vec<String>>;
    fn gc(&self, quota: u64) -> zbus::Result<(HashMap<String, u64>, Vec<String>, bool)>;
    fn push(
        &self,
        project: zbus::zvariant::Fd<'_>,
        target: &str,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<HashMap<String, zbus::zvariant::OwnedValue>>;
    fn pull(
        &self,
        project: zbus::zvariant::Fd<'_>,
        target: &str,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<HashMap<String, zbus::zvariant::OwnedValue>>;
}

#[zbus::proxy(interface = "org.ws.Workspace1", default_service = "org.ws.Daemon")]
pub trait Workspace1 {
    #[zbus(property)]
    fn source_digest(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn source(&self) -> zbus::Result<String>;
    fn status(&self) -> zbus::Result<Vec<(String, String)>>;
    fn diff(&self) -> zbus::Result<String>;
    fn commit(&self, message: &str) -> zbus::Result<String>;
    fn commit_with(
        &self,
        message: &str,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<HashMap<String, zbus::zvariant::OwnedValue>>;
    fn discard(&self) -> zbus::Result<u32>;
    fn close(&self, force: bool) -> zbus::Result<()>;
    fn log(&self) -> zbus::Result<Vec<(u64, String, String, String, u64, String, u64)>>;
    fn undo(&self) -> zbus::Result<(u64, String)>;
}

#[zbus::proxy(interface = "org.ws.Build1", default_service = "org.ws.Daemon")]
pub trait Build1 {
    fn cancel(&self) -> zbus::Result<()>;
}

#[zbus::proxy(interface = "org.ws.Shell1", default_service = "org.ws.Daemon")]
pub trait Shell1 {
    fn cancel(&self) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.ws.Store1",
    default_service = "org.ws.Daemon",
    default_path = "/org/ws"
)]
pub trait Store1 {
    fn import(
        &self,
        dir: zbus::zvariant::Fd<'_>,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<(String, HashMap<String, u64>)>;
    fn checkout(
        &self,
        tree: &str,
        dest: zbus::zvariant::Fd<'_>,
        mode: &str,
    ) -> zbus::Result<HashMap<String, u64>>;
    fn diff(
        &self,
        old: &str,
        new: &str,
        patches: bool,
        context: u32,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn fsck(
        &self,
        trees: Vec<String>,
    ) -> zbus::Result<(
        bool,
        Vec<(String, HashMap<String, String>)>,
        HashMap<String, u64>,
    )>;
}

/// A connection to the daemon of one state directory.
#[derive(Debug)]
pub struct Client {
    conn: zbus::Connection,
    socket: PathBuf,
}

impl Client {
    /// Connects to the daemon serving `state_dir`, starting one if none answers.
    pub async fn connect(state_dir: &Path) -> Result<Client, CliError> {
        if let Some(client) = Client::try_connect(state_dir).await? {
            return Ok(client);
        }
        let (mut child, mut log_start) = start_daemon(state_dir)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut respawns = 0;
        // When the daemon spawned last was seen to have lost the lock.
        let mut lost_at: Option<Instant> = None;
        loop {
            if let Some(client) = Client::try_connect(state_dir).await? {
                return Ok(client);
            }
            // A daemon that exits at once failed to start, or lost the lock to
            // another one: one starting, which will answer soon, or what is left
            // of a killed one, which never will but lets go of the lock soon.
            if lost_at.is_none()
                && let Ok(Some(status)) = child.try_wait()
                && !status.success()
            {
                if !log_says_another_serves(state_dir, log_start) {
                    return Err(CliError::DaemonStart {
                        state_dir: state_dir.to_owned(),
                        detail: last_log_line(state_dir),
                    });
                }
                lost_at = Some(Instant::now());
            }
            if let Some(at) = lost_at
                && respawns < RESPAWNS
                && at.elapsed() >= respawn_pause(respawns)
            {
                (child, log_start) = start_daemon(state_dir)?;
                respawns += 1;
                lost_at = None;
            }
            if Instant::now() > deadline {
                return Err(CliError::DaemonStart {
                    state_dir: state_dir.to_owned(),
                    detail: format!(
                        "no answer on {} after {}s",
                        socket_of(state_dir)
                            .unwrap_or_else(|| state_dir.join("wsd.sock"))
                            .display(),
                        START_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The daemon of `state_dir` if one answers; an error if its socket is
    /// served by another user, or if it keeps closing the connection during
    /// the handshake.
    async fn try_connect(state_dir: &Path) -> Result<Option<Client>, CliError> {
        let Some(socket) = socket_of(state_dir) else {
            return Ok(None);
        };
        let mut closed = 0;
        loop {
            return match dial(&socket).await {
                Ok(conn) => Ok(Some(Client { conn, socket })),
                Err(Dial::NoAnswer) => Ok(None),
                Err(Dial::Untrusted(uid)) => Err(CliError::UntrustedDaemon { socket, uid }),
                Err(Dial::Closed(_)) if closed < CLOSED_RETRIES => {
                    tokio::time::sleep(closed_pause(closed)).await;
                    closed += 1;
                    continue;
                }
                Err(Dial::Closed(detail)) => Err(CliError::DaemonClosed { socket, detail }),
            };
        }
    }

    /// The D-Bus connection.
    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }

    /// The build at `path`.
    pub async fn build_job(&self, path: OwnedObjectPath) -> Result<Build1Proxy<'static>, CliError> {
        Ok(Build1Proxy::builder(&self.conn).path(path)?.build().await?)
    }

    /// The shell at `path`.
    pub async fn shell_job(&self, path: OwnedObjectPath) -> Result<Shell1Proxy<'static>, CliError> {
        Ok(Shell1Proxy::builder(&self.conn).path(path)?.build().await?)
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The manager.
    pub async fn manager(&self) -> Result<Manager1Proxy<'static>, CliError> {
        Ok(Manager1Proxy::new(&self.conn).await?)
    }

    /// The store.
    pub async fn store(&self) -> Result<Store1Proxy<'static>, CliError> {
        Ok(Store1Proxy::new(&self.conn).await?)
    }

    /// The workspace object at `path`, read afresh at every property get.
    pub async fn workspace(
        &self,
        path: OwnedObjectPath,
    ) -> Result<Workspace1Proxy<'static>, CliError> {
        Ok(Workspace1Proxy::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?)
    }

    /// The workspace named `name`.
    pub async fn workspace_named(&self, name: &str) -> Result<Workspace1Proxy<'static>, CliError> {
        let path = self.manager().await?.get(name).await?;
        self.workspace(path).await
    }
}

/// The daemon's socket: `<state>/wsd.sock`, unless that path is too long for a
/// socket address and the daemon named another in `<state>/wsd.socket` (`None`
/// until it has).
fn socket_of(state_dir: &Path) -> Option<PathBuf> {
    let default = state_dir.join("wsd.sock");
    // A Unix socket address holds 107 bytes and a NUL.
    if default.as_os_str().len() < 108 {
        return Some(default);
    }
    let record = std::fs::read_to_string(state_dir.join("wsd.socket")).ok()?;
    Some(PathBuf::from(record.trim_end_matches('\n')))
}

/// Why no connection was made.
enum Dial {
    /// Nothing answered (yet) on the socket.
    NoAnswer,
    /// The socket is served by this uid, neither root nor this process's.
    Untrusted(u32),
    /// The daemon accepted the connection and closed it before the handshake
    /// was over (the error zbus saw).
    Closed(String),
}

async fn dial(socket: &Path) -> Result<zbus::Connection, Dial> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|_| Dial::NoAnswer)?;
    let server = stream.peer_cred().map_err(|_| Dial::NoAnswer)?.uid();
    if !trusted(server, nix::unistd::geteuid().as_raw()) {
        return Err(Dial::Untrusted(server));
    }
    zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await
        .map_err(|e| Dial::Closed(e.to_string()))
}

/// Whether a daemon running as `server` may have a client's requests and
/// descriptors: a root daemon serves everyone, else only its own user.
fn trusted(server: u32, me: u32) -> bool {
    server == 0 || server == me
}

/// `wsd` next to this `ws` (an install or a build directory), else from PATH.
pub(crate) fn wsd_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("wsd")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("wsd"))
}

/// Starts `wsd` for `state_dir` in its own process group (a Ctrl-C in this
/// terminal does not stop it), logging to `<state_dir>/wsd.log`; with the size
/// of the log before it started, where what it writes begins.
fn start_daemon(state_dir: &Path) -> Result<(std::process::Child, u64), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let io = |source| CliError::DaemonStart {
        state_dir: state_dir.to_owned(),
        detail: format!("{source}"),
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    // The daemon's log names the user's files: theirs alone (the daemon keeps
    // it so too).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(state_dir.join("wsd.log"))
        .map_err(io)?;
    let log_start = log.metadata().map_err(io)?.len();
    let binary = wsd_binary();
    // Only the daemon of the default state directory takes the well-known name
    // on a bus: one started for another directory (a test's, a project's) must
    // not take it from the user's own daemon.
    let is_default = crate::state_dir::default_state_dir().is_ok_and(|d| d == state_dir);
    std::process::Command::new(&binary)
        .arg("--state-dir")
        .arg(state_dir)
        .args(if is_default {
            ["--bus", "auto"]
        } else {
            ["--bus", "none"]
        })
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io)?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map(|child| (child, log_start))
        .map_err(|e| CliError::DaemonStart {
            state_dir: state_dir.to_owned(),
            detail: format!("cannot run {}: {e}", binary.display()),
        })
}

fn last_log_line(state_dir: &Path) -> String {
    std::fs::read_to_string(state_dir.join("wsd.log"))
        .ok()
        .and_then(|log| {
            log.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "it exited without saying why".to_owned())
}

/// Whether the log, from `start` on (what daemons wrote since the last one was
/// spawned, other daemons' lines among them), says a daemon lost the lock.
fn log_says_another_serves(state_dir: &Path, start: u64) -> bool {
    std::fs::read(state_dir.join("wsd.log")).is_ok_and(|log| {
        let start = usize::try_from(start).unwrap_or(usize::MAX).min(log.len());
        String::from_utf8_lossy(&log[start..]).contains("another wsd serves")
    })
}

#[cfg(test)]
mod tests {
    use super::trusted;

    #[test]
    fn only_a_root_daemon_or_ones_own_is_trusted() {
        assert!(trusted(0, 1000), "the system's daemon");
        assert!(trusted(1000, 1000), "one's own");
        assert!(trusted(0, 0));
        assert!(!trusted(1001, 1000), "another user's");
        assert!(!trusted(1000, 0), "root does not talk to a user's daemon");
    }
}
