//! Filesystem mechanics for workspaces: the snapshotter trait and its backends
//! (kernel overlayfs, fuse-overlayfs, mirror). Not yet implemented; see issue
//! "Snapshots over read-only sources" and `docs/ARCHITECTURE.md`.
