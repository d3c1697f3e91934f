//! One element's build as a transaction (docs/design.md, "Workspaces and incremental builds" and "Builds").
//!
//! ```text
//! view of the build:   upper = build-<id> (active)   lower = B_prev (or the sources)
//! ```
//!
//! The build's active snapshot is prepared on the previous buildtree (a workspace
//! that built before, or was opened from a failed build) or on the source tree,
//! and recorded as running. Its view is mounted, the source changes since that
//! buildtree are laid over it (the delta: changed files newer than every output,
//! deleted ones removed), and the commands run in the sandbox. Then, whatever
//! the commands did, the layer is committed as a buildtree and one batch records
//! the artifact record under the cache key, its refs, the workspace's new state
//! and the end of the running build. On success the workspace moves to the new
//! buildtree and artifact; on failure it keeps what it had, and the failed
//! buildtree and log are cached under the key.
//!
//! # Crash safety
//!
//! Nothing the build writes is referenced before that last batch: a crash before
//! it leaves a running build that recovery unmounts and removes
//! ([`Manager::recover`]), and the workspace as before the build. An error on the
//! way (the sandbox cannot start, the disk fills while the artifact is captured)
//! removes the active snapshot the same way, at once.
//!
//! # Locking
//!
//! The workspace's lock is held only at the end, to record the result over the
//! record as it is then: commits and discards may run while a build does (the
//! edits the build took were captured at its start). A second build of the same
//! workspace is refused as busy.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use overlay::{Content, MountPlan, Owner};
use treediff::{CaptureMode, CaptureOptions, Digest};

use super::clock;
use super::open::BuildtreeSource;
use super::plan::Planned;
use super::record::{ArtifactRecord, Outcome, RunningBuild, SnapshotRef, cache_ref};
use super::stage::{log_tree, trash};
use super::{BuildObserver, ElementReport, ElementResult};
use crate::error::Error;
use crate::manager::refs::RefKind;
use crate::manager::{Caller, Manager, Snapper, new_id, now_secs};
use crate::project::{Element, shown_size};
use crate::sandbox::{self, Cancel, Spec, Step, TmpfsLimits};
use crate::workspace::{Buildtree, LastBuild, OpEntry, OpKind, Workspace};

/// The marker a build leaves in its buildtree once its configure commands have
/// all succeeded: later builds from that buildtree skip them.
pub const CONFIGURED_MARKER: &str = ".ws-configured";

/// Where a build starts from.
pub(super) struct Start {
    pub snapper: std::sync::Arc<Snapper>,
    /// Who the build's files belong to, when not the daemon's user.
    pub owner: Option<Owner>,
    /// The committed snapshot the build's layer goes on.
    pub parent: String,
    /// The tree of that snapshot.
    pub parent_tree: Digest,
    /// The source tree in it, which the delta goes from.
    pub from: Digest,
    /// The buildtree it continues, if any.
    pub previous: Option<Buildtree>,
}

/// A build's (or a shell's) layer: its running record, directories and mount.
pub(super) struct Layer {
    pub running: RunningBuild,
    pub dirs: BuildDirs,
    pub plan: MountPlan,
}

/// A build's directories under `<state>/builds/<id>/`: the mount point of its
/// view, its install root, the sandbox's scratch space and the log.
pub(super) struct BuildDirs {
    root: PathBuf,
    pub build: PathBuf,
    pub install: PathBuf,
    scratch: PathBuf,
    log: PathBuf,
}

impl BuildDirs {
    /// Where the build's copy of the element's cache `name` is.
    fn cache(&self, name: &str) -> PathBuf {
        self.root.join("caches").join(name)
    }

    fn make(state: &Path, id: &str, owner: Caller) -> Result<BuildDirs, Error> {
        let root = state.join("builds").join(id);
        let dirs = BuildDirs {
            build: root.join("build"),
            install: root.join("install"),
            scratch: root.join("sandbox"),
            log: root.join("log"),
            root,
        };
        for dir in [&dirs.build, &dirs.install, &dirs.scratch] {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                op: "create the build directory",
                path: dir.clone(),
                source,
            })?;
        }
        // The commands run as the caller and install into this directory.
        give_dir(&dirs.root, "install", owner).map_err(|source| Error::Io {
            op: "give the install directory to the caller",
            path: dirs.install.clone(),
            source,
        })?;
        Ok(dirs)
    }
}

