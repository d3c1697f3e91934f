//! Pulling trees and blobs into the store: the directory messages level by
//! level (`BatchReadBlobs`, ByteStream for a large one), then the file contents
//! the store lacks, each checked against its remote digest as it arrives, then
//! the nodes rebuilt bottom-up in BLAKE3 space and validated like any node read
//! from the store. Everything goes through one store transaction, committed
//! only when all of it arrived intact: a missing or corrupt blob leaves nothing.
//! The calls run on threads of their own, two at a time and a batch or two
//! ahead of the staging, so that the server's reads, the client's checks and the
//! store's writes overlap.
//!
//! Not `GetTree`: BuildGrid's skips a missing subdirectory without an error and
//! returns re-serialized messages, so its answer cannot be verified by digest.
//! A walk costs one round trip per level of the tree (and per batch).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use treediff::tree::MAX_DEPTH;
use treediff::{Digest, Dir, Node, Store, StoreError, StoreTxn};

use super::client::Client;
use super::digest_map::{DigestMap, Kind};
use super::encode;
use super::space::{Function, RemoteDigest};
use super::{Remote, RemoteError};

/// One pull's work, possibly of several roots into one transaction.
pub(super) struct Puller<'a, 's> {
    remote: &'a Remote,
    store: &'s Store,
    map: &'a DigestMap,
    txn: &'a StoreTxn<'s>,
    /// Directory messages fetched, by remote digest.
    fetched: HashMap<RemoteDigest, reapi::Directory>,
    /// Directories (remote → local) whose whole subtree is in the store or the
    /// transaction.
    dirs: HashMap<RemoteDigest, Digest>,
    /// File contents (remote → local) in the store or the transaction.
    files: HashMap<RemoteDigest, Digest>,
    /// Subtrees of the store already checked complete.
    complete: HashSet<Digest>,
    /// New digest table entries, written after the commit.
    pub(super) pairs: Vec<(Kind, Digest, RemoteDigest)>,
}

impl<'a, 's> Puller<'a, 's> {
    pub(super) fn new(
        remote: &'a Remote,
        map: &'a DigestMap,
        txn: &'a StoreTxn<'s>,
    ) -> Puller<'a, 's> {
        Puller {
            remote,
            store: txn.store(),
            map,
            txn,
            fetched: HashMap::new(),
            dirs: HashMap::new(),
            files: HashMap::new(),
            complete: HashSet::new(),
            pairs: Vec::new(),
        }
    }

    fn function(&self) -> Function {
        self.remote.function()
    }

    fn invalid(&self, digest: RemoteDigest, problem: String) -> RemoteError {
        RemoteError::InvalidDirectory {
            url: self.remote.url().to_owned(),
            digest: digest.to_string(),
            problem,
        }
    }

    /// The local digest of a remote object, if the table (or, in BLAKE3 space,
    /// identity) knows it; whether the store holds it is the caller's check.
    fn known(&self, kind: Kind, remote: RemoteDigest) -> Result<Option<Digest>, RemoteError> {
        match self.function() {
            Function::Blake3 => Ok(Some(remote.to_local())),
            Function::Sha256 => Ok(self.map.blake3_of(kind, remote)?),
        }
    }

    /// Whether the store holds the tree `digest` with every blob under it.
    fn is_complete(&mut self, digest: Digest) -> bool {
        if self.complete.contains(&digest) {
            return true;
        }
        let Ok(dir) = Dir::read(self.store, digest, "") else {
            return false;
        };
        for entry in dir.entries() {
            let ok = match &entry.node {
                Node::File { digest, .. } => self.store.contains(digest).unwrap_or(false),
                Node::Dir { digest } => self.is_complete(*digest),
                Node::Symlink { .. } => true,
            };
            if !ok {
                return false;
            }
        }
        self.complete.insert(digest);
        true
    }

    /// Fetches the blobs `digests` (directory messages or contents), verified,
    /// handing them to `each` as they arrive, a batch at a time: batches cut by
    /// size, ByteStream (a batch of one) for those too large for one; in no
    /// particular order. The calls are made on other threads ([`fetch_all`]), a
    /// batch or two ahead of `each` (which stages contents in the store: as long
    /// as a batch takes to read), so that the server is kept busy meanwhile.
    fn fetch<F>(
        &mut self,
        digests: &[RemoteDigest],
        to: ReadTo,
        mut each: F,
    ) -> Result<(), RemoteError>
    where
        F: FnMut(&mut Self, Vec<Arrived>) -> Result<(), RemoteError>,
    {
        let remote = self.remote;
        let txn = match to {
            ReadTo::Memory => None,
            ReadTo::Store => Some(self.txn),
        };
        let (out, arrived) = sync_channel(FETCH_AHEAD);
        std::thread::scope(|scope| {
            let fetcher = scope.spawn(move || fetch_all(remote, digests, txn, out));
            let mut handled = Ok(());
            for blobs in arrived.iter() {
                handled = each(self, blobs);
                if handled.is_err() {
                    break;
                }
            }
            // Stops the fetcher at its next batch if `each` failed.
            drop(arrived);
            let fetched = fetcher.join().expect("the pull's fetcher does not panic");
            handled.and(fetched)
        })
    }

