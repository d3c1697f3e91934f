//! What the snapshotter records about each snapshot, and how a record is encoded
//! for whatever database holds it.

use serde::{Deserialize, Serialize};
use treediff::{CaptureMode, Digest};

/// The state of a snapshot; see [`Snapshotter`](crate::Snapshotter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable, under a key; becomes nothing else (committing makes a new one).
    Active,
    /// A read-only view of a committed snapshot, under a key.
    View,
    /// Immutable, under a name; may be a parent.
    Committed,
}

impl Kind {
    /// "active", "view" or "committed", for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

/// What a snapshot's content is captured as: a source tree (content and the
/// executable bit) or a buildtree (also modes and mtimes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// Sources: equal content gives an equal tree.
    #[default]
    Source,
    /// A build directory: modes and mtimes are kept.
    Buildtree,
}

impl Content {
    /// The store's capture mode for this content.
    pub fn capture_mode(self) -> CaptureMode {
        match self {
            Content::Source => CaptureMode::Source,
            Content::Buildtree => CaptureMode::Buildtree,
        }
    }
}

/// Who a snapshot's files belong to, when that is not the snapshotter's own user:
/// a root daemon serving several users gives each workspace's layers to its
/// owner (per-owner checkouts), because overlay's copy-up checks the lower file's
/// permissions against the user who edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

/// One snapshot's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The key (active, view) or name (committed).
    pub key: String,
    /// The snapshot's directory under `<root>/snapshots/`: never reused, so a
    /// record can never point at another snapshot's files.
    pub id: String,
    /// Active, view or committed.
    pub kind: Kind,
    /// The committed snapshot this one sits on, if any.
    pub parent: Option<String>,
    /// The tree of the whole view (this layer over its parents); committed
    /// snapshots only.
    #[serde(with = "digest_text", default)]
    pub tree: Option<Digest>,
    /// Source or buildtree.
    pub content: Content,
    /// When it was created, in seconds since the epoch.
    pub created: u64,
}

impl Info {
    /// The record's bytes (JSON: small, readable in a database dump).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records always serialize")
    }

    /// A record from its bytes; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Info, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid snapshot record: {e}"))
    }
}

/// Digests as their `<hex>/<size>` text.
mod digest_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use treediff::Digest;

    pub fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Checks a key or name: what the daemon and the user see, and what goes into
/// messages, so it is printable and bounded.
pub(crate) fn validate_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("it is empty");
    }
    if key.len() > 255 {
        return Err("it is longer than 255 bytes");
    }
    if key.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    Ok(())
}
