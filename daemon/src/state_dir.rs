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

    /// The peer-to-peer D-Bus socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("wsd.sock")
    }

    /// The lock that decides which daemon serves this state directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join("wsd.lock")
    }
}
