//! `Error`: what a daemon operation can fail with, and the small fixed set of
//! kinds every error maps to (they become named D-Bus errors and CLI exit codes).

use std::path::PathBuf;

/// The kind of a failure, as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No such workspace (or not the caller's).
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// Another operation on the workspace is running, or its files are in use.
    Busy,
    /// The request contradicts the workspace's state.
    Conflict,
    /// The request itself is malformed.
    InvalidArgument,
    /// The caller may not do this.
    AccessDenied,
    /// A filesystem is full.
    NoSpace,
    /// Reading or writing failed.
    Io,
    /// Stored data is damaged.
    Corrupt,
    /// A remote cache is unreachable or refused the call.
    Unavailable,
}

impl ErrorKind {
    /// The kind's stable name (`not-found`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::Busy => "busy",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::AccessDenied => "access-denied",
            ErrorKind::NoSpace => "no-space",
            ErrorKind::Io => "io",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

/// A daemon operation failed; nothing was recorded unless the message says so.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No workspace of that name belongs to the caller.
    #[error(
        "no workspace named {}; `ws list` shows yours",
        crate::workspace::shown(name)
    )]
    NoSuchWorkspace {
        /// The name asked for.
        name: String,
    },
    /// The caller has no saved cache of that element (and name).
    #[error("{} has no saved cache{}; `ws cache list` shows yours", crate::workspace::shown(element), name.as_ref().map(|n| format!(" named {}", crate::workspace::shown(n))).unwrap_or_default())]
    NoSuchCache {
        /// The element.
        element: String,
        /// The cache's name, if one was given.
        name: Option<String>,
    },
    /// The caller already has a workspace of that name.
    #[error(
        "a workspace named {} already exists; choose another name or close it first",
        crate::workspace::shown(name)
    )]
    NameTaken {
        /// The name.
        name: String,
    },
    /// The request is malformed.
    /// What an element needs built is not.
    #[error("element {element}: {problem}")]
    NotBuilt {
        /// The element asked for.
        element: String,
        /// What is missing, and what to do.
        problem: String,
    },
    #[error("invalid {what}: {problem}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Another operation on the workspace holds it.
    #[error(
        "workspace {} is busy with another operation; retry when it is done",
        crate::workspace::shown(name)
    )]
    Busy {
        /// The workspace.
        name: String,
    },
    /// The workspace's state forbids the operation.
    #[error("workspace {}: {problem}", crate::workspace::shown(name))]
    Conflict {
        /// The workspace.
        name: String,
        /// Why, and what to do.
        problem: String,
    },
    /// The caller may not do this.
    #[error("access denied: {problem}")]
    Denied {
        /// Why.
        problem: String,
    },
    /// A snapshot operation failed.
    #[error("workspace {}", crate::workspace::shown(name))]
    Snapshot {
        /// The workspace.
        name: String,
        /// Why.
        #[source]
        source: overlay::SnapshotError,
    },
    /// The store failed.
    #[error("{subject}: the store failed")]
    Store {
        /// What it failed on: "workspace NAME", "source directory DIR", ...
        subject: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The project file is invalid, or names no such element.
    #[error(transparent)]
    Project(#[from] crate::project::ProjectError),
    /// The build sandbox of an element could not be set up or run.
    #[error("element {element}: the build sandbox failed")]
    Sandbox {
        /// The element being built.
        element: String,
        /// Why.
        #[source]
        source: crate::sandbox::SandboxError,
    },
    /// A write-back would overwrite paths of its directory that the workspace
    /// does not know; nothing was written.
    #[error(
        "{}",
        crate::manager::write_back::conflict_message(name, dir, conflicts)
    )]
    WriteBackConflict {
        /// The workspace.
        name: String,
        /// The directory it was to write into.
        dir: PathBuf,
        /// The paths, and why.
        conflicts: Vec<crate::manager::WriteBackConflict>,
    },
    /// A write-back stopped partway; running it again finishes it.
    #[error(
        "writing workspace {} back into {} stopped {}: it could not {} {}",
        crate::workspace::shown(&at.name),
        at.dir.display(),
        progress(at.done, at.total),
        at.op,
        at.dir.join(&at.path).display()
    )]
    WriteBackFailed {
        /// Where it stopped (boxed: errors travel through every `Result`).
        at: Box<crate::manager::WriteBackStop>,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// A remote cache failed: unreachable, refused, or sent damaged data.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// A directory a caller passed or named could not be opened with the
    /// caller's own credentials.
    #[error(
        "cannot open {what} {} with your permissions; check that it is a directory you may read",
        path.display()
    )]
    Unreadable {
        /// Which directory: "source directory", ...
        what: &'static str,
        /// Where it is, as far as the daemon can say without resolving it.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The caller asked for a tree by digest that is not theirs to read.
    #[error(
        "tree {tree} is not one you imported, built or hold in a workspace; only those can be read by digest: import the directory it came from"
    )]
    NotYours {
        /// The tree asked for.
        tree: treediff::Digest,
    },
    /// A directory the daemon keeps to itself (in its state directory, or its
    /// socket's) is someone else's, or not a directory.
    #[error("cannot use {}: {problem}", path.display())]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Whose it is or what it is, and what to do.
        problem: String,
    },
    /// A filesystem operation of the daemon's own failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The kind clients see.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoSuchWorkspace { .. } | Error::NoSuchCache { .. } => ErrorKind::NotFound,
            Error::NameTaken { .. } => ErrorKind::AlreadyExists,
            Error::Invalid { .. } | Error::Project(_) => ErrorKind::InvalidArgument,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Conflict { .. } | Error::NotBuilt { .. } | Error::WriteBackConflict { .. } => {
                ErrorKind::Conflict
            }
            Error::Denied { .. } | Error::NotYours { .. } | Error::NotPrivate { .. } => {
                ErrorKind::AccessDenied
            }
            Error::Unreadable { source, .. } => unreadable_kind(source),
            Error::Db(crate::db::DbError::Corrupt { .. } | crate::db::DbError::Schema { .. }) => {
                ErrorKind::Corrupt
            }
            Error::Snapshot { source, .. } => snapshot_kind(source),
            Error::Remote(e) => remote_kind(e),
            _ if is_no_space(self) => ErrorKind::NoSpace,
            Error::Store { .. } if is_damage(self) => ErrorKind::Corrupt,
            // The caller's own permissions refused a read (see `crate::access`).
            Error::Store { .. } if has_os_error(self, &[nix::libc::EACCES]) => {
                ErrorKind::AccessDenied
            }
            // Or a write-back's writes, made with them too.
            Error::WriteBackFailed { .. }
                if has_os_error(self, &[nix::libc::EACCES, nix::libc::EPERM]) =>
            {
                ErrorKind::AccessDenied
            }
            _ => ErrorKind::Io,
        }
    }

    /// A closure for `map_err` wrapping a snapshot error.
    pub(crate) fn snapshot(name: &str) -> impl FnOnce(overlay::SnapshotError) -> Error {
        let name = name.to_owned();
        move |source| Error::Snapshot { name, source }
    }

    /// A closure for `map_err` wrapping a store error in an operation on the
    /// workspace `name`.
    pub(crate) fn store<E: std::error::Error + Send + Sync + 'static>(
        name: &str,
    ) -> impl FnOnce(E) -> Error {
        Error::store_on(format!("workspace {}", crate::workspace::shown(name)))
    }

    /// A closure for `map_err` wrapping a store error in an operation on `subject`.
    pub(crate) fn store_on<E: std::error::Error + Send + Sync + 'static>(
        subject: String,
    ) -> impl FnOnce(E) -> Error {
        move |source| Error::Store {
            subject,
            source: Box::new(source),
        }
    }
}

