//! Opening a workspace: import the source, share a base snapshot, mount a view.

use overlay::Content;
use treediff::Digest;

use super::build::BuildtreeSource;
use super::import::ImportOptions;
use super::long_work::Work;
use super::{Caller, Manager, OpenRequest, Snapper, Source, name_key, new_id, now_secs};
use crate::crash::crash_point;
use crate::db::cf;
use crate::error::Error;
use crate::workspace::{ElementBinding, OpEntry, OpKind, State, Workspace, validate_name};

/// What opening a workspace for a project element adds to an open.
#[derive(Debug, Default)]
pub(super) struct OpenExtra {
    /// The element it is for.
    pub element: Option<ElementBinding>,
    /// The buildtree its first build continues from (a failed build's).
    pub buildtree: Option<BuildtreeSource>,
    /// The source directory to show (the element's in the project).
    pub shown_source: Option<std::path::PathBuf>,
}

impl Manager {
    /// Opens a workspace; see [`OpenRequest`].
    ///
    /// # Crash safety
    ///
    /// The source is imported (durable in the store), the base snapshot committed
    /// (its own batch: an unused base is only garbage), the workspace's snapshot
    /// prepared and mounted, and then one batch records the snapshot, the workspace,
    /// its name and its op log entry. A failure before that batch unmounts and drops
    /// the snapshot; a crash leaves an orphan that recovery collects.
    pub fn open_workspace(&self, caller: Caller, request: OpenRequest) -> Result<Workspace, Error> {
        self.open_workspace_with(caller, request, OpenExtra::default())
    }

    /// [`Manager::open_workspace`], with what an element's workspace adds.
    pub(super) fn open_workspace_with(
        &self,
        caller: Caller,
        request: OpenRequest,
        extra: OpenExtra,
    ) -> Result<Workspace, Error> {
        // An open over a directory is an import: its slot first, so that a
        // queued open holds up no gc.
        let _slot = matches!(request.source, Source::Dir(_))
            .then(|| self.long_work.enter(caller.uid, Work::Import));
        let _store = self.store_guard();
        let name = request.name.as_str();
        validate_name(name).map_err(|problem| Error::Invalid {
            what: "workspace name",
            problem: format!("{}: {problem}", crate::workspace::shown(name)),
        })?;
        let _reserved = self.reserve_name(caller.uid, name)?;
        let backend = match request.backend {
            Some(kind) => kind,
            None => self.probe.choose().0,
        };
        self.probe
            .check(backend)
            .map_err(|problem| Error::Invalid {
                what: "backend",
                problem: format!("{backend}: {problem}"),
            })?;
        if self.euid == 0 && caller.uid != 0 {
            self.probe
                .check_for_other_user(backend)
                .map_err(|problem| Error::Denied {
                    problem: format!("the {backend} backend: {problem}"),
                })?;
        }
        let snapper = self.snapper(backend, caller.uid, caller.gid)?;
        let (tree, source) = match &request.source {
            Source::Dir(dir) => {
                // Recorded where the kernel says it is: `dir` is the path of the
                // client's descriptor (`/proc/self/fd/N`), which means nothing
                // after this call.
                let imported = self.import_dir(caller, dir, &ImportOptions::default())?;
                (imported.tree, Some(imported.shown))
            }
            Source::Tree(tree) => {
                self.check_readable(caller, *tree)?;
                treediff::Dir::read(&self.store, *tree, "").map_err(|e| Error::Invalid {
                    what: "source tree",
                    problem: format!("{tree}: {e}"),
                })?;
                (*tree, None)
            }
        };
        crash_point!("open-after-import");
        let base = self.base_snapshot(&snapper, name, tree)?;
        let buildtree = match extra.buildtree {
            Some(from) => Some(self.adopt_buildtree(&snapper, name, from)?),
            None => None,
        };
        let source = extra.shown_source.or(source);
        let target = self.mount_target(caller, name, request.path.as_ref())?;

        let id = new_id();
        let key = format!("ws-{id}");
        let mut txn = snapper.snap.begin();
        let plan = snapper
            .snap
            .prepare(&mut txn, &key, Some(&base), Content::Source)
            .map_err(Error::snapshot(name))?;
        crash_point!("open-before-mount");
        let mounted = self.mount_view(name, &plan, &target, request.path.is_some())?;
        let (path, mounted_by_daemon) = (mounted.path.clone(), mounted.by_daemon());
        crash_point!("open-before-batch");
        let now = now_secs();
        let mut ws = Workspace {
            id: id.clone(),
            name: name.to_owned(),
            owner: caller.uid,
            group: caller.gid,
            path: path.clone(),
            mounted_by_daemon,
            mount_id: mounted.mount_id,
            backend,
            state: State::Open,
            source,
            base_source_digest: tree,
            source_digest: tree,
            snapshot: key,
            base_snapshot: base,
            dependency_hash: None,
            artifact_ref: None,
            last_build: None,
            element: extra.element,
            buildtree,
            created: now,
            updated: now,
            next_op: 0,
            pending: None,
        };
        let entry = OpEntry {
            seq: 0,
            op: OpKind::Open,
            before: None,
            after: Some(tree),
            changes: 0,
            message: None,
            time: now,
            undoes: None,
        };
        let result = self.commit_snapshots(
            &snapper,
            txn,
            name,
            |batch| {
                self.put_workspace(batch, &mut ws, Some(entry));
                batch.put_cf(
                    self.db.cf(cf::NAMES),
                    name_key(caller.uid, name),
                    id.as_bytes(),
                );
            },
            || {},
        );
        if let Err(e) = result {
            if let Some(id) = mounted.mount_id {
                let _ = overlay::unmount_checked(&path, id);
            }
            mounted.settled();
            return Err(e);
        }
        mounted.settled();
        crash_point!("open-after-batch");
        tracing::info!(workspace = name, owner = caller.uid, %backend, path = %path.display(), source = %tree, "opened");
        Ok(ws)
    }

    /// The committed snapshot holding `tree`, shared by the workspaces opened over
    /// it; made if missing.
    pub(super) fn base_snapshot(
        &self,
        snapper: &Snapper,
        name: &str,
        tree: Digest,
    ) -> Result<String, Error> {
        let base = format!("source-{}-{}", tree.hex(), tree.size());
        let mut txn = snapper.snap.begin();
        match snapper.snap.stat(&base) {
            Ok(_) => return Ok(base),
            Err(overlay::SnapshotError::NotFound { .. }) => {}
            Err(e) => return Err(Error::snapshot(name)(e)),
        }
        snapper
            .snap
            .commit_tree(&mut txn, &base, tree, Content::Source)
            .map_err(Error::snapshot(name))?;
        self.commit_snapshots(snapper, txn, name, |_| {}, || {})?;
        Ok(base)
    }
}
