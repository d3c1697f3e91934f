//! The parallel walk: directories are listed, and their entries stat'ed, hashed
//! (unless the stat cache vouches for them) and staged, on several threads.
//!
//! All work is relative to directory file descriptors, one component at a time
//! (`openat` with `O_NOFOLLOW`, `fstatat`, `readlinkat`), as `find` does: the kernel
//! never resolves a long path, and a directory swapped for a symlink mid-walk cannot
//! redirect the walk outside the root. Threads take directories from a shared stack
//! (depth first keeps few directories open); each thread keeps its results and
//! stat-cache entries to itself and hands them over once, when it ends.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use nix::sys::stat::FileStat as Stat;

use super::file::file_digest;
use super::rules::{Patterns, Rules};
use super::{CaptureError, CaptureMode, CaptureOptions, CaptureStats, count};
use crate::digest::Digest;
use crate::names;
use crate::statcache::{FileId, StatCache, StatRecord, record_time_for_capture_starting_now};
use crate::store::StoreTxn;
use crate::sys::{self, Mtime};
use crate::tree::{MAX_DEPTH, Props};

/// What the walk found at one path.
#[derive(Debug)]
pub(super) enum FoundNode {
    File { digest: Digest, executable: bool },
    Symlink { target: String },
    Dir,
}

/// One entry, by root-relative path ("" is the root).
#[derive(Debug)]
pub(super) struct Found {
    pub path: String,
    pub node: FoundNode,
    pub props: Option<Props>,
}

/// Everything the walk found, in no particular order.
#[derive(Debug, Default)]
pub(super) struct Walked {
    pub found: Vec<Found>,
    pub stats: CaptureStats,
}

/// A directory to list: the root (already open) or a child of an open directory.
struct Job {
    open: Open,
    rel: String,
    depth: usize,
    rules: Arc<Rules>,
}

enum Open {
    Ready(OwnedFd),
    Child(Arc<OwnedFd>, String),
}

/// The shared stack of directories still to list.
struct Queue {
    jobs: Mutex<Vec<Job>>,
    ready: Condvar,
    /// Jobs queued or being worked on; the walk is over when it drops to zero.
    pending: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<CaptureError>>,
}

impl Queue {
    fn push(&self, job: Job) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.jobs.lock().unwrap().push(job);
        self.ready.notify_one();
    }

    /// The next job, or `None` when the walk is over or failed.
    fn next(&self) -> Option<Job> {
        let mut jobs = self.jobs.lock().unwrap();
        loop {
            if self.failed.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(job) = jobs.pop() {
                return Some(job);
            }
            if self.pending.load(Ordering::SeqCst) == 0 {
                return None;
            }
            jobs = self.ready.wait(jobs).unwrap();
        }
    }

    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _guard = self.jobs.lock().unwrap();
            self.ready.notify_all();
        }
    }

    fn fail(&self, err: CaptureError) {
        self.error.lock().unwrap().get_or_insert(err);
        self.failed.store(true, Ordering::SeqCst);
        let _guard = self.jobs.lock().unwrap();
        self.ready.notify_all();
    }
}

/// Per-thread state: results are merged into the shared list, and stat-cache entries
/// recorded, once, when the thread ends.
pub(super) struct Local<'a> {
    shared: &'a Mutex<Walked>,
    cache: Option<&'a dyn StatCache>,
    root: &'a Path,
    pub walked: Walked,
    pub cache_entries: Vec<(FileId, StatRecord)>,
    pub buf: Vec<u8>,
    pub recorded_ns: i64,
    /// The directory being listed, root-relative.
    rel: String,
}

impl Local<'_> {
    /// The filesystem path of `name` in the directory being listed, for messages.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(&self.rel).join(name)
    }
}

impl Drop for Local<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.cache {
            cache.put(&self.cache_entries);
        }
        let mut shared = self.shared.lock().unwrap();
        shared.found.append(&mut self.walked.found);
        shared.stats.add(&self.walked.stats);
    }
}

