//! A daemon's state is private: real users (`wstest1`, `wstest2`) walk a root
//! daemon's state directory and reach nothing in it but their own default
//! mount points, also after an upgrade from a state directory that an older
//! release left open; a symlink a user puts among their mount points is not
//! followed; a state directory another user owns is refused. A user daemon
//! serves its own user only (its socket is 0600, and it refuses another uid at
//! accept even when the socket is reachable) and does not put its socket in a
//! runtime directory someone else made.
//!
//! The users' sides run in child processes: this test binary re-executed as
//! the user (`support::rerun_as`), running the test `user_side`, which prints
//! what it finds as `@@` lines.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{Caller, Manager, OpenRequest, Source, StateDir};
use overlay::testsuite::privileged;
use support::{User, rerun_as, shared_tempdir, users};

const WAIT: Duration = Duration::from_secs(30);

fn caller(user: User) -> Caller {
    Caller {
        uid: user.uid,
        gid: user.gid,
    }
}

/// The permission bits of `path`, in octal.
fn mode(path: &Path) -> String {
    octal(&std::fs::symlink_metadata(path).unwrap())
}

fn octal(meta: &std::fs::Metadata) -> String {
    format!("{:o}", meta.mode() & 0o7777)
}

/// A root manager with a workspace `mine` for each test user, opened at its
/// default mount point over a source of that user's own (`src-<uid>`, 0700,
/// holding a 0600 `secret`), with a committed edit, so the state holds blobs,
/// layers and database records of both.
struct Setup {
    dir: tempfile::TempDir,
    manager: Option<Manager>,
}

impl Setup {
    fn new() -> Setup {
        let dir = shared_tempdir();
        let setup = Setup {
            manager: Some(Manager::open(StateDir::new(dir.path().join("state"))).unwrap()),
            dir,
        };
        for user in users() {
            setup.open_for(user);
        }
        setup
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn m(&self) -> &Manager {
        self.manager.as_ref().unwrap()
    }

    fn source(&self, user: User) -> PathBuf {
        let src = self.dir.path().join(format!("src-{}", user.uid));
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("README"), "readme\n").unwrap();
        std::fs::write(src.join("secret"), format!("secret of {}\n", user.uid)).unwrap();
        std::fs::set_permissions(src.join("secret"), PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&src, PermissionsExt::from_mode(0o700)).unwrap();
        for path in [src.clone(), src.join("README"), src.join("secret")] {
            std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
        }
        src
    }

    fn open_for(&self, user: User) {
        let ws = self
            .m()
            .open_workspace(
                caller(user),
                OpenRequest {
                    name: "mine".to_owned(),
                    source: Source::Dir(self.source(user)),
                    path: None,
                    backend: None,
                },
            )
            .unwrap_or_else(|e| panic!("open for {user:?}: {}", daemon::error::message(&e)));
        assert_eq!(ws.path, self.view(user));
        // Written by root: the edit lands in the user's layer all the same.
        std::fs::write(ws.path.join("edited"), format!("edit of {}\n", user.uid)).unwrap();
        self.m()
            .commit(caller(user), "mine", Some("edit".into()))
            .unwrap();
    }

    /// The default mount point of `user`'s workspace.
    fn view(&self, user: User) -> PathBuf {
        self.state()
            .canonicalize()
            .unwrap()
            .join(format!("workspaces/{}/mine", user.uid))
    }

    /// Stops the manager and unmounts the views.
    fn stop(&mut self) {
        self.manager = None;
        for user in users() {
            let _ = overlay::unmount(&self.view(user));
        }
    }

    /// Opens the manager again (the views are mounted again).
    fn restart(&mut self) {
        self.stop();
        self.manager = Some(Manager::open(StateDir::new(self.state())).unwrap());
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop();
        for m in overlay::mount_table().unwrap_or_default() {
            if m.target.starts_with(self.dir.path()) {
                let _ = overlay::unmount(&m.target);
            }
        }
    }
}

/// Every path under `root` (itself included), walked as root without
/// following symlinks, into the mounted views too.
fn every_path(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let path = out[i].clone();
        i += 1;
        // (The trash is emptied in the background: what goes meanwhile is skipped.)
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            out.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out
}

/// What `user` reaches of `paths`: the paths it can `lstat`, and those it can
/// open (read a file, list a directory).
struct Reach {
    stat: BTreeSet<PathBuf>,
    open: BTreeSet<PathBuf>,
}

