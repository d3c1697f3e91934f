//! Property tests standing in for a fuzzer (cargo-fuzz needs a nightly toolchain, which
//! cannot be installed here): the Directory decoder and digest parser take any input
//! without panicking, and accept only what they can reproduce byte for byte.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use proptest::prelude::*;
use prost::Message;
use treediff::names::validate_name;
use treediff::{Digest, Dir};

fn any_digest() -> Digest {
    Digest::of(b"x")
}

/// Names drawn from an alphabet rich in trouble: dots, slashes, NUL, empties, dupes.
fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("a/b".to_owned()),
        Just("/".to_owned()),
        Just("nul\0".to_owned()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        "[a-c.]{1,3}",
        "\\PC{1,8}",
    ]
}

fn directory() -> impl Strategy<Value = reapi::Directory> {
    let file = (hostile_name(), any::<bool>()).prop_map(|(name, is_executable)| reapi::FileNode {
        name,
        digest: Some(any_digest().to_proto()),
        is_executable,
        node_properties: None,
    });
    let dir = hostile_name().prop_map(|name| reapi::DirectoryNode {
        name,
        digest: Some(any_digest().to_proto()),
    });
    let link = (hostile_name(), "\\PC{0,6}").prop_map(|(name, target)| reapi::SymlinkNode {
        name,
        target,
        node_properties: None,
    });
    (
        prop::collection::vec(file, 0..4),
        prop::collection::vec(dir, 0..4),
        prop::collection::vec(link, 0..3),
    )
        .prop_map(|(files, directories, symlinks)| reapi::Directory {
            files,
            directories,
            symlinks,
            node_properties: None,
        })
}

fn valid(proto: &reapi::Directory) -> bool {
    let mut names: Vec<&String> = Vec::new();
    let lists: [Vec<&String>; 3] = [
        proto.files.iter().map(|f| &f.name).collect(),
        proto.directories.iter().map(|d| &d.name).collect(),
        proto.symlinks.iter().map(|s| &s.name).collect(),
    ];
    for list in &lists {
        if list.windows(2).any(|w| w[0] >= w[1]) {
            return false;
        }
        names.extend(list.iter().copied());
    }
    let unique = names.len() == names.iter().collect::<std::collections::HashSet<_>>().len();
    let targets_ok = proto
        .symlinks
        .iter()
        .all(|s| !s.target.is_empty() && !s.target.contains('\0'));
    unique && targets_ok && names.iter().all(|n| validate_name(n).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes: no panic, and anything accepted re-encodes to the same bytes.
    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(dir) = Dir::decode(&bytes, Digest::of(&bytes), "fuzz") {
            prop_assert_eq!(dir.encode(), bytes);
        }
    }

    /// Structured hostile directories: accepted exactly when every rule holds.
    #[test]
    fn decoder_accepts_exactly_the_valid_directories(proto in directory()) {
        let bytes = proto.encode_to_vec();
        let decoded = Dir::decode(&bytes, Digest::of(&bytes), "fuzz");
        prop_assert_eq!(decoded.is_ok(), valid(&proto), "{:?}: {:?}", proto, decoded.err().map(|e| e.to_string()));
        if let Ok(dir) = decoded {
            prop_assert_eq!(dir.encode(), bytes);
        }
    }

    /// Bit flips in a valid node: no panic; whatever is accepted is canonical.
    #[test]
    fn flipped_bits_never_panic(proto in directory(), flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)) {
        let mut bytes = proto.encode_to_vec();
        if !bytes.is_empty() {
            for (index, bit) in flips {
                let i = index.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
        }
        if let Ok(dir) = Dir::decode(&bytes, Digest::of(&bytes), "fuzz") {
            prop_assert_eq!(dir.encode(), bytes);
        }
    }

    /// Digest text: no panic; what is accepted prints as text that parses back to it.
    #[test]
    fn digest_parsing_round_trips(text in "([0-9a-f]{64}|[0-9a-fA-F]{0,70})/?[0-9x-]{0,22}") {
        if let Ok(digest) = text.parse::<Digest>() {
            prop_assert_eq!(digest.to_string().parse::<Digest>().unwrap(), digest);
        }
    }
}

#[test]
fn unknown_field_is_refused_as_non_canonical() {
    let mut bytes = reapi::Directory::default().encode_to_vec();
    bytes.extend_from_slice(&[0x50, 0x01]); // field 10, varint 1: unknown to Directory
    let err = Dir::decode(&bytes, Digest::of(&bytes), "x").unwrap_err();
    assert!(err.to_string().contains("canonical"), "{err}");
}

#[test]
fn empty_node_properties_are_refused() {
    let proto = reapi::Directory {
        files: vec![reapi::FileNode {
            name: "f".into(),
            digest: Some(any_digest().to_proto()),
            is_executable: false,
            node_properties: Some(reapi::NodeProperties::default()),
        }],
        ..Default::default()
    };
    let bytes = proto.encode_to_vec();
    let err = Dir::decode(&bytes, Digest::of(&bytes), "x").unwrap_err();
    assert!(err.to_string().contains("empty node_properties"), "{err}");
}
