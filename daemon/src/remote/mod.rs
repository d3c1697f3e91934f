//! The remote cache client: artifacts, buildtrees, logs and source trees shared
//! through a REAPI v2 cache (BuildGrid, Buildbarn, bazel-remote), see
//! `docs/remote.md`.
//!
//! A server that offers BLAKE3 names blobs as the store does; others are
//! spoken to in SHA-256 space: blobs mapped through the persistent
//! [`DigestMap`], directory nodes re-encoded ([`encode`]).

pub mod digest_map;
pub mod encode;
pub mod space;

pub use digest_map::DigestMap;
pub use space::{Function, RemoteDigest};
