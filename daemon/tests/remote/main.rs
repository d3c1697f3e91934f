//! The remote cache client against a real REAPI server: BuildGrid, which
//! `.ci/run` starts and names in `WS_TEST_REAPI_URL` (its disk CAS in
//! `WS_TEST_REAPI_CAS`). Without a server these tests skip with a note, unless
//! `WS_TEST_REQUIRE_REAPI=1` (set by `.ci/run`), where they fail. By hand:
//!
//! ```sh
//! .ci/buildgrid/install.sh /var/tmp/ws-ci-buildgrid-venv
//! .ci/buildgrid/start.sh /tmp/bgd 50051
//! WS_TEST_REAPI_URL=grpc://127.0.0.1:50051 WS_TEST_REAPI_CAS=/tmp/bgd/cas/cas/objects \
//!     cargo test -p daemon --test remote
//! .ci/buildgrid/stop.sh /tmp/bgd
//! ```
//!
//! What BuildGrid cannot show (a BLAKE3 remote, resumed ByteStream transfers)
//! is tested against an in-process fake server (`fake.rs`, `blake3_remote.rs`),
//! which always runs.

mod bgd;
mod blake3_remote;
mod builds;
mod claims;
mod fake;
mod killed;
mod producers;
mod tls;

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
#[path = "../support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use daemon::db::Db;
use daemon::manager::build::Outcome;
use daemon::project::CacheKey;
use daemon::remote::digest_map::Kind;
use daemon::remote::{BuildResult, DigestMap, Function, Lookup, Remote, RemoteDigest, RemoteError};
use treediff::capture::{CaptureMode, CaptureOptions};
use treediff::{Digest, Store};

/// The value of `var`, or `None` (the test skips with a note) when it is unset,
/// which `WS_TEST_REQUIRE_REAPI=1` turns into a failure.
fn required_env(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            assert_ne!(
                std::env::var("WS_TEST_REQUIRE_REAPI").as_deref(),
                Ok("1"),
                "{test} needs {var} (a BuildGrid, see .ci/buildgrid/start.sh), and WS_TEST_REQUIRE_REAPI=1 forbids skipping it"
            );
            eprintln!("skipping {test}: {var} is not set (see .ci/buildgrid/start.sh)");
            None
        }
    }
}

/// The server's URL.
fn server(test: &str) -> Option<String> {
    required_env("WS_TEST_REAPI_URL", test)
}

/// The server's disk CAS (`objects/<2 hex>/<62 hex>`), for tests that damage it.
fn server_cas(test: &str) -> Option<PathBuf> {
    required_env("WS_TEST_REAPI_CAS", test).map(PathBuf::from)
}

fn object_path(cas: &Path, digest: RemoteDigest) -> PathBuf {
    let hex = digest.hex();
    cas.join(&hex[..2]).join(&hex[2..])
}

/// A state directory: a store and a database with its digest table.
struct Side {
    dir: tempfile::TempDir,
    store: Store,
    map: DigestMap,
}

fn side() -> Side {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("db")).unwrap());
    let store = Store::open(dir.path()).unwrap();
    Side {
        dir,
        store,
        map: DigestMap::new(db),
    }
}

impl Side {
    /// The number of blobs in the store.
    fn blobs(&self) -> usize {
        let mut n = 0;
        for shard in std::fs::read_dir(self.store.root().join("blobs")).unwrap() {
            n += std::fs::read_dir(shard.unwrap().path()).unwrap().count();
        }
        n
    }

