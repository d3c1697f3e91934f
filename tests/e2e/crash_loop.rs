//! The crash loop: `ws commit` in a loop while the daemon is SIGKILLed at random
//! moments. After every restart each acknowledged commit is there, the edits not
//! committed are still in the view, and every tenth round `ws fsck` is clean.
//! The counts are printed on stderr, past the test harness's capture.

use std::time::{Duration, Instant};

use serde_json::Value;
use ws_tests::{Ws, write};

/// Rounds; CI runs all of them. `WS_CRASH_ROUNDS` changes it for a longer soak.
const ROUNDS: u32 = 120;

/// A small deterministic generator (xorshift): the same delays each run, and the
/// seed in the output to rerun a failure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn changed_paths(ws: &Ws) -> Vec<String> {
    let diff: Value = serde_json::from_str(&ws.ok(&["diff", "loop", "--json"])).unwrap();
    diff.as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn acknowledged_commits_survive_sigkill_at_any_moment() {
    if !ws_tests::privileged("acknowledged_commits_survive_sigkill_at_any_moment") {
        return;
    }
    let rounds = std::env::var("WS_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ROUNDS);
    let seed = 0x9e37_79b9_7f4a_7c15 ^ u64::from(rounds);
    let mut rng = Rng(seed);
    let ws = Ws::new();
    let src = ws.state.path().join("src");
    write(&src, "README", "crash loop\n");
    let opened: Value = serde_json::from_str(&ws.ok(&[
        "open",
        "loop",
        "--source",
        src.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let view = std::path::PathBuf::from(opened["path"].as_str().unwrap());

    let (mut acknowledged, mut failed, mut kills) = (Vec::new(), 0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        let file = format!("f{round}");
        write(&view, &file, &format!("round {round}\n"));
        // Anywhere from before the request arrives to after the reply has gone.
        if killed(&ws, &["commit", "loop", "-m", &file], &mut rng, &mut kills) {
            acknowledged.push(file.clone());
        } else {
            failed += 1;
        }
        // The next command starts a daemon, which recovers and mounts the view again.
        let changed = changed_paths(&ws);
        for done in &acknowledged {
            assert!(
                !changed.contains(done),
                "round {round} (seed {seed:#x}): the acknowledged commit of {done} is gone; uncommitted: {changed:?}"
            );
        }
        for edit in (0..=round).map(|r| format!("f{r}")) {
            assert!(
                view.join(&edit).exists(),
                "round {round} (seed {seed:#x}): the edit {edit} is gone from the view"
            );
        }
        if round % 10 == 9 {
            let fsck = ws.run(&["fsck"]);
            assert_eq!(
                fsck.code, 0,
                "round {round} (seed {seed:#x}): fsck: {}{}",
                fsck.stdout, fsck.stderr
            );
        }
    }
    // A last commit takes whatever the killed ones did not.
    ws.ok(&["commit", "loop"]);
    assert!(changed_paths(&ws).is_empty());
    let fsck = ws.run(&["fsck"]);
    assert_eq!(fsck.code, 0, "{}{}", fsck.stdout, fsck.stderr);
    // Written to stderr directly, not with eprintln!, which the test harness
    // captures: the counts belong in CI's output.
    let counts = format!(
        "crash loop: {rounds} rounds in {:.1} s, {kills} SIGKILLs, {} commits acknowledged, {failed} failed with the daemon killed\n",
        started.elapsed().as_secs_f64(),
        acknowledged.len()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), counts.as_bytes());
    assert!(kills >= u64::from(rounds), "every round killed a daemon");
}

/// Every file under `dir` with its content, in order (the view as a user sees it).
fn view_files(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name().min_depth(1) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string();
            out.push((rel, std::fs::read_to_string(entry.path()).unwrap()));
        }
    }
    out
}

/// Runs `args` and SIGKILLs the daemon after a random delay; returns whether
/// the command succeeded.
fn killed(ws: &Ws, args: &[&str], rng: &mut Rng, kills: &mut u64) -> bool {
    let child = ws
        .command()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_micros(rng.below(60_000)));
    for pid in ws.daemons() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        *kills += 1;
    }
    child.wait_with_output().unwrap().status.success()
}

