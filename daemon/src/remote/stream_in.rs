//! A large blob pulled straight into the store: `ByteStream.Read` messages are
//! hashed in the remote's digest space and written into a staging file of the
//! pull's store transaction as they arrive, so a blob costs one message of
//! memory, not the size the remote claims. The size is checked as it goes (a
//! remote that sends more than it claimed is cut off at once) and the digest at
//! the end; a broken stream resumes at the offset reached. What fails leaves a
//! staged file the transaction drops.

use std::io::Read;

use bazel_remote_apis::google::bytestream::ReadResponse;
use treediff::{Digest, StoreTxn};

use super::client::{ATTEMPTS, retryable};
use super::space::{RemoteDigest, RemoteHasher};
use super::{Remote, RemoteError};

const CALL: &str = "ByteStream.Read";

/// Reads `digest` from `remote` into `txn`; its local digest.
pub(super) fn stage(
    remote: &Remote,
    digest: RemoteDigest,
    txn: &StoreTxn<'_>,
) -> Result<Digest, RemoteError> {
    let mut reader = StreamReader {
        remote,
        digest,
        stream: None,
        chunk: Vec::new(),
        at: 0,
        received: 0,
        hasher: Some(remote.function().hasher()),
        attempts: 0,
        error: None,
    };
    let staged = txn.put_stream(&mut reader);
    if let Some(error) = reader.error.take() {
        return Err(error);
    }
    let local = staged?;
    let actual = reader
        .hasher
        .take()
        .expect("the hasher is taken once")
        .finish(reader.received);
    remote.client.check_received(CALL, digest, actual)?;
    Ok(local)
}

/// The blob's bytes as `Read`, for `StoreTxn::put_stream`. An error of the
/// remote is kept in `error` (the store sees only that reading failed).
struct StreamReader<'a> {
    remote: &'a Remote,
    digest: RemoteDigest,
    stream: Option<tonic::Streaming<ReadResponse>>,
    /// The message being handed on, from `at`.
    chunk: Vec<u8>,
    at: usize,
    received: u64,
    hasher: Option<RemoteHasher>,
    attempts: u32,
    error: Option<RemoteError>,
}

impl StreamReader<'_> {
    /// The next message's bytes; empty at the end of the blob.
    fn next_chunk(&mut self) -> Result<Vec<u8>, RemoteError> {
        let client = &self.remote.client;
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    self.attempts += 1;
                    let opened = self
                        .remote
                        .block_on(client.open_read(self.digest, self.received));
                    match opened {
                        Ok(stream) => self.stream.insert(stream),
                        Err(status) => {
                            if self.attempts < ATTEMPTS && retryable(status.code()) {
                                continue;
                            }
                            return Err(client.read_error(self.digest, status));
                        }
                    }
                }
            };
            match self.remote.block_on(stream.message()) {
                Ok(Some(reply)) if reply.data.is_empty() => {}
                Ok(Some(reply)) => return Ok(reply.data),
                Ok(None) => return Ok(Vec::new()),
                Err(status) if self.attempts < ATTEMPTS && retryable(status.code()) => {
                    tracing::debug!(url = %self.remote.url(), digest = %self.digest, %status, "ByteStream read broke off; resuming");
                    self.stream = None;
                }
                Err(status) => return Err(client.read_error(self.digest, status)),
            }
        }
    }
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.chunk.len() {
            let chunk = match self.next_chunk() {
                Ok(chunk) => chunk,
                Err(e) => {
                    self.error = Some(e);
                    return Err(std::io::Error::other("the remote's stream failed"));
                }
            };
            self.received += chunk.len() as u64;
            if self.received > self.digest.size {
                self.error = Some(self.remote.client.corrupt(
                    CALL,
                    self.digest,
                    format!("more than its {} bytes came back", self.digest.size),
                ));
                return Err(std::io::Error::other("the remote sent too much"));
            }
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&chunk);
            }
            self.chunk = chunk;
            self.at = 0;
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
