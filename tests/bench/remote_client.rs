//! The remote cache benchmark's client (`tests/bench/remote.sh`): ws's REAPI client
//! (`daemon::remote`, on a real store and RocksDB) against plain generated REAPI
//! calls on the same server, the floor. Run by hand, never by CI; a plain harness
//! (no criterion). One process per step, so that each reports its own peak RSS:
//!
//! ```text
//! remote_client import --state DIR --tree SRC
//! remote_client raw    --state DIR --digest D --url URL [--inflight N]
//! remote_client push   --state DIR --digest D --url URL [--expect-resend-none]
//! remote_client pull   --state DIR --remote R --digest D --url URL
//! ```
//!
//! - `import`: `SRC` into the store of the fresh state dir `DIR` (a source capture,
//!   as `ws store import`); prints the tree's digest.
//! - `raw`: the floor. Untimed: the tree `D` is walked in `DIR`'s store and named in
//!   SHA-256 space exactly as ws names it (every file's content, every directory
//!   re-encoded with `daemon::remote::encode`), children first, cut into batches by
//!   the client's own rule (the server's `max_batch_total_size_bytes`, at most
//!   4 MiB − 64 KiB, 128 bytes per blob besides its data; larger blobs by
//!   ByteStream in 1 MiB chunks), and every blob is read into memory. Timed: the
//!   blobs uploaded with plain `BatchUpdateBlobs` / `ByteStream.Write` calls, N
//!   calls in flight (no `FindMissingBlobs`), then read back with `BatchReadBlobs`
//!   / `ByteStream.Read` in the same batches (sizes checked, nothing hashed or
//!   written). The server should be fresh (an empty CAS).
//! - `push`: `Remote::push_tree` of `D` from `DIR` (its digest table as it is: empty
//!   for a first push, filled by an earlier one); prints the time, `PushStats` and
//!   the RPC counts (`RemoteStats`). With `--expect-resend-none` (a second push), the
//!   run fails unless nothing was sent and `FindMissingBlobs` was called once per
//!   20,000 digests (the client's request size) and nothing else.
//! - `pull`: `Remote::pull_tree` of the remote root `R` into the fresh state dir
//!   `DIR` (a second machine); the result must be the local tree `D`.
//!
//! Every figure is one JSON object on stdout (seconds, counts, `max_rss_kib` from
//! `/proc/self/status`); progress on stderr. The exit status is 1 when a check fails.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::bytestream;
use bytestream::byte_stream_client::ByteStreamClient;
use daemon::db::Db;
use daemon::remote::{DigestMap, Function, Remote, RemoteDigest, RemoteStats, encode};
use reapi::capabilities_client::CapabilitiesClient;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use serde_json::{Value, json};
use sha2::Digest as _;
use tonic::transport::{Channel, Endpoint};
use treediff::{Digest, Dir, Node, Store};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const USAGE: &str = "usage: remote_client import|raw|push|pull --state DIR \
[--tree SRC] [--digest D] [--remote R] [--url URL] [--instance I] [--inflight N] \
[--expect-resend-none] (see the file's header)";

/// The client's limits (`daemon/src/remote/client.rs`), for the raw calls.
const MAX_MESSAGE: u64 = (4 << 20) - (64 << 10);
const ENTRY_OVERHEAD: u64 = 128;
const CHUNK: usize = 1 << 20;
const MAX_DECODE: usize = 64 << 20;
/// Digests per `FindMissingBlobs` call in ws's client.
const FIND_MISSING_CHUNK: u64 = 20_000;

