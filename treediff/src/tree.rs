//! Trees: the in-memory form of a REAPI `Directory` node and its canonical encoding.
//!
//! A [`Dir`] holds its entries sorted by name, names unique across files, dirs and
//! symlinks. It encodes to exactly one byte string (prost writes fields in tag order
//! and skips defaults), whose BLAKE3 digest names it. [`Dir::decode`] accepts only
//! that canonical form: it decodes, validates, and checks that encoding again gives
//! the same bytes, so unknown fields, unsorted or duplicate entries, hostile names and
//! empty `node_properties` are all refused. See `docs/format.md`.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::protobuf::{Timestamp, UInt32Value};
use prost::Message;

use crate::digest::Digest;
use crate::names::{self, validate_name};
use crate::store::{Store, StoreError, StoreTxn};
use crate::sys::Mtime;

/// Trees deeper than this are refused: no source or build tree is, and walkers
/// hold one open directory per level.
pub const MAX_DEPTH: usize = 256;

/// The typed `node_properties` of buildtree entries. Source trees have none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Props {
    /// The modification time.
    pub mtime: Option<Mtime>,
    /// The permission bits (at most 0o777: setuid, setgid and sticky are stripped).
    pub unix_mode: Option<u32>,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A regular file with this content.
    File {
        /// The content's digest.
        digest: Digest,
        /// Whether it is executable.
        executable: bool,
    },
    /// A directory, by the digest of its `Directory` message.
    Dir {
        /// The subtree's digest.
        digest: Digest,
    },
    /// A symlink; the target is data and never followed.
    Symlink {
        /// Where it points, as written.
        target: String,
    },
}

impl Node {
    /// "file", "directory" or "symlink", for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::File { .. } => "file",
            Node::Dir { .. } => "directory",
            Node::Symlink { .. } => "symlink",
        }
    }
}

/// One named entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// A single path component (see [`crate::names`]).
    pub name: String,
    /// What it is.
    pub node: Node,
    /// Buildtree properties; `None` in source trees.
    pub props: Option<Props>,
}

/// A directory node: entries sorted by name, and the directory's own properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dir {
    entries: Vec<Entry>,
    /// Buildtree properties of the directory itself; `None` in source trees.
    pub props: Option<Props>,
}

/// A directory node that is not a valid, canonical tree node.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Reading the node from the store failed.
    #[error("cannot read directory {digest} at {}", names::display(path))]
    Store {
        /// The node's digest.
        digest: Digest,
        /// Its path in the tree.
        path: String,
        /// Why (boxed: it is large, and errors travel through every `Result`).
        #[source]
        source: Box<StoreError>,
    },
    /// The node's bytes are not a valid tree node.
    #[error("directory {digest} at {} is invalid: {problem}", names::display(path))]
    Invalid {
        /// The node's digest.
        digest: Digest,
        /// Its path in the tree.
        path: String,
        /// What is wrong, naming the entry.
        problem: String,
    },
    /// The tree nests deeper than [`MAX_DEPTH`].
    #[error("the tree is deeper than {MAX_DEPTH} levels at {path}")]
    TooDeep {
        /// The first path past the limit.
        path: String,
    },
}

