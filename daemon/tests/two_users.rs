//! Two real users (`wstest1`, `wstest2`, made with `useradd` if absent) on one
//! root `wsd` that serves a private system-style bus and its socket. The first
//! user opens, commits and closes a workspace; the second can neither act on it
//! nor learn that it exists, nor hear its signals, over the bus, over the socket
//! and across the two; and neither imports what they cannot read or mounts on
//! what is not theirs. The first user's side of every check is run too, so a
//! check that cannot see the workspace fails rather than passing.
//!
//! The users' sides run in child processes: this test binary re-executed with
//! the user's uid and gid (`as_user`, on `support::rerun_as`), running the test
//! `user_side`, a small zbus client that prints what it sees as `@@` lines.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use overlay::testsuite::privileged;
use support::{User, rerun_as, shared_tempdir, users};

const BUS_NAME: &str = "org.ws.Daemon";
const WAIT: Duration = Duration::from_secs(30);

/// A private bus configured like the system bus (default deny for calls and
/// names), with the daemon's own policy file included: what it allows is what
/// the tests get.
struct PrivateBus {
    _dir: tempfile::TempDir,
    child: Child,
    address: String,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let dir = shared_tempdir();
        let policy = manifest_dir().join("dist/org.ws.Daemon.conf");
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={}/bus</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  </policy>
  <include>{}</include>
</busconfig>
"#,
            dir.path().display(),
            policy.display()
        );
        let config_path = dir.path().join("bus.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon runs (Debian package dbus-daemon)");
        let mut address = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        PrivateBus {
            _dir: dir,
            child,
            address,
        }
    }

    /// Whether `name` has an owner on the bus.
    fn has_owner(&self, name: &str) -> bool {
        let out = Command::new("busctl")
            .args(["--address", &self.address, "call", "org.freedesktop.DBus"])
            .args(["/org/freedesktop/DBus", "org.freedesktop.DBus"])
            .args(["NameHasOwner", "s", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "b true"
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root `wsd` serving its socket and the private bus.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn start(bus: &PrivateBus) -> Daemon {
        let dir = shared_tempdir();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("README"), "readme\n").unwrap();
        std::fs::write(src.join("sub/file.c"), "int x;\n").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wsd"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--bus-address", &bus.address])
            .env("WSD_LOG", "debug,zbus=info")
            .spawn()
            .unwrap();
        let daemon = Daemon { dir, child };
        let deadline = Instant::now() + WAIT;
        while !daemon.socket().exists() || !bus.has_owner(BUS_NAME) {
            assert!(
                Instant::now() < deadline,
                "wsd did not serve its socket and {BUS_NAME}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("state/wsd.sock")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        for m in overlay::mount_table().unwrap_or_default() {
            if m.target.starts_with(self.dir.path()) {
                let _ = overlay::unmount(&m.target);
            }
        }
    }
}

/// How a user's side reaches the daemon.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Bus,
    Socket,
}

impl Transport {
    /// The `WS_TWO_USERS_AT` value for a child.
    fn at(self, bus: &PrivateBus, daemon: &Daemon) -> String {
        match self {
            Transport::Bus => format!("bus:{}", bus.address),
            Transport::Socket => format!("socket:{}", daemon.socket().display()),
        }
    }
}

/// This test binary, run as `user` in the role `role` (see `user_side`).
fn as_user(user: User, role: &str, at: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = rerun_as(user, "user_side");
    cmd.env("WS_TWO_USERS_ROLE", role)
        .env("WS_TWO_USERS_AT", at)
        .envs(env.iter().copied());
    cmd
}

/// The `@@` lines of a finished child, which must have succeeded.
fn report(mut cmd: Command) -> Vec<String> {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines(&stdout)
}

fn lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| Some(l.split_once("@@")?.1.to_owned()))
        .collect()
}

/// The value of the line `key ...` in `lines`.
fn value<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key} in {lines:#?}"))
}

