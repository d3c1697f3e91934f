//! The D-Bus service: the only module that knows D-Bus.
//!
//! Served peer-to-peer on a Unix socket (no bus daemon needed). Each accepted
//! connection is its own D-Bus connection with its own object server, populated
//! with the caller's workspaces only: the caller is identified by `SO_PEERCRED`,
//! read before the handshake, and another user's workspaces are not there to be
//! found, introspected or enumerated. A daemon not running as root refuses a
//! caller of another uid there and then (its socket is 0600 besides). Operations run on the blocking pool; when
//! one changes a workspace, every connection of its owner learns it through an
//! event channel and emits `PropertiesChanged` (or `InterfacesAdded/Removed`
//! through the object manager). See `docs/dbus.md` for the interfaces.
//!
//! The socket's clients are held to limits (`limits`): connections per uid
//! and in all, counted at accept; a deadline for the handshake; a size for
//! each message, checked before zbus buffers it (`framing`). `accept` running
//! out of descriptors waits and goes on (docs/security.md, "The daemon
//! survives its clients").
//!
//! On a bus (`bus`), a gateway forwards each call into an in-process connection
//! of the caller's uid, served by the same code as a socket's connections, so
//! who sees what is decided in one place.

mod args;
mod build_iface;
mod build_job;
mod bus;
mod credentials;
mod errors;
mod framing;
mod hello;
mod limits;
mod links;
mod manager_iface;
mod relay;
mod shell_job;
mod store_iface;
mod transfer;
mod workspace_iface;

use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::broadcast;
use zbus::object_server::ObjectServer;

use crate::manager::{Caller, Manager};
use crate::state_dir::Sharing;
use crate::workspace::Workspace;

pub use bus::{Bus, BusChoice, BusError};
pub use errors::{DbusError, chain as describe};

/// The object path of the manager and of the object manager.
pub const ROOT_PATH: &str = "/org/ws";
/// The well-known name on a bus.
pub const BUS_NAME: &str = "org.ws.Daemon";

/// The object path of a workspace: opaque, from its id.
pub fn workspace_path(id: &str) -> String {
    format!("{ROOT_PATH}/workspace/{id}")
}

/// What changed, for the connections that show it.
#[derive(Clone, Debug)]
///
/// Events carry the outcome, so a connection shows it without reading anything
/// again.
pub(crate) enum Event {
    /// A workspace was opened.
    Added { ws: Box<Workspace> },
    /// A workspace's record changed, and it has `dirty` changed paths.
    Changed { ws: Box<Workspace>, dirty: u32 },
    /// A workspace was closed.
    Removed { id: String, owner: u32 },
}

impl Event {
    fn owner(&self) -> u32 {
        match self {
            Event::Added { ws } | Event::Changed { ws, .. } => ws.owner,
            Event::Removed { owner, .. } => *owner,
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub manager: Arc<Manager>,
    pub events: broadcast::Sender<Event>,
    /// A daemon not running as root serves this uid, its own, and no other.
    pub only_uid: Option<u32>,
    /// The socket's connections and their limits.
    pub gate: Arc<limits::Gate>,
}

impl Shared {
    /// Whether the daemon serves `uid` at all: a user daemon's files and store
    /// are its user's, so another user is refused before anything is read.
    /// The refusal is logged for an admin: someone tried another user's daemon.
    pub fn admits(&self, uid: u32, via: &str) -> bool {
        match self.only_uid {
            Some(own) if own != uid => {
                tracing::warn!(
                    uid,
                    via,
                    "refused a client of uid {uid}: this daemon runs as uid {own} and serves that user only"
                );
                false
            }
            _ => true,
        }
    }

    /// Runs `f` on the blocking pool (the manager's operations block on I/O).
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Manager) -> Result<T, crate::Error> + Send + 'static,
    ) -> Result<T, DbusError> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || f(&shared.manager))
            .await
            .map_err(|e| DbusError::Io(format!("the operation failed: {e}")))?
            .map_err(DbusError::from)
    }

    pub fn notify(&self, event: Event) {
        // No receiver is fine: no client is connected.
        let _ = self.events.send(event);
    }
}

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be made or accepted on.
    #[error("cannot serve on {}", path.display())]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The bus the daemon was told to serve on failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Serves `manager` on the Unix socket `socket` and, when given, on `bus`, until
