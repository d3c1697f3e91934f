//! The gRPC calls to one remote, with the limits a real server imposes and errors
//! that name the remote and the call. Blobs that come back are checked against
//! their digest here, before anyone sees them.
//!
//! Limits (learned from BuildGrid, see `docs/remote.md`): every message stays
//! under gRPC's default 4 MiB, so batches are cut by their *encoded* size as well
//! as by the server's `max_batch_total_size_bytes`; larger blobs go through
//! ByteStream in 1 MiB chunks. Replies may still be larger than 4 MiB from a
//! server with a higher limit, so the decoding limit is raised. A broken
//! ByteStream write resumes where `QueryWriteStatus` says the server is, or
//! starts again from 0 under a new upload name when it cannot say (BuildGrid);
//! a broken read resumes at the offset reached.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::bytestream;
use bytestream::byte_stream_client::ByteStreamClient;
use reapi::action_cache_client::ActionCacheClient;
use reapi::capabilities_client::CapabilitiesClient;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::endpoint::{Credentials, Endpoint};
use super::error::RemoteError;
use super::space::{Function, RemoteDigest};

/// The largest gRPC message sent: 64 KiB under gRPC's default 4 MiB limit,
/// which servers keep (BuildGrid's cannot be raised).
pub(crate) const MAX_MESSAGE: u64 = (4 << 20) - (64 << 10);

/// Bytes a batch entry costs besides its data: the digest message (64 hex digits
/// and a size), field tags and lengths, a reply's status. Generous on purpose.
pub(crate) const ENTRY_OVERHEAD: u64 = 128;

/// ByteStream chunk size.
const CHUNK: usize = 1 << 20;

/// Digests per FindMissingBlobs call: about 75 bytes each, so 1.5 MB a request.
pub(crate) const FIND_MISSING_CHUNK: usize = 20_000;

/// The largest reply accepted.
const MAX_DECODE: usize = 64 << 20;

/// The largest blob read into memory (a directory message); larger contents
/// are read into the store as they arrive (`remote::stream_in`).
pub(crate) const MAX_IN_MEMORY: u64 = MAX_DECODE as u64;

/// How long a unary call may take: sent as its deadline (`grpc-timeout`), which
/// the server enforces.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long connecting may take: TCP, then the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/2 ping this often while calls are open, and the connection counts as
/// dead (its calls fail `UNAVAILABLE`) when one is not answered in
/// [`KEEP_ALIVE_TIMEOUT`]: a server that is gone without closing the connection
/// (a host down, a network cut) is an error within 20 s, not a hang. A server
/// killed on a live host closes it at once.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// See [`KEEP_ALIVE_INTERVAL`].
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The channel with the remote's credentials on every call.
type Transport = InterceptedService<Channel, Credentials>;

/// Attempts of one ByteStream transfer before its error is returned.
pub(crate) const ATTEMPTS: u32 = 3;

/// What the client has sent and received, for tests and logs: cumulative since
/// the connection was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// `FindMissingBlobs` calls.
    pub find_missing_calls: u64,
    /// `BatchUpdateBlobs` calls.
    pub batch_update_calls: u64,
    /// `BatchReadBlobs` calls.
    pub batch_read_calls: u64,
    /// ByteStream writes (each attempt counts).
    pub bytestream_writes: u64,
    /// ByteStream reads (each attempt counts).
    pub bytestream_reads: u64,
    /// `GetActionResult` calls.
    pub action_gets: u64,
    /// `UpdateActionResult` calls.
    pub action_updates: u64,
    /// Blobs sent (batched or streamed).
    pub blobs_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Blobs received and verified.
    pub blobs_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
}

