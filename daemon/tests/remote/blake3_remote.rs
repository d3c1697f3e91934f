//! Against the in-process fake (`fake.rs`): a remote that offers BLAKE3, so
//! nothing is mapped, and ByteStream transfers broken off and resumed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{nonce, runtime, sample_tree, side};
use daemon::manager::build::Outcome;
use daemon::project::CacheKey;
use daemon::remote::digest_map::Kind;
use daemon::remote::{BuildResult, Function, Lookup, Remote, RemoteDigest};
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
