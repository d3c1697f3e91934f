//! The daemon on a message bus (system or session) as `org.ws.Daemon`: a gateway.
//!
//! The bus connection has no object server: one shared object tree would show
//! every user's workspaces. Instead each incoming call is passed, by the caller's
//! uid (read from the bus, `credentials`), into that caller's link (`links`): an
//! in-process connection served by the same code as a socket client, holding the
//! caller's objects only. The reply goes back to the caller with its serial, and
//! the link's signals go to that caller's bus clients only, unicast.

use std::sync::Arc;

use futures_util::StreamExt;
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};
use zbus::message::{Flags, Type};
use zbus::names::UniqueName;
use zbus::{Connection, DBusError as _, Message, MessageStream};

use super::links::Links;
use super::{BUS_NAME, DbusError, Shared, credentials, describe, relay};

/// Which bus to serve on, besides the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusChoice {
    /// The system bus when running as root and it answers, else the session bus
    /// when `DBUS_SESSION_BUS_ADDRESS` is set, else none. Failures are logged and
    /// the socket is served anyway.
    Auto,
    /// The system bus; failing to serve there is an error.
    System,
    /// The session bus; failing to serve there is an error.
    Session,
    /// The bus at this address (a private bus for tests); failing is an error.
    Address(String),
    /// The socket only.
    None,
}

/// Why the daemon cannot serve on a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus did not accept a connection.
    #[error("cannot connect to the {bus}")]
    Connect {
        bus: String,
        source: Box<zbus::Error>,
    },
    /// Another process owns the name.
    #[error("cannot own {BUS_NAME} on the {bus}: another process owns it (another wsd?)")]
    NameTaken { bus: String },
    /// The bus refused the name or another request (its policy, usually).
    #[error(
        "cannot own {BUS_NAME} on the {bus} (on the system bus, org.ws.Daemon.conf must be installed: see docs/install.md)"
    )]
    Name {
        bus: String,
        source: Box<zbus::fdo::Error>,
    },
    /// The connection to the bus ended.
    #[error("the connection to the {bus} ended")]
    Closed { bus: String },
}

/// A bus the daemon is connected to, not yet served.
#[derive(Debug)]
pub struct Bus {
    conn: Connection,
    /// Which bus, for messages.
    name: String,
    /// Whether it was asked for explicitly (its failure stops the daemon).
    required: bool,
}

impl Bus {
    /// Connects to the bus `choice` names. `Auto` logs what it cannot reach and
    /// answers `None` rather than failing.
    pub async fn connect(choice: BusChoice) -> Result<Option<Bus>, BusError> {
        use zbus::connection::Builder;
        let bus = match choice {
            BusChoice::None => return Ok(None),
            BusChoice::Auto => return Ok(Bus::auto().await),
            BusChoice::System => Bus::open(Builder::system(), "system bus".into()).await?,
            BusChoice::Session => Bus::open(Builder::session(), "session bus".into()).await?,
            BusChoice::Address(address) => {
                let name = format!("bus at {address}");
                Bus::open(Builder::address(address.as_str()), name).await?
            }
        };
        Ok(Some(bus))
    }

    /// `--bus auto`: the first bus that answers, if any.
    async fn auto() -> Option<Bus> {
        use zbus::connection::Builder;
        let mut candidates = Vec::new();
        if nix::unistd::geteuid().is_root() {
            candidates.push((Builder::system(), "system bus"));
        }
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty()) {
            candidates.push((Builder::session(), "session bus"));
        }
        for (builder, name) in candidates {
            match Bus::open(builder, name.to_owned()).await {
                Ok(bus) => {
                    return Some(Bus {
                        required: false,
                        ..bus
                    });
                }
                Err(e) => tracing::warn!(error = %describe(&e), "not serving on the {name}"),
            }
        }
        tracing::info!("serving on the socket only (no bus)");
        None
    }

    async fn open(
        builder: zbus::Result<zbus::connection::Builder<'_>>,
        name: String,
    ) -> Result<Bus, BusError> {
        let connect = |source| BusError::Connect {
            bus: name.clone(),
            source: Box::new(source),
        };
        let conn = builder.map_err(connect)?.build().await.map_err(connect)?;
        Ok(Bus {
            conn,
            name,
            required: true,
        })
    }

    /// Whether a failure on this bus must stop the daemon.
    pub fn required(&self) -> bool {
        self.required
    }
}

/// What the gateway's calls share.
#[derive(Debug)]
struct Gateway {
    bus: Connection,
    dbus: DBusProxy<'static>,
    links: Arc<Links>,
    shared: Arc<Shared>,
}

