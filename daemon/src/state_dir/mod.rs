//! The daemon's state directory: where the store, the database, the snapshots,
//! default workspace paths and the socket live, and who may reach them
//! (`modes`: private to the daemon but for the socket and each user's default
//! mount points; `runtime`: the checked directory of a socket kept elsewhere).

pub mod modes;
mod runtime;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use modes::Sharing;

use crate::error::Error;

/// The paths under one state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory `root` (made by [`StateDir::prepare`]).
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    /// Creates the directories the daemon writes in, private as `modes` says,
    /// and tightens what an older release left.
    pub fn prepare(&self) -> Result<(), Error> {
        modes::prepare(&self.root)
    }

    /// The state directory itself (also the store's root).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The RocksDB database.
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    /// One directory per snapshotter (backend and owner).
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Default mount points: `workspaces/<owner uid>/<name>`.
    pub fn workspaces(&self) -> PathBuf {
        self.root.join(modes::WORKSPACES)
    }

    /// `workspaces/`, opened without following a symlink there.
    pub(crate) fn open_workspaces(&self) -> Result<OwnedFd, Error> {
        modes::open_workspaces(&self.root)
    }

    /// The peer-to-peer D-Bus socket: `<state>/wsd.sock`, or, when that path is
    /// too long for a Unix socket address (108 bytes), a short one in the runtime
    /// directory named after the state directory. Clients find the latter through
    /// [`StateDir::socket_record`].
    pub fn socket(&self) -> PathBuf {
        let default = self.root.join(modes::SOCKET);
        if default.as_os_str().len() < MAX_SOCKET_PATH {
            return default;
        }
        let absolute = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        let hash = blake3::hash(absolute.as_os_str().as_encoded_bytes()).to_hex();
        runtime::runtime_dir().join(format!("wsd-{}.sock", &hash[..16]))
    }

    /// [`StateDir::socket`], once the runtime directory it may be in is made and
    /// checked to be this process's own (see `runtime`).
    pub fn prepare_socket(&self) -> Result<PathBuf, Error> {
        let socket = self.socket();
        if let Some(dir) = socket.parent()
            && dir != self.root
        {
            runtime::prepare(dir)?;
        }
        Ok(socket)
    }

    /// The file naming the socket when it is not `<state>/wsd.sock` (written by
    /// the daemon at start): a client cannot work out the runtime directory of the
    /// daemon's user.
    pub fn socket_record(&self) -> PathBuf {
        self.root.join(modes::SOCKET_RECORD)
    }

    /// The lock that decides which daemon serves this state directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join("wsd.lock")
    }
}

/// The longest path a Unix socket address holds, with its terminating NUL.
const MAX_SOCKET_PATH: usize = 108;