/// Walks `root` on `options.threads` threads.
pub(super) fn walk(
    txn: &StoreTxn<'_>,
    root: &Path,
    options: &CaptureOptions<'_>,
) -> Result<Walked, CaptureError> {
    let patterns = Rules::patterns(options.ignore_patterns)?;
    let io = |source| CaptureError::Io {
        op: "open",
        path: root.to_owned(),
        source,
    };
    // The root is opened as the reader too, and the calling thread goes back to
    // being the writer whatever the open did.
    let fd = match options.access {
        None => sys::open_dir(root).map_err(io)?,
        Some(access) => {
            access.as_reader().map_err(io)?;
            let fd = sys::open_dir(root);
            access.as_writer().map_err(io)?;
            fd.map_err(io)?
        }
    };
    let queue = Queue {
        jobs: Mutex::new(Vec::new()),
        ready: Condvar::new(),
        pending: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    queue.push(Job {
        open: Open::Ready(fd),
        rel: String::new(),
        depth: 0,
        rules: Rules::none(),
    });
    let shared = Mutex::new(Walked::default());
    let recorded_ns = record_time_for_capture_starting_now();
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| {
                let mut local = Local {
                    shared: &shared,
                    cache: options.stat_cache,
                    root,
                    walked: Walked::default(),
                    cache_entries: Vec::new(),
                    buf: Vec::new(),
                    recorded_ns,
                    rel: String::new(),
                };
                if let Some(access) = options.access
                    && let Err(source) = access.as_reader()
                {
                    queue.fail(CaptureError::Io {
                        op: "take on the reader's permissions for",
                        path: root.to_owned(),
                        source,
                    });
                    return;
                }
                while let Some(job) = queue.next() {
                    if let Err(err) = list_dir(txn, job, &queue, &patterns, options, &mut local) {
                        queue.fail(err);
                    }
                    queue.done();
                }
            });
        }
    });
    if let Some(err) = queue.error.into_inner().unwrap() {
        return Err(err);
    }
    Ok(shared.into_inner().unwrap())
}

