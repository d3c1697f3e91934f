//! Builds end to end, as a user walks through them with the example project:
//! a build that fails late, a workspace that continues from its buildtree, a
//! fix that recompiles only what it must, commits and discards between builds,
//! and a final build that reuses the workspace's artifact. Compiler runs are
//! counted by a `cc` wrapper on the sandbox's PATH (never by reading make's
//! output).

use std::path::{Path, PathBuf};

use ws_tests::{Run, Ws, examples, write};

/// The wrapper `cc`: says what it compiles or links on stderr (which the build
/// log and `ws build` show), then runs the real compiler.
const CC_WRAPPER: &str = r#"#!/bin/sh
compile=
for arg in "$@"; do
    case "$arg" in
        -c) compile=yes ;;
    esac
done
if [ -n "$compile" ]; then
    for arg in "$@"; do
        case "$arg" in
            *.c) echo "ws-test-cc: compile $arg" >&2 ;;
        esac
    done
else
    echo "ws-test-cc: link" >&2
fi
exec /usr/bin/cc "$@"
"#;

/// The example project copied to a scratch directory, with a third element
/// holding the counting `cc` that `hello` builds with; `build` replaces
/// hello's build commands when given.
pub(super) fn project(build: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&examples().join("project"), dir.path());
    write(dir.path(), "counter/bin/cc", CC_WRAPPER);
    set_executable(&dir.path().join("counter/bin/cc"));
    let toml = std::fs::read_to_string(dir.path().join("ws.toml")).unwrap();
    let mut toml = toml.replace(
        "depends = [\"base\"]",
        "depends = [\"base\", \"counter\"]\nenv = { PATH = \"/ws/sysroot/bin:/usr/local/bin:/usr/bin:/bin\" }",
    );
    if let Some(build) = build {
        toml = toml.replace("build = [\"make\"]", &format!("build = [{build:?}]"));
    }
    toml.push_str("\n[element.counter]\nkind = \"import\"\nsources = \"counter\"\n");
    std::fs::write(dir.path().join("ws.toml"), toml).unwrap();
    // The build runs as the caller; a scratch directory of root's is 0700.
    dir
}

/// A project of `toml` with one source file, `src/input`.
fn one_element(toml: &str, input: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ws.toml", toml);
    write(dir.path(), "src/input", input);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let target = to.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &target).unwrap();
        }
    }
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `ws -C PROJECT ARGS…`.
pub(super) fn in_project(ws: &Ws, project: &Path, args: &[&str]) -> Run {
    let mut all = vec!["-C", project.to_str().unwrap()];
    all.extend_from_slice(args);
    ws.run(&all)
}

/// The files the build compiled, sorted, and how often it linked.
pub(super) fn compiled(run: &Run) -> (Vec<String>, usize) {
    let mut files: Vec<String> = run
        .stdout
        .lines()
        .chain(run.stderr.lines())
        .filter_map(|l| l.strip_prefix("ws-test-cc: compile "))
        .map(str::to_owned)
        .collect();
    files.sort();
    let links = run
        .stdout
        .lines()
        .chain(run.stderr.lines())
        .filter(|l| *l == "ws-test-cc: link")
        .count();
    (files, links)
}

pub(super) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The report of `element` in a `ws build --json` run.
pub(super) fn report(run: &Run, element: &str) -> serde_json::Value {
    json(&run.stdout)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["element"] == element)
        .unwrap_or_else(|| panic!("no report for {element}: {}", run.stdout))
        .clone()
}