/// What a build of one element needs besides its plan.
pub(super) struct Job<'a> {
    pub caller: Caller,
    pub planned: &'a Planned,
    /// The dependencies' merged artifacts, checked out read-only.
    pub sysroot: Option<PathBuf>,
    pub observer: &'a dyn BuildObserver,
    pub cancel: &'a Cancel,
}

impl Manager {
    /// Builds one element (see the module documentation); its dependencies'
    /// artifacts are in `job.sysroot`.
    pub(super) fn run_build(&self, job: Job<'_>) -> Result<ElementReport, Error> {
        let planned = job.planned;
        let name = planned.element.name.as_str();
        let _building = match &planned.workspace {
            Some(ws) => Some(self.start_building(ws)?),
            None => None,
        };
        let start = self.build_start(job.caller, planned, true)?;
        let layer =
            self.prepare_layer(&start, job.caller, name, "build", job.sysroot.as_deref())?;
        let result = self.run_prepared(&job, &start, &layer.running, &layer.dirs, &layer.plan);
        self.finish_layer(&start, &layer, result.is_err());
        result
    }

    /// Prepares the active snapshot `<what>-<id>` on `start.parent` and the
    /// directories of a build (or a shell), recorded as running so that a crash
    /// leaves nothing recovery would not remove.
    pub(super) fn prepare_layer(
        &self,
        start: &Start,
        caller: Caller,
        element: &str,
        what: &str,
        sysroot: Option<&Path>,
    ) -> Result<Layer, Error> {
        let id = new_id();
        let dirs = BuildDirs::make(self.dirs.root(), &id, caller)?;
        let running = RunningBuild {
            id: id.clone(),
            element: element.to_owned(),
            backend: start.snapper.snap.kind(),
            owner: start.owner.map_or(self.euid, |o| o.uid),
            group: start.owner.map_or(0, |o| o.gid),
            snapshot: format!("{what}-{id}"),
            mount: dirs.build.clone(),
            started: now_secs(),
            sysroot: sysroot.map(Path::to_owned),
        };
        let mut txn = start.snapper.snap.begin();
        let plan = start
            .snapper
            .snap
            .prepare(
                &mut txn,
                &running.snapshot,
                Some(&start.parent),
                Content::Buildtree,
            )
            .map_err(Error::snapshot(element))?;
        self.commit_snapshots(
            &start.snapper,
            txn,
            element,
            |batch| self.put_running(batch, &running),
            || {},
        )?;
        Ok(Layer {
            running,
            dirs,
            plan,
        })
    }

    /// Ends a layer's run: drops its snapshot if asked (a build that failed to
    /// reach its batch, every shell), then its directories.
    pub(super) fn finish_layer(&self, start: &Start, layer: &Layer, drop_snapshot: bool) {
        if drop_snapshot {
            self.abandon(&start.snapper, &layer.running);
        }
        // Never delete through a view that is still mounted: what is left there,
        // recovery removes at the next start.
        if !super::super::is_mounted(&layer.dirs.build) {
            trash(&layer.dirs.root);
        }
    }

    /// Records a cache hit in `p`'s workspace, if it has one: its last build
    /// says "cached", and it continues from the hit's buildtree, which was built
    /// from exactly its current sources, so its next edit builds incrementally
    /// over it instead of from scratch.
    pub(super) fn record_hit_in_workspace(&self, p: &Planned) -> Result<(), Error> {
        let Some(ws) = &p.workspace else {
            return Ok(());
        };
        let Some(record) = self.artifact(ws.owner, &p.key)? else {
            return Ok(());
        };
        let name = p.element.name.as_str();
        let adopted = match BuildtreeSource::of(&record) {
            Some(source) if ws.buildtree.as_ref().is_none_or(|b| b.tree != source.tree) => {
                let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
                Some(self.adopt_buildtree(&snapper, name, source)?)
            }
            _ => None,
        };
        let lock = self.lock(ws)?;
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut ws = self.reread(ws.clone())?;
        if let Some(buildtree) = adopted {
            ws.buildtree = Some(buildtree);
        }
        ws.artifact_ref = Some(record.artifact_ref());
        ws.dependency_hash = Some(record.dependency_hash.clone());
        ws.last_build = Some(LastBuild {
            id: new_id(),
            cache_key: record.key.to_string(),
            result: "cached".to_owned(),
            incremental: record.incremental,
            buildtree: record.buildtree,
            time: now_secs(),
        });
        let mut batch = rocksdb::WriteBatch::default();
        self.put_workspace(&mut batch, &mut ws, None);
        self.db.write(batch)?;
        Ok(())
    }

