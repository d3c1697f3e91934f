//! `ws open ELEMENT`: a workspace on a project element's sources that, when the
//! element's current key has a failed build cached, continues from that build's
//! buildtree: its next build recompiles only what the failed build had not
//! finished and what was edited since. When only a remote cache has that failed
//! build (it failed on another machine, in CI), its buildtree is pulled first.

use std::path::PathBuf;

use overlay::{BackendKind, Content};
use treediff::Digest;

use super::record::{Outcome, SnapshotRef};
use crate::error::Error;
use crate::manager::{Caller, Manager, MountPoint, OpenRequest, Snapper, Source};
use crate::project::CacheKey;
use crate::workspace::{Buildtree, ElementBinding, Workspace};

/// A request to open a workspace for an element.
#[derive(Debug)]
pub struct ElementOpen {
    /// The project directory (the path of the caller's descriptor for it).
    pub project_dir: PathBuf,
    /// The element; the workspace gets its name.
    pub element: String,
    /// Start from the sources only, even if a failed build is cached.
    pub fresh: bool,
    /// Where its files appear (see [`OpenRequest::path`]).
    pub path: Option<MountPoint>,
    /// The backend; `None` for the probe's choice.
    pub backend: Option<BackendKind>,
    /// Which remote caches to look in, besides the project's.
    pub remotes: crate::manager::RemoteOptions,
}

/// An element's workspace, opened.
#[derive(Debug)]
pub struct OpenedElement {
    /// The workspace.
    pub workspace: Workspace,
    /// The element's cache key now.
    pub cache_key: CacheKey,
    /// The failed build it continues from, if any (its cache key, the same).
    pub continues_failed_build: bool,
    /// The remote cache that failed build's buildtree was pulled from.
    pub pulled_from: Option<String>,
}

/// A buildtree to start a workspace's builds from, wherever it is held.
#[derive(Clone, Debug)]
pub struct BuildtreeSource {
    /// Its tree.
    pub tree: Digest,
    /// The source tree it was built from.
    pub source_digest: Digest,
    /// Its newest mtime.
    pub newest_mtime: (i64, u32),
    /// Its size.
    pub size: u64,
    /// The committed snapshot that holds it, if one does.
    pub snapshot: Option<SnapshotRef>,
}

impl BuildtreeSource {
    /// The buildtree `record` keeps, if it keeps one.
    pub fn of(record: &super::ArtifactRecord) -> Option<BuildtreeSource> {
        record.buildtree.map(|tree| BuildtreeSource {
            tree,
            source_digest: record.source_digest,
            newest_mtime: record.newest_mtime.unwrap_or((0, 0)),
            size: record.buildtree_size,
            snapshot: record.snapshot.clone(),
        })
    }
}

impl Manager {
    /// Opens a workspace named after `request.element` on the element's sources
    /// in the project; see the module documentation.
    pub fn open_element(
        &self,
        caller: Caller,
        request: ElementOpen,
    ) -> Result<OpenedElement, Error> {
        // The project and configuration files first, with no lock held.
        let loaded = self.load_project(caller, &request.project_dir)?;
        let remotes = match request.fresh {
            true => Vec::new(),
            false => self.remotes_for(caller, &loaded.project.remotes, &request.remotes)?,
        };
        let _store = self.store_guard();
        let element = loaded.project.element(&request.element)?.clone();
        let planned = self.plan(caller, &loaded, &element.name)?;
        let target = planned.last().expect("a plan ends with its target").clone();
        let local = self.artifact(caller.uid, &target.key)?;
        let mut pulled_from = None;
        let failed = match (request.fresh, local) {
            (true, _) => None,
            (false, Some(record)) if record.outcome == Outcome::Failed => {
                BuildtreeSource::of(&record)
            }
            // Succeeded here: nothing to continue. Unknown here: a remote may
            // have the failure.
            (false, Some(_)) => None,
            (false, None) => {
                let pulled = self.pull_failed(caller, &remotes, &target)?;
                pulled_from = pulled.as_ref().map(|(url, _)| url.clone());
                pulled.and_then(|(_, record)| BuildtreeSource::of(&record))
            }
        };
        let continues = failed.is_some();
        let workspace = self.open_workspace_with(
            caller,
            OpenRequest {
                name: element.name.clone(),
                source: Source::Tree(target.source_digest),
                path: request.path,
                backend: request.backend,
            },
            super::super::open::OpenExtra {
                element: Some(ElementBinding {
                    project: loaded.root.clone(),
                    element: element.name.clone(),
                    ignore: element.ignore.clone(),
                }),
                buildtree: failed,
                shown_source: Some(loaded.root.join(&element.sources)),
            },
        )?;
        Ok(OpenedElement {
            workspace,
            cache_key: target.key,
            continues_failed_build: continues,
            pulled_from,
        })
    }

    /// The buildtree `from` as a committed snapshot of `snapper`: the snapshot
    /// that holds it when it is this snapshotter's (no copy), else a checkout of
    /// its tree from the store, made once.
    pub(in crate::manager) fn adopt_buildtree(
        &self,
        snapper: &Snapper,
        name: &str,
        from: BuildtreeSource,
    ) -> Result<Buildtree, Error> {
        let held = from.snapshot.as_ref().is_some_and(|s| {
            s.backend == snapper.snap.kind()
                && snapper
                    .snap
                    .stat(&s.name)
                    .is_ok_and(|info| info.tree == Some(from.tree))
        });
        let snapshot = match (&from.snapshot, held) {
            (Some(s), true) => s.name.clone(),
            _ => {
                let adopted = format!("buildtree-{}-{}", from.tree.hex(), from.tree.size());
                if snapper.snap.stat(&adopted).is_err() {
                    let mut txn = snapper.snap.begin();
                    snapper
                        .snap
                        .commit_tree(&mut txn, &adopted, from.tree, Content::Buildtree)
                        .map_err(Error::snapshot(name))?;
                    self.commit_snapshots(snapper, txn, name, |_| {}, || {})?;
                }
                adopted
            }
        };
        Ok(Buildtree {
            snapshot,
            tree: from.tree,
            source_digest: from.source_digest,
            newest_mtime: from.newest_mtime,
            size: from.size,
        })
    }
}
