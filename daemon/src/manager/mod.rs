//! `Manager`: the workspaces and their transactions.
//!
//! # Locking
//!
//! Operations on one workspace are serialized by its lock, taken with `try_lock`:
//! a second operation while one runs fails with [`Error::Busy`] at once (a commit
//! racing a discard: one wins, the other is told). An open reserves its name until
//! its batch records it, so a name is given out once. Operations on different
//! workspaces run in parallel; the snapshotters serialize only their own record
//! changes.
//!
//! # Crash safety
//!
//! Every mutation follows docs/design.md, "The commit protocol": the data first (blobs and trees in
//! the store, made durable by its transaction; layer directories, synced by the
//! snapshot transaction), then one RocksDB batch with `sync = true` that moves the
//! workspace record, its op log entry and the snapshot records together, then the
//! reply. A crash before the batch leaves orphans that [`Manager::recover`]
//! collects; a crash after it leaves the new state. Mounts are not state: recovery
//! mounts every open workspace again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use overlay::{BackendKind, ChangeOptions, Owner, Probe, Snapshotter};
use rocksdb::WriteBatch;
use treediff::{Change, Digest, Store};

use crate::db::{Db, RocksRecords, cf};
use crate::error::Error;
use crate::project::DaemonConfig;
use crate::state_dir::StateDir;
use crate::workspace::{OpEntry, Workspace};

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
    pub path: Option<MountPoint>,
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
    /// Names being opened (owner, name): reserved until the open's batch records
    /// them or the open fails, so that a slow open (a large import) holds no lock
    /// that other opens wait for.
    opening: Mutex<std::collections::HashSet<(u32, String)>>,
    /// Taken shared by every operation that writes to the store or reads trees
    /// from it, exclusively by gc (see gc.rs).
    gc_lock: RwLock<()>,
    /// The workspaces (by id) a build is running in: one at a time each.
    building: Mutex<std::collections::HashSet<String>>,
    /// The `wsd` binary that runs build sandboxes (`wsd __sandbox`): this
    /// process's own executable, unless set otherwise (tests).
    sandbox_exe: PathBuf,
    /// Project sources watched since their last import (`None`: no inotify).
    source_watch: Option<source_watch::SourceWatch>,
    /// Connections to remote caches, and the digest table.
    remotes: remotes::Remotes,
    /// The daemon's configuration file, as the admin wrote it.
    config: DaemonConfig,
    /// Slots for imports, pulls and builds (see `long_work`).
    long_work: long_work::LongWork,
}

/// A name reserved by an open in progress; released when dropped.
struct NameReservation<'a> {
    manager: &'a Manager,
    key: (u32, String),
}

impl Drop for NameReservation<'_> {
    fn drop(&mut self) {
        let mut opening = self
            .manager
            .opening
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        opening.remove(&self.key);
    }
}

thread_local! {
    /// How many [`StoreGuard`]s this thread holds: nested operations (an open
    /// imports, a commit reads the status) take the shared lock once, so a gc
    /// waiting for it cannot deadlock them.
    static STORE_GUARDS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The gc lock held shared by this thread; see [`Manager::store_guard`].
pub(super) struct StoreGuard<'a> {
    _held: Option<std::sync::RwLockReadGuard<'a, ()>>,
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        STORE_GUARDS.with(|n| n.set(n.get() - 1));
    }
}

impl Manager {
    /// Opens the state in `dirs` (creating it, private to the daemon and
    /// tightened if an older release left it open: see `state_dir::modes`),
    /// probes the machine, and recovers from whatever a crash left (see
    /// [`Manager::recover`]).
    pub fn open(dirs: StateDir) -> Result<Manager, Error> {
        Manager::open_configured(dirs, DaemonConfig::default())
    }

    /// [`Manager::open`], with the daemon's configuration file's `config`.
    pub fn open_configured(dirs: StateDir, config: DaemonConfig) -> Result<Manager, Error> {
        Manager::open_inner(dirs, config, |_| {})
    }

