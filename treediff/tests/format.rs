//! Pinned digests of small known trees: the encoding in docs/format.md must not drift.
//! If one of these changes, every stored tree changes its name: that is a format
//! change, which needs a new format version, not a new pin.

mod common;

use common::{TestStore, TreeBuilder};
use treediff::{Digest, Dir, Entry, Mtime, Node, Props};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn empty_tree() {
    let t = TestStore::new();
    let digest = TreeBuilder::new().build(&t.store);
    assert_eq!(
        digest.to_string(),
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262/0"
    );
}

#[test]
fn one_file() {
    let t = TestStore::new();
    let digest = TreeBuilder::new()
        .file("hello.txt", "hello\n")
        .build(&t.store);
    let bytes = t.store.read(&digest).unwrap().into_bytes();
    assert_eq!(hex(&bytes), PINNED_ONE_FILE_BYTES);
    assert_eq!(digest.to_string(), PINNED_ONE_FILE);
}

#[test]
fn file_exec_symlink_and_subdir() {
    let t = TestStore::new();
    let digest = TreeBuilder::new()
        .file("README", "read me\n")
        .exec("bin/run", "#!/bin/sh\n")
        .symlink("latest", "bin/run")
        .dir("empty")
        .build(&t.store);
    assert_eq!(digest.to_string(), PINNED_MIXED);
}

#[test]
fn buildtree_node_with_properties() {
    let mtime = Some(Mtime {
        seconds: 1_700_000_000,
        nanos: 500_000_000,
    });
    let file = Entry {
        name: "main.o".into(),
        node: Node::File {
            digest: Digest::of(b"object"),
            executable: false,
        },
        props: Some(Props {
            mtime,
            unix_mode: Some(0o644),
        }),
    };
    let dir = Dir::new(
        vec![file],
        Some(Props {
            mtime,
            unix_mode: Some(0o755),
        }),
    )
    .unwrap();
    assert_eq!(dir.digest().to_string(), PINNED_BUILDTREE);
}

const PINNED_ONE_FILE_BYTES: &str = "0a510a0968656c6c6f2e74787412440a40386534633763316239396462666435306537613935313835666561643565653134343866613930346132666464373738656166356632646266643632396139391006";
const PINNED_ONE_FILE: &str = "6f98240dd151f51fc7375f2d52eede5ab55be9d7c57cf5886777dbd4ffec87de/83";
const PINNED_MIXED: &str = "d8f8785de84d6ffe546e3f76e8c2bd75237eef99d21ed74faaf495dd2dd0f305/253";
const PINNED_BUILDTREE: &str =
    "f38ab3c8cebabeababa7c483f84775fdb2d9452d04fdbe63582fb74b825d929b/122";
