//! `Manager`: the workspaces and their transactions.
//!
//! # Locking
//!
//! Operations on one workspace are serialized by its lock, taken with `try_lock`:
//! a second operation while one runs fails with [`Error::Busy`] at once (a commit
//! racing a discard: one wins, the other is told). Opening and closing also take
//! the names lock, so a name is given out once. Operations on different workspaces
//! run in parallel; the snapshotters serialize only their own record changes.
//!
//! # Crash safety
//!
//! Every mutation follows DESIGN.md section 6: the data first (blobs and trees in
//! the store, made durable by its transaction; layer directories, synced by the
//! snapshot transaction), then one RocksDB batch with `sync = true` that moves the
//! workspace record, its op log entry and the snapshot records together, then the
//! reply. A crash before the batch leaves orphans that [`Manager::recover`]
//! collects; a crash after it leaves the new state. Mounts are not state: recovery
//! mounts every open workspace again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use overlay::{BackendKind, ChangeOptions, Content, MountPlan, Owner, Probe, Snapshotter};
use rocksdb::WriteBatch;
use treediff::{CaptureOptions, Change, Digest, Store};

use crate::crash::crash_point;
use crate::db::{Db, RocksRecords, RocksStatCache, cf};
use crate::error::Error;
use crate::state_dir::StateDir;
use crate::workspace::{OpEntry, OpKind, State, Workspace, validate_name};

/// Who is asking, as the transport vouched for it (SO_PEERCRED or the bus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// What a workspace is opened over.
#[derive(Clone, Debug)]
pub enum Source {
    /// A directory, imported into the store first.
    Dir(PathBuf),
    /// A tree already in the store.
    Tree(Digest),
}

/// A request to open a workspace.
#[derive(Clone, Debug)]
pub struct OpenRequest {
    /// Its name, unique among the caller's workspaces.
    pub name: String,
    /// What it starts from.
    pub source: Source,
    /// Where its files should appear: an empty directory owned by the caller;
    /// `None` for `<state>/workspaces/<uid>/<name>`.
    pub path: Option<PathBuf>,
    /// The backend; `None` for the probe's choice.
    pub backend: Option<BackendKind>,
}

/// A workspace and what changed in it since its last commit.
#[derive(Clone, Debug)]
pub struct Status {
    /// The record.
    pub workspace: Workspace,
    /// The tree its view holds now.
    pub current: Digest,
    /// From its source tree to `current`, in tree order.
    pub changes: Vec<Change>,
}

/// A snapshotter's backend, and the uid its files are given to if not the daemon's.
type SnapperKey = (BackendKind, Option<u32>);

/// A snapshotter and its records.
#[derive(Debug)]
struct Snapper {
    snap: Box<dyn Snapshotter>,
    records: RocksRecords,
}

/// The workspaces of one state directory.
#[derive(Debug)]
pub struct Manager {
    dirs: StateDir,
    db: Arc<Db>,
    store: Arc<Store>,
    probe: Probe,
    euid: u32,
    /// By backend and, for a root daemon serving another user, that user's uid.
    snappers: Mutex<HashMap<SnapperKey, Arc<Snapper>>>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    names: Mutex<()>,
}

impl Manager {
    /// Opens the state in `dirs` (creating it), probes the machine, and recovers
    /// from whatever a crash left (see [`Manager::recover`]).
    pub fn open(dirs: StateDir) -> Result<Manager, Error> {
        dirs.create().map_err(|source| Error::Io {
            op: "create the state directory",
            path: dirs.root().to_owned(),
            source,
        })?;
        let db = Arc::new(Db::open(&dirs.db())?);
        let store = Arc::new(Store::open(dirs.root()).map_err(Error::store(""))?);
        let probe = overlay::probe::probe(&dirs.snapshots()).map_err(|source| Error::Io {
            op: "probe the snapshot backends in",
            path: dirs.snapshots(),
            source,
        })?;
        let manager = Manager {
            dirs,
            db,
            store,
            probe,
            euid: nix::unistd::geteuid().as_raw(),
            snappers: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            names: Mutex::new(()),
        };
        manager.recover()?;
        Ok(manager)
    }

