//! The D-Bus service end to end: a real `wsd` on its socket, driven by a zbus
//! client, `busctl` and `gdbus`, and by another user who must see nothing.

use overlay::testsuite::privileged;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use zbus::zvariant::OwnedObjectPath;

/// A running `wsd`, stopped (and its workspaces unmounted) when dropped.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    /// A project beside the state: `toml` as its ws.toml, and `src/input`.
    fn project(&self, toml: &str) -> PathBuf {
        let project = self.dir.path().join("project");
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::write(project.join("src/input"), "input\n").unwrap();
        std::fs::write(project.join("ws.toml"), toml).unwrap();
        project
    }

    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // Other users must be able to reach the socket to be refused properly.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("README"), "readme\n").unwrap();
        std::fs::write(src.join("sub/file.c"), "int x;\n").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wsd"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("WSD_LOG", "debug")
            .spawn()
            .unwrap();
        let daemon = Daemon { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !daemon.socket().exists() {
            assert!(Instant::now() < deadline, "wsd did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("state/wsd.sock")
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.socket().display())
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    /// Connects and opens the workspace "hello" over the test's source tree.
    async fn open_hello(&self) -> (zbus::Connection, Manager1Proxy<'static>, OwnedObjectPath) {
        let conn = self.connect().await;
        let manager = Manager1Proxy::new(&conn).await.unwrap();
        let src = std::fs::File::open(self.src()).unwrap();
        let path = manager
            .open("hello", std::os::fd::AsFd::as_fd(&src).into(), "overlayfs")
            .await
            .unwrap();
        (conn, manager, path)
    }

    async fn connect(&self) -> zbus::Connection {
        let stream = tokio::net::UnixStream::connect(self.socket())
            .await
            .unwrap();
        zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .unwrap()
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

#[zbus::proxy(
    interface = "org.ws.Manager1",
    default_service = "org.ws.Daemon",
    default_path = "/org/ws"
)]
trait Manager1 {
    fn open(
        &self,
        name: &str,
        source: zbus::zvariant::Fd<'_>,
        backend: &str,
    ) -> zbus::Result<OwnedObjectPath>;
    fn open_tree(&self, name: &str, tree: &str, backend: &str) -> zbus::Result<OwnedObjectPath>;
    fn get(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn list(&self) -> zbus::Result<Vec<(String, OwnedObjectPath)>>;
    fn build(
        &self,
        project: zbus::zvariant::Fd<'_>,
        element: &str,
        options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    #[allow(clippy::too_many_arguments)]
    fn shell(
        &self,
        project: zbus::zvariant::Fd<'_>,
        element: &str,
        command: Vec<String>,
        stdin: zbus::zvariant::Fd<'_>,
        stdout: zbus::zvariant::Fd<'_>,
        stderr: zbus::zvariant::Fd<'_>,
        options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
}

#[zbus::proxy(interface = "org.ws.Workspace1", default_service = "org.ws.Daemon")]
trait Workspace1 {
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn path(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn source(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn source_digest(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn dirty(&self) -> zbus::Result<u32>;
    fn status(&self) -> zbus::Result<Vec<(String, String)>>;
    fn diff(&self) -> zbus::Result<String>;
    fn commit(&self, message: &str) -> zbus::Result<String>;
    fn commit_with(
        &self,
        message: &str,
        options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<std::collections::HashMap<String, zbus::zvariant::OwnedValue>>;
    fn discard(&self) -> zbus::Result<u32>;
    fn close(&self, force: bool) -> zbus::Result<()>;
    fn log(&self) -> zbus::Result<Vec<(u64, String, String, String, u64, String, u64)>>;
}

/// The workspace object at `path`, its properties read afresh at every get.
async fn workspace(conn: &zbus::Connection, path: OwnedObjectPath) -> Workspace1Proxy<'static> {
    Workspace1Proxy::builder(conn)
        .path(path)
        .unwrap()
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// The names of the properties in the first PropertiesChanged signal of `path`.
async fn properties_changed(conn: zbus::Connection, path: String) -> Vec<String> {
    use futures_util::StreamExt;
    let mut stream = zbus::MessageStream::from(&conn);
    while let Some(Ok(message)) = stream.next().await {
        let header = message.header();
        if header
            .member()
            .is_some_and(|m| m.as_str() == "PropertiesChanged")
            && header.path().is_some_and(|p| p.as_str() == path)
        {
            let (_, changed, _): (
                String,
                std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
                Vec<String>,
            ) = message.body().deserialize().unwrap();
            return changed.into_keys().collect();
        }
    }
    Vec::new()
}

fn run(cmd: &mut Command) -> String {
    // Workspace objects reach a bus-style client a moment after Hello's reply
    // (docs/dbus.md): a first call on one may find it missing, and is retried.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = cmd.output().unwrap();
    while !out.status.success()
        && String::from_utf8_lossy(&out.stderr).contains("Unknown object")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        out = cmd.output().unwrap();
    }
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ide_opens_edits_commits_discards_and_closes_over_dbus() {
    if !privileged("an_ide_opens_edits_commits_discards_and_closes_over_dbus") {
        return;
    }
    let daemon = Daemon::start();
    let (conn, manager, path) = daemon.open_hello().await;
    assert!(path.as_str().starts_with("/org/ws/workspace/"), "{path}");
    assert!(!path.as_str().contains("hello"), "object paths are opaque");
    let ws = workspace(&conn, path.clone()).await;
    assert_eq!(ws.name().await.unwrap(), "hello");
    assert_eq!(ws.state().await.unwrap(), "open");
    // Where the source really is, not the descriptor the daemon read it through.
    assert_eq!(
        PathBuf::from(ws.source().await.unwrap()),
        daemon.src().canonicalize().unwrap()
    );
    let view = PathBuf::from(ws.path().await.unwrap());
    let changed_properties = tokio::spawn(properties_changed(conn.clone(), path.to_string()));
    std::fs::write(view.join("README"), "edited\n").unwrap();
    std::fs::write(view.join("NEWS"), "news\n").unwrap();
    let changes = ws.status().await.unwrap();
    assert_eq!(
        changes,
        [
            ("NEWS".to_owned(), "added".to_owned()),
            ("README".to_owned(), "modified".to_owned())
        ]
    );
    assert_eq!(ws.dirty().await.unwrap(), 2);
    // An IDE learns of it from PropertiesChanged.
    let changed = changed_properties.await.unwrap();
    assert!(changed.iter().any(|p| p == "Dirty"), "{changed:?}");
    let patch = ws.diff().await.unwrap();
    assert!(
        patch.contains("-readme") && patch.contains("+edited"),
        "{patch}"
    );
    let before = ws.source_digest().await.unwrap();
    let after = ws.commit("first").await.unwrap();
    assert_ne!(before, after);
    // The change reaches the client as PropertiesChanged.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ws.source_digest().await.unwrap() != after || ws.dirty().await.unwrap() != 0 {
        assert!(
            Instant::now() < deadline,
            "properties did not follow the commit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(view.join("README"), "dropped\n").unwrap();
    assert_eq!(ws.discard().await.unwrap(), 1);
    assert_eq!(
        std::fs::read_to_string(view.join("README")).unwrap(),
        "edited\n"
    );
    let log: Vec<String> = ws.log().await.unwrap().into_iter().map(|e| e.1).collect();
    assert_eq!(log, ["open", "commit", "discard"]);
    let err = manager
        .open(
            "hello",
            std::os::fd::AsFd::as_fd(&std::fs::File::open(daemon.src()).unwrap()).into(),
            "",
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("org.ws.Error.AlreadyExists"),
        "{err}"
    );
    ws.close(false).await.unwrap();
    assert!(manager.list().await.unwrap().is_empty());
    let err = manager.get("hello").await.unwrap_err();
    assert!(err.to_string().contains("org.ws.Error.NotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_is_written_back_into_its_source_over_dbus() {
    use std::collections::HashMap;
    use std::os::fd::AsFd;
    use zbus::zvariant::{Fd, OwnedValue, Value};
    if !privileged("a_commit_is_written_back_into_its_source_over_dbus") {
        return;
    }
    let daemon = Daemon::start();
    let (conn, _manager, path) = daemon.open_hello().await;
    let ws = workspace(&conn, path).await;
    let view = PathBuf::from(ws.path().await.unwrap());
    std::fs::write(view.join("README"), "edited\n").unwrap();
    std::fs::remove_dir_all(view.join("sub")).unwrap();
    let src = daemon.src();
    let dir = std::fs::File::open(&src).unwrap();
    let with_dir = || HashMap::from([("write_back", Value::from(Fd::from(dir.as_fd())))]);
    let number = |reply: &HashMap<String, OwnedValue>, key: &str| {
        u64::try_from(reply[key].try_clone().unwrap()).unwrap()
    };

    let reply = ws.commit_with("write it back", with_dir()).await.unwrap();

    assert!(bool::try_from(&reply["committed"]).unwrap());
    assert_eq!(
        String::try_from(reply["source_digest"].try_clone().unwrap()).unwrap(),
        ws.source_digest().await.unwrap()
    );
    assert_eq!(
        String::try_from(reply["write_back_dir"].try_clone().unwrap()).unwrap(),
        src.canonicalize().unwrap().display().to_string()
    );
    assert_eq!(number(&reply, "written"), 1);
    assert_eq!(number(&reply, "removed"), 2, "sub/file.c and sub");
    assert_eq!(
        std::fs::read_to_string(src.join("README")).unwrap(),
        "edited\n"
    );
    assert!(!src.join("sub").exists());
    let log: Vec<String> = ws.log().await.unwrap().into_iter().map(|e| e.1).collect();
    assert_eq!(log, ["open", "commit", "write-back"]);

    // Edited in both places: the commit is recorded, the write-back refused.
    std::fs::write(view.join("README"), "from the workspace\n").unwrap();
    std::fs::write(src.join("README"), "from the project\n").unwrap();
    let err = ws.commit_with("", with_dir()).await.unwrap_err();
    assert!(err.to_string().contains("org.ws.Error.Conflict"), "{err}");
    assert!(err.to_string().contains("README (changed there"), "{err}");
    assert_eq!(ws.dirty().await.unwrap(), 0, "the commit is recorded");
    assert_eq!(
        std::fs::read_to_string(src.join("README")).unwrap(),
        "from the project\n"
    );

    let err = ws
        .commit_with("", HashMap::from([("write_forward", Value::from(1u32))]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("org.ws.Error.InvalidArgument")
            && err.to_string().contains("write_forward"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn busctl_and_gdbus_introspect_and_call_over_the_socket() {
    if !privileged("busctl_and_gdbus_introspect_and_call_over_the_socket") {
        return;
    }
    let daemon = Daemon::start();
    let (_conn, _manager, path) = daemon.open_hello().await;
    let address = daemon.address();
    let introspection = run(Command::new("busctl").args([
        "--address",
        &address,
        "introspect",
        "org.ws.Daemon",
        "/org/ws",
    ]));
    assert!(introspection.contains("org.ws.Manager1"), "{introspection}");
    assert!(
        introspection.contains("org.freedesktop.DBus.ObjectManager"),
        "{introspection}"
    );
    let ws = run(Command::new("busctl").args([
        "--address",
        &address,
        "introspect",
        "org.ws.Daemon",
        path.as_str(),
    ]));
    assert!(
        ws.contains(".Commit") && ws.contains(".SourceDigest"),
        "{ws}"
    );
    let got = run(Command::new("gdbus").args([
        "call",
        "--address",
        &address,
        "--dest",
        "org.ws.Daemon",
        "--object-path",
        "/org/ws",
        "--method",
        "org.ws.Manager1.Get",
        "hello",
    ]));
    assert!(got.contains(path.as_str()), "{got}");
    let name = run(Command::new("busctl").args([
        "--address",
        &address,
        "get-property",
        "org.ws.Daemon",
        path.as_str(),
        "org.ws.Workspace1",
        "Name",
    ]));
    assert_eq!(name.trim(), "s \"hello\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_user_sees_nothing_and_can_do_nothing() {
    if !privileged("another_user_sees_nothing_and_can_do_nothing") {
        return;
    }
    let daemon = Daemon::start();
    let (_conn, _manager, path) = daemon.open_hello().await;
    let address = daemon.address();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "busctl",
                "--address",
                &address,
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let objects = as_nobody(&[
        "call",
        "org.ws.Daemon",
        "/org/ws",
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
    ]);
    assert!(
        objects.status.success(),
        "{}",
        String::from_utf8_lossy(&objects.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&objects.stdout).trim(),
        "a{oa{sa{sv}}} 0"
    );
    let list = as_nobody(&[
        "call",
        "org.ws.Daemon",
        "/org/ws",
        "org.ws.Manager1",
        "List",
    ]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "a(so) 0");
    let get = as_nobody(&[
        "call",
        "org.ws.Daemon",
        "/org/ws",
        "org.ws.Manager1",
        "Get",
        "s",
        "hello",
    ]);
    assert!(!get.status.success());
    assert!(
        String::from_utf8_lossy(&get.stderr).contains("no workspace named"),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    let commit = as_nobody(&[
        "call",
        "org.ws.Daemon",
        path.as_str(),
        "org.ws.Workspace1",
        "Commit",
        "s",
        "x",
    ]);
    assert!(
        !commit.status.success(),
        "another user's workspace cannot be committed"
    );
    let introspect = as_nobody(&["introspect", "org.ws.Daemon", path.as_str()]);
    let text = String::from_utf8_lossy(&introspect.stdout);
    assert!(!text.contains("org.ws.Workspace1"), "{text}");
}

/// The `<interface name="...">` element of `xml`, each line trimmed.
fn interface_block(xml: &str, name: &str) -> Vec<String> {
    let start = xml
        .find(&format!("<interface name=\"{name}\">"))
        .unwrap_or_else(|| panic!("no {name} in:\n{xml}"));
    let end = start + xml[start..].find("</interface>").unwrap();
    xml[start..end]
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_committed_introspection_xml_matches_the_service() {
    if !privileged("the_committed_introspection_xml_matches_the_service") {
        return;
    }
    let daemon = Daemon::start();
    let (_conn, _manager, path) = daemon.open_hello().await;
    let address = daemon.address();
    let docs = manifest_dir().join("../docs/dbus");
    for (object, name) in [
        ("/org/ws", "org.ws.Manager1"),
        ("/org/ws", "org.ws.Store1"),
        (path.as_str(), "org.ws.Workspace1"),
    ] {
        let live = run(Command::new("busctl").args([
            "--address",
            &address,
            "introspect",
            "--xml-interface",
            "org.ws.Daemon",
            object,
        ]));
        let file = docs.join(format!("{name}.xml"));
        let mut committed = std::fs::read_to_string(&file).unwrap();
        if std::env::var_os("WS_UPDATE_DBUS_XML").is_some() {
            let old = interface_block_raw(&committed, name);
            committed = committed.replace(&old, &interface_block_raw(&live, name));
            std::fs::write(&file, &committed).unwrap();
        }
        assert_eq!(
            interface_block(&committed, name),
            interface_block(&live, name),
            "docs/dbus/{name}.xml differs from what the daemon serves; run this test with WS_UPDATE_DBUS_XML=1"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_clear_errors_and_the_daemon_stays_up() {
    if !privileged("malformed_requests_get_clear_errors_and_the_daemon_stays_up") {
        return;
    }
    let daemon = Daemon::start();
    let conn = daemon.connect().await;
    let manager = Manager1Proxy::new(&conn).await.unwrap();
    let huge = "n".repeat(1 << 20);
    let tree = format!(
        "{}/0",
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    );
    let cases: [(&str, &str, &str, &str); 7] = [
        ("../escape", &tree, "", "InvalidArgument"),
        ("a/b", &tree, "", "InvalidArgument"),
        ("..", &tree, "", "InvalidArgument"),
        (&huge, &tree, "", "InvalidArgument"),
        ("ok", "not-a-digest", "", "InvalidArgument"),
        ("ok", &tree, "no-such-backend", "InvalidArgument"),
        (
            "ok",
            &format!("{}/12", "00".repeat(32)),
            "",
            "InvalidArgument",
        ),
    ];
    for (name, tree, backend, expected) in cases {
        let err = manager
            .open_tree(name, tree, backend)
            .await
            .expect_err("a malformed request is refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("org.ws.Error.{expected}")),
            "{}: {text}",
            &name[..name.len().min(20)]
        );
        assert!(
            text.len() < 4096,
            "the error does not echo a huge argument whole"
        );
    }
    let err = manager.get("").await.unwrap_err();
    assert!(err.to_string().contains("org.ws.Error.NotFound"), "{err}");
    assert!(
        manager.list().await.unwrap().is_empty(),
        "the daemon still answers"
    );
}

/// What a client watching a build sees: the build's signals, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_streams_its_output_and_reports_over_dbus() {
    use futures_util::StreamExt;
    if !privileged("a_build_streams_its_output_and_reports_over_dbus") {
        return;
    }
    let daemon = Daemon::start();
    let project = daemon.project(
        "[element.a]\nsources = \"src\"\nbuild = [\"echo built-over-dbus\"]\ninstall = [\"cp input $WS_INSTALLDIR/\"]\n",
    );
    let conn = daemon.connect().await;
    // Subscribed before the call: output may come before the reply.
    let mut stream = zbus::MessageStream::from(&conn);
    let manager = Manager1Proxy::new(&conn).await.unwrap();
    let dir = std::fs::File::open(&project).unwrap();
    let path = manager
        .build((&dir).into(), "a", std::collections::HashMap::new())
        .await
        .unwrap();
    let mut members = Vec::new();
    let mut output = Vec::new();
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(message)) = stream.next().await {
            let header = message.header();
            if header.interface().map(|i| i.as_str()) != Some("org.ws.Build1")
                || header.path().map(|p| p.as_str()) != Some(path.as_str())
            {
                continue;
            }
            let member = header.member().unwrap().to_string();
            members.push(member.clone());
            match member.as_str() {
                "Output" => {
                    let (_, data): (String, Vec<u8>) = message.body().deserialize().unwrap();
                    output.extend(data);
                }
                "Finished" => {
                    let (state, reports, name, error): (
                        String,
                        Vec<std::collections::HashMap<String, zbus::zvariant::OwnedValue>>,
                        String,
                        String,
                    ) = message.body().deserialize().unwrap();
                    return (state, reports, name, error);
                }
                _ => {}
            }
        }
        panic!("the connection ended before the build did");
    })
    .await
    .expect("the build finishes");
    let (state, reports, error_name, error) = finished;
    assert_eq!(state, "succeeded", "{error_name}: {error}");
    assert_eq!(members.first().map(String::as_str), Some("ElementStarted"));
    assert!(
        members.contains(&"ElementFinished".to_owned()),
        "{members:?}"
    );
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("built-over-dbus"), "{output}");
    assert_eq!(reports.len(), 1);
    let result = String::try_from(reports[0]["result"].try_clone().unwrap()).unwrap();
    assert_eq!(result, "built");

    // Its object, on this connection, is what docs/dbus/org.ws.Build1.xml says.
    assert_committed_xml(&conn, &path, "org.ws.Build1").await;
}

/// A shell over D-Bus: the command runs on the descriptors passed, the signals
/// say what it runs on and how it ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_shell_runs_on_the_clients_descriptors_over_dbus() {
    use futures_util::StreamExt;
    use std::io::Read;
    if !privileged("a_shell_runs_on_the_clients_descriptors_over_dbus") {
        return;
    }
    let daemon = Daemon::start();
    let project = daemon.project("[element.a]\nsources = \"src\"\nbuild = [\"true\"]\n");
    let conn = daemon.connect().await;
    let mut stream = zbus::MessageStream::from(&conn);
    let manager = Manager1Proxy::new(&conn).await.unwrap();
    let dir = std::fs::File::open(&project).unwrap();
    let (stdin, stdin_w) = std::io::pipe().unwrap();
    let (mut out, out_w) = std::io::pipe().unwrap();
    let err_w = out_w.try_clone().unwrap();
    let path = manager
        .shell(
            (&dir).into(),
            "a",
            vec![
                "sh".into(),
                "-c".into(),
                "read line; cat input; echo $line >&2; exit 7".into(),
            ],
            (&stdin).into(),
            (&out_w).into(),
            (&err_w).into(),
            std::collections::HashMap::new(),
        )
        .await
        .unwrap();
    drop((stdin, out_w, err_w));
    std::io::Write::write_all(&mut { stdin_w }, b"typed\n").unwrap();
    let mut started = None;
    let (state, code) = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(message)) = stream.next().await {
            let header = message.header();
            if header.interface().map(|i| i.as_str()) != Some("org.ws.Shell1")
                || header.path().map(|p| p.as_str()) != Some(path.as_str())
            {
                continue;
            }
            match header.member().unwrap().as_str() {
                "Started" => started = Some(message.body().deserialize::<String>().unwrap()),
                "Finished" => {
                    let (state, code, _, _, _): (String, i32, Vec<String>, String, String) =
                        message.body().deserialize().unwrap();
                    return (state, code);
                }
                _ => {}
            }
        }
        panic!("the connection ended before the shell did");
    })
    .await
    .expect("the shell ends");
    assert_eq!((state.as_str(), code), ("exited", 7));
    assert_eq!(started.as_deref(), Some("its sources"));
    let mut printed = String::new();
    out.read_to_string(&mut printed).unwrap();
    assert_eq!(printed, "input\ntyped\n");
    assert_committed_xml(&conn, &path, "org.ws.Shell1").await;
}

/// The interface `name` of the object at `path` is what docs/dbus/NAME.xml
/// says (`WS_UPDATE_DBUS_XML=1` writes it).
async fn assert_committed_xml(conn: &zbus::Connection, path: &OwnedObjectPath, name: &str) {
    let introspect = zbus::fdo::IntrospectableProxy::builder(conn)
        .destination("org.ws.Daemon")
        .unwrap()
        .path(path.clone())
        .unwrap()
        .build()
        .await
        .unwrap();
    let live = introspect.introspect().await.unwrap();
    let docs = manifest_dir().join(format!("../docs/dbus/{name}.xml"));
    if std::env::var_os("WS_UPDATE_DBUS_XML").is_some() {
        let block = interface_block_raw(&live, name);
        std::fs::write(&docs, format!("<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n{block}</interface>\n</node>\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&docs).unwrap();
    assert_eq!(
        interface_block(&committed, name),
        interface_block(&live, name),
        "docs/dbus/{name}.xml differs from what the daemon serves; run this test with WS_UPDATE_DBUS_XML=1"
    );
}

/// The `<interface name="...">` element of `xml` as it is, up to its end tag.
fn interface_block_raw(xml: &str, name: &str) -> String {
    let start = xml.find(&format!("<interface name=\"{name}\">")).unwrap();
    let end = start + xml[start..].find("</interface>").unwrap();
    format!("  {}", &xml[start..end])
}

/// The package's directory, as cargo gives it when it runs the test: not the
/// one compiled in, which a build reused from a clone at another path (CI's
/// fixed target directory) would get wrong.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