/// Lists one directory: records it, queues its subdirectories, captures the rest.
fn list_dir(
    txn: &StoreTxn<'_>,
    job: Job,
    queue: &Queue,
    patterns: &Patterns,
    options: &CaptureOptions<'_>,
    local: &mut Local<'_>,
) -> Result<(), CaptureError> {
    let io = |op, path: PathBuf| move |source| CaptureError::Io { op, path, source };
    let dir_path = local.root.join(&job.rel);
    let fd = match job.open {
        Open::Ready(fd) => fd,
        Open::Child(parent, name) => sys::open_dir_at(parent.as_fd(), OsStr::new(&name))
            .map_err(io("open", dir_path.clone()))?,
    };
    let fd = Arc::new(fd);
    local.rel.clone_from(&job.rel);
    let buildtree = options.mode == CaptureMode::Buildtree;
    let props = if buildtree {
        Some(props_of(
            &sys::fstat(fd.as_fd()).map_err(io("stat", dir_path.clone()))?,
        ))
    } else {
        None
    };
    local.walked.stats.dirs += 1;
    local.walked.found.push(Found {
        path: job.rel.clone(),
        node: FoundNode::Dir,
        props,
    });

    let mut entries = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd.as_fd())
        .map_err(|e| io("list", dir_path.clone())(e.into()))?
    {
        let entry = entry.map_err(|e| io("list", dir_path.clone())(e.into()))?;
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let name = std::str::from_utf8(bytes)
            .map_err(|_| CaptureError::NameNotUtf8 {
                path: dir_path.join(OsStr::from_bytes(bytes)),
            })?
            .to_owned();
        entries.push((name, entry.file_type()));
    }

    let mut rules = job.rules.clone();
    // `.wsignore` files describe sources: a buildtree records everything a build
    // left, its outputs above all (which the sources' rules usually ignore).
    if !buildtree
        && entries
            .iter()
            .any(|(name, kind)| name == ".wsignore" && *kind != rustix::fs::FileType::Directory)
    {
        let text = read_rules_file(fd.as_fd()).map_err(io("read", local.path(".wsignore")))?;
        rules = Rules::child(&job.rules, &job.rel, &text)?;
    }

    for (name, kind) in entries {
        if names::is_daemon_temp(&name) {
            continue;
        }
        let stat = |local: &Local<'_>| {
            sys::lstat_at(fd.as_fd(), OsStr::new(&name)).map_err(io("stat", local.path(&name)))
        };
        // d_type is not filled in on every filesystem; fall back to a stat.
        let (kind, mut known_stat) = match kind {
            rustix::fs::FileType::Unknown => {
                let st = stat(local)?;
                (rustix::fs::FileType::from_raw_mode(st.st_mode), Some(st))
            }
            kind => (kind, None),
        };
        let rel = names::join(&job.rel, &name);
        let is_dir = kind == rustix::fs::FileType::Directory;
        if patterns.ignores(&rel, is_dir) || rules.ignores(&rel, is_dir) {
            continue;
        }
        count(options.progress, 1, 0);
        let (node, props) = match kind {
            rustix::fs::FileType::Directory => {
                if job.depth + 1 > MAX_DEPTH {
                    return Err(CaptureError::TooDeep {
                        path: local.path(&name),
                    });
                }
                let open = Open::Child(fd.clone(), name);
                queue.push(Job {
                    open,
                    rel,
                    depth: job.depth + 1,
                    rules: rules.clone(),
                });
                continue;
            }
            rustix::fs::FileType::RegularFile => {
                let st = match known_stat.take() {
                    Some(st) => st,
                    None => stat(local)?,
                };
                let (digest, st) = file_digest(txn, fd.as_fd(), &name, st, options, local)?;
                local.walked.stats.files += 1;
                local.walked.stats.bytes += st.st_size as u64;
                let executable = st.st_mode & 0o100 != 0;
                (
                    FoundNode::File { digest, executable },
                    buildtree.then(|| props_of(&st)),
                )
            }
            rustix::fs::FileType::Symlink => {
                local.walked.stats.symlinks += 1;
                let target = sys::readlink_at(fd.as_fd(), OsStr::new(&name))
                    .map_err(io("read symlink", local.path(&name)))?;
                let target = target
                    .into_string()
                    .map_err(|_| CaptureError::TargetNotUtf8 {
                        path: local.path(&name),
                    })?;
                let props = if buildtree {
                    let st = match known_stat.take() {
                        Some(st) => st,
                        None => stat(local)?,
                    };
                    Some(Props {
                        mtime: Some(mtime_of(&st)),
                        unix_mode: None,
                    })
                } else {
                    None
                };
                (FoundNode::Symlink { target }, props)
            }
            other => {
                let kind = match other {
                    rustix::fs::FileType::Fifo => "FIFO",
                    rustix::fs::FileType::Socket => "socket",
                    rustix::fs::FileType::BlockDevice => "block device",
                    _ => "character device",
                };
                return Err(CaptureError::Unsupported {
                    path: local.path(&name),
                    kind,
                });
            }
        };
        local.walked.found.push(Found {
            path: rel,
            node,
            props,
        });
    }
    Ok(())
}

/// The `.wsignore` of the open directory `dir`, read relative to it like everything
/// else below the root (non-blocking: it could be a FIFO).
fn read_rules_file(dir: std::os::fd::BorrowedFd<'_>) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    sys::open_source_file_at(dir, OsStr::new(".wsignore"))?.read_to_string(&mut text)?;
    Ok(text)
}

pub(super) fn mtime_of(st: &Stat) -> Mtime {
    Mtime {
        seconds: st.st_mtime,
        nanos: st.st_mtime_nsec as u32,
    }
}

/// Buildtree properties: the mtime and the permission bits (setuid, setgid and
/// sticky stripped).
pub(super) fn props_of(st: &Stat) -> Props {
    Props {
        mtime: Some(mtime_of(st)),
        unix_mode: Some(st.st_mode & 0o777),
    }
}
