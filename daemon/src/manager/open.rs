//! Opening a workspace: import the source, share a base snapshot, mount a view.

use std::path::{Path, PathBuf};

use overlay::{Content, MountPlan};
use rocksdb::WriteBatch;
use treediff::Digest;

use super::import::ImportOptions;
use super::{Caller, Manager, OpenRequest, Snapper, Source, name_key, new_id, now_secs};
use crate::crash::crash_point;
use crate::db::cf;
use crate::error::Error;
use crate::workspace::{OpEntry, OpKind, State, Workspace, validate_name};

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
        let name = request.name.as_str();
        validate_name(name).map_err(|problem| Error::Invalid {
            what: "workspace name",
            problem: format!("{}: {problem}", crate::workspace::shown(name)),
        })?;
        let _names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .db
            .get(self.db.cf(cf::NAMES), &name_key(caller.uid, name))?
            .is_some()
        {
            return Err(Error::NameTaken {
                name: name.to_owned(),
            });
        }
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
        let snapper = self.snapper(backend, caller.uid, caller.gid)?;
        let (tree, source) = match &request.source {
            Source::Dir(dir) => {
                let (tree, _) = self.import_source(caller, dir, &ImportOptions::default())?;
                (tree, Some(dir.clone()))
            }
            Source::Tree(tree) => {
                treediff::Dir::read(&self.store, *tree, "").map_err(|e| Error::Invalid {
                    what: "source tree",
                    problem: format!("{tree}: {e}"),
                })?;
                (*tree, None)
            }
        };
        crash_point!("open-after-import");
        let base = self.base_snapshot(&snapper, name, tree)?;
        let path = self.mount_point(caller, name, request.path.as_deref())?;

        let id = new_id();
        let key = format!("ws-{id}");
        let mut txn = snapper.snap.begin();
        let plan = snapper
            .snap
            .prepare(&mut txn, &key, Some(&base), Content::Source)
            .map_err(Error::snapshot(name))?;
        crash_point!("open-before-mount");
        let (path, mounted_by_daemon) =
            self.mount_view(name, &plan, &path, request.path.is_some())?;
        crash_point!("open-before-batch");
        let now = now_secs();
        let mut ws = Workspace {
            id: id.clone(),
            name: name.to_owned(),
            owner: caller.uid,
            group: caller.gid,
            path: path.clone(),
            mounted_by_daemon,
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
            created: now,
            updated: now,
            next_op: 0,
        };
        let entry = OpEntry {
            seq: 0,
            op: OpKind::Open,
            before: None,
            after: Some(tree),
            changes: 0,
            message: None,
            time: now,
        };
        let result = txn.commit(|ops| {
            let mut batch = WriteBatch::default();
            let mut records = snapper.records.batch(&mut batch);
            for op in ops {
                op.write_into(&mut records);
            }
            self.put_workspace(&mut batch, &mut ws, Some(entry));
            batch.put_cf(
                self.db.cf(cf::NAMES),
                name_key(caller.uid, name),
                id.as_bytes(),
            );
            self.db.write(batch)
        });
        if let Err(e) = result {
            if mounted_by_daemon {
                let _ = overlay::unmount(&path);
            }
            return Err(match e {
                overlay::CommitError::Sync(e) => Error::snapshot(name)(e),
                overlay::CommitError::Write(e) => e.into(),
            });
        }
        crash_point!("open-after-batch");
        tracing::info!(workspace = name, owner = caller.uid, %backend, path = %path.display(), source = %tree, "opened");
        Ok(ws)
    }

    /// The committed snapshot holding `tree`, shared by the workspaces opened over
    /// it; made if missing.
    fn base_snapshot(&self, snapper: &Snapper, name: &str, tree: Digest) -> Result<String, Error> {
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
        txn.commit(|ops| {
            let mut batch = WriteBatch::default();
            let mut records = snapper.records.batch(&mut batch);
            for op in ops {
                op.write_into(&mut records);
            }
            self.db.write(batch)
        })
        .map_err(|e| match e {
            overlay::CommitError::Sync(e) => Error::snapshot(name)(e),
            overlay::CommitError::Write(e) => e.into(),
        })?;
        Ok(base)
    }

    /// The directory a new workspace is mounted on: `requested` (an existing empty
    /// directory owned by the caller) or a fresh one under the state directory.
    fn mount_point(
        &self,
        caller: Caller,
        name: &str,
        requested: Option<&Path>,
    ) -> Result<PathBuf, Error> {
        use std::os::unix::fs::MetadataExt;
        let Some(path) = requested else {
            let path = self
                .dirs
                .workspaces()
                .join(caller.uid.to_string())
                .join(name);
            std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                op: "create the mount point",
                path: path.clone(),
                source,
            })?;
            let owner = (caller.uid != self.euid).then_some(caller.uid);
            if let Some(uid) = owner {
                let _ = nix::unistd::chown(&path, Some(uid.into()), Some(caller.gid.into()));
            }
            return Ok(path);
        };
        let invalid = |problem: String| Error::Invalid {
            what: "mount point",
            problem: format!("{}: {problem}", path.display()),
        };
        let meta = std::fs::symlink_metadata(path).map_err(|e| invalid(e.to_string()))?;
        if !meta.is_dir() {
            return Err(invalid("it is not a directory".to_owned()));
        }
        if meta.uid() != caller.uid {
            return Err(Error::Denied {
                problem: format!(
                    "{} does not belong to you; workspaces are mounted only on your own empty directories",
                    path.display()
                ),
            });
        }
        let mut entries = std::fs::read_dir(path).map_err(|e| invalid(e.to_string()))?;
        if entries.next().is_some() {
            return Err(invalid("it is not empty".to_owned()));
        }
        Ok(path.to_owned())
    }

    /// Mounts `plan` on `path`; returns where the files are and whether the daemon
    /// mounted something there. A mirror's directory is bind-mounted when the
    /// daemon may mount; otherwise its files stay where they are, and a requested
    /// path cannot be honoured.
    pub(super) fn mount_view(
        &self,
        name: &str,
        plan: &MountPlan,
        path: &Path,
        requested: bool,
    ) -> Result<(PathBuf, bool), Error> {
        let plan = match plan {
            MountPlan::Direct {
                path: dir,
                read_only,
            } => {
                if !self.probe.kernel_overlay.available {
                    if requested {
                        return Err(Error::Invalid {
                            what: "mount point",
                            problem: format!(
                                "the mirror backend cannot mount without privileges; its files are in {}: omit --path",
                                dir.display()
                            ),
                        });
                    }
                    return Ok((dir.clone(), false));
                }
                MountPlan::Bind {
                    source: dir.clone(),
                    read_only: *read_only,
                }
            }
            other => other.clone(),
        };
        overlay::mount(&plan, path).map_err(Error::snapshot(name))?;
        Ok((path.to_owned(), true))
    }
}
