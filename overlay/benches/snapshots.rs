//! Timing of the snapshot backends on real trees, in process: prepare+mount, commit
//! (read the change set and compute the new tree digest), revert and discard of an
//! active snapshot in which K files were rewritten through the view. Run by hand, as
//! root (mounts), through `tests/bench/snapshots.sh`, which puts the state dir on a
//! loop filesystem of its own and runs the `git` and `cp` baselines beside it; see
//! `tests/bench/README.md`. A plain harness (no criterion):
//!
//! ```text
//! snapshots --state DIR --tree SRC --backend overlayfs|fuse-overlayfs|mirror
//!           [--k 10,1000] [--runs 5] [--warmup 1] [--clone-only] [--label TEXT]
//! ```
//!
//! `SRC` is imported into a store in `DIR` once (timed: `import`) and committed as the
//! snapshot `base` (timed: `base_checkout`; the layered backends check the tree out
//! there, the mirror only records it). Then, for each K, `--warmup` untimed runs and
//! `--runs` timed runs of:
//!
//! 1. `prepare_mount`: `prepare` on `base`, its records committed, and `mount`;
//! 2. `modify`: K regular files of the tree, spread evenly over its sorted listing,
//!    rewritten in place through the view (open with truncation, write a new first
//!    line and the old content);
//! 3. `commit`: `changes()`, which must list exactly K changes;
//! 4. `revert`: `revert()` through the view, which must revert K changes (then,
//!    untimed, `changes()` must find none and give back the base's tree);
//! 5. `discard`: `unmount`, `remove` and its records committed.
//!
//! Before every timed phase the state dir's filesystem is synced and the
//! snapshotter's trash is waited for, so that one phase's writeback or background
//! deletion does not land in the next one's figure. `--clone-only` runs only phases
//! 1 and 5 (for the mirror, `prepare` is the clone). One JSON line per phase and K
//! goes to stdout (median, min and max in ms, and every sample); progress to stderr.
//! Every mount is unmounted on the way out, also when a step fails.

use std::error::Error;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay::{
    BackendKind, ChangeOptions, Content, Driver, FileRecords, LayeredOptions, LayeredSnapshotter,
    MirrorOptions, MirrorSnapshotter, SnapshotError, Snapshotter,
};
use serde_json::json;
use treediff::{CaptureOptions, Digest, Store};

type Res<T> = Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: snapshots --state DIR --tree SRC --backend overlayfs|fuse-overlayfs|mirror \
[--k N[,N...]] [--runs R] [--warmup W] [--clone-only] [--label TEXT]";

#[derive(Debug)]
struct Args {
    state: PathBuf,
    tree: PathBuf,
    backend: BackendKind,
    ks: Vec<usize>,
    runs: usize,
    warmup: usize,
    clone_only: bool,
    label: String,
}

fn parse_args() -> Res<Args> {
    let mut state = None;
    let mut tree = None;
    let mut backend = None;
    let mut ks = Vec::new();
    let mut runs = 5;
    let mut warmup = 1;
    let mut clone_only = false;
    let mut label = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--state" => state = Some(PathBuf::from(value()?)),
            "--tree" => tree = Some(PathBuf::from(value()?)),
            "--backend" => {
                backend = Some(
                    value()?
                        .parse::<BackendKind>()
                        .map_err(|e| format!("{e}\n{USAGE}"))?,
                )
            }
            "--k" => {
                for k in value()?.split(',') {
                    ks.push(
                        k.parse()
                            .map_err(|_| format!("--k takes numbers, not {k:?}"))?,
                    );
                }
            }
            "--runs" => runs = value()?.parse().map_err(|_| "--runs takes a number")?,
            "--warmup" => warmup = value()?.parse().map_err(|_| "--warmup takes a number")?,
            "--clone-only" => clone_only = true,
            "--label" => label = value()?,
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if ks.is_empty() {
        ks.push(10);
    }
    if runs == 0 || ks.contains(&0) {
        return Err("--runs and --k must be positive".into());
    }
    Ok(Args {
        state: state.ok_or(USAGE)?,
        tree: tree.ok_or(USAGE)?,
        backend: backend.ok_or(USAGE)?,
        ks,
        runs,
        warmup,
        clone_only,
        label,
    })
}