fn reach(dir: &Path, user: User, paths: &[PathBuf]) -> Reach {
    let list = dir.join(format!("paths-{}", user.uid));
    let text: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    std::fs::write(&list, text.join("\n")).unwrap();
    std::fs::set_permissions(&list, PermissionsExt::from_mode(0o644)).unwrap();
    let mut cmd = rerun_as(user, "user_side");
    cmd.env("WS_PRIVATE_ROLE", "walk")
        .env("WS_PRIVATE_PATHS", &list);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reach = Reach {
        stat: BTreeSet::new(),
        open: BTreeSet::new(),
    };
    for line in stdout.lines().filter_map(|l| Some(l.split_once("@@")?.1)) {
        match line.split_once(' ') {
            Some(("stat", path)) => reach.stat.insert(PathBuf::from(path)),
            Some(("open", path)) => reach.open.insert(PathBuf::from(path)),
            _ => false,
        };
    }
    reach
}

/// Asserts that `user` reaches nothing under the state directory but names at
/// its top and in `workspaces/` (which only say what exists), and opens
/// nothing but its own `workspaces/<uid>`; and that it does open its own view.
fn assert_reaches_only_its_own(setup: &Setup, user: User) {
    let state = setup.state().canonicalize().unwrap();
    let paths = every_path(&state);
    let reach = reach(setup.dir.path(), user, &paths);
    let own = state.join(format!("workspaces/{}", user.uid));
    let named = |p: &Path| {
        p == state
            || p.parent() == Some(state.as_path())
            || p.parent() == Some(state.join("workspaces").as_path())
    };
    let stat_too_far: Vec<_> = reach
        .stat
        .iter()
        .filter(|p| !named(p) && !p.starts_with(&own))
        .take(10)
        .collect();
    assert!(
        stat_too_far.is_empty(),
        "uid {} reaches these (of {} reached) in the state directory: {stat_too_far:#?}",
        user.uid,
        reach.stat.len()
    );
    let opened_too_much: Vec<_> = reach
        .open
        .iter()
        .filter(|p| !p.starts_with(&own))
        .take(10)
        .collect();
    assert!(
        opened_too_much.is_empty(),
        "uid {} opens these (of {} opened) in the state directory: {opened_too_much:#?}",
        user.uid,
        reach.open.len()
    );
    let view = setup.view(user);
    for file in ["secret", "edited", "README"] {
        assert!(
            reach.open.contains(&view.join(file)),
            "uid {} cannot read its own {file}",
            user.uid
        );
    }
}

#[test]
fn each_user_reaches_only_their_own_views_in_a_root_daemons_state() {
    if !privileged("each_user_reaches_only_their_own_views_in_a_root_daemons_state") {
        return;
    }
    let setup = Setup::new();
    for user in users() {
        assert_reaches_only_its_own(&setup, user);
    }
    let state = setup.state();
    assert_eq!(mode(&state), "711");
    assert_eq!(mode(&state.join("workspaces")), "711");
    for dir in ["cas", "db", "snapshots", "builds", "sysroots", "mounting"] {
        let meta = std::fs::metadata(state.join(dir)).unwrap();
        assert_eq!((octal(&meta), meta.uid()), ("700".to_owned(), 0), "{dir}");
    }
    for user in users() {
        let meta = std::fs::metadata(state.join(format!("workspaces/{}", user.uid))).unwrap();
        assert_eq!((octal(&meta), meta.uid()), ("700".to_owned(), user.uid));
    }
}

/// What an older release left: every directory root made 0755 (its umask),
/// root's files 0644, `workspaces/<uid>` root's, and its log and lock files.
fn open_up_like_an_older_release(state: &Path) {
    for path in every_path(state) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != 0 || meta.file_type().is_symlink() {
            continue;
        }
        let old = if meta.is_dir() { 0o755 } else { 0o644 };
        if meta.is_dir() || meta.mode() & 0o777 == 0o600 {
            let _ = std::fs::set_permissions(&path, PermissionsExt::from_mode(old));
        }
    }
    for user in users() {
        let dir = state.join(format!("workspaces/{}", user.uid));
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
    }
    for file in ["wsd.log", "wsd.lock"] {
        std::fs::write(state.join(file), "").unwrap();
        std::fs::set_permissions(state.join(file), PermissionsExt::from_mode(0o644)).unwrap();
    }
}

