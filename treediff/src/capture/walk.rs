//! The parallel walk: every entry under the root is stat'ed, and every file hashed
//! (unless the stat cache vouches for it) and staged, on the walker's threads.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use ignore::gitignore::GitignoreBuilder;
use ignore::{WalkBuilder, WalkState};

use super::{CaptureError, CaptureMode, CaptureOptions, CaptureStats, MAX_ATTEMPTS, count};
use crate::digest::Digest;
use crate::statcache::{
    FileId, FileStat, StatCache, StatRecord, record_time_for_capture_starting_now,
};
use crate::store::StoreTxn;
use crate::store::txn::STREAM_THRESHOLD;
use crate::sys::Mtime;
use crate::tree::Props;

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

/// Per-thread state: results are merged into the shared list, and stat-cache entries
/// recorded, once, when the thread ends.
struct Local<'a> {
    shared: &'a Mutex<Walked>,
    cache: Option<&'a dyn StatCache>,
    walked: Walked,
    cache_entries: Vec<(FileId, StatRecord)>,
    buf: Vec<u8>,
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

pub(super) fn walk(
    txn: &StoreTxn<'_>,
    root: &Path,
    options: &CaptureOptions<'_>,
) -> Result<Walked, CaptureError> {
    let mut builder = WalkBuilder::new(root);
    builder
        .standard_filters(false)
        .follow_links(false)
        .threads(options.threads.max(1))
        .add_custom_ignore_filename(".wsignore");
    if !options.ignore_patterns.is_empty() {
        let mut rules = GitignoreBuilder::new(root);
        for pattern in options.ignore_patterns {
            rules
                .add_line(None, pattern)
                .map_err(|e| CaptureError::Ignore {
                    message: format!("pattern {pattern:?}: {e}"),
                })?;
        }
        let rules = rules.build().map_err(|e| CaptureError::Ignore {
            message: e.to_string(),
        })?;
        builder.filter_entry(move |entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            entry.depth() == 0 || !rules.matched(entry.path(), is_dir).is_ignore()
        });
    }
    let recorded_ns = record_time_for_capture_starting_now();
    let shared = Mutex::new(Walked::default());
    let first_error: Mutex<Option<CaptureError>> = Mutex::new(None);
    builder.build_parallel().run(|| {
        let mut local = Local {
            shared: &shared,
            cache: options.stat_cache,
            walked: Walked::default(),
            cache_entries: Vec::new(),
            buf: Vec::new(),
        };
        let first_error = &first_error;
        Box::new(move |result| {
            let visited = match result {
                Ok(entry) => visit(txn, root, &entry, options, recorded_ns, &mut local),
                Err(err) => Err(walk_error(err)),
            };
            match visited {
                Ok(()) => WalkState::Continue,
                Err(err) => {
                    first_error.lock().unwrap().get_or_insert(err);
                    WalkState::Quit
                }
            }
        })
    });
    if let Some(err) = first_error.into_inner().unwrap() {
        return Err(err);
    }
    Ok(shared.into_inner().unwrap())
}

fn walk_error(err: ignore::Error) -> CaptureError {
    let path = error_path(&err).map(Path::to_owned);
    match (err.io_error(), path) {
        (Some(io), Some(path)) => CaptureError::Io {
            op: "read",
            path,
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        _ => CaptureError::Ignore {
            message: err.to_string(),
        },
    }
}

fn error_path(err: &ignore::Error) -> Option<&Path> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Partial(errs) => errs.first().and_then(error_path),
        _ => None,
    }
}

