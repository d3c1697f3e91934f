//! Pushing trees and blobs: walk the tree in the store (children before
//! parents), name every object in the remote's space, ask the server which it
//! lacks (`FindMissingBlobs`), and upload only those: small ones in batches cut
//! by size, large ones by ByteStream. A second push of the same tree sends no
//! blob.
//!
//! **Pipelined.** Three stages on their own threads, so that the client's work
//! (reading and hashing every blob, asking what is missing, reading the missing
//! blobs again) happens while the server takes the uploads, which is what a push
//! waits for (`tests/bench/remote.sh`):
//!
//! 1. the planner walks the items and names every object, handing them on in
//!    plan order (children first) in chunks of one `FindMissingBlobs` call each;
//! 2. the reader asks the server which blobs of a chunk it lacks, and reads those
//!    into batches (a few ahead, bounded);
//! 3. the calling thread sends the batches and streams in plan order, one call
//!    at a time: a blob is stored on the server before any later one is sent, so
//!    a directory never arrives before its children.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::Digest as _;
use treediff::{Digest, Dir, Node, Store, StoreError};

use super::client::{Client, FIND_MISSING_CHUNK};
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
    Bytes(Vec<u8>),
}

/// One object of the plan.
struct Entry {
    remote: RemoteDigest,
    source: Source,
    /// Whether other objects may refer to it (a directory, a message): it must
    /// not reach the server before the objects planned before it.
    parent: bool,
}

/// Blob bytes ready to send, in plan order.
enum Upload {
    Batch(Vec<(RemoteDigest, Vec<u8>)>),
    Stream(RemoteDigest, Vec<u8>),
}

/// Batches read ahead of the one being sent.
const READ_AHEAD: usize = 2;

/// Why a stage stopped early.
enum Stop {
    /// It failed.
    Failed(RemoteError),
    /// The next stage failed and is gone (its error is the one to report).
    Cancelled,
}

fn failed<E: Into<RemoteError>>(error: E) -> Stop {
    Stop::Failed(error.into())
}

/// The objects of a push, children before parents, handed on in chunks.
struct Plan<'a> {
    store: &'a Store,
    map: &'a DigestMap,
    function: Function,
    out: SyncSender<Vec<Entry>>,
    /// The chunk being filled.
    chunk: Vec<Entry>,
    seen: HashSet<RemoteDigest>,
    files: HashMap<Digest, RemoteDigest>,
    dirs: HashMap<Digest, RemoteDigest>,
    /// New digest table entries, not written yet.
    pairs: Vec<(Kind, Digest, RemoteDigest)>,
    /// Distinct objects planned.
    count: u64,
    /// The buffer blobs are hashed through.
    buf: Vec<u8>,
}

impl Plan<'_> {
    fn add(&mut self, remote: RemoteDigest, source: Source, parent: bool) -> Result<(), Stop> {
        if !self.seen.insert(remote) {
            return Ok(());
        }
        self.count += 1;
        self.chunk.push(Entry {
            remote,
            source,
            parent,
        });
        if self.chunk.len() >= FIND_MISSING_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the chunk on, its digest table entries written first.
    fn flush(&mut self) -> Result<(), Stop> {
        self.map.insert(&self.pairs).map_err(failed)?;
        self.pairs.clear();
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.chunk);
        self.out.send(chunk).map_err(|_| Stop::Cancelled)
    }

    fn file(&mut self, digest: Digest) -> Result<RemoteDigest, Stop> {
        if let Some(remote) = self.files.get(&digest) {
            return Ok(*remote);
        }
        let remote = match self.function {
            Function::Blake3 => RemoteDigest::from_local(digest),
            Function::Sha256 => match self.map.sha256_of(Kind::File, digest).map_err(failed)? {
                Some(remote) => remote,
                None => {
                    let remote =
                        sha256_of_blob(self.store, digest, &mut self.buf).map_err(failed)?;
                    self.pairs.push((Kind::File, digest, remote));
                    remote
                }
            },
        };
        self.files.insert(digest, remote);
        self.add(remote, Source::Store(digest), false)?;
        Ok(remote)
    }

    fn dir(&mut self, digest: Digest, path: &str) -> Result<RemoteDigest, Stop> {
        if let Some(remote) = self.dirs.get(&digest) {
            return Ok(*remote);
        }
        let dir = Dir::read(self.store, digest, path).map_err(failed)?;
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
                self.add(remote, Source::Store(digest), true)?;
                remote
            }
            Function::Sha256 => {
                let bytes = encode::to_remote(&dir, |d| self.files[&d], |d| self.dirs[&d]);
                let remote = self.function.digest(&bytes);
                self.pairs.push((Kind::Dir, digest, remote));
                self.add(remote, Source::Bytes(bytes), true)?;
                remote
            }
        };
        self.dirs.insert(digest, remote);
        Ok(remote)
    }

    /// Plans `items`; their roots.
    fn items(&mut self, items: &[Item]) -> Result<Vec<RemoteDigest>, Stop> {
        let mut roots = Vec::with_capacity(items.len());
        for item in items {
            roots.push(match item {
                Item::Tree(tree) => self.dir(*tree, "")?,
                Item::Blob(blob) => self.file(*blob)?,
                Item::Raw(bytes) => {
                    let remote = self.function.digest(bytes);
                    self.add(remote, Source::Bytes(bytes.clone()), true)?;
                    remote
                }
            });
        }
        self.flush()?;
        Ok(roots)
    }
}

