//! Assembly: the walk's flat list of entries becomes directory nodes, deepest first.

use std::collections::HashMap;

use super::walk::{FoundNode, Walked};
use super::{CaptureError, CaptureStats};
use crate::digest::Digest;
use crate::store::StoreTxn;
use crate::tree::{Dir, Entry, Node, Props};

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Builds and stages every directory node; returns the root's digest and the stats.
pub(super) fn assemble(
    txn: &StoreTxn<'_>,
    walked: Walked,
) -> Result<(Digest, CaptureStats), CaptureError> {
    let Walked { found, stats } = walked;
    let mut dirs: Vec<(String, Option<Props>)> = Vec::new();
    let mut children: HashMap<String, Vec<Entry>> = HashMap::new();
    for item in found {
        let node = match item.node {
            FoundNode::Dir => {
                dirs.push((item.path, item.props));
                continue;
            }
            FoundNode::File { digest, executable } => Node::File { digest, executable },
            FoundNode::Symlink { target } => Node::Symlink { target },
        };
        let (parent, name) = split(&item.path);
        let entry = Entry {
            name: name.to_owned(),
            node,
            props: item.props,
        };
        children.entry(parent.to_owned()).or_default().push(entry);
    }
    // Deepest first, so every directory's children are built before it; the root
    // (the empty path, depth 0) comes last.
    dirs.sort_by_cached_key(|(path, _)| {
        std::cmp::Reverse(if path.is_empty() {
            0
        } else {
            path.matches('/').count() + 1
        })
    });
    let mut root = None;
    for (path, props) in dirs {
        let entries = children.remove(&path).unwrap_or_default();
        let dir = Dir::new(entries, props).map_err(|problem| CaptureError::Invalid {
            path: path.clone().into(),
            problem,
        })?;
        let bytes = dir.encode();
        let digest = Digest::of(&bytes);
        txn.put_hashed(digest, &bytes)?;
        if path.is_empty() {
            root = Some(digest);
        } else {
            let (parent, name) = split(&path);
            let entry = Entry {
                name: name.to_owned(),
                node: Node::Dir { digest },
                props: None,
            };
            children.entry(parent.to_owned()).or_default().push(entry);
        }
    }
    let root = root.expect("the walk always yields the root directory");
    Ok((root, stats))
}
