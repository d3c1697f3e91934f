//! `ws store …`: import, checkout, diff and fsck on the store, without the daemon.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use treediff::capture::CaptureProgress;
use treediff::checkout::{CheckoutMode, CheckoutOptions};
use treediff::diff::DiffError;
use treediff::{CaptureMode, CaptureOptions, Change, ChangeKind, Digest, FileStatCache, Store};

use super::{print, print_json};
use crate::cli::{CheckoutArgs, DiffArgs, FsckArgs, ImportArgs, Mode, StoreCommand};
use crate::error::CliError;
use crate::progress::{bytes, with_spinner};

pub fn run(state_dir: &Path, command: StoreCommand) -> Result<ExitCode, CliError> {
    let store = Store::open(state_dir)?;
    match command {
        StoreCommand::Import(args) => import(&store, state_dir, args),
        StoreCommand::Checkout(args) => checkout(&store, args),
        StoreCommand::Diff(args) => diff(&store, args),
        StoreCommand::Fsck(args) => fsck(&store, args),
    }
}

fn import(store: &Store, state_dir: &Path, args: ImportArgs) -> Result<ExitCode, CliError> {
    let cache = FileStatCache::load(&stat_cache_path(state_dir, &args.dir));
    let progress = CaptureProgress::default();
    let options = CaptureOptions {
        mode: if args.buildtree {
            CaptureMode::Buildtree
        } else {
            CaptureMode::Source
        },
        ignore_patterns: &args.ignore,
        stat_cache: Some(&cache),
        progress: Some(&progress),
        threads: args.threads,
        access: None,
    };
    let status = || {
        let entries = progress.entries.load(Ordering::Relaxed);
        let hashed = progress.hashed_bytes.load(Ordering::Relaxed);
        format!(
            "importing {}: {entries} entries, {} hashed",
            args.dir.display(),
            bytes(hashed)
        )
    };
    let (digest, stats) = with_spinner("importing", status, || {
        treediff::import(store, &args.dir, &options)
    })?;
    // The cache only saves work: failing to write it is not worth failing the import.
    if let Err(e) = cache.save() {
        eprintln!("ws: warning: cannot save the stat cache: {e}");
    }
    if args.json {
        print_json(&serde_json::json!({ "digest": digest.to_string(), "stats": stats }))?;
    } else {
        print(&format!("{digest}\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One stat-cache file per imported directory, named by a hash of its real path.
fn stat_cache_path(state_dir: &Path, dir: &Path) -> std::path::PathBuf {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let key = blake3::hash(real.as_os_str().as_encoded_bytes()).to_hex();
    state_dir.join("statcache").join(&key[..32])
}

fn checkout(store: &Store, args: CheckoutArgs) -> Result<ExitCode, CliError> {
    let digest: Digest = args.digest.parse()?;
    let mode = match args.mode {
        Mode::Hardlink => CheckoutMode::Hardlink,
        Mode::Reflink => CheckoutMode::Reflink,
        Mode::Copy => CheckoutMode::Copy,
    };
    let message = format!("checking out {digest} into {}", args.dir.display());
    let stats = with_spinner(
        &message,
        || message.clone(),
        || treediff::checkout::checkout(store, digest, &args.dir, &CheckoutOptions { mode }),
    )?;
    if args.json {
        print_json(&stats)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One element of `ws store diff --json`: `{"path": …, "change": …}`.
#[derive(serde::Serialize)]
struct JsonChange {
    path: String,
    change: &'static str,
}

/// The name used for a change kind in `--json` output and documentation.
fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "added",
        ChangeKind::Deleted => "deleted",
        ChangeKind::Modified => "modified",
        ChangeKind::ModeChanged => "mode_changed",
        ChangeKind::TypeChanged => "type_changed",
    }
}

fn kind_letter(kind: ChangeKind) -> char {
    match kind {
        ChangeKind::Added => 'A',
        ChangeKind::Deleted => 'D',
        ChangeKind::Modified => 'M',
        ChangeKind::ModeChanged => 'X',
        ChangeKind::TypeChanged => 'T',
    }
}

/// A path as listed: directories (only empty ones are listed) end in `/`.
fn shown_path(change: &Change) -> String {
    let is_dir = if change.kind == ChangeKind::Deleted {
        change.old_is_dir()
    } else {
        change.new_is_dir()
    };
    if is_dir {
        format!("{}/", treediff::names::display(&change.path))
    } else {
        change.path.clone()
    }
}

fn diff(store: &Store, args: DiffArgs) -> Result<ExitCode, CliError> {
    let old: Digest = args.old.parse()?;
    let new: Digest = args.new.parse()?;
    let mut json = Vec::new();
    let mut stat = Vec::new();
    // Errors of our own (output, text rendering) stop the walk and are kept here.
    let mut failure: Option<CliError> = None;
    let mut on_leaf = |leaf: Change| -> Result<(), CliError> {
        if args.json {
            json.push(JsonChange {
                path: shown_path(&leaf),
                change: kind_name(leaf.kind),
            });
        } else if args.name_only {
            print(&format!("{}\n", shown_path(&leaf)))?;
        } else if args.name_status {
            print(&format!(
                "{}\t{}\n",
                kind_letter(leaf.kind),
                shown_path(&leaf)
            ))?;
        } else {
            let patch = treediff::unified_diff(store, &leaf, args.unified)?;
            if args.stat {
                stat.push((shown_path(&leaf), line_counts(&patch)));
            } else {
                print(&patch)?;
            }
        }
        Ok(())
    };
    let walked = treediff::diff(store, old, new, &mut |change| {
        treediff::expand(store, &change, &mut |leaf| {
            on_leaf(leaf).map_err(|e| {
                failure = Some(e);
                DiffError::Stopped
            })
        })
        .map(|_| ())
    });
    if let Some(failure) = failure {
        return Err(failure);
    }
    walked?;
    if args.json {
        print_json(&json)?;
    } else if args.stat {
        print(&render_stat(&stat))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Lines added and removed in a rendered patch; `None` for binary files.
fn line_counts(patch: &str) -> Option<(usize, usize)> {
    if patch.lines().any(|l| l.starts_with("Binary files ")) {
        return None;
    }
    let mut counts = (0, 0);
    for line in patch
        .lines()
        .filter(|l| !l.starts_with("+++ ") && !l.starts_with("--- "))
    {
        if line.starts_with('+') {
            counts.0 += 1;
        } else if line.starts_with('-') {
            counts.1 += 1;
        }
    }
    Some(counts)
}

fn render_stat(rows: &[(String, Option<(usize, usize)>)]) -> String {
    let width = rows.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
    let mut out = String::new();
    let (mut added, mut removed) = (0, 0);
    for (path, counts) in rows {
        match counts {
            Some((a, r)) => {
                added += a;
                removed += r;
                out.push_str(&format!(
                    " {path:width$} | {:>5} {}{}\n",
                    a + r,
                    "+".repeat((*a).min(40)),
                    "-".repeat((*r).min(40))
                ));
            }
            None => out.push_str(&format!(" {path:width$} |   Bin\n")),
        }
    }
    out.push_str(&format!(
        " {} file(s) changed, {added} insertion(s)(+), {removed} deletion(s)(-)\n",
        rows.len()
    ));
    out
}

fn fsck(store: &Store, args: FsckArgs) -> Result<ExitCode, CliError> {
    let roots = args
        .digests
        .iter()
        .map(|d| d.parse())
        .collect::<Result<Vec<Digest>, _>>()?;
    let report = with_spinner(
        "checking the store",
        || "checking the store".to_owned(),
        || treediff::fsck(store, &roots),
    )?;
    if args.json {
        print_json(&report)?;
    } else {
        for problem in &report.problems {
            print(&format!("{problem}\n"))?;
        }
        eprintln!(
            "checked {} objects ({}), {} trees, {} directories: {} problem(s)",
            report.objects_checked,
            bytes(report.bytes_checked),
            report.trees_checked,
            report.dirs_checked,
            report.problems.len()
        );
    }
    if report.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Damaged(report.problems.len()))
    }
}
