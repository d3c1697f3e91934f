//! The links of the bus gateway: one in-process peer-to-peer connection per
//! caller (uid and group) with bus clients, served exactly like a connection on
//! the socket, and the bus clients each one speaks for.
//!
//! A link's object server holds its caller's workspaces only, so whatever a bus
//! client reaches through it (calls, `Introspect`, `GetManagedObjects`) is its
//! own; a link's signals are sent to its own bus clients only, one unicast copy
//! each.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Mutex, oneshot};
use zbus::message::{Sequence, Type};
use zbus::names::{OwnedUniqueName, UniqueName};
use zbus::{Connection, MessageStream};

use super::{Client, ROOT_PATH, Shared, relay};
use crate::manager::Caller;

/// How long making a link may take before the call that needs it fails.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which link serves a caller: its uid and primary group.
type Key = (u32, u32);

fn key(caller: Caller) -> Key {
    (caller.uid, caller.gid)
}

/// The gateway's links and bus clients.
#[derive(Debug)]
pub struct Links {
    shared: Arc<Shared>,
    bus: Connection,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bus clients that have called the daemon, and who they are.
    clients: HashMap<OwnedUniqueName, Caller>,
    links: HashMap<Key, Link>,
}

#[derive(Debug)]
struct Link {
    conn: Connection,
    /// The bus clients its signals go to.
    clients: BTreeSet<OwnedUniqueName>,
    /// Dropped with the link, which stops its signal forwarding.
    _stop: oneshot::Sender<()>,
}

impl Links {
    pub fn new(shared: Arc<Shared>, bus: Connection) -> Arc<Links> {
        Arc::new(Links {
            shared,
            bus,
            state: Mutex::new(State::default()),
        })
    }

    /// The link of the bus client `name`, if it has called before.
    pub async fn of(&self, name: &UniqueName<'_>) -> Option<Connection> {
        let state = self.state.lock().await;
        let caller = state.clients.get(name.as_str())?;
        Some(state.links.get(&key(*caller))?.conn.clone())
    }

    /// Makes the bus client `name` one of `caller`'s, with a link made if needed;
    /// returns the link.
    pub async fn attach(
        self: &Arc<Self>,
        name: &UniqueName<'_>,
        caller: Caller,
    ) -> zbus::Result<Connection> {
        let mut state = self.state.lock().await;
        let link = match state.links.entry(key(caller)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let link = tokio::time::timeout(OPEN_TIMEOUT, self.open(caller))
                    .await
                    .map_err(|_| {
                        zbus::Error::Failure(format!(
                            "the daemon did not set up the connection of user {} within {OPEN_TIMEOUT:?}",
                            caller.uid
                        ))
                    })??;
                entry.insert(link)
            }
        };
        link.clients.insert(name.to_owned().into());
        let conn = link.conn.clone();
        state.clients.insert(name.to_owned().into(), caller);
        tracing::debug!(client = %name, uid = caller.uid, "a bus client");
        Ok(conn)
    }

    /// Forgets the bus client `name`, which has left the bus; a link left with no
    /// client is closed.
    pub async fn forget(&self, name: &UniqueName<'_>) {
        let mut state = self.state.lock().await;
        let Some(caller) = state.clients.remove(name.as_str()) else {
            return;
        };
        tracing::debug!(client = %name, uid = caller.uid, "a bus client left");
        if let Entry::Occupied(mut link) = state.links.entry(key(caller)) {
            link.get_mut().clients.remove(name.as_str());
            if link.get().clients.is_empty() {
                // In-flight calls keep their clone; the link closes after them.
                link.remove();
            }
        }
    }

    /// Drops every link (the bus has gone).
    pub async fn clear(&self) {
        let mut state = self.state.lock().await;
        state.clients.clear();
        state.links.clear();
    }

    /// A new link for `caller`: the server end served like a socket's client,
    /// and its signals forwarded from now on.
    async fn open(self: &Arc<Self>, caller: Caller) -> zbus::Result<Link> {
        let (ours, theirs) =
            tokio::net::UnixStream::pair().map_err(|e| zbus::Error::InputOutput(e.into()))?;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = super::serve_client(shared, theirs, caller, Client::Gateway).await {
                tracing::warn!(error = %e, uid = caller.uid, "a bus link failed");
            }
        });
        let conn = zbus::connection::Builder::unix_stream(ours)
            .p2p()
            .build()
            .await?;
        let signals = MessageStream::from(&conn);
        // The caller's workspace objects are on the link once `List` has answered,
        // so a first call on one of them finds it; the `InterfacesAdded` signals
        // that put them there announce nothing new and are not forwarded.
        let ready = conn
            .call_method(
                None::<&str>,
                ROOT_PATH,
                Some("org.ws.Manager1"),
                "List",
                &(),
            )
            .await?
            .recv_position();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(self.clone().forward(key(caller), signals, ready, stopped));
        Ok(Link {
            conn,
            clients: BTreeSet::new(),
            _stop: stop,
        })
    }

    /// Sends each signal of the link `key` received after `ready` to the link's
    /// bus clients, until the link is dropped or closes.
    async fn forward(
        self: Arc<Self>,
        key: Key,
        mut signals: MessageStream,
        ready: Sequence,
        mut stopped: oneshot::Receiver<()>,
    ) {
        loop {
            let signal = tokio::select! {
                biased;
                _ = &mut stopped => break,
                message = signals.next() => match message {
                    Some(Ok(message)) => message,
                    Some(Err(_)) => continue,
                    None => break,
                },
            };
            if signal.message_type() != Type::Signal || signal.recv_position() < ready {
                continue;
            }
            let clients: Vec<OwnedUniqueName> = match self.state.lock().await.links.get(&key) {
                Some(link) => link.clients.iter().cloned().collect(),
                None => break,
            };
            for client in clients {
                let sent = match relay::signal(&signal, &client) {
                    Ok(copy) => self.bus.send(&copy).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, %client, "cannot pass a signal on");
                }
            }
        }
    }
}
