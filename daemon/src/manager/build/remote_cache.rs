//! Builds and the remote caches (docs/remote.md): before an element is built, a
//! success under its key is looked up in the remotes that pull; after, what it
//! built (a failure too) is pushed to the remotes that push; `ws open ELEMENT`
//! pulls a failed buildtree that only a remote has; `ws push` and `ws pull`
//! move a key's result by hand.
//!
//! A remote that fails is noted in the element's report and the build goes on
//! locally: a remote cache saves work, it never stops it. An entry whose blobs
//! are missing or damaged is a miss (`crate::remote`), never used.

use treediff::Digest;

use super::record::{ArtifactRecord, Outcome};
use super::{ElementReport, Planned, clock, stage};
use crate::error::Error;
use crate::manager::long_work::Work;
use crate::manager::remotes::UsedRemote;
use crate::manager::{Caller, Manager, now_secs};
use crate::project::{CacheKey, RemoteSpec};
use crate::remote::{BuildInfo, BuildResult, Found, Lookup, Parts, RemoteError};

/// What the remote caches did for one element of a build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteActivity {
    /// The remote whose result was reused, if one was.
    pub pulled_from: Option<String>,
    /// The remotes the result was pushed to.
    pub pushed_to: Vec<String>,
    /// The remotes that failed or had an unusable entry, each as
    /// "URL: what happened".
    pub problems: Vec<String>,
}

/// Where a build's progress lines go (the element's output stream), or
/// nowhere.
pub(super) type Say<'a> = &'a dyn Fn(String);

/// Bytes for people, in the progress lines.
fn shown_bytes(n: u64) -> String {
    if n < 1 << 20 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    }
}

impl RemoteActivity {
    fn problem(&mut self, spec: &RemoteSpec, what: impl std::fmt::Display) {
        tracing::warn!(url = spec.url, "remote cache: {what}");
        self.problems.push(format!("{}: {what}", spec.url));
    }
}

/// What a push or a pull moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The remote.
    pub url: String,
    /// Blobs the result references.
    pub blobs: u64,
    /// Blobs sent (push) or received (pull).
    pub moved_blobs: u64,
    /// Their bytes.
    pub moved_bytes: u64,
}

/// What `ws push` or `ws pull` did for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReport {
    /// The element, if known.
    pub element: String,
    /// The cache key.
    pub cache_key: CacheKey,
    /// How its build ended.
    pub outcome: Outcome,
    /// Its trees and log, as recorded here.
    pub artifact: Option<Digest>,
    /// The buildtree.
    pub buildtree: Option<Digest>,
    /// The log.
    pub log: Option<Digest>,
    /// Per remote that took part.
    pub transfers: Vec<Transfer>,
}

impl Manager {
    /// Whose record a pull by `caller` from `spec` under `key` makes: the
    /// daemon's (which every user reuses) when its configuration trusts that
    /// remote and the daemon has none under `key` yet (a user's pull never
    /// replaces a record others use), else the caller's own.
    fn producer_of_pull(
        &self,
        caller: Caller,
        spec: &RemoteSpec,
        key: &CacheKey,
    ) -> Result<u32, Error> {
        let daemons = caller.uid == self.euid || self.artifact_of(self.euid, key)?.is_none();
        Ok(if self.config.trusts(spec) && daemons {
            self.euid
        } else {
            caller.uid
        })
    }

