//! An in-process REAPI cache for what BuildGrid cannot show: it offers BLAKE3
//! (so nothing is mapped), keeps partial ByteStream uploads and answers
//! `QueryWriteStatus` (so a broken upload resumes), and breaks one write or
//! read stream off on request. Blobs live in memory; a small batch limit sends
//! modest blobs through ByteStream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::bytestream;
use bazel_remote_apis::google::rpc;
use bytestream::byte_stream_server::{ByteStream, ByteStreamServer};
use reapi::action_cache_server::{ActionCache, ActionCacheServer};
use reapi::capabilities_server::{Capabilities, CapabilitiesServer};
use reapi::content_addressable_storage_server::{
    ContentAddressableStorage, ContentAddressableStorageServer,
};
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The batch limit the fake announces: blobs over about 1 MiB go by ByteStream.
pub const BATCH_LIMIT: i64 = 1 << 20;

/// `(hash, size)`, as requests spell a blob.
type Key = (String, i64);

/// What the server holds, and the failures to inject.
#[derive(Debug, Default)]
pub struct State {
    blobs: Mutex<HashMap<Key, Vec<u8>>>,
    actions: Mutex<HashMap<Key, reapi::ActionResult>>,
    /// Uploads not finished yet, by resource name: what was received so far.
    partial: Mutex<HashMap<String, Vec<u8>>>,
    /// Break the next write stream off once it has received this many bytes (0: never).
    pub fail_write_at: AtomicU64,
    /// Break the next read stream off after sending this many bytes (0: never).
    pub fail_read_at: AtomicU64,
    /// Bytes received by ByteStream writes, over all streams.
    pub written: AtomicU64,
    /// `QueryWriteStatus` calls.
    pub queries: AtomicU64,
    /// Read streams started, and the offsets they asked for.
    pub read_offsets: Mutex<Vec<i64>>,
    /// Every blob stored, by batch or stream, in the order they were stored.
    pub arrivals: Mutex<Vec<(String, i64)>>,
    /// Blobs it claims to hold and streams as zeros without end when read: a
    /// remote that lies about a size.
    endless: Mutex<std::collections::HashSet<Key>>,
}

impl State {
    /// The blob `hash` (of `size` bytes), if held.
    pub fn blob(&self, hash: &str, size: u64) -> Option<Vec<u8>> {
        self.blobs
            .lock()
            .unwrap()
            .get(&(hash.to_owned(), size as i64))
            .cloned()
    }

    /// How many blobs it holds.
    pub fn blob_count(&self) -> usize {
        self.blobs.lock().unwrap().len()
    }

    /// Holds `data` (as if a client had stored it); its digest.
    pub fn put(&self, data: Vec<u8>) -> reapi::Digest {
        let digest = reapi::Digest {
            hash: blake3::hash(&data).to_hex().to_string(),
            size_bytes: data.len() as i64,
        };
        self.store(&digest, data);
        digest
    }

    /// Claims to hold `digest`, and streams zeros without end when it is read.
    pub fn claim_endless(&self, digest: reapi::Digest) {
        self.endless.lock().unwrap().insert(key(&digest));
    }

    fn store(&self, digest: &reapi::Digest, data: Vec<u8>) {
        self.blobs.lock().unwrap().insert(key(digest), data);
        self.arrivals.lock().unwrap().push(key(digest));
    }

    fn has(&self, digest: &reapi::Digest) -> bool {
        digest.size_bytes == 0
            || self.blobs.lock().unwrap().contains_key(&key(digest))
            || self.endless.lock().unwrap().contains(&key(digest))
    }
}

fn key(digest: &reapi::Digest) -> Key {
    (digest.hash.clone(), digest.size_bytes)
}

fn blake3_matches(digest: &reapi::Digest, data: &[u8]) -> bool {
    data.len() as i64 == digest.size_bytes && blake3::hash(data).to_hex().as_str() == digest.hash
}

/// `…/blobs/blake3/<hash>/<size>` → the digest.
fn digest_of_resource(name: &str) -> Result<reapi::Digest, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    let n = parts.len();
    if n < 4 || parts[n - 4] != "blobs" || parts[n - 3] != "blake3" {
        return Err(Status::invalid_argument(format!(
            "bad resource name {name}"
        )));
    }
    let size = parts[n - 1]
        .parse()
        .map_err(|_| Status::invalid_argument(format!("bad size in {name}")))?;
    Ok(reapi::Digest {
        hash: parts[n - 2].to_owned(),
        size_bytes: size,
    })
}