    /// What the probe found.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    // ------------------------------------------------------------------ reads

    /// The caller's workspaces (every workspace, for root).
    pub fn list(&self, caller: Caller) -> Result<Vec<Workspace>, Error> {
        let mut out = Vec::new();
        for (_, bytes) in self.db.scan(self.db.cf(cf::WORKSPACES), b"")? {
            let ws = self.decode_workspace(&bytes)?;
            if caller.uid == 0 || ws.owner == caller.uid {
                out.push(ws);
            }
        }
        out.sort_by(|a, b| (a.owner, &a.name).cmp(&(b.owner, &b.name)));
        Ok(out)
    }

    /// The caller's workspace `name`. Another user's workspace is "not found":
    /// its existence is not revealed.
    pub fn get(&self, caller: Caller, name: &str) -> Result<Workspace, Error> {
        let not_found = || Error::NoSuchWorkspace {
            name: name.to_owned(),
        };
        let Some(id) = self
            .db
            .get(self.db.cf(cf::NAMES), &name_key(caller.uid, name))?
        else {
            return Err(not_found());
        };
        let id =
            String::from_utf8(id).map_err(|_| self.db.corrupt("name", "the id is not UTF-8"))?;
        self.workspace_by_id(&id)?.ok_or_else(not_found)
    }

    fn workspace_by_id(&self, id: &str) -> Result<Option<Workspace>, Error> {
        match self.db.get(self.db.cf(cf::WORKSPACES), id.as_bytes())? {
            Some(bytes) => Ok(Some(self.decode_workspace(&bytes)?)),
            None => Ok(None),
        }
    }

