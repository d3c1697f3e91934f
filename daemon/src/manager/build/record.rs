//! What the daemon records about builds: the artifact records under each cache
//! key (the last build's result, its trees and log, one per producer), and the
//! running builds that recovery removes after a crash.
//!
//! # Whose records are reused
//!
//! Every record has a *producer*: the uid whose process made what it holds (a
//! build runs as its caller, who can reach it through `/proc` while it runs; a
//! pull brings what the caller's remote sent). A caller reuses their own
//! records, else the daemon's own: a root daemon's builds for root and its
//! pulls from the remotes its configuration trusts. Never another user's. So
//! records are keyed by producer and key, and so are the refs that keep their
//! trees (`artifact/<producer>/<key>`, ...); a pull by one user writes only
//! their own record, never one another uid reuses.

use overlay::BackendKind;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use treediff::Digest;

use crate::db::cf;
use crate::error::Error;
use crate::manager::Manager;
use crate::manager::refs::RefKind;
use crate::project::CacheKey;
use crate::workspace::{digest_text, opt_digest_text};

/// How a build under a cache key ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Its artifact is cached.
    Success,
    /// It failed; its buildtree and log are cached.
    Failed,
}

/// Where a buildtree's committed snapshot lives, so that a workspace of the same
/// snapshotter can continue from it without a checkout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The snapshotter's backend.
    pub backend: BackendKind,
    /// The uid its files belong to.
    pub owner: u32,
    /// Their gid.
    pub group: u32,
    /// The committed snapshot's name.
    pub name: String,
}

/// The record of the last build under one cache key (`artifacts` column family).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// The cache key.
    pub key: CacheKey,
    /// The element built (for display: the key does not depend on its name).
    pub element: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The source tree built.
    #[serde(with = "digest_text")]
    pub source_digest: Digest,
    /// The dependency hash it was built with.
    pub dependency_hash: String,
    /// The install root's tree (success only).
    #[serde(with = "opt_digest_text")]
    pub artifact: Option<Digest>,
    /// The buildtree's tree (none for imports).
    #[serde(with = "opt_digest_text")]
    pub buildtree: Option<Digest>,
    /// Where the buildtree is held as a committed snapshot.
    pub snapshot: Option<SnapshotRef>,
    /// The newest mtime in the buildtree.
    pub newest_mtime: Option<(i64, u32)>,
    /// The buildtree's size as far as known.
    pub buildtree_size: u64,
    /// The build log, a blob in the store (also held by the ref `log/<key>`).
    #[serde(with = "opt_digest_text")]
    pub log: Option<Digest>,
    /// The element's caches as this build saved them (name → tree), successful
    /// builds only; the ref `cache/<uid>/<element>/<name>` holds the latest.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub caches: std::collections::BTreeMap<String, String>,
    /// Whether the build continued from an earlier buildtree.
    pub incremental: bool,
    /// Commands that ran (the failed one included).
    pub commands_run: u32,
    /// Why it failed.
    pub failure: Option<String>,
    /// The workspace that built it, if any.
    pub workspace: Option<String>,
    /// Who built it, or asked for the pull that brought it: the uid its trees
    /// are granted to.
    pub owner: u32,
    /// Whose record it is (see the module doc): `owner`, or the daemon's uid
    /// for what a trusted remote sent.
    pub producer: u32,
    /// Seconds since the epoch, at its end.
    pub time: u64,
}

/// A build that has started and not ended (`builds` column family). Recovery
/// unmounts its view and removes its active snapshot: a build that did not
/// commit left nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningBuild {
    /// The build's id.
    pub id: String,
    /// The element.
    pub element: String,
    /// The snapshotter of its active snapshot.
    pub backend: BackendKind,
    /// Its owner uid and gid.
    pub owner: u32,
    /// The owner's gid.
    pub group: u32,
    /// The active snapshot's key.
    pub snapshot: String,
    /// Where its view is mounted.
    pub mount: std::path::PathBuf,
    /// Seconds since the epoch, at its start.
    pub started: u64,
    /// The dependencies' sysroot it uses (gc keeps it while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysroot: Option<std::path::PathBuf>,
}

/// The key of `producer`'s record under `key` (`artifacts` column family).
pub fn record_key(producer: u32, key: &CacheKey) -> String {
    format!("{producer}/{key}")
}

/// The ref of the artifact in `producer`'s record under `key`.
pub fn artifact_ref(producer: u32, key: &CacheKey) -> String {
    format!("artifact/{producer}/{key}")
}

/// The ref of the buildtree in `producer`'s record under `key`.
pub fn buildtree_ref(producer: u32, key: &CacheKey) -> String {
    format!("buildtree/{producer}/{key}")
}