impl Dir {
    /// A directory from entries in any order; fails on an invalid or duplicate name.
    pub fn new(mut entries: Vec<Entry>, props: Option<Props>) -> Result<Dir, String> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in entries.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(format!("two entries are named {:?}", pair[0].name));
            }
        }
        for entry in &entries {
            validate_name(&entry.name).map_err(|e| format!("entry {:?}: {e}", entry.name))?;
            check_entry(entry)?;
        }
        check_props(props.as_ref(), "the directory")?;
        Ok(Dir { entries, props })
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The canonical encoding: a REAPI `Directory` message.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto_with(|node| match node {
            Node::File { digest, .. } | Node::Dir { digest } => digest.to_proto(),
            Node::Symlink { .. } => unreachable!("symlinks have no digest"),
        })
        .encode_to_vec()
    }

    /// The node as a REAPI `Directory` message whose file and directory digests are
    /// `digest(node)` (called for files and directories, never symlinks): the same
    /// message in another digest space, such as a SHA-256 remote cache's.
    pub fn to_proto_with(
        &self,
        mut digest: impl FnMut(&Node) -> reapi::Digest,
    ) -> reapi::Directory {
        let mut proto = reapi::Directory {
            node_properties: self.props.map(props_to_proto),
            ..Default::default()
        };
        for entry in &self.entries {
            let node_properties = entry.props.map(props_to_proto);
            let name = entry.name.clone();
            match &entry.node {
                Node::File { executable, .. } => proto.files.push(reapi::FileNode {
                    name,
                    digest: Some(digest(&entry.node)),
                    is_executable: *executable,
                    node_properties,
                }),
                Node::Dir { .. } => proto.directories.push(reapi::DirectoryNode {
                    name,
                    digest: Some(digest(&entry.node)),
                }),
                Node::Symlink { target } => proto.symlinks.push(reapi::SymlinkNode {
                    name,
                    target: target.clone(),
                    node_properties,
                }),
            }
        }
        proto
    }

    /// The digest of the canonical encoding.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }

    /// Decodes and validates a node read from `digest` at tree path `path` (for messages).
    pub fn decode(bytes: &[u8], digest: Digest, path: &str) -> Result<Dir, TreeError> {
        let invalid = |problem: String| TreeError::Invalid {
            digest,
            path: path.to_owned(),
            problem,
        };
        let proto = reapi::Directory::decode(bytes)
            .map_err(|e| invalid(format!("not a Directory message: {e}")))?;
        let mut entries =
            Vec::with_capacity(proto.files.len() + proto.directories.len() + proto.symlinks.len());
        check_sorted(proto.files.iter().map(|f| &f.name), "files").map_err(invalid)?;
        check_sorted(proto.directories.iter().map(|d| &d.name), "directories").map_err(invalid)?;
        check_sorted(proto.symlinks.iter().map(|s| &s.name), "symlinks").map_err(invalid)?;
        for file in &proto.files {
            let digest = entry_digest(file.digest.as_ref(), &file.name).map_err(invalid)?;
            let props =
                props_from_proto(file.node_properties.as_ref(), &file.name).map_err(invalid)?;
            entries.push(Entry {
                name: file.name.clone(),
                node: Node::File {
                    digest,
                    executable: file.is_executable,
                },
                props,
            });
        }
        for dir in &proto.directories {
            let digest = entry_digest(dir.digest.as_ref(), &dir.name).map_err(invalid)?;
            entries.push(Entry {
                name: dir.name.clone(),
                node: Node::Dir { digest },
                props: None,
            });
        }
        for link in &proto.symlinks {
            let props =
                props_from_proto(link.node_properties.as_ref(), &link.name).map_err(invalid)?;
            let node = Node::Symlink {
                target: link.target.clone(),
            };
            entries.push(Entry {
                name: link.name.clone(),
                node,
                props,
            });
        }
        let props = props_from_proto(proto.node_properties.as_ref(), ".").map_err(invalid)?;
        let dir = Dir::new(entries, props).map_err(invalid)?;
        if dir.encode() != bytes {
            return Err(invalid(
                "not in canonical encoding (unknown fields, default values or fields out of order)"
                    .into(),
            ));
        }
        Ok(dir)
    }

    /// Reads and decodes the node `digest` from the store.
    pub fn read(store: &Store, digest: Digest, path: &str) -> Result<Dir, TreeError> {
        let blob = store.read(&digest).map_err(|source| TreeError::Store {
            digest,
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        Dir::decode(blob.bytes(), digest, path)
    }

    /// Stages the node in `txn` and returns its digest.
    pub fn write(&self, txn: &StoreTxn<'_>) -> Result<Digest, StoreError> {
        txn.put(&self.encode())
    }
}

fn check_sorted<'a>(names: impl Iterator<Item = &'a String>, list: &str) -> Result<(), String> {
    let mut previous: Option<&String> = None;
    for name in names {
        if let Some(prev) = previous
            && prev >= name
        {
            let why = if prev == name {
                "duplicate"
            } else {
                "unsorted"
            };
            return Err(format!("{why} {list}: {prev:?} comes before {name:?}"));
        }
        previous = Some(name);
    }
    Ok(())
}

fn entry_digest(proto: Option<&reapi::Digest>, name: &str) -> Result<Digest, String> {
    let proto = proto.ok_or_else(|| format!("entry {name:?} has no digest"))?;
    Digest::from_proto(proto).map_err(|e| format!("entry {name:?}: {e}"))
}

fn check_entry(entry: &Entry) -> Result<(), String> {
    if let Node::Symlink { target } = &entry.node {
        if target.is_empty() {
            return Err(format!("symlink {:?} has an empty target", entry.name));
        }
        if target.contains('\0') {
            return Err(format!(
                "symlink {:?} has a NUL byte in its target",
                entry.name
            ));
        }
    }
    if matches!(entry.node, Node::Dir { .. }) && entry.props.is_some() {
        return Err(format!(
            "directory entry {:?} carries properties; they belong in its node",
            entry.name
        ));
    }
    check_props(entry.props.as_ref(), &format!("entry {:?}", entry.name))
}

fn check_props(props: Option<&Props>, what: &str) -> Result<(), String> {
    let Some(props) = props else { return Ok(()) };
    if props.mtime.is_none() && props.unix_mode.is_none() {
        return Err(format!("{what} has empty node_properties"));
    }
    if let Some(mode) = props.unix_mode
        && mode > 0o777
    {
        return Err(format!(
            "{what} has unix_mode {mode:o}; only permission bits (at most 777) are allowed"
        ));
    }
    if let Some(mtime) = props.mtime
        && mtime.nanos >= 1_000_000_000
    {
        return Err(format!(
            "{what} has an mtime with {} nanoseconds",
            mtime.nanos
        ));
    }
    Ok(())
}

fn props_to_proto(props: Props) -> reapi::NodeProperties {
    reapi::NodeProperties {
        properties: Vec::new(),
        mtime: props.mtime.map(|m| Timestamp {
            seconds: m.seconds,
            nanos: m.nanos as i32,
        }),
        unix_mode: props.unix_mode.map(|value| UInt32Value { value }),
    }
}

fn props_from_proto(
    proto: Option<&reapi::NodeProperties>,
    name: &str,
) -> Result<Option<Props>, String> {
    let Some(proto) = proto else { return Ok(None) };
    if let Some(p) = proto.properties.first() {
        return Err(format!(
            "entry {name:?} has the unsupported node property {:?}",
            p.name
        ));
    }
    let mtime = match &proto.mtime {
        None => None,
        Some(t) => {
            let nanos = u32::try_from(t.nanos)
                .map_err(|_| format!("entry {name:?} has a negative mtime nanos"))?;
            Some(Mtime {
                seconds: t.seconds,
                nanos,
            })
        }
    };
    Ok(Some(Props {
        mtime,
        unix_mode: proto.unix_mode.map(|m| m.value),
    }))
}
