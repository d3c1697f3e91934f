//! D-Bus errors: the daemon's error kinds as named errors (`org.ws.Error.NotFound`,
//! ...), each carrying the full message with its causes.

use crate::error::{Error, ErrorKind};

/// An error as D-Bus clients see it.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.ws.Error")]
pub enum DbusError {
    /// A D-Bus-level failure.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No such workspace (or not the caller's).
    NotFound(String),
    /// The name is taken.
    AlreadyExists(String),
    /// Another operation is running, or files are in use.
    Busy(String),
    /// The request contradicts the workspace's state.
    Conflict(String),
    /// The request is malformed.
    InvalidArgument(String),
    /// The caller may not do this.
    AccessDenied(String),
    /// A filesystem is full.
    NoSpace(String),
    /// Reading or writing failed.
    Io(String),
    /// Stored data is damaged.
    Corrupt(String),
    /// A remote cache is unreachable or refused the call.
    Unavailable(String),
}

impl From<Error> for DbusError {
    fn from(e: Error) -> DbusError {
        let message = chain(&e);
        match e.kind() {
            ErrorKind::NotFound => DbusError::NotFound(message),
            ErrorKind::AlreadyExists => DbusError::AlreadyExists(message),
            ErrorKind::Busy => DbusError::Busy(message),
            ErrorKind::Conflict => DbusError::Conflict(message),
            ErrorKind::InvalidArgument => DbusError::InvalidArgument(message),
            ErrorKind::AccessDenied => DbusError::AccessDenied(message),
            ErrorKind::NoSpace => DbusError::NoSpace(message),
            ErrorKind::Io => DbusError::Io(message),
            ErrorKind::Corrupt => DbusError::Corrupt(message),
            ErrorKind::Unavailable => DbusError::Unavailable(message),
        }
    }
}

impl DbusError {
    /// The error's D-Bus name and its message, for a signal that reports an
    /// error the way a failed call would.
    pub fn name_and_message(&self) -> (String, String) {
        let (name, message) = match self {
            DbusError::ZBus(e) => ("Failed", e.to_string()),
            DbusError::NotFound(m) => ("NotFound", m.clone()),
            DbusError::AlreadyExists(m) => ("AlreadyExists", m.clone()),
            DbusError::Busy(m) => ("Busy", m.clone()),
            DbusError::Conflict(m) => ("Conflict", m.clone()),
            DbusError::InvalidArgument(m) => ("InvalidArgument", m.clone()),
            DbusError::AccessDenied(m) => ("AccessDenied", m.clone()),
            DbusError::NoSpace(m) => ("NoSpace", m.clone()),
            DbusError::Io(m) => ("Io", m.clone()),
            DbusError::Corrupt(m) => ("Corrupt", m.clone()),
            DbusError::Unavailable(m) => ("Unavailable", m.clone()),
        };
        (format!("org.ws.Error.{name}"), message)
    }
}

pub use crate::error::message as chain;