/// How far a stopped write-back got, for its message.
fn progress(done: usize, total: usize) -> String {
    if done == 0 {
        "before it replaced or removed anything there (the same command runs it again once the cause is fixed)".to_owned()
    } else {
        format!(
            "after {done} of its {total} changes, the others not made (run the same command again to finish it once the cause is fixed)"
        )
    }
}

fn snapshot_kind(e: &overlay::SnapshotError) -> ErrorKind {
    use overlay::SnapshotError as S;
    match e {
        S::NotFound { .. } => ErrorKind::NotFound,
        S::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        S::InvalidKey { .. } | S::WrongKind { .. } => ErrorKind::InvalidArgument,
        S::HasChildren { .. } => ErrorKind::Conflict,
        S::Busy { .. } => ErrorKind::Busy,
        S::Layer { .. } => ErrorKind::Conflict,
        _ if is_no_space(e) => ErrorKind::NoSpace,
        _ => ErrorKind::Io,
    }
}

/// A caller's directory that did not open with their credentials: refused, or
/// not there (which they could have seen themselves).
fn unreadable_kind(e: &std::io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(nix::libc::EACCES | nix::libc::EPERM) => ErrorKind::AccessDenied,
        Some(nix::libc::ENOENT | nix::libc::ENOTDIR | nix::libc::ELOOP) => {
            ErrorKind::InvalidArgument
        }
        _ => ErrorKind::Io,
    }
}