/// Unmounts `target` when dropped while armed: no mount outlives the process, also
/// when a step fails.
struct MountGuard<'a> {
    target: &'a Path,
    armed: bool,
}

impl MountGuard<'_> {
    /// Unmounts now; disarms the guard only if that worked.
    fn unmount(&mut self) -> Result<(), SnapshotError> {
        if self.armed {
            overlay::unmount(self.target)?;
            self.armed = false;
        }
        Ok(())
    }
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // A view just closed may still be busy for a moment (fuse-overlayfs).
        for _ in 0..100 {
            match overlay::unmount(self.target) {
                Ok(()) => return,
                Err(SnapshotError::Busy { .. }) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    eprintln!("snapshots: cannot unmount {}: {e}", self.target.display());
                    return;
                }
            }
        }
        eprintln!(
            "snapshots: {} stayed busy: still mounted",
            self.target.display()
        );
    }
}

/// Timings of one phase, in ms.
#[derive(Debug, Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }

    /// (median, min, max), the median of an even count being the mean of the
    /// middle two (as in run.sh).
    fn summary(&self) -> (f64, f64, f64) {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        (median, v[0], v[n - 1])
    }
}

struct Bench<'a> {
    args: &'a Args,
    snap: Box<dyn Snapshotter>,
    records: Arc<FileRecords>,
    /// The state dir, open: its filesystem is synced before each timed phase.
    state_fd: File,
    trash: PathBuf,
    target: PathBuf,
    base_tree: Digest,
    files: u64,
}