    /// The artifact cached under `p`'s key in the first remote that pulls and
    /// has a usable success, recorded here and reported as `cached`; the
    /// buildtree is pulled too when `p` builds in a workspace (its next build
    /// continues from it). A failure cached there is not reused: the build
    /// runs, like one whose failure is cached here.
    pub(super) fn pull_cached(
        &self,
        caller: Caller,
        remotes: &[UsedRemote],
        p: &Planned,
        activity: &mut RemoteActivity,
        say: Say<'_>,
    ) -> Result<Option<ElementReport>, Error> {
        for spec in remotes.iter().filter(|s| s.pull) {
            let parts = Parts {
                artifact: true,
                buildtree: p.workspace.is_some(),
                sources: false,
                log: true,
            };
            let Some(result) =
                self.fetch_from(spec, &p.key, Outcome::Success, parts, activity, say)?
            else {
                continue;
            };
            self.record_pulled(caller, spec, &p.key, result, Some(p))?;
            let Some(mut report) = self.cached(caller, p)? else {
                // Damaged between the pull and now: build it.
                continue;
            };
            report.message = Some(format!("reused the artifact pulled from {}", spec.url));
            activity.pulled_from = Some(spec.url.clone());
            return Ok(Some(report));
        }
        Ok(None)
    }

    /// The failed build under `p`'s key from the first remote that pulls and
    /// has one with a buildtree, recorded here (for `ws open ELEMENT`), and the
    /// remote's URL.
    pub(super) fn pull_failed(
        &self,
        caller: Caller,
        remotes: &[UsedRemote],
        p: &Planned,
    ) -> Result<Option<(String, ArtifactRecord)>, Error> {
        let mut activity = RemoteActivity::default();
        for spec in remotes.iter().filter(|s| s.pull) {
            let parts = Parts {
                artifact: false,
                buildtree: true,
                sources: false,
                log: true,
            };
            let Some(result) =
                self.fetch_from(spec, &p.key, Outcome::Failed, parts, &mut activity, &|_| {})?
            else {
                continue;
            };
            if result.buildtree.is_none() {
                continue;
            }
            let record = self.record_pulled(caller, spec, &p.key, result, Some(p))?;
            return Ok(Some((spec.url.clone(), record)));
        }
        Ok(None)
    }

    /// `parts` of the entry under `key` in `spec`'s remote when its build ended
    /// with `outcome`, pulled into the store; `None` for no such entry, an
    /// unusable one, or a remote that failed (noted in `activity`).
    #[allow(clippy::too_many_arguments)]
    fn fetch_from(
        &self,
        spec: &UsedRemote,
        key: &CacheKey,
        outcome: Outcome,
        parts: Parts,
        activity: &mut RemoteActivity,
        say: Say<'_>,
    ) -> Result<Option<BuildResult>, Error> {
        let found = self.remote(spec).and_then(|remote| {
            let found = remote.find_result(key)?;
            Ok((remote, found))
        });
        let (remote, entry) = match found {
            Ok((remote, Found::Entry(entry))) if entry.outcome() == outcome => (remote, entry),
            Ok(_) => return Ok(None),
            Err(e) => return Ok(note(activity, spec, e)),
        };
        say(format!(
            "▶ remote: fetching the {} build under {} from {}\n",
            if outcome == Outcome::Success {
                "successful"
            } else {
                "failed"
            },
            &key.as_str()[..12],
            spec.url
        ));
        let (before, started) = (remote.stats(), std::time::Instant::now());
        match remote.fetch_result(&self.store, self.digest_map(), &entry, parts) {
            Ok(Lookup::Hit(result)) => {
                let after = remote.stats();
                say(format!(
                    "▶ remote: fetched {} blob(s), {}, in {:.1} s\n",
                    after.blobs_received - before.blobs_received,
                    shown_bytes(after.bytes_received - before.bytes_received),
                    started.elapsed().as_secs_f64()
                ));
                Ok(Some(result))
            }
            Ok(Lookup::Miss(why)) => {
                activity.problem(spec, format!("its entry for {key} is unusable ({why})"));
                Ok(None)
            }
            Err(e) => Ok(note(activity, spec, Error::from(e))),
        }
    }