    fn capture(&self, root: &Path, mode: CaptureMode) -> Digest {
        let options = CaptureOptions {
            mode,
            ..Default::default()
        };
        treediff::import(&self.store, root, &options).unwrap().0
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Different in every run and test, so that blobs another test (or an earlier
/// run against the same server) pushed do not make this one's "missing".
fn nonce(test: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut h = blake3::Hasher::new();
    h.update(test.as_bytes());
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.finalize().to_hex().to_string()
}

/// Files (one executable), a symlink, empty directories, and a file over
/// BuildGrid's 4 MiB batch limit, all with content unique to `nonce`.
fn sample_tree(root: &Path, nonce: &str) -> PathBuf {
    let dir = root.join("src");
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::create_dir_all(dir.join("sub/also-empty")).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("README"), format!("read me {nonce}\n")).unwrap();
    std::fs::write(dir.join("sub/a.c"), format!("int a; /* {nonce} */\n")).unwrap();
    std::fs::write(
        dir.join("sub/deeper/b.c"),
        format!("int b; /* {nonce} */\n"),
    )
    .unwrap();
    // Equal content twice: one blob.
    std::fs::write(dir.join("sub/copy.c"), format!("int a; /* {nonce} */\n")).unwrap();
    std::fs::write(dir.join("bin/run"), format!("#!/bin/sh\necho {nonce}\n")).unwrap();
    std::fs::set_permissions(dir.join("bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("bin/run", dir.join("latest")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("absolute")).unwrap();
    let mut big = Vec::with_capacity(5 << 20);
    let mut i = 0u64;
    while big.len() < (5 << 20) + 3 {
        big.extend_from_slice(blake3::hash(format!("{nonce}{i}").as_bytes()).as_bytes());
        i += 1;
    }
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    dir
}

#[test]
fn push_then_pull_round_trips_between_two_state_dirs() {
    let Some(url) = server("push_then_pull_round_trips") else {
        return;
    };
    let rt = runtime();
    let (a, b) = (side(), side());
    let src = sample_tree(a.dir.path(), &nonce("round_trip"));
    let tree = a.capture(&src, CaptureMode::Source);
    let buildtree = a.capture(&src, CaptureMode::Buildtree);
    assert_ne!(tree, buildtree);

    let remote = Remote::connect(rt.handle().clone(), &url, "").unwrap();
    assert_eq!(
        remote.function(),
        Function::Sha256,
        "BuildGrid offers SHA-256 only"
    );
    let before = remote.stats();
    let pushed = remote.push_tree(&a.store, &a.map, tree).unwrap();
    let after = remote.stats();
    // 6 files (5 distinct contents) and 6 directories (5 distinct: two are the
    // empty one, which is the empty blob and never missing on BuildGrid).
    assert_eq!(pushed.blobs, 5 + 5, "{pushed:?}");
    assert!(pushed.sent_blobs >= pushed.blobs - 1, "{pushed:?}");
    assert!(pushed.sent_bytes > 5 << 20);
    assert_eq!(
        after.bytestream_writes - before.bytestream_writes,
        1,
        "the big file"
    );
    assert_eq!(after.find_missing_calls - before.find_missing_calls, 1);
    eprintln!("first push: {pushed:?}, calls {:?}", diff(&before, &after));

    // A second push, also over a new connection, sends nothing.
    for remote in [
        &remote,
        &Remote::connect(rt.handle().clone(), &url, "main").unwrap(),
    ] {
        let before = remote.stats();
        let again = remote.push_tree(&a.store, &a.map, tree).unwrap();
        let after = remote.stats();
        assert_eq!((again.sent_blobs, again.sent_bytes), (0, 0), "{again:?}");
        assert_eq!(again.roots, pushed.roots);
        assert_eq!(after.batch_update_calls, before.batch_update_calls);
        assert_eq!(after.bytestream_writes, before.bytestream_writes);
        assert_eq!(after.bytes_sent, before.bytes_sent);
    }

    // The buildtree shares every content blob: only its directories are new
    // (the two empty ones are one if their mtimes are equal).
    let pushed_buildtree = remote.push_tree(&a.store, &a.map, buildtree).unwrap();
    assert!(
        matches!(pushed_buildtree.sent_blobs, 5 | 6),
        "{pushed_buildtree:?}"
    );

    // Pull into a fresh state dir: the same BLAKE3 trees, complete.
    let before = remote.stats();
    let got = remote
        .pull_tree(&b.store, &b.map, pushed.roots[0], Some(tree))
        .unwrap();
    assert_eq!(got, tree);
    let after = remote.stats();
    assert_eq!(
        after.bytestream_reads - before.bytestream_reads,
        1,
        "the big file"
    );
    let got = remote
        .pull_tree(&b.store, &b.map, pushed_buildtree.roots[0], None)
        .unwrap();
    assert_eq!(got, buildtree, "mtimes and modes round-trip");
    let report = treediff::fsck(&b.store, &[tree, buildtree]).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");

    // Pulled, the tree is known locally: a pull by local digest fetches nothing,
    // and a push from this side sends nothing.
    let before = remote.stats();
    assert_eq!(remote.pull_local(&b.store, &b.map, tree).unwrap(), tree);
    let again = remote.push_tree(&b.store, &b.map, tree).unwrap();
    let after = remote.stats();
    assert_eq!(after.blobs_received, before.blobs_received);
    assert_eq!(again.sent_blobs, 0);
    assert_eq!(
        b.map.sha256_of(Kind::Dir, tree).unwrap(),
        Some(pushed.roots[0])
    );

    // A third side knows no SHA-256 name for the tree.
    let c = side();
    let err = remote.pull_local(&c.store, &c.map, tree).unwrap_err();
    assert!(matches!(err, RemoteError::Unmapped { .. }), "{err}");
}

fn diff(a: &daemon::remote::RemoteStats, b: &daemon::remote::RemoteStats) -> String {
    format!(
        "find_missing {} batch_update {} bytestream_writes {} sent {} blobs / {} bytes",
        b.find_missing_calls - a.find_missing_calls,
        b.batch_update_calls - a.batch_update_calls,
        b.bytestream_writes - a.bytestream_writes,
        b.blobs_sent - a.blobs_sent,
        b.bytes_sent - a.bytes_sent
    )
}

#[test]
fn a_corrupt_blob_on_the_server_is_found_and_nothing_is_stored() {
    let (Some(url), Some(cas)) = (server("a_corrupt_blob"), server_cas("a_corrupt_blob")) else {
        return;
    };
    let rt = runtime();
    let (a, b) = (side(), side());
    let nonce = nonce("corrupt");
    let src = a.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("good.txt"), format!("good {nonce}\n")).unwrap();
    std::fs::write(src.join("sub/bad.txt"), format!("bad {nonce}\n")).unwrap();
    let tree = a.capture(&src, CaptureMode::Source);
    let remote = Remote::connect(rt.handle().clone(), &url, "").unwrap();
    let pushed = remote.push_tree(&a.store, &a.map, tree).unwrap();
    let bad = Digest::of(format!("bad {nonce}\n").as_bytes());
    let bad_sha = a.map.sha256_of(Kind::File, bad).unwrap().unwrap();
    let path = object_path(&cas, bad_sha);
    assert!(path.exists(), "BuildGrid keeps blobs at {}", path.display());
    // Same length, other bytes: only the hash can tell.
    let garbage = vec![b'x'; bad_sha.size as usize];
    std::fs::write(&path, garbage).unwrap();

    let before = b.blobs();
    let err = remote
        .pull_tree(&b.store, &b.map, pushed.roots[0], Some(tree))
        .unwrap_err();
    assert!(matches!(err, RemoteError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    eprintln!("corrupt: {message}");
    assert!(
        message.contains(&bad_sha.to_string()) && message.contains(&url),
        "{message}"
    );
    assert_eq!(b.blobs(), before, "nothing entered the store");
    assert_eq!(b.map.blake3_of(Kind::Dir, pushed.roots[0]).unwrap(), None);

    // As a build result, the damaged entry is a miss, not an error.
    let key = CacheKey::parse(&nonce).unwrap();
    remote
        .put_result(
            &a.store,
            &a.map,
            &key,
            &BuildResult {
                outcome: Outcome::Success,
                artifact: Some(tree),
                buildtree: None,
                log: None,
                failure: None,
                sources: None,
                info: Default::default(),
            },
        )
        .unwrap();
    match remote.get_result(&b.store, &b.map, &key).unwrap() {
        Lookup::Miss(reason) => assert!(reason.contains(&bad_sha.to_string()), "{reason}"),
        hit => panic!("a corrupt entry was a hit: {hit:?}"),
    }
    assert_eq!(b.blobs(), before);
}

#[test]
fn action_results_round_trip_and_vanished_blobs_are_a_miss() {
    let Some(url) = server("action_results_round_trip") else {
        return;
    };
    let rt = runtime();
    let (a, b) = (side(), side());
    let nonce = nonce("action");
    let src = sample_tree(a.dir.path(), &nonce);
    let artifact = a.capture(&src, CaptureMode::Source);
    let buildtree = a.capture(&src, CaptureMode::Buildtree);
    let log = {
        let txn = a.store.begin().unwrap();
        let log = txn.put(format!("build log {nonce}\n").as_bytes()).unwrap();
        txn.commit().unwrap();
        log
    };
    let remote = Remote::connect(rt.handle().clone(), &url, "").unwrap();
    let key = CacheKey::parse(&nonce).unwrap();
    match remote.get_result(&b.store, &b.map, &key).unwrap() {
        Lookup::Miss(reason) => assert!(reason.contains("no entry"), "{reason}"),
        hit => panic!("{hit:?}"),
    }
    let result = BuildResult {
        outcome: Outcome::Failed,
        artifact: None,
        buildtree: Some(buildtree),
        log: Some(log),
        failure: Some("make: *** [all] Error 2".into()),
        sources: None,
        info: Default::default(),
    };
    remote.put_result(&a.store, &a.map, &key, &result).unwrap();
    assert_eq!(
        remote.get_result(&b.store, &b.map, &key).unwrap(),
        Lookup::Hit(result.clone())
    );
    assert!(
        treediff::fsck(&b.store, &[buildtree])
            .unwrap()
            .problems
            .is_empty()
    );
    assert_eq!(
        b.store.read(&log).unwrap().bytes(),
        format!("build log {nonce}\n").as_bytes()
    );

    // A success under another key; then one of its blobs vanishes from the server.
    let Some(cas) = server_cas("action_results_round_trip") else {
        return;
    };
    let key2 = CacheKey::parse(blake3::hash(nonce.as_bytes()).to_hex().as_str()).unwrap();
    let success = BuildResult {
        outcome: Outcome::Success,
        artifact: Some(artifact),
        buildtree: Some(buildtree),
        log: Some(log),
        failure: None,
        sources: None,
        info: Default::default(),
    };
    remote
        .put_result(&a.store, &a.map, &key2, &success)
        .unwrap();
    let c = side();
    let readme = Digest::of(format!("read me {nonce}\n").as_bytes());
    let readme_sha = a.map.sha256_of(Kind::File, readme).unwrap().unwrap();
    std::fs::remove_file(object_path(&cas, readme_sha)).unwrap();
    match remote.get_result(&c.store, &c.map, &key2).unwrap() {
        Lookup::Miss(reason) => eprintln!("miss as expected: {reason}"),
        hit => panic!("an entry with a missing blob was a hit: {hit:?}"),
    }
    assert_eq!(c.blobs(), 0, "nothing entered the store");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("grpc://127.0.0.1:{port}");
    let rt = runtime();
    let err = Remote::connect(rt.handle().clone(), &url, "").unwrap_err();
    let message = err.to_string();
    eprintln!("unreachable: {message}");
    for part in [
        url.as_str(),
        "Capabilities.GetCapabilities",
        "UNAVAILABLE",
        "check that the server runs",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    let err = Remote::connect(rt.handle().clone(), "cache:1", "").unwrap_err();
    assert!(
        err.to_string().contains("invalid remote cache URL"),
        "{err}"
    );
}

#[test]
fn an_unknown_instance_is_refused_by_name() {
    let Some(url) = server("an_unknown_instance") else {
        return;
    };
    let rt = runtime();
    let err = Remote::connect(rt.handle().clone(), &url, "nope").unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("INVALID_ARGUMENT") && message.contains("nope"),
        "{message}"
    );
}

#[test]
fn batches_stay_under_the_message_limit() {
    let Some(url) = server("batches_stay_under_the_message_limit") else {
        return;
    };
    // 5,000 blobs of 1 KiB: 5 MB, over BuildGrid's 4 MiB batch and message
    // limits once encoded, so both ways need several batches.
    let rt = runtime();
    let (a, b) = (side(), side());
    let nonce = nonce("batches");
    let src = a.dir.path().join("src");
    for d in 0..10 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..500 {
            let mut content = format!("{nonce} {d} {f} ").into_bytes();
            content.resize(1024, b'.');
            std::fs::write(dir.join(format!("f{f}")), content).unwrap();
        }
    }
    let start = std::time::Instant::now();
    let tree = a.capture(&src, CaptureMode::Source);
    let captured_in = start.elapsed();
    let remote = Remote::connect(rt.handle().clone(), &url, "").unwrap();
    let before = remote.stats();
    let start = std::time::Instant::now();
    let pushed = remote.push_tree(&a.store, &a.map, tree).unwrap();
    let pushed_in = start.elapsed();
    let after = remote.stats();
    assert_eq!(pushed.sent_blobs, 5000 + 11);
    let updates = after.batch_update_calls - before.batch_update_calls;
    assert!(updates >= 2, "{updates} batches");
    let start = std::time::Instant::now();
    assert_eq!(
        remote
            .pull_tree(&b.store, &b.map, pushed.roots[0], Some(tree))
            .unwrap(),
        tree
    );
    let pulled_in = start.elapsed();
    let reads = remote.stats().batch_read_calls - after.batch_read_calls;
    assert!(
        reads >= 3,
        "{reads} batch reads: the directories, then 2+ of contents"
    );
    eprintln!(
        "5,011 blobs: captured in {captured_in:?}, pushed in {pushed_in:?} ({updates} batches), pulled in {pulled_in:?} ({reads} batch reads)"
    );
}

#[test]
fn the_blocking_api_works_from_spawn_blocking() {
    // As the daemon will call it: from a blocking thread of its own runtime.
    let rt = runtime();
    let handle = rt.handle().clone();
    let url = server("the_blocking_api_works_from_spawn_blocking")
        .unwrap_or_else(|| "grpc://127.0.0.1:1".to_owned());
    let result = rt
        .block_on(rt.spawn_blocking(move || {
            Remote::connect(handle, &url, "").map(|remote| remote.function())
        }))
        .unwrap();
    match result {
        Ok(function) => assert_eq!(function, Function::Sha256),
        Err(err) => assert!(err.to_string().contains("UNAVAILABLE"), "{err}"),
    }
}