    /// [`Manager::open`], with what the probe found changed by `adjust` before
    /// anything uses it: for tests of a machine that lacks a backend (kernel
    /// overlayfs, say) on one that has it.
    pub fn open_with_probe(
        dirs: StateDir,
        adjust: impl FnOnce(&mut Probe),
    ) -> Result<Manager, Error> {
        Manager::open_inner(dirs, DaemonConfig::default(), adjust)
    }

    fn open_inner(
        dirs: StateDir,
        config: DaemonConfig,
        adjust: impl FnOnce(&mut Probe),
    ) -> Result<Manager, Error> {
        dirs.prepare()?;
        let db = Arc::new(Db::open(&dirs.db())?);
        let store = Arc::new(Store::open(dirs.root()).map_err(Error::store(""))?);
        let mut probe = overlay::probe::probe(&dirs.snapshots()).map_err(|source| Error::Io {
            op: "probe the snapshot backends in",
            path: dirs.snapshots(),
            source,
        })?;
        adjust(&mut probe);
        let manager = Manager {
            dirs,
            store,
            probe,
            euid: nix::unistd::geteuid().as_raw(),
            snappers: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            opening: Mutex::new(Default::default()),
            gc_lock: RwLock::new(()),
            building: Mutex::new(Default::default()),
            sandbox_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("wsd")),
            source_watch: source_watch::SourceWatch::start(),
            remotes: remotes::Remotes::new(crate::remote::DigestMap::new(db.clone())),
            db,
            long_work: long_work::LongWork::new(long_work::Limits {
                per_user: config.limits.long_operations_per_user,
                imports: config.limits.imports,
            }),
            config,
        };
        manager.recover()?;
        Ok(manager)
    }

    /// Runs build sandboxes with `exe` (a `wsd` binary) instead of this process's
    /// own executable: for tests, whose executable is not `wsd`.
    pub fn set_sandbox_exe(&mut self, exe: PathBuf) {
        self.sandbox_exe = exe;
    }

    /// What the probe found.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The daemon's configuration file, as the admin wrote it.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
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
        let _store = self.store_guard();
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
        let _store = self.store_guard();
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
        self.log_of(&ws.id)
    }

    fn log_of(&self, id: &str) -> Result<Vec<OpEntry>, Error> {
        self.db
            .scan(self.db.cf(cf::OPLOG), id.as_bytes())?
            .into_iter()
            .map(|(_, bytes)| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| self.db.corrupt("op log", e.to_string()).into())
            })
            .collect()
    }

    // -------------------------------------------------------------- helpers

    /// Keeps gc out while the store is written or trees are read from it: held
    /// by every operation on the store, from its first write until the batch that
    /// references what it wrote.
    pub(super) fn store_guard(&self) -> StoreGuard<'_> {
        let depth = STORE_GUARDS.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        let held = (depth == 1).then(|| self.gc_lock.read().unwrap_or_else(|e| e.into_inner()));
        StoreGuard { _held: held }
    }

    fn lock(&self, ws: &Workspace) -> Result<Arc<Mutex<()>>, Error> {
        Ok(self
            .locks
            .lock()
            .unwrap()
            .entry(ws.id.clone())
            .or_default()
            .clone())
    }

    /// Refuses a caller whose files this daemon cannot read or write as them: a
    /// daemon not running as root serves its own user only.
    fn serves(&self, caller: Caller) -> Result<(), Error> {
        if self.euid != 0 && caller.uid != self.euid {
            return Err(Error::Denied {
                problem: format!(
                    "this daemon runs as uid {} and works only with its own user's files; use your own (ws starts one for your state directory)",
                    self.euid
                ),
            });
        }
        Ok(())
    }

    /// Reserves `name` for `uid` while it is being opened: refused if a workspace
    /// has it or another open is making one with it.
    fn reserve_name(&self, uid: u32, name: &str) -> Result<NameReservation<'_>, Error> {
        let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        let taken = || Error::NameTaken {
            name: name.to_owned(),
        };
        if opening.contains(&(uid, name.to_owned())) {
            return Err(taken());
        }
        if self
            .db
            .get(self.db.cf(cf::NAMES), &name_key(uid, name))?
            .is_some()
        {
            return Err(taken());
        }
        opening.insert((uid, name.to_owned()));
        Ok(NameReservation {
            manager: self,
            key: (uid, name.to_owned()),
        })
    }

    /// Runs `f` on the caller's workspace `name` with its lock held (a second
    /// operation meanwhile fails with [`Error::Busy`]) and its record read again
    /// under the lock.
    fn with_workspace<T>(
        &self,
        caller: Caller,
        name: &str,
        f: impl FnOnce(Workspace) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let ws = self.get(caller, name)?;
        let lock = self.lock(&ws)?;
        let _held = lock.try_lock().map_err(|_| Error::Busy {
            name: name.to_owned(),
        })?;
        // A write through the view that a crash cut off is finished first: every
        // operation starts from the state it was to leave.
        let ws = self.finish_pending(self.reread(ws)?)?;
        f(ws)
    }

    /// Commits a snapshot transaction of `snapper`: once its directories are synced,
    /// its record changes and what `more` adds go in one synced batch; `written`
    /// runs after the batch, before removed directories go to the trash.
    fn commit_snapshots(
        &self,
        snapper: &Snapper,
        txn: overlay::Txn<'_>,
        name: &str,
        more: impl FnOnce(&mut WriteBatch),
        written: impl FnOnce(),
    ) -> Result<(), Error> {
        txn.commit(|ops| {
            let mut batch = WriteBatch::default();
            let mut records = snapper.records.batch(&mut batch);
            for op in ops {
                op.write_into(&mut records);
            }
            more(&mut batch);
            self.db.write(batch)?;
            written();
            Ok::<(), crate::db::DbError>(())
        })
        .map_err(|e| match e {
            overlay::CommitError::Sync(e) => Error::snapshot(name)(e),
            overlay::CommitError::Write(e) => e.into(),
        })
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

    /// Every snapshotter that has a directory, by that directory's name.
    /// `workspaces` (all of them) give the group of a foreign owner's files.
    fn all_snappers(&self, workspaces: &[Workspace]) -> Result<Vec<(String, Arc<Snapper>)>, Error> {
        let io = |source| Error::Io {
            op: "list",
            path: self.dirs.snapshots(),
            source,
        };
        let mut snappers = Vec::new();
        for dir in std::fs::read_dir(self.dirs.snapshots()).map_err(io)? {
            let name = dir.map_err(io)?.file_name().to_string_lossy().into_owned();
            let Some((backend, owner)) = parse_snapper_dir(&name) else {
                continue;
            };
            let group = workspaces
                .iter()
                .find(|w| Some(w.owner) == owner)
                .map_or(0, |w| w.group);
            let snapper = self.snapper(backend, owner.unwrap_or(self.euid), group)?;
            snappers.push((name, snapper));
        }
        Ok(snappers)
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
}

pub mod build;
mod close;
mod edit;
mod fsck;
mod gc;
mod grants;
mod import;
mod long_work;
mod mount_point;
mod open;
mod recover;
mod refs;
mod remotes;
mod source_watch;
mod store_ops;
mod undo;
mod verify_layers;
mod view_write;
pub mod write_back;

pub use fsck::{FsckProblem, FsckReport};
pub use gc::{GcOptions, GcReport};
pub use import::ImportOptions;
pub use mount_point::MountPoint;
pub use refs::{Ref, RefKind};
pub use remotes::RemoteOptions;
pub use store_ops::TreeChange;
pub use undo::Undone;
pub use write_back::{
    Conflict as WriteBackConflict, ConflictCause, WriteBackReport, WriteBackStop,
};

/// The stable name of a change kind, as clients see it.
pub fn change_name(kind: treediff::ChangeKind) -> &'static str {
    match kind {
        treediff::ChangeKind::Added => "added",
        treediff::ChangeKind::Deleted => "deleted",
        treediff::ChangeKind::Modified => "modified",
        treediff::ChangeKind::ModeChanged => "mode_changed",
        treediff::ChangeKind::TypeChanged => "type_changed",
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
pub(crate) fn new_id() -> String {
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
