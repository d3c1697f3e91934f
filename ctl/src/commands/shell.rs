//! `ws shell ELEMENT [--buildtree] [-- COMMAND...]`: a command, or an
//! interactive shell, in the element's build environment.
//!
//! The daemon runs the command on descriptors this client passes. On a terminal
//! they are the slave side of a pty of ours: the command gets it as its
//! controlling terminal (job control, Ctrl-C to its foreground job), and this
//! client relays between its own terminal (in raw mode) and the pty's master,
//! and passes on window size changes. Otherwise they are this client's stdin,
//! stdout and stderr themselves, and Ctrl-C cancels the shell.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use rustix::termios::{OptionalActions, Termios};
use zbus::zvariant::Value;

use super::open_dir;
use crate::cli::ShellArgs;
use crate::client::Client;
use crate::error::CliError;

/// How long the relay may take to pass on the last output once the shell ended.
const DRAIN: Duration = Duration::from_secs(2);

/// A Shell1 signal.
enum Signal {
    Started(String),
    Finished {
        state: String,
        code: i32,
        stray: Vec<String>,
        error_name: String,
        error: String,
    },
}

impl Signal {
    fn parse(member: &str, message: &zbus::Message) -> Option<Signal> {
        let body = message.body();
        match member {
            "Started" => body.deserialize::<String>().ok().map(Signal::Started),
            "Finished" => body
                .deserialize::<(String, i32, Vec<String>, String, String)>()
                .ok()
                .map(|(state, code, stray, error_name, error)| Signal::Finished {
                    state,
                    code,
                    stray,
                    error_name,
                    error,
                }),
            _ => None,
        }
    }
}

/// `ws shell ELEMENT`.
pub async fn shell(client: &Client, project: &Path, args: ShellArgs) -> Result<ExitCode, CliError> {
    let dir = open_dir(project)?;
    let stdin = std::io::stdin();
    let terminal = rustix::termios::isatty(&stdin) && rustix::termios::isatty(std::io::stdout());
    // Listen before calling: the shell may end before the reply is read.
    let (listener, mut rx) = super::signals(client, "org.ws.Shell1");
    let pty = if terminal { Some(Pty::open()?) } else { None };
    let (i, o, e) = match &pty {
        Some(pty) => (pty.slave()?, pty.slave()?, pty.slave()?),
        None => (
            dup(std::io::stdin())?,
            dup(std::io::stdout())?,
            dup(std::io::stderr())?,
        ),
    };
    let mut options: HashMap<&str, Value<'_>> = HashMap::new();
    options.insert("buildtree", args.buildtree.into());
    options.insert("terminal", terminal.into());
    let job = client
        .manager()
        .await?
        .shell(
            (&dir).into(),
            &args.element,
            args.command.clone(),
            (&i).into(),
            (&o).into(),
            (&e).into(),
            options,
        )
        .await?;
    let path = job.to_string();
    // Only the command may hold the pty's slave: the relay ends when it closes.
    drop((i, o, e));

    let mut relay = None;
    let mut cancelled = false;
    let mut window = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(CliError::Output)?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(CliError::Output)?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(CliError::Output)?;
    let (state, code, stray, error_name, error) = loop {
        tokio::select! {
            next = rx.recv() => {
                let Some((from, member, message)) = next else {
                    return Err(CliError::BuildFailed("the daemon went away during the shell".into()));
                };
                if from != path {
                    continue;
                }
                let Some(signal) = Signal::parse(&member, &message) else {
                    continue;
                };
                match signal {
                    Signal::Started(on) => {
                        let what = if args.command.is_empty() { "a shell" } else { "the command" };
                        eprintln!("ws: {}: {what} on {on}; what it changes is dropped when it ends", args.element);
                        if let Some(pty) = &pty {
                            relay = Some(pty.relay()?);
                        }
                    }
                    Signal::Finished { state, code, stray, error_name, error } => {
                        break (state, code, stray, error_name, error);
                    }
                }
            }
            _ = window.recv() => {
                if let Some(pty) = &pty {
                    pty.copy_window_size();
                }
            }
            _ = tokio::signal::ctrl_c(), if pty.is_none() && !cancelled => {
                cancelled = true;
                eprintln!("ws: cancelling the shell");
                // Leaving is enough: the daemon cancels a shell whose client goes.
                client.shell_job(job.clone()).await?.cancel().await?;
            }
            _ = hangup.recv() => break ("hangup".into(), 129, Vec::new(), String::new(), String::new()),
            _ = terminate.recv() => break ("terminated".into(), 143, Vec::new(), String::new(), String::new()),
        }
    };
    listener.abort();
    if let Some(relay) = relay {
        relay.finish();
    }
    if !stray.is_empty() {
        eprintln!(
            "ws: it wrote outside its build, install, cache and /tmp directories (dropped): {}",
            stray.join(", ")
        );
    }
    match state.as_str() {
        "error" => Err(CliError::Remote {
            name: error_name,
            message: error,
        }),
        "cancelled" => Err(CliError::BuildFailed(format!(
            "the shell in {} was cancelled",
            args.element
        ))),
        _ => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
    }
}

fn dup(fd: impl AsFd) -> Result<OwnedFd, CliError> {
    fd.as_fd().try_clone_to_owned().map_err(CliError::Output)
}

/// A pty of ours, its master side; the command gets its slave side.
struct Pty {
    master: OwnedFd,
}

impl Pty {
    fn open() -> Result<Pty, CliError> {
        use rustix::pty::OpenptFlags;
        let io = |e: rustix::io::Errno| CliError::Output(e.into());
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .map_err(io)?;
        rustix::pty::grantpt(&master).map_err(io)?;
        rustix::pty::unlockpt(&master).map_err(io)?;
        let pty = Pty { master };
        pty.copy_window_size();
        Ok(pty)
    }

    /// A descriptor of the slave side (opened from the master: no name to race).
    fn slave(&self) -> Result<OwnedFd, CliError> {
        use rustix::pty::OpenptFlags;
        rustix::pty::ioctl_tiocgptpeer(
            &self.master,
            OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
        )
        .map_err(|e| CliError::Output(e.into()))
    }

    /// Gives the pty our terminal's size.
    fn copy_window_size(&self) {
        if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
            let _ = rustix::termios::tcsetwinsize(&self.master, size);
        }
    }

    /// Puts our terminal in raw mode and starts relaying.
    fn relay(&self) -> Result<Relay, CliError> {
        let io = |e: std::io::Error| CliError::Output(e);
        let saved = rustix::termios::tcgetattr(std::io::stdin()).map_err(|e| io(e.into()))?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &raw)
            .map_err(|e| io(e.into()))?;
        let mut input = std::fs::File::from(self.master.try_clone().map_err(io)?);
        // Typing goes to the command until this process exits.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n @ 1..) = stdin.read(&mut buf) {
                if input.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let mut output = std::fs::File::from(self.master.try_clone().map_err(io)?);
        let (done, finished) = std::sync::mpsc::channel();
        // Ends when every holder of the slave side has closed it (EIO).
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            let mut stdout = std::io::stdout();
            while let Ok(n @ 1..) = output.read(&mut buf) {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
            let _ = done.send(());
        });
        Ok(Relay { saved, finished })
    }
}

/// A running relay: our terminal's settings to restore.
struct Relay {
    saved: Termios,
    finished: std::sync::mpsc::Receiver<()>,
}

impl Relay {
    /// Waits (a little) for the last output, then restores our terminal.
    fn finish(self) {
        let _ = self.finished.recv_timeout(DRAIN);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}