    /// Fetches the directory messages under `root` that the store lacks, level
    /// by level, and returns the contents they name.
    fn fetch_dirs(&mut self, root: RemoteDigest) -> Result<Vec<RemoteDigest>, RemoteError> {
        let mut contents = Vec::new();
        let mut seen = HashSet::new();
        let mut level = vec![root];
        let mut depth = 0;
        while !level.is_empty() {
            if depth > MAX_DEPTH {
                return Err(
                    self.invalid(root, format!("the tree is deeper than {MAX_DEPTH} levels"))
                );
            }
            let mut want = Vec::new();
            for digest in level.drain(..) {
                if !seen.insert(digest) || self.dirs.contains_key(&digest) {
                    continue;
                }
                if let Some(local) = self.known(Kind::Dir, digest)?
                    && self.is_complete(local)
                {
                    self.dirs.insert(digest, local);
                    continue;
                }
                want.push(digest);
            }
            let mut next = Vec::new();
            self.fetch(&want, ReadTo::Memory, |this, blobs| {
                for arrived in blobs {
                    let Arrived::Bytes(digest, bytes) = arrived else {
                        unreachable!("directory messages are read into memory")
                    };
                    let proto =
                        encode::decode_remote(&bytes).map_err(|p| this.invalid(digest, p))?;
                    let (files, subdirs) =
                        encode::children(&proto).map_err(|p| this.invalid(digest, p))?;
                    contents.extend(files);
                    next.extend(subdirs);
                    this.fetched.insert(digest, proto);
                }
                Ok(())
            })?;
            level = next;
            depth += 1;
        }
        Ok(contents)
    }

    /// Fetches the contents the store lacks into the transaction. The server
    /// is asked first which it lacks, so that a missing blob is reported as
    /// such whatever the call that would have read it.
    fn fetch_files(&mut self, contents: Vec<RemoteDigest>) -> Result<(), RemoteError> {
        let mut want = Vec::new();
        let mut seen = HashSet::new();
        for digest in contents {
            if !seen.insert(digest) || self.files.contains_key(&digest) {
                continue;
            }
            if let Some(local) = self.known(Kind::File, digest)?
                && self.store.contains(&local)?
            {
                self.files.insert(digest, local);
                continue;
            }
            want.push(digest);
        }
        if want.is_empty() {
            return Ok(());
        }
        let remote = self.remote;
        self.check_room(&want)?;
        let missing = remote.block_on(remote.client.find_missing(&want))?;
        if let Some(digest) = missing.first() {
            return Err(RemoteError::Missing {
                url: remote.url().to_owned(),
                call: "ContentAddressableStorage.FindMissingBlobs",
                digest: digest.to_string(),
            });
        }
        self.fetch(&want, ReadTo::Store, |this, arrived| {
            // Verified by their remote digests already; BLAKE3 names them here.
            let mut staged = Vec::new();
            let mut blobs = Vec::new();
            for a in arrived {
                match a {
                    Arrived::Bytes(digest, bytes) => blobs.push((digest, bytes)),
                    Arrived::Staged(digest, local) => staged.push((digest, local)),
                }
            }
            let locals = put_all(this.txn, &blobs)?;
            staged.extend(blobs.iter().map(|(digest, _)| *digest).zip(locals));
            for (digest, local) in staged {
                if this.function() == Function::Sha256 {
                    this.pairs.push((Kind::File, local, digest));
                }
                this.files.insert(digest, local);
            }
            Ok(())
        })
    }