#[derive(Debug, Default)]
struct Counters {
    find_missing_calls: AtomicU64,
    batch_update_calls: AtomicU64,
    batch_read_calls: AtomicU64,
    bytestream_writes: AtomicU64,
    bytestream_reads: AtomicU64,
    action_gets: AtomicU64,
    action_updates: AtomicU64,
    blobs_sent: AtomicU64,
    bytes_sent: AtomicU64,
    blobs_received: AtomicU64,
    bytes_received: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A connection to one instance of one remote.
#[derive(Debug)]
pub(crate) struct Client {
    url: String,
    instance: String,
    channel: Channel,
    credentials: Credentials,
    function: Function,
    /// The most data bytes (plus [`ENTRY_OVERHEAD`] per blob) one batch carries.
    batch_limit: u64,
    counters: Counters,
}

/// The URI tonic connects to, from a remote's URL, and whether it is TLS
/// (`grpcs://` or `https://`).
pub(crate) fn endpoint_uri(url: &str) -> Result<(String, bool), RemoteError> {
    let bad = |problem: &str| RemoteError::BadUrl {
        url: url.to_owned(),
        problem: problem.to_owned(),
    };
    let (rest, tls) = if let Some(rest) = url.strip_prefix("grpc://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("grpcs://") {
        (rest, true)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else {
        return Err(bad("unknown scheme"));
    };
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    if host_port.is_empty() || host_port.contains('/') {
        return Err(bad("expected HOST:PORT after the scheme, and no path"));
    }
    if !host_port.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
    }) {
        return Err(bad("no port"));
    }
    let scheme = if tls { "https" } else { "http" };
    Ok((format!("{scheme}://{host_port}"), tls))
}