/// the process ends. A bus that was not asked for explicitly (`--bus auto`) may
/// fail without stopping the socket.
pub async fn serve(
    manager: Arc<Manager>,
    socket: &Path,
    bus: Option<Bus>,
) -> Result<(), ServeError> {
    let socket_error = |source| ServeError::Socket {
        path: socket.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(socket_error)?;
    // A root daemon's socket: anyone may connect, and what they may do is
    // decided per call by their uid. A user daemon's: its user only. (By path:
    // the socket's directory is the daemon's own, or the admin's `--socket`.)
    let sharing = Sharing::of_this_process();
    std::fs::set_permissions(
        socket,
        std::os::unix::fs::PermissionsExt::from_mode(sharing.socket_mode()),
    )
    .map_err(socket_error)?;
    let (events, _) = broadcast::channel(256);
    let only_uid = (sharing == Sharing::OneUser).then(|| rustix::process::geteuid().as_raw());
    let gate = Arc::new(limits::Gate::new(manager.config().limits));
    gate.check_descriptors(only_uid.is_some());
    let shared = Arc::new(Shared {
        manager,
        events,
        only_uid,
        gate,
    });
    tracing::info!(socket = %socket.display(), "serving");
    let on_bus = async {
        let Some(bus) = bus else {
            return std::future::pending().await;
        };
        let required = bus.required();
        match bus::serve(shared.clone(), bus).await {
            Err(e) if !required => {
                tracing::warn!(error = %describe(&e), "serving on the socket only");
                std::future::pending().await
            }
            result => result.map_err(ServeError::from),
        }
    };
    let on_socket = async {
        // Out of descriptors, accept pauses (longer while it lasts) and goes on.
        let mut pause = std::time::Duration::ZERO;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => match shared.gate.accept_failed(&e, &mut pause) {
                    limits::AfterAccept::Retry(pause) => {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    limits::AfterAccept::Stop => return Err(socket_error(e)),
                },
            };
            pause = std::time::Duration::ZERO;
            tokio::spawn(accept(shared.clone(), stream));
        }
    };
    tokio::select! {
        result = on_socket => result,
        result = on_bus => result,
    }
}

/// One client on the socket: the kernel says who it is, before the handshake,
/// and whether it may have one more connection.
async fn accept(shared: Arc<Shared>, stream: tokio::net::UnixStream) {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a client's credentials, so its connection is refused");
            return;
        }
    };
    let uid = cred.uid();
    if !shared.admits(uid, "socket") {
        return;
    }
    // Held until the connection ends; without one, the stream is closed now.
    let Some(_slot) = shared.gate.admit(uid) else {
        return;
    };
    let caller = Caller {
        uid,
        gid: cred.gid(),
    };
    if let Err(e) = serve_client(shared.clone(), stream, caller, Client::Socket).await
        && let Some(held_back) = shared.gate.log.failed.allow(uid)
    {
        tracing::warn!(error = %e, uid, held_back, "a client connection failed");
    }
}

/// Who is at the other end of a connection that `serve_client` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// A client on the socket: it may be a bus-style client that says Hello.
    Socket,
    /// The bus gateway, on behalf of the bus clients of one uid: it says no
    /// Hello, and the bus's own `org.freedesktop.DBus` must not be shadowed.
    Gateway,
}