    /// Refuses a second build of a workspace while one runs.
    fn start_building(&self, ws: &Workspace) -> Result<Building<'_>, Error> {
        let mut building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if !building.insert(ws.id.clone()) {
            return Err(Error::Busy {
                name: ws.name.clone(),
            });
        }
        Ok(Building {
            manager: self,
            id: ws.id.clone(),
        })
    }

    /// Which snapshotter and parent a build of `planned` starts from: its
    /// workspace's buildtree (if `from_buildtree` and it has one), else its
    /// workspace's or the project's sources.
    pub(super) fn build_start(
        &self,
        caller: Caller,
        planned: &Planned,
        from_buildtree: bool,
    ) -> Result<Start, Error> {
        let name = planned.element.name.as_str();
        match &planned.workspace {
            Some(ws) => {
                let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
                let owner = (ws.owner != self.euid).then_some(Owner {
                    uid: ws.owner,
                    gid: ws.group,
                });
                match ws.buildtree.as_ref().filter(|_| from_buildtree) {
                    Some(bt) => Ok(Start {
                        snapper,
                        owner,
                        parent: bt.snapshot.clone(),
                        parent_tree: bt.tree,
                        from: bt.source_digest,
                        previous: Some(bt.clone()),
                    }),
                    None => Ok(Start {
                        snapper,
                        owner,
                        parent: ws.base_snapshot.clone(),
                        parent_tree: ws.base_source_digest,
                        from: ws.base_source_digest,
                        previous: None,
                    }),
                }
            }
            None => {
                let backend = self.probe.choose().0;
                let snapper = self.snapper(backend, caller.uid, caller.gid)?;
                let parent = self.base_snapshot(&snapper, name, planned.source_digest)?;
                let owner = (caller.uid != self.euid).then_some(Owner {
                    uid: caller.uid,
                    gid: caller.gid,
                });
                Ok(Start {
                    snapper,
                    owner,
                    parent,
                    parent_tree: planned.source_digest,
                    from: planned.source_digest,
                    previous: None,
                })
            }
        }
    }

    fn run_prepared(
        &self,
        job: &Job<'_>,
        start: &Start,
        running: &RunningBuild,
        dirs: &BuildDirs,
        plan: &MountPlan,
    ) -> Result<ElementReport, Error> {
        let planned = job.planned;
        let element = &planned.element;
        let name = element.name.as_str();
        let key = running.snapshot.as_str();
        overlay::mount(plan, &dirs.build).map_err(Error::snapshot(name))?;
        let view = plan.view_path(&dirs.build).to_owned();
        let mounted = !matches!(plan, MountPlan::Direct { .. });
        let ran = self.lay_and_run(job, start, key, dirs, &view);
        if mounted {
            overlay::unmount(&dirs.build).map_err(Error::snapshot(name))?;
        }
        let ran = ran?;
        let success = ran.failure.is_none();

        // The artifact (on success) and the log, durable in the store.
        let txn = self
            .store
            .begin()
            .map_err(Error::store_on(format!("element {name}")))?;
        let mut artifact = None;
        let mut artifact_size = 0;
        let mut caches = Vec::new();
        if success {
            let (tree, stats) = treediff::capture(
                &txn,
                &dirs.install,
                &CaptureOptions {
                    mode: CaptureMode::Source,
                    ..CaptureOptions::default()
                },
            )
            .map_err(Error::store_on(format!("the artifact of element {name}")))?;
            artifact = Some(tree);
            artifact_size = stats.bytes;
            for cache in &element.caches {
                let (tree, stats) = treediff::capture(
                    &txn,
                    &dirs.cache(cache),
                    &CaptureOptions {
                        mode: CaptureMode::Buildtree,
                        ..CaptureOptions::default()
                    },
                )
                .map_err(Error::store_on(format!("cache {cache} of element {name}")))?;
                caches.push((cache.clone(), tree, stats.bytes));
            }
        }
        let log_file = std::fs::File::open(&dirs.log).map_err(|source| Error::Io {
            op: "read the build log",
            path: dirs.log.clone(),
            source,
        })?;
        let log = txn
            .put_stream(&mut std::io::BufReader::new(log_file))
            .map_err(Error::store_on(format!("the build log of element {name}")))?;
        let log_tree = log_tree(&txn, log)?;
        txn.commit()
            .map_err(Error::store_on(format!("element {name}")))?;

        // The layer becomes the buildtree; one batch records everything.
        let buildtree_name = format!("buildtree-{}", running.id);
        let mut snaps = start.snapper.snap.begin();
        let info = start
            .snapper
            .snap
            .commit(&mut snaps, &buildtree_name, key)
            .map_err(Error::snapshot(name))?;
        let tree = info.tree.expect("a committed snapshot records its tree");
        let changes = treediff::diff::changes(&self.store, start.parent_tree, tree)
            .map_err(Error::store_on(format!("the buildtree of element {name}")))?;
        let newest = clock::max(
            start
                .previous
                .as_ref()
                .map(|b| clock::from_pair(b.newest_mtime)),
            clock::newest_in_changes(&self.store, &changes)
                .map_err(Error::store_on(format!("the buildtree of element {name}")))?,
        )
        .unwrap_or(treediff::store::OBJECT_MTIME);
        let layer_size = start.snapper.snap.usage(key).map(|u| u.bytes).unwrap_or(0);
        let size = start.previous.as_ref().map_or(0, |b| b.size) + layer_size;
        let incremental = start.previous.is_some();
        let record = ArtifactRecord {
            key: planned.key.clone(),
            element: name.to_owned(),
            outcome: if success {
                Outcome::Success
            } else {
                Outcome::Failed
            },
            source_digest: planned.source_digest,
            dependency_hash: planned.dependency_hash.clone(),
            artifact,
            buildtree: Some(tree),
            snapshot: Some(SnapshotRef {
                backend: start.snapper.snap.kind(),
                owner: running.owner,
                group: running.group,
                name: buildtree_name.clone(),
            }),
            newest_mtime: Some(clock::pair(newest)),
            buildtree_size: size,
            log: Some(log),
            caches: caches
                .iter()
                .map(|(cache, tree, _)| (cache.clone(), tree.to_string()))
                .collect(),
            incremental,
            commands_run: ran.commands_run,
            failure: ran.failure.clone(),
            workspace: planned.workspace.as_ref().map(|w| w.name.clone()),
            owner: job.caller.uid,
            // The build ran as its caller.
            producer: job.caller.uid,
            time: now_secs(),
        };
        let buildtree = Buildtree {
            snapshot: buildtree_name,
            tree,
            source_digest: planned.source_digest,
            newest_mtime: clock::pair(newest),
            size,
        };
        let lock = match &planned.workspace {
            Some(ws) => Some(self.lock(ws)?),
            None => None,
        };
        let _held = lock
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
        let workspace = match &planned.workspace {
            Some(ws) => Some(self.reread(ws.clone())?),
            None => None,
        };
        self.commit_snapshots(
            &start.snapper,
            snaps,
            name,
            |batch| {
                self.put_artifact(batch, &record, Some(log_tree), artifact_size);
                for (cache, tree, size) in &caches {
                    self.put_ref_into(
                        batch,
                        &cache_ref(job.caller.uid, name, cache),
                        *tree,
                        RefKind::Buildtree,
                        *size,
                    );
                }
                self.end_running(batch, &running.id);
                if let Some(mut ws) = workspace {
                    record_in_workspace(&mut ws, &record, &running.id, buildtree);
                    let entry = OpEntry {
                        seq: ws.next_op,
                        op: if success {
                            OpKind::Build
                        } else {
                            OpKind::BuildFailed
                        },
                        before: None,
                        after: Some(planned.source_digest),
                        changes: 0,
                        message: Some(match &record.failure {
                            Some(why) => format!("{}: {why}", record.key),
                            None => record.key.to_string(),
                        }),
                        time: record.time,
                        undoes: None,
                    };
                    self.put_workspace(batch, &mut ws, Some(entry));
                }
            },
            || {},
        )?;
        tracing::info!(element = name, key = %record.key, success, incremental, commands = ran.commands_run, "built");
        Ok(ElementReport {
            element: name.to_owned(),
            cache_key: record.key.clone(),
            result: if success {
                ElementResult::Built
            } else {
                ElementResult::Failed
            },
            incremental,
            commands_run: ran.commands_run,
            artifact,
            buildtree: Some(tree),
            log: Some(log),
            workspace: record.workspace.clone(),
            message: ran.failure,
            verification: None,
            remote: Default::default(),
        })
    }

    /// Lays the source changes over the mounted view and runs the commands.
    fn lay_and_run(
        &self,
        job: &Job<'_>,
        start: &Start,
        key: &str,
        dirs: &BuildDirs,
        view: &Path,
    ) -> Result<Ran, Error> {
        let planned = job.planned;
        let element = &planned.element;
        let name = element.name.as_str();
        let configured = self.lay_delta(start, planned, key, view)?;
        let configure_steps = if configured {
            0
        } else {
            element.configure.len()
        };
        let steps = steps(element, configured);
        let spec = self.sandbox_spec(
            job.caller,
            element,
            job.sysroot.clone(),
            dirs,
            view,
            steps.clone(),
            true,
        )?;
        let mut log = std::fs::File::create(&dirs.log).map_err(|source| Error::Io {
            op: "create the build log",
            path: dirs.log.clone(),
            source,
        })?;
        let mut log_error = None;
        let mut on_output = |chunk: &[u8]| {
            if let Err(e) = log.write_all(chunk) {
                log_error.get_or_insert(e);
            }
            job.observer.output(name, chunk);
        };
        let outcome = sandbox::run(
            &self.sandbox_exe,
            &spec,
            sandbox::Stdio::Captured,
            &mut on_output,
            job.cancel,
        )
        .map_err(|source| Error::Sandbox {
            element: name.to_owned(),
            source,
        })?;
        if configure_steps > 0 && outcome.succeeded >= configure_steps {
            mark_configured(view).map_err(|source| Error::Io {
                op: "mark the buildtree as configured",
                path: view.join(CONFIGURED_MARKER),
                source,
            })?;
        }
        let failure = describe_failure(&outcome, &steps);
        if let Some(why) = &failure {
            on_output(format!("ws: {name} failed: {why}\n").as_bytes());
        }
        if let Some(e) = log_error {
            return Err(Error::Io {
                op: "write the build log",
                path: dirs.log.clone(),
                source: e,
            });
        }
        let commands_run = (outcome.succeeded + usize::from(outcome.failed.is_some())) as u32;
        Ok(Ran {
            failure,
            commands_run,
        })
    }

    /// Makes the mounted `view` of the layer `key` what the commands are to see:
    /// a continued buildtree whose mtimes are ahead of this clock is moved back
    /// (order kept), and the source changes since `start.from` are laid over it.
    /// Returns whether the buildtree it continues was configured.
    pub(super) fn lay_delta(
        &self,
        start: &Start,
        planned: &Planned,
        key: &str,
        view: &Path,
    ) -> Result<bool, Error> {
        let name = planned.element.name.as_str();
        let mut configured = false;
        if let Some(previous) = &start.previous {
            let newest = clock::from_pair(previous.newest_mtime);
            if clock::is_ahead(newest) {
                let stamps = clock::future_stamps(&self.store, previous.tree, newest)
                    .map_err(Error::store_on(format!("the buildtree of element {name}")))?;
                tracing::info!(
                    element = name,
                    entries = stamps.len(),
                    "the buildtree's mtimes are ahead of this clock: moved back"
                );
                overlay::restamp(&self.store, key, view, &stamps).map_err(Error::snapshot(name))?;
            } else {
                clock::settle(newest);
            }
            configured = treediff::Dir::read(&self.store, previous.tree, "")
                .map_err(Error::store_on(format!("the buildtree of element {name}")))?
                .get(CONFIGURED_MARKER)
                .is_some();
        }
        if start.from != planned.source_digest {
            overlay::lay_over(
                &self.store,
                key,
                view,
                start.from,
                planned.source_digest,
                start.owner,
            )
            .map_err(Error::snapshot(name))?;
        }
        Ok(configured)
    }

    /// The sandbox's spec for running `steps` of `element` in `view`, with the
    /// element's caches as saved (`saved_caches`) or empty (a build's output is
    /// captured).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sandbox_spec(
        &self,
        caller: Caller,
        element: &Element,
        sysroot: Option<PathBuf>,
        dirs: &BuildDirs,
        view: &Path,
        steps: Vec<Step>,
        saved_caches: bool,
    ) -> Result<Spec, Error> {
        Ok(Spec {
            build_dir: view.to_owned(),
            install_dir: Some(dirs.install.clone()),
            sysroot,
            caches: self.restore_caches(dirs, element, caller, saved_caches)?,
            hide: vec![self.dirs.root().to_owned()],
            scratch: dirs.scratch.clone(),
            network: element.network,
            uid: caller.uid,
            gid: caller.gid,
            env: element.env.clone(),
            steps,
            interactive: false,
            terminal: false,
            tmpfs: tmpfs_limits(element, self.config.limits.sandbox_tmpfs)?,
        })
    }

    /// The element's caches for this build, as the caller's directories: each
    /// restored from the content its last successful build saved (a copy, each
    /// file checked against its digest), or empty the first time or unless
    /// `saved`. Only a successful build saves them again, so a failed one leaves
    /// them as they were.
    ///
    /// `<state>/builds/` is root's alone, so the caller cannot reach a cache
    /// while it is restored; should that ever change, they still could not
    /// interfere: the checkout keeps each directory root-only (0700) until it is
    /// complete, gives each entry to the caller through the descriptor that made
    /// it, and the cache directory last. No owner is ever changed by path, so a
    /// directory swapped for a symlink (by the build's own commands, later) leads
    /// root's chown nowhere.
    fn restore_caches(
        &self,
        dirs: &BuildDirs,
        element: &Element,
        owner: Caller,
        saved: bool,
    ) -> Result<Vec<(String, PathBuf)>, Error> {
        let mut out = Vec::new();
        let element_name = element.name.as_str();
        for name in &element.caches {
            let dir = dirs.cache(name);
            let io = |op, source| Error::Io {
                op,
                path: dir.clone(),
                source,
            };
            std::fs::create_dir_all(dir.parent().expect("a cache has a parent"))
                .map_err(|e| io("make the cache directory", e))?;
            let restored = if saved {
                self.use_ref(&cache_ref(owner.uid, element_name, name))?
            } else {
                None
            };
            match restored {
                Some(saved) => {
                    treediff::checkout::checkout(
                        &self.store,
                        saved.tree,
                        &dir,
                        &treediff::CheckoutOptions {
                            mode: treediff::CheckoutMode::Copy,
                            owner: (owner.uid != self.euid).then_some((owner.uid, owner.gid)),
                        },
                    )
                    .map_err(Error::store_on(format!(
                        "cache {name} of element {element_name}"
                    )))?;
                }
                None => {
                    // Its mode is in the cache's tree: 0755 whatever the
                    // daemon's umask, as before it had one of its own.
                    let caches = std::fs::File::open(dirs.root.join("caches"))
                        .map_err(|e| io("open the caches directory of", e))?;
                    treediff::safe_fs::make_dir_at(
                        caches.as_fd(),
                        name.as_ref(),
                        0o755,
                        Some((owner.uid, owner.gid)),
                    )
                    .map_err(|e| io("make the cache directory", e.into()))?;
                }
            }
            out.push((name.clone(), dir));
        }
        Ok(out)
    }

    /// Drops a build that did not reach its batch: unmounts its view, removes
    /// its active snapshot and its running record. Failures are logged: what is
    /// left, recovery removes at the next start.
    pub(super) fn abandon(&self, snapper: &Snapper, running: &RunningBuild) {
        if super::super::is_mounted(&running.mount) {
            let _ = overlay::unmount(&running.mount);
        }
        let mut txn = snapper.snap.begin();
        if let Err(e) = snapper.snap.remove(&mut txn, &running.snapshot) {
            tracing::warn!(build = running.id, error = %e, "cannot remove the build's snapshot; the next start will");
            return;
        }
        if let Err(e) = self.commit_snapshots(
            snapper,
            txn,
            &running.element,
            |batch| self.end_running(batch, &running.id),
            || {},
        ) {
            tracing::warn!(build = running.id, error = %e, "cannot drop the build; the next start will");
        }
    }
}