    /// Records `result`, pulled from `spec` into the store under `key`, as
    /// the record of `key` of the pull's producer (replacing theirs, and only
    /// theirs). `planned` gives the element and its sources when the caller has
    /// the project; else the entry must say.
    fn record_pulled(
        &self,
        caller: Caller,
        spec: &UsedRemote,
        key: &CacheKey,
        result: BuildResult,
        planned: Option<&Planned>,
    ) -> Result<ArtifactRecord, Error> {
        let on = || format!("the result pulled for {key}");
        let source_digest = planned
            .map(|p| p.source_digest)
            .or(result.sources)
            .ok_or_else(|| Error::Invalid {
                what: "remote cache entry",
                problem: format!(
                    "the entry for {key} has no source tree; pull it by element name, in its project"
                ),
            })?;
        let (newest, buildtree_size) = match result.buildtree {
            Some(tree) => {
                clock::newest_and_size(&self.store, tree).map_err(Error::store_on(on()))?
            }
            None => (None, 0),
        };
        let artifact_size = match result.artifact {
            Some(tree) => {
                clock::newest_and_size(&self.store, tree)
                    .map_err(Error::store_on(on()))?
                    .1
            }
            None => 0,
        };
        let log_tree = match result.log {
            Some(log) => {
                let txn = self.store.begin().map_err(Error::store_on(on()))?;
                let tree = stage::log_tree(&txn, log)?;
                txn.commit().map_err(Error::store_on(on()))?;
                Some(tree)
            }
            None => None,
        };
        let record = ArtifactRecord {
            key: key.clone(),
            element: planned.map_or(result.info.element, |p| p.element.name.clone()),
            outcome: result.outcome,
            source_digest,
            dependency_hash: planned
                .map_or(result.info.dependency_hash, |p| p.dependency_hash.clone()),
            artifact: result.artifact,
            buildtree: result.buildtree,
            snapshot: None,
            newest_mtime: newest.map(clock::pair),
            buildtree_size,
            log: result.log,
            caches: Default::default(),
            incremental: result.info.incremental,
            commands_run: result.info.commands_run,
            failure: result.failure,
            workspace: None,
            owner: caller.uid,
            producer: self.producer_of_pull(caller, spec, key)?,
            time: now_secs(),
        };
        let mut batch = rocksdb::WriteBatch::default();
        self.put_artifact(&mut batch, &record, log_tree, artifact_size);
        self.db.write(batch)?;
        Ok(record)
    }

    /// Pushes the result recorded under `key` to every remote in `remotes`
    /// that pushes; failures are noted in `activity`.
    pub(super) fn push_recorded(
        &self,
        caller: Caller,
        remotes: &[UsedRemote],
        key: &CacheKey,
        activity: &mut RemoteActivity,
        say: Say<'_>,
    ) -> Result<Vec<Transfer>, Error> {
        let mut transfers = Vec::new();
        if !remotes.iter().any(|s| s.push) {
            return Ok(transfers);
        }
        let Some(record) = self.artifact(caller.uid, key)? else {
            return Ok(transfers);
        };
        for spec in remotes.iter().filter(|s| s.push) {
            say(format!("▶ remote: pushing to {}\n", spec.url));
            let started = std::time::Instant::now();
            match self.push_record_to(spec, &record) {
                Ok(transfer) => {
                    say(format!(
                        "▶ remote: sent {} of {} blob(s), {}, in {:.1} s\n",
                        transfer.moved_blobs,
                        transfer.blobs,
                        shown_bytes(transfer.moved_bytes),
                        started.elapsed().as_secs_f64()
                    ));
                    activity.pushed_to.push(spec.url.clone());
                    transfers.push(transfer);
                }
                Err(e) => {
                    activity.problem(spec, format!("push failed: {}", crate::error::message(&e)))
                }
            }
        }
        Ok(transfers)
    }

