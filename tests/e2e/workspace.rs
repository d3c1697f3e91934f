//! `ws open/status/diff/commit/discard/close/list/log` through a daemon that `ws`
//! starts by itself, as a user would run them.

use serde_json::Value;
use ws_tests::{Ws, examples, write};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn a_workspace_is_opened_edited_committed_discarded_and_closed() {
    let ws = Ws::new();
    let opened = json(&ws.ok(&[
        "open",
        "hello",
        "--source",
        examples().join("hello").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(ws.daemons().len(), 1, "ws started the daemon");
    for field in [
        "name",
        "path",
        "state",
        "backend",
        "base_source_digest",
        "source_digest",
        "dirty",
        "socket",
    ] {
        assert!(opened.get(field).is_some(), "--json has {field}: {opened}");
    }
    assert_eq!(opened["state"], "open");
    assert_eq!(opened["dirty"], 0);
    assert_eq!(opened["base_source_digest"], opened["source_digest"]);
    let view = std::path::PathBuf::from(opened["path"].as_str().unwrap());
    assert!(view.join("src/greeting.c").exists());

    let greeting = std::fs::read_to_string(view.join("src/greeting.c")).unwrap();
    std::fs::write(
        view.join("src/greeting.c"),
        greeting.replace("Hello from", "Greetings from"),
    )
    .unwrap();
    write(&view, "NEWS", "Now greets.\n");
    let status = json(&ws.ok(&["status", "hello", "--json"]));
    assert_eq!(status["dirty"], 2);
    let changes = json(&ws.ok(&["diff", "hello", "--json"]));
    assert_eq!(
        changes,
        serde_json::json!([{"path": "NEWS", "change": "added"}, {"path": "src/greeting.c", "change": "modified"}])
    );
    assert_eq!(
        ws.ok(&["diff", "hello", "--name-only"]),
        "NEWS\nsrc/greeting.c\n"
    );
    let patch = ws.ok(&["diff", "hello"]);
    assert!(patch.contains("+    return \"Greetings from"), "{patch}");

    let committed = json(&ws.ok(&["commit", "hello", "-m", "greet", "--json"]));
    assert_ne!(committed["source_digest"], opened["source_digest"]);
    assert_eq!(ws.ok(&["commit", "hello"]), "hello: nothing to commit\n");

    write(&view, "scratch", "scratch\n");
    assert_eq!(
        ws.ok(&["discard", "hello"]),
        "hello: discarded 1 change(s)\n"
    );
    assert!(!view.join("scratch").exists());
    assert!(
        std::fs::read_to_string(view.join("NEWS")).is_ok(),
        "committed files stay"
    );

    let log = json(&ws.ok(&["log", "hello", "--json"]));
    let ops: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["open", "commit", "discard"]);
    assert_eq!(log[1]["message"], "greet");

    let list = json(&ws.ok(&["list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    write(&view, "dirty", "dirty\n");
    let refused = ws.run(&["close", "hello"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("uncommitted change"),
        "{}",
        refused.stderr
    );
    ws.ok(&["close", "hello", "--force"]);
    assert_eq!(json(&ws.ok(&["list", "--json"])), serde_json::json!([]));
}

#[test]
fn a_commit_is_written_back_into_its_source_from_the_command_line() {
    let ws = Ws::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "README", "readme\n");
    write(src.path(), "src/main.c", "int main(void) { return 0; }\n");
    let source = src.path().canonicalize().unwrap();
    let opened = json(&ws.ok(&[
        "open",
        "hello",
        "--source",
        src.path().to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(opened["source"], source.display().to_string(), "{opened}");
    let view = std::path::PathBuf::from(opened["path"].as_str().unwrap());
    write(&view, "README", "edited\n");
    write(&view, "NEWS", "news\n");

    let committed = json(&ws.ok(&["commit", "hello", "--write-back", "--json"]));
    assert_eq!(
        committed["write_back"],
        serde_json::json!({
            "dir": source.display().to_string(), "written": 2, "made_dirs": 0,
            "removed": 0, "already": 0, "kept": [],
        }),
        "{committed}"
    );
    assert_eq!(
        std::fs::read_to_string(source.join("NEWS")).unwrap(),
        "news\n"
    );
    let again = ws.ok(&["commit", "hello", "--write-back"]);
    assert_eq!(
        again,
        format!(
            "hello: nothing to commit\nhello: {} holds the commit already\n",
            source.display()
        )
    );
    let log = json(&ws.ok(&["log", "hello", "--json"]));
    assert_eq!(log.as_array().unwrap().last().unwrap()["op"], "write-back");

    // Edited in the workspace and in the directory: refused, nothing written.
    write(&view, "src/main.c", "int main(void) { return 1; }\n");
    write(&view, "README", "edited again\n");
    write(src.path(), "src/main.c", "int main(void) { return 2; }\n");
    let refused = ws.run(&["commit", "hello", "-m", "both", "--write-back"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stdout.starts_with("hello: committed "),
        "the commit stays: {}",
        refused.stdout
    );
    assert!(
        refused
            .stderr
            .contains("src/main.c (changed there since the workspace was opened)")
            && refused.stderr.contains("nothing was written"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read_to_string(source.join("README")).unwrap(),
        "edited\n"
    );

    let nowhere = ws.run(&["commit", "hello", "--write-back=/no/such/dir"]);
    assert_eq!(nowhere.code, 2, "{}", nowhere.stderr);
    assert!(
        nowhere.stderr.contains("/no/such/dir"),
        "{}",
        nowhere.stderr
    );
}

#[test]
fn clients_starting_at_once_start_one_daemon() {
    let ws = Ws::new();
    // One after the other: the first starts the daemon, the others find it.
    let runs: Vec<_> = (0..4)
        .map(|_| ws.command().args(["list", "--json"]).output())
        .collect::<Vec<_>>();
    for run in runs {
        let out = run.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // At once: several may spawn a daemon; the state dir's lock keeps one.
    let ws2 = Ws::new();
    let spawned: Vec<_> = (0..4)
        .map(|_| ws2.command().args(["list"]).spawn().unwrap())
        .collect();
    for mut child in spawned {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(ws.daemons().len(), 1);
    assert_eq!(ws2.daemons().len(), 1, "one daemon per state directory");
}

#[test]
fn a_client_at_its_connection_limit_is_told_so_and_starts_no_daemon() {
    let ws = Ws::new();
    let config = tempfile::tempdir().unwrap();
    let wsd_toml = config.path().join("wsd.toml");
    std::fs::write(
        &wsd_toml,
        "[limits]\nmax-connections-per-user = 1\nhandshake-timeout-seconds = 600\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = ws
            .command()
            .env("WSD_CONFIG", &wsd_toml)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(run(&["list"]).0, Some(0));
    // The user's one connection, held (and silent: the deadline is far); again
    // if the last `ws` still had it when this one came.
    let _held = loop {
        let held =
            std::os::unix::net::UnixStream::connect(ws.state.path().join("wsd.sock")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        held.set_nonblocking(true).unwrap();
        match std::io::Read::read(&mut &held, &mut [0]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break held,
            _ => {}
        }
    };
    let started = std::time::Instant::now();
    let (code, stderr) = run(&["list"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("closed the connection"), "{stderr}");
    assert!(stderr.contains("max-connections-per-user"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "it took {:?}",
        started.elapsed()
    );
    assert_eq!(ws.daemons().len(), 1, "the daemon answers: none is started");
}

#[test]
fn mistakes_get_clear_errors_and_exit_codes() {
    let ws = Ws::new();
    let missing = ws.run(&["status", "nope"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no workspace named \"nope\""),
        "{}",
        missing.stderr
    );
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "a", "a\n");
    let bad = ws.run(&["open", "../up", "--source", src.path().to_str().unwrap()]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("invalid workspace name"),
        "{}",
        bad.stderr
    );
    let nowhere = ws.run(&["open", "x", "--source", "/no/such/dir"]);
    assert_eq!(nowhere.code, 2, "{}", nowhere.stderr);
    assert!(
        nowhere.stderr.contains("/no/such/dir"),
        "{}",
        nowhere.stderr
    );
    ws.ok(&["open", "twice", "--source", src.path().to_str().unwrap()]);
    let twice = ws.run(&["open", "twice", "--source", src.path().to_str().unwrap()]);
    assert_eq!(twice.code, 2, "{}", twice.stderr);
    assert!(twice.stderr.contains("already exists"), "{}", twice.stderr);
}

#[test]
fn undo_fsck_and_gc_from_the_command_line() {
    let ws = Ws::new();
    let opened = json(&ws.ok(&[
        "open",
        "hello",
        "--source",
        examples().join("hello").to_str().unwrap(),
        "--json",
    ]));
    let view = std::path::PathBuf::from(opened["path"].as_str().unwrap());
    write(&view, "NEWS", "news\n");
    ws.ok(&["commit", "hello", "-m", "news"]);
    let undone = json(&ws.ok(&["undo", "hello", "--json"]));
    assert_eq!(undone["undone"]["op"], "commit", "{undone}");
    let status = json(&ws.ok(&["status", "hello", "--json"]));
    assert_eq!(status["source_digest"], opened["source_digest"]);
    assert_eq!(
        status["dirty"], 1,
        "the undone commit's edit is uncommitted again"
    );
    let nothing = ws.run(&["undo", "hello"]);
    assert_eq!(nothing.code, 1, "{}", nothing.stderr);
    assert!(
        nothing.stderr.contains("no commit or discard left to undo"),
        "{}",
        nothing.stderr
    );

    let gc = json(&ws.ok(&["gc", "--json"]));
    assert_eq!(gc["within_quota"], true, "{gc}");
    assert!(gc["kept_objects"].as_u64().unwrap() > 0, "{gc}");
    let fsck = ws.run(&["fsck", "--json"]);
    assert_eq!(fsck.code, 0, "{}", fsck.stderr);
    assert_eq!(json(&fsck.stdout)["clean"], true);
    let bad = ws.run(&["gc", "--quota", "12Q"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("suffix"), "{}", bad.stderr);
}

#[test]
fn a_state_dir_too_long_for_a_socket_address_still_works() {
    let ws = Ws::new();
    // A Unix socket address holds 107 bytes; this state dir alone is longer.
    let long = ws.state.path().join("x".repeat(60)).join("y".repeat(60));
    std::fs::create_dir_all(&long).unwrap();
    let run = |args: &[&str]| -> ws_tests::Run {
        ws.command()
            .env("WS_STATE_DIR", &long)
            .args(args)
            .output()
            .unwrap()
            .into()
    };
    let opened = run(&[
        "open",
        "hello",
        "--source",
        examples().join("hello").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(opened.code, 0, "{opened:?}");
    let socket = json(&opened.stdout)["socket"].as_str().unwrap().to_owned();
    assert!(socket.len() < 108 && socket.ends_with(".sock"), "{socket}");
    assert_eq!(
        std::fs::read_to_string(long.join("wsd.socket"))
            .unwrap()
            .trim(),
        socket
    );
    let status = run(&["status", "hello", "--json"]);
    assert_eq!(json(&status.stdout)["socket"], socket.as_str());
    assert_eq!(run(&["close", "hello"]).code, 0);
    // This test's daemon serves another state dir than the one Ws stops.
    let daemon = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(long.to_str().unwrap()))
        });
    if let Some(pid) = daemon {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}