/// A workspace being built; released when dropped.
struct Building<'a> {
    manager: &'a Manager,
    id: String,
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        let mut building = self
            .manager
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        building.remove(&self.id);
    }
}

/// Leaves the (empty) configured marker in the buildtree `view`, whatever the
/// commands left under its name: they run as the caller and may have put a
/// symlink there, which a write by path would follow as root. The view is
/// opened by its path in root's own `builds/`; the marker beneath it, with
/// `O_NOFOLLOW | O_EXCL` after removing what was there.
fn mark_configured(view: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let dir = treediff::safe_fs::open_dir_no_symlinks(view)?;
    match rustix::fs::unlinkat(&dir, CONFIGURED_MARKER, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(&dir, CONFIGURED_MARKER, flags, Mode::from_raw_mode(0o644))?;
    Ok(())
}

/// Gives the directory `name` in `parent` (a build's own directory, which only
/// root can change) to `owner`: through a descriptor opened without following a
/// symlink, never by path.
fn give_dir(parent: &Path, name: &str, owner: Caller) -> std::io::Result<()> {
    let parent = std::fs::File::open(parent)?;
    let dir = treediff::safe_fs::open_dir_at(parent.as_fd(), name.as_ref())?;
    Ok(treediff::safe_fs::fchown(
        dir.as_fd(),
        owner.uid,
        owner.gid,
    )?)
}

/// The commands of `element`, as sandbox steps: configure (unless the
/// buildtree is `configured`), build, install.
pub(super) fn steps(element: &Element, configured: bool) -> Vec<Step> {
    let configure: &[String] = if configured { &[] } else { &element.configure };
    [
        ("configure", configure),
        ("build", &element.build[..]),
        ("install", &element.install[..]),
    ]
    .into_iter()
    .flat_map(|(phase, commands)| {
        commands.iter().map(move |command| Step {
            phase: phase.to_owned(),
            argv: vec![
                "/bin/sh".to_owned(),
                "-e".to_owned(),
                "-c".to_owned(),
                command.clone(),
            ],
            display: command.clone(),
        })
    })
    .collect()
}

/// What the commands did.
pub(super) struct Ran {
    /// Why the build failed, if it did.
    failure: Option<String>,
    commands_run: u32,
}

/// Why a run failed, in words; `None` if it did not.
pub(super) fn describe_failure(outcome: &sandbox::Outcome, steps: &[Step]) -> Option<String> {
    if outcome.cancelled {
        return Some("the build was cancelled".to_owned());
    }
    if let Some(failed) = &outcome.failed {
        let step = &steps[failed.step];
        let how = match (failed.code, failed.signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "failed".to_owned(),
        };
        return Some(format!("{} command `{}` {how}", step.phase, step.display));
    }
    if !outcome.stray_writes.is_empty() {
        const SHOWN: usize = 10;
        let mut paths = outcome.stray_writes[..outcome.stray_writes.len().min(SHOWN)].join(", ");
        if outcome.stray_writes.len() > SHOWN {
            paths.push_str(&format!(" and {} more", outcome.stray_writes.len() - SHOWN));
        }
        return Some(format!(
            "it wrote outside its build, install, cache and /tmp directories (the sandbox discarded those writes): {paths}"
        ));
    }
    None
}

/// Moves a workspace's build state to what `record` says.
fn record_in_workspace(
    ws: &mut Workspace,
    record: &ArtifactRecord,
    id: &str,
    buildtree: Buildtree,
) {
    let success = record.outcome == Outcome::Success;
    ws.last_build = Some(LastBuild {
        id: id.to_owned(),
        cache_key: record.key.to_string(),
        result: if success { "built" } else { "failed" }.to_owned(),
        incremental: record.incremental,
        buildtree: record.buildtree,
        time: record.time,
    });
    if success {
        ws.buildtree = Some(buildtree);
        ws.artifact_ref = Some(record.artifact_ref());
        ws.dependency_hash = Some(record.dependency_hash.clone());
    }
}

/// The limits of `element`'s in-memory filesystems: what it asks for, at most
/// the daemon's maximum `max` (a request over it is refused, naming both).
fn tmpfs_limits(element: &Element, max: TmpfsLimits) -> Result<TmpfsLimits, Error> {
    let over = |key: &str, asked: String, most: String| Error::Invalid {
        what: "element",
        problem: format!(
            "element {} asks for {key} = {asked}, more than this daemon allows ({most}); ask for less",
            element.name
        ),
    };
    let size = element.tmpfs_size.unwrap_or(max.size);
    if size > max.size {
        return Err(over("tmpfs-size", shown_size(size), shown_size(max.size)));
    }
    let inodes = element.tmpfs_inodes.unwrap_or(max.inodes);
    if inodes > max.inodes {
        return Err(over(
            "tmpfs-inodes",
            inodes.to_string(),
            max.inodes.to_string(),
        ));
    }
    Ok(TmpfsLimits { size, inodes })
}
