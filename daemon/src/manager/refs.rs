//! Refs: named trees the daemon keeps for later (cached artifacts and buildtrees,
//! by cache key), with the size and last use that quota eviction goes by.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use treediff::Digest;

use super::{Manager, now_secs};
use crate::db::cf;
use crate::error::Error;

/// What a ref holds, which decides whether the quota may evict it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefKind {
    /// A build's output: rebuilt if evicted.
    Artifact,
    /// A build's tree (a failed one too): rebuilt if evicted.
    Buildtree,
    /// Kept until removed by name: never evicted.
    Pinned,
}

impl RefKind {
    /// Whether quota eviction may drop refs of this kind (when nothing else
    /// references them).
    pub fn evictable(self) -> bool {
        matches!(self, RefKind::Artifact | RefKind::Buildtree)
    }
}

/// A ref's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Its name.
    pub name: String,
    /// The tree it holds.
    #[serde(with = "crate::workspace::digest_text")]
    pub tree: Digest,
    /// See [`RefKind`].
    pub kind: RefKind,
    /// The bytes of the files in the tree (shared blobs counted in full): what
    /// evicting it frees at most.
    pub size: u64,
    /// Seconds since the epoch at its last use.
    pub last_used: u64,
}

impl Manager {
    /// Records `name` → `tree` (durable once this returns). The tree must be in
    /// the store already.
    pub fn put_ref(
        &self,
        name: &str,
        tree: Digest,
        kind: RefKind,
        size: u64,
    ) -> Result<Ref, Error> {
        let _store = self.store_guard();
        treediff::Dir::read(&self.store, tree, "").map_err(|e| Error::Invalid {
            what: "ref tree",
            problem: format!("{name}: {tree}: {e}"),
        })?;
        let record = Ref {
            name: name.to_owned(),
            tree,
            kind,
            size,
            last_used: now_secs(),
        };
        self.write_ref(&record)?;
        Ok(record)
    }

    /// The ref `name`, marked as used now (eviction goes by last use).
    pub fn use_ref(&self, name: &str) -> Result<Option<Ref>, Error> {
        let Some(bytes) = self.db.get(self.db.cf(cf::REFS), name.as_bytes())? else {
            return Ok(None);
        };
        let mut record = self.decode_ref(&bytes)?;
        record.last_used = now_secs();
        self.write_ref(&record)?;
        Ok(Some(record))
    }

    /// The tree the ref `name` holds, if there is one; its use is not marked.
    pub(super) fn ref_tree(&self, name: &str) -> Result<Option<Digest>, Error> {
        let Some(bytes) = self.db.get(self.db.cf(cf::REFS), name.as_bytes())? else {
            return Ok(None);
        };
        Ok(Some(self.decode_ref(&bytes)?.tree))
    }

    /// Every ref, in name order.
    pub fn refs(&self) -> Result<Vec<Ref>, Error> {
        self.db
            .scan(self.db.cf(cf::REFS), b"")?
            .into_iter()
            .map(|(_, bytes)| self.decode_ref(&bytes))
            .collect()
    }

    /// Deletes the refs `names` in one batch.
    pub(in crate::manager) fn drop_refs(&self, names: &[String]) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        for name in names {
            batch.delete_cf(self.db.cf(cf::REFS), name.as_bytes());
        }
        Ok(self.db.write(batch)?)
    }

    fn write_ref(&self, record: &Ref) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        self.ref_into(&mut batch, record);
        Ok(self.db.write(batch)?)
    }

    /// Puts the ref `name` → `tree` into `batch`, used now: for a transaction
    /// that records refs with the rest of its state. The tree must be durable in
    /// the store before the batch is written.
    pub(super) fn put_ref_into(
        &self,
        batch: &mut WriteBatch,
        name: &str,
        tree: Digest,
        kind: RefKind,
        size: u64,
    ) {
        let record = Ref {
            name: name.to_owned(),
            tree,
            kind,
            size,
            last_used: now_secs(),
        };
        self.ref_into(batch, &record);
    }

    fn ref_into(&self, batch: &mut WriteBatch, record: &Ref) {
        batch.put_cf(
            self.db.cf(cf::REFS),
            record.name.as_bytes(),
            serde_json::to_vec(record).expect("refs serialize"),
        );
    }

    fn decode_ref(&self, bytes: &[u8]) -> Result<Ref, Error> {
        serde_json::from_slice(bytes).map_err(|e| self.db.corrupt("ref", e.to_string()).into())
    }
}