#[test]
fn a_state_directory_left_open_by_an_older_release_is_made_private_at_start() {
    if !privileged("a_state_directory_left_open_by_an_older_release_is_made_private_at_start") {
        return;
    }
    let mut setup = Setup::new();
    setup.stop();
    let state = setup.state();
    open_up_like_an_older_release(&state);
    // The older release's state is open indeed: the other user reads blobs.
    let [one, two] = users();
    let blobs = every_path(&state.join("cas/blobs"));
    let leaked = reach(setup.dir.path(), two, &blobs);
    assert!(
        leaked.open.len() > 256,
        "the emulated old state is not open"
    );
    setup.restart();
    assert_eq!(mode(&state), "711");
    assert_eq!(mode(&state.join("workspaces")), "711");
    for dir in ["cas", "db", "snapshots", "builds", "sysroots", "mounting"] {
        assert_eq!(mode(&state.join(dir)), "700", "{dir}");
    }
    for file in ["wsd.log", "wsd.lock"] {
        assert_eq!(mode(&state.join(file)), "600", "{file}");
    }
    for user in [one, two] {
        let meta = std::fs::metadata(state.join(format!("workspaces/{}", user.uid))).unwrap();
        assert_eq!((octal(&meta), meta.uid()), ("700".to_owned(), user.uid));
        assert_reaches_only_its_own(&setup, user);
    }
}

/// Under an older release a user could write the committed layers of their
/// own workspace (`snapshots/` was 0755 and the layers theirs), which the
/// daemon takes to hold their recorded trees. The first start on such a state
/// directory checks every layer against its tree, replaces a changed one by a
/// checkout of the tree (its view is unmounted and mounted again on it), and
/// then forgets the check. Before, the view kept showing the planted file as
/// part of the committed base.
#[test]
fn layers_an_older_release_left_writable_are_checked_and_renewed_at_start() {
    if !privileged("layers_an_older_release_left_writable_are_checked_and_renewed_at_start") {
        return;
    }
    let mut setup = Setup::new();
    setup.stop();
    let state = setup.state();
    open_up_like_an_older_release(&state);
    let [one, two] = users();
    let planted: Vec<PathBuf> = every_path(&state.join("snapshots"))
        .into_iter()
        .filter(|p| p.ends_with("fs/README"))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == one.uid))
        .collect();
    assert!(!planted.is_empty(), "no layer of {one:?} holds README");
    for layer in &planted {
        std::fs::write(layer, "planted\n").unwrap();
    }
    setup.restart();
    assert_eq!(
        std::fs::read_to_string(setup.view(one).join("README")).unwrap(),
        "readme\n",
        "the changed layer still shows in the view"
    );
    assert_eq!(
        std::fs::read_to_string(setup.view(two).join("README")).unwrap(),
        "readme\n"
    );
    assert!(
        !state.join("verify-layers").exists(),
        "the check is not done"
    );
    // The renewed layer is the owner's, as every layer is.
    let renewed: Vec<PathBuf> = every_path(&state.join("snapshots"))
        .into_iter()
        .filter(|p| p.ends_with("fs/README") && !planted.contains(p))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|c| c == "readme\n"))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == one.uid))
        .collect();
    assert!(!renewed.is_empty(), "no renewed layer of {one:?}");
    // A second start finds nothing to check.
    setup.restart();
    assert!(!state.join("verify-layers").exists());
}

#[test]
fn a_symlink_among_a_users_mount_points_is_not_followed() {
    if !privileged("a_symlink_among_a_users_mount_points_is_not_followed") {
        return;
    }
    let setup = Setup::new();
    let [one, _] = users();
    // Root's directory elsewhere, and the user's symlink to it where the daemon
    // would make the mount point of a workspace named `evil`.
    let target = setup.dir.path().join("roots");
    std::fs::create_dir(&target).unwrap();
    let link = setup.state().join(format!("workspaces/{}/evil", one.uid));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(one.uid), Some(one.gid)).unwrap();
    let opened = setup.m().open_workspace(
        caller(one),
        OpenRequest {
            name: "evil".to_owned(),
            source: Source::Dir(setup.dir.path().join(format!("src-{}", one.uid))),
            path: None,
            backend: None,
        },
    );
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "the symlink was followed");
    let mounted = overlay::mount_table().unwrap();
    assert!(!mounted.iter().any(|m| m.target == target));
    let error = daemon::error::message(&opened.expect_err("opened over a symlink"));
    assert!(error.contains("symlink"), "{error}");
}