/// Per K: the phases' samples and what the last commit read.
#[derive(Debug, Default)]
struct Figures {
    prepare_mount: Samples,
    modify: Samples,
    commit: Samples,
    revert: Samples,
    discard: Samples,
    /// Entries the last commit looked at and files it hashed.
    commit_entries: u64,
    commit_hashed: u64,
    /// Times `remove` found the layer still in use right after the unmount.
    busy_retries: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("snapshots: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!("\n  caused by: {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Res<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.state)?;
    let records_path = args.state.join("records.json");
    if records_path.exists() {
        return Err(format!(
            "{} exists: give a fresh --state dir (snapshots of an earlier run would be in the way)",
            records_path.display()
        )
        .into());
    }
    let store = Arc::new(Store::open(&args.state)?);

    let t = Instant::now();
    let (base_tree, stats) = treediff::import(&store, &args.tree, &CaptureOptions::default())?;
    let import = t.elapsed();
    eprintln!(
        "[{}] imported {} ({} files) in {:.1} s: {base_tree}",
        args.backend.name(),
        args.tree.display(),
        stats.files,
        import.as_secs_f64()
    );

    let records = Arc::new(FileRecords::open(&records_path)?);
    let snap_dir = args.state.join("snap");
    let snap: Box<dyn Snapshotter> = match args.backend {
        BackendKind::Overlayfs => Box::new(LayeredSnapshotter::open(
            &snap_dir,
            records.clone(),
            store.clone(),
            LayeredOptions::new(Driver::Kernel { userxattr: false }),
        )?),
        BackendKind::FuseOverlayfs => Box::new(LayeredSnapshotter::open(
            &snap_dir,
            records.clone(),
            store.clone(),
            LayeredOptions::new(Driver::Fuse),
        )?),
        BackendKind::Mirror => Box::new(MirrorSnapshotter::open(
            &snap_dir,
            records.clone(),
            store.clone(),
            MirrorOptions::default(),
        )?),
    };
    let target = args.state.join("mnt");
    std::fs::create_dir_all(&target)?;
    let bench = Bench {
        args: &args,
        snap,
        records,
        state_fd: File::open(&args.state)?,
        trash: snap_dir.join("trash"),
        target,
        base_tree,
        files: stats.files,
    };
    bench.emit_once(
        "import",
        import,
        json!({ "tree_digest": base_tree.to_string() }),
    );

    bench.settle();
    let t = Instant::now();
    let mut txn = bench.snap.begin();
    bench
        .snap
        .commit_tree(&mut txn, "base", base_tree, Content::Source)?;
    txn.commit_to(&bench.records)?;
    bench.emit_once("base_checkout", t.elapsed(), json!({}));

    let all_files = list_files(&args.tree)?;
    for &k in &args.ks {
        if k > all_files.len() {
            return Err(format!(
                "--k {k}: the tree has only {} regular files",
                all_files.len()
            )
            .into());
        }
        let chosen = spread(&all_files, k);
        let originals = chosen
            .iter()
            .map(|rel| std::fs::read(args.tree.join(rel)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut figures = Figures::default();
        for run in 0..args.warmup + args.runs {
            let timed = run >= args.warmup;
            eprintln!(
                "[{}] K={k}: run {}/{}{}",
                args.backend.name(),
                run + 1,
                args.warmup + args.runs,
                if timed { "" } else { " (warm-up)" }
            );
            let mut scratch = Figures::default();
            let into = if timed { &mut figures } else { &mut scratch };
            bench.one_run(&format!("ws-{k}-{run}"), run, &chosen, &originals, into)?;
        }
        bench.emit_k(k, &figures);
    }
    Ok(())
}

impl Bench<'_> {
    /// One prepare → modify → commit → revert → discard cycle on snapshot `key`.
    fn one_run(
        &self,
        key: &str,
        run: usize,
        chosen: &[String],
        originals: &[Vec<u8>],
        figures: &mut Figures,
    ) -> Res<()> {
        let k = chosen.len();
        let options = ChangeOptions::default();

        self.settle();
        let t = Instant::now();
        let mut txn = self.snap.begin();
        let plan = self
            .snap
            .prepare(&mut txn, key, Some("base"), Content::Source)?;
        txn.commit_to(&self.records)?;
        overlay::mount(&plan, &self.target)?;
        let mut guard = MountGuard {
            target: &self.target,
            armed: !matches!(plan, overlay::MountPlan::Direct { .. }),
        };
        figures.prepare_mount.push(t.elapsed());
        let view = plan.view_path(&self.target).to_owned();

        if !self.args.clone_only {
            self.settle();
            let t = Instant::now();
            for (rel, old) in chosen.iter().zip(originals) {
                let mut new = format!("/* ws snapshot bench: run {run} */\n").into_bytes();
                new.extend_from_slice(old);
                std::fs::write(view.join(rel), new)
                    .map_err(|e| format!("cannot rewrite {}: {e}", view.join(rel).display()))?;
            }
            figures.modify.push(t.elapsed());
            self.settle();
            let t = Instant::now();
            let set = self.snap.changes(key, &options)?;
            figures.commit.push(t.elapsed());
            if set.changes.len() != k || set.tree == self.base_tree {
                return Err(format!(
                    "{key}: changes() listed {} changes after {k} files were rewritten{}",
                    set.changes.len(),
                    if set.tree == self.base_tree {
                        ", and gave the base's tree"
                    } else {
                        ""
                    }
                )
                .into());
            }
            figures.commit_entries = set.stats.entries;
            figures.commit_hashed = set.stats.hashed_files;

            self.settle();
            let t = Instant::now();
            let root = File::open(&view)?;
            let reverted =
                self.snap
                    .revert(key, std::os::fd::AsFd::as_fd(&root), &view, None, &options)?;
            figures.revert.push(t.elapsed());
            if reverted.changes.len() != k {
                return Err(format!(
                    "{key}: revert() reverted {} changes, {k} expected",
                    reverted.changes.len()
                )
                .into());
            }
            // Fast but wrong would be worthless: the view must be the base again.
            let after = self.snap.changes(key, &options)?;
            if !after.changes.is_empty() || after.tree != self.base_tree {
                let paths: Vec<&str> = after.changes.iter().map(|c| c.path.as_str()).collect();
                return Err(format!(
                    "{key}: after revert(), changes() still lists {} changes ({}) and tree {} (base {})",
                    after.changes.len(),
                    paths.join(", "),
                    after.tree,
                    self.base_tree
                )
                .into());
            }
        }

        self.settle();
        let t = Instant::now();
        guard.unmount()?;
        let mut txn = self.snap.begin();
        // fuse-overlayfs may still be exiting right after the unmount: `remove` then
        // says the layer is in use. Retried (and counted), within the timing.
        let mut tries = 0;
        loop {
            match self.snap.remove(&mut txn, key) {
                Ok(()) => break,
                Err(SnapshotError::Busy { .. }) if tries < 500 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
        txn.commit_to(&self.records)?;
        figures.discard.push(t.elapsed());
        figures.busy_retries += tries;
        Ok(())
    }

    /// Syncs the state dir's filesystem and waits for the snapshotter's trash to be
    /// emptied (deletion runs on a background thread after `remove`), so that neither
    /// writeback nor deletion overlaps the next timed phase.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while std::fs::read_dir(&self.trash).is_ok_and(|mut d| d.next().is_some()) {
            if Instant::now() > deadline {
                eprintln!(
                    "snapshots: {} is still not empty after 10 min; going on",
                    self.trash.display()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = rustix::fs::syncfs(&self.state_fd) {
            eprintln!("snapshots: syncfs {}: {e}", self.args.state.display());
        }
    }

    fn header(&self) -> serde_json::Value {
        json!({
            "bench": "snapshots",
            "backend": self.args.backend.name(),
            "label": self.args.label,
            "tree": self.args.tree.display().to_string(),
            "files": self.files,
        })
    }

    fn emit(&self, mut line: serde_json::Value, extra: serde_json::Value) {
        let obj = line.as_object_mut().expect("an object");
        obj.extend(self.header().as_object().expect("an object").clone());
        if let serde_json::Value::Object(extra) = extra {
            obj.extend(extra);
        }
        println!("{line}");
    }

    fn emit_once(&self, phase: &str, d: Duration, extra: serde_json::Value) {
        let ms = d.as_secs_f64() * 1e3;
        self.emit(
            json!({ "phase": phase, "k": null, "runs": 1,
                    "median_ms": ms, "min_ms": ms, "max_ms": ms, "samples_ms": [ms] }),
            extra,
        );
    }

    fn emit_k(&self, k: usize, f: &Figures) {
        let phases: [(&str, &Samples, serde_json::Value); 5] = [
            ("prepare_mount", &f.prepare_mount, json!({})),
            ("modify", &f.modify, json!({})),
            (
                "commit",
                &f.commit,
                json!({ "entries_read": f.commit_entries, "hashed_files": f.commit_hashed }),
            ),
            ("revert", &f.revert, json!({})),
            (
                "discard",
                &f.discard,
                json!({ "busy_retries": f.busy_retries }),
            ),
        ];
        for (phase, samples, extra) in phases {
            if samples.0.is_empty() {
                continue;
            }
            let (median, min, max) = samples.summary();
            let round = |x: f64| (x * 1000.0).round() / 1000.0;
            self.emit(
                json!({
                    "phase": phase, "k": k, "runs": samples.0.len(),
                    "median_ms": round(median), "min_ms": round(min), "max_ms": round(max),
                    "samples_ms": samples.0.iter().map(|&x| round(x)).collect::<Vec<_>>(),
                }),
                extra,
            );
        }
    }
}

/// Every regular file under `root`, as `/`-joined relative paths sorted by their
/// bytes (the order `tests/bench/snapshots.sh` picks the same files in).
fn list_files(root: &Path) -> Res<Vec<String>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry?;
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(root)?;
            let rel = std::str::from_utf8(rel.as_os_str().as_bytes())
                .map_err(|_| format!("{}: not UTF-8", entry.path().display()))?;
            files.push(rel.to_owned());
        }
    }
    files.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(files)
}

/// `k` of `files`, evenly spread: indices `i * n / k`.
fn spread(files: &[String], k: usize) -> Vec<String> {
    let n = files.len();
    (0..k).map(|i| files[i * n / k].clone()).collect()
}
