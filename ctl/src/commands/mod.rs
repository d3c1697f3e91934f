//! Running a parsed command line.

mod build;
mod remote;
mod shell;
mod store;
mod workspace;

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::state_dir::default_state_dir;

/// Runs the command and returns the exit code for success.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let state_dir = match cli.state_dir {
        Some(dir) => dir,
        None => default_state_dir()?,
    };
    match cli.command {
        Command::Store(command) => store::run(&state_dir, command),
        Command::Daemon => workspace::daemon(&state_dir),
        command => workspace::run(&state_dir, cli.project.as_deref(), command),
    }
}

/// The signals of `interface` on the client's connection, as they come: the
/// object path, the member and the message. A task drains the connection, so
/// that a full queue never holds up a reply; start it before the call whose
/// object sends them (they may come before the reply does), abort it after.
pub fn signals(
    client: &crate::client::Client,
    interface: &'static str,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<(String, String, zbus::Message)>,
) {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = zbus::MessageStream::from(client.connection());
    let listener = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let header = message.header();
            if message.message_type() != zbus::message::Type::Signal
                || header.interface().map(|i| i.as_str()) != Some(interface)
            {
                continue;
            }
            let path = header.path().map(|p| p.to_string()).unwrap_or_default();
            let member = header.member().map(|m| m.to_string()).unwrap_or_default();
            drop(header);
            if tx.send((path, member, message)).is_err() {
                break;
            }
        }
    });
    (listener, rx)
}

/// Writes `text` to stdout; a closed pipe ends the command quietly.
pub fn print(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Pretty JSON on stdout, with a final newline.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).expect("our JSON values always serialize");
    text.push('\n');
    print(&text)
}

/// Runs `work` (D-Bus calls to the daemon) to completion on this thread.
pub fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Output)?
        .block_on(work)
}

/// Opens the directory `path` for passing to the daemon, which never opens a
/// path a client names.
pub fn open_dir(path: &Path) -> Result<std::fs::File, CliError> {
    let file = std::fs::File::open(path).map_err(|source| CliError::BadPath {
        path: path.to_owned(),
        source,
    })?;
    match file.metadata() {
        Ok(meta) if meta.is_dir() => Ok(file),
        _ => Err(CliError::BadPath {
            path: path.to_owned(),
            source: std::io::Error::from_raw_os_error(nix::libc::ENOTDIR),
        }),
    }
}

/// The one-letter form of a change, as `ws store diff --name-status` shows it.
pub fn letter(change: &str) -> char {
    match change {
        "added" => 'A',
        "deleted" => 'D',
        "modified" => 'M',
        "mode_changed" => 'X',
        "type_changed" => 'T',
        _ => '?',
    }
}

/// A dictionary the daemon returned (`a{sv}`), read by key.
pub struct Dict<'a>(pub &'a std::collections::HashMap<String, zbus::zvariant::OwnedValue>);

impl Dict<'_> {
    /// The string under `key`, "" when absent or not a string.
    pub fn text(&self, key: &str) -> String {
        self.0
            .get(key)
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default()
    }

    /// The string under `key`, `None` when absent or empty.
    pub fn some(&self, key: &str) -> Option<String> {
        Some(self.text(key)).filter(|t| !t.is_empty())
    }

    /// The number under `key`, 0 when absent or not a `u64`.
    pub fn number(&self, key: &str) -> u64 {
        self.0
            .get(key)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or_default()
    }

    /// The strings under `key`, none when absent or not a list of strings.
    pub fn texts(&self, key: &str) -> Vec<String> {
        self.0
            .get(key)
            .and_then(|v| Vec::<String>::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default()
    }
}
