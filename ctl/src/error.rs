//! The one place where failures become messages, hints and exit codes.
//!
//! Exit codes: 0 success; 1 the operation failed (including the daemon's busy,
//! conflict, no-space and I/O errors); 2 bad usage or input (clap uses 2 as well;
//! and the daemon's not-found, already-exists, invalid-argument and access-denied);
//! 3 the store is damaged (fsck found problems, an object was missing or corrupt, or
//! the daemon reported corruption). Messages go to stderr as `ws: error: <what failed>: <cause>…`, with a
//! `hint:` line where there is something to do about it.

use std::process::ExitCode;

use treediff::digest::DigestParseError;

/// Anything `ws` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No `--state-dir`, no `WS_STATE_DIR`, and no home directory to default to.
    #[error("no state directory: HOME is not set")]
    NoStateDir,
    /// A digest argument that does not parse.
    #[error(transparent)]
    BadDigest(#[from] DigestParseError),
    /// fsck found damage (the problems were printed).
    #[error("fsck found {0} problem(s) in the store")]
    Damaged(usize),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// The daemon refused or failed a request.
    #[error("{}", daemon_message(.0))]
    Daemon(#[from] zbus::Error),
    /// No daemon answered and none could be started.
    #[error("cannot start wsd for {}: {detail}", state_dir.display())]
    DaemonStart {
        /// The state directory it was to serve.
        state_dir: std::path::PathBuf,
        /// Why (its last log line, or the spawn error).
        detail: String,
    },
    /// The state directory's socket is served by another user's process.
    #[error(
        "the socket {} is served by uid {uid}, neither root nor you, so ws does not hand it your requests and files",
        socket.display()
    )]
    UntrustedDaemon {
        /// The socket.
        socket: std::path::PathBuf,
        /// Whom it is served by.
        uid: u32,
    },
    /// The daemon keeps closing the connection before the handshake is over.
    #[error(
        "wsd on {} closed the connection before the handshake was over: {detail}",
        socket.display()
    )]
    DaemonClosed {
        /// The socket.
        socket: std::path::PathBuf,
        /// What the connection saw.
        detail: String,
    },
    /// The daemon reported a named error other than as a method's reply (the
    /// end of a build).
    #[error("{message}")]
    Remote {
        /// The error's D-Bus name (`org.ws.Error.InvalidArgument`, ...).
        name: String,
        /// Its message.
        message: String,
    },
    /// No project file was found.
    #[error("no ws.toml in {} or any directory above it", .0.display())]
    NoProject(std::path::PathBuf),
    /// A build did not succeed (its output and reports were printed).
    #[error("{0}")]
    BuildFailed(String),
    /// `ws commit --write-back` without a directory, on a workspace opened over
    /// a tree.
    #[error(
        "workspace {0:?} was opened over a tree, not a directory, so there is no directory to write back into"
    )]
    NoWriteBackDir(String),
    /// A directory argument that cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    BadPath {
        /// The path as given.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The daemon's own message for a named error; zbus's description otherwise.
fn daemon_message(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(message), _) => message.clone(),
        other => other.to_string(),
    }
}

/// The daemon's error name (`org.ws.Error.NotFound` → `NotFound`), if it named one.
fn daemon_error_name(e: &CliError) -> Option<&str> {
    match e {
        CliError::Daemon(zbus::Error::MethodError(name, _, _)) => {
            name.as_str().strip_prefix("org.ws.Error.")
        }
        CliError::Remote { name, .. } => name.strip_prefix("org.ws.Error."),
        _ => None,
    }
}

/// What kind of failure, which decides the exit code.
enum Kind {
    Failed,
    BadInput,
    Damaged,
}

impl CliError {
    fn kind(&self) -> Kind {
        match self {
            CliError::BadDigest(_)
            | CliError::BadPath { .. }
            | CliError::NoProject(_)
            | CliError::NoWriteBackDir(_) => Kind::BadInput,
            CliError::Damaged(_) => Kind::Damaged,
            _ => match daemon_error_name(self) {
                Some("NotFound" | "AlreadyExists" | "InvalidArgument" | "AccessDenied") => {
                    Kind::BadInput
                }
                Some("Corrupt") => Kind::Damaged,
                _ => Kind::Failed,
            },
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            CliError::NoStateDir => Some("pass --state-dir DIR or set WS_STATE_DIR".into()),
            CliError::NoProject(_) => {
                Some("run ws in a project, or name its directory with -C DIR".into())
            }
            CliError::NoWriteBackDir(_) => {
                Some("name the directory to write into: --write-back=DIR".into())
            }
            CliError::Damaged(_) => Some(
                "the objects named above are damaged; re-import their sources to restore them"
                    .into(),
            ),
            CliError::UntrustedDaemon { socket, .. } => Some(format!(
                "if {} is not where your daemon should be, have it removed (by its owner or root) or pass --state-dir with a directory of your own",
                socket.display()
            )),
            CliError::DaemonClosed { .. } => Some(
                "the daemon holds each user to a number of connections (max-connections-per-user, \
                 64 unless its configuration says otherwise) and all users to another \
                 (max-connections): close some of yours, or ask its admin; its log says which"
                    .into(),
            ),
            CliError::DaemonStart { state_dir, .. } => Some(format!(
                "see {} for the daemon's log, or run it in the foreground with `ws daemon`",
                state_dir.join("wsd.log").display()
            )),
            _ => None,
        }
    }

    /// Prints the error with its causes and a hint, and returns the exit code.
    pub fn report(&self) -> ExitCode {
        if let CliError::Output(e) = self
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            // The reader went away (`ws store diff … | head`): not an error.
            return ExitCode::SUCCESS;
        }
        let mut message = self.to_string();
        // The daemon's message is whole (its causes included); its zbus error
        // would only repeat it after the error name.
        let mut source = match self {
            CliError::Daemon(zbus::Error::MethodError(_, Some(_), _)) => None,
            _ => std::error::Error::source(self),
        };
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        eprintln!("ws: error: {message}");
        if let Some(hint) = self.hint() {
            eprintln!("hint: {hint}");
        }
        ExitCode::from(match self.kind() {
            Kind::Failed => 1,
            Kind::BadInput => 2,
            Kind::Damaged => 3,
        })
    }
}
