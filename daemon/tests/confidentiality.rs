//! What a root `wsd` keeps from one real user about another's files: the stat
//! cache gives no digest of a file the asker could not read, a watched source
//! is reused only for the credentials that read it, a tree is read by digest
//! only by someone whose records lead to it, and a path the daemon is pointed
//! at is never resolved with its own credentials (no existence oracle).
//!
//! The users (`wstest1`, `wstest2`, made with `useradd` if absent, and the
//! group `wstestg`) act in child processes: this test binary re-executed with
//! their uid and gid, running the test `user_side`, a small zbus client on the
//! daemon's socket that prints each answer as an `@@answer` line (the approach
//! of `two_users.rs`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use overlay::testsuite::privileged;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "the secret of wstest2\n";

#[derive(Clone, Copy, Debug)]
struct User {
    uid: u32,
    gid: u32,
}

/// `wstest1` (the one who asks) and `wstest2` (whose files they are).
fn users() -> [User; 2] {
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

/// The group `wstestg` (made if absent): its gid.
fn test_group() -> u32 {
    const NAME: &str = "wstestg";
    if nix::unistd::Group::from_name(NAME).unwrap().is_none() {
        let out = Command::new("groupadd")
            .args(["--system", NAME])
            .output()
            .unwrap();
        // 9: made meanwhile by another test process.
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "groupadd {NAME}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    nix::unistd::Group::from_name(NAME)
        .unwrap()
        .unwrap()
        .gid
        .as_raw()
}

/// Adds `user` to `wstestg` (`true`) or takes them out of it.
fn set_membership(name: &str, member: bool) {
    let flag = if member { "--add" } else { "--delete" };
    let out = Command::new("gpasswd")
        .args([flag, name, "wstestg"])
        .output()
        .unwrap();
    assert!(
        out.status.success() || !member,
        "gpasswd {flag} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory every user can enter.
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

/// Makes the directory `path`, owned by `uid`:`gid` with `mode`.
fn owned_dir(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    chown_mode(path, uid, gid, mode);
}

/// Writes the file `path`, owned by `uid`:`gid` with `mode`.
fn owned_file(path: &Path, text: &str, uid: u32, gid: u32, mode: u32) {
    std::fs::write(path, text).unwrap();
    chown_mode(path, uid, gid, mode);
}

fn chown_mode(path: &Path, uid: u32, gid: u32, mode: u32) {
    nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).unwrap();
    std::fs::set_permissions(path, PermissionsExt::from_mode(mode)).unwrap();
}

/// Waits until files written now are older than what an import starting then
/// records (the stat cache's racily-clean margin is 2 s): the next import's
/// entries are trusted by the one after it.
fn let_files_settle() {
    std::thread::sleep(Duration::from_millis(2600));
}

/// A root `wsd` on its socket only, in a directory every user can enter.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = shared_tempdir();
        let child = Command::new(env!("CARGO_BIN_EXE_wsd"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--bus", "none"])
            .env("WSD_LOG", "debug,zbus=info")
            .spawn()
            .unwrap();
        let daemon = Daemon { dir, child };
        let deadline = Instant::now() + WAIT;
        while !daemon.socket().exists() {
            assert!(Instant::now() < deadline, "wsd did not serve its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("state/wsd.sock")
    }

    /// A directory for the test's files, which every user can enter.
    fn files(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Runs `role` as `user` (root when `None`) with `env`; its answer.
    fn ask(&self, user: Option<User>, role: &str, env: &[(&str, &str)]) -> String {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "user_side", "--nocapture", "--test-threads=1"])
            .env("WS_CONF_ROLE", role)
            .env("WS_CONF_SOCKET", self.socket())
            .envs(env.iter().copied())
            .current_dir("/");
        if let Some(user) = user {
            // Also drops root's supplementary groups.
            cmd.uid(user.uid).gid(user.gid);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{role} as {user:?}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer = stdout
            .lines()
            .find_map(|l| Some(l.split_once("@@answer ")?.1.to_owned()))
            .unwrap_or_else(|| panic!("{role} as {user:?} printed no answer:\n{stdout}"));
        // Shown with a failure's output.
        println!("{role} as {user:?}: {answer}");
        answer
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

/// The digest of an `ok <digest>` answer.
fn digest_of(answer: &str) -> String {
    answer
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("expected a digest: {answer}"))
        .to_owned()
}

/// `wstest2`'s directory, which `wstest1` may list but not wholly read: a
/// public file, and the secret one (0600).
fn their_directory(daemon: &Daemon) -> PathBuf {
    let [_, them] = users();
    let dir = daemon.files().join("theirs");
    owned_dir(&dir, them.uid, them.gid, 0o755);
    owned_file(&dir.join("public"), "public\n", them.uid, them.gid, 0o644);
    owned_file(&dir.join("secret"), SECRET, them.uid, them.gid, 0o600);
    dir
}

/// Whether no file under `dir` holds the secret.
fn holds_no_secret(dir: &Path) -> bool {
    walk(dir)
        .iter()
        .all(|f| std::fs::read_to_string(f).map_or(true, |text| !text.contains(SECRET)))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// An import by the file's owner (and one by root) leaves stat-cache entries
/// for the secret file; the other user, naming the same directory, must be
/// refused for that file rather than be given its digest, whether they import
/// it or open a workspace over it.
fn another_users_cache_entries_give_no_digest() {
    let [me, them] = users();
    let daemon = Daemon::start();
    let dir = their_directory(&daemon);
    let source = dir.to_str().unwrap();
    let_files_settle();
    let theirs = daemon.ask(Some(them), "import", &[("WS_SOURCE", source)]);
    assert!(theirs.starts_with("ok "), "the owner imports it: {theirs}");
    let again = daemon.ask(Some(them), "import-stats", &[("WS_SOURCE", source)]);
    assert!(
        again.contains("hashed_files 0"),
        "the owner's second import is served by the stat cache: {again}"
    );
    let root = daemon.ask(None, "import", &[("WS_SOURCE", source)]);
    assert_eq!(root, theirs, "root imports the same tree");

    let mine = daemon.ask(Some(me), "import", &[("WS_SOURCE", source)]);
    assert!(
        mine.starts_with("error org.ws.Error.AccessDenied") && mine.contains("secret"),
        "another user importing the directory: {mine}"
    );
    let opened = daemon.ask(
        Some(me),
        "open",
        &[("WS_SOURCE", source), ("WS_NAME", "snoop")],
    );
    assert!(
        opened.starts_with("error org.ws.Error.AccessDenied") && opened.contains("secret"),
        "another user opening a workspace over it: {opened}"
    );
    assert!(holds_no_secret(&daemon.files().join("state/workspaces")));

    // The owner's workspace over it leaves the same for the other user.
    let owners = daemon.ask(
        Some(them),
        "open",
        &[("WS_SOURCE", source), ("WS_NAME", "mine")],
    );
    assert!(owners.starts_with("ok "), "{owners}");
    let mine = daemon.ask(Some(me), "import", &[("WS_SOURCE", source)]);
    assert!(
        mine.starts_with("error org.ws.Error.AccessDenied"),
        "after the owner's open: {mine}"
    );
}

/// A tree is read by digest only by someone whose records lead to it: the
/// other user can neither check out, nor diff, nor open a workspace over the
/// owner's tree, and learns nothing from trying (an unknown digest gets the
/// same answer). The owner and root can.
fn a_tree_by_digest_is_only_for_its_owners() {
    let [me, them] = users();
    let daemon = Daemon::start();
    let dir = their_directory(&daemon);
    let theirs = digest_of(&daemon.ask(
        Some(them),
        "import",
        &[("WS_SOURCE", dir.to_str().unwrap())],
    ));
    let unknown = format!("{}/1", "ab".repeat(32));
    let checkout = |user: Option<User>, name: &str, tree: &str| {
        let dest = daemon.files().join(name);
        let (uid, gid) = user.map_or((0, 0), |u| (u.uid, u.gid));
        owned_dir(&dest, uid, gid, 0o755);
        let env = [("WS_TREE", tree), ("WS_DEST", dest.to_str().unwrap())];
        (daemon.ask(user, "checkout", &env), dest)
    };
    let (answer, dest) = checkout(Some(me), "mine", &theirs);
    assert!(
        answer.starts_with("error org.ws.Error.AccessDenied"),
        "another user's checkout by digest: {answer}"
    );
    assert!(holds_no_secret(&dest));
    let (unknown_answer, _) = checkout(Some(me), "mine-unknown", &unknown);
    assert_eq!(
        answer.replace(&theirs, "TREE"),
        unknown_answer.replace(&unknown, "TREE"),
        "an existing tree and an unknown one get different answers"
    );
    let diff = daemon.ask(Some(me), "diff", &[("WS_TREE", &theirs)]);
    assert!(
        diff.starts_with("error org.ws.Error.AccessDenied"),
        "another user's diff: {diff}"
    );
    let open = daemon.ask(
        Some(me),
        "open-tree",
        &[("WS_TREE", &theirs), ("WS_NAME", "snoop")],
    );
    assert!(
        open.starts_with("error org.ws.Error.AccessDenied"),
        "another user's workspace over the tree: {open}"
    );

    // The owner reads what they imported; root reads everything.
    let (answer, dest) = checkout(Some(them), "theirs-out", &theirs);
    assert!(answer.starts_with("ok"), "the owner's checkout: {answer}");
    assert_eq!(
        std::fs::read_to_string(dest.join("secret")).unwrap(),
        SECRET
    );
    let diff = daemon.ask(Some(them), "diff", &[("WS_TREE", &theirs)]);
    assert!(diff.starts_with("ok"), "the owner's diff: {diff}");
    let (answer, _) = checkout(None, "roots", &theirs);
    assert!(answer.starts_with("ok"), "root's checkout: {answer}");
}

/// A project of `wstest2`'s whose element's sources are readable through the
/// group `wstestg` only. `wstest1`, in the group, is shown the element; taken
/// out of it, they must be refused, not given the tree the watch remembers
/// from their earlier import.
fn a_watched_source_is_reused_only_for_the_same_groups() {
    let [me, them] = users();
    let group = test_group();
    set_membership("wstest1", true);
    let daemon = Daemon::start();
    let project = daemon.files().join("project");
    owned_dir(&project, them.uid, them.gid, 0o755);
    let toml = "[project]\nname = \"p\"\n\n[element.data]\nkind = \"import\"\nsources = \"src\"\n";
    owned_file(&project.join("ws.toml"), toml, them.uid, them.gid, 0o644);
    owned_dir(&project.join("src"), them.uid, group, 0o750);
    owned_file(&project.join("src/data"), SECRET, them.uid, group, 0o640);
    let env = [
        ("WS_PROJECT", project.to_str().unwrap()),
        ("WS_ELEMENT", "data"),
    ];
    let shown = daemon.ask(Some(me), "show", &env);
    assert!(shown.starts_with("ok "), "a member of the group: {shown}");
    set_membership("wstest1", false);
    let shown = daemon.ask(Some(me), "show", &env);
    assert!(
        shown.starts_with("error org.ws.Error.AccessDenied"),
        "no longer a member: {shown}"
    );
}

/// `wstest1`'s own project names, through symlinks, a directory that exists
/// and one that does not, both behind a directory only root may enter. The
/// daemon must not look either up as root: both get the same answer.
fn a_named_path_tells_nothing_of_what_the_user_cannot_reach() {
    let [me, _] = users();
    let daemon = Daemon::start();
    let hidden = daemon.files().join("hidden");
    owned_dir(&hidden.join("exists"), 0, 0, 0o755);
    chown_mode(&hidden, 0, 0, 0o700);
    let project = daemon.files().join("mine");
    owned_dir(&project, me.uid, me.gid, 0o755);
    let toml = "[project]\nname = \"p\"\n\n\
        [element.there]\nkind = \"import\"\nsources = \"there\"\n\n\
        [element.nowhere]\nkind = \"import\"\nsources = \"nowhere\"\n";
    owned_file(&project.join("ws.toml"), toml, me.uid, me.gid, 0o644);
    std::os::unix::fs::symlink(hidden.join("exists"), project.join("there")).unwrap();
    std::os::unix::fs::symlink(hidden.join("missing"), project.join("nowhere")).unwrap();
    let show = |element: &str| {
        let env = [
            ("WS_PROJECT", project.to_str().unwrap()),
            ("WS_ELEMENT", element),
        ];
        daemon
            .ask(Some(me), "show", &env)
            .replace(element, "ELEMENT")
    };
    let there = show("there");
    assert!(
        there.starts_with("error org.ws.Error.AccessDenied"),
        "{there}"
    );
    assert_eq!(
        there,
        show("nowhere"),
        "an existing and a missing path get different answers"
    );
}

#[test]
fn another_users_stat_cache_entries_give_no_digest() {
    if privileged("another_users_stat_cache_entries_give_no_digest") {
        another_users_cache_entries_give_no_digest();
    }
}

#[test]
fn a_tree_is_read_by_digest_only_by_its_owners() {
    if privileged("a_tree_is_read_by_digest_only_by_its_owners") {
        a_tree_by_digest_is_only_for_its_owners();
    }
}

#[test]
fn a_watched_source_is_reused_only_for_the_same_credentials() {
    if privileged("a_watched_source_is_reused_only_for_the_same_credentials") {
        a_watched_source_is_reused_only_for_the_same_groups();
    }
}

#[test]
fn a_path_named_to_the_daemon_is_no_existence_oracle() {
    if privileged("a_path_named_to_the_daemon_is_no_existence_oracle") {
        a_named_path_tells_nothing_of_what_the_user_cannot_reach();
    }
}

/// The users' side (a child process; see `Daemon::ask`): nothing unless
/// `WS_CONF_ROLE` says what to do.
#[test]
fn user_side() {
    let Ok(role) = std::env::var("WS_CONF_ROLE") else {
        return;
    };
    let socket = std::env::var("WS_CONF_SOCKET").unwrap();
    let answer = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(client::run(&role, &socket));
    println!("@@answer {answer}");
}

/// The zbus client the users run.
mod client {
    use std::collections::HashMap;
    use std::os::fd::AsFd;

    use zbus::Connection;
    use zbus::zvariant::{DynamicType, Fd, OwnedObjectPath, OwnedValue};

    const DEST: &str = "org.ws.Daemon";
    const MANAGER: &str = "org.ws.Manager1";
    const STORE: &str = "org.ws.Store1";

    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
    }

    fn open(var: &str) -> std::fs::File {
        let path = env(var);
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"))
    }

    async fn call<B, R>(
        conn: &Connection,
        interface: &str,
        member: &str,
        body: &B,
    ) -> Result<R, String>
    where
        B: serde::Serialize + DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
    {
        match conn
            .call_method(Some(DEST), "/org/ws", Some(interface), member, body)
            .await
        {
            Ok(reply) => reply
                .body()
                .deserialize()
                .map_err(|e| format!("failed {e}")),
            Err(zbus::Error::MethodError(name, message, _)) => {
                Err(format!("error {name}: {}", message.unwrap_or_default()))
            }
            Err(e) => Err(format!("failed {e}")),
        }
    }

    /// The answer to `role`: `ok …` or `error <name>: <message>`.
    pub async fn run(role: &str, socket: &str) -> String {
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .unwrap();
        let answer = match role {
            "import" | "import-stats" => {
                let dir = open("WS_SOURCE");
                let options: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::new();
                let result: Result<(String, HashMap<String, u64>), String> =
                    call(&conn, STORE, "Import", &(Fd::from(dir.as_fd()), options)).await;
                result.map(|(digest, stats)| match role {
                    "import" => digest,
                    _ => format!("hashed_files {}", stats["hashed_files"]),
                })
            }
            "open" => {
                let dir = open("WS_SOURCE");
                let args = (env("WS_NAME"), Fd::from(dir.as_fd()), "");
                let result: Result<OwnedObjectPath, String> =
                    call(&conn, MANAGER, "Open", &args).await;
                result.map(|path| path.to_string())
            }
            "open-tree" => {
                let args = (env("WS_NAME"), env("WS_TREE"), "");
                let result: Result<OwnedObjectPath, String> =
                    call(&conn, MANAGER, "OpenTree", &args).await;
                result.map(|path| path.to_string())
            }
            "checkout" => {
                let dest = open("WS_DEST");
                let args = (env("WS_TREE"), Fd::from(dest.as_fd()), "copy");
                let result: Result<HashMap<String, u64>, String> =
                    call(&conn, STORE, "Checkout", &args).await;
                result.map(|stats| format!("files {}", stats["files"]))
            }
            "diff" => {
                let tree = env("WS_TREE");
                let args = (tree.clone(), tree, false, 3u32);
                let result: Result<Vec<(String, String, String)>, String> =
                    call(&conn, STORE, "Diff", &args).await;
                result.map(|changes| format!("{} changes", changes.len()))
            }
            "show" => {
                let project = open("WS_PROJECT");
                let args = (Fd::from(project.as_fd()), env("WS_ELEMENT"));
                let result: Result<Vec<HashMap<String, OwnedValue>>, String> =
                    call(&conn, MANAGER, "Show", &args).await;
                result.map(|elements| format!("{} elements", elements.len()))
            }
            other => panic!("no role {other}"),
        };
        match answer {
            Ok(text) => format!("ok {text}"),
            Err(text) => text,
        }
    }
}
