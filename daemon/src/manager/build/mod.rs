//! Builds: elements built in order, each one a transaction that either reuses
//! the artifact cached under its key or runs its commands in the sandbox and
//! commits a new buildtree and artifact (see `run`).
//!
//! | module | holds |
//! |---|---|
//! | `plan` | the project read as the caller; source trees and cache keys, dependencies first |
//! | `run` | one element's build transaction: the delta over the previous buildtree, the sandbox, the batch |
//! | `clock` | the timestamp rule that makes incremental builds rebuild exactly what changed |
//! | `stage` | the dependencies' artifacts as a read-only sysroot; the build log's tree |
//! | `record` | artifact records by cache key, and running builds for recovery |
//! | `open` | `ws open ELEMENT`: a workspace on an element, continuing a failed build |
//! | `show` | `ws show`: each element's key and state, building nothing |
//! | `caches` | `ws cache`: the elements' saved caches, listed and dropped |
//! | `shell` | `ws shell`: a command in an element's build environment, on a throw-away layer |
//! | `verify` | `ws build --verify`: a clean rebuild on a scratch layer, compared file by file |
//! | `remote_cache` | results pulled from remote caches before a build, pushed after; `ws push`, `ws pull` |

mod caches;
mod clock;
mod open;
mod plan;
mod record;
mod remote_cache;
mod run;
mod shell;
mod show;
pub(super) mod stage;
mod verify;

use serde::Serialize;
use treediff::Digest;

pub use caches::SavedCache;
pub use open::{BuildtreeSource, ElementOpen, OpenedElement};
pub use plan::{LoadedProject, PROJECT_FILE, Planned};
pub use record::{ArtifactRecord, Outcome, RunningBuild, SnapshotRef, buildtree_ref};
pub use remote_cache::{RemoteActivity, Transfer, TransferReport, TransferTarget};
pub use run::CONFIGURED_MARKER;
pub use shell::{ShellEnd, ShellRequest, ShellStdio};
pub use show::{ElementState, ShownElement};
pub use verify::{Verification, VerifyResult};

use crate::error::Error;
use crate::manager::long_work::Work;
use crate::manager::remotes::UsedRemote;
use crate::manager::{Caller, Manager, RemoteOptions, now_secs};
use crate::project::{CacheKey, ElementKind};
use crate::sandbox::Cancel;

/// What became of one element in a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElementResult {
    /// Its commands ran and succeeded: a new artifact is cached.
    Built,
    /// An artifact cached under its key was reused: nothing ran.
    Cached,
    /// Its commands failed: the failed buildtree and log are cached.
    Failed,
}

impl ElementResult {
    /// The stable name (`built`, `cached`, `failed`).
    pub fn name(self) -> &'static str {
        match self {
            ElementResult::Built => "built",
            ElementResult::Cached => "cached",
            ElementResult::Failed => "failed",
        }
    }
}

/// One element's part of a build, as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementReport {
    /// The element.
    pub element: String,
    /// Its cache key.
    pub cache_key: CacheKey,
    /// What happened.
    pub result: ElementResult,
    /// Whether it continued from an earlier buildtree.
    pub incremental: bool,
    /// How many commands ran (0 when cached).
    pub commands_run: u32,
    /// Its artifact (the install root's tree).
    pub artifact: Option<Digest>,
    /// Its buildtree (the failed one on failure).
    pub buildtree: Option<Digest>,
    /// Its build log (a blob).
    pub log: Option<Digest>,
    /// The workspace it was built in, if any.
    pub workspace: Option<String>,
    /// Why it failed, or where a reused artifact came from.
    pub message: Option<String>,
    /// What a clean rebuild found (`ws build --verify`, the target only).
    pub verification: Option<Verification>,
    /// What the remote caches did for it.
    pub remote: RemoteActivity,
}

/// How to build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Once the target is built (or reused), rebuild it cleanly on a scratch
    /// layer and compare the two artifacts (see `verify`).
    pub verify: bool,
    /// Which remote caches to pull from and push to, besides the project's.
    pub remotes: RemoteOptions,
}

