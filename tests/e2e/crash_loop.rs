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
        let commit = ws
            .command()
            .args(["commit", "loop", "-m", &file])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Anywhere from before the request arrives to after the reply has gone.
        std::thread::sleep(Duration::from_micros(rng.below(60_000)));
        for pid in ws.daemons() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            kills += 1;
        }
        let out = commit.wait_with_output().unwrap();
        if out.status.success() {
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
