//! Against the in-process fake (`fake.rs`): a remote that offers BLAKE3, so
//! nothing is mapped, and ByteStream transfers broken off and resumed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{nonce, runtime, sample_tree, side};
use daemon::manager::build::Outcome;
use daemon::project::CacheKey;
use daemon::remote::digest_map::Kind;
use daemon::remote::{BuildResult, Function, Lookup, Remote, RemoteDigest, RemoteError};
use treediff::capture::CaptureMode;

#[test]
fn a_blake3_remote_takes_the_store_as_it_is_and_broken_streams_resume() {
    let rt = runtime();
    let state = Arc::new(super::fake::State::default());
    let url = super::fake::start(&rt, state.clone());
    let (a, b) = (side(), side());
    let nonce = nonce("blake3");
    let src = sample_tree(a.dir.path(), &nonce);
    let tree = a.capture(&src, CaptureMode::Source);
    let buildtree = a.capture(&src, CaptureMode::Buildtree);

    let remote = Remote::connect(rt.handle().clone(), &url, "").unwrap();
    assert_eq!(remote.function(), Function::Blake3, "BLAKE3 is preferred");

    // The 5 MiB file's upload breaks off after 2 MiB; the client asks where the
    // server is (QueryWriteStatus) and goes on from there.
    state.fail_write_at.store(2 << 20, Ordering::SeqCst);
    let pushed = remote.push_tree(&a.store, &a.map, tree).unwrap();
    assert_eq!(
        pushed.roots[0],
        RemoteDigest::from_local(tree),
        "no mapping"
    );
    assert_eq!(state.queries.load(Ordering::SeqCst), 1);
    let big = treediff::Digest::of(&std::fs::read(src.join("big.bin")).unwrap());
    assert_eq!(
        state.written.load(Ordering::SeqCst),
        big.size(),
        "resumed, not restarted: every byte sent once"
    );
    assert_eq!(remote.stats().bytestream_writes, 2);
    // Directory nodes are the store's own bytes; the digest table stays empty.
    let root_bytes = a.store.read(&tree).unwrap();
    assert_eq!(
        state.blob(&tree.hex(), tree.size()).as_deref(),
        Some(root_bytes.bytes())
    );
    assert_eq!(a.map.sha256_of(Kind::Dir, tree).unwrap(), None);
    assert_eq!(
        remote.push_tree(&a.store, &a.map, tree).unwrap().sent_blobs,
        0
    );

    // The read breaks off after 1 MiB and resumes at the offset reached.
    state.fail_read_at.store(1 << 20, Ordering::SeqCst);
    assert_eq!(remote.pull_local(&b.store, &b.map, tree).unwrap(), tree);
    let offsets = state.read_offsets.lock().unwrap().clone();
    assert_eq!(offsets.len(), 2, "{offsets:?}");
    assert_eq!(offsets[0], 0);
    assert!(offsets[1] >= 1 << 20, "{offsets:?}");
    assert!(
        treediff::fsck(&b.store, &[tree])
            .unwrap()
            .problems
            .is_empty()
    );

    // Build results, also in BLAKE3 space.
    let key = CacheKey::parse(&nonce).unwrap();
    let result = BuildResult {
        outcome: Outcome::Success,
        artifact: Some(tree),
        buildtree: Some(buildtree),
        log: Some(big),
        failure: None,
        sources: None,
        info: Default::default(),
    };
    let before = state.blob_count();
    remote.put_result(&a.store, &a.map, &key, &result).unwrap();
    assert!(
        state.blob_count() > before,
        "the buildtree's nodes, the Action and Command"
    );
    let c = side();
    assert_eq!(
        remote.get_result(&c.store, &c.map, &key).unwrap(),
        Lookup::Hit(result)
    );
}