/// Who watches a build as it runs (the D-Bus job, a test).
pub trait BuildObserver: Send + Sync {
    /// An element's build starts (also when it will turn out cached).
    fn element_started(&self, element: &str, key: &CacheKey, workspace: Option<&str>);
    /// Output of the element's commands, as it comes.
    fn output(&self, element: &str, chunk: &[u8]);
    /// An element is done.
    fn element_finished(&self, report: &ElementReport);
}

/// An observer that ignores everything.
#[derive(Debug)]
pub struct Unobserved;

impl BuildObserver for Unobserved {
    fn element_started(&self, _: &str, _: &CacheKey, _: Option<&str>) {}
    fn output(&self, _: &str, _: &[u8]) {}
    fn element_finished(&self, _: &ElementReport) {}
}

/// The artifacts of what `p` depends on, from the reports of the elements
/// built before it.
fn dependency_artifacts(planned: &[Planned], p: &Planned, done: &[ElementReport]) -> Vec<Digest> {
    plan::closure(planned, &p.element.name)
        .iter()
        .map(|d| {
            done.iter()
                .find(|r| r.element == d.element.name)
                .and_then(|r| r.artifact)
                .expect("dependencies are built first and stop the build if they fail")
        })
        .collect()
}

impl Manager {
    /// Builds `target` of the project at `dir` (the caller's descriptor's path)
    /// and what it depends on, dependencies first, stopping at the first that
    /// fails. Returns a report per element reached; the last one says whether the
    /// build as a whole failed.
    pub fn build(
        &self,
        caller: Caller,
        dir: &std::path::Path,
        target: &str,
        observer: &dyn BuildObserver,
        cancel: &Cancel,
    ) -> Result<Vec<ElementReport>, Error> {
        self.build_with(
            caller,
            dir,
            target,
            BuildOptions::default(),
            observer,
            cancel,
        )
    }

    /// [`Manager::build`] with options.
    pub fn build_with(
        &self,
        caller: Caller,
        dir: &std::path::Path,
        target: &str,
        options: BuildOptions,
        observer: &dyn BuildObserver,
        cancel: &Cancel,
    ) -> Result<Vec<ElementReport>, Error> {
        // The project and configuration files first, with no lock held.
        let loaded = self.load_project(caller, dir)?;
        let remotes = self.remotes_for(caller, &loaded.project.remotes, &options.remotes)?;
        let _slot = self.long_work.enter(caller.uid, Work::Build);
        let _store = self.store_guard();
        let planned = self.plan(caller, &loaded, target)?;
        let mut reports: Vec<ElementReport> = Vec::new();
        for p in &planned {
            if cancel.is_cancelled() {
                break;
            }
            observer.element_started(
                &p.element.name,
                &p.key,
                p.workspace.as_ref().map(|w| w.name.as_str()),
            );
            let mut report =
                self.build_one(caller, &planned, p, &reports, &remotes, observer, cancel)?;
            if options.verify
                && p.element.name == target
                && p.element.kind != ElementKind::Import
                && report.result != ElementResult::Failed
                && !cancel.is_cancelled()
            {
                let sysroot =
                    self.dependency_sysroot(&dependency_artifacts(&planned, p, &reports))?;
                report.verification =
                    Some(self.verify(caller, p, &report, sysroot, observer, cancel)?);
            }
            observer.element_finished(&report);
            let failed = report.result == ElementResult::Failed;
            reports.push(report);
            if failed {
                break;
            }
        }
        Ok(reports)
    }

    /// One element: reused from the local cache, else from a remote one, else
    /// built (or imported) and pushed to the remotes that take pushes.
    #[allow(clippy::too_many_arguments)]
    fn build_one(
        &self,
        caller: Caller,
        planned: &[Planned],
        p: &Planned,
        done: &[ElementReport],
        remotes: &[UsedRemote],
        observer: &dyn BuildObserver,
        cancel: &Cancel,
    ) -> Result<ElementReport, Error> {
        if let Some(report) = self.cached(caller, p)? {
            self.record_hit_in_workspace(p)?;
            return Ok(report);
        }
        let mut activity = RemoteActivity::default();
        let say = |line: String| observer.output(&p.element.name, line.as_bytes());
        // An import's artifact is its sources, which are here: nothing to pull.
        if p.element.kind != ElementKind::Import
            && let Some(mut report) = self.pull_cached(caller, remotes, p, &mut activity, &say)?
        {
            self.record_hit_in_workspace(p)?;
            report.remote = activity;
            return Ok(report);
        }
        let mut report = if p.element.kind == ElementKind::Import {
            self.record_import(caller, p)?
        } else {
            let deps = dependency_artifacts(planned, p, done);
            self.run_build(run::Job {
                caller,
                planned: p,
                sysroot: self.dependency_sysroot(&deps)?,
                observer,
                cancel,
            })?
        };
        if !cancel.is_cancelled() {
            self.push_recorded(caller, remotes, &p.key, &mut activity, &say)?;
        }
        report.remote = activity;
        Ok(report)
    }