/// A user's signal monitor, running until `finish`.
struct Monitor {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Monitor {
    fn start(mut cmd: Command) -> Monitor {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let lines = support::report_lines(stdout);
        let mut monitor = Monitor {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        monitor.wait_for("ready");
        monitor
    }

    /// Waits until the monitor has printed `line`.
    fn wait_for(&mut self, line: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.seen.iter().any(|l| l == line) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "the monitor never printed {line:?}; it printed {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Stops the monitor; returns every line it printed.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        self.wait_for("done");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a monitor failed: {:#?}", self.seen);
        self.seen
    }
}

/// The first user opens, commits and closes a workspace, reaching the daemon
/// over `first`; the second, over `second`, must see and hear none of it.
fn another_user_sees_nothing(first: Transport, second: Transport) {
    let [one, two] = users();
    let bus = PrivateBus::start();
    let daemon = Daemon::start(&bus);
    let (at1, at2) = (first.at(&bus, &daemon), second.at(&bus, &daemon));
    // Both users talk to the daemon and listen before anything happens.
    let mut monitor1 = Monitor::start(as_user(one, "monitor", &at1, &[]));
    let monitor2 = Monitor::start(as_user(two, "monitor", &at2, &[]));
    let src = daemon.dir.path().join("src");
    let opened = report(as_user(
        one,
        "open",
        &at1,
        &[("WS_NAME", "shared"), ("WS_SOURCE", src.to_str().unwrap())],
    ));
    let target = value(&opened, "path").to_owned();
    assert!(target.starts_with("/org/ws/workspace/"), "{target}");
    let id = target.rsplit('/').next().unwrap().to_owned();
    let probe = |user, at: &str| {
        report(as_user(
            user,
            "probe",
            at,
            &[("WS_TARGET", &target), ("WS_NAME", "shared")],
        ))
    };
    // The owner sees it everywhere: each probe can find the workspace.
    let mine = probe(one, &at1);
    assert!(value(&mine, "managed").contains(&target), "{mine:#?}");
    assert!(
        value(&mine, "nodes /org/ws/workspace").contains(&id),
        "{mine:#?}"
    );
    assert!(
        value(&mine, "nodes /org/ws").contains("workspace"),
        "{mine:#?}"
    );
    assert!(value(&mine, "list").contains(&target), "{mine:#?}");
    assert_eq!(value(&mine, "get"), format!("ok {target}"));
    let calls: Vec<&String> = mine.iter().filter(|l| l.starts_with("call ")).collect();
    assert!(calls.len() >= 7, "{mine:#?}");
    for line in calls {
        assert!(
            line.contains(" target ok"),
            "the owner's call failed: {line}"
        );
    }
    // The other user finds nothing, and each answer is the one a workspace that
    // never existed gets.
    let theirs = probe(two, &at2);
    assert!(!value(&theirs, "managed").contains(&id), "{theirs:#?}");
    assert!(
        !value(&theirs, "nodes /org/ws/workspace").contains(&id),
        "{theirs:#?}"
    );
    assert!(
        !value(&theirs, "nodes /org/ws").contains("workspace"),
        "{theirs:#?}"
    );
    assert!(!value(&theirs, "list").contains(&id), "{theirs:#?}");
    let get = value(&theirs, "get");
    assert!(get.contains("org.ws.Error.NotFound"), "{get}");
    assert_eq!(
        get,
        value(&theirs, "get-unknown"),
        "Get tells the names apart"
    );
    let calls: Vec<&String> = theirs.iter().filter(|l| l.starts_with("call ")).collect();
    assert!(calls.len() >= 10, "{theirs:#?}");
    for line in calls {
        let rest = line.strip_prefix("call ").unwrap();
        let (method, answer) = rest.split_once(" target ").unwrap();
        assert_eq!(
            answer,
            value(&theirs, &format!("unknown {method}")),
            "{method} on another user's workspace differs from one on no workspace"
        );
        if method != "Ping" {
            assert!(
                answer.starts_with("error org.freedesktop.DBus.Error.UnknownObject")
                    || answer.starts_with("error org.ws.Error.NotFound")
                    || answer.starts_with("error org.ws.Error.AccessDenied"),
                "{method}: {answer}"
            );
        }
    }
    // The workspace is untouched: the other user's Commit, Discard and Close did
    // nothing.
    let after = probe(one, &at1);
    assert_eq!(value(&after, "get"), format!("ok {target}"));
    assert!(value(&after, "log").ends_with("open"), "{after:#?}");
    // Signals: the owner hears the commit and the close, the other user nothing.
    let committed = report(as_user(one, "commit", &at1, &[("WS_TARGET", &target)]));
    assert!(!value(&committed, "digest").is_empty());
    report(as_user(one, "close", &at1, &[("WS_TARGET", &target)]));
    for signal in ["InterfacesAdded", "PropertiesChanged", "InterfacesRemoved"] {
        monitor1.wait_for(&format!("signal {signal} {target}"));
    }
    // What the other monitor would have heard has been sent by now; give the bus a
    // moment to deliver it anyway.
    std::thread::sleep(Duration::from_millis(500));
    let heard = monitor2.finish();
    assert!(
        !heard.iter().any(|l| l.starts_with("signal ")),
        "another user heard signals: {heard:#?}"
    );
    monitor1.finish();
}

/// What one user may import and where they may mount, through `transport`: not a
/// subdirectory they cannot read (the daemon reads as them), not on another
/// user's directory; their own directories work.
fn a_user_imports_and_mounts_only_what_is_theirs(transport: Transport) {
    use std::os::unix::fs::PermissionsExt;
    let [one, two] = users();
    let bus = PrivateBus::start();
    let daemon = Daemon::start(&bus);
    let at = transport.at(&bus, &daemon);
    let dir = daemon.dir.path();
    let owned = |path: &Path, user: User, mode: u32| {
        std::fs::create_dir_all(path).unwrap();
        nix::unistd::chown(path, Some(user.uid.into()), Some(user.gid.into())).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // The first user's tree, readable by all but for one subdirectory.
    let src = dir.join("theirs");
    owned(&src, one, 0o755);
    std::fs::write(src.join("README"), "public\n").unwrap();
    owned(&src.join("private"), one, 0o700);
    std::fs::write(src.join("private/key"), "secret\n").unwrap();
    let open = |user: User, name: &str, source: &Path, mount: Option<&Path>| {
        let mut env = vec![("WS_NAME", name), ("WS_SOURCE", source.to_str().unwrap())];
        if let Some(mount) = mount {
            env.push(("WS_MOUNT", mount.to_str().unwrap()));
        }
        value(&report(as_user(user, "try-open", &at, &env)), "open").to_owned()
    };
    let refused = open(two, "snoop", &src, None);
    assert!(
        refused.starts_with("error org.ws.Error.AccessDenied") && refused.contains("private"),
        "{refused}"
    );
    let allowed = open(one, "mine", &src, None);
    assert!(allowed.starts_with("ok"), "the owner imports it: {allowed}");

    // Mount points: another user's empty directory is refused, one's own works.
    let readable = dir.join("readable");
    owned(&readable, two, 0o755);
    std::fs::write(readable.join("README"), "readable\n").unwrap();
    let foreign = dir.join("foreign");
    owned(&foreign, one, 0o777);
    let refused = open(two, "elsewhere", &readable, Some(&foreign));
    assert!(
        refused.starts_with("error org.ws.Error.AccessDenied")
            && refused.contains("does not belong to you"),
        "{refused}"
    );
    let own = dir.join("own");
    owned(&own, two, 0o755);
    let allowed = open(two, "here", &readable, Some(&own));
    assert!(allowed.starts_with("ok"), "{allowed}");
    assert_eq!(
        std::fs::read_to_string(own.join("README")).unwrap(),
        "readable\n"
    );
}

#[test]
fn over_the_socket_a_user_imports_and_mounts_only_what_is_theirs() {
    if privileged("over_the_socket_a_user_imports_and_mounts_only_what_is_theirs") {
        a_user_imports_and_mounts_only_what_is_theirs(Transport::Socket);
    }
}

#[test]
fn over_the_bus_a_user_imports_and_mounts_only_what_is_theirs() {
    if privileged("over_the_bus_a_user_imports_and_mounts_only_what_is_theirs") {
        a_user_imports_and_mounts_only_what_is_theirs(Transport::Bus);
    }
}

#[test]
fn over_the_bus_another_user_sees_nothing() {
    if privileged("over_the_bus_another_user_sees_nothing") {
        another_user_sees_nothing(Transport::Bus, Transport::Bus);
    }
}

#[test]
fn over_the_socket_another_user_sees_nothing() {
    if privileged("over_the_socket_another_user_sees_nothing") {
        another_user_sees_nothing(Transport::Socket, Transport::Socket);
    }
}

#[test]
fn across_socket_and_bus_another_user_sees_nothing() {
    if privileged("across_socket_and_bus_another_user_sees_nothing") {
        another_user_sees_nothing(Transport::Socket, Transport::Bus);
        another_user_sees_nothing(Transport::Bus, Transport::Socket);
    }
}

#[test]
fn only_root_may_own_the_name_and_everyone_may_call_it() {
    if !privileged("only_root_may_own_the_name_and_everyone_may_call_it") {
        return;
    }
    let [one, _] = users();
    let bus = PrivateBus::start();
    let request = |user: Option<User>| {
        let mut cmd = Command::new("gdbus");
        cmd.args(["call", "--address", &bus.address])
            .args(["--dest", "org.freedesktop.DBus"])
            .args(["--object-path", "/org/freedesktop/DBus"])
            .args([
                "--method",
                "org.freedesktop.DBus.RequestName",
                BUS_NAME,
                "uint32 4",
            ]);
        if let Some(user) = user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd.output().unwrap()
    };
    let denied = request(Some(one));
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let root = request(None);
    assert!(
        root.status.success(),
        "{}",
        String::from_utf8_lossy(&root.stderr)
    );
    // And a user may call the daemon there (the other tests call it everything).
    let daemon = Daemon::start(&bus);
    let listed = report(as_user(one, "list", &Transport::Bus.at(&bus, &daemon), &[]));
    assert_eq!(value(&listed, "list"), "");
}

#[test]
fn a_bus_asked_for_must_work_and_auto_goes_on_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let wsd = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsd"));
        cmd.arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/system")
            .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/session")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    for args in [
        &["--bus-address", "unix:path=/nonexistent/bus"][..],
        &["--bus", "system"],
        &["--bus", "session"],
    ] {
        let out = wsd(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "wsd {args:?} ran without its bus");
        assert!(
            stderr.contains("cannot connect to the"),
            "{args:?}: {stderr}"
        );
    }
    // auto: the failures are logged and the socket is served.
    let mut child = wsd(&[]).spawn().unwrap();
    let socket = dir.path().join("state/wsd.sock");
    let deadline = Instant::now() + WAIT;
    while !socket.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "wsd --bus auto stopped without a bus"
        );
        assert!(Instant::now() < deadline, "wsd did not serve its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not serving on the session bus"),
        "{stderr}"
    );
}