fn remote_kind(e: &crate::remote::RemoteError) -> ErrorKind {
    use crate::remote::RemoteError as R;
    match e {
        R::BadUrl { .. } | R::NoDigestFunction { .. } | R::Unsupported { .. } => {
            ErrorKind::InvalidArgument
        }
        R::Call { status, .. } => match status.code() {
            tonic::Code::NotFound => ErrorKind::NotFound,
            tonic::Code::InvalidArgument => ErrorKind::InvalidArgument,
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => ErrorKind::AccessDenied,
            _ => ErrorKind::Unavailable,
        },
        R::Missing { .. } | R::Unmapped { .. } => ErrorKind::NotFound,
        R::Corrupt { .. } | R::InvalidDirectory { .. } | R::WrongTree { .. } => ErrorKind::Corrupt,
        R::Rejected { .. } => ErrorKind::Unavailable,
        _ if is_no_space(e) => ErrorKind::NoSpace,
        _ if is_damage(e) => ErrorKind::Corrupt,
        _ => ErrorKind::Io,
    }
}

/// Whether some cause in the chain is ENOSPC or EDQUOT (the store words its own
/// full-disk error without keeping the code).
fn is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    has_os_error(e, &[nix::libc::ENOSPC, nix::libc::EDQUOT])
        || chain(e).any(|e| e.to_string().contains("no space left"))
}

/// Whether some cause in the chain is a missing or damaged store object or tree
/// node (errors travel boxed, so boxes are looked through too).
fn is_damage(e: &(dyn std::error::Error + 'static)) -> bool {
    use treediff::{StoreError, TreeError};
    chain(e).any(|e| {
        let store = e
            .downcast_ref::<StoreError>()
            .or_else(|| e.downcast_ref::<Box<StoreError>>().map(|b| &**b));
        let tree = e
            .downcast_ref::<TreeError>()
            .or_else(|| e.downcast_ref::<Box<TreeError>>().map(|b| &**b));
        matches!(
            store,
            Some(StoreError::Missing { .. } | StoreError::Corrupt { .. })
        ) || matches!(tree, Some(TreeError::Invalid { .. }))
    })
}

/// Whether some cause in the chain is an I/O error with one of `codes`.
fn has_os_error(e: &(dyn std::error::Error + 'static), codes: &[i32]) -> bool {
    chain(e).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| codes.contains(&code))
    })
}

/// `e` and its causes.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// An error and its causes, one line (`what failed: why: why that`): what a
/// client is told, and what a build's report notes of a remote that failed.
pub fn message(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