/// Serves one D-Bus connection over `stream` for `caller`, whom the transport
/// vouched for: its object server, with the caller's workspaces only, and its
/// share of the events, until the peer goes. A socket's client is held to the
/// handshake deadline and the message size of the limits.
async fn serve_client(
    shared: Arc<Shared>,
    stream: tokio::net::UnixStream,
    caller: Caller,
    client: Client,
) -> zbus::Result<()> {
    // Subscribed first: what happens while the connection is set up is not missed
    // (an object added twice is added once).
    let mut events = shared.events.subscribe();
    // The caller's workspaces, read now so that showing them later is quick.
    let listed = shared
        .run(move |m| m.list(caller))
        .await
        .unwrap_or_default();
    let objects = Arc::new(Objects {
        shared: shared.clone(),
        caller,
        listed: listed
            .into_iter()
            .filter(|ws| ws.owner == caller.uid)
            .collect(),
        done: tokio::sync::OnceCell::new(),
    });
    let guid = zbus::Guid::generate();
    let limits = shared.gate.limits();
    let builder = match client {
        Client::Socket => zbus::connection::Builder::socket(framing::split(
            stream,
            caller.uid,
            limits.message_bytes,
            shared.gate.clone(),
        )),
        Client::Gateway => zbus::connection::Builder::unix_stream(stream),
    };
    let mut builder = builder.server(guid)?.p2p();
    if client == Client::Socket {
        builder = builder.serve_at("/org/freedesktop/DBus", hello::Hello::new(objects.clone()))?;
    }
    let build = builder
        .serve_at(
            ROOT_PATH,
            manager_iface::ManagerIface::new(shared.clone(), caller, objects.clone()),
        )?
        .serve_at(
            ROOT_PATH,
            store_iface::StoreIface::new(shared.clone(), caller),
        )?
        // Served before any message is read, while nothing is under it to announce.
        .serve_at(ROOT_PATH, zbus::fdo::ObjectManager)?
        .build();
    // The handshake: a client that says nothing, or too little, is closed.
    let conn = match client {
        Client::Socket => match tokio::time::timeout(limits.handshake_timeout, build).await {
            Ok(conn) => conn?,
            Err(_) => {
                shared.gate.handshake_timed_out(caller.uid);
                return Ok(());
            }
        },
        Client::Gateway => build.await?,
    };
    let server = conn.object_server();
    // The caller's workspaces, whose arrival the object manager announces, are added
    // as soon as Hello's reply has gone (bus-style clients such as busctl refuse any
    // message before it, and send nothing else until they have it), at the client's
    // first call to the manager, or after a moment for clients that do neither.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    objects.ensure(server).await;
    tracing::debug!(uid = caller.uid, "client connected");
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) if event.owner() == caller.uid => apply(server, &shared, caller, event).await,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = closed_signal(&conn) => break,
        }
    }
    Ok(())
}

/// The caller's workspace objects on one connection, added once (see `connection`).
#[derive(Debug)]
pub(crate) struct Objects {
    shared: Arc<Shared>,
    caller: Caller,
    /// The caller's workspaces when the client connected.
    listed: Vec<Workspace>,
    done: tokio::sync::OnceCell<()>,
}

impl Objects {
    /// Adds the caller's workspaces to `server`, the first time only.
    pub async fn ensure(&self, server: &ObjectServer) {
        self.done
            .get_or_init(|| async {
                for ws in &self.listed {
                    if let Err(e) =
                        workspace_iface::add(server, &self.shared, self.caller, ws).await
                    {
                        // The peer may have gone already (busctl leaves at once).
                        tracing::debug!(error = %e, "cannot show a workspace to a client");
                    }
                }
            })
            .await;
    }
}

/// Resolves when the peer has gone.
async fn closed_signal(conn: &zbus::Connection) {
    use futures_util::StreamExt;
    let mut stream = zbus::MessageStream::from(conn);
    while let Some(message) = stream.next().await {
        if message.is_err() {
            break;
        }
    }
}

async fn apply(server: &ObjectServer, shared: &Arc<Shared>, caller: Caller, event: Event) {
    tracing::debug!(?event, uid = caller.uid, "updating a client's objects");
    let result = match event {
        Event::Added { ws } => workspace_iface::add(server, shared, caller, &ws)
            .await
            .map(|_| ()),
        Event::Changed { ws, dirty } => workspace_iface::show(server, *ws, dirty).await,
        Event::Removed { id, .. } => server
            .remove::<workspace_iface::WorkspaceIface, _>(workspace_path(&id))
            .await
            .map(|_| ()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot update a client's objects");
    }
}
