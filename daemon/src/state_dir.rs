//! The daemon's state directory: where the store, the database, the snapshots,
//! default workspace paths and the socket live.

use std::path::{Path, PathBuf};

/// The paths under one state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory `root` (made by [`StateDir::create`]).
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    /// Creates the directories the daemon writes in.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [self.root.clone(), self.snapshots(), self.workspaces()] {
            std::fs::create_dir_all(&dir)?;
        }
        Ok(())
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
        self.root.join("workspaces")
    }

    /// The peer-to-peer D-Bus socket: `<state>/wsd.sock`, or, when that path is
    /// too long for a Unix socket address (108 bytes), a short one in the runtime
    /// directory named after the state directory. Clients find the latter through
    /// [`StateDir::socket_record`].
    pub fn socket(&self) -> PathBuf {
        let default = self.root.join("wsd.sock");
        if default.as_os_str().len() < MAX_SOCKET_PATH {
            return default;
        }
        let absolute = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        let hash = blake3::hash(absolute.as_os_str().as_encoded_bytes()).to_hex();
        runtime_dir().join(format!("wsd-{}.sock", &hash[..16]))
    }

    /// The file naming the socket when it is not `<state>/wsd.sock` (written by
    /// the daemon at start): a client cannot work out the runtime directory of the
    /// daemon's user.
    pub fn socket_record(&self) -> PathBuf {
        self.root.join("wsd.socket")
    }

    /// The lock that decides which daemon serves this state directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join("wsd.lock")
    }
}

/// The longest path a Unix socket address holds, with its terminating NUL.
const MAX_SOCKET_PATH: usize = 108;

/// Where short-lived runtime files go: `/run/ws` for root, `$XDG_RUNTIME_DIR/ws`
/// for a user, else `/tmp/ws-<uid>`.
fn runtime_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/ws");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("ws"),
        None => PathBuf::from(format!("/tmp/ws-{uid}")),
    }
}
