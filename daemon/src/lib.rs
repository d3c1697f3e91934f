//! The library side of `wsd`: state in RocksDB ([`db`]), workspaces and their
//! transactions ([`manager`]), and the records they keep ([`workspace`]). The
//! D-Bus service and the `wsd` binary sit on top; [`remote`] is the REAPI
//! remote cache client.

pub mod access;
mod crash;
pub mod db;
pub mod dbus;
pub mod error;
pub mod input_file;
pub mod manager;
pub mod project;
pub mod remote;
pub mod run;
pub mod sandbox;
pub mod state_dir;
#[cfg(test)]
mod testing;
pub mod workspace;

pub use error::{Error, ErrorKind};
pub use manager::{Caller, Manager, MountPoint, OpenRequest, Source, Status};
pub use state_dir::StateDir;
pub use workspace::{OpEntry, OpKind, State, Workspace};
