//! What the daemon records about a workspace and about each operation on it (the op
//! log), with their encodings.

use std::path::PathBuf;

use overlay::BackendKind;
use serde::{Deserialize, Serialize};
use treediff::Digest;

/// The states a workspace can be in (a documented, closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Mounted at its path and ready.
    Open,
    /// Recorded, but its view could not be mounted (the daemon says why in its log
    /// and tries again at its next start).
    Unmounted,
}

impl State {
    /// The state's stable name.
    pub fn name(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Unmounted => "unmounted",
        }
    }
}

/// A workspace's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Opaque and never reused: names object paths and keys, so that a name can be
    /// reused after close without confusing anyone holding the old id.
    pub id: String,
    /// The owner's name for it, unique per owner.
    pub name: String,
    /// The uid of the user who opened it.
    pub owner: u32,
    /// The owner's primary gid.
    pub group: u32,
    /// Where its files are.
    pub path: PathBuf,
    /// Whether the daemon mounted `path` (and so unmounts it at close).
    pub mounted_by_daemon: bool,
    /// The unique id of the mount the daemon made at `path` (`statx`'s
    /// `STATX_MNT_ID_UNIQUE`): a write through the view first checks that
    /// `path` still leads to this mount. `None` in records made before it was
    /// kept, until the view is mounted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<u64>,
    /// The snapshot backend.
    pub backend: BackendKind,
    /// See [`State`].
    pub state: State,
    /// The directory it was opened over (for an element, the element's sources in
    /// the project), if any: shown to clients, which pass a descriptor of it to
    /// write a commit back (`ws commit --write-back`). The daemon never opens it
    /// by this name.
    pub source: Option<PathBuf>,
    /// The source tree it was opened over.
    #[serde(with = "digest_text")]
    pub base_source_digest: Digest,
    /// The source tree as of its last commit (the base if none).
    #[serde(with = "digest_text")]
    pub source_digest: Digest,
    /// Its active snapshot's key.
    pub snapshot: String,
    /// The committed snapshot that snapshot sits on.
    pub base_snapshot: String,
    /// The dependency hash of its last successful build.
    pub dependency_hash: Option<String>,
    /// The ref of the artifact its last successful build produced
    /// (`artifact/<cache key>`).
    pub artifact_ref: Option<String>,
    /// Its last build, successful or not.
    pub last_build: Option<LastBuild>,
    /// The project element it was opened for (`ws open ELEMENT`), if any: builds
    /// of that element in that project build here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<ElementBinding>,
    /// The buildtree its next build continues from: that of its last successful
    /// build, or the failed build it was opened from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildtree: Option<Buildtree>,
    /// Seconds since the epoch.
    pub created: u64,
    /// Seconds since the epoch, at its last change.
    pub updated: u64,
    /// The sequence number its next op log entry gets.
    pub next_op: u64,
    /// A write through the view that was begun and not finished (a discard, an
    /// undo of one): recovery, or the next operation on the workspace, finishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingWrite>,
}

/// A write through a workspace's view, recorded (synced) before its first
/// write: the edits it drops are in the store already, so finishing it after a
/// crash, and logging it, loses nothing (`ws undo` brings them back).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWrite {
    /// The tree the view held when it began, as captured (a discard's edits).
    #[serde(with = "digest_text")]
    pub from: Digest,
    /// The tree it brings the view to.
    #[serde(with = "digest_text")]
    pub to: Digest,
    /// The op log entry it appends once the view holds `to`.
    pub entry: OpEntry,
}

/// The element a workspace was opened for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementBinding {
    /// The project's root directory, as the daemon resolved it (for matching and
    /// display; the daemon never reads it by this name).
    pub project: PathBuf,
    /// The element's name in the project.
    pub element: String,
    /// The element's `ignore` patterns when it was opened: its sources were read
    /// with them, and a write-back reads them again the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
}

/// A buildtree that a build continues from: a committed snapshot in the
/// workspace's snapshotter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buildtree {
    /// The committed snapshot holding it.
    pub snapshot: String,
    /// Its tree (sources and outputs, with modes and mtimes).
    #[serde(with = "digest_text")]
    pub tree: Digest,
    /// The source tree it was built from.
    #[serde(with = "digest_text")]
    pub source_digest: Digest,
    /// The newest mtime in it (seconds, nanoseconds): the changes laid over it
    /// must be newer (docs/design.md, "Workspaces and incremental builds").
    pub newest_mtime: (i64, u32),
    /// Its size in bytes, as far as it is known (for the quota).
    pub size: u64,
}