/// The SHA-256 digest of a store blob, read in a stream through `buf` and checked
/// against its BLAKE3 digest on the way.
fn sha256_of_blob(
    store: &Store,
    digest: Digest,
    buf: &mut Vec<u8>,
) -> Result<RemoteDigest, StoreError> {
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
    // One allocation for the whole push (zeroing a fresh 1 MiB buffer for each
    // of 100k small blobs cost more than hashing them).
    buf.resize(1 << 20, 0);
    let mut blake = blake3::Hasher::new();
    let mut sha = sha2::Sha256::new();
    let mut size = 0u64;
    loop {
        let n = file.read(buf).map_err(|source| StoreError::Io {
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

    /// Pushes `items`: plans them, asks what is missing, uploads that (see the
    /// module doc for the stages).
    pub(super) fn push(
        &self,
        store: &Store,
        map: &DigestMap,
        items: &[Item],
    ) -> Result<PushStats, RemoteError> {
        let (chunks_out, chunks) = sync_channel(1);
        let (uploads_out, uploads) = sync_channel(READ_AHEAD);
        let (planned, read, sent) = std::thread::scope(|scope| {
            let planner = scope.spawn(move || {
                let mut plan = Plan {
                    store,
                    map,
                    function: self.function(),
                    out: chunks_out,
                    chunk: Vec::new(),
                    seen: HashSet::new(),
                    files: HashMap::new(),
                    dirs: HashMap::new(),
                    pairs: Vec::new(),
                    count: 0,
                    buf: Vec::new(),
                };
                plan.items(items).map(|roots| (roots, plan.count))
            });
            let reader = scope.spawn(move || self.read_missing(store, chunks, uploads_out));
            let sent = self.send_all(uploads);
            let read = reader.join().expect("the push's reader does not panic");
            let planned = planner.join().expect("the push's planner does not panic");
            (planned, read, sent)
        });
        // The first stage to fail in the pipeline's order tells why; an earlier
        // stage was only cancelled by it.
        sent?;
        let (sent_blobs, sent_bytes) = match read {
            Ok(counts) => counts,
            Err(Stop::Failed(error)) => return Err(error),
            Err(Stop::Cancelled) => unreachable!("the sender finished"),
        };
        let (roots, blobs) = match planned {
            Ok(planned) => planned,
            Err(Stop::Failed(error)) => return Err(error),
            Err(Stop::Cancelled) => unreachable!("the reader finished"),
        };
        let stats = PushStats {
            roots,
            blobs,
            sent_blobs,
            sent_bytes,
        };
        tracing::debug!(
            url = self.url(),
            blobs = stats.blobs,
            sent = stats.sent_blobs,
            bytes = stats.sent_bytes,
            "pushed"
        );
        Ok(stats)
    }

    /// The reader: for each chunk, asks which blobs the server lacks (one
    /// `FindMissingBlobs` call) and reads those into batches cut by size, or
    /// streams for blobs too large for one; in plan order. Returns the blobs and
    /// bytes handed on.
    fn read_missing(
        &self,
        store: &Store,
        chunks: Receiver<Vec<Entry>>,
        out: SyncSender<Upload>,
    ) -> Result<(u64, u64), Stop> {
        let send = |upload| out.send(upload).map_err(|_| Stop::Cancelled);
        let (mut blobs, mut bytes) = (0, 0);
        let mut batch: Vec<(RemoteDigest, Vec<u8>)> = Vec::new();
        let mut batch_cost = 0;
        for chunk in chunks {
            let digests: Vec<RemoteDigest> = chunk.iter().map(|e| e.remote).collect();
            let missing: HashSet<RemoteDigest> = self
                .block_on(self.client.find_missing(&digests))
                .map_err(Stop::Failed)?
                .into_iter()
                .collect();
            for entry in chunk.into_iter().filter(|e| missing.contains(&e.remote)) {
                let remote = entry.remote;
                let data = match entry.source {
                    Source::Store(digest) => store.read(&digest).map_err(failed)?.into_bytes(),
                    Source::Bytes(data) => data,
                };
                blobs += 1;
                bytes += remote.size;
                if !self.client.fits_batch(remote.size) {
                    // A file can go ahead of the batch being filled; an object
                    // that refers to others cannot.
                    if entry.parent && !batch.is_empty() {
                        send(Upload::Batch(std::mem::take(&mut batch)))?;
                        batch_cost = 0;
                    }
                    send(Upload::Stream(remote, data))?;
                    continue;
                }
                let cost = Client::batch_cost(remote.size);
                if batch_cost + cost > self.client.batch_limit() {
                    send(Upload::Batch(std::mem::take(&mut batch)))?;
                    batch_cost = 0;
                }
                batch_cost += cost;
                batch.push((remote, data));
            }
        }
        if !batch.is_empty() {
            send(Upload::Batch(batch))?;
        }
        Ok((blobs, bytes))
    }

    /// The sender: uploads what the reader hands on, one call at a time, in order.
    fn send_all(&self, uploads: Receiver<Upload>) -> Result<(), RemoteError> {
        for upload in uploads {
            match upload {
                Upload::Batch(blobs) => self.block_on(self.client.batch_update(blobs))?,
                Upload::Stream(remote, data) => {
                    self.block_on(self.client.write(remote, std::sync::Arc::new(data)))?
                }
            }
        }
        Ok(())
    }
}
