//! The `wsd` process: arguments, logging, the one-daemon-per-state-dir lock, and
//! the D-Bus service on its socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::manager::Manager;
use crate::state_dir::StateDir;

/// wsd: the daemon that keeps ws workspaces, their store and their transactions
#[derive(Debug, Parser)]
#[command(name = "wsd", version, about)]
struct Args {
    /// The state directory to serve (store, database, snapshots, socket).
    #[arg(long, env = "WS_STATE_DIR")]
    state_dir: PathBuf,
    /// The socket to serve D-Bus on (default: <state-dir>/wsd.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// Runs the daemon; returns when it stops.
pub fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WSD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wsd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let dirs = StateDir::new(args.state_dir.clone());
    dirs.create().map_err(|e| {
        format!(
            "cannot create the state directory {}: {e}",
            args.state_dir.display()
        )
    })?;
    // One daemon per state directory: the lock is held for the life of the process
    // and released by the kernel however it ends.
    let lock_path = dirs.lock();
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| {
            format!(
                "another wsd serves {} ({}: {e}); stop it first",
                args.state_dir.display(),
                lock_path.display()
            )
        })?;
    let manager = Manager::open(dirs.clone()).map_err(|e| crate::dbus::describe(&e))?;
    let socket = args.socket.unwrap_or_else(|| dirs.socket());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let serve = crate::dbus::serve(Arc::new(manager), &socket);
        tokio::select! {
            result = serve => result.map_err(|e| format!("cannot serve on {}: {e}", socket.display())),
            _ = shutdown() => {
                tracing::info!("stopping");
                let _ = std::fs::remove_file(&socket);
                Ok(())
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be handled");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT can be handled");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
