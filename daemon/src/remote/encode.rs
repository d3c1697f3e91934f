//! Tree nodes in SHA-256 space: a local node (a REAPI `Directory` whose digests
//! are BLAKE3) re-encoded with the SHA-256 digests of its files and
//! subdirectories, and back.
//!
//! The message is the same one in both spaces, field for field: names,
//! `is_executable`, symlink targets and the buildtree `node_properties` (mtime and
//! unix_mode on files, symlinks and the directory itself) travel as they are, so
//! a buildtree round-trips with its timestamps and modes. Only the hash strings
//! differ, and both are 64 hex digits: the two encodings have the same length.
//! The remote encoding is canonical too (prost's, fields in order, no defaults);
//! a directory from a remote must be in it, so that it has one name in each space.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;
use treediff::{Digest, Dir, Node};

use super::space::RemoteDigest;

/// The remote encoding of `dir`: each file's digest is `file(content)` and
/// each subdirectory's `dir(node)`, both in remote space.
pub fn to_remote(
    dir: &Dir,
    mut file: impl FnMut(Digest) -> RemoteDigest,
    mut subdir: impl FnMut(Digest) -> RemoteDigest,
) -> Vec<u8> {
    dir.to_proto_with(|node| match node {
        Node::File { digest, .. } => file(*digest).to_proto(),
        Node::Dir { digest } => subdir(*digest).to_proto(),
        Node::Symlink { .. } => unreachable!("symlinks have no digest"),
    })
    .encode_to_vec()
}

/// A directory message from a remote, decoded: its bytes must be its own
/// canonical encoding (else the problem is returned).
pub fn decode_remote(bytes: &[u8]) -> Result<reapi::Directory, String> {
    let proto =
        reapi::Directory::decode(bytes).map_err(|e| format!("not a Directory message: {e}"))?;
    if proto.encode_to_vec() != bytes {
        return Err(
            "not in canonical encoding (unknown fields, default values or fields out of order)"
                .into(),
        );
    }
    Ok(proto)
}

/// The remote digests a directory message refers to: (files, subdirectories).
pub fn children(
    proto: &reapi::Directory,
) -> Result<(Vec<RemoteDigest>, Vec<RemoteDigest>), String> {
    let digest = |d: Option<&reapi::Digest>, name: &str| {
        d.ok_or_else(|| format!("entry {name:?} has no digest"))
            .and_then(|d| RemoteDigest::from_proto(d).map_err(|e| format!("entry {name:?}: {e}")))
    };
    let files = proto
        .files
        .iter()
        .map(|f| digest(f.digest.as_ref(), &f.name))
        .collect::<Result<_, _>>()?;
    let dirs = proto
        .directories
        .iter()
        .map(|d| digest(d.digest.as_ref(), &d.name))
        .collect::<Result<_, _>>()?;
    Ok((files, dirs))
}

/// The local node of a remote directory message, given the local digests of its
/// files and subdirectories: validated as every node read from the store is
/// (names, order, properties, canonical form).
pub fn from_remote(
    proto: &reapi::Directory,
    mut file: impl FnMut(RemoteDigest) -> Result<Digest, String>,
    mut subdir: impl FnMut(RemoteDigest) -> Result<Digest, String>,
) -> Result<Dir, String> {
    let mut local = proto.clone();
    for node in &mut local.files {
        let remote = node_digest(node.digest.as_ref(), &node.name)?;
        node.digest = Some(file(remote)?.to_proto());
    }
    for node in &mut local.directories {
        let remote = node_digest(node.digest.as_ref(), &node.name)?;
        node.digest = Some(subdir(remote)?.to_proto());
    }
    let bytes = local.encode_to_vec();
    Dir::decode(&bytes, Digest::of(&bytes), "").map_err(|e| match e {
        treediff::TreeError::Invalid { problem, .. } => problem,
        other => other.to_string(),
    })
}

