//! Pushing trees and blobs: walk the tree in the store (children before
//! parents), name every object in the remote's space, ask the server which it
//! lacks (`FindMissingBlobs`), and upload only those: small ones in batches cut
//! by size, large ones by ByteStream. A second push of the same tree sends no
//! blob.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use sha2::Digest as _;
use treediff::{Digest, Dir, Node, Store, StoreError};

use super::client::Client;
use super::digest_map::{DigestMap, Kind};
use super::encode;
use super::space::{Function, RemoteDigest};
use super::{Remote, RemoteError};

/// What one push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    /// The pushed roots in the remote's space, in the order given.
    pub roots: Vec<RemoteDigest>,
    /// Distinct blobs the roots reference (themselves included).
    pub blobs: u64,
    /// Of those, how many the server lacked, and so were sent.
    pub sent_blobs: u64,
    /// Their bytes.
    pub sent_bytes: u64,
}

/// Something to push.
#[derive(Clone, Debug)]
pub(super) enum Item {
    /// A tree in the store, every blob under it.
    Tree(Digest),
    /// A file's content in the store.
    Blob(Digest),
    /// Bytes that are not in the store (action cache messages), named in the
    /// remote's space.
    Raw(Vec<u8>),
}

/// Where an object's bytes come from when it has to be sent.
enum Source {
    /// The store's blob.
    Store(Digest),
    /// Bytes in memory (a directory's SHA-256 encoding, a message).
    Bytes(Arc<Vec<u8>>),
}

/// The objects of a push, children before parents.
struct Plan<'a> {
    store: &'a Store,
    map: &'a DigestMap,
    function: Function,
    order: Vec<RemoteDigest>,
    sources: HashMap<RemoteDigest, Source>,
    files: HashMap<Digest, RemoteDigest>,
    dirs: HashMap<Digest, RemoteDigest>,
    /// New digest table entries.
    pairs: Vec<(Kind, Digest, RemoteDigest)>,
}

impl Plan<'_> {
    fn add(&mut self, remote: RemoteDigest, source: Source) {
        if !self.sources.contains_key(&remote) {
            self.order.push(remote);
            self.sources.insert(remote, source);
        }
    }

    fn file(&mut self, digest: Digest) -> Result<RemoteDigest, RemoteError> {
        if let Some(remote) = self.files.get(&digest) {
            return Ok(*remote);
        }
        let remote = match self.function {
            Function::Blake3 => RemoteDigest::from_local(digest),
            Function::Sha256 => match self.map.sha256_of(Kind::File, digest)? {
                Some(remote) => remote,
                None => {
                    let remote = sha256_of_blob(self.store, digest)?;
                    self.pairs.push((Kind::File, digest, remote));
                    remote
                }
            },
        };
        self.files.insert(digest, remote);
        self.add(remote, Source::Store(digest));
        Ok(remote)
    }

    fn dir(&mut self, digest: Digest, path: &str) -> Result<RemoteDigest, RemoteError> {
        if let Some(remote) = self.dirs.get(&digest) {
            return Ok(*remote);
        }
        let dir = Dir::read(self.store, digest, path)?;
        for entry in dir.entries() {
            match &entry.node {
                Node::File { digest, .. } => {
                    self.file(*digest)?;
                }
                Node::Dir { digest } => {
                    self.dir(*digest, &treediff::names::join(path, &entry.name))?;
                }
                Node::Symlink { .. } => {}
            }
        }
        let remote = match self.function {
            Function::Blake3 => {
                let remote = RemoteDigest::from_local(digest);
                self.add(remote, Source::Store(digest));
                remote
            }
            Function::Sha256 => {
                let bytes = encode::to_remote(&dir, |d| self.files[&d], |d| self.dirs[&d]);
                let remote = self.function.digest(&bytes);
                self.pairs.push((Kind::Dir, digest, remote));
                self.add(remote, Source::Bytes(Arc::new(bytes)));
                remote
            }
        };
        self.dirs.insert(digest, remote);
        Ok(remote)
    }
}