/// The four services over one shared state.
#[derive(Debug, Clone)]
pub struct Fake(pub std::sync::Arc<State>);

/// Starts the fake on a free loopback port in `runtime`; its URL.
pub fn start(runtime: &tokio::runtime::Runtime, state: std::sync::Arc<State>) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let fake = Fake(state);
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(CapabilitiesServer::new(fake.clone()))
            .add_service(ContentAddressableStorageServer::new(fake.clone()))
            .add_service(ByteStreamServer::new(fake.clone()))
            .add_service(ActionCacheServer::new(fake))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    format!("grpc://{addr}")
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Capabilities for Fake {
    async fn get_capabilities(
        &self,
        _: Request<reapi::GetCapabilitiesRequest>,
    ) -> Result<Response<reapi::ServerCapabilities>, Status> {
        use reapi::digest_function::Value;
        Ok(Response::new(reapi::ServerCapabilities {
            cache_capabilities: Some(reapi::CacheCapabilities {
                digest_functions: vec![Value::Sha256 as i32, Value::Blake3 as i32],
                action_cache_update_capabilities: Some(reapi::ActionCacheUpdateCapabilities {
                    update_enabled: true,
                }),
                max_batch_total_size_bytes: BATCH_LIMIT,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl ContentAddressableStorage for Fake {
    async fn find_missing_blobs(
        &self,
        request: Request<reapi::FindMissingBlobsRequest>,
    ) -> Result<Response<reapi::FindMissingBlobsResponse>, Status> {
        let missing = request
            .into_inner()
            .blob_digests
            .into_iter()
            .filter(|d| !self.0.has(d))
            .collect();
        Ok(Response::new(reapi::FindMissingBlobsResponse {
            missing_blob_digests: missing,
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<reapi::BatchUpdateBlobsRequest>,
    ) -> Result<Response<reapi::BatchUpdateBlobsResponse>, Status> {
        let mut responses = Vec::new();
        for r in request.into_inner().requests {
            let digest = r.digest.unwrap_or_default();
            let code = if blake3_matches(&digest, &r.data) {
                self.0.store(&digest, r.data);
                0
            } else {
                tonic::Code::InvalidArgument as i32
            };
            responses.push(reapi::batch_update_blobs_response::Response {
                digest: Some(digest),
                status: Some(rpc::Status {
                    code,
                    ..Default::default()
                }),
            });
        }
        Ok(Response::new(reapi::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<reapi::BatchReadBlobsRequest>,
    ) -> Result<Response<reapi::BatchReadBlobsResponse>, Status> {
        let blobs = self.0.blobs.lock().unwrap();
        // Answered in reverse order: the client must match by digest.
        let responses = request
            .into_inner()
            .digests
            .into_iter()
            .rev()
            .map(|digest| {
                let (data, code) = match blobs.get(&key(&digest)) {
                    Some(data) => (data.clone(), 0),
                    None if digest.size_bytes == 0 => (Vec::new(), 0),
                    None => (Vec::new(), tonic::Code::NotFound as i32),
                };
                reapi::batch_read_blobs_response::Response {
                    digest: Some(digest),
                    data,
                    compressor: 0,
                    status: Some(rpc::Status {
                        code,
                        ..Default::default()
                    }),
                }
            })
            .collect();
        Ok(Response::new(reapi::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = BoxedStream<reapi::GetTreeResponse>;

    async fn get_tree(
        &self,
        _: Request<reapi::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        Err(Status::unimplemented("the client walks trees itself"))
    }

    async fn split_blob(
        &self,
        _: Request<reapi::SplitBlobRequest>,
    ) -> Result<Response<reapi::SplitBlobResponse>, Status> {
        Err(Status::unimplemented("no splitting"))
    }

    type GetChunkMappingStream = BoxedStream<reapi::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _: Request<reapi::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(Status::unimplemented("no chunking"))
    }

    async fn splice_blob(
        &self,
        _: Request<reapi::SpliceBlobRequest>,
    ) -> Result<Response<reapi::SpliceBlobResponse>, Status> {
        Err(Status::unimplemented("no splicing"))
    }

    async fn register_chunk_mapping(
        &self,
        _: Request<tonic::Streaming<reapi::RegisterChunkMappingRequest>>,
    ) -> Result<Response<reapi::RegisterChunkMappingResponse>, Status> {
        Err(Status::unimplemented("no chunking"))
    }
}

#[tonic::async_trait]
impl ByteStream for Fake {
    type ReadStream = BoxedStream<bytestream::ReadResponse>;

    async fn read(
        &self,
        request: Request<bytestream::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let digest = digest_of_resource(&request.resource_name)?;
        if self.0.endless.lock().unwrap().contains(&key(&digest)) {
            // Made as they are taken: the fake holds none of it.
            let zeros = std::iter::repeat_with(|| {
                Ok(bytestream::ReadResponse {
                    data: vec![0; 64 << 10],
                })
            });
            return Ok(Response::new(Box::pin(futures_util::stream::iter(zeros))));
        }
        let data = self
            .0
            .blobs
            .lock()
            .unwrap()
            .get(&key(&digest))
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no blob {}", request.resource_name)))?;
        self.0
            .read_offsets
            .lock()
            .unwrap()
            .push(request.read_offset);
        let fail_at = self.0.fail_read_at.swap(0, Ordering::SeqCst) as usize;
        let mut replies = Vec::new();
        let mut at = request.read_offset as usize;
        while at < data.len() {
            if fail_at > 0 && at >= fail_at {
                replies.push(Err(Status::unavailable("injected: read broken off")));
                break;
            }
            let end = (at + (64 << 10)).min(data.len());
            replies.push(Ok(bytestream::ReadResponse {
                data: data[at..end].to_vec(),
            }));
            at = end;
        }
        Ok(Response::new(Box::pin(futures_util::stream::iter(replies))))
    }

    async fn write(
        &self,
        request: Request<tonic::Streaming<bytestream::WriteRequest>>,
    ) -> Result<Response<bytestream::WriteResponse>, Status> {
        let mut stream = request.into_inner();
        let mut name = String::new();
        let fail_at = self.0.fail_write_at.swap(0, Ordering::SeqCst) as usize;
        while let Some(message) = stream.message().await? {
            if name.is_empty() {
                name = message.resource_name.clone();
            }
            let digest = digest_of_resource(&name)?;
            let mut partial = self.0.partial.lock().unwrap();
            let received = partial.entry(name.clone()).or_default();
            if message.write_offset as usize != received.len() {
                return Err(Status::invalid_argument(format!(
                    "write_offset {} but {} bytes committed",
                    message.write_offset,
                    received.len()
                )));
            }
            received.extend_from_slice(&message.data);
            self.0
                .written
                .fetch_add(message.data.len() as u64, Ordering::SeqCst);
            if fail_at > 0 && received.len() >= fail_at && !message.finish_write {
                return Err(Status::unavailable("injected: write broken off"));
            }
            if message.finish_write {
                let data = partial.remove(&name).unwrap_or_default();
                if !blake3_matches(&digest, &data) {
                    return Err(Status::invalid_argument("data does not match the digest"));
                }
                let size = data.len() as i64;
                self.0.store(&digest, data);
                return Ok(Response::new(bytestream::WriteResponse {
                    committed_size: size,
                }));
            }
        }
        Err(Status::invalid_argument(
            "the stream ended before finish_write",
        ))
    }

    async fn query_write_status(
        &self,
        request: Request<bytestream::QueryWriteStatusRequest>,
    ) -> Result<Response<bytestream::QueryWriteStatusResponse>, Status> {
        self.0.queries.fetch_add(1, Ordering::SeqCst);
        let name = request.into_inner().resource_name;
        let digest = digest_of_resource(&name)?;
        let committed = self
            .0
            .partial
            .lock()
            .unwrap()
            .get(&name)
            .map_or(0, |p| p.len() as i64);
        let complete = self.0.has(&digest);
        Ok(Response::new(bytestream::QueryWriteStatusResponse {
            committed_size: if complete {
                digest.size_bytes
            } else {
                committed
            },
            complete,
        }))
    }
}

#[tonic::async_trait]
impl ActionCache for Fake {
    async fn get_action_result(
        &self,
        request: Request<reapi::GetActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        let digest = request.into_inner().action_digest.unwrap_or_default();
        self.0
            .actions
            .lock()
            .unwrap()
            .get(&key(&digest))
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such action"))
    }

    async fn update_action_result(
        &self,
        request: Request<reapi::UpdateActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        let request = request.into_inner();
        let digest = request.action_digest.unwrap_or_default();
        let result = request.action_result.unwrap_or_default();
        self.0
            .actions
            .lock()
            .unwrap()
            .insert(key(&digest), result.clone());
        Ok(Response::new(result))
    }
}