/// The pipelined push (several stages on their own threads): every blob is
/// stored once, each directory only after all of its children, even across
/// `FindMissingBlobs` chunks (20,000 digests) and with a directory node too large
/// for a batch streamed while a batch of its files is being filled; a second push
/// asks once per chunk and sends nothing.
#[test]
fn a_push_stores_children_before_parents_and_nothing_twice() {
    let rt = runtime();
    let state = Arc::new(super::fake::State::default());
    let url = super::fake::start(&rt, state.clone());
    let a = side();
    let nonce = nonce("order");
    let src = a.dir.path().join("src");
    // 14,000 files in one directory: its node is over the fake's 1 MiB batch limit.
    let wide = src.join("wide");
    std::fs::create_dir_all(&wide).unwrap();
    for i in 0..14_000 {
        std::fs::write(wide.join(format!("f{i:05}")), format!("{nonce} wide {i}\n")).unwrap();
    }
    // 9,000 more in nested directories, some of 8 KiB so that batches fill up.
    for d in 0..30 {
        let dir = src.join(format!("d{d:02}/sub{}", d % 3));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..300 {
            let mut content = format!("{nonce} {d} {f}\n").into_bytes();
            if f % 10 == 0 {
                content.resize(8 << 10, b'.');
            }
            std::fs::write(dir.join(format!("f{f}")), content).unwrap();
        }
    }
    let tree = a.capture(&src, CaptureMode::Source);
    let wide_node = match treediff::Dir::read(&a.store, tree, "")
        .unwrap()
        .entries()
        .iter()
        .find(|e| e.name == "wide")
        .map(|e| e.node.clone())
    {
        Some(treediff::Node::Dir { digest }) => digest,
        other => panic!("no wide directory: {other:?}"),
    };
    assert!(
        wide_node.size() > super::fake::BATCH_LIMIT as u64,
        "{wide_node}"
    );

    let remote = Remote::connect(rt.handle().clone(), &url, "").unwrap();
    let pushed = remote.push_tree(&a.store, &a.map, tree).unwrap();
    let stats = remote.stats();
    assert_eq!(pushed.blobs, 23_000 + 30 + 30 + 1 + 1, "{pushed:?}");
    assert_eq!(pushed.sent_blobs, pushed.blobs, "{pushed:?}");
    assert_eq!(stats.find_missing_calls, 2, "{stats:?}");
    assert!(stats.batch_update_calls > 2, "{stats:?}");
    assert_eq!(stats.bytestream_writes, 1, "the wide node: {stats:?}");

    let arrivals = state.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len() as u64, pushed.blobs, "each blob stored once");
    let at: std::collections::HashMap<_, _> = arrivals
        .iter()
        .enumerate()
        .map(|(i, key)| (key.clone(), i))
        .collect();
    assert_eq!(at.len(), arrivals.len(), "each blob stored once");
    let pos = |d: treediff::Digest| at[&(d.hex(), d.size() as i64)];
    let mut dirs = vec![tree];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in treediff::Dir::read(&a.store, dir, "").unwrap().entries() {
            let child = match &entry.node {
                treediff::Node::File { digest, .. } => *digest,
                treediff::Node::Dir { digest } => {
                    dirs.push(*digest);
                    *digest
                }
                treediff::Node::Symlink { .. } => continue,
            };
            assert!(
                pos(child) < pos(dir),
                "{child} ({}) arrived after its parent {dir}",
                entry.name
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        pushed.blobs - 1,
        "every file and directory but the root"
    );

    let before = remote.stats();
    let again = remote.push_tree(&a.store, &a.map, tree).unwrap();
    let after = remote.stats();
    assert_eq!(again.sent_blobs, 0, "{again:?}");
    assert_eq!(after.find_missing_calls - before.find_missing_calls, 2);
    assert_eq!(after.batch_update_calls, before.batch_update_calls);
    assert_eq!(after.bytestream_writes, before.bytestream_writes);

    // A blob gone from the store fails a push to an empty server early, while
    // the planner is still at work: the store's error comes back, and no stage is
    // left waiting on another.
    let empty = Arc::new(super::fake::State::default());
    let other = Remote::connect(rt.handle().clone(), &super::fake::start(&rt, empty), "").unwrap();
    let lost = treediff::Digest::of(format!("{nonce} 0 1\n").as_bytes());
    std::fs::remove_file(a.store.blob_path(&lost)).unwrap();
    let err = other.push_tree(&a.store, &a.map, tree).unwrap_err();
    assert!(matches!(err, RemoteError::Store(_)), "{err}");
    assert!(err.to_string().contains(&lost.hex()), "{err}");
}
