//! `ws store …`: import, checkout, diff and fsck on the daemon's store.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;

use treediff::Digest;
use zbus::zvariant::Value;

use super::{block_on, letter, open_dir, print, print_json};
use crate::cli::{CheckoutArgs, DiffArgs, FsckArgs, ImportArgs, Mode, StoreCommand};
use crate::client::{Client, Store1Proxy};
use crate::error::CliError;
use crate::progress::{Spinner, bytes};

pub fn run(state_dir: &Path, command: StoreCommand) -> Result<ExitCode, CliError> {
    block_on(async {
        let client = Client::connect(state_dir).await?;
        let store = client.store().await?;
        match command {
            StoreCommand::Import(args) => import(&store, args).await,
            StoreCommand::Checkout(args) => checkout(&store, args).await,
            StoreCommand::Diff(args) => diff(&store, args).await,
            StoreCommand::Fsck(args) => fsck(&store, args).await,
        }
    })
}

/// Counts in a stable order, for JSON.
fn sorted(counts: HashMap<String, u64>) -> BTreeMap<String, u64> {
    counts.into_iter().collect()
}

async fn import(store: &Store1Proxy<'_>, args: ImportArgs) -> Result<ExitCode, CliError> {
    let dir = open_dir(&args.dir)?;
    let mode = if args.buildtree {
        "buildtree"
    } else {
        "source"
    };
    let options = HashMap::from([
        ("mode", Value::from(mode)),
        ("ignore", Value::from(args.ignore.clone())),
        (
            "threads",
            Value::from(args.threads.min(u32::MAX as usize) as u32),
        ),
    ]);
    let (digest, stats) = {
        let _spinner = Spinner::start(&format!("importing {}", args.dir.display()));
        store.import((&dir).into(), options).await?
    };
    if args.json {
        print_json(&serde_json::json!({ "digest": digest, "stats": sorted(stats) }))?;
    } else {
        print(&format!("{digest}\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn checkout(store: &Store1Proxy<'_>, args: CheckoutArgs) -> Result<ExitCode, CliError> {
    let digest: Digest = args.digest.parse()?;
    let mode = match args.mode {
        Mode::Hardlink => "hardlink",
        Mode::Reflink => "reflink",
        Mode::Copy => "copy",
    };
    let stats = checkout_into(store, digest, &args.dir, mode).await?;
    if args.json {
        print_json(&sorted(stats))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks `digest` out into `dir` (made if missing), in `mode`; returns the
/// daemon's counts.
pub(super) async fn checkout_into(
    store: &Store1Proxy<'_>,
    digest: Digest,
    dir: &std::path::Path,
    mode: &str,
) -> Result<HashMap<String, u64>, CliError> {
    // The daemon writes into a directory the caller passes; a new path is made
    // here, as the caller, and removed again if the checkout fails.
    let created = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(source) => {
            return Err(CliError::BadPath {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let dest = open_dir(dir)?;
    let result = {
        let _spinner = Spinner::start(&format!("checking out {digest} into {}", dir.display()));
        store
            .checkout(&digest.to_string(), (&dest).into(), mode)
            .await
    };
    match result {
        Ok(stats) => Ok(stats),
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(dir);
            }
            Err(e.into())
        }
    }
}

async fn diff(store: &Store1Proxy<'_>, args: DiffArgs) -> Result<ExitCode, CliError> {
    let old: Digest = args.old.parse()?;
    let new: Digest = args.new.parse()?;
    let patches = !(args.json || args.name_only || args.name_status);
    let context = args.unified.min(u32::MAX as usize) as u32;
    let changes = store
        .diff(&old.to_string(), &new.to_string(), patches, context)
        .await?;
    if args.json {
        let list: Vec<serde_json::Value> = changes
            .into_iter()
            .map(|(path, change, _)| serde_json::json!({ "path": path, "change": change }))
            .collect();
        return print_json(&list).map(|()| ExitCode::SUCCESS);
    }
    let mut text = String::new();
    let mut stat = Vec::new();
    for (path, change, patch) in changes {
        if args.name_only {
            text.push_str(&format!("{path}\n"));
        } else if args.name_status {
            text.push_str(&format!("{}\t{path}\n", letter(&change)));
        } else if args.stat {
            stat.push((path, line_counts(&patch)));
        } else {
            text.push_str(&patch);
        }
    }
    if args.stat {
        text = render_stat(&stat);
    }
    print(&text)?;
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

async fn fsck(store: &Store1Proxy<'_>, args: FsckArgs) -> Result<ExitCode, CliError> {
    let roots = args
        .digests
        .iter()
        .map(|d| d.parse::<Digest>().map(|d| d.to_string()))
        .collect::<Result<Vec<String>, _>>()?;
    let (clean, problems, counts) = {
        let _spinner = Spinner::start("checking the store");
        store.fsck(roots).await?
    };
    let count = |k: &str| counts.get(k).copied().unwrap_or(0);
    if args.json {
        let problems: Vec<BTreeMap<String, String>> = problems
            .iter()
            .map(|(kind, fields)| {
                let mut shown: BTreeMap<String, String> = fields
                    .iter()
                    .filter(|(k, _)| *k != "message")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                shown.insert("kind".to_owned(), kind.clone());
                shown
            })
            .collect();
        print_json(&serde_json::json!({
            "objects_checked": count("objects"),
            "bytes_checked": count("bytes"),
            "trees_checked": count("trees"),
            "dirs_checked": count("directories"),
            "problems": problems,
        }))?;
    } else {
        for (_, fields) in &problems {
            let message = fields.get("message").map(String::as_str).unwrap_or("");
            print(&format!("{message}\n"))?;
        }
        eprintln!(
            "checked {} objects ({}), {} trees, {} directories: {} problem(s)",
            count("objects"),
            bytes(count("bytes")),
            count("trees"),
            count("directories"),
            problems.len()
        );
    }
    if clean {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Damaged(problems.len()))
    }
}
