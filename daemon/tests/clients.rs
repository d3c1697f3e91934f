//! The daemon survives its clients (docs/security.md): a root `wsd` on its
//! socket, attacked by a real user (`wstest1`) while another (`wstest2`) asks
//! it something, with `busctl`.
//!
//! The attacker runs in a child process: this test binary re-executed with the
//! user's uid and gid (`support::rerun_as`), running the test `user_side`,
//! which connects the raw way an attacker would, prints what it sees as `@@`
//! lines, and holds its connections until its stdin closes.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use overlay::testsuite::privileged;
use support::{User, rerun_as, shared_tempdir, users};

const WAIT: Duration = Duration::from_secs(30);
/// The body a message announces in the attack on memory: just under zbus's own
/// cap of 128 MiB, which it would allocate whole.
const HUGE_BODY: u32 = (128 << 20) - 64;

/// A root `wsd` on its socket only, with a configuration file of the test's.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    /// `config` as its configuration file; at most `nofile` descriptors, if given.
    fn start(config: &str, nofile: Option<u32>) -> Daemon {
        let dir = shared_tempdir();
        let config_file = dir.path().join("wsd.toml");
        std::fs::write(&config_file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("wsd.log")).unwrap();
        let mut cmd = match nofile {
            // prlimit execs wsd: the child is the daemon.
            Some(n) => {
                let mut cmd = Command::new("prlimit");
                cmd.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_wsd"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_wsd")),
        };
        let child = cmd
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--config")
            .arg(&config_file)
            .args(["--bus", "none"])
            .env("WSD_LOG", "info")
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = Daemon { dir, child };
        let deadline = Instant::now() + WAIT;
        while !daemon.socket().exists() {
            assert!(daemon.alive(), "wsd ended: {}", daemon.log());
            assert!(Instant::now() < deadline, "wsd did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("state/wsd.sock")
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wsd.log")).unwrap()
    }

    /// The lines of the log that contain `text`.
    fn logged(&self, text: &str) -> usize {
        self.log().lines().filter(|l| l.contains(text)).count()
    }

    /// The daemon's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// `user` lists their workspaces with busctl: what it printed, or why not.
    fn list_as(&self, user: User) -> Result<String, String> {
        let out = Command::new("busctl")
            .arg("--address")
            .arg(format!("unix:path={}", self.socket().display()))
            .args(["--timeout=10", "call", "org.ws.Daemon", "/org/ws"])
            .args(["org.ws.Manager1", "List"])
            .current_dir("/")
            .uid(user.uid)
            .gid(user.gid)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `user` is served: their `List` is answered (within `within`, retried).
    fn serves(&self, user: User, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.list_as(user) {
                Ok(listed) => {
                    assert_eq!(listed.trim(), "a(so) 0");
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!(
                    "uid {} was not served: {e}\nthe daemon's log:\n{}",
                    user.uid,
                    self.log()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        support::terminate(&mut self.child);
    }
}

/// A user's side (`user_side`) in a child process, holding its connections
/// until stopped.
struct Attacker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Attacker {
    /// `user` in `role`, with `count` connections to `daemon`.
    fn start(user: User, role: &str, count: usize, daemon: &Daemon) -> Attacker {
        let mut child = rerun_as(user, "user_side")
            .env("WS_CLIENTS_ROLE", role)
            .env("WS_CLIENTS_COUNT", count.to_string())
            .env("WS_CLIENTS_SOCKET", daemon.socket())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let lines = support::report_lines(stdout);
        Attacker {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// The value of the line `key VALUE`, once printed.
    fn value(&mut self, key: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = self
                .seen
                .iter()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            {
                return value.to_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("the attacker never printed {key:?}: {:#?}", self.seen),
            }
        }
    }

    fn number(&mut self, key: &str) -> u64 {
        self.value(key).parse().unwrap()
    }

    /// Closes its connections and waits for it.
    fn stop(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the attacker failed: {:#?}", self.seen);
    }
}

/// A flood of connections by one user takes no more than their share: those
/// beyond it are closed at once, and another user is served meanwhile.
#[test]
fn a_users_flood_of_connections_is_refused_beyond_their_share_and_another_user_is_served() {
    if !privileged(
        "a_users_flood_of_connections_is_refused_beyond_their_share_and_another_user_is_served",
    ) {
        return;
    }
    let [attacker, other] = users();
    // Silent connections are not closed by the handshake deadline meanwhile.
    let mut daemon = Daemon::start(
        "[limits]\nmax-connections-per-user = 8\nhandshake-timeout-seconds = 600\n",
        None,
    );
    let mut flood = Attacker::start(attacker, "flood", 100, &daemon);
    assert_eq!(flood.number("connected"), 100);
    assert_eq!(
        flood.number("open"),
        8,
        "the daemon's log:\n{}",
        daemon.log()
    );
    daemon.serves(other, Duration::from_secs(10));
    assert!(daemon.alive());
    // Each refusal names the uid; they are logged once a while, not 92 times.
    let refused = daemon.logged(&format!("refused a connection of uid {}", attacker.uid));
    assert!((1..=3).contains(&refused), "{}", daemon.log());
    flood.stop();
    daemon.serves(attacker, Duration::from_secs(10));
}

/// Running out of descriptors in `accept` does not end the daemon: it waits
/// for some to close and serves again.
#[test]
fn running_out_of_descriptors_in_accept_does_not_end_the_daemon() {
    if !privileged("running_out_of_descriptors_in_accept_does_not_end_the_daemon") {
        return;
    }
    let [attacker, other] = users();
    // Limits high enough that only the descriptors run out.
    let mut daemon = Daemon::start(
        "[limits]\nmax-connections-per-user = 10000\nmax-connections = 10000\n\
         handshake-timeout-seconds = 600\n",
        Some(128),
    );
    let flood = Attacker::start(attacker, "flood", 300, &daemon);
    let deadline = Instant::now() + WAIT;
    let failed = "cannot accept a connection: Too many open files";
    while daemon.logged(failed) == 0 {
        assert!(daemon.alive(), "the daemon ended:\n{}", daemon.log());
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.alive(), "the daemon ended:\n{}", daemon.log());
    // Rate-limited, though accept fails again and again.
    assert!(daemon.logged(failed) <= 2, "{}", daemon.log());
    flood.stop();
    daemon.serves(other, Duration::from_secs(20));
    assert!(daemon.alive());
}

/// A message that announces a body of nearly 128 MiB closes its connection
/// before the daemon allocates it, and others are served.
#[test]
fn a_message_announcing_a_huge_body_closes_the_connection_before_the_daemon_allocates_it() {
    if !privileged(
        "a_message_announcing_a_huge_body_closes_the_connection_before_the_daemon_allocates_it",
    ) {
        return;
    }
    let [attacker, other] = users();
    let mut daemon = Daemon::start("", None);
    daemon.serves(other, Duration::from_secs(10));
    let before = daemon.rss_kib();
    let mut attack = Attacker::start(attacker, "huge", 4, &daemon);
    assert_eq!(attack.number("sent"), 4);
    // zbus allocates as soon as it has the header.
    std::thread::sleep(Duration::from_secs(1));
    let during = daemon.rss_kib();
    let closed = attack.number("closed");
    assert!(
        during < before + 64 * 1024,
        "the daemon's memory went from {before} KiB to {during} KiB"
    );
    assert_eq!(closed, 4, "the daemon's log:\n{}", daemon.log());
    assert!(
        daemon.logged(&format!(
            "closed the connection of a client of uid {}: it sent a message of {} bytes",
            attacker.uid,
            u64::from(HUGE_BODY) + 16
        )) >= 1,
        "{}",
        daemon.log()
    );
    daemon.serves(other, Duration::from_secs(10));
    assert!(daemon.alive());
    attack.stop();
}

/// A message under the limit is read and answered; one over it closes the
/// connection, with zbus on both sides.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_under_the_size_limit_is_answered_and_one_over_it_closes_the_connection() {
    if !privileged(
        "a_message_under_the_size_limit_is_answered_and_one_over_it_closes_the_connection",
    ) {
        return;
    }
    let daemon = Daemon::start("[limits]\nmax-message-bytes = 1048576\n", None);
    let connect = async || {
        let stream = tokio::net::UnixStream::connect(daemon.socket())
            .await
            .unwrap();
        zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .unwrap()
    };
    let get = async |conn: &zbus::Connection, name: String| {
        conn.call_method(
            Some("org.ws.Daemon"),
            "/org/ws",
            Some("org.ws.Manager1"),
            "Get",
            &name,
        )
        .await
    };
    let conn = connect().await;
    // Answered: with an error (no such workspace, or not a name), but read.
    match get(&conn, "x".repeat(512 << 10)).await {
        Err(zbus::Error::MethodError(..)) => {}
        other => panic!("a 512 KiB call: {other:?}"),
    }
    match get(&conn, "x".repeat(2 << 20)).await {
        Err(zbus::Error::MethodError(name, ..)) => {
            panic!("a 2 MiB call was read and answered with {name}")
        }
        Err(_) => {}
        Ok(reply) => panic!("a 2 MiB call was answered: {reply:?}"),
    }
    // The connection is closed: nothing more is answered on it.
    assert!(get(&conn, "x".to_owned()).await.is_err());
    // Others are served.
    let conn = connect().await;
    match get(&conn, "x".to_owned()).await {
        Err(zbus::Error::MethodError(..)) => {}
        other => panic!("a small call: {other:?}"),
    }
}

/// A client that sends a handshake line without end is closed once it has sent
/// a little, not when the deadline comes, and zbus buffers no more of it.
#[test]
fn a_handshake_line_without_end_is_closed_before_the_daemon_buffers_much() {
    if !privileged("a_handshake_line_without_end_is_closed_before_the_daemon_buffers_much") {
        return;
    }
    let [attacker, other] = users();
    let mut daemon = Daemon::start("", None);
    let mut attack = Attacker::start(attacker, "endless", 1, &daemon);
    assert_eq!(attack.value("closed"), "true", "{}", daemon.log());
    let written = attack.number("written");
    let after = attack.number("after_ms");
    // 16 KiB read, and what the socket's buffers took; well before the
    // deadline of 10 s.
    assert!(written < 1 << 20, "{written} bytes written");
    assert!(after < 5_000, "closed after {after} ms");
    daemon.serves(other, Duration::from_secs(10));
    assert!(daemon.alive());
    attack.stop();
}

/// A client that connects and does not finish the handshake is closed after
/// the deadline, and its place is given back.
#[test]
fn a_client_that_does_not_finish_the_handshake_is_closed_after_the_deadline() {
    if !privileged("a_client_that_does_not_finish_the_handshake_is_closed_after_the_deadline") {
        return;
    }
    let [attacker, _] = users();
    let mut daemon = Daemon::start(
        "[limits]\nmax-connections-per-user = 2\nhandshake-timeout-seconds = 2\n",
        None,
    );
    // One says nothing, the other begins and stops.
    let mut silent = Attacker::start(attacker, "silent", 2, &daemon);
    assert_eq!(silent.number("closed"), 2, "{}", daemon.log());
    let after = silent.number("after_ms");
    assert!((1_500..6_000).contains(&after), "closed after {after} ms");
    assert!(
        daemon.logged(&format!(
            "closed the connection of a client of uid {}: no handshake within 2 s",
            attacker.uid
        )) >= 1,
        "{}",
        daemon.log()
    );
    // Its two connections, still open on its side, hold no place.
    daemon.serves(attacker, Duration::from_secs(10));
    assert!(daemon.alive());
    silent.stop();
}

/// A user's side, in a child process (see `Attacker`): does nothing unless
/// `WS_CLIENTS_ROLE` says what.
#[test]
fn user_side() {
    let Ok(role) = std::env::var("WS_CLIENTS_ROLE") else {
        return;
    };
    let count: usize = std::env::var("WS_CLIENTS_COUNT").unwrap().parse().unwrap();
    let socket = PathBuf::from(std::env::var("WS_CLIENTS_SOCKET").unwrap());
    let report = |key: &str, value: &dyn std::fmt::Display| {
        println!("@@{key} {value}");
        std::io::stdout().flush().unwrap();
    };
    let streams: Vec<UnixStream> = match role.as_str() {
        "flood" => {
            let streams: Vec<_> = (0..count)
                .map(|_| UnixStream::connect(&socket).unwrap())
                .collect();
            report("connected", &streams.len());
            report("open", &settled(&streams));
            streams
        }
        "huge" => {
            let streams: Vec<_> = (0..count).map(|_| announce_huge(&socket)).collect();
            report("sent", &streams.len());
            let start = Instant::now();
            let closed = closed_within(&streams, Duration::from_secs(10), start);
            report("closed", &closed.0);
            streams
        }
        "endless" => {
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream
                .set_write_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let start = Instant::now();
            stream.write_all(b"\0AUTH ").unwrap();
            let chunk = vec![b'A'; 64 << 10];
            let mut written = 6;
            let closed = loop {
                match stream.write(&chunk) {
                    Ok(n) => written += n,
                    Err(e) => {
                        break matches!(
                            e.kind(),
                            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                        );
                    }
                }
                if written > 64 << 20 || start.elapsed() > Duration::from_secs(15) {
                    break false;
                }
            };
            report("closed", &closed);
            report("written", &written);
            report("after_ms", &start.elapsed().as_millis());
            vec![stream]
        }
        "silent" => {
            let streams: Vec<_> = (0..count)
                .map(|i| {
                    let mut stream = UnixStream::connect(&socket).unwrap();
                    if i % 2 == 1 {
                        stream.write_all(b"\0AUTH EXTERNAL").unwrap();
                    }
                    stream
                })
                .collect();
            let start = Instant::now();
            let (closed, after) = closed_within(&streams, Duration::from_secs(15), start);
            report("closed", &closed);
            report("after_ms", &after.as_millis());
            streams
        }
        _ => panic!("no role {role}"),
    };
    // Held until the test is done with them.
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(streams);
    report("done", &"");
}

/// Whether the daemon has closed `stream` (without waiting).
fn is_closed(stream: &UnixStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// How many of `streams` are open once that number has held for a second.
fn settled(streams: &[UnixStream]) -> usize {
    let open = || streams.iter().filter(|s| !is_closed(s)).count();
    let mut last = open();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = open();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// How many of `streams` the daemon closed within `within`, and when the last
/// of those was seen closed (from `start`).
fn closed_within(streams: &[UnixStream], within: Duration, start: Instant) -> (usize, Duration) {
    let mut when = Duration::ZERO;
    loop {
        let closed = streams.iter().filter(|s| is_closed(s)).count();
        if closed > 0 {
            when = start.elapsed();
        }
        if closed == streams.len() || start.elapsed() > within {
            return (closed, when);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection that authenticates as its uid and sends the primary header of
/// a method call announcing a body of `HUGE_BODY` bytes, and nothing more.
fn announce_huge(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let uid: String = nix::unistd::getuid()
        .as_raw()
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    stream
        .write_all(format!("\0AUTH EXTERNAL {uid}\r\n").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    let mut byte = [0];
    while !reply.ends_with(b"\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "no reply to AUTH");
        reply.push(byte[0]);
    }
    assert!(
        reply.starts_with(b"OK "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let mut header = vec![b'l', 1, 0, 1];
    header.extend(HUGE_BODY.to_le_bytes());
    header.extend(1u32.to_le_bytes()); // serial
    header.extend(0u32.to_le_bytes()); // header fields: none
    stream.write_all(b"BEGIN\r\n").unwrap();
    stream.write_all(&header).unwrap();
    stream
}
