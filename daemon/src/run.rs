//! The `wsd` process: arguments, logging (journald-friendly under systemd), the
//! one-daemon-per-state-dir lock, and the D-Bus service on its socket and bus.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};

use crate::dbus::{Bus, BusChoice};
use crate::manager::Manager;
use crate::project::{DaemonConfig, parse_daemon_config};
use crate::state_dir::{Sharing, StateDir};

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
    /// The bus to serve on as org.ws.Daemon, besides the socket. auto: the system
    /// bus when root and it answers, else the session bus when
    /// DBUS_SESSION_BUS_ADDRESS is set, else none (failures are only logged); a
    /// bus named explicitly must work.
    #[arg(long, value_enum, default_value_t = BusArg::Auto)]
    bus: BusArg,
    /// The address of the bus to serve on instead (e.g. a private bus for tests);
    /// it must work. Ignored with --bus none.
    #[arg(long, env = "WSD_BUS_ADDRESS", value_name = "ADDRESS")]
    bus_address: Option<String>,
    /// The daemon's configuration file (docs/security.md): the remote caches
    /// whose results every user may reuse, and the limits the socket's clients
    /// are held to. Default: /etc/ws/wsd.toml when root and it exists.
    #[arg(long, env = "WSD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The configuration file a root daemon reads when none is given, if it exists.
const SYSTEM_CONFIG: &str = "/etc/ws/wsd.toml";

/// The daemon's configuration, from `--config` (which must exist) or the
/// system file (which may not).
fn daemon_config(given: Option<&Path>) -> Result<DaemonConfig, String> {
    let system = Path::new(SYSTEM_CONFIG);
    let path = match given {
        Some(path) => path,
        None if rustix::process::geteuid().is_root() => system,
        None => return Ok(DaemonConfig::default()),
    };
    match crate::input_file::read(path) {
        Ok(Some(bytes)) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
            parse_daemon_config(path, &text).map_err(|e| e.to_string())
        }
        Ok(None) if given.is_none() => Ok(DaemonConfig::default()),
        Ok(None) => Err(format!("{} does not exist", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// `--bus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BusArg {
    Auto,
    System,
    Session,
    None,
}

impl Args {
    fn bus(&self) -> BusChoice {
        match (self.bus, &self.bus_address) {
            (BusArg::None, _) => BusChoice::None,
            (_, Some(address)) => BusChoice::Address(address.clone()),
            (BusArg::Auto, None) => BusChoice::Auto,
            (BusArg::System, None) => BusChoice::System,
            (BusArg::Session, None) => BusChoice::Session,
        }
    }
}

/// Runs the daemon; returns when it stops.
pub fn main() -> ExitCode {
    let args = Args::parse();
    logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wsd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    // A backstop: what the daemon writes is its own unless made otherwise on
    // purpose (the socket, its record, views, checkouts and write-backs get
    // their modes explicitly; the build sandbox sets its own umask).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let dirs = StateDir::new(args.state_dir.clone());
    dirs.prepare().map_err(|e| crate::dbus::describe(&e))?;
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
    let config = daemon_config(args.config.as_deref())?;
    let manager =
        Manager::open_configured(dirs.clone(), config).map_err(|e| crate::dbus::describe(&e))?;
    let socket = match &args.socket {
        Some(socket) => socket.clone(),
        None => dirs
            .prepare_socket()
            .map_err(|e| crate::dbus::describe(&e))?,
    };
    record_socket(&dirs, &socket, args.socket.is_some())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let bus = Bus::connect(args.bus())
            .await
            .map_err(|e| crate::dbus::describe(&e))?;
        let serve = crate::dbus::serve(Arc::new(manager), &socket, bus);
        tokio::select! {
            result = serve => result.map_err(|e| crate::dbus::describe(&e)),
            _ = shutdown() => {
                tracing::info!("stopping");
                let _ = std::fs::remove_file(&socket);
                Ok(())
            }
        }
    })
}

/// Logs to stderr, filtered by `WSD_LOG` (default `info`), in colour only on a
/// terminal (`ws` sends it to a log file). When stderr is the journal (systemd
/// sets `JOURNAL_STREAM` to its device and inode), lines carry their priority as
/// a `<N>` prefix and no timestamps: journald adds its own.
fn logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_journal() {
        builder
            .with_ansi(false)
            .event_format(Journald(
                tracing_subscriber::fmt::format()
                    .with_ansi(false)
                    .without_time(),
            ))
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Whether stderr is the stream `JOURNAL_STREAM` names (`<device>:<inode>`), not
/// merely inherited from a process that had it.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", stat.st_dev, stat.st_ino))
}

/// The default format behind a syslog priority prefix (`<3>` error ... `<7>`
/// debug), which journald reads as the line's priority.
#[derive(Debug)]
struct Journald<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Journald<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Says where `socket` is in `<state>/wsd.socket`, for clients, when it is not
/// `<state>/wsd.sock`; makes the directory of an `explicit` one (`--socket`,
/// the admin's choice) if needed. Clients of every user read the record of a
/// root daemon.
fn record_socket(dirs: &StateDir, socket: &std::path::Path, explicit: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let record = dirs.socket_record();
    if socket == dirs.root().join("wsd.sock") {
        let _ = std::fs::remove_file(&record);
        return Ok(());
    }
    if explicit && let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mode = Sharing::of_this_process().record_mode();
    let temporary = record.with_extension("socket.new");
    let _ = std::fs::remove_file(&temporary);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| {
            // The umask may have taken bits the clients need.
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            writeln!(file, "{}", socket.display())
        })
        .and_then(|()| std::fs::rename(&temporary, &record))
        .map_err(|e| format!("cannot write {}: {e}", record.display()))
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