fn node_digest(digest: Option<&reapi::Digest>, name: &str) -> Result<RemoteDigest, String> {
    let digest = digest.ok_or_else(|| format!("entry {name:?} has no digest"))?;
    RemoteDigest::from_proto(digest).map_err(|e| format!("entry {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use treediff::{Entry, Mtime, Props};

    use super::*;
    use crate::remote::space::Function;

    fn file(name: &str, content: &[u8], executable: bool) -> Entry {
        Entry {
            name: name.into(),
            node: Node::File {
                digest: Digest::of(content),
                executable,
            },
            props: None,
        }
    }

    /// SHA-256 of contents, and of the re-encoded subdirectories met so far.
    #[derive(Default)]
    struct Sha {
        contents: HashMap<Digest, RemoteDigest>,
        dirs: HashMap<Digest, RemoteDigest>,
    }

    impl Sha {
        fn content(&mut self, bytes: &[u8]) {
            self.contents
                .insert(Digest::of(bytes), Function::Sha256.digest(bytes));
        }

        fn encode(&mut self, dir: &Dir) -> (RemoteDigest, Vec<u8>) {
            let bytes = to_remote(dir, |d| self.contents[&d], |d| self.dirs[&d]);
            let digest = Function::Sha256.digest(&bytes);
            self.dirs.insert(dir.digest(), digest);
            (digest, bytes)
        }
    }

    /// The tree pinned in docs/format.md: `README`, `bin/run` (executable),
    /// `latest` → `bin/run`, an empty dir `empty`.
    fn pinned_tree(sha: &mut Sha) -> (Dir, RemoteDigest, Vec<u8>) {
        sha.content(b"read me\n");
        sha.content(b"#!/bin/sh\n");
        let bin = Dir::new(vec![file("run", b"#!/bin/sh\n", true)], None).unwrap();
        let empty = Dir::default();
        sha.encode(&bin);
        sha.encode(&empty);
        let root = Dir::new(
            vec![
                file("README", b"read me\n", false),
                Entry {
                    name: "bin".into(),
                    node: Node::Dir {
                        digest: bin.digest(),
                    },
                    props: None,
                },
                Entry {
                    name: "latest".into(),
                    node: Node::Symlink {
                        target: "bin/run".into(),
                    },
                    props: None,
                },
                Entry {
                    name: "empty".into(),
                    node: Node::Dir {
                        digest: empty.digest(),
                    },
                    props: None,
                },
            ],
            None,
        )
        .unwrap();
        let (digest, bytes) = sha.encode(&root);
        (root, digest, bytes)
    }

    #[test]
    fn pinned_sha256_digests() {
        let mut sha = Sha::default();
        let (root, digest, bytes) = pinned_tree(&mut sha);
        // The local digest is the one docs/format.md pins.
        assert_eq!(
            root.digest().to_string(),
            "d8f8785de84d6ffe546e3f76e8c2bd75237eef99d21ed74faaf495dd2dd0f305/253"
        );
        // The empty directory is the empty blob in both spaces.
        assert_eq!(
            sha.dirs[&Dir::default().digest()].to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0"
        );
        // Same length in both spaces; the SHA-256 digests pinned (docs/remote.md).
        assert_eq!(bytes.len(), 253);
        assert_eq!(
            digest.to_string(),
            "307c25a35bfb6868684de64f6d1261cccf17c06e2bd5650a16791159c6c07e13/253"
        );
        let bin = Dir::new(vec![file("run", b"#!/bin/sh\n", true)], None).unwrap();
        assert_eq!(
            sha.dirs[&bin.digest()].to_string(),
            "af81248717a6cf201a01e6d1d988682ee54d41917030f96d5a86195ff6b5f056/79"
        );
    }

    #[test]
    fn round_trip_back_to_the_local_node() {
        let mut sha = Sha::default();
        let (root, _, bytes) = pinned_tree(&mut sha);
        let reverse = |map: &HashMap<Digest, RemoteDigest>| -> HashMap<RemoteDigest, Digest> {
            map.iter().map(|(l, r)| (*r, *l)).collect()
        };
        let (contents, dirs) = (reverse(&sha.contents), reverse(&sha.dirs));
        let proto = decode_remote(&bytes).unwrap();
        let (files, subdirs) = children(&proto).unwrap();
        assert_eq!((files.len(), subdirs.len()), (1, 2));
        let back = from_remote(&proto, |r| Ok(contents[&r]), |r| Ok(dirs[&r])).unwrap();
        assert_eq!(back, root);
        assert_eq!(back.digest(), root.digest());
    }

    #[test]
    fn buildtree_properties_travel() {
        let props = Props {
            mtime: Some(Mtime {
                seconds: 1_700_000_000,
                nanos: 500_000_000,
            }),
            unix_mode: Some(0o644),
        };
        let mut entry = file("main.o", b"object", false);
        entry.props = Some(props);
        let dir = Dir::new(
            vec![entry],
            Some(Props {
                unix_mode: Some(0o755),
                ..props
            }),
        )
        .unwrap();
        // The buildtree node pinned in docs/format.md.
        assert_eq!(
            dir.digest().to_string(),
            "f38ab3c8cebabeababa7c483f84775fdb2d9452d04fdbe63582fb74b825d929b/122"
        );
        let sha = Function::Sha256.digest(b"object");
        let bytes = to_remote(&dir, |_| sha, |_| unreachable!());
        let proto = decode_remote(&bytes).unwrap();
        let file = &proto.files[0];
        let node_props = file.node_properties.as_ref().unwrap();
        assert_eq!(node_props.mtime.unwrap().seconds, 1_700_000_000);
        assert_eq!(node_props.unix_mode.unwrap().value, 0o644);
        assert_eq!(
            proto
                .node_properties
                .as_ref()
                .unwrap()
                .unix_mode
                .unwrap()
                .value,
            0o755
        );
        let back = from_remote(&proto, |_| Ok(Digest::of(b"object")), |_| unreachable!()).unwrap();
        assert_eq!(back, dir);
    }

    #[test]
    fn a_non_canonical_or_invalid_message_is_refused() {
        let mut sha = Sha::default();
        let (_, _, mut bytes) = pinned_tree(&mut sha);
        // An unknown field (number 15, varint 1) at the end.
        bytes.extend_from_slice(&[0x78, 0x01]);
        assert!(decode_remote(&bytes).unwrap_err().contains("canonical"));
        // A hostile name is refused when it becomes a local node.
        let proto = reapi::Directory {
            files: vec![reapi::FileNode {
                name: "..".into(),
                digest: Some(Function::Sha256.digest(b"x").to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = from_remote(&proto, |_| Ok(Digest::of(b"x")), |_| unreachable!()).unwrap_err();
        assert!(err.contains(".."), "{err}");
    }
}
