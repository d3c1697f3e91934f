//! A D-Bus client of `wsd` for the daemon benchmark (`tests/bench/daemon.sh`): raw
//! calls on the daemon's socket, timed one by one for percentiles, and many clients
//! at once. Run by hand, never by CI; a plain harness (no criterion):
//!
//! ```text
//! daemon_client --socket SOCK ping    --runs N [--warmup W]
//! daemon_client --socket SOCK status  --name WS --runs N [--warmup W]
//! daemon_client --socket SOCK commit  --name WS --tree SRC --k K --runs N [--warmup W]
//! daemon_client --socket SOCK discard --name WS --tree SRC --k K --runs N [--warmup W]
//! daemon_client --socket SOCK open    --source DIR --runs N [--warmup W] [--backend B]
//! daemon_client --socket SOCK open-tree --digest HEX/SIZE --runs N [--warmup W] [--backend B]
//! daemon_client --socket SOCK open-many --source DIR --prefix P --count N [--backend B]
//! daemon_client --socket SOCK concurrent --source DIR --shared P --clients C
//!               --duration SECS [--max-ops N] [--k K] [--backend B]
//! daemon_client --socket SOCK imports-and-commits --source DIR --count N --shared P
//!               --tree SRC --clients C [--k K] [--pid PID] [--backend B]
//! ```
//!
//! Every call goes over its own peer-to-peer connection to `SOCK`
//! (`<state-dir>/wsd.sock`), as `ws` makes it (ctl/src/client.rs). What is timed is
//! the call alone, from sending it to having its reply decoded:
//!
//! - `ping`: a property get on `/org/ws` (`Manager1.Version`): the round-trip floor;
//! - `status`: `Workspace1.Status` on the workspace `WS`;
//! - `commit` / `discard`: before each call (untimed) K regular files of the view,
//!   spread evenly over the sorted listing of `SRC` (the tree the workspace was
//!   opened over; the same files `daemon.sh`'s modify script picks), are rewritten
//!   with a new first line, and the view's filesystem is synced; then `Commit` or
//!   `Discard` is timed. Every commit must log K changes and every discard revert K,
//!   or the run fails;
//! - `open`: `Manager1.Open` of an already imported `DIR` under a fresh name (the
//!   untimed `Close` follows);
//! - `open-tree`: `Manager1.OpenTree` of a tree already in the store: an open without
//!   the walk of the source directory;
//! - `open-many`: opens `P000`, `P001`, ... (setup, one line of timings);
//! - `concurrent`: C clients, each on its own connection, cycle through edit+commit,
//!   edit+discard and open+close for `SECS` seconds (or `N` operations each). Client
//!   `i` edits K files of its own in the shared workspace `P<i mod S>` (S = how many
//!   `P*` workspaces exist), so clients of one workspace race each other. Errors are
//!   counted by D-Bus error name; only `org.ws.Error.Busy` and
//!   `org.ws.Error.Conflict` are expected.
//! - `imports-and-commits`: `--count` importers open `DIR-0`, `DIR-1`, ... all at
//!   once (each a directory of its own, so each open walks and hashes it: a first
//!   import), while C clients commit K files of their own in turn in the shared
//!   workspaces `P*` until the last import ends. The commits' latencies are the
//!   measurement (what a user committing waits while others import); the
//!   importers' durations and, with `--pid`, the daemon's peak RSS are reported.
//!
//! One JSON object per measurement goes to stdout (percentiles in ms, nearest rank);
//! progress to stderr. The exit status is 1 when a check fails or an unexpected
//! error was seen.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const USAGE: &str = "usage: daemon_client --socket SOCK \
ping|status|commit|discard|open|open-tree|open-many|concurrent|imports-and-commits [options] (see the file's header)";

#[zbus::proxy(
    interface = "org.ws.Manager1",
    default_service = "org.ws.Daemon",
    default_path = "/org/ws"
)]
trait Manager1 {
    fn open(
        &self,
        name: &str,
        source: zbus::zvariant::Fd<'_>,
        backend: &str,
    ) -> zbus::Result<OwnedObjectPath>;
    fn open_tree(&self, name: &str, tree: &str, backend: &str) -> zbus::Result<OwnedObjectPath>;
    fn get(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn list(&self) -> zbus::Result<Vec<(String, OwnedObjectPath)>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<u32>;
}

#[zbus::proxy(interface = "org.ws.Workspace1", default_service = "org.ws.Daemon")]
trait Workspace1 {
    fn status(&self) -> zbus::Result<Vec<(String, String)>>;
    fn commit(&self, message: &str) -> zbus::Result<String>;
    fn discard(&self) -> zbus::Result<u32>;
    fn close(&self, force: bool) -> zbus::Result<()>;
    #[allow(clippy::type_complexity)]
    fn log(&self) -> zbus::Result<Vec<(u64, String, String, String, u64, String, u64)>>;
    #[zbus(property)]
    fn path(&self) -> zbus::Result<String>;
}

#[derive(Debug, Default)]
struct Args {
    socket: PathBuf,
    command: String,
    name: String,
    tree: PathBuf,
    source: PathBuf,
    prefix: String,
    digest: String,
    shared: String,
    backend: String,
    k: usize,
    runs: usize,
    warmup: usize,
    count: usize,
    clients: usize,
    duration: f64,
    max_ops: usize,
    /// The daemon's pid, for its peak RSS (0: not read).
    pid: u32,
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        k: 10,
        runs: 100,
        warmup: 5,
        clients: 50,
        duration: 20.0,
        max_ops: usize::MAX,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--socket" => args.socket = value()?.into(),
            "--name" => args.name = value()?,
            "--tree" => args.tree = value()?.into(),
            "--source" => args.source = value()?.into(),
            "--prefix" => args.prefix = value()?,
            "--digest" => args.digest = value()?,
            "--shared" => args.shared = value()?,
            "--backend" => args.backend = value()?,
            "--k" => args.k = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            "--count" => args.count = value()?.parse()?,
            "--clients" => args.clients = value()?.parse()?,
            "--duration" => args.duration = value()?.parse()?,
            "--max-ops" => args.max_ops = value()?.parse()?,
            "--pid" => args.pid = value()?.parse()?,
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
    if args.socket.as_os_str().is_empty() || args.command.is_empty() {
        return Err(USAGE.into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("daemon_client: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("daemon_client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("daemon_client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; `Ok(false)` when a check failed (the figures are printed).
async fn run(args: Args) -> Res<bool> {
    match args.command.as_str() {
        "ping" => ping(&args).await,
        "status" => status(&args).await,
        "commit" | "discard" => commit_or_discard(&args).await,
        "open" | "open-tree" => open(&args).await,
        "open-many" => open_many(&args).await,
        "concurrent" => concurrent(&args).await,
        "imports-and-commits" => imports_and_commits(&args).await,
        other => Err(format!("unknown command {other}\n{USAGE}").into()),
    }
}

// ------------------------------------------------------------------ connection

async fn connect(socket: &Path) -> Res<zbus::Connection> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    Ok(zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await?)
}

async fn manager(conn: &zbus::Connection) -> Res<Manager1Proxy<'static>> {
    Ok(Manager1Proxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?)
}

async fn workspace(
    conn: &zbus::Connection,
    path: OwnedObjectPath,
) -> Res<Workspace1Proxy<'static>> {
    Ok(Workspace1Proxy::builder(conn)
        .path(path)?
        .cache_properties(CacheProperties::No)
        .build()
        .await?)
}

/// The D-Bus error name of a failed call (`org.ws.Error.Busy`, ...).
fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(e) => zbus::DBusError::name(&**e).to_string(),
        other => format!("zbus: {other}"),
    }
}

fn error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(message), _) => format!("{name}: {message}"),
        other => other.to_string(),
    }
}