/// What a workspace's last build did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBuild {
    /// The build's id.
    pub id: String,
    /// The cache key it built.
    pub cache_key: String,
    /// "built", "cached" or "failed".
    pub result: String,
    /// Whether it continued from an earlier buildtree.
    pub incremental: bool,
    /// The buildtree it left (the failed one, for a failure).
    #[serde(with = "opt_digest_text")]
    pub buildtree: Option<Digest>,
    /// Seconds since the epoch, at its end.
    pub time: u64,
}

/// What an operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// The workspace was opened.
    Open,
    /// Its edits were recorded as its source tree.
    Commit,
    /// Its edits were dropped.
    Discard,
    /// It was closed.
    Close,
    /// An earlier commit or discard was undone (`OpEntry::undoes` says which).
    Undo,
    /// A build committed a new buildtree and artifact (`after` is the source tree
    /// it built, `message` its cache key).
    Build,
    /// A build failed and left the workspace as it was (`message` says why).
    BuildFailed,
    /// Its committed source tree was written into a directory (`message` names
    /// it; `before` is the tree the directory was expected to hold, `after` the
    /// tree written, `changes` the paths written or removed).
    WriteBack,
}

impl OpKind {
    /// The kind's stable name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Open => "open",
            OpKind::Commit => "commit",
            OpKind::Discard => "discard",
            OpKind::Close => "close",
            OpKind::Undo => "undo",
            OpKind::Build => "build",
            OpKind::BuildFailed => "build-failed",
            OpKind::WriteBack => "write-back",
        }
    }
}

/// One entry of a workspace's op log: an operation with the states before and
/// after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpEntry {
    /// Its place in the workspace's log, from 0.
    pub seq: u64,
    /// What was done.
    pub op: OpKind,
    /// The tree the view held before (for a discard: the edits dropped, kept in the
    /// store).
    #[serde(with = "opt_digest_text")]
    pub before: Option<Digest>,
    /// The workspace's source tree after.
    #[serde(with = "opt_digest_text")]
    pub after: Option<Digest>,
    /// How many paths changed.
    pub changes: u64,
    /// The commit message, if any.
    pub message: Option<String>,
    /// Seconds since the epoch.
    pub time: u64,
    /// For an undo: the sequence number of the entry it undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<u64>,
}

pub(crate) mod digest_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use treediff::Digest;

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub(crate) mod opt_digest_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use treediff::Digest;

    pub fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A name as messages show it: quoted, and cut short if it is long (a request may
/// carry anything; an error must not echo a megabyte back).
pub fn shown(name: &str) -> String {
    const MAX: usize = 80;
    if name.len() <= MAX {
        return format!("{name:?}");
    }
    let mut end = MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &name[..end], name.len())
}

/// Checks a workspace name: it names a directory and appears in messages.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("it must be 1 to 64 characters long".to_owned());
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("it must not start with '.' or '-'".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '.', '_' and '-' are)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_element_binding_recorded_without_ignore_patterns_still_decodes() {
        let old = r#"{"project":"/p","element":"hello"}"#;
        let binding: ElementBinding = serde_json::from_str(old).unwrap();
        assert_eq!(binding.element, "hello");
        assert!(binding.ignore.is_empty());
        // And one without patterns is written as before.
        assert_eq!(serde_json::to_string(&binding).unwrap(), old);
    }

    #[test]
    fn a_write_back_entry_is_recorded_under_its_stable_name() {
        let entry = OpEntry {
            seq: 3,
            op: OpKind::WriteBack,
            before: None,
            after: None,
            changes: 2,
            message: Some("/p/hello".to_owned()),
            time: 0,
            undoes: None,
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert!(text.contains(r#""op":"write-back""#), "{text}");
        assert_eq!(serde_json::from_str::<OpEntry>(&text).unwrap(), entry);
        assert_eq!(OpKind::WriteBack.name(), "write-back");
    }
}