    /// The artifacts `deps` merged and checked out read-only, for the sandbox's
    /// `/ws/sysroot`; `None` without dependencies.
    fn dependency_sysroot(&self, deps: &[Digest]) -> Result<Option<std::path::PathBuf>, Error> {
        if deps.is_empty() {
            return Ok(None);
        }
        let txn = self
            .store
            .begin()
            .map_err(Error::store_on("the dependencies' artifacts".into()))?;
        let merged = stage::merge_trees(&txn, deps)?;
        txn.commit()
            .map_err(Error::store_on("the dependencies' artifacts".into()))?;
        merged.map(|tree| self.sysroot(tree)).transpose()
    }

    /// The report of reusing the artifact cached under `p`'s key, if there is an
    /// intact one. A damaged one (a blob missing or not matching its digest) is a
    /// miss, never used.
    fn cached(&self, caller: Caller, p: &Planned) -> Result<Option<ElementReport>, Error> {
        let Some(record) = self.artifact(caller.uid, &p.key)? else {
            return Ok(None);
        };
        let Some(artifact) = record
            .artifact
            .filter(|_| record.outcome == Outcome::Success)
        else {
            return Ok(None);
        };
        if !stage::is_intact(&self.store, artifact) {
            tracing::warn!(element = p.element.name, key = %p.key, "the cached artifact is damaged: building it again");
            return Ok(None);
        }
        let _ = self.use_ref(&record.artifact_ref());
        let from = match &record.workspace {
            Some(ws) => format!("reused the artifact built in workspace {ws}"),
            None => "reused the cached artifact".to_owned(),
        };
        Ok(Some(ElementReport {
            element: p.element.name.clone(),
            cache_key: p.key.clone(),
            result: ElementResult::Cached,
            incremental: record.incremental,
            commands_run: 0,
            artifact: Some(artifact),
            buildtree: record.buildtree,
            log: record.log,
            workspace: p.workspace.as_ref().map(|w| w.name.clone()),
            message: Some(from),
            verification: None,
            remote: RemoteActivity::default(),
        }))
    }

    /// An import element's artifact is its source tree: recorded, nothing runs.
    fn record_import(&self, caller: Caller, p: &Planned) -> Result<ElementReport, Error> {
        let record = ArtifactRecord {
            key: p.key.clone(),
            element: p.element.name.clone(),
            outcome: Outcome::Success,
            source_digest: p.source_digest,
            dependency_hash: p.dependency_hash.clone(),
            artifact: Some(p.source_digest),
            buildtree: None,
            snapshot: None,
            newest_mtime: None,
            buildtree_size: 0,
            log: None,
            caches: Default::default(),
            incremental: false,
            commands_run: 0,
            failure: None,
            workspace: p.workspace.as_ref().map(|w| w.name.clone()),
            owner: caller.uid,
            producer: caller.uid,
            time: now_secs(),
        };
        let mut batch = rocksdb::WriteBatch::default();
        self.put_artifact(&mut batch, &record, None, p.source_digest.size());
        self.db.write(batch)?;
        Ok(ElementReport {
            element: p.element.name.clone(),
            cache_key: p.key.clone(),
            result: ElementResult::Built,
            incremental: false,
            commands_run: 0,
            artifact: Some(p.source_digest),
            buildtree: None,
            log: None,
            workspace: record.workspace,
            message: None,
            verification: None,
            remote: RemoteActivity::default(),
        })
    }
}