/// The discard loop: `ws discard` and `ws undo` of 40 edits while the daemon
/// is SIGKILLed at random moments, each once a round (two kills a round). After
/// every restart the view holds exactly the edits or exactly the committed tree,
/// never part of either, with no daemon file in it; and `ws undo` brings back
/// every edit byte for byte.
#[test]
fn discards_and_undos_lose_no_edit_under_sigkill_at_any_moment() {
    if !ws_tests::privileged("discards_and_undos_lose_no_edit_under_sigkill") {
        return;
    }
    let rounds: u32 = std::env::var("WS_DISCARD_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let seed = 0x2545_f491_4f6c_dd1d ^ u64::from(rounds);
    let mut rng = Rng(seed);
    let ws = Ws::new();
    let src = ws.state.path().join("src");
    for i in 0..20 {
        write(&src, &format!("base/{i}"), &format!("base {i}\n"));
    }
    let opened: Value = serde_json::from_str(&ws.ok(&[
        "open",
        "loop",
        "--source",
        src.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let view = std::path::PathBuf::from(opened["path"].as_str().unwrap());
    let (mut kills, mut discarded, mut undone) = (0, 0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        let committed = view_files(&view);
        for i in 0..20 {
            write(
                &view,
                &format!("base/{i}"),
                &format!("round {round} edit {i}\n"),
            );
            write(
                &view,
                &format!("new/{round}/{i}"),
                &format!("round {round} new {i}\n"),
            );
        }
        let edits = view_files(&view);
        let at = |what: &str| format!("round {round} (seed {seed:#x}), {what}");

        killed(&ws, &["discard", "loop"], &mut rng, &mut kills);
        let after = view_files(&ws_view(&ws, &view));
        assert!(
            after == edits || after == committed,
            "{}: the view is half reverted: {} files of {} edited",
            at("after a killed discard"),
            after.iter().filter(|f| edits.contains(f)).count(),
            edits.len()
        );
        assert_no_daemon_files(&view, &at("after a killed discard"));
        if after == committed {
            discarded += 1;
        } else {
            ws.ok(&["discard", "loop"]);
        }
        assert_eq!(view_files(&view), committed, "{}", at("discarded"));

        killed(&ws, &["undo", "loop"], &mut rng, &mut kills);
        let back = view_files(&ws_view(&ws, &view));
        assert!(
            back == edits || back == committed,
            "{}: the view is half restored",
            at("after a killed undo")
        );
        assert_no_daemon_files(&view, &at("after a killed undo"));
        if back == committed {
            ws.ok(&["undo", "loop"]);
        } else {
            undone += 1;
        }
        assert_eq!(
            view_files(&view),
            edits,
            "{}",
            at("undo brings back every edit")
        );
        ws.ok(&["commit", "loop", "-m", &format!("round {round}")]);
    }
    let fsck = ws.run(&["fsck"]);
    assert_eq!(fsck.code, 0, "{}{}", fsck.stdout, fsck.stderr);
    let counts = format!(
        "discard loop: {rounds} rounds in {:.1} s, {kills} SIGKILLs, {discarded} discards and {undone} undos done despite a kill\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), counts.as_bytes());
    assert!(
        kills >= 2 * u64::from(rounds),
        "every round killed two daemons"
    );
}

/// The view, once a command has started a daemon again (which recovers first).
fn ws_view(ws: &Ws, view: &std::path::Path) -> std::path::PathBuf {
    ws.ok(&["status", "loop"]);
    view.to_owned()
}

fn assert_no_daemon_files(view: &std::path::Path, at: &str) {
    for entry in walkdir::WalkDir::new(view) {
        let entry = entry.unwrap();
        assert!(
            !entry.file_name().to_string_lossy().starts_with(".wsd-"),
            "{at}: a daemon file is left in the view: {}",
            entry.path().display()
        );
    }
}

/// The write-back loop: `ws commit --write-back` of 20 edited files while the
/// daemon is SIGKILLed at random moments. After each kill every file of the
/// project holds its old or its new content, never part of one; the same command
/// then finishes the job and leaves no daemon file in the directory.
#[test]
fn write_backs_finish_after_sigkill_at_any_moment() {
    if !ws_tests::privileged("write_backs_finish_after_sigkill_at_any_moment") {
        return;
    }
    let rounds: u32 = std::env::var("WS_WRITE_BACK_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let seed = 0x1b87_3593_cc9e_2d51 ^ u64::from(rounds);
    let mut rng = Rng(seed);
    let ws = Ws::new();
    let src = ws.state.path().join("src");
    for i in 0..20 {
        write(&src, &format!("dir{}/{i}", i % 4), &format!("base {i}\n"));
    }
    let opened: Value = serde_json::from_str(&ws.ok(&[
        "open",
        "loop",
        "--source",
        src.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let view = std::path::PathBuf::from(opened["path"].as_str().unwrap());
    let mut kills = 0;
    let started = Instant::now();
    for round in 0..rounds {
        let old = view_files(&src);
        for i in 0..20 {
            write(
                &view,
                &format!("dir{}/{i}", i % 4),
                &format!("round {round} {i}\n"),
            );
        }
        let new = view_files(&view);
        ws.ok(&["commit", "loop", "-m", &format!("round {round}")]);
        let at = format!("round {round} (seed {seed:#x})");
        killed(
            &ws,
            &["commit", "loop", "--write-back"],
            &mut rng,
            &mut kills,
        );
        // Each file is the old one or the new one, whole (daemon files aside).
        for (path, content) in view_files(&src) {
            if path.contains(".wsd-") {
                continue;
            }
            assert!(
                old.contains(&(path.clone(), content.clone()))
                    || new.contains(&(path.clone(), content.clone())),
                "{at}: {path} holds {content:?}, neither version"
            );
        }
        ws.ok(&["commit", "loop", "--write-back"]);
        assert_eq!(
            view_files(&src),
            new,
            "{at}: the rerun finishes the write-back"
        );
        assert_no_daemon_files(&src, &at);
    }
    let counts = format!(
        "write-back loop: {rounds} rounds in {:.1} s, {kills} SIGKILLs\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), counts.as_bytes());
    assert!(kills >= u64::from(rounds), "every round killed a daemon");
}