#[test]
fn a_state_directory_of_another_user_is_refused() {
    if !privileged("a_state_directory_of_another_user_is_refused") {
        return;
    }
    let [one, _] = users();
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(one.uid), Some(one.gid)).unwrap();
    let Err(error) = Manager::open(StateDir::new(state.clone())) else {
        panic!("opened a state directory that uid {} owns", one.uid);
    };
    let message = daemon::error::message(&error);
    assert!(
        message.contains(&format!("belongs to uid {}", one.uid)) && message.contains("chown"),
        "{message}"
    );
    assert_eq!(error.kind(), daemon::ErrorKind::AccessDenied);
    assert!(!state.join("db").exists(), "it wrote into it");
}

/// A `wsd` run as `user` on `state`, its stderr in `log`.
struct UserDaemon {
    child: Child,
    log: PathBuf,
}

impl UserDaemon {
    fn spawn(user: User, home: &Path, state: &Path) -> UserDaemon {
        let log = home.join("wsd.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_wsd"))
            .arg("--state-dir")
            .arg(state)
            .args(["--bus", "none"])
            .env("HOME", home)
            .env_remove("XDG_RUNTIME_DIR")
            .env("WSD_LOG", "info")
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .uid(user.uid)
            .gid(user.gid)
            .spawn()
            .unwrap();
        UserDaemon { child, log }
    }

    /// Waits until `socket` exists, or the daemon has exited (its log then).
    fn serving(&mut self, socket: &Path) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        while !socket.exists() {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("{status}: {}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "wsd did not serve: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for UserDaemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A home directory for `user` in `dir`.
fn home_of(dir: &Path, user: User) -> PathBuf {
    let home = dir.join(format!("home-{}", user.uid));
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
    home
}

/// What `user` gets calling `List` on `socket`: `ok ...` or `refused ...`.
fn list_as(user: User, socket: &Path) -> String {
    let mut cmd = rerun_as(user, "user_side");
    cmd.env("WS_PRIVATE_ROLE", "list")
        .env("WS_PRIVATE_SOCKET", socket);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| Some(l.split_once("@@list ")?.1.to_owned()))
        .unwrap_or_else(|| panic!("no answer: {stdout}"))
}

#[test]
fn a_user_daemon_serves_its_own_user_only() {
    if !privileged("a_user_daemon_serves_its_own_user_only") {
        return;
    }
    let [one, two] = users();
    let dir = shared_tempdir();
    let home = home_of(dir.path(), one);
    let state = home.join("state");
    let mut daemon = UserDaemon::spawn(one, &home, &state);
    let socket = state.join("wsd.sock");
    daemon.serving(&socket).unwrap();
    assert!(list_as(one, &socket).starts_with("ok"));
    let refused = list_as(two, &socket);
    assert!(refused.starts_with("refused"), "{refused}");
    assert_eq!(mode(&state), "700");
    assert_eq!(mode(&socket), "600");
    // Even when another user can reach the socket (an admin opened it up), the
    // daemon refuses them at accept, and says so in its log.
    std::fs::set_permissions(&home, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&state, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, PermissionsExt::from_mode(0o666)).unwrap();
    let refused = list_as(two, &socket);
    assert!(refused.starts_with("refused"), "{refused}");
    assert!(
        daemon.log().contains(&format!(
            "refused a client of uid {}: this daemon runs as uid {}",
            two.uid, one.uid
        )),
        "{}",
        daemon.log()
    );
    assert!(list_as(one, &socket).starts_with("ok"));
}

/// `/tmp/ws-<uid>`, removed when dropped.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn of(user: User) -> RuntimeDir {
        let dir = RuntimeDir(PathBuf::from(format!("/tmp/ws-{}", user.uid)));
        dir.clear();
        dir
    }

    fn clear(&self) {
        if std::fs::symlink_metadata(&self.0).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&self.0).unwrap();
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        self.clear();
    }
}