    fn decode_workspace(&self, bytes: &[u8]) -> Result<Workspace, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| self.db.corrupt("workspace", e.to_string()).into())
    }

    /// The workspace and what changed in it since its last commit.
    pub fn status(&self, caller: Caller, name: &str) -> Result<Status, Error> {
        let ws = self.get(caller, name)?;
        self.status_of(ws)
    }

    fn status_of(&self, ws: Workspace) -> Result<Status, Error> {
        let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
        let set = snapper
            .snap
            .changes(&ws.snapshot, &ChangeOptions::default())
            .map_err(Error::snapshot(&ws.name))?;
        let changes = if set.parent_tree == ws.source_digest {
            set.changes
        } else {
            treediff::diff::changes(&self.store, ws.source_digest, set.tree)
                .map_err(Error::store(&ws.name))?
        };
        Ok(Status {
            workspace: ws,
            current: set.tree,
            changes,
        })
    }

    /// The changes since the last commit as a unified patch (git style).
    pub fn patch(&self, caller: Caller, name: &str) -> Result<String, Error> {
        let status = self.status(caller, name)?;
        let mut out = String::new();
        for change in &status.changes {
            let mut leaves = Vec::new();
            treediff::diff::expand(&self.store, change, &mut |leaf| {
                leaves.push(leaf);
                Ok(())
            })
            .map_err(Error::store(name))?;
            for leaf in leaves {
                out.push_str(
                    &treediff::unified_diff(&self.store, &leaf, 3).map_err(Error::store(name))?,
                );
            }
        }
        Ok(out)
    }

    /// The workspace's op log, oldest first.
    pub fn log(&self, caller: Caller, name: &str) -> Result<Vec<OpEntry>, Error> {
        let ws = self.get(caller, name)?;
        self.db
            .scan(self.db.cf(cf::OPLOG), ws.id.as_bytes())?
            .into_iter()
            .map(|(_, bytes)| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| self.db.corrupt("op log", e.to_string()).into())
            })
            .collect()
    }

    // -------------------------------------------------------------- mutations

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
            Source::Dir(dir) => (self.import(name, dir)?, Some(dir.clone())),
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

    /// Records the view's current tree as the workspace's source tree. Returns the
    /// status as committed (no changes left), or the unchanged status when there
    /// was nothing to commit.
    ///
    /// # Crash safety
    ///
    /// Reading the layer makes the new tree durable in the store; one batch then
    /// moves the workspace's source digest and appends the op log entry. The layer
    /// keeps the edits (an editor may hold them open): the view does not change.
    pub fn commit(
        &self,
        caller: Caller,
        name: &str,
        message: Option<String>,
    ) -> Result<Status, Error> {
        let ws = self.get(caller, name)?;
        let lock = self.lock(&ws)?;
        let _held = lock.try_lock().map_err(|_| Error::Busy {
            name: name.to_owned(),
        })?;
        let ws = self.reread(ws)?;
        let status = self.status_of(ws)?;
        if status.changes.is_empty() {
            return Ok(status);
        }
        let mut ws = status.workspace;
        let entry = OpEntry {
            seq: ws.next_op,
            op: OpKind::Commit,
            before: Some(ws.source_digest),
            after: Some(status.current),
            changes: status.changes.len() as u64,
            message,
            time: now_secs(),
        };
        ws.source_digest = status.current;
        let mut batch = WriteBatch::default();
        self.put_workspace(&mut batch, &mut ws, Some(entry));
        crash_point!("commit-before-batch");
        self.db.write(batch)?;
        crash_point!("commit-after-batch");
        tracing::info!(workspace = name, source = %status.current, changes = status.changes.len(), "committed");
        Ok(Status {
            workspace: ws,
            current: status.current,
            changes: Vec::new(),
        })
    }

    /// Makes the view equal to the workspace's source tree again, writing the
    /// reversal through it (files open in an editor stay valid). Returns what was
    /// dropped; the dropped edits stay in the store, named in the op log.
    pub fn discard(&self, caller: Caller, name: &str) -> Result<Vec<Change>, Error> {
        let ws = self.get(caller, name)?;
        let lock = self.lock(&ws)?;
        let _held = lock.try_lock().map_err(|_| Error::Busy {
            name: name.to_owned(),
        })?;
        let mut ws = self.reread(ws)?;
        let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
        let reverted = snapper
            .snap
            .revert(
                &ws.snapshot,
                &ws.path,
                Some(ws.source_digest),
                &ChangeOptions::default(),
            )
            .map_err(Error::snapshot(name))?;
        if reverted.changes.is_empty() {
            return Ok(Vec::new());
        }
        let entry = OpEntry {
            seq: ws.next_op,
            op: OpKind::Discard,
            before: Some(reverted.tree),
            after: Some(ws.source_digest),
            changes: reverted.changes.len() as u64,
            message: None,
            time: now_secs(),
        };
        let mut batch = WriteBatch::default();
        self.put_workspace(&mut batch, &mut ws, Some(entry));
        crash_point!("discard-before-batch");
        self.db.write(batch)?;
        crash_point!("discard-after-batch");
        tracing::info!(
            workspace = name,
            changes = reverted.changes.len(),
            "discarded"
        );
        Ok(reverted.changes)
    }

    /// Unmounts and forgets the workspace. Refused while it has uncommitted changes,
    /// unless `force`; refused while files are open in it.
    pub fn close(&self, caller: Caller, name: &str, force: bool) -> Result<(), Error> {
        let _names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let ws = self.get(caller, name)?;
        let lock = self.lock(&ws)?;
        let _held = lock.try_lock().map_err(|_| Error::Busy {
            name: name.to_owned(),
        })?;
        let ws = self.reread(ws)?;
        if !force && ws.state == State::Open {
            let status = self.status_of(ws.clone())?;
            if !status.changes.is_empty() {
                return Err(Error::Conflict {
                    name: name.to_owned(),
                    problem: format!(
                        "it has {} uncommitted change(s); commit or discard them, or close with --force",
                        status.changes.len()
                    ),
                });
            }
        }
        if ws.mounted_by_daemon && is_mounted(&ws.path) {
            overlay::unmount(&ws.path).map_err(Error::snapshot(name))?;
        }
        crash_point!("close-after-unmount");
        let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
        let mut txn = snapper.snap.begin();
        snapper
            .snap
            .remove(&mut txn, &ws.snapshot)
            .map_err(Error::snapshot(name))?;
        let entry = OpEntry {
            seq: ws.next_op,
            op: OpKind::Close,
            before: Some(ws.source_digest),
            after: None,
            changes: 0,
            message: None,
            time: now_secs(),
        };
        txn.commit(|ops| {
            let mut batch = WriteBatch::default();
            let mut records = snapper.records.batch(&mut batch);
            for op in ops {
                op.write_into(&mut records);
            }
            batch.put_cf(
                self.db.cf(cf::OPLOG),
                op_key(&ws.id, entry.seq),
                serde_json::to_vec(&entry).expect("op log entries serialize"),
            );
            batch.delete_cf(self.db.cf(cf::WORKSPACES), ws.id.as_bytes());
            batch.delete_cf(self.db.cf(cf::NAMES), name_key(ws.owner, &ws.name));
            crash_point!("close-before-batch");
            let written = self.db.write(batch);
            // Before the snapshot's directory goes to the trash.
            crash_point!("close-after-batch");
            written
        })
        .map_err(|e| match e {
            overlay::CommitError::Sync(e) => Error::snapshot(name)(e),
            overlay::CommitError::Write(e) => e.into(),
        })?;
        self.locks.lock().unwrap().remove(&ws.id);
        tracing::info!(workspace = name, "closed");
        Ok(())
    }

    // -------------------------------------------------------------- recovery

    /// Reconciles the database, the snapshot directories and the mount table after
    /// a start: snapshot directories that no record names (a crash before a
    /// commit's batch) are collected, with any mount on them; every open
    /// workspace's view is mounted again if it is not; a workspace whose view cannot
    /// be mounted is marked unmounted (and tried again at the next start).
    pub fn recover(&self) -> Result<(), Error> {
        let workspaces = self.list(Caller { uid: 0, gid: 0 })?;
        for dir in std::fs::read_dir(self.dirs.snapshots()).map_err(|source| Error::Io {
            op: "list",
            path: self.dirs.snapshots(),
            source,
        })? {
            let dir = dir.map_err(|source| Error::Io {
                op: "list",
                path: self.dirs.snapshots(),
                source,
            })?;
            let name = dir.file_name().to_string_lossy().into_owned();
            let Some((backend, owner)) = parse_snapper_dir(&name) else {
                continue;
            };
            let group = workspaces
                .iter()
                .find(|w| Some(w.owner) == owner)
                .map_or(0, |w| w.group);
            let snapper = self.snapper(backend, owner.unwrap_or(self.euid), group)?;
            let cleaned = snapper.snap.cleanup().map_err(Error::snapshot(""))?;
            if !cleaned.orphans.is_empty() {
                tracing::info!(
                    snapshotter = name,
                    orphans = cleaned.orphans.len(),
                    unmounted = cleaned.unmounted.len(),
                    "collected what a crash left"
                );
            }
        }
        for mut ws in workspaces {
            if !ws.mounted_by_daemon || is_mounted(&ws.path) {
                continue;
            }
            let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
            let mounted = snapper
                .snap
                .mounts(&ws.snapshot)
                .map_err(Error::snapshot(&ws.name))
                .and_then(|plan| self.mount_view(&ws.name, &plan, &ws.path, true));
            let state = match &mounted {
                Ok(_) => State::Open,
                Err(e) => {
                    tracing::error!(workspace = ws.name, error = %e, "cannot mount the view again");
                    State::Unmounted
                }
            };
            if state != ws.state {
                ws.state = state;
                let mut batch = WriteBatch::default();
                self.put_workspace(&mut batch, &mut ws, None);
                self.db.write(batch)?;
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- helpers

    fn lock(&self, ws: &Workspace) -> Result<Arc<Mutex<()>>, Error> {
        Ok(self
            .locks
            .lock()
            .unwrap()
            .entry(ws.id.clone())
            .or_default()
            .clone())
    }

    /// The record again, now that the workspace's lock is held.
    fn reread(&self, ws: Workspace) -> Result<Workspace, Error> {
        self.workspace_by_id(&ws.id)?
            .ok_or(Error::NoSuchWorkspace { name: ws.name })
    }

    /// Puts `ws` (and `entry`, advancing its op counter) into `batch`.
    fn put_workspace(&self, batch: &mut WriteBatch, ws: &mut Workspace, entry: Option<OpEntry>) {
        ws.updated = now_secs();
        if let Some(entry) = entry {
            batch.put_cf(
                self.db.cf(cf::OPLOG),
                op_key(&ws.id, entry.seq),
                serde_json::to_vec(&entry).expect("op log entries serialize"),
            );
            ws.next_op = entry.seq + 1;
        }
        batch.put_cf(
            self.db.cf(cf::WORKSPACES),
            ws.id.as_bytes(),
            serde_json::to_vec(ws).expect("workspace records serialize"),
        );
    }

    /// The snapshotter of `backend` for files owned by `uid`.
    fn snapper(&self, backend: BackendKind, uid: u32, gid: u32) -> Result<Arc<Snapper>, Error> {
        let foreign = (uid != self.euid).then_some(uid);
        let mut snappers = self.snappers.lock().unwrap();
        if let Some(s) = snappers.get(&(backend, foreign)) {
            return Ok(s.clone());
        }
        let label = match foreign {
            Some(uid) => format!("{backend}-{uid}"),
            None => backend.to_string(),
        };
        let records = RocksRecords::new(self.db.clone(), &label);
        let owner = foreign.map(|uid| Owner { uid, gid });
        let snap = overlay::open(
            backend,
            &self.probe,
            &self.dirs.snapshots().join(&label),
            Arc::new(records.clone()),
            self.store.clone(),
            owner,
        )
        .map_err(Error::snapshot(""))?;
        let snapper = Arc::new(Snapper { snap, records });
        snappers.insert((backend, foreign), snapper.clone());
        Ok(snapper)
    }

    /// Imports the directory `dir` into the store, with its stat cache.
    fn import(&self, name: &str, dir: &Path) -> Result<Digest, Error> {
        let dir = dir.canonicalize().map_err(|e| Error::Invalid {
            what: "source directory",
            problem: format!("{}: {e}", dir.display()),
        })?;
        let cache = RocksStatCache::new(self.db.clone(), dir.as_os_str().as_encoded_bytes());
        let options = CaptureOptions {
            stat_cache: Some(&cache),
            ..CaptureOptions::default()
        };
        let (tree, stats) =
            treediff::import(&self.store, &dir, &options).map_err(Error::store(name))?;
        tracing::debug!(workspace = name, source = %dir.display(), files = stats.files, hashed = stats.hashed_files, "imported");
        Ok(tree)
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
    fn mount_view(
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

/// The stable name of a change kind, as clients see it.
pub fn change_name(kind: treediff::ChangeKind) -> &'static str {
    match kind {
        treediff::ChangeKind::Added => "added",
        treediff::ChangeKind::Deleted => "deleted",
        treediff::ChangeKind::Modified => "modified",
        treediff::ChangeKind::ModeChanged => "mode-changed",
        treediff::ChangeKind::TypeChanged => "type-changed",
    }
}

/// Whether something is mounted exactly at `path`.
fn is_mounted(path: &Path) -> bool {
    overlay::mount_table().is_ok_and(|table| table.iter().any(|m| m.target == path))
}

/// `<backend>` or `<backend>-<uid>` → (backend, foreign owner).
fn parse_snapper_dir(name: &str) -> Option<(BackendKind, Option<u32>)> {
    if let Ok(kind) = name.parse::<BackendKind>() {
        return Some((kind, None));
    }
    let (backend, uid) = name.rsplit_once('-')?;
    Some((backend.parse().ok()?, Some(uid.parse().ok()?)))
}

fn name_key(uid: u32, name: &str) -> Vec<u8> {
    [&uid.to_be_bytes()[..], name.as_bytes()].concat()
}

fn op_key(id: &str, seq: u64) -> Vec<u8> {
    [id.as_bytes(), &seq.to_be_bytes()[..]].concat()
}

/// 16 hex digits, never reused: time, process and a counter, hashed.
fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!(
        "{nanos}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_owned()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