impl Client {
    /// A lazy channel to the remote (made in the current runtime's context):
    /// nothing is connected until the first call. The TLS settings are checked
    /// here.
    pub(crate) fn new(remote: &Endpoint) -> Result<Client, RemoteError> {
        let url = remote.url.as_str();
        let (uri, tls) = endpoint_uri(url)?;
        let transport = remote.transport(tls)?;
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(uri).map_err(|e| RemoteError::BadUrl {
                url: url.to_owned(),
                problem: e.to_string(),
            })?;
        if let Some(config) = transport.tls {
            endpoint = endpoint
                .tls_config(config.timeout(CONNECT_TIMEOUT))
                .map_err(|e| RemoteError::BadTls {
                    url: url.to_owned(),
                    problem: super::error::chain(&e),
                })?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .connect_lazy();
        Ok(Client {
            url: url.to_owned(),
            instance: remote.instance.clone(),
            channel,
            credentials: transport.credentials,
            function: Function::Sha256,
            batch_limit: MAX_MESSAGE,
            counters: Counters::default(),
        })
    }

    /// The remote's URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The instance name.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// The digest function in use.
    pub(crate) fn function(&self) -> Function {
        self.function
    }

    /// Sets what the capabilities said: the function and the batch limit.
    pub(crate) fn configure(&mut self, function: Function, max_batch_total_size: i64) {
        self.function = function;
        self.batch_limit = match u64::try_from(max_batch_total_size) {
            Ok(limit) if limit > 0 => limit.min(MAX_MESSAGE),
            _ => MAX_MESSAGE,
        };
    }

    /// Whether a blob of `size` bytes fits a batch (else it goes by ByteStream).
    pub(crate) fn fits_batch(&self, size: u64) -> bool {
        size + ENTRY_OVERHEAD <= self.batch_limit
    }

    /// What a blob costs in a batch, against [`Client::batch_limit`].
    pub(crate) fn batch_cost(size: u64) -> u64 {
        size + ENTRY_OVERHEAD
    }

    /// The most a batch may cost.
    pub(crate) fn batch_limit(&self) -> u64 {
        self.batch_limit
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> RemoteStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteStats {
            find_missing_calls: get(&c.find_missing_calls),
            batch_update_calls: get(&c.batch_update_calls),
            batch_read_calls: get(&c.batch_read_calls),
            bytestream_writes: get(&c.bytestream_writes),
            bytestream_reads: get(&c.bytestream_reads),
            action_gets: get(&c.action_gets),
            action_updates: get(&c.action_updates),
            blobs_sent: get(&c.blobs_sent),
            bytes_sent: get(&c.bytes_sent),
            blobs_received: get(&c.blobs_received),
            bytes_received: get(&c.bytes_received),
        }
    }

    fn call_error(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> RemoteError + '_ {
        move |status| RemoteError::Call {
            url: self.url.clone(),
            call,
            status: Box::new(status),
        }
    }

    fn request<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.credentials.clone())
    }

    fn cas(&self) -> ContentAddressableStorageClient<Transport> {
        ContentAddressableStorageClient::new(self.transport()).max_decoding_message_size(MAX_DECODE)
    }

    fn bytestream(&self) -> ByteStreamClient<Transport> {
        ByteStreamClient::new(self.transport()).max_decoding_message_size(MAX_DECODE)
    }

    fn action_cache(&self) -> ActionCacheClient<Transport> {
        ActionCacheClient::new(self.transport()).max_decoding_message_size(MAX_DECODE)
    }

    /// `Capabilities.GetCapabilities`.
    pub(crate) async fn capabilities(&self) -> Result<reapi::ServerCapabilities, RemoteError> {
        let request = Self::request(reapi::GetCapabilitiesRequest {
            instance_name: self.instance.clone(),
        });
        Ok(CapabilitiesClient::new(self.transport())
            .max_decoding_message_size(MAX_DECODE)
            .get_capabilities(request)
            .await
            .map_err(self.call_error("Capabilities.GetCapabilities"))?
            .into_inner())
    }

    /// Which of `digests` the server lacks (`FindMissingBlobs`, in calls of at most
    /// 20,000 digests).
    pub(crate) async fn find_missing(
        &self,
        digests: &[RemoteDigest],
    ) -> Result<Vec<RemoteDigest>, RemoteError> {
        const CALL: &str = "ContentAddressableStorage.FindMissingBlobs";
        let mut missing = Vec::new();
        for chunk in digests.chunks(FIND_MISSING_CHUNK) {
            bump(&self.counters.find_missing_calls, 1);
            let request = Self::request(reapi::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: chunk.iter().map(|d| d.to_proto()).collect(),
                digest_function: self.function.proto(),
            });
            let reply = self
                .cas()
                .find_missing_blobs(request)
                .await
                .map_err(self.call_error(CALL))?
                .into_inner();
            for proto in &reply.missing_blob_digests {
                missing.push(self.reply_digest(CALL, proto)?);
            }
        }
        Ok(missing)
    }

    fn reply_digest(
        &self,
        call: &'static str,
        proto: &reapi::Digest,
    ) -> Result<RemoteDigest, RemoteError> {
        RemoteDigest::from_proto(proto).map_err(|problem| RemoteError::Call {
            url: self.url.clone(),
            call,
            status: Box::new(tonic::Status::internal(format!(
                "the reply holds an invalid digest: {problem}"
            ))),
        })
    }

    /// Uploads `blobs` in one `BatchUpdateBlobs` call (the caller keeps it within
    /// [`Client::batch_limit`]); a blob the server refuses fails the whole.
    pub(crate) async fn batch_update(
        &self,
        blobs: Vec<(RemoteDigest, Vec<u8>)>,
    ) -> Result<(), RemoteError> {
        const CALL: &str = "ContentAddressableStorage.BatchUpdateBlobs";
        let count = blobs.len() as u64;
        let bytes: u64 = blobs.iter().map(|(d, _)| d.size).sum();
        bump(&self.counters.batch_update_calls, 1);
        let request = Self::request(reapi::BatchUpdateBlobsRequest {
            instance_name: self.instance.clone(),
            requests: blobs
                .into_iter()
                .map(
                    |(digest, data)| reapi::batch_update_blobs_request::Request {
                        digest: Some(digest.to_proto()),
                        data,
                        compressor: 0,
                    },
                )
                .collect(),
            digest_function: self.function.proto(),
        });
        let reply = self
            .cas()
            .batch_update_blobs(request)
            .await
            .map_err(self.call_error(CALL))?
            .into_inner();
        for response in &reply.responses {
            let status = response.status.clone().unwrap_or_default();
            if status.code != 0 {
                return Err(RemoteError::Rejected {
                    url: self.url.clone(),
                    call: CALL,
                    digest: response
                        .digest
                        .as_ref()
                        .map(|d| format!("{}/{}", d.hash, d.size_bytes))
                        .unwrap_or_default(),
                    code: super::error::code_name(tonic::Code::from(status.code)),
                    message: status.message,
                });
            }
        }
        bump(&self.counters.blobs_sent, count);
        bump(&self.counters.bytes_sent, bytes);
        Ok(())
    }

    /// Reads `digests` in one `BatchReadBlobs` call (the caller keeps it within
    /// [`Client::batch_limit`]), each checked against its digest. Replies are
    /// matched by digest, never by position (BuildGrid 0.4 reorders them).
    pub(crate) async fn batch_read(
        &self,
        digests: &[RemoteDigest],
    ) -> Result<HashMap<RemoteDigest, Vec<u8>>, RemoteError> {
        const CALL: &str = "ContentAddressableStorage.BatchReadBlobs";
        bump(&self.counters.batch_read_calls, 1);
        let request = Self::request(reapi::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: digests.iter().map(|d| d.to_proto()).collect(),
            acceptable_compressors: Vec::new(),
            digest_function: self.function.proto(),
        });
        let reply = self
            .cas()
            .batch_read_blobs(request)
            .await
            .map_err(self.call_error(CALL))?
            .into_inner();
        let mut out = HashMap::with_capacity(digests.len());
        for response in reply.responses {
            let Some(proto) = &response.digest else {
                continue;
            };
            let digest = self.reply_digest(CALL, proto)?;
            let status = response.status.unwrap_or_default();
            match tonic::Code::from(status.code) {
                tonic::Code::Ok => {}
                tonic::Code::NotFound => return Err(self.missing(CALL, digest)),
                code => {
                    return Err(RemoteError::Call {
                        url: self.url.clone(),
                        call: CALL,
                        status: Box::new(tonic::Status::new(
                            code,
                            format!("blob {digest}: {}", status.message),
                        )),
                    });
                }
            }
            let data = self.verify(CALL, digest, response.data)?;
            out.insert(digest, data);
        }
        if let Some(lost) = digests.iter().find(|d| !out.contains_key(d)) {
            return Err(self.missing(CALL, *lost));
        }
        Ok(out)
    }

    fn missing(&self, call: &'static str, digest: RemoteDigest) -> RemoteError {
        RemoteError::Missing {
            url: self.url.clone(),
            call,
            digest: digest.to_string(),
        }
    }

    /// Checks bytes received for `digest`: the size, then the hash.
    fn verify(
        &self,
        call: &'static str,
        digest: RemoteDigest,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, RemoteError> {
        self.check_received(call, digest, self.function.digest(&data))?;
        Ok(data)
    }

    /// Checks what arrived for `digest` (its digest `actual`, size included)
    /// and counts it: the size, then the hash.
    pub(crate) fn check_received(
        &self,
        call: &'static str,
        digest: RemoteDigest,
        actual: RemoteDigest,
    ) -> Result<(), RemoteError> {
        if actual.size != digest.size {
            return Err(self.corrupt(call, digest, format!("{} bytes came back", actual.size)));
        }
        if actual != digest {
            return Err(self.corrupt(
                call,
                digest,
                format!(
                    "its content hashes to {} ({})",
                    actual,
                    self.function.name()
                ),
            ));
        }
        self.count_received(1, digest.size);
        Ok(())
    }

    /// `digest`, as `call` returned it, is not what it names.
    pub(crate) fn corrupt(
        &self,
        call: &'static str,
        digest: RemoteDigest,
        problem: String,
    ) -> RemoteError {
        RemoteError::Corrupt {
            url: self.url.clone(),
            call,
            digest: digest.to_string(),
            problem,
        }
    }

    /// The ByteStream resource name of a blob to read.
    fn read_name(&self, digest: RemoteDigest) -> String {
        self.resource(format!("blobs/{}", self.blob_path(digest)))
    }

    /// A fresh ByteStream resource name to upload a blob under.
    fn upload_name(&self, digest: RemoteDigest) -> String {
        self.resource(format!(
            "uploads/{}/blobs/{}",
            upload_id(),
            self.blob_path(digest)
        ))
    }

    /// `<hash>/<size>`, with the function's name first where REAPI 2.3 asks for
    /// it (every function but SHA-256 and its siblings of the 2.0 spec).
    fn blob_path(&self, digest: RemoteDigest) -> String {
        match self.function {
            Function::Sha256 => format!("{}/{}", digest.hex(), digest.size),
            Function::Blake3 => format!("blake3/{}/{}", digest.hex(), digest.size),
        }
    }

    fn resource(&self, rest: String) -> String {
        if self.instance.is_empty() {
            rest
        } else {
            format!("{}/{rest}", self.instance)
        }
    }

    /// Uploads one blob by ByteStream `Write` in 1 MiB chunks. A broken stream is
    /// resumed at what `QueryWriteStatus` reports, or restarted from 0 under a
    /// new name when the server cannot say.
    pub(crate) async fn write(
        &self,
        digest: RemoteDigest,
        data: Arc<Vec<u8>>,
    ) -> Result<(), RemoteError> {
        const CALL: &str = "ByteStream.Write";
        let mut name = self.upload_name(digest);
        let mut offset = 0usize;
        let mut attempt = 0;
        loop {
            attempt += 1;
            bump(&self.counters.bytestream_writes, 1);
            let status = match self.write_from(&name, data.clone(), offset).await {
                Ok(committed) if committed == -1 || committed as u64 == digest.size => {
                    bump(&self.counters.blobs_sent, 1);
                    bump(&self.counters.bytes_sent, digest.size - offset as u64);
                    return Ok(());
                }
                Ok(committed) => tonic::Status::data_loss(format!(
                    "the server committed {committed} bytes of {digest}"
                )),
                Err(status) => status,
            };
            if attempt >= ATTEMPTS || !retryable(status.code()) {
                return Err(self.call_error(CALL)(status));
            }
            tracing::debug!(url = %self.url, %digest, %status, "ByteStream write broke off; retrying");
            offset = match self.query_write_status(&name).await {
                Some((_, true)) => return Ok(()),
                Some((committed, false)) if committed < data.len() => committed,
                _ => {
                    name = self.upload_name(digest);
                    0
                }
            };
        }
    }

    async fn write_from(
        &self,
        name: &str,
        data: Arc<Vec<u8>>,
        offset: usize,
    ) -> Result<i64, tonic::Status> {
        let len = data.len();
        let starts: Vec<usize> = if offset >= len {
            vec![len]
        } else {
            (offset..len).step_by(CHUNK).collect()
        };
        let name = name.to_owned();
        let requests =
            futures_util::stream::iter(starts.into_iter().enumerate().map(move |(i, start)| {
                let end = (start + CHUNK).min(len);
                bytestream::WriteRequest {
                    resource_name: if i == 0 { name.clone() } else { String::new() },
                    write_offset: start as i64,
                    finish_write: end == len,
                    data: data[start..end].to_vec(),
                }
            }));
        let reply = self.bytestream().write(requests).await?.into_inner();
        Ok(reply.committed_size)
    }

    /// What the server holds of an upload: (committed bytes, complete); `None`
    /// if it cannot say (BuildGrid answers UNIMPLEMENTED).
    async fn query_write_status(&self, name: &str) -> Option<(usize, bool)> {
        let request = Self::request(bytestream::QueryWriteStatusRequest {
            resource_name: name.to_owned(),
        });
        let reply = self
            .bytestream()
            .query_write_status(request)
            .await
            .ok()?
            .into_inner();
        Some((usize::try_from(reply.committed_size).ok()?, reply.complete))
    }

    /// Reads one blob by ByteStream `Read`, resuming at the offset reached when
    /// the stream breaks, and checks it against its digest.
    pub(crate) async fn read(&self, digest: RemoteDigest) -> Result<Vec<u8>, RemoteError> {
        const CALL: &str = "ByteStream.Read";
        if digest.size > MAX_IN_MEMORY {
            return Err(self.corrupt(
                CALL,
                digest,
                format!(
                    "a directory message may hold at most {} MiB, this one claims {} bytes",
                    MAX_IN_MEMORY >> 20,
                    digest.size
                ),
            ));
        }
        let name = self.read_name(digest);
        let mut data = Vec::with_capacity(digest.size as usize);
        let mut attempt = 0;
        loop {
            attempt += 1;
            bump(&self.counters.bytestream_reads, 1);
            match self.read_from(&name, digest, &mut data).await {
                Ok(()) => return self.verify(CALL, digest, data),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    return Err(self.missing(CALL, digest));
                }
                Err(status) if attempt < ATTEMPTS && retryable(status.code()) => {
                    tracing::debug!(url = %self.url, %digest, %status, "ByteStream read broke off; resuming");
                }
                Err(status) => return Err(self.call_error(CALL)(status)),
            }
        }
    }

    async fn read_from(
        &self,
        name: &str,
        digest: RemoteDigest,
        data: &mut Vec<u8>,
    ) -> Result<(), tonic::Status> {
        let request = bytestream::ReadRequest {
            resource_name: name.to_owned(),
            read_offset: data.len() as i64,
            read_limit: 0,
        };
        let mut stream = self.bytestream().read(request).await?.into_inner();
        while let Some(reply) = stream.message().await? {
            data.extend_from_slice(&reply.data);
            if data.len() as u64 > digest.size {
                // Too long already: stop here, verify reports it.
                break;
            }
        }
        Ok(())
    }

    /// Opens `ByteStream.Read` of `digest` from `offset` on (a blob read into
    /// the store as it arrives: `remote::stream_in`).
    pub(crate) async fn open_read(
        &self,
        digest: RemoteDigest,
        offset: u64,
    ) -> Result<tonic::Streaming<bytestream::ReadResponse>, tonic::Status> {
        bump(&self.counters.bytestream_reads, 1);
        let request = bytestream::ReadRequest {
            resource_name: self.read_name(digest),
            read_offset: offset as i64,
            read_limit: 0,
        };
        Ok(self.bytestream().read(request).await?.into_inner())
    }

    /// What a failed `ByteStream.Read` of `digest` is: missing, or the call's
    /// error.
    pub(crate) fn read_error(&self, digest: RemoteDigest, status: tonic::Status) -> RemoteError {
        if status.code() == tonic::Code::NotFound {
            self.missing("ByteStream.Read", digest)
        } else {
            self.call_error("ByteStream.Read")(status)
        }
    }

    /// Counts `bytes` received in `blobs` blobs.
    pub(crate) fn count_received(&self, blobs: u64, bytes: u64) {
        bump(&self.counters.blobs_received, blobs);
        bump(&self.counters.bytes_received, bytes);
    }

    /// `ActionCache.GetActionResult`; `None` when the server has no entry.
    pub(crate) async fn get_action_result(
        &self,
        action: RemoteDigest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        bump(&self.counters.action_gets, 1);
        let request = Self::request(reapi::GetActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action.to_proto()),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: Vec::new(),
            digest_function: self.function.proto(),
        });
        match self.action_cache().get_action_result(request).await {
            Ok(reply) => Ok(Some(reply.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(self.call_error("ActionCache.GetActionResult")(status)),
        }
    }

    /// `ActionCache.UpdateActionResult`.
    pub(crate) async fn update_action_result(
        &self,
        action: RemoteDigest,
        result: reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        bump(&self.counters.action_updates, 1);
        let request = Self::request(reapi::UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action.to_proto()),
            action_result: Some(result),
            results_cache_policy: None,
            digest_function: self.function.proto(),
        });
        self.action_cache()
            .update_action_result(request)
            .await
            .map_err(self.call_error("ActionCache.UpdateActionResult"))?;
        Ok(())
    }
}