// ------------------------------------------------------------------ figures

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// count, min, p50, p90, p99, max and mean of `samples` (ms).
fn summary(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let mean = if s.is_empty() {
        f64::NAN
    } else {
        s.iter().sum::<f64>() / s.len() as f64
    };
    json!({
        "runs": s.len(),
        "min_ms": round3(percentile(&s, 0.0)),
        "p50_ms": round3(percentile(&s, 0.5)),
        "p90_ms": round3(percentile(&s, 0.9)),
        "p99_ms": round3(percentile(&s, 0.99)),
        "max_ms": round3(s.last().copied().unwrap_or(f64::NAN)),
        "mean_ms": round3(mean),
    })
}

fn emit(mut object: Value, samples: &[f64]) {
    if let (Value::Object(map), Value::Object(stats)) = (&mut object, summary(samples)) {
        map.extend(stats);
        map.insert(
            "samples_ms".into(),
            samples.iter().map(|x| round3(*x)).collect(),
        );
    }
    println!("{object}");
}

// ------------------------------------------------------------------ edits

/// The regular files of `tree`, relative, sorted by bytes (as daemon.sh's
/// modify script lists them).
fn regular_files(tree: &Path) -> Res<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &entry.path(), out)?;
            } else if kind.is_file() {
                out.push(entry.path().strip_prefix(root).unwrap().to_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(tree, tree, &mut out).map_err(|e| format!("cannot list {}: {e}", tree.display()))?;
    out.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    if out.is_empty() {
        return Err(format!("{} has no regular files", tree.display()).into());
    }
    Ok(out)
}

/// `k` files spread evenly over `files`, starting at slot `offset` of `slots`
/// (`slots` = k for one writer; clients * k for many).
fn pick(files: &[PathBuf], k: usize, offset: usize, slots: usize) -> Vec<PathBuf> {
    (0..k)
        .map(|i| files[(offset + i) * files.len() / slots].clone())
        .collect()
}

/// Rewrites each of `files` under `view`: a new first line, then the old content,
/// in place (open with truncation), as an editor saving in place would.
fn rewrite(view: &Path, files: &[PathBuf], token: u64) -> std::io::Result<()> {
    for rel in files {
        let path = view.join(rel);
        let old = std::fs::read(&path)?;
        let mut new = format!("/* daemon bench edit {token} */\n").into_bytes();
        new.extend_from_slice(&old);
        std::fs::write(&path, new)?;
    }
    Ok(())
}

fn sync_fs(path: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(path)?;
    nix::unistd::syncfs(&dir).map_err(std::io::Error::from)
}

fn token() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------ commands

async fn ping(args: &Args) -> Res<bool> {
    let conn = connect(&args.socket).await?;
    let m = manager(&conn).await?;
    let mut samples = Vec::with_capacity(args.runs);
    for i in 0..args.warmup + args.runs {
        let t0 = Instant::now();
        m.version().await?;
        if i >= args.warmup {
            samples.push(ms(t0.elapsed()));
        }
    }
    emit(json!({"what": "ping"}), &samples);
    Ok(true)
}

async fn status(args: &Args) -> Res<bool> {
    let conn = connect(&args.socket).await?;
    let path = manager(&conn).await?.get(&args.name).await?;
    let ws = workspace(&conn, path).await?;
    let mut samples = Vec::with_capacity(args.runs);
    let mut changes = 0;
    for i in 0..args.warmup + args.runs {
        let t0 = Instant::now();
        changes = ws.status().await?.len();
        if i >= args.warmup {
            samples.push(ms(t0.elapsed()));
        }
    }
    emit(
        json!({"what": "status", "workspace": args.name, "changes": changes}),
        &samples,
    );
    Ok(true)
}

async fn commit_or_discard(args: &Args) -> Res<bool> {
    let conn = connect(&args.socket).await?;
    let path = manager(&conn).await?.get(&args.name).await?;
    let ws = workspace(&conn, path).await?;
    let view = PathBuf::from(ws.path().await?);
    let files = pick(&regular_files(&args.tree)?, args.k, 0, args.k);
    let commit = args.command == "commit";
    let mut samples = Vec::with_capacity(args.runs);
    let mut ok = true;
    for i in 0..args.warmup + args.runs {
        rewrite(&view, &files, token())?;
        sync_fs(&view)?;
        let t0 = Instant::now();
        let changed = if commit {
            ws.commit("bench").await?;
            let elapsed = t0.elapsed();
            let log = ws.log().await?;
            let last = log.last().ok_or("the op log is empty")?;
            (elapsed, (last.1.clone(), last.4 as usize))
        } else {
            let n = ws.discard().await? as usize;
            (t0.elapsed(), ("discard".to_owned(), n))
        };
        let (elapsed, (op, n)) = changed;
        let expected = if commit { "commit" } else { "discard" };
        if op != expected || n != args.k {
            eprintln!(
                "daemon_client: run {i}: the {expected} recorded {n} change(s) as '{op}', {} expected",
                args.k
            );
            ok = false;
        }
        if i >= args.warmup {
            samples.push(ms(elapsed));
        }
    }
    emit(
        json!({"what": args.command, "workspace": args.name, "k": args.k, "checked": ok}),
        &samples,
    );
    Ok(ok)
}

fn open_dir(dir: &Path) -> Res<std::fs::File> {
    Ok(std::fs::File::open(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?)
}

async fn open(args: &Args) -> Res<bool> {
    let conn = connect(&args.socket).await?;
    let m = manager(&conn).await?;
    let tree = args.command == "open-tree";
    let source = if tree {
        None
    } else {
        Some(open_dir(&args.source)?)
    };
    let mut samples = Vec::with_capacity(args.runs);
    for i in 0..args.warmup + args.runs {
        let name = format!("bench-open-{}-{i}", std::process::id());
        let t0 = Instant::now();
        let path = match &source {
            Some(dir) => m.open(&name, dir.into(), &args.backend).await?,
            None => m.open_tree(&name, &args.digest, &args.backend).await?,
        };
        if i >= args.warmup {
            samples.push(ms(t0.elapsed()));
        }
        workspace(&conn, path).await?.close(true).await?;
    }
    let what = if tree { "open_tree" } else { "open" };
    emit(
        json!({"what": what, "source": args.source.display().to_string(), "digest": args.digest}),
        &samples,
    );
    Ok(true)
}

async fn open_many(args: &Args) -> Res<bool> {
    let conn = connect(&args.socket).await?;
    let m = manager(&conn).await?;
    let source = open_dir(&args.source)?;
    let mut samples = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let name = format!("{}{i:03}", args.prefix);
        let t0 = Instant::now();
        m.open(&name, (&source).into(), &args.backend).await?;
        samples.push(ms(t0.elapsed()));
    }
    emit(
        json!({"what": "open-many", "prefix": args.prefix, "source": args.source.display().to_string()}),
        &samples,
    );
    Ok(true)
}

// ------------------------------------------------------------------ concurrency

#[derive(Debug, Default)]
struct Tally {
    /// Latencies of successful calls, by operation.
    ok: BTreeMap<&'static str, Vec<f64>>,
    /// Failed calls, by operation and error name.
    errors: BTreeMap<(&'static str, String), u64>,
    /// One example message per error name.
    examples: BTreeMap<String, String>,
    /// Workspaces opened but not closed (closed at the end).
    leftovers: Vec<OwnedObjectPath>,
}

impl Tally {
    fn record<T>(&mut self, op: &'static str, t0: Instant, result: &zbus::Result<T>) {
        match result {
            Ok(_) => self.ok.entry(op).or_default().push(ms(t0.elapsed())),
            Err(e) => {
                let name = error_name(e);
                self.examples
                    .entry(name.clone())
                    .or_insert_with(|| error_text(e));
                *self.errors.entry((op, name)).or_default() += 1;
            }
        }
    }
}

const ALLOWED: [&str; 2] = ["org.ws.Error.Busy", "org.ws.Error.Conflict"];

async fn concurrent(args: &Args) -> Res<bool> {
    let conn = connect(&args.socket).await?;
    let list = manager(&conn).await?.list().await?;
    let shared: Vec<(String, OwnedObjectPath)> = list
        .into_iter()
        .filter(|(name, _)| name.starts_with(&args.shared))
        .collect();
    if shared.is_empty() {
        return Err(format!("no workspace named {}*", args.shared).into());
    }
    // The files to edit, listed once from the shared workspaces' common source.
    let files = Arc::new(regular_files(&args.source)?);
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let socket = args.socket.clone();
        let source = args.source.clone();
        let backend = args.backend.clone();
        let target = shared[client % shared.len()].0.clone();
        let mine = pick(&files, args.k, client * args.k, args.clients * args.k);
        let max_ops = args.max_ops;
        tasks.push(tokio::spawn(async move {
            client_loop(
                client, socket, source, backend, target, mine, deadline, max_ops,
            )
            .await
        }));
    }
    let mut tally = Tally::default();
    let mut failed_clients = Vec::new();
    for (client, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(t)) => {
                for (op, samples) in t.ok {
                    tally.ok.entry(op).or_default().extend(samples);
                }
                for (key, n) in t.errors {
                    *tally.errors.entry(key).or_default() += n;
                }
                for (name, text) in t.examples {
                    tally.examples.entry(name).or_insert(text);
                }
                tally.leftovers.extend(t.leftovers);
            }
            Ok(Err(e)) => failed_clients.push(format!("client {client}: {e}")),
            Err(e) => failed_clients.push(format!("client {client}: {e}")),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    // Workspaces whose close failed (busy, ...): closed now, untimed.
    let mut not_closed = 0;
    for path in &tally.leftovers {
        let ws = workspace(&conn, path.clone()).await?;
        let mut closed = false;
        for _ in 0..50 {
            if ws.close(true).await.is_ok() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !closed {
            not_closed += 1;
        }
    }
    let mut errors = BTreeMap::<String, u64>::new();
    let mut by_op = serde_json::Map::new();
    for ((op, name), n) in &tally.errors {
        *errors.entry(name.clone()).or_default() += n;
        by_op.insert(format!("{op} {name}"), json!(n));
    }
    let unexpected: u64 = errors
        .iter()
        .filter(|(name, _)| !ALLOWED.contains(&name.as_str()))
        .map(|(_, n)| n)
        .sum();
    let ok_ops: usize = tally.ok.values().map(Vec::len).sum();
    let failed: u64 = errors.values().sum();
    let mut per_op = serde_json::Map::new();
    for (op, samples) in &tally.ok {
        per_op.insert((*op).to_owned(), summary(samples));
    }
    println!(
        "{}",
        json!({
            "what": "concurrent",
            "clients": args.clients,
            "shared_workspaces": shared.len(),
            "k": args.k,
            "duration_s": round3(wall),
            "ok_ops": ok_ops,
            "failed_ops": failed,
            "ops_per_s": round3(ok_ops as f64 / wall),
            "calls_per_s": round3((ok_ops as u64 + failed) as f64 / wall),
            "errors": errors,
            "errors_by_op": by_op,
            "error_examples": tally.examples,
            "unexpected_errors": unexpected,
            "failed_clients": failed_clients,
            "left_open": not_closed,
            "ops": per_op,
        })
    );
    Ok(unexpected == 0 && failed_clients.is_empty() && not_closed == 0)
}

/// One client: edit+commit, edit+discard, open+close in turn (starting at a
/// different step per client), until `deadline` or `max_ops` operations.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    client: usize,
    socket: PathBuf,
    source: PathBuf,
    backend: String,
    target: String,
    mine: Vec<PathBuf>,
    deadline: Instant,
    max_ops: usize,
) -> Res<Tally> {
    let conn = connect(&socket).await?;
    let m = manager(&conn).await?;
    let ws = workspace(&conn, m.get(&target).await?).await?;
    let view = PathBuf::from(ws.path().await?);
    let source_fd = open_dir(&source)?;
    let mut tally = Tally::default();
    let mine = Arc::new(mine);
    let mut n = 0usize;
    while Instant::now() < deadline && n < max_ops {
        match (client + n) % 3 {
            0 | 1 => {
                let (view, mine) = (view.clone(), mine.clone());
                tokio::task::spawn_blocking(move || rewrite(&view, &mine, token()))
                    .await?
                    .map_err(|e| format!("client {client}: cannot edit the view: {e}"))?;
                if (client + n).is_multiple_of(3) {
                    let t0 = Instant::now();
                    let result = ws.commit("").await;
                    tally.record("commit", t0, &result);
                } else {
                    let t0 = Instant::now();
                    let result = ws.discard().await;
                    tally.record("discard", t0, &result);
                }
            }
            _ => {
                let name = format!("cc-{client}-{n}");
                let t0 = Instant::now();
                let result = m.open(&name, (&source_fd).into(), &backend).await;
                tally.record("open", t0, &result);
                if let Ok(path) = result {
                    let opened = workspace(&conn, path.clone()).await?;
                    let t0 = Instant::now();
                    let closed = opened.close(true).await;
                    tally.record("close", t0, &closed);
                    if closed.is_err() {
                        tally.leftovers.push(path);
                    }
                }
            }
        }
        n += 1;
    }
    Ok(tally)
}

/// The peak resident memory of process `pid`, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? >> 10)
}