    /// Refuses, before anything is fetched, blobs larger than the daemon
    /// takes, and a pull that would leave the store's filesystem with less
    /// than [`SPACE_RESERVE`] free: sizes are what the remote claims, and
    /// streaming cuts off a blob that sends more.
    fn check_room(&self, want: &[RemoteDigest]) -> Result<(), RemoteError> {
        let url = || self.remote.url().to_owned();
        let limit = self.remote.max_blob();
        if let Some(big) = want.iter().find(|d| d.size > limit) {
            return Err(RemoteError::TooLarge {
                url: url(),
                digest: big.to_string(),
                size: big.size,
                limit,
            });
        }
        let needed = want.iter().map(|d| d.size).fold(0u64, u64::saturating_add);
        let available = self.store.available_bytes()?;
        if needed.saturating_add(SPACE_RESERVE) > available {
            return Err(RemoteError::NoSpace {
                url: url(),
                needed,
                available,
                reserve: SPACE_RESERVE,
            });
        }
        Ok(())
    }

    /// The local node of the fetched directory `digest`, its children first,
    /// staged in the transaction.
    fn rebuild(&mut self, digest: RemoteDigest) -> Result<Digest, RemoteError> {
        if let Some(local) = self.dirs.get(&digest) {
            return Ok(*local);
        }
        let proto = self
            .fetched
            .remove(&digest)
            .ok_or_else(|| self.invalid(digest, "it was not fetched".into()))?;
        let (_, subdirs) = encode::children(&proto).map_err(|p| self.invalid(digest, p))?;
        for subdir in subdirs {
            self.rebuild(subdir)?;
        }
        let dir = encode::from_remote(
            &proto,
            |r| {
                self.files
                    .get(&r)
                    .copied()
                    .ok_or_else(|| format!("file {r} was not fetched"))
            },
            |r| {
                self.dirs
                    .get(&r)
                    .copied()
                    .ok_or_else(|| format!("directory {r} was not fetched"))
            },
        )
        .map_err(|p| self.invalid(digest, p))?;
        let local = dir.write(self.txn)?;
        if self.function() == Function::Sha256 {
            self.pairs.push((Kind::Dir, local, digest));
        }
        self.dirs.insert(digest, local);
        Ok(local)
    }

    /// Pulls the tree `root` into the transaction; its local digest.
    pub(super) fn tree(&mut self, root: RemoteDigest) -> Result<Digest, RemoteError> {
        let contents = self.fetch_dirs(root)?;
        self.fetch_files(contents)?;
        self.rebuild(root)
    }

    /// Pulls the blob `remote` (a file's content) into the transaction.
    pub(super) fn blob(&mut self, remote: RemoteDigest) -> Result<Digest, RemoteError> {
        self.fetch_files(vec![remote])?;
        Ok(self.files[&remote])
    }
}

/// What a pull leaves free on the store's filesystem, at least: the daemon
/// and everyone else on it go on working.
const SPACE_RESERVE: u64 = 256 << 20;

/// Batches fetched ahead of the one being handled.
const FETCH_AHEAD: usize = 2;

/// Calls in flight: while one batch is being verified (and handed on), the
/// next is already with the server.
const FETCH_CALLS: usize = 2;

/// Where a fetch puts what it reads.
#[derive(Clone, Copy)]
enum ReadTo {
    /// In memory, for the caller to decode (directory messages, each at most
    /// `client::MAX_IN_MEMORY`).
    Memory,
    /// Contents: a blob too large for a batch goes straight into the pull's
    /// store transaction (`stream_in`), never whole into memory.
    Store,
}

/// A blob fetched and verified.
enum Arrived {
    /// Its bytes.
    Bytes(RemoteDigest, Vec<u8>),
    /// Staged in the transaction already, under this local digest.
    Staged(RemoteDigest, Digest),
}

