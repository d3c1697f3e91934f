//! What a remote claims costs a pull bounded memory and disk (against the
//! in-process fake): a blob larger than the daemon takes is refused before
//! anything is fetched, and a large one is read into the store as it arrives
//! and cut off once it sends more than it claimed, so it is never whole in
//! memory. Run in a process of its own (this test binary again), whose peak
//! memory then measures the pull alone.

use std::process::Command;
use std::sync::Arc;

use daemon::remote::{Remote, RemoteError};
use treediff::{Digest, Dir, Entry, Node};

use super::{runtime, side};

/// Set in the process that pulls.
const CHILD: &str = "WS_CLAIMS_TEST_CHILD";

/// The size the lying remote claims for its blob.
const CLAIMED: u64 = 512 << 20;

/// A directory node holding one file `name` of content `digest`, as the fake
/// holds it (in BLAKE3 space a node is the store's own bytes); its digest.
fn node_with(state: &super::fake::State, name: &str, digest: Digest) -> Digest {
    let dir = Dir::new(
        vec![Entry {
            name: name.to_owned(),
            node: Node::File {
                digest,
                executable: false,
            },
            props: None,
        }],
        None,
    )
    .unwrap();
    let put = state.put(dir.encode());
    assert_eq!(put.hash, dir.digest().hex());
    dir.digest()
}

/// This process's peak resident memory, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[test]
fn a_remote_that_claims_huge_or_endless_blobs_costs_bounded_memory() {
    const NAME: &str = "claims::a_remote_that_claims_huge_or_endless_blobs_costs_bounded_memory";
    if std::env::var_os(CHILD).is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let rt = runtime();
    let state = Arc::new(super::fake::State::default());
    let url = super::fake::start(&rt, state.clone());
    let remote = Remote::connect(rt.handle().clone(), &url, "").unwrap();
    let b = side();

    // A blob over the limit: refused before anything is asked for.
    let huge = Digest::from_parts([7; 32], 100 << 30);
    let tree = node_with(&state, "huge", huge);
    let err = remote.pull_local(&b.store, &b.map, tree).unwrap_err();
    assert!(matches!(err, RemoteError::TooLarge { .. }), "{err}");
    assert!(
        err.to_string().contains("claims 107374182400 bytes"),
        "{err}"
    );
    let small = remote.with_max_blob(1 << 20);
    let err = small
        .pull_local(
            &b.store,
            &b.map,
            node_with(&state, "m", Digest::from_parts([8; 32], 2 << 20)),
        )
        .unwrap_err();
    assert!(matches!(err, RemoteError::TooLarge { .. }), "{err}");

    // A blob that never ends: written to the store as it comes, cut off past
    // its claimed size, and never held whole.
    let remote = Remote::connect(rt.handle().clone(), &url, "").unwrap();
    let endless = Digest::from_parts([9; 32], CLAIMED);
    state.claim_endless(endless.to_proto());
    let before = peak_rss();
    let tree = node_with(&state, "endless", endless);
    let err = remote.pull_local(&b.store, &b.map, tree).unwrap_err();
    let after = peak_rss();
    println!(
        "peak RSS {} MiB before the pull, {} MiB after",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + (128 << 20),
        "a pull of a {} MiB blob took the peak RSS from {} MiB to {} MiB",
        CLAIMED >> 20,
        before >> 20,
        after >> 20
    );
    assert!(
        err.to_string()
            .contains("more than its 536870912 bytes came back"),
        "{err}"
    );
    assert!(!b.store.contains(&endless).unwrap());
}
