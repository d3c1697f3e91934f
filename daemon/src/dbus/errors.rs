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
        }
    }
}

/// An error and its causes, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