fn visit(
    txn: &StoreTxn<'_>,
    root: &Path,
    entry: &ignore::DirEntry,
    options: &CaptureOptions<'_>,
    recorded_ns: i64,
    local: &mut Local<'_>,
) -> Result<(), CaptureError> {
    let path = entry.path();
    let rel = path.strip_prefix(root).unwrap_or(path);
    let rel = rel
        .to_str()
        .ok_or_else(|| CaptureError::NameNotUtf8 {
            path: path.to_owned(),
        })?
        .to_owned();
    if rel.split('/').count() > crate::tree::MAX_DEPTH {
        return Err(CaptureError::TooDeep {
            path: path.to_owned(),
        });
    }
    let io = |op| {
        move |source| CaptureError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let file_type = match entry.file_type() {
        Some(t) => t,
        None => std::fs::symlink_metadata(path)
            .map_err(io("stat"))?
            .file_type(),
    };
    let buildtree = options.mode == CaptureMode::Buildtree;
    count(options.progress, 1, 0);
    let (node, props) = if file_type.is_dir() {
        local.walked.stats.dirs += 1;
        let props = if buildtree {
            Some(props_of(
                &std::fs::symlink_metadata(path).map_err(io("stat"))?,
                true,
            ))
        } else {
            None
        };
        (FoundNode::Dir, props)
    } else if file_type.is_symlink() {
        local.walked.stats.symlinks += 1;
        let target = std::fs::read_link(path).map_err(io("read symlink"))?;
        let target =
            target
                .into_os_string()
                .into_string()
                .map_err(|_| CaptureError::TargetNotUtf8 {
                    path: path.to_owned(),
                })?;
        let props = if buildtree {
            let meta = std::fs::symlink_metadata(path).map_err(io("stat"))?;
            Some(Props {
                mtime: Some(mtime_of(&meta)),
                unix_mode: None,
            })
        } else {
            None
        };
        (FoundNode::Symlink { target }, props)
    } else if file_type.is_file() {
        let (digest, meta) = file_digest(txn, path, options, recorded_ns, local)?;
        local.walked.stats.files += 1;
        local.walked.stats.bytes += meta.size();
        let executable = meta.mode() & 0o100 != 0;
        let props = if buildtree {
            Some(props_of(&meta, true))
        } else {
            None
        };
        (FoundNode::File { digest, executable }, props)
    } else {
        let kind = if file_type.is_fifo() {
            "FIFO"
        } else if file_type.is_socket() {
            "socket"
        } else if file_type.is_block_device() {
            "block device"
        } else {
            "character device"
        };
        return Err(CaptureError::Unsupported {
            path: path.to_owned(),
            kind,
        });
    };
    local.walked.found.push(Found {
        path: rel,
        node,
        props,
    });
    Ok(())
}

fn mtime_of(meta: &std::fs::Metadata) -> Mtime {
    Mtime {
        seconds: meta.mtime(),
        nanos: meta.mtime_nsec() as u32,
    }
}

/// Buildtree properties: the mtime and the permission bits (setuid, setgid and
/// sticky stripped).
fn props_of(meta: &std::fs::Metadata, with_mode: bool) -> Props {
    Props {
        mtime: Some(mtime_of(meta)),
        unix_mode: with_mode.then_some(meta.mode() & 0o777),
    }
}

/// The digest of a regular file: from the stat cache when it may be trusted, else by
/// hashing (and staging) it. Returns the metadata the digest belongs to.
fn file_digest(
    txn: &StoreTxn<'_>,
    path: &Path,
    options: &CaptureOptions<'_>,
    recorded_ns: i64,
    local: &mut Local<'_>,
) -> Result<(Digest, std::fs::Metadata), CaptureError> {
    if let Some(cache) = options.stat_cache {
        let meta = std::fs::symlink_metadata(path).map_err(|source| CaptureError::Io {
            op: "stat",
            path: path.to_owned(),
            source,
        })?;
        let stat = FileStat::from_metadata(&meta);
        if let Some(record) = cache.get(stat.id)
            && record.is_trusted_for(&stat)
        {
            local.cache_entries.push((stat.id, record));
            local.walked.stats.cache_hits += 1;
            return Ok((record.digest, meta));
        }
    }
    let (digest, meta) = hash_file(txn, path, &mut local.buf)?;
    local.walked.stats.hashed_files += 1;
    local.walked.stats.hashed_bytes += meta.size();
    count(options.progress, 0, meta.size());
    if options.stat_cache.is_some() {
        let stat = FileStat::from_metadata(&meta);
        let record = StatRecord {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            ctime_ns: stat.ctime_ns,
            recorded_ns,
            digest,
        };
        local.cache_entries.push((stat.id, record));
    }
    Ok((digest, meta))
}

/// Hashes and stages one file, between two `fstat`s that must agree.
fn hash_file(
    txn: &StoreTxn<'_>,
    path: &Path,
    buf: &mut Vec<u8>,
) -> Result<(Digest, std::fs::Metadata), CaptureError> {
    let io = |op| {
        move |source| CaptureError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    for _ in 0..MAX_ATTEMPTS {
        // O_NONBLOCK: if the file was swapped for a FIFO since the walk saw it,
        // opening must not hang.
        let mut file: File = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(path)
            .map_err(io("open"))?;
        let before = file.metadata().map_err(io("stat"))?;
        if !before.is_file() {
            return Err(CaptureError::KeepsChanging {
                path: path.to_owned(),
            });
        }
        let (digest, small) = if before.size() <= STREAM_THRESHOLD {
            buf.clear();
            file.read_to_end(buf).map_err(io("read"))?;
            (Digest::of(buf), true)
        } else {
            (txn.put_stream(&mut file)?, false)
        };
        let after = file.metadata().map_err(io("stat"))?;
        let unchanged = FileStat::from_metadata(&before) == FileStat::from_metadata(&after)
            && digest.size() == before.size();
        if unchanged {
            if small {
                txn.put_hashed(digest, buf)?;
            }
            return Ok((digest, before));
        }
    }
    Err(CaptureError::KeepsChanging {
        path: path.to_owned(),
    })
}