#[test]
fn a_user_daemon_puts_its_socket_only_in_a_runtime_dir_of_its_own() {
    if !privileged("a_user_daemon_puts_its_socket_only_in_a_runtime_dir_of_its_own") {
        return;
    }
    let [one, two] = users();
    let dir = shared_tempdir();
    let home = home_of(dir.path(), one);
    // Too long for `<state>/wsd.sock`: the socket goes to /tmp/ws-<uid>.
    let state = home.join(format!("state-{}", "x".repeat(100)));
    let runtime = RuntimeDir::of(one);
    let squatted = |what: &str| {
        let mut daemon = UserDaemon::spawn(one, &home, &state);
        let socket = state.join("wsd.socket");
        let outcome = daemon.serving(&socket);
        let log = outcome.expect_err(&format!("wsd served in {what}"));
        assert!(
            log.contains(&runtime.0.display().to_string()) && log.contains("XDG_RUNTIME_DIR"),
            "{what}: {log}"
        );
        log
    };
    // Another user's directory, open to all.
    std::fs::create_dir(&runtime.0).unwrap();
    std::os::unix::fs::chown(&runtime.0, Some(two.uid), Some(two.gid)).unwrap();
    std::fs::set_permissions(&runtime.0, PermissionsExt::from_mode(0o777)).unwrap();
    let log = squatted("another user's directory");
    assert!(
        log.contains(&format!("belongs to uid {}", two.uid)),
        "{log}"
    );
    // A symlink to a directory of the user's own.
    runtime.clear();
    let own = home.join("elsewhere");
    std::fs::create_dir(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(one.uid), Some(one.gid)).unwrap();
    std::os::unix::fs::symlink(&own, &runtime.0).unwrap();
    let log = squatted("a symlink");
    assert!(log.contains("symlink"), "{log}");
    // Its own: made 0700, and the socket is served there.
    runtime.clear();
    let mut daemon = UserDaemon::spawn(one, &home, &state);
    daemon.serving(&state.join("wsd.socket")).unwrap();
    let meta = std::fs::symlink_metadata(&runtime.0).unwrap();
    assert_eq!((octal(&meta), meta.uid()), ("700".to_owned(), one.uid));
    let record = std::fs::read_to_string(state.join("wsd.socket")).unwrap();
    let socket = PathBuf::from(record.trim_end());
    assert!(socket.starts_with(&runtime.0), "{}", socket.display());
    daemon.serving(&socket).unwrap();
    assert!(list_as(one, &socket).starts_with("ok"));
}

/// The users' side (a child process; see `support::rerun_as`): nothing unless
/// `WS_PRIVATE_ROLE` says what to do.
#[test]
fn user_side() {
    match std::env::var("WS_PRIVATE_ROLE").as_deref() {
        Ok("walk") => walk(),
        Ok("list") => tokio::runtime::Runtime::new().unwrap().block_on(list()),
        _ => {}
    }
}

/// Prints `@@stat PATH` for each path of `WS_PRIVATE_PATHS` this user can
/// `lstat`, and `@@open PATH` for each it can read or list.
fn walk() {
    let list = std::fs::read_to_string(std::env::var("WS_PRIVATE_PATHS").unwrap()).unwrap();
    for path in list.lines().map(Path::new) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        println!("@@stat {}", path.display());
        let opened = if meta.is_dir() {
            std::fs::read_dir(path).is_ok()
        } else if meta.is_file() {
            std::fs::read(path).is_ok()
        } else {
            false
        };
        if opened {
            println!("@@open {}", path.display());
        }
    }
}

/// Prints `@@list ok ...` if `List` on the socket `WS_PRIVATE_SOCKET` is
/// answered, else `@@list refused ...`.
async fn list() {
    let socket = std::env::var("WS_PRIVATE_SOCKET").unwrap();
    let answer = async {
        let stream = tokio::net::UnixStream::connect(&socket).await?;
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await?;
        let reply = conn
            .call_method(
                None::<&str>,
                "/org/ws",
                Some("org.ws.Manager1"),
                "List",
                &(),
            )
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(format!("{:?}", reply.body().signature()))
    };
    match tokio::time::timeout(WAIT, answer).await {
        Ok(Ok(reply)) => println!("@@list ok {reply}"),
        Ok(Err(e)) => println!("@@list refused {e}"),
        Err(_) => println!("@@list refused: no answer in {WAIT:?}"),
    }
}
