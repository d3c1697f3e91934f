//! fsck on real stores: clean, corrupt, truncated, missing, invalid, stray.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TestStore, TreeBuilder};
use treediff::{Digest, Problem, fsck};

fn writable(path: &std::path::Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn two_trees_sharing_a_blob(t: &TestStore) -> (Digest, Digest, Digest) {
    let a = TreeBuilder::new()
        .file("x/shared.txt", "shared")
        .file("a", "only a")
        .build(&t.store);
    let b = TreeBuilder::new()
        .file("y/shared.txt", "shared")
        .build(&t.store);
    (a, b, Digest::of(b"shared"))
}

#[test]
fn clean_store_has_no_problems() {
    let t = TestStore::new();
    let (a, b, _) = two_trees_sharing_a_blob(&t);
    let report = fsck(&t.store, &[a, b]).unwrap();
    assert_eq!(report.problems, vec![]);
    assert_eq!(report.trees_checked, 2);
    // 2 blobs, x/ and y/ (the same node), and 2 roots.
    assert_eq!(report.objects_checked, 5, "{report:?}");
}

#[test]
fn flipped_bit_is_reported_once_by_digest() {
    let t = TestStore::new();
    let (a, b, shared) = two_trees_sharing_a_blob(&t);
    let path = t.store.blob_path(&shared);
    writable(&path);
    std::fs::write(&path, "sharEd").unwrap();
    let report = fsck(&t.store, &[a, b]).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let Problem::CorruptObject { hash, .. } = &report.problems[0] else {
        panic!("{:?}", report.problems)
    };
    assert_eq!(hash, &shared.hex());
    assert!(report.problems[0].to_string().contains(&shared.hex()));
}

#[test]
fn missing_blob_is_reported_once_with_a_path() {
    let t = TestStore::new();
    let (a, b, shared) = two_trees_sharing_a_blob(&t);
    std::fs::remove_file(t.store.blob_path(&shared)).unwrap();
    let report = fsck(&t.store, &[a, b]).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let Problem::MissingBlob {
        digest, tree_path, ..
    } = &report.problems[0]
    else {
        panic!()
    };
    assert_eq!(digest, &shared.to_string());
    assert!(tree_path.ends_with("shared.txt"));
}

#[test]
fn truncated_blob_is_reported() {
    let t = TestStore::new();
    let (a, _, shared) = two_trees_sharing_a_blob(&t);
    let path = t.store.blob_path(&shared);
    writable(&path);
    std::fs::write(&path, "sha").unwrap();
    let report = fsck(&t.store, &[a]).unwrap();
    // The content no longer matches the name: one problem, the corrupt object.
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(matches!(report.problems[0], Problem::CorruptObject { .. }));
}

#[test]
fn missing_subtree_and_invalid_node_are_reported() {
    use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
    use prost::Message;
    let t = TestStore::new();
    let a = TreeBuilder::new().file("sub/f", "f").build(&t.store);
    let sub = TreeBuilder::new().file("f", "f").build(&t.store);
    std::fs::remove_file(t.store.blob_path(&sub)).unwrap();
    // A node whose entries are unsorted: valid protobuf, invalid tree.
    let bad = reapi::Directory {
        symlinks: vec![
            reapi::SymlinkNode {
                name: "z".into(),
                target: "t".into(),
                node_properties: None,
            },
            reapi::SymlinkNode {
                name: "a".into(),
                target: "t".into(),
                node_properties: None,
            },
        ],
        ..Default::default()
    };
    let txn = t.store.begin().unwrap();
    let bad = txn.put(&bad.encode_to_vec()).unwrap();
    txn.commit().unwrap();
    let report = fsck(&t.store, &[a, bad]).unwrap();
    let text: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(report.problems.len(), 2, "{text:?}");
    assert!(
        text.iter()
            .any(|p| p.contains(&sub.to_string()) && p.contains("at sub")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains(&bad.to_string()) && p.contains("unsorted")),
        "{text:?}"
    );
}

#[test]
fn stray_file_is_reported() {
    let t = TestStore::new();
    std::fs::write(t.store.root().join("blobs/00/not-an-object"), "x").unwrap();
    let report = fsck(&t.store, &[]).unwrap();
    assert!(
        matches!(&report.problems[..], [Problem::StrayFile { .. }]),
        "{:?}",
        report.problems
    );
}
