//! The remote cache client: artifacts, buildtrees, logs and source trees shared
//! through a REAPI v2 cache (BuildGrid, Buildbarn, bazel-remote), see
//! `docs/remote.md`.
//!
//! [`Remote::connect`] reads the server's capabilities once: if it offers BLAKE3,
//! remote digests are the store's own; otherwise blobs are named by SHA-256,
//! mapped through the persistent [`DigestMap`], and directory nodes re-encoded in
//! SHA-256 space ([`encode`]). [`Remote::push_tree`] uploads what the server
//! lacks, [`Remote::pull_tree`] fetches a tree into the store (every blob
//! verified as fetched, and again by BLAKE3 as it enters the store), and
//! [`Remote::put_result`] / [`Remote::get_result`] keep build results in the
//! action cache under an encoding of the cache key ([`action`]).
//!
//! **Blocking API.** The gRPC client is async (tonic); the manager's operations
//! are blocking (run on `spawn_blocking`). A `Remote` holds a handle to a tokio
//! runtime and drives each call with `Handle::block_on`, so its methods must be
//! called from a blocking thread (`spawn_blocking`, or any thread that is not
//! a runtime worker), never from async code. Store reads and writes happen on
//! that calling thread, not on the runtime's workers.
//!
//! **The store.** A pull writes through one store transaction that commits only
//! when everything was fetched and verified. The caller holds the gc lock shared
//! from the pull until the batch that references what it pulled (ARCHITECTURE.md).

pub mod action;
mod client;
pub mod digest_map;
pub mod encode;
pub mod endpoint;
mod error;
mod pull;
mod push;
pub mod space;
mod stream_in;

use std::future::Future;

use tokio::runtime::Handle;

pub use action::{BuildInfo, BuildResult, Entry, Found, Lookup, Parts};
pub use client::RemoteStats;
pub use digest_map::DigestMap;
pub use endpoint::{ClientIdentity, Endpoint, TlsConfig};
pub use error::RemoteError;
pub use push::PushStats;
pub use space::{Function, RemoteDigest};

use client::Client;

/// A connection to one instance of a remote cache.
#[derive(Debug)]
pub struct Remote {
    runtime: Handle,
    client: Client,
    update_enabled: bool,
    /// The largest blob a pull takes (see [`Remote::with_max_blob`]).
    max_blob: u64,
}

/// The largest blob taken from a remote unless the daemon's configuration says
/// otherwise: far above any artifact's file, far below a disk.
pub const DEFAULT_MAX_BLOB: u64 = 16 << 30;

impl Remote {
    /// Connects to the cache at `url` (`grpc://HOST:PORT`, or `grpcs://` trusting
    /// the system's roots), instance `instance` (often `""`): [`Remote::connect_with`]
    /// without TLS settings.
    pub fn connect(runtime: Handle, url: &str, instance: &str) -> Result<Remote, RemoteError> {
        Remote::connect_with(runtime, &Endpoint::new(url, instance))
    }

    /// Connects to the cache `remote` (its URL, instance, TLS settings and
    /// credentials) and reads its capabilities: which digest function to use,
    /// the batch size limit, whether the action cache takes updates. Calls are
    /// driven on `runtime` (see the module doc). Blocks until the server answered.
    pub fn connect_with(runtime: Handle, remote: &Endpoint) -> Result<Remote, RemoteError> {
        let (url, instance) = (remote.url.as_str(), remote.instance.as_str());
        let mut client = {
            // The channel's background task is spawned on this runtime.
            let _context = runtime.enter();
            Client::new(remote)?
        };
        let capabilities = runtime.block_on(client.capabilities())?;
        let unsupported = |problem: &str| RemoteError::Unsupported {
            url: url.to_owned(),
            instance: instance.to_owned(),
            problem: problem.to_owned(),
        };
        let cache = capabilities
            .cache_capabilities
            .ok_or_else(|| unsupported("the server has no cache capabilities (not a CAS)"))?;
        let function = Function::choose(&cache.digest_functions).ok_or_else(|| {
            RemoteError::NoDigestFunction {
                url: url.to_owned(),
                instance: instance.to_owned(),
                offered: cache
                    .digest_functions
                    .iter()
                    .map(|v| Function::value_name(*v))
                    .collect(),
            }
        })?;
        client.configure(function, cache.max_batch_total_size_bytes);
        let update_enabled = cache
            .action_cache_update_capabilities
            .is_some_and(|c| c.update_enabled);
        tracing::info!(
            url,
            instance,
            function = function.name(),
            batch_limit = client.batch_limit(),
            update_enabled,
            "connected to the remote cache"
        );
        Ok(Remote {
            runtime,
            client,
            update_enabled,
            max_blob: DEFAULT_MAX_BLOB,
        })
    }

    /// Takes blobs of at most `bytes` from this remote: a pull naming a larger
    /// one is refused before anything is fetched.
    pub fn with_max_blob(mut self, bytes: u64) -> Remote {
        self.max_blob = bytes;
        self
    }

    /// The remote's URL.
    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        self.client.instance()
    }

    /// The digest function in use: BLAKE3 (no mapping) or SHA-256.
    pub fn function(&self) -> Function {
        self.client.function()
    }

    /// Whether the server's action cache takes updates.
    pub fn update_enabled(&self) -> bool {
        self.update_enabled
    }

    /// The largest blob taken from this remote.
    pub fn max_blob(&self) -> u64 {
        self.max_blob
    }

    /// What was sent and received since the connection was made.
    pub fn stats(&self) -> RemoteStats {
        self.client.stats()
    }

    /// The remote digest of a local object, if known: itself in BLAKE3 space,
    /// else what the digest table recorded when it was pushed or pulled.
    pub fn remote_digest(
        &self,
        map: &DigestMap,
        kind: digest_map::Kind,
        digest: treediff::Digest,
    ) -> Result<Option<RemoteDigest>, RemoteError> {
        match self.function() {
            Function::Blake3 => Ok(Some(RemoteDigest::from_local(digest))),
            Function::Sha256 => Ok(map.sha256_of(kind, digest)?),
        }
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    /// The daemon shares one `Remote` between the blocking threads of its
    /// operations.
    #[test]
    fn a_remote_is_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<super::Remote>();
        shared::<super::DigestMap>();
    }
}