/// The SHA-256 digest of a store blob, read in a stream and checked against its
/// BLAKE3 digest on the way.
fn sha256_of_blob(store: &Store, digest: Digest) -> Result<RemoteDigest, StoreError> {
    let path = store.blob_path(&digest);
    let mut file = std::fs::File::open(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::Missing {
                digest,
                path: path.clone(),
            }
        } else {
            StoreError::Io {
                op: "read blob",
                path: path.clone(),
                source,
            }
        }
    })?;
    let mut blake = blake3::Hasher::new();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|source| StoreError::Io {
            op: "read blob",
            path: path.clone(),
            source,
        })?;
        if n == 0 {
            break;
        }
        blake.update(&buf[..n]);
        sha.update(&buf[..n]);
        size += n as u64;
    }
    let actual = Digest::from_hasher(&blake, size);
    if actual != digest {
        return Err(StoreError::Corrupt {
            digest,
            path,
            problem: format!("its content hashes to {actual}"),
        });
    }
    Ok(RemoteDigest {
        hash: sha.finalize().into(),
        size,
    })
}

impl Remote {
    /// Pushes the tree `tree` (every blob under it) and returns what was done;
    /// `stats.roots[0]` is the tree's digest in the remote's space.
    pub fn push_tree(
        &self,
        store: &Store,
        map: &DigestMap,
        tree: Digest,
    ) -> Result<PushStats, RemoteError> {
        self.push(store, map, &[Item::Tree(tree)])
    }

    /// Pushes one blob of the store (a file's content, a log).
    pub fn push_blob(
        &self,
        store: &Store,
        map: &DigestMap,
        blob: Digest,
    ) -> Result<PushStats, RemoteError> {
        self.push(store, map, &[Item::Blob(blob)])
    }

    /// Pushes `items`: plans them, asks what is missing, uploads that.
    pub(super) fn push(
        &self,
        store: &Store,
        map: &DigestMap,
        items: &[Item],
    ) -> Result<PushStats, RemoteError> {
        let mut plan = Plan {
            store,
            map,
            function: self.function(),
            order: Vec::new(),
            sources: HashMap::new(),
            files: HashMap::new(),
            dirs: HashMap::new(),
            pairs: Vec::new(),
        };
        let mut roots = Vec::with_capacity(items.len());
        for item in items {
            roots.push(match item {
                Item::Tree(tree) => plan.dir(*tree, "")?,
                Item::Blob(blob) => plan.file(*blob)?,
                Item::Raw(bytes) => {
                    let remote = plan.function.digest(bytes);
                    plan.add(remote, Source::Bytes(Arc::new(bytes.clone())));
                    remote
                }
            });
        }
        map.insert(&plan.pairs)?;
        let missing: HashSet<RemoteDigest> = self
            .block_on(self.client.find_missing(&plan.order))?
            .into_iter()
            .collect();
        let mut stats = PushStats {
            roots,
            blobs: plan.order.len() as u64,
            ..PushStats::default()
        };
        // Children first, so that the server never holds a directory whose
        // children it lacks for longer than the push takes.
        let mut batch: Vec<(RemoteDigest, Vec<u8>)> = Vec::new();
        let mut batch_cost = 0;
        for remote in plan.order.iter().filter(|d| missing.contains(d)) {
            let bytes = match &plan.sources[remote] {
                Source::Store(digest) => Arc::new(store.read(digest)?.into_bytes()),
                Source::Bytes(bytes) => bytes.clone(),
            };
            stats.sent_blobs += 1;
            stats.sent_bytes += remote.size;
            if !self.client.fits_batch(remote.size) {
                self.block_on(self.client.write(*remote, bytes))?;
                continue;
            }
            let cost = Client::batch_cost(remote.size);
            if batch_cost + cost > self.client.batch_limit() {
                self.block_on(self.client.batch_update(std::mem::take(&mut batch)))?;
                batch_cost = 0;
            }
            batch_cost += cost;
            batch.push((*remote, Arc::unwrap_or_clone(bytes)));
        }
        if !batch.is_empty() {
            self.block_on(self.client.batch_update(batch))?;
        }
        tracing::debug!(
            url = self.url(),
            blobs = stats.blobs,
            sent = stats.sent_blobs,
            bytes = stats.sent_bytes,
            "pushed"
        );
        Ok(stats)
    }
}
