//! Write-back (`ws commit --write-back`): a workspace's committed source tree
//! written into the directory it was opened over, or another the caller names,
//! so that a build without the workspace reads the same sources, gets the same
//! cache key and reuses the workspace's artifact.
//!
//! # What is written, and what is refused
//!
//! The paths written are those where the committed tree differs from the tree
//! the directory is expected to hold: what the last write-back into it left
//! (its op log entry says), else the workspace's base. The directory is read
//! again first, as the caller, with the ignore rules its tree was read with.
//! Each of those paths must hold there what the workspace knows it held (the
//! expected tree's or the base's entry), or already the committed one (an
//! earlier write-back that stopped midway). Anything else is a conflict: the
//! whole write-back is refused, naming the paths, before anything is written.
//! So nothing changed in the directory since the workspace was opened is
//! overwritten, and after a failure the same command finishes the job.
//! Entries the ignore rules hide (`.wsignore`, an element's `ignore`) are never
//! written over or removed: one in the way is a conflict too, and a directory
//! the commit deletes that still holds some is kept (and reported).
//!
//! # How it is written
//!
//! See [`writer`]: files and symlinks under temporary names beside their
//! destinations, one `syncfs`, then renames into place, then removals; as the
//! caller, never following a symlink. Trees and file contents are read from the
//! store with the daemon's own credentials, between the caller's writes.
//!
//! The workspace's base does not move: it is what the workspace was opened
//! over. A write-back is recorded in the op log (`write-back`, its message the
//! directory), which is where the next write-back into that directory starts.

mod plan;
mod writer;

use std::fmt;
use std::os::fd::AsFd;
use std::path::PathBuf;

use rocksdb::WriteBatch;
use treediff::{Digest, Node};

use super::store_ops::AsCaller;
use super::{Caller, ImportOptions, Manager, MountPoint, new_id, now_secs};
use crate::access::CallerAccess;
use crate::crash::crash_point;
use crate::error::Error;
use crate::workspace::{OpEntry, OpKind};
use plan::{Plan, Step, Trees};
use writer::{Failure, Writer};

/// What a write-back did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBackReport {
    /// The directory written into, where it really is.
    pub dir: PathBuf,
    /// The tree written: the workspace's committed source tree.
    pub tree: Digest,
    /// Files and symlinks written (new, or replacing what was there).
    pub written: u64,
    /// Directories made.
    pub made_dirs: u64,
    /// Files, symlinks and directories removed.
    pub removed: u64,
    /// Changed paths the directory held as committed already.
    pub already: u64,
    /// Directories the commit deletes that were kept: they hold ignored entries.
    pub kept: Vec<String>,
}

impl WriteBackReport {
    /// How many paths it changed.
    pub fn changes(&self) -> u64 {
        self.written + self.made_dirs + self.removed
    }
}

/// Where a write-back stopped, for its error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBackStop {
    /// The workspace.
    pub name: String,
    /// The directory it was writing into.
    pub dir: PathBuf,
    /// What it was doing.
    pub op: &'static str,
    /// On what, relative to `dir`.
    pub path: String,
    /// How many changes it had made.
    pub done: usize,
    /// How many it was to make.
    pub total: usize,
}

/// A path a write-back must not write over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The path, relative to the directory.
    pub path: String,
    /// Why.
    pub cause: ConflictCause,
}

/// Why a path is a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictCause {
    /// The directory holds something there that is neither what the workspace
    /// was opened over (or last wrote back) nor what it committed.
    Changed,
    /// The directory has an entry there that its ignore rules hide, and the
    /// commit writes the path.
    Ignored,
    /// A directory the commit replaces with a file holds ignored entries.
    HoldsIgnored,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.cause {
            ConflictCause::Changed => "changed there since the workspace was opened",
            ConflictCause::Ignored => {
                "ignored there (.wsignore or the element's ignore), and the commit writes it"
            }
            ConflictCause::HoldsIgnored => {
                "a directory holding ignored entries, which the commit replaces with a file"
            }
        };
        write!(f, "{} ({why})", self.path)
    }
}

