//! A tiny `org.freedesktop.DBus` for peer-to-peer connections: `busctl` and
//! `gdbus` assume a bus and say `Hello` first; answering it lets them work
//! against the socket directly.

use std::sync::Arc;

use zbus::object_server::ResponseDispatchNotifier;

use super::Objects;

/// The `org.freedesktop.DBus` stand-in.
#[derive(Debug)]
pub struct Hello {
    /// Shown once Hello's reply has been sent.
    objects: Arc<Objects>,
}

impl Hello {
    pub fn new(objects: Arc<Objects>) -> Hello {
        Hello { objects }
    }
}

#[zbus::interface(name = "org.freedesktop.DBus")]
impl Hello {
    /// Returns a unique name for the peer, as a bus would. Nothing else is sent to
    /// the peer before this reply (sd-bus, behind busctl, refuses that).
    fn hello(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> ResponseDispatchNotifier<String> {
        let (response, sent) = ResponseDispatchNotifier::new(":1.0".to_owned());
        let objects = self.objects.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            sent.await;
            objects.ensure(conn.object_server()).await;
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
