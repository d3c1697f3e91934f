//! A server killed mid-upload: a BuildGrid of the test's own is SIGKILLed while
//! `put_result` sends a build's trees. The push fails soon with an error naming
//! the remote and the call, nothing is published, and after a restart on the same
//! directory (its disk CAS survives, its action cache does not) a retry sends only
//! what the server lacks and publishes a complete entry.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::bgd::{Bgd, free_port};
use super::{nonce, runtime, server, side};
use daemon::manager::build::Outcome;
use daemon::project::CacheKey;
use daemon::remote::{BuildResult, Lookup, Remote};
use treediff::capture::CaptureMode;

/// Large files, each sent by ByteStream (over the 4 MiB batch limit).
const LARGE: usize = 8;
const LARGE_SIZE: usize = 4 << 20;
/// Small files, in batches.
const SMALL: usize = 3000;

/// A tree of `LARGE` large and `SMALL` small files, unique to `nonce`. The large
/// ones sort first, so they go first.
fn make_tree(root: &Path, nonce: &str) -> std::path::PathBuf {
    let src = root.join("build");
    let mut data = vec![0u8; LARGE_SIZE];
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..LARGE {
        let mut hasher = blake3::Hasher::new();
        hasher.update(format!("{nonce} large {i}").as_bytes());
        hasher.finalize_xof().fill(&mut data);
        std::fs::write(src.join(format!("a-large-{i}.bin")), &data).unwrap();
    }
    for d in 0..(SMALL / 100) {
        let dir = src.join(format!("small/d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{nonce} {d} {f}\n")).unwrap();
        }
    }
    src
}

/// A bgd with the default configuration in a fresh directory, on a free port.
struct Own {
    // Stopped before its directory goes.
    bgd: Bgd,
    url: String,
    _state: tempfile::TempDir,
}

fn own_server() -> Own {
    let state = tempfile::tempdir().unwrap();
    let bgd = Bgd::start(state.path(), free_port(), None, &[]);
    Own {
        url: format!("grpc://127.0.0.1:{}", bgd.port),
        bgd,
        _state: state,
    }
}

#[test]
fn a_server_killed_mid_upload_publishes_nothing_and_a_retry_resumes() {
    if server("a_server_killed_mid_upload").is_none() {
        return;
    }
    let Own { bgd, url, .. } = &own_server();
    let rt = runtime();
    let remote = Remote::connect(rt.handle().clone(), url, "").unwrap();

    let a = side();
    let mut attempt = 0;
    let (key, result, error, killed_at, before) = loop {
        attempt += 1;
        assert!(
            attempt <= 3,
            "the push always finished before the kill landed"
        );
        let nonce = nonce(&format!("killed {attempt}"));
        let src = make_tree(a.dir.path(), &nonce);
        let tree = a.capture(&src, CaptureMode::Source);
        std::fs::remove_dir_all(&src).unwrap();
        let log = {
            let txn = a.store.begin().unwrap();
            let log = txn.put(format!("log {nonce}\n").as_bytes()).unwrap();
            txn.commit().unwrap();
            log
        };
        let key = CacheKey::parse(&nonce).unwrap();
        let result = BuildResult {
            outcome: Outcome::Success,
            artifact: Some(tree),
            buildtree: None,
            log: Some(log),
            failure: None,
            sources: None,
            info: Default::default(),
        };
        let before = remote.stats();
        let done = AtomicBool::new(false);
        let (pushed, killed_at) = std::thread::scope(|scope| {
            // Kill once half the large files arrived: the next is on its way,
            // and the small ones wait.
            let killer = scope.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    if remote.stats().bytes_sent - before.bytes_sent
                        >= (LARGE / 2 * LARGE_SIZE) as u64
                    {
                        let at = Instant::now();
                        bgd.kill();
                        return Some(at);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                None
            });
            let pushed = remote.put_result(&a.store, &a.map, &key, &result);
            done.store(true, Ordering::SeqCst);
            (pushed, killer.join().unwrap())
        });
        match (pushed, killed_at) {
            (Err(error), Some(at)) => break (key, result, error, at, before),
            (Ok(stats), Some(_)) => {
                eprintln!("attempt {attempt}: the push ({stats:?}) finished before the kill");
                bgd.restart();
            }
            (pushed, None) => panic!("the push ended before sending a blob: {pushed:?}"),
        }
    };

    // The push failed soon after the kill, naming the remote and the call.
    let failed_after = killed_at.elapsed();
    let message = error.to_string();
    eprintln!("killed after {attempt} attempt(s); failed {failed_after:?} later: {message}");
    assert!(failed_after < Duration::from_secs(20), "{failed_after:?}");
    assert!(message.contains(url.as_str()), "{message}");
    assert!(
        ["ByteStream.Write", "BatchUpdateBlobs", "FindMissingBlobs"]
            .iter()
            .any(|call| message.contains(call)),
        "{message}"
    );
    let first = remote.stats();
    assert_eq!(
        first.action_updates, before.action_updates,
        "nothing was published"
    );
    let sent_before = first.blobs_sent - before.blobs_sent;
    assert!(sent_before > 0);

    // Restarted on the same directory and port: no entry (nothing incomplete
    // was published, and the action cache is in memory).
    bgd.restart();
    let b = side();
    match remote.get_result(&b.store, &b.map, &key).unwrap() {
        Lookup::Miss(reason) => eprintln!("after the restart: a miss ({reason})"),
        hit => panic!("an entry after a killed push: {hit:?}"),
    }

    // The retry, over the same Remote (it reconnects), sends only what the
    // server lacks: not what arrived before the kill.
    let retry = remote.put_result(&a.store, &a.map, &key, &result).unwrap();
    eprintln!(
        "retry: {} of {} blobs, {} bytes",
        retry.sent_blobs, retry.blobs, retry.sent_bytes
    );
    assert!(retry.sent_blobs > 0, "{retry:?}");
    assert!(
        retry.sent_blobs + sent_before <= retry.blobs,
        "the retry sent blobs that had arrived before the kill: {retry:?}, {sent_before} sent before"
    );
    assert!(retry.sent_blobs < retry.blobs, "{retry:?}");

    // Complete now: a hit in a fresh state dir, with the same trees.
    let c = side();
    assert_eq!(
        remote.get_result(&c.store, &c.map, &key).unwrap(),
        Lookup::Hit(result.clone())
    );
    let report = treediff::fsck(&c.store, &[result.artifact.unwrap()]).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
}

#[test]
fn a_server_that_stops_answering_is_an_error_within_seconds() {
    if server("a_server_that_stops_answering").is_none() {
        return;
    }
    let Own { bgd, url, .. } = &own_server();
    let rt = runtime();
    let remote = Remote::connect(rt.handle().clone(), url, "").unwrap();
    let a = side();
    let src = a.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), nonce("stopped")).unwrap();
    let tree = a.capture(&src, CaptureMode::Source);

    // Stopped, not killed: the connection stays open and nothing answers (as
    // with a host gone or a network cut). The HTTP/2 keep-alive notices.
    let pid = nix::unistd::Pid::from_raw(bgd.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let start = Instant::now();
    let result = remote.push_tree(&a.store, &a.map, tree);
    let took = start.elapsed();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let error = result.unwrap_err();
    let message = error.to_string();
    eprintln!("stopped server: failed after {took:?}: {message}");
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert!(
        message.contains(url.as_str()) && message.contains("FindMissingBlobs"),
        "{message}"
    );
}