#[derive(Debug, Default)]
struct Args {
    command: String,
    state: PathBuf,
    tree: PathBuf,
    digest: Option<Digest>,
    remote: Option<RemoteDigest>,
    url: String,
    instance: String,
    inflight: usize,
    expect_resend_none: bool,
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        inflight: 1,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--state" => args.state = value()?.into(),
            "--tree" => args.tree = value()?.into(),
            "--digest" => args.digest = Some(Digest::from_str(&value()?)?),
            "--remote" => {
                args.remote = Some(RemoteDigest::from_local(Digest::from_str(&value()?)?));
            }
            "--url" => args.url = value()?,
            "--instance" => args.instance = value()?,
            "--inflight" => args.inflight = value()?.parse()?,
            "--expect-resend-none" => args.expect_resend_none = true,
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other if !other.starts_with('-') && args.command.is_empty() => {
                args.command = other.to_owned();
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if args.state.as_os_str().is_empty() || args.command.is_empty() || args.inflight == 0 {
        return Err(USAGE.into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("remote_client: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.command.as_str() {
        "import" => import(&args),
        "raw" => raw(&args),
        "push" => push(&args),
        "pull" => pull(&args),
        other => Err(format!("unknown command {other}\n{USAGE}").into()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("remote_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn need<'a, T>(value: &'a Option<T>, what: &str) -> Res<&'a T> {
    value
        .as_ref()
        .ok_or_else(|| format!("{what} is needed\n{USAGE}").into())
}

fn need_url(args: &Args) -> Res<&str> {
    if args.url.is_empty() {
        return Err(format!("--url is needed\n{USAGE}").into());
    }
    Ok(&args.url)
}

/// The peak RSS of this process so far, in KiB.
fn max_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn emit(mut record: Value) {
    record["max_rss_kib"] = json!(max_rss_kib());
    println!("{record}");
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A state dir as the daemon has it: the store, and the database with its digest
/// table.
fn open_state(state: &std::path::Path) -> Res<(Store, DigestMap)> {
    std::fs::create_dir_all(state)?;
    let db = Arc::new(Db::open(&state.join("db"))?);
    let store = Store::open(state)?;
    Ok((store, DigestMap::new(db)))
}

fn stats_json(s: &RemoteStats) -> Value {
    json!({
        "find_missing_calls": s.find_missing_calls,
        "batch_update_calls": s.batch_update_calls,
        "batch_read_calls": s.batch_read_calls,
        "bytestream_writes": s.bytestream_writes,
        "bytestream_reads": s.bytestream_reads,
        "blobs_sent": s.blobs_sent,
        "bytes_sent": s.bytes_sent,
        "blobs_received": s.blobs_received,
        "bytes_received": s.bytes_received,
    })
}

// ---------------------------------------------------------------- import

fn import(args: &Args) -> Res<bool> {
    if args.tree.as_os_str().is_empty() {
        return Err(format!("--tree is needed\n{USAGE}").into());
    }
    let (store, _map) = open_state(&args.state)?;
    let start = Instant::now();
    let (digest, _) = treediff::import(&store, &args.tree, &Default::default())?;
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "remote_client: imported {} as {digest}",
        args.tree.display()
    );
    emit(json!({"op": "import", "seconds": seconds, "tree": digest.to_string()}));
    Ok(true)
}

// ---------------------------------------------------------------- ws push and pull

fn push(args: &Args) -> Res<bool> {
    let tree = *need(&args.digest, "--digest")?;
    let url = need_url(args)?;
    let (store, map) = open_state(&args.state)?;
    let rt = runtime()?;
    let remote = Remote::connect(rt.handle().clone(), url, &args.instance)?;
    let before = remote.stats();
    let start = Instant::now();
    let stats = remote.push_tree(&store, &map, tree)?;
    let seconds = start.elapsed().as_secs_f64();
    let rpc = remote.stats();
    assert_eq!(
        before,
        RemoteStats::default(),
        "connecting counts no transfer"
    );
    let mut ok = true;
    if args.expect_resend_none {
        let rounds = stats.blobs.div_ceil(FIND_MISSING_CHUNK);
        let nothing_else = RemoteStats {
            find_missing_calls: rpc.find_missing_calls,
            ..RemoteStats::default()
        };
        if stats.sent_blobs != 0 || rpc != nothing_else || rpc.find_missing_calls != rounds {
            eprintln!(
                "remote_client: FAILED: the second push sent {} blobs ({} bytes) in {} batches \
                 and {} streams, with {} FindMissingBlobs calls for {} blobs (expected nothing \
                 sent, {rounds} calls)",
                stats.sent_blobs,
                stats.sent_bytes,
                rpc.batch_update_calls,
                rpc.bytestream_writes,
                rpc.find_missing_calls,
                stats.blobs
            );
            ok = false;
        }
    }
    eprintln!(
        "remote_client: pushed {tree} as {} in {seconds:.2} s: {} blobs, {} sent ({} bytes)",
        stats.roots[0], stats.blobs, stats.sent_blobs, stats.sent_bytes
    );
    emit(json!({
        "op": if args.expect_resend_none { "push-again" } else { "push" },
        "ok": ok,
        "seconds": seconds,
        "root": stats.roots[0].to_string(),
        "blobs": stats.blobs,
        "sent_blobs": stats.sent_blobs,
        "sent_bytes": stats.sent_bytes,
        "rpc": stats_json(&rpc),
    }));
    Ok(ok)
}

fn pull(args: &Args) -> Res<bool> {
    let expected = *need(&args.digest, "--digest")?;
    let root = *need(&args.remote, "--remote")?;
    let url = need_url(args)?;
    let (store, map) = open_state(&args.state)?;
    let rt = runtime()?;
    let remote = Remote::connect(rt.handle().clone(), url, &args.instance)?;
    let start = Instant::now();
    let local = remote.pull_tree(&store, &map, root, Some(expected))?;
    let seconds = start.elapsed().as_secs_f64();
    let rpc = remote.stats();
    eprintln!(
        "remote_client: pulled {root} as {local} in {seconds:.2} s: {} blobs, {} bytes",
        rpc.blobs_received, rpc.bytes_received
    );
    emit(json!({
        "op": "pull",
        "ok": local == expected,
        "seconds": seconds,
        "tree": local.to_string(),
        "rpc": stats_json(&rpc),
    }));
    Ok(local == expected)
}

// ---------------------------------------------------------------- raw calls

/// The blobs of a tree in SHA-256 space, children first, each once.
#[derive(Default)]
struct RawPlan {
    blobs: Vec<(RemoteDigest, Source)>,
    files: std::collections::HashMap<Digest, RemoteDigest>,
    dirs: std::collections::HashMap<Digest, RemoteDigest>,
    seen: std::collections::HashSet<RemoteDigest>,
}

enum Source {
    Store(Digest),
    Bytes(Vec<u8>),
}

impl RawPlan {
    fn add(&mut self, remote: RemoteDigest, source: Source) {
        if self.seen.insert(remote) {
            self.blobs.push((remote, source));
        }
    }

    fn dir(&mut self, store: &Store, digest: Digest, path: &str) -> Res<RemoteDigest> {
        if let Some(remote) = self.dirs.get(&digest) {
            return Ok(*remote);
        }
        let dir = Dir::read(store, digest, path)?;
        for entry in dir.entries() {
            match &entry.node {
                Node::File { digest, .. } => {
                    if !self.files.contains_key(digest) {
                        let bytes = store.read(digest)?.into_bytes();
                        let remote = RemoteDigest {
                            hash: sha2::Sha256::digest(&bytes).into(),
                            size: bytes.len() as u64,
                        };
                        self.files.insert(*digest, remote);
                        self.add(remote, Source::Store(*digest));
                    }
                }
                Node::Dir { digest } => {
                    self.dir(store, *digest, &treediff::names::join(path, &entry.name))?;
                }
                Node::Symlink { .. } => {}
            }
        }
        let bytes = encode::to_remote(&dir, |d| self.files[&d], |d| self.dirs[&d]);
        let remote = Function::Sha256.digest(&bytes);
        self.dirs.insert(digest, remote);
        self.add(remote, Source::Bytes(bytes));
        Ok(remote)
    }
}

/// The raw calls' channel and limits.
struct Raw {
    channel: Channel,
    instance: String,
}

impl Raw {
    fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_DECODE)
    }

    fn bytestream(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel.clone()).max_decoding_message_size(MAX_DECODE)
    }

    fn resource(&self, rest: String) -> String {
        if self.instance.is_empty() {
            rest
        } else {
            format!("{}/{rest}", self.instance)
        }
    }

    async fn upload(&self, work: Work) -> Res<()> {
        match work {
            Work::Batch(blobs) => {
                let request = reapi::BatchUpdateBlobsRequest {
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
                    digest_function: 0,
                };
                let reply = self.cas().batch_update_blobs(request).await?.into_inner();
                for response in reply.responses {
                    let code = response.status.map(|s| s.code).unwrap_or(0);
                    if code != 0 {
                        return Err(format!("BatchUpdateBlobs refused a blob: code {code}").into());
                    }
                }
            }
            Work::Stream(digest, data) => {
                let name = self.resource(format!(
                    "uploads/{}/blobs/{}/{}",
                    upload_uuid(&digest),
                    digest.hex(),
                    digest.size
                ));
                let data = Arc::new(data);
                let len = data.len();
                let requests =
                    futures_util::stream::iter((0..len).step_by(CHUNK).map(move |start| {
                        let end = (start + CHUNK).min(len);
                        bytestream::WriteRequest {
                            resource_name: if start == 0 {
                                name.clone()
                            } else {
                                String::new()
                            },
                            write_offset: start as i64,
                            finish_write: end == len,
                            data: data[start..end].to_vec(),
                        }
                    }));
                self.bytestream().write(requests).await?;
            }
        }
        Ok(())
    }

    /// Reads one batch (or one streamed blob) back; its bytes.
    async fn read(&self, digests: Vec<RemoteDigest>, stream: bool) -> Res<u64> {
        if stream {
            let digest = digests[0];
            let request = bytestream::ReadRequest {
                resource_name: self.resource(format!("blobs/{}/{}", digest.hex(), digest.size)),
                read_offset: 0,
                read_limit: 0,
            };
            let mut replies = self.bytestream().read(request).await?.into_inner();
            let mut n = 0u64;
            while let Some(reply) = replies.message().await? {
                n += reply.data.len() as u64;
            }
            if n != digest.size {
                return Err(format!("{digest}: {n} bytes came back").into());
            }
            return Ok(n);
        }
        let request = reapi::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: digests.iter().map(|d| d.to_proto()).collect(),
            acceptable_compressors: Vec::new(),
            digest_function: 0,
        };
        let reply = self.cas().batch_read_blobs(request).await?.into_inner();
        if reply.responses.len() != digests.len() {
            return Err(format!(
                "BatchReadBlobs: {} replies for {} digests",
                reply.responses.len(),
                digests.len()
            )
            .into());
        }
        let mut n = 0u64;
        for response in reply.responses {
            let code = response.status.map(|s| s.code).unwrap_or(0);
            let size = response.digest.map(|d| d.size_bytes).unwrap_or(-1);
            if code != 0 || size != response.data.len() as i64 {
                return Err(format!("BatchReadBlobs: code {code}, size {size}").into());
            }
            n += response.data.len() as u64;
        }
        Ok(n)
    }
}

/// One upload call's work.
enum Work {
    Batch(Vec<(RemoteDigest, Vec<u8>)>),
    Stream(RemoteDigest, Vec<u8>),
}

/// An upload id in UUID form, unique to the blob (one upload of each).
fn upload_uuid(digest: &RemoteDigest) -> String {
    let h = digest.hex();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Runs `calls` with at most `inflight` at once; every one must succeed.
async fn in_flight<F>(calls: Vec<F>, inflight: usize) -> Res<Vec<u64>>
where
    F: std::future::Future<Output = Res<u64>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut out = Vec::with_capacity(calls.len());
    for call in calls {
        if set.len() >= inflight
            && let Some(done) = set.join_next().await
        {
            out.push(done??);
        }
        set.spawn(call);
    }
    while let Some(done) = set.join_next().await {
        out.push(done??);
    }
    Ok(out)
}

fn raw(args: &Args) -> Res<bool> {
    let tree = *need(&args.digest, "--digest")?;
    let url = need_url(args)?;
    let host_port = url
        .strip_prefix("grpc://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("--url must be grpc://HOST:PORT")?;
    let store = Store::open(&args.state)?;

    // Untimed: name every blob as ws does, cut the batches, read the blobs.
    let start = Instant::now();
    let mut plan = RawPlan::default();
    plan.dir(&store, tree, "")?;
    let rt = runtime()?;
    let channel = rt.block_on(
        Endpoint::from_shared(format!("http://{host_port}"))?
            .tcp_nodelay(true)
            .connect(),
    )?;
    let raw = Arc::new(Raw {
        channel,
        instance: args.instance.clone(),
    });
    let capabilities = rt
        .block_on(
            CapabilitiesClient::new(raw.channel.clone()).get_capabilities(
                reapi::GetCapabilitiesRequest {
                    instance_name: args.instance.clone(),
                },
            ),
        )?
        .into_inner();
    let server_limit = capabilities
        .cache_capabilities
        .map(|c| c.max_batch_total_size_bytes)
        .unwrap_or(0);
    let limit = match u64::try_from(server_limit) {
        Ok(l) if l > 0 => l.min(MAX_MESSAGE),
        _ => MAX_MESSAGE,
    };
    let mut uploads = Vec::new();
    let mut reads: Vec<(Vec<RemoteDigest>, bool)> = Vec::new();
    let mut batch = Vec::new();
    let mut cost = 0;
    let (mut total_blobs, mut total_bytes) = (0u64, 0u64);
    for (digest, source) in plan.blobs {
        let bytes = match source {
            Source::Store(local) => store.read(&local)?.into_bytes(),
            Source::Bytes(bytes) => bytes,
        };
        total_blobs += 1;
        total_bytes += digest.size;
        if digest.size + ENTRY_OVERHEAD > limit {
            reads.push((vec![digest], true));
            uploads.push(Work::Stream(digest, bytes));
            continue;
        }
        let c = digest.size + ENTRY_OVERHEAD;
        if cost + c > limit {
            let full: Vec<(RemoteDigest, Vec<u8>)> = std::mem::take(&mut batch);
            reads.push((full.iter().map(|(d, _)| *d).collect(), false));
            uploads.push(Work::Batch(full));
            cost = 0;
        }
        cost += c;
        batch.push((digest, bytes));
    }
    if !batch.is_empty() {
        reads.push((batch.iter().map(|(d, _)| *d).collect(), false));
        uploads.push(Work::Batch(batch));
    }
    let batches = uploads
        .iter()
        .filter(|w| matches!(w, Work::Batch(_)))
        .count();
    let streams = uploads.len() - batches;
    eprintln!(
        "remote_client: raw plan of {tree}: {total_blobs} blobs, {total_bytes} bytes, \
         {batches} batches and {streams} streams (limit {limit}), made in {:.2} s",
        start.elapsed().as_secs_f64()
    );

    // Timed: the uploads, then the reads.
    let inflight = args.inflight;
    let start = Instant::now();
    let calls: Vec<_> = uploads
        .into_iter()
        .map(|work| {
            let raw = raw.clone();
            async move { raw.upload(work).await.map(|()| 0u64) }
        })
        .collect();
    rt.block_on(in_flight(calls, inflight))?;
    let upload_seconds = start.elapsed().as_secs_f64();
    let common = json!({
        "inflight": inflight,
        "blobs": total_blobs,
        "bytes": total_bytes,
        "batches": batches,
        "streams": streams,
    });
    let mut record = common.clone();
    record["op"] = json!("raw-upload");
    record["seconds"] = json!(upload_seconds);
    emit(record);

    let start = Instant::now();
    let calls: Vec<_> = reads
        .into_iter()
        .map(|(digests, stream)| {
            let raw = raw.clone();
            async move { raw.read(digests, stream).await }
        })
        .collect();
    let read_bytes: u64 = rt.block_on(in_flight(calls, inflight))?.into_iter().sum();
    let read_seconds = start.elapsed().as_secs_f64();
    if read_bytes != total_bytes {
        return Err(format!("read {read_bytes} bytes back of {total_bytes}").into());
    }
    let mut record = common;
    record["op"] = json!("raw-read");
    record["seconds"] = json!(read_seconds);
    emit(record);
    eprintln!(
        "remote_client: raw, {inflight} in flight: upload {upload_seconds:.2} s, read {read_seconds:.2} s"
    );
    Ok(true)
}
