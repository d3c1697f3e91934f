//! A tiny `org.freedesktop.DBus` for peer-to-peer connections: `busctl` and
//! `gdbus` assume a bus and say `Hello` first; answering it lets them work
//! against the socket directly.

use std::sync::Arc;

use zbus::object_server::ResponseDispatchNotifier;

/// The `org.freedesktop.DBus` stand-in.
#[derive(Debug)]
pub struct Hello {
    /// Told once Hello's reply has been sent.
    said: Arc<tokio::sync::Notify>,
}

impl Hello {
    pub fn new(said: Arc<tokio::sync::Notify>) -> Hello {
        Hello { said }
    }
}

#[zbus::interface(name = "org.freedesktop.DBus")]
impl Hello {
    /// Returns a unique name for the peer, as a bus would. Nothing else is sent to
    /// the peer before this reply (sd-bus, behind busctl, refuses that).
    fn hello(&self) -> ResponseDispatchNotifier<String> {
        let (response, sent) = ResponseDispatchNotifier::new(":1.0".to_owned());
        let said = self.said.clone();
        tokio::spawn(async move {
            sent.await;
            said.notify_one();
        });
        response
    }

    /// There are no other names on a peer-to-peer connection; subscriptions are
    /// accepted and every signal is sent anyway.
    fn add_match(&self, _rule: String) {}

    /// See `add_match`.
    fn remove_match(&self, _rule: String) {}

    /// The daemon owns every name asked about.
    fn get_name_owner(&self, _name: String) -> String {
        ":1.0".to_owned()
    }
}