/// The message of a refused write-back: the conflicts (the first few), and
/// what to do.
pub(crate) fn conflict_message(
    name: &str,
    dir: &std::path::Path,
    conflicts: &[Conflict],
) -> String {
    const SHOWN: usize = 10;
    let mut list = conflicts
        .iter()
        .take(SHOWN)
        .map(Conflict::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if conflicts.len() > SHOWN {
        list.push_str(&format!(" and {} more", conflicts.len() - SHOWN));
    }
    format!(
        "cannot write workspace {} back into {}: {} path(s) there must not be overwritten: {list}; nothing was written. Copy those versions into the workspace and commit them, or undo them in {}, then run the command again",
        crate::workspace::shown(name),
        dir.display(),
        conflicts.len(),
        dir.display(),
    )
}

impl Manager {
    /// Writes the workspace `name`'s committed source tree into `dir` (a
    /// directory the caller opened), with the caller's credentials; see the
    /// module documentation for what is written and what is refused.
    pub fn write_back(
        &self,
        caller: Caller,
        name: &str,
        dir: &MountPoint,
    ) -> Result<WriteBackReport, Error> {
        self.serves(caller)?;
        let _store = self.store_guard();
        self.with_workspace(caller, name, |mut ws| {
            let real = dir.path().map_err(|e| Error::Invalid {
                what: "write-back directory",
                problem: format!("the directory passed: {e}"),
            })?;
            let shown = real.display().to_string();
            let options = ImportOptions {
                ignore: ws
                    .element
                    .as_ref()
                    .map(|b| b.ignore.clone())
                    .unwrap_or_default(),
                ..ImportOptions::default()
            };
            let (current, _) = self.import_source(caller, &dir.fd_path(), &options)?;
            let expected = self
                .log_of(&ws.id)?
                .into_iter()
                .rev()
                .find(|e| e.op == OpKind::WriteBack && e.message.as_deref() == Some(&shown))
                .and_then(|e| e.after)
                .unwrap_or(ws.base_source_digest);
            let trees = Trees {
                base: ws.base_source_digest,
                expected,
                committed: ws.source_digest,
                current,
            };
            let plan = plan::plan(&self.store, trees).map_err(Error::store(name))?;
            let access = CallerAccess::for_caller(caller).map_err(|source| Error::Io {
                op: "read the groups of the caller, to write back into",
                path: real.clone(),
                source,
            })?;
            // Owners are given over only by root acting as root: anyone else
            // writes their own files.
            let inherit_owner = caller.uid == 0 && self.euid == 0;
            let mut writer = Writer::new(dir.as_fd(), &new_id(), inherit_owner);
            let failed = |failure: Failure, done: usize| Error::WriteBackFailed {
                at: Box::new(WriteBackStop {
                    name: name.to_owned(),
                    dir: real.clone(),
                    op: failure.op,
                    path: failure.path,
                    done,
                    total: plan.steps.len() + plan.prune.len(),
                }),
                source: failure.source,
            };
            let mut conflicts = plan.conflicts.clone();
            conflicts.extend(
                as_caller(access.as_ref(), || writer.check(&plan.checks))
                    .map_err(|f| failed(f, 0))?,
            );
            if !conflicts.is_empty() {
                return Err(Error::WriteBackConflict {
                    name: name.to_owned(),
                    dir: real.clone(),
                    conflicts,
                });
            }
            if let Err(failure) = self.write_plan(&mut writer, &plan, access.as_ref()) {
                let _ = as_caller(access.as_ref(), || {
                    writer.abandon();
                    Ok(())
                });
                return Err(failed(failure, writer.counts.done));
            }
            let counts = writer.counts;
            let report = WriteBackReport {
                dir: real.clone(),
                tree: ws.source_digest,
                written: counts.written,
                made_dirs: counts.made_dirs,
                removed: counts.removed,
                already: plan.already,
                kept: counts.kept,
            };
            // Logged whenever the directory now holds another tree than the
            // last write-back recorded, also when nothing was left to write: a
            // write-back killed after its last rename and before this batch is
            // finished by a rerun that finds everything in place, and the next
            // write-back must start from what the directory holds.
            if report.changes() > 0 || expected != ws.source_digest {
                let entry = OpEntry {
                    seq: ws.next_op,
                    op: OpKind::WriteBack,
                    before: Some(expected),
                    after: Some(ws.source_digest),
                    changes: report.changes(),
                    message: Some(shown),
                    time: now_secs(),
                    undoes: None,
                };
                let mut batch = WriteBatch::default();
                self.put_workspace(&mut batch, &mut ws, Some(entry));
                crash_point!("write-back-before-log");
                self.db.write(batch)?;
            }
            tracing::info!(workspace = name, dir = %real.display(), tree = %report.tree, written = report.written, removed = report.removed, already = report.already, "wrote back");
            Ok(report)
        })
    }

    /// Stages every step (reading each file's content from the store with the
    /// daemon's credentials, writing it with the caller's), syncs, commits.
    fn write_plan(
        &self,
        writer: &mut Writer<'_>,
        plan: &Plan,
        access: Option<&CallerAccess>,
    ) -> Result<(), Failure> {
        for step in &plan.steps {
            let content = match step {
                Step::Put {
                    path,
                    node: Node::File { digest, .. },
                    ..
                } => Some(self.store.read(digest).map_err(|e| Failure {
                    op: "read from the store the committed content of",
                    path: path.clone(),
                    source: Box::new(e),
                })?),
                _ => None,
            };
            as_caller(access, || {
                writer.stage(step, content.as_ref().map(|blob| blob.bytes()))
            })?;
        }
        as_caller(access, || {
            writer.sync()?;
            writer.commit(&plan.steps, &plan.prune)
        })
    }
}

/// Runs `f` with the caller's credentials (`access`; `None` when this thread
/// has them already).
fn as_caller<T>(
    access: Option<&CallerAccess>,
    f: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let _as_caller = access
        .map(AsCaller::enter)
        .transpose()
        .map_err(|e| Failure {
            op: "take on the caller's credentials to write",
            path: String::new(),
            source: Box::new(e),
        })?;
    f()
}