/// The ref holding the latest saved content of an element's cache, per user:
/// restored before each build of the element, replaced after each success.
pub fn cache_ref(uid: u32, element: &str, name: &str) -> String {
    format!("cache/{uid}/{element}/{name}")
}

/// The ref of the log in `producer`'s record under `key` (a tree holding
/// `build.log`, so gc keeps the blob).
pub fn log_ref(producer: u32, key: &CacheKey) -> String {
    format!("log/{producer}/{key}")
}

impl ArtifactRecord {
    /// The ref of its artifact.
    pub fn artifact_ref(&self) -> String {
        artifact_ref(self.producer, &self.key)
    }

    /// The ref of its buildtree.
    pub fn buildtree_ref(&self) -> String {
        buildtree_ref(self.producer, &self.key)
    }
}

impl Manager {
    /// The record `uid` reuses under `key`: their own, else one the daemon
    /// trusts (see the module doc).
    pub fn artifact(&self, uid: u32, key: &CacheKey) -> Result<Option<ArtifactRecord>, Error> {
        let daemons = (uid != self.euid).then_some(self.euid);
        for producer in std::iter::once(uid).chain(daemons) {
            if let Some(record) = self.artifact_of(producer, key)? {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// The record `producer` made under `key`.
    pub fn artifact_of(
        &self,
        producer: u32,
        key: &CacheKey,
    ) -> Result<Option<ArtifactRecord>, Error> {
        match self.db.get(
            self.db.cf(cf::ARTIFACTS),
            record_key(producer, key).as_bytes(),
        )? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| self.db.corrupt("artifact", e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    /// Every artifact record, in key order.
    pub fn artifacts(&self) -> Result<Vec<ArtifactRecord>, Error> {
        self.db
            .scan(self.db.cf(cf::ARTIFACTS), b"")?
            .into_iter()
            .map(|(_, bytes)| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| self.db.corrupt("artifact", e.to_string()).into())
            })
            .collect()
    }

    /// Puts `record`, the refs that keep its trees and their grants to its
    /// owner (who may then read them by digest) into `batch`; `log_tree` is the
    /// tree holding its log.
    pub(in crate::manager) fn put_artifact(
        &self,
        batch: &mut WriteBatch,
        record: &ArtifactRecord,
        log_tree: Option<Digest>,
        artifact_size: u64,
    ) {
        self.put_artifact_record(batch, record);
        let trees: Vec<Digest> = [record.artifact, record.buildtree, log_tree]
            .into_iter()
            .flatten()
            .collect();
        self.grant_into(batch, record.owner, &trees);
        if let Some(tree) = record.artifact {
            self.put_ref_into(
                batch,
                &record.artifact_ref(),
                tree,
                RefKind::Artifact,
                artifact_size,
            );
        }
        if let Some(tree) = record.buildtree {
            self.put_ref_into(
                batch,
                &record.buildtree_ref(),
                tree,
                RefKind::Buildtree,
                record.buildtree_size,
            );
        }
        if let Some(tree) = log_tree {
            let size = record.log.map_or(0, |d| d.size());
            let name = log_ref(record.producer, &record.key);
            self.put_ref_into(batch, &name, tree, RefKind::Buildtree, size);
        }
    }

    /// Puts `record` alone into `batch`, its refs as they are.
    pub(in crate::manager) fn put_artifact_record(
        &self,
        batch: &mut WriteBatch,
        record: &ArtifactRecord,
    ) {
        batch.put_cf(
            self.db.cf(cf::ARTIFACTS),
            record_key(record.producer, &record.key).as_bytes(),
            serde_json::to_vec(record).expect("artifact records serialize"),
        );
    }

    /// Records `build` as running (durable before its snapshot is mounted).
    pub(in crate::manager) fn put_running(&self, batch: &mut WriteBatch, build: &RunningBuild) {
        batch.put_cf(
            self.db.cf(cf::BUILDS),
            build.id.as_bytes(),
            serde_json::to_vec(build).expect("build records serialize"),
        );
    }

    /// Forgets the running build `id` in `batch`.
    pub(in crate::manager) fn end_running(&self, batch: &mut WriteBatch, id: &str) {
        batch.delete_cf(self.db.cf(cf::BUILDS), id.as_bytes());
    }

    /// The builds that started and did not end (while the daemon runs: those
    /// running now).
    pub fn running_builds(&self) -> Result<Vec<RunningBuild>, Error> {
        self.db
            .scan(self.db.cf(cf::BUILDS), b"")?
            .into_iter()
            .map(|(_, bytes)| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| self.db.corrupt("build", e.to_string()).into())
            })
            .collect()
    }
}