/// Fetches `digests` in batches (ByteStream for a blob too large for one,
/// into `txn` if given), verified, on [`FETCH_CALLS`] threads, sending each
/// batch to `out` as it arrives; stops early, without an error, when `out`'s
/// receiver is gone.
///
/// What is in memory at once is bounded by the calls in flight and the
/// batches waiting: (`FETCH_CALLS` + `FETCH_AHEAD`) messages of at most the
/// decoding limit, whatever sizes the remote claims.
fn fetch_all(
    remote: &Remote,
    digests: &[RemoteDigest],
    txn: Option<&StoreTxn<'_>>,
    out: SyncSender<Vec<Arrived>>,
) -> Result<(), RemoteError> {
    // The calls, cut as the digests come: batches by size, a stream each for
    // the blobs too large for one.
    let mut calls: Vec<(bool, Vec<RemoteDigest>)> = Vec::new();
    let mut batch = Vec::new();
    let mut cost = 0;
    for digest in digests {
        if !remote.client.fits_batch(digest.size) {
            calls.push((true, vec![*digest]));
            continue;
        }
        let c = Client::batch_cost(digest.size);
        if cost + c > remote.client.batch_limit() {
            calls.push((false, std::mem::take(&mut batch)));
            cost = 0;
        }
        cost += c;
        batch.push(*digest);
    }
    if !batch.is_empty() {
        calls.push((false, batch));
    }
    let next = AtomicUsize::new(0);
    let fetcher = |out: SyncSender<Vec<Arrived>>| -> Result<(), RemoteError> {
        while let Some((stream, digests)) = calls.get(next.fetch_add(1, Ordering::Relaxed)) {
            let fetched = match (*stream, txn) {
                (true, Some(txn)) => super::stream_in::stage(remote, digests[0], txn)
                    .map(|local| vec![Arrived::Staged(digests[0], local)]),
                (true, None) => remote
                    .block_on(remote.client.read(digests[0]))
                    .map(|bytes| vec![Arrived::Bytes(digests[0], bytes)]),
                (false, _) => {
                    remote
                        .block_on(remote.client.batch_read(digests))
                        .map(|mut blobs| {
                            digests
                                .iter()
                                .map(|d| Arrived::Bytes(*d, blobs.remove(d).unwrap_or_default()))
                                .collect()
                        })
                }
            };
            let blobs = fetched.inspect_err(|_| {
                // The other fetchers take no further call.
                next.store(calls.len(), Ordering::Relaxed);
            })?;
            if out.send(blobs).is_err() {
                break;
            }
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..FETCH_CALLS.min(calls.len()).max(1))
            .map(|_| {
                let out = out.clone();
                scope.spawn(|| fetcher(out))
            })
            .collect();
        let mine = fetcher(out);
        // Whichever failed: the calls are independent.
        others
            .into_iter()
            .map(|t| t.join().expect("the pull's fetchers do not panic"))
            .fold(mine, Result::and)
    })
}

/// Threads staging a batch of contents: creating a file costs most of a
/// millisecond here, and a batch holds up to thousands of small blobs.
const PUT_THREADS: usize = 8;

/// Stages `blobs` in `txn` on several threads; their local digests, in order.
fn put_all(
    txn: &StoreTxn<'_>,
    blobs: &[(RemoteDigest, Vec<u8>)],
) -> Result<Vec<Digest>, StoreError> {
    if blobs.len() < 2 * PUT_THREADS {
        return blobs.iter().map(|(_, bytes)| txn.put(bytes)).collect();
    }
    let chunk = blobs.len().div_ceil(PUT_THREADS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = blobs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, bytes)| txn.put(bytes))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(blobs.len());
        for worker in workers {
            out.extend(worker.join().expect("staging threads do not panic")?);
        }
        Ok(out)
    })
}

impl Remote {
    /// Pulls the tree named `root` in the remote's space into the store and
    /// returns its local digest, which must be `expected` if given (else nothing
    /// is stored). Blobs the store holds are not fetched again.
    pub fn pull_tree(
        &self,
        store: &Store,
        map: &DigestMap,
        root: RemoteDigest,
        expected: Option<Digest>,
    ) -> Result<Digest, RemoteError> {
        let txn = store.begin()?;
        let mut puller = Puller::new(self, map, &txn);
        let local = puller.tree(root)?;
        if let Some(expected) = expected
            && expected != local
        {
            return Err(RemoteError::WrongTree {
                url: self.url().to_owned(),
                remote: root.to_string(),
                expected: Box::new(expected),
                got: Box::new(local),
            });
        }
        let pairs = std::mem::take(&mut puller.pairs);
        txn.commit()?;
        map.insert(&pairs)?;
        Ok(local)
    }

    /// Pulls the tree whose local digest is `tree`, named remotely as the digest
    /// table recorded (or as itself in BLAKE3 space); the result is `tree`.
    pub fn pull_local(
        &self,
        store: &Store,
        map: &DigestMap,
        tree: Digest,
    ) -> Result<Digest, RemoteError> {
        let root = self
            .remote_digest(map, Kind::Dir, tree)?
            .ok_or(RemoteError::Unmapped {
                digest: tree,
                space: self.function().name(),
            })?;
        self.pull_tree(store, map, root, Some(tree))
    }

    /// Pulls one blob (a file's content, a log) into the store; its local digest.
    pub fn pull_blob(
        &self,
        store: &Store,
        map: &DigestMap,
        blob: RemoteDigest,
    ) -> Result<Digest, RemoteError> {
        let txn = store.begin()?;
        let mut puller = Puller::new(self, map, &txn);
        let local = puller.blob(blob)?;
        let pairs = std::mem::take(&mut puller.pairs);
        txn.commit()?;
        map.insert(&pairs)?;
        Ok(local)
    }
}