/// Owns `BUS_NAME` on `bus` and serves it until the connection ends.
pub(super) async fn serve(shared: Arc<Shared>, bus: Bus) -> Result<(), BusError> {
    let Bus { conn, name, .. } = bus;
    let refused = |source| BusError::Name {
        bus: name.clone(),
        source: Box::new(source),
    };
    // Everything that reaches the connection, read from before the name is owned
    // so that no call is missed.
    let mut messages = MessageStream::from(&conn);
    let dbus = DBusProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| refused(e.into()))?;
    // Clients that leave the bus are forgotten (arg2 is the new owner: none).
    let gone = zbus::MatchRule::builder()
        .msg_type(Type::Signal)
        .sender("org.freedesktop.DBus")
        .and_then(|r| r.interface("org.freedesktop.DBus"))
        .and_then(|r| r.member("NameOwnerChanged"))
        .and_then(|r| r.arg(2, ""))
        .map_err(|e| refused(e.into()))?
        .build();
    dbus.add_match_rule(gone).await.map_err(refused)?;
    let reply = dbus
        .request_name(
            zbus::names::WellKnownName::from_static_str_unchecked(BUS_NAME),
            RequestNameFlags::DoNotQueue.into(),
        )
        .await
        .map_err(refused)?;
    if !matches!(
        reply,
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner
    ) {
        return Err(BusError::NameTaken { bus: name });
    }
    tracing::info!(bus = %name, name = BUS_NAME, "serving on the bus");
    let links = Links::new(shared.clone(), conn.clone());
    let gateway = Arc::new(Gateway {
        bus: conn,
        dbus,
        links: links.clone(),
        shared,
    });
    while let Some(message) = messages.next().await {
        let Ok(message) = message else {
            continue;
        };
        match message.message_type() {
            Type::MethodCall => {
                tokio::spawn(handle(gateway.clone(), message));
            }
            Type::Signal => {
                if let Some(left) = left_the_bus(&message) {
                    let links = links.clone();
                    tokio::spawn(async move { links.forget(&left).await });
                }
            }
            // Replies to the gateway's own calls, which zbus routes to them.
            _ => {}
        }
    }
    links.clear().await;
    Err(BusError::Closed { bus: name })
}

/// The unique name that `message` says has left the bus, if it is the bus's
/// `NameOwnerChanged` saying so.
fn left_the_bus(message: &Message) -> Option<UniqueName<'static>> {
    let header = message.header();
    if header.sender()?.as_str() != "org.freedesktop.DBus"
        || header.member()?.as_str() != "NameOwnerChanged"
    {
        return None;
    }
    let (name, _old, new): (String, String, String) = message.body().deserialize().ok()?;
    if !new.is_empty() {
        return None;
    }
    UniqueName::try_from(name).ok()
}

/// Passes the bus call `call` to its caller's link and the answer back.
async fn handle(gateway: Arc<Gateway>, call: Message) {
    let header = call.header();
    // The bus always names the sender; a message without one is not from a client.
    let Some(sender) = header.sender() else {
        return;
    };
    let answer = match gateway.link(sender).await {
        Ok(link) => relay::call(&link, &call)
            .await
            .map_err(|e| DbusError::Io(format!("the daemon could not answer the call: {e}"))),
        Err(e) => Err(e),
    };
    let reply = match answer {
        Ok(None) => return,
        Ok(Some(reply)) => relay::reply(&header, &reply).or_else(|e| {
            DbusError::Io(format!("the daemon could not pass the reply on: {e}"))
                .create_reply(&header)
        }),
        Err(_) if header.primary().flags().contains(Flags::NoReplyExpected) => return,
        Err(e) => {
            tracing::debug!(error = ?e, client = %sender, "a bus call failed");
            e.create_reply(&header)
        }
    };
    let sent = match reply {
        Ok(reply) => gateway.bus.send(&reply).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        // The client may have left.
        tracing::debug!(error = %e, client = %sender, "cannot answer a bus client");
    }
}

impl Gateway {
    /// The link of the bus client `sender`, found by the uid the bus reports for it.
    async fn link(&self, sender: &UniqueName<'_>) -> Result<Connection, DbusError> {
        if let Some(link) = self.links.of(sender).await {
            return Ok(link);
        }
        let caller = credentials::caller(&self.dbus, sender)
            .await
            .map_err(|e| DbusError::AccessDenied(describe(&e)))?;
        if !self.shared.admits(caller.uid, "bus") {
            return Err(DbusError::AccessDenied(
                "this daemon runs as another user and serves that user only; use your own (ws starts one for your state directory)".to_owned(),
            ));
        }
        let link = self
            .links
            .attach(sender, caller)
            .await
            .map_err(|e| DbusError::Io(format!("cannot serve user {}: {e}", caller.uid)))?;
        // A client that left while its credentials were read may have been
        // forgotten before it was attached: now that it is, see that it is there.
        if !self
            .dbus
            .name_has_owner(zbus::names::BusName::Unique(sender.clone()))
            .await
            .unwrap_or(false)
        {
            self.links.forget(sender).await;
        }
        Ok(link)
    }
}