/// Whether a transfer that failed with `code` is worth another attempt.
pub(crate) fn retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::Internal | Code::Unknown
    )
}

/// A new upload id in UUID form (REAPI asks for a UUID; any unique string does):
/// a hash of the process, the time and a counter.
fn upload_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let hex = hasher.finalize().to_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for (url, uri, tls) in [
            ("grpc://127.0.0.1:50051", "http://127.0.0.1:50051", false),
            ("http://cache:8980/", "http://cache:8980", false),
            ("grpcs://cache:443", "https://cache:443", true),
            ("https://[::1]:8980", "https://[::1]:8980", true),
        ] {
            assert_eq!(endpoint_uri(url).unwrap(), (uri.to_owned(), tls), "{url}");
        }
        for (url, problem) in [
            ("cache:1", "scheme"),
            ("grpcs://cache", "no port"),
            ("grpc://cache", "no port"),
            ("grpc://cache:1/x", "no path"),
            ("grpc://", "HOST:PORT"),
        ] {
            let err = endpoint_uri(url).unwrap_err().to_string();
            assert!(err.contains(problem) && err.contains(url), "{url}: {err}");
        }
    }

    #[test]
    fn upload_ids_are_unique_uuids() {
        let (a, b) = (upload_id(), upload_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn code_names() {
        assert_eq!(
            super::super::error::code_name(tonic::Code::Unavailable),
            "UNAVAILABLE"
        );
        assert_eq!(
            super::super::error::code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }
}