    /// Pushes `record` to `spec`'s remote: its trees, its sources when the
    /// store still holds them, its log, then the entry.
    fn push_record_to(
        &self,
        spec: &UsedRemote,
        record: &ArtifactRecord,
    ) -> Result<Transfer, Error> {
        let remote = self.remote(spec)?;
        let mut result = BuildResult {
            outcome: record.outcome,
            artifact: record.artifact,
            buildtree: record.buildtree,
            sources: Some(record.source_digest),
            log: record.log,
            failure: record.failure.clone(),
            info: BuildInfo {
                element: record.element.clone(),
                dependency_hash: record.dependency_hash.clone(),
                commands_run: record.commands_run,
                incremental: record.incremental,
                time: record.time,
            },
        };
        let pushed = match remote.put_result(&self.store, self.digest_map(), &record.key, &result) {
            // A source tree gc took (nothing keeps sources but their
            // workspaces and buildtrees): the entry goes without it.
            Err(RemoteError::Store(_) | RemoteError::Tree(_))
                if !stage::is_intact(&self.store, record.source_digest) =>
            {
                result.sources = None;
                remote.put_result(&self.store, self.digest_map(), &record.key, &result)
            }
            other => other,
        }?;
        Ok(Transfer {
            url: spec.url.clone(),
            blobs: pushed.blobs,
            moved_blobs: pushed.sent_blobs,
            moved_bytes: pushed.sent_bytes,
        })
    }
}

/// Notes a remote's failure; a lookup that failed is a miss.
fn note<T>(activity: &mut RemoteActivity, spec: &RemoteSpec, e: Error) -> Option<T> {
    activity.problem(spec, crate::error::message(&e));
    None
}

/// What `ws push` or `ws pull` names: an element of a project (its current
/// key), or a cache key.
#[derive(Clone, Debug)]
pub enum TransferTarget {
    /// An element of the project at `project_dir`.
    Element {
        /// The project directory (the path of the caller's descriptor for it).
        project_dir: std::path::PathBuf,
        /// The element.
        element: String,
    },
    /// A cache key; `project_dir`, if given, adds the project's remotes.
    Key {
        /// The key.
        key: CacheKey,
        /// A project whose remotes to use too.
        project_dir: Option<std::path::PathBuf>,
    },
}

impl TransferReport {
    /// The report on `record` after `transfers`.
    fn of(record: ArtifactRecord, transfers: Vec<Transfer>) -> TransferReport {
        TransferReport {
            element: record.element,
            cache_key: record.key,
            outcome: record.outcome,
            artifact: record.artifact,
            buildtree: record.buildtree,
            log: record.log,
            transfers,
        }
    }
}

impl Manager {
    /// `ws push`: uploads the result recorded under the target's key (its
    /// trees, sources and log, then its action cache entry) to every remote
    /// that takes pushes. Fails if nothing is recorded under the key, if no
    /// remote takes pushes, or with the first remote that fails.
    pub fn push(
        &self,
        caller: Caller,
        target: TransferTarget,
        options: &crate::manager::RemoteOptions,
    ) -> Result<TransferReport, Error> {
        // The project and configuration files first, with no lock held.
        let (key, planned, remotes) = self.transfer_target(caller, target, options)?;
        let _slot = self.long_work.enter(caller.uid, Work::Transfer);
        let _store = self.store_guard();
        let Some(record) = self.artifact(caller.uid, &key)? else {
            return Err(Error::NotBuilt {
                element: key.to_string(),
                problem: "nothing is cached under this key here; build it first".into(),
            });
        };
        // A key given as such is a digest like any other: a push sends what is
        // under it to a remote of the caller's choosing.
        if planned.is_none() {
            let trees = [
                record.artifact,
                record.buildtree,
                Some(record.source_digest),
            ];
            for tree in trees.into_iter().flatten() {
                self.check_readable(caller, tree)?;
            }
        }
        let pushing: Vec<&UsedRemote> = remotes.iter().filter(|s| s.push).collect();
        if pushing.is_empty() {
            return Err(no_remote(&remotes, "push = true"));
        }
        let mut transfers = Vec::new();
        for spec in pushing {
            transfers.push(self.push_record_to(spec, &record)?);
        }
        Ok(TransferReport::of(record, transfers))
    }

