//! The store's transactions and verified reads, on real files.

mod common;

use common::{TestStore, TreeBuilder};
use treediff::{Digest, Dir, StoreError, TreeError};

#[test]
fn committed_blob_reads_back_verified_with_the_fixed_mtime() {
    let t = TestStore::new();
    let txn = t.store.begin().unwrap();
    let digest = txn.put(b"hello\n").unwrap();
    assert!(
        !t.store.contains(&digest).unwrap(),
        "staged objects are not visible before commit"
    );
    txn.commit().unwrap();
    assert_eq!(t.store.read(&digest).unwrap().bytes(), b"hello\n");
    let meta = std::fs::metadata(t.store.blob_path(&digest)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mtime(), treediff::store::OBJECT_MTIME.seconds);
    assert_eq!(meta.mode() & 0o777, 0o444);
}

#[test]
fn aborted_transaction_publishes_nothing() {
    let t = TestStore::new();
    let txn = t.store.begin().unwrap();
    let digest = txn.put(b"never published").unwrap();
    drop(txn);
    assert!(!t.store.contains(&digest).unwrap());
    assert!(
        std::fs::read_dir(t.store.root().join("staging"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn putting_existing_content_again_is_a_no_op() {
    let t = TestStore::new();
    let txn = t.store.begin().unwrap();
    let a = txn.put(b"same").unwrap();
    let b = txn.put(b"same").unwrap();
    assert_eq!(a, b);
    assert_eq!(txn.staged_count(), 1);
    txn.commit().unwrap();
    let txn = t.store.begin().unwrap();
    txn.put(b"same").unwrap();
    assert_eq!(txn.staged_count(), 0, "already in the store");
    txn.commit().unwrap();
}

#[test]
fn streamed_blob_matches_hashed_blob() {
    let t = TestStore::new();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let txn = t.store.begin().unwrap();
    let digest = txn.put_stream(&mut content.as_slice()).unwrap();
    txn.commit().unwrap();
    assert_eq!(digest, Digest::of(&content));
    assert_eq!(t.store.read(&digest).unwrap().bytes(), &content[..]);
}

fn damage(path: &std::path::Path, f: impl FnOnce(&mut Vec<u8>)) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn flipped_bit_is_detected_and_named() {
    let t = TestStore::new();
    let txn = t.store.begin().unwrap();
    let digest = txn.put(b"precious bytes").unwrap();
    txn.commit().unwrap();
    damage(&t.store.blob_path(&digest), |b| b[3] ^= 0x10);
    let err = t.store.read(&digest).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&digest.to_string()) && msg.contains("hashes to"),
        "{msg}"
    );
}

#[test]
fn truncated_blob_is_detected_and_named() {
    let t = TestStore::new();
    let txn = t.store.begin().unwrap();
    let digest = txn.put(b"precious bytes").unwrap();
    txn.commit().unwrap();
    damage(&t.store.blob_path(&digest), |b| b.truncate(5));
    let msg = t.store.read(&digest).unwrap_err().to_string();
    assert!(
        msg.contains(&digest.to_string()) && msg.contains("5 bytes"),
        "{msg}"
    );
}

#[test]
fn missing_blob_is_named() {
    let t = TestStore::new();
    let digest = Digest::of(b"never stored");
    let err = t.store.read(&digest).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }));
    assert!(err.to_string().contains(&digest.to_string()));
}

#[test]
fn tree_nodes_round_trip_through_the_store() {
    let t = TestStore::new();
    let root = TreeBuilder::new()
        .file("a/b.txt", "b")
        .exec("run", "#!/bin/sh\n")
        .symlink("l", "a/b.txt")
        .dir("e")
        .build(&t.store);
    let dir = Dir::read(&t.store, root, "").unwrap();
    let names: Vec<_> = dir.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "e", "l", "run"]);
}

/// A content-addressed tree cannot contain itself: a tampered node that claims to is
/// caught by verification before it is ever decoded.
#[test]
fn self_referencing_node_is_reported_corrupt() {
    let t = TestStore::new();
    let root = TreeBuilder::new().file("f", "x").build(&t.store);
    let fake = Dir::new(
        vec![treediff::Entry {
            name: "loop".into(),
            node: treediff::Node::Dir { digest: root },
            props: None,
        }],
        None,
    )
    .unwrap();
    damage(&t.store.blob_path(&root), |b| *b = fake.encode());
    let err = Dir::read(&t.store, root, "").unwrap_err();
    let TreeError::Store { source, .. } = &err else {
        panic!("{err}")
    };
    assert!(matches!(**source, StoreError::Corrupt { .. }), "{err}");
}
