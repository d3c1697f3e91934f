//! The D-Bus service: the only module that knows D-Bus.
//!
//! Served peer-to-peer on a Unix socket (no bus daemon needed). Each accepted
//! connection is its own D-Bus connection with its own object server, populated
//! with the caller's workspaces only: the caller is identified by `SO_PEERCRED`,
//! read before the handshake, and another user's workspaces are not there to be
//! found, introspected or enumerated. Operations run on the blocking pool; when
//! one changes a workspace, every connection of its owner learns it through an
//! event channel and emits `PropertiesChanged` (or `InterfacesAdded/Removed`
//! through the object manager). See `docs/dbus.md` for the interfaces.

mod errors;
mod hello;
mod manager_iface;
mod workspace_iface;

use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::broadcast;
use zbus::object_server::ObjectServer;

use crate::manager::{Caller, Manager};

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
pub(crate) enum Event {
    /// A workspace was opened.
    Added { id: String, owner: u32 },
    /// A workspace's record or view changed.
    Changed { id: String, owner: u32 },
    /// A workspace was closed.
    Removed { id: String, owner: u32 },
}

impl Event {
    fn owner(&self) -> u32 {
        match self {
            Event::Added { owner, .. }
            | Event::Changed { owner, .. }
            | Event::Removed { owner, .. } => *owner,
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub manager: Arc<Manager>,
    pub events: broadcast::Sender<Event>,
}

impl Shared {
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

/// Serves `manager` on the Unix socket `socket` until the process ends.
pub async fn serve(manager: Arc<Manager>, socket: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    // Anyone may connect; what they may do is decided per call by their uid.
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    let (events, _) = broadcast::channel(256);
    let shared = Arc::new(Shared { manager, events });
    tracing::info!(socket = %socket.display(), "serving");
    loop {
        let (stream, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(shared, stream).await {
                tracing::warn!(error = %e, "a client connection failed");
            }
        });
    }
}

/// One client: its credentials, its object server, and its share of the events.
async fn connection(shared: Arc<Shared>, stream: tokio::net::UnixStream) -> zbus::Result<()> {
    let cred = stream.peer_cred().map_err(|e| {
        zbus::Error::Failure(format!(
            "cannot read the peer's credentials, so the connection is refused: {e}"
        ))
    })?;
    let caller = Caller {
        uid: cred.uid(),
        gid: cred.gid(),
    };
    let objects = Arc::new(Objects {
        done: tokio::sync::OnceCell::new(),
    });
    // Subscribed first: what happens while the connection is set up is not missed.
    let mut events = shared.events.subscribe();
    let said_hello = Arc::new(tokio::sync::Notify::new());
    let guid = zbus::Guid::generate();
    let conn = zbus::connection::Builder::unix_stream(stream)
        .server(guid)?
        .p2p()
        .serve_at(
            "/org/freedesktop/DBus",
            hello::Hello::new(said_hello.clone()),
        )?
        .serve_at(
            ROOT_PATH,
            manager_iface::ManagerIface::new(shared.clone(), caller, objects.clone()),
        )?
        .build()
        .await?;
    let server = conn.object_server();
    // The caller's workspaces are there from the start; the object manager, whose
    // arrival announces them, comes once the client has said Hello (bus-style
    // clients such as busctl refuse any message before Hello's reply), at its first
    // call to the manager, or after a moment for clients that do neither.
    for ws in shared.manager.list(caller).unwrap_or_default() {
        if ws.owner == caller.uid {
            workspace_iface::add(server, &shared, caller, &ws).await?;
        }
    }
    tokio::select! {
        _ = said_hello.notified() => {}
        _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
    }
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

/// The object manager of one connection, registered once (see `connection`).
#[derive(Debug)]
pub(crate) struct Objects {
    done: tokio::sync::OnceCell<()>,
}

impl Objects {
    /// Registers the object manager at [`ROOT_PATH`], the first time only.
    pub async fn ensure(&self, server: &ObjectServer) {
        self.done
            .get_or_init(|| async {
                if let Err(e) = server.at(ROOT_PATH, zbus::fdo::ObjectManager).await {
                    // The peer may have gone already (busctl leaves at once).
                    tracing::debug!(error = %e, "cannot serve the object manager");
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
        Event::Added { id, .. } => match shared.manager.workspace_by_id(&id) {
            Ok(Some(ws)) => workspace_iface::add(server, shared, caller, &ws)
                .await
                .map(|_| ()),
            _ => Ok(()),
        },
        Event::Changed { id, .. } => workspace_iface::refresh(server, shared, &id).await,
        Event::Removed { id, .. } => server
            .remove::<workspace_iface::WorkspaceIface, _>(workspace_path(&id))
            .await
            .map(|_| ()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot update a client's objects");
    }
}