/// Edits `rel` in `dir`: `from` must be there and becomes `to`.
pub(super) fn edit(dir: &Path, rel: &str, from: &str, to: &str) {
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{rel} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// Checks the artifact `digest` out and runs its `usr/bin/hello`; its stdout.
pub(super) fn run_artifact(ws: &Ws, digest: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("artifact");
    ws.ok(&["store", "checkout", digest, target.to_str().unwrap()]);
    let ran = std::process::Command::new(target.join("usr/bin/hello"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&ran.stdout).into_owned()
}

pub(super) const BREAK: (&str, &str) = ("return \"Hello\";", "return \"Hello\" +;");

pub(super) fn workspace_path(ws: &Ws, name: &str) -> PathBuf {
    PathBuf::from(
        json(&ws.ok(&["status", name, "--json"]))["path"]
            .as_str()
            .unwrap(),
    )
}

#[test]
fn a_failed_build_is_continued_fixed_committed_and_reused() {
    if !ws_tests::privileged("a_failed_build_is_continued_fixed_committed_and_reused") {
        return;
    }
    let ws = Ws::new();
    let project = project(None);
    let p = project.path();

    // 1. The build fails late: greeting.c is broken; main.o was made before it.
    edit(p, "hello/src/greeting.c", BREAK.0, BREAK.1);
    let failed = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(failed.code, 1, "the build fails: {}", failed.stderr);
    assert_eq!(
        compiled(&failed),
        (vec!["src/greeting.c".into(), "src/main.c".into()], 0),
        "{}",
        failed.stderr
    );
    let hello = report(&failed, "hello");
    assert_eq!(hello["result"], "failed");
    assert!(
        hello["buildtree"].is_string() && hello["log"].is_string(),
        "{hello}"
    );
    assert!(
        failed.stderr.contains("hello was not built") || failed.stderr.contains("hello failed"),
        "{}",
        failed.stderr
    );
    assert_eq!(report(&failed, "base")["result"], "built");
    let shown = json(&in_project(&ws, p, &["show", "hello", "--json"]).stdout);
    let shown_hello = shown.as_array().unwrap().last().unwrap();
    assert_eq!(shown_hello["state"], "failed", "{shown}");
    assert_eq!(shown_hello["cache_key"], hello["cache_key"]);

    // `ws shell --buildtree` looks into the failed build: main.o only, and
    // what the shell does there is dropped; the command's exit code is ws's.
    let looked = in_project(
        &ws,
        p,
        &[
            "shell",
            "hello",
            "--buildtree",
            "--",
            "sh",
            "-c",
            "ls src/*.o; rm src/main.o; exit 9",
        ],
    );
    assert_eq!(looked.code, 9, "{}", looked.stderr);
    assert_eq!(looked.stdout, "src/main.o\n");
    assert!(
        looked.stderr.contains("its failed buildtree"),
        "{}",
        looked.stderr
    );
    let again = in_project(
        &ws,
        p,
        &["shell", "hello", "--buildtree", "--", "ls", "src/main.o"],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);

    // 2. `ws open` continues from the failed buildtree.
    let opened = in_project(&ws, p, &["open", "hello", "--json"]);
    assert_eq!(opened.code, 0, "{}", opened.stderr);
    let opened = json(&opened.stdout);
    assert_eq!(opened["continues_failed_build"], true, "{opened}");
    assert_eq!(opened["cache_key"], hello["cache_key"]);
    let view = workspace_path(&ws, "hello");
    assert!(view.join("src/greeting.c").is_file());
    assert!(
        !view.join("src/main.o").exists(),
        "the view holds sources only"
    );

    // 3. The fix: only the fixed file and the objects the failed build never
    //    made are compiled (main.o is reused), then linked.
    edit(&view, "src/greeting.c", BREAK.1, BREAK.0);
    let fixed = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    assert_eq!(
        compiled(&fixed),
        (
            vec![
                "src/farewell.c".into(),
                "src/greeting.c".into(),
                "src/names.c".into()
            ],
            1
        ),
        "{}",
        fixed.stderr
    );
    let built = report(&fixed, "hello");
    assert_eq!(built["result"], "built");
    assert_eq!(built["incremental"], true);
    assert_eq!(built["workspace"], "hello");
    assert_eq!(report(&fixed, "base")["result"], "cached");
    assert_eq!(report(&fixed, "base")["commands_run"], 0);
    let status = json(&ws.ok(&["status", "hello", "--json"]));
    assert_eq!(status["last_build"]["result"], "built", "{status}");
    assert_eq!(
        status["artifact_ref"],
        format!("artifact/0/{}", built["cache_key"].as_str().unwrap())
    );

    // 4. A build right after changes nothing: the key is cached.
    let again = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(report(&again, "hello")["result"], "cached");
    assert_eq!(compiled(&again), (vec![], 0));

    // 5. Edit and commit, then build: exactly the edited file.
    edit(&view, "src/names.c", "return GREET_WHO;", "return \"ws\";");
    ws.ok(&["commit", "hello", "-m", "greet ws"]);
    let after_commit = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(after_commit.code, 0, "{}", after_commit.stderr);
    assert_eq!(
        compiled(&after_commit),
        (vec!["src/names.c".into()], 1),
        "{}",
        after_commit.stderr
    );

    // 6. Edit, build, discard, edit another, build: the discarded file (back to
    //    its committed content) and the new edit, nothing else.
    edit(&view, "src/farewell.c", "Goodbye from", "Farewell from");
    let edited = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(compiled(&edited), (vec!["src/farewell.c".into()], 1));
    ws.ok(&["discard", "hello"]);
    edit(&view, "src/main.c", "%s, %s!", "%s, dear %s!");
    let after_discard = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(after_discard.code, 0, "{}", after_discard.stderr);
    assert_eq!(
        compiled(&after_discard),
        (vec!["src/farewell.c".into(), "src/main.c".into()], 1),
        "{}",
        after_discard.stderr
    );
    ws.ok(&["commit", "hello", "-m", "dear"]);
    let last = report(&after_discard, "hello");

    // 7. `ws commit --write-back` makes the project's sources the committed ones
    //    (the fixed greeting.c and the edited names.c and main.c); the workspace
    //    closes; the final build has the same key and reuses its artifact: zero
    //    commands.
    let sources = p.join("hello").canonicalize().unwrap();
    let status = json(&ws.ok(&["status", "hello", "--json"]));
    assert_eq!(status["source"], sources.display().to_string(), "{status}");
    let written = ws.ok(&["commit", "hello", "--write-back"]);
    assert!(written.contains("hello: nothing to commit"), "{written}");
    assert!(
        written.contains(&format!(
            "hello: wrote back 3 change(s) into {}: 3 file(s) written",
            sources.display()
        )),
        "{written}"
    );
    for rel in ["src/greeting.c", "src/names.c", "src/main.c"] {
        assert_eq!(
            std::fs::read(view.join(rel)).unwrap(),
            std::fs::read(sources.join(rel)).unwrap(),
            "{rel}"
        );
    }
    ws.ok(&["close", "hello"]);
    let final_build = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(final_build.code, 0, "{}", final_build.stderr);
    let reused = report(&final_build, "hello");
    assert_eq!(reused["result"], "cached", "{reused}");
    assert_eq!(reused["commands_run"], 0);
    assert_eq!(reused["cache_key"], last["cache_key"]);
    assert_eq!(reused["artifact"], last["artifact"]);
    assert_eq!(compiled(&final_build), (vec![], 0));

    // The artifact is the program, with every edit in it.
    let stdout = run_artifact(&ws, reused["artifact"].as_str().unwrap());
    assert_eq!(stdout, "Hello, dear ws!\nGoodbye from a ws workspace\n");
}

#[test]
fn a_buildtree_from_a_clock_ahead_of_this_one_is_continued_and_edits_are_seen() {
    if !ws_tests::privileged(
        "a_buildtree_from_a_clock_ahead_of_this_one_is_continued_and_edits_are_seen",
    ) {
        return;
    }
    // The failed build moves what it made an hour ahead, as a build on a machine
    // whose clock is ahead of this one's would leave it.
    let ws = Ws::new();
    let project = project(Some(
        "make || { find . -newer Makefile -exec touch -h -d '1 hour' {} +; exit 1; }",
    ));
    let p = project.path();
    edit(p, "hello/src/greeting.c", BREAK.0, BREAK.1);
    let failed = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(
        compiled(&failed).0,
        vec!["src/greeting.c".to_owned(), "src/main.c".to_owned()]
    );
    let opened = json(&in_project(&ws, p, &["open", "hello", "--json"]).stdout);
    assert_eq!(opened["continues_failed_build"], true, "{opened}");
    let view = workspace_path(&ws, "hello");

    // main.o, made "in the future", is kept; the rest is compiled.
    edit(&view, "src/greeting.c", BREAK.1, BREAK.0);
    let fixed = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    assert_eq!(
        compiled(&fixed),
        (
            vec![
                "src/farewell.c".into(),
                "src/greeting.c".into(),
                "src/names.c".into()
            ],
            1
        ),
        "{}",
        fixed.stderr
    );

    // An edit of main.c is newer than that main.o, although its mtime was
    // ahead of this clock: it is compiled, and only it.
    edit(&view, "src/main.c", "%s, %s!", "%s, %s, now!");
    let edited = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(edited.code, 0, "{}", edited.stderr);
    assert_eq!(
        compiled(&edited),
        (vec!["src/main.c".into()], 1),
        "{}",
        edited.stderr
    );
    let artifact = report(&edited, "hello")["artifact"]
        .as_str()
        .unwrap()
        .to_owned();
    let stdout = run_artifact(&ws, &artifact);
    assert!(stdout.starts_with("Hello, world, now!"), "{}", stdout);
}

#[test]
fn project_mistakes_are_named_with_file_and_line() {
    let ws = Ws::new();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ws.toml",
        "[element.a]\nsources = \"a\"\nbiuld = [\"make\"]\n",
    );
    let run = in_project(&ws, dir.path(), &["build", "a"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("ws.toml:3:"), "{}", run.stderr);
    assert!(run.stderr.contains("biuld"), "{}", run.stderr);

    write(
        dir.path(),
        "ws.toml",
        "[element.a]\nsources = \"a\"\nbuild = [\"true\"]\ndepends = [\"b\"]\n\n[element.b]\nsources = \"b\"\nbuild = [\"true\"]\ndepends = [\"a\"]\n",
    );
    let run = in_project(&ws, dir.path(), &["show", "a"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cycle"), "{}", run.stderr);

    let empty = tempfile::tempdir().unwrap();
    let run = in_project(&ws, empty.path(), &["build", "a"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no ws.toml"), "{}", run.stderr);

    write(
        dir.path(),
        "ws.toml",
        "[element.a]\nsources = \"missing\"\nbuild = [\"true\"]\n",
    );
    let run = in_project(&ws, dir.path(), &["build", "a"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("element") && run.stderr.contains("missing"),
        "{}",
        run.stderr
    );
}

/// Waits until a process whose command line is `sleep SECONDS` runs (or fails
/// after 60 s); `false` checks it does not.
fn wait_for_sleep(seconds: &str, running: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let found = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c == format!("sleep\0{seconds}\0").as_bytes())
        });
        if found == running {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sleep {seconds} is {}running after 60 s",
            if found { "still " } else { "not " }
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|target| Path::new(target).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

#[test]
fn killing_the_daemon_mid_build_leaves_the_workspace_as_it_was() {
    if !ws_tests::privileged("killing_the_daemon_mid_build_leaves_the_workspace_as_it_was") {
        return;
    }
    let ws = Ws::new();
    let project = project(Some("sleep 1003"));
    let p = project.path();
    ws.ok(&["-C", p.to_str().unwrap(), "open", "hello"]);
    let view = workspace_path(&ws, "hello");
    edit(
        &view,
        "src/names.c",
        "return GREET_WHO;",
        "return \"edited\";",
    );
    let before = json(&ws.ok(&["status", "hello", "--json"]));

    let mut client = ws
        .command()
        .args(["-C", p.to_str().unwrap(), "build", "hello"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_sleep("1003", true);
    for pid in ws.daemons() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    assert!(
        !client.wait().unwrap().success(),
        "the build did not finish"
    );
    // The sandbox dies with the daemon.
    wait_for_sleep("1003", false);

    // A new daemon recovers: the workspace is as before the build.
    let after = json(&ws.ok(&["status", "hello", "--json"]));
    assert_eq!(after["source_digest"], before["source_digest"]);
    assert_eq!(after["dirty"], 1);
    assert_eq!(after["last_build"], serde_json::Value::Null, "{after}");
    assert!(view.join("src/names.c").is_file());
    assert!(
        std::fs::read_to_string(view.join("src/names.c"))
            .unwrap()
            .contains("edited")
    );
    assert_eq!(
        mounts_under(&ws.state.path().join("builds")),
        Vec::<String>::new()
    );

    // And builds again.
    let toml = std::fs::read_to_string(p.join("ws.toml")).unwrap();
    std::fs::write(p.join("ws.toml"), toml.replace("sleep 1003", "make")).unwrap();
    let built = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    assert_eq!(report(&built, "hello")["result"], "built");
}

#[test]
fn ctrl_c_cancels_the_build_and_leaves_the_workspace_as_it_was() {
    if !ws_tests::privileged("ctrl_c_cancels_the_build_and_leaves_the_workspace_as_it_was") {
        return;
    }
    let ws = Ws::new();
    let project = project(Some("sleep 1004"));
    let p = project.path();
    ws.ok(&["-C", p.to_str().unwrap(), "open", "hello"]);
    let before = json(&ws.ok(&["status", "hello", "--json"]));
    let client = ws
        .command()
        .args(["-C", p.to_str().unwrap(), "build", "hello"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_sleep("1004", true);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out: Run = client.wait_with_output().unwrap().into();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cancel"), "{}", out.stderr);
    wait_for_sleep("1004", false);
    let after = json(&ws.ok(&["status", "hello", "--json"]));
    assert_eq!(after["source_digest"], before["source_digest"]);
    assert_eq!(after["artifact_ref"], serde_json::Value::Null);
    assert_eq!(after["last_build"]["result"], "failed", "{after}");
    assert_eq!(
        mounts_under(&ws.state.path().join("builds")),
        Vec::<String>::new()
    );
}

#[test]
fn building_a_dependent_uses_the_open_workspace_of_its_dependency() {
    if !ws_tests::privileged("building_a_dependent_uses_the_open_workspace_of_its_dependency") {
        return;
    }
    let ws = Ws::new();
    let project = project(None);
    let p = project.path();
    let first = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);

    // A workspace on the base, edited: building hello uses it, so hello's key
    // changes and what depends on the header is rebuilt against the edit.
    ws.ok(&["-C", p.to_str().unwrap(), "open", "base"]);
    let view = workspace_path(&ws, "base");
    edit(&view, "include/greet.h", "\"world\"", "\"workspace\"");
    let dependent = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(dependent.code, 0, "{}", dependent.stderr);
    let base = report(&dependent, "base");
    assert_eq!(base["workspace"], "base", "{base}");
    assert_ne!(base["cache_key"], report(&first, "base")["cache_key"]);
    let hello = report(&dependent, "hello");
    assert_eq!(hello["result"], "built");
    assert_ne!(hello["cache_key"], report(&first, "hello")["cache_key"]);
    let stdout = run_artifact(&ws, hello["artifact"].as_str().unwrap());
    assert!(stdout.starts_with("Hello, workspace!"), "{}", stdout);

    // Closed, the base is the project's again: hello's first artifact is reused.
    ws.ok(&["close", "base", "--force"]);
    let again = in_project(&ws, p, &["build", "hello", "--json"]);
    assert_eq!(report(&again, "hello")["result"], "cached");
    assert_eq!(
        report(&again, "hello")["cache_key"],
        report(&first, "hello")["cache_key"]
    );
}

#[test]
fn saved_caches_are_listed_and_dropped() {
    if !ws_tests::privileged("saved_caches_are_listed_and_dropped") {
        return;
    }
    let ws = Ws::new();
    let dir = one_element(
        "[element.a]\nsources = \"src\"\ncaches = [\"c\"]\nbuild = [\"echo x > $WS_CACHEDIR/c/f\"]\n",
        "input\n",
    );
    let built = in_project(&ws, dir.path(), &["build", "a"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let list = json(&ws.ok(&["cache", "list", "--json"]));
    assert_eq!(list[0]["element"], "a", "{list}");
    assert_eq!(list[0]["name"], "c");
    assert!(list[0]["tree"].is_string());
    assert!(
        ws.ok(&["cache", "drop", "a", "c"])
            .contains("a: dropped cache c")
    );
    assert_eq!(
        json(&ws.ok(&["cache", "list", "--json"])),
        serde_json::json!([])
    );
    let again = ws.run(&["cache", "drop", "a"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("no saved cache"), "{}", again.stderr);
}

#[test]
fn verify_catches_what_an_incremental_build_left_stale() {
    if !ws_tests::privileged("verify_catches_what_an_incremental_build_left_stale") {
        return;
    }
    let ws = Ws::new();
    // A rule with a missing dependency: `out` is made once and never again.
    let dir = one_element(
        "[element.a]\nsources = \"src\"\nbuild = [\"[ -f out ] || cp input out\"]\ninstall = [\"cp out $WS_INSTALLDIR/\"]\n",
        "first\n",
    );
    let p = dir.path();
    let verified = in_project(&ws, p, &["build", "a", "--verify", "--json"]);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert_eq!(report(&verified, "a")["verify"]["result"], "identical");

    // In a workspace the second build is incremental and keeps the stale
    // `out`; a clean rebuild does not, and --verify says so, as a diff.
    // Its first build there is a hit, whose buildtree the workspace adopts.
    ws.ok(&["-C", p.to_str().unwrap(), "open", "a"]);
    let hit = in_project(&ws, p, &["build", "a", "--json"]);
    assert_eq!(report(&hit, "a")["result"], "cached", "{}", hit.stderr);
    let status = json(&ws.ok(&["status", "a", "--json"]));
    assert_eq!(status["last_build"]["result"], "cached", "{status}");
    edit(&workspace_path(&ws, "a"), "input", "first", "second");
    let stale = in_project(&ws, p, &["build", "a", "--verify", "--json"]);
    assert_eq!(stale.code, 1, "{}", stale.stderr);
    let a = report(&stale, "a");
    assert_eq!(
        (a["result"].as_str(), a["incremental"].as_bool()),
        (Some("built"), Some(true))
    );
    assert_eq!(a["verify"]["result"], "differs", "{a}");
    assert_eq!(
        a["verify"]["differences"],
        serde_json::json!(["modified out"])
    );
    assert!(stale.stderr.contains("-first\n+second"), "{}", stale.stderr);
    assert!(
        stale.stderr.contains("a is not reproducible"),
        "{}",
        stale.stderr
    );
}