/// The users' side (a child process; see `as_user`): nothing unless
/// `WS_TWO_USERS_ROLE` says what to do.
#[test]
fn user_side() {
    let Ok(role) = std::env::var("WS_TWO_USERS_ROLE") else {
        return;
    };
    let at = std::env::var("WS_TWO_USERS_AT").unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(client::run(&role, &at));
}

/// The zbus client the users run.
mod client {
    use futures_util::StreamExt;
    use zbus::Connection;
    use zbus::message::Type;
    use zbus::zvariant::{DynamicType, Structure, Value};

    const DEST: &str = "org.ws.Daemon";
    const WS: &str = "org.ws.Workspace1";

    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
    }

    async fn connect(at: &str) -> Connection {
        if let Some(address) = at.strip_prefix("bus:") {
            return zbus::connection::Builder::address(address)
                .unwrap()
                .build()
                .await
                .unwrap();
        }
        let socket = at.strip_prefix("socket:").unwrap();
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .unwrap();
        // A socket client that says no Hello gets its workspace objects at its
        // first Manager1 call (docs/dbus.md).
        call(&conn, "/org/ws", "org.ws.Manager1", "List", &())
            .await
            .unwrap();
        conn
    }

    async fn call<B>(
        conn: &Connection,
        path: &str,
        interface: &str,
        member: &str,
        body: &B,
    ) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + DynamicType,
    {
        conn.call_method(Some(DEST), path, Some(interface), member, body)
            .await
    }

    /// An answer as text: `ok <arguments>` or `error <name>: <message>`.
    fn answer(result: zbus::Result<zbus::Message>) -> String {
        match result {
            Ok(reply) => {
                let body = reply.body();
                match body.deserialize::<Structure<'_>>() {
                    Ok(fields) => format!("ok {fields:?}"),
                    Err(_) => "ok".to_owned(),
                }
            }
            Err(zbus::Error::MethodError(name, message, _)) => {
                format!("error {name}: {}", message.unwrap_or_default())
            }
            Err(e) => format!("failed {e}"),
        }
    }

    /// The child nodes of `path` in its introspection.
    async fn nodes(conn: &Connection, path: &str) -> String {
        let reply = call(
            conn,
            path,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
            &(),
        )
        .await;
        let xml: String = match reply {
            Ok(reply) => reply.body().deserialize().unwrap(),
            Err(_) => String::new(),
        };
        xml.split("<node name=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Every method a workspace object answers, on `path`; the owner's probe
    /// makes only the calls that change nothing.
    async fn methods(conn: &Connection, path: &str, all: bool) -> Vec<(&'static str, String)> {
        let props = "org.freedesktop.DBus.Properties";
        let mut out = vec![
            ("Status", answer(call(conn, path, WS, "Status", &()).await)),
            ("Diff", answer(call(conn, path, WS, "Diff", &()).await)),
            ("Log", answer(call(conn, path, WS, "Log", &()).await)),
            (
                "Get",
                answer(call(conn, path, props, "Get", &(WS, "Name")).await),
            ),
            (
                "GetAll",
                answer(call(conn, path, props, "GetAll", &(WS,)).await),
            ),
            (
                "Introspect",
                answer(
                    call(
                        conn,
                        path,
                        "org.freedesktop.DBus.Introspectable",
                        "Introspect",
                        &(),
                    )
                    .await,
                ),
            ),
            (
                "Ping",
                answer(call(conn, path, "org.freedesktop.DBus.Peer", "Ping", &()).await),
            ),
        ];
        if all {
            out.extend([
                (
                    "Commit",
                    answer(call(conn, path, WS, "Commit", &("mine",)).await),
                ),
                (
                    "Discard",
                    answer(call(conn, path, WS, "Discard", &()).await),
                ),
                (
                    "Close",
                    answer(call(conn, path, WS, "Close", &(true,)).await),
                ),
                (
                    "Set",
                    answer(
                        call(conn, path, props, "Set", &(WS, "Name", Value::from("mine"))).await,
                    ),
                ),
            ]);
        }
        out
    }

    pub async fn run(role: &str, at: &str) {
        let conn = connect(at).await;
        match role {
            "open" => {
                let source = std::fs::File::open(env("WS_SOURCE")).unwrap();
                let fd = zbus::zvariant::Fd::from(std::os::fd::AsFd::as_fd(&source));
                let reply = call(
                    &conn,
                    "/org/ws",
                    "org.ws.Manager1",
                    "Open",
                    &(env("WS_NAME"), fd, ""),
                )
                .await
                .unwrap();
                let path: zbus::zvariant::OwnedObjectPath = reply.body().deserialize().unwrap();
                println!("@@path {}", path.as_str());
            }
            "try-open" => {
                let source = std::fs::File::open(env("WS_SOURCE")).unwrap();
                let source = zbus::zvariant::Fd::from(std::os::fd::AsFd::as_fd(&source));
                let name = env("WS_NAME");
                let result = match std::env::var("WS_MOUNT") {
                    Ok(mount) => {
                        let mount = std::fs::File::open(mount).unwrap();
                        let mount = zbus::zvariant::Fd::from(std::os::fd::AsFd::as_fd(&mount));
                        let args = (name, source, mount, "");
                        call(&conn, "/org/ws", "org.ws.Manager1", "OpenAt", &args).await
                    }
                    Err(_) => {
                        let args = (name, source, "");
                        call(&conn, "/org/ws", "org.ws.Manager1", "Open", &args).await
                    }
                };
                println!("@@open {}", answer(result));
            }
            "probe" => probe(&conn).await,
            "list" => println!("@@list {}", list(&conn).await),
            "commit" => {
                let target = env("WS_TARGET");
                let reply = call(
                    &conn,
                    &target,
                    "org.freedesktop.DBus.Properties",
                    "Get",
                    &(WS, "Path"),
                )
                .await
                .unwrap();
                let view: zbus::zvariant::OwnedValue = reply.body().deserialize().unwrap();
                let view = String::try_from(view).unwrap();
                std::fs::write(std::path::Path::new(&view).join("NEWS"), "news\n").unwrap();
                let reply = call(&conn, &target, WS, "Commit", &("news",))
                    .await
                    .unwrap();
                let digest: String = reply.body().deserialize().unwrap();
                println!("@@digest {digest}");
            }
            "close" => {
                call(&conn, &env("WS_TARGET"), WS, "Close", &(false,))
                    .await
                    .unwrap();
            }
            "monitor" => monitor(&conn, at).await,
            other => panic!("no role {other}"),
        }
    }

    async fn list(conn: &Connection) -> String {
        let reply = call(conn, "/org/ws", "org.ws.Manager1", "List", &())
            .await
            .unwrap();
        let list: Vec<(String, zbus::zvariant::OwnedObjectPath)> =
            reply.body().deserialize().unwrap();
        list.iter()
            .map(|(_, path)| path.as_str().to_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    async fn probe(conn: &Connection) {
        let target = env("WS_TARGET");
        let name = env("WS_NAME");
        let id = target.rsplit('/').next().unwrap().to_owned();
        // Another id of the same form, which no workspace has.
        let mut unknown_id = id.clone();
        let last = unknown_id.pop().unwrap();
        unknown_id.push(if last == '0' { '1' } else { '0' });
        let unknown = format!("/org/ws/workspace/{unknown_id}");
        let same = |text: String| text.replace(&id, "ID").replace(&unknown_id, "ID");
        println!("@@list {}", list(conn).await);
        let managed = call(
            conn,
            "/org/ws",
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
            &(),
        )
        .await
        .unwrap();
        let managed: std::collections::HashMap<
            zbus::zvariant::OwnedObjectPath,
            std::collections::HashMap<
                String,
                std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
            >,
        > = managed.body().deserialize().unwrap();
        let managed: Vec<&str> = managed.keys().map(|p| p.as_str()).collect();
        println!("@@managed {}", managed.join(" "));
        println!("@@nodes /org/ws {}", nodes(conn, "/org/ws").await);
        println!(
            "@@nodes /org/ws/workspace {}",
            nodes(conn, "/org/ws/workspace").await
        );
        let get = |name: String| async move {
            match call(conn, "/org/ws", "org.ws.Manager1", "Get", &(name,)).await {
                Ok(reply) => {
                    let path: zbus::zvariant::OwnedObjectPath = reply.body().deserialize().unwrap();
                    format!("ok {}", path.as_str())
                }
                Err(e) => answer(Err(e)),
            }
        };
        println!("@@get {}", get(name.clone()).await);
        println!(
            "@@get-unknown {}",
            get(format!("{name}x"))
                .await
                .replace(&format!("{name}x"), &name)
        );
        // Only the owner can read the log; it makes only the calls that change
        // nothing.
        let log = call(conn, &target, WS, "Log", &()).await;
        let owner = log.is_ok();
        if let Ok(reply) = log {
            let log: Vec<(u64, String, String, String, u64, String, u64)> =
                reply.body().deserialize().unwrap();
            let ops: Vec<&str> = log.iter().map(|e| e.1.as_str()).collect();
            println!("@@log {}", ops.join(" "));
        }
        for (method, text) in methods(conn, &target, !owner).await {
            println!("@@call {method} target {}", same(text));
        }
        for (method, text) in methods(conn, &unknown, !owner).await {
            println!("@@unknown {method} {}", same(text));
        }
    }

    /// Prints every signal about the daemon's objects that reaches this client,
    /// until stdin closes. It talks to the daemon first, as clients do: a
    /// gateway that sent signals to everyone who had talked to it would be seen.
    async fn monitor(conn: &Connection, at: &str) {
        let mut messages = zbus::MessageStream::from(conn);
        if at.starts_with("bus:") {
            // Broadcasts from the daemon reach a client only through a match rule.
            conn.call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "AddMatch",
                &("type='signal',sender='org.ws.Daemon'",),
            )
            .await
            .unwrap();
        }
        call(
            conn,
            "/org/ws",
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
            &(),
        )
        .await
        .unwrap();
        println!("@@ready");
        let (closed, mut stdin_closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
            let _ = closed.send(());
        });
        loop {
            let message = tokio::select! {
                _ = &mut stdin_closed => break,
                message = messages.next() => match message {
                    Some(Ok(message)) => message,
                    _ => break,
                },
            };
            let header = message.header();
            if message.message_type() != Type::Signal {
                continue;
            }
            let (Some(member), Some(path)) = (header.member(), header.path()) else {
                continue;
            };
            if !path.as_str().starts_with("/org/ws") {
                continue;
            }
            // InterfacesAdded/Removed name the workspace in their first argument.
            let about = if path.as_str() == "/org/ws" {
                let body = message.body();
                match body.deserialize::<Structure<'_>>() {
                    Ok(fields) => match fields.fields().first() {
                        Some(Value::ObjectPath(p)) => p.as_str().to_owned(),
                        _ => path.as_str().to_owned(),
                    },
                    Err(_) => path.as_str().to_owned(),
                }
            } else {
                path.as_str().to_owned()
            };
            println!("@@signal {member} {about}");
        }
        println!("@@done");
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