async fn imports_and_commits(args: &Args) -> Res<bool> {
    let conn = connect(&args.socket).await?;
    let list = manager(&conn).await?.list().await?;
    let shared: Vec<String> = list
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with(&args.shared))
        .collect();
    if shared.is_empty() {
        return Err(format!("no workspace named {}*", args.shared).into());
    }
    let started = Instant::now();
    let mut importers = Vec::new();
    for i in 0..args.count {
        let (socket, backend) = (args.socket.clone(), args.backend.clone());
        let dir = PathBuf::from(format!("{}-{i}", args.source.display()));
        importers.push(tokio::spawn(async move {
            let conn = connect(&socket).await?;
            let m = manager(&conn).await?;
            let fd = open_dir(&dir)?;
            let t0 = Instant::now();
            let path = m.open(&format!("imp-{i}"), (&fd).into(), &backend).await?;
            let took = ms(t0.elapsed());
            workspace(&conn, path).await?.close(true).await?;
            Res::Ok(took)
        }));
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut committers = Vec::new();
    for client in 0..args.clients {
        let socket = args.socket.clone();
        let target = shared[client % shared.len()].clone();
        let (k, done) = (args.k, done.clone());
        let tree = args.tree.clone();
        committers.push(tokio::spawn(async move {
            let conn = connect(&socket).await?;
            let m = manager(&conn).await?;
            let ws = workspace(&conn, m.get(&target).await?).await?;
            let view = PathBuf::from(ws.path().await?);
            let files = Arc::new(regular_files(&tree)?);
            let mine = Arc::new(pick(&files, k, client * k, 1000 * k));
            let mut tally = Tally::default();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (view, mine) = (view.clone(), mine.clone());
                tokio::task::spawn_blocking(move || rewrite(&view, &mine, token())).await??;
                let t0 = Instant::now();
                let result = ws.commit("").await;
                tally.record("commit", t0, &result);
            }
            Res::Ok(tally)
        }));
    }
    let mut import_ms = Vec::new();
    let mut failed = Vec::new();
    for (i, task) in importers.into_iter().enumerate() {
        match task.await? {
            Ok(took) => import_ms.push(took),
            Err(e) => failed.push(format!("importer {i}: {e}")),
        }
    }
    let imports_s = started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut commits = Vec::new();
    let mut errors = BTreeMap::<String, u64>::new();
    for (i, task) in committers.into_iter().enumerate() {
        match task.await? {
            Ok(t) => {
                commits.extend(t.ok.get("commit").cloned().unwrap_or_default());
                for ((_, name), n) in t.errors {
                    *errors.entry(name).or_default() += n;
                }
            }
            Err(e) => failed.push(format!("committer {i}: {e}")),
        }
    }
    commits.sort_by(f64::total_cmp);
    import_ms.sort_by(f64::total_cmp);
    let unexpected: u64 = errors
        .iter()
        .filter(|(name, _)| !ALLOWED.contains(&name.as_str()))
        .map(|(_, n)| n)
        .sum();
    println!(
        "{}",
        json!({
            "what": "imports_and_commits",
            "importers": args.count,
            "committers": args.clients,
            "k": args.k,
            "imports_s": round3(imports_s),
            "import_ms": summary(&import_ms),
            "commit": summary(&commits),
            "errors": errors,
            "failed": failed,
            "peak_rss_mib": peak_rss_mib(args.pid),
        })
    );
    Ok(unexpected == 0 && failed.is_empty())
}