    /// `ws pull`: fetches everything the first remote that pulls and has an
    /// entry under the target's key holds (artifact, buildtree, sources, log),
    /// verified, and records it here (replacing a local record). Fails if no
    /// remote has a usable entry.
    pub fn pull(
        &self,
        caller: Caller,
        target: TransferTarget,
        options: &crate::manager::RemoteOptions,
    ) -> Result<TransferReport, Error> {
        // The project and configuration files first, with no lock held.
        let (key, planned, remotes) = self.transfer_target(caller, target, options)?;
        let _slot = self.long_work.enter(caller.uid, Work::Transfer);
        let _store = self.store_guard();
        let pulling: Vec<&UsedRemote> = remotes.iter().filter(|s| s.pull).collect();
        if pulling.is_empty() {
            return Err(no_remote(&remotes, "pull = true"));
        }
        let mut misses = Vec::new();
        for spec in pulling {
            let remote = self.remote(spec)?;
            let before = remote.stats();
            let entry = match remote.find_result(&key)? {
                Found::Entry(entry) => entry,
                Found::Miss(why) => {
                    misses.push(format!("{}: {why}", spec.url));
                    continue;
                }
            };
            let result =
                match remote.fetch_result(&self.store, self.digest_map(), &entry, Parts::ALL)? {
                    Lookup::Hit(result) => result,
                    Lookup::Miss(why) => {
                        misses.push(format!("{}: {why}", spec.url));
                        continue;
                    }
                };
            let after = remote.stats();
            let blobs = after.blobs_received - before.blobs_received;
            let transfer = Transfer {
                url: spec.url.clone(),
                blobs,
                moved_blobs: blobs,
                moved_bytes: after.bytes_received - before.bytes_received,
            };
            let record = self.record_pulled(caller, spec, &key, result, planned.as_ref())?;
            return Ok(TransferReport::of(record, vec![transfer]));
        }
        Err(Error::NotBuilt {
            element: planned.map_or_else(|| key.to_string(), |p| p.element.name),
            problem: format!(
                "no remote cache has a usable result under key {key} ({})",
                misses.join("; ")
            ),
        })
    }

    /// The key a push or pull is about, the element's plan when it names one,
    /// and the remotes to use.
    fn transfer_target(
        &self,
        caller: Caller,
        target: TransferTarget,
        options: &crate::manager::RemoteOptions,
    ) -> Result<(CacheKey, Option<Planned>, Vec<UsedRemote>), Error> {
        self.serves(caller)?;
        match target {
            TransferTarget::Element {
                project_dir,
                element,
            } => {
                let loaded = self.load_project(caller, &project_dir)?;
                let planned = self.plan(caller, &loaded, &element)?;
                let target = planned
                    .into_iter()
                    .last()
                    .expect("a plan ends with its target");
                let remotes = self.remotes_for(caller, &loaded.project.remotes, options)?;
                Ok((target.key.clone(), Some(target), remotes))
            }
            TransferTarget::Key { key, project_dir } => {
                let project = match project_dir {
                    Some(dir) => self.load_project(caller, &dir)?.project.remotes,
                    None => Vec::new(),
                };
                Ok((key, None, self.remotes_for(caller, &project, options)?))
            }
        }
    }
}

/// The error of a push or pull that has no remote to use.
fn no_remote(remotes: &[UsedRemote], setting: &str) -> Error {
    Error::Invalid {
        what: "remote cache",
        problem: if remotes.is_empty() {
            "no remote cache is configured: add a [[remote]] table to ws.toml or to ~/.config/ws/config.toml (docs/remote.md)".to_owned()
        } else {
            format!(
                "none of the remote caches configured ({}) has {setting}",
                remotes
                    .iter()
                    .map(|s| s.url.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    }
}
