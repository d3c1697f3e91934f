//! The workspace commands: each one a call to the daemon over D-Bus.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::remote::Direction;
use super::{block_on, build, letter, open_dir, print, print_json};
use crate::cli::{ArtifactCommand, Backend, CacheCommand, Command, CommitArgs};
use crate::client::{Client, Workspace1Proxy};
use crate::error::CliError;
use crate::progress::{Spinner, bytes};

/// A workspace as `--json` shows it (fields documented in docs/cli.md).
#[derive(Debug, Serialize)]
struct WorkspaceJson {
    name: String,
    path: String,
    state: String,
    backend: String,
    source: Option<String>,
    base_source_digest: String,
    source_digest: String,
    dirty: usize,
    socket: String,
    element: Option<String>,
    dependency_hash: Option<String>,
    artifact_ref: Option<String>,
    last_build: Option<serde_json::Value>,
}

/// `ws commit --json`: the workspace, and what `--write-back` did.
#[derive(Debug, Serialize)]
struct CommitJson {
    #[serde(flatten)]
    workspace: WorkspaceJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_back: Option<WriteBackJson>,
}

/// What a write-back did, as `ws commit --write-back --json` shows it.
#[derive(Debug, Serialize)]
struct WriteBackJson {
    dir: String,
    written: u64,
    made_dirs: u64,
    removed: u64,
    already: u64,
    kept: Vec<String>,
}

/// A changed path as `--json` shows it.
#[derive(Debug, Serialize)]
struct ChangeJson {
    path: String,
    change: String,
}

/// Runs a workspace or project command on the daemon of `state_dir`; `project`
/// is `-C DIR`.
pub fn run(
    state_dir: &Path,
    project: Option<&Path>,
    command: Command,
) -> Result<ExitCode, CliError> {
    // Found before the daemon is asked anything, so a mistake costs no start.
    let project_dir = match &command {
        Command::Build(_) | Command::Show(_) | Command::Shell(_) | Command::Artifact(_) => {
            Some(build::find_project(project)?)
        }
        Command::Open(args) if args.source.is_none() => Some(build::find_project(project)?),
        // A key needs no project; one found adds its remotes.
        Command::Push(args) | Command::Pull(args) => match build::find_project(project) {
            Ok(dir) => Some(dir),
            Err(_) if project.is_none() && super::remote::is_key(&args.target) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    block_on(async {
        let client = Client::connect(state_dir).await?;
        match command {
            Command::Build(args) => {
                return build::build(&client, &project_dir.expect("found above"), args).await;
            }
            Command::Show(args) => {
                return build::show(&client, &project_dir.expect("found above"), args).await;
            }
            Command::Push(args) => {
                let project = project_dir.as_deref();
                return super::remote::transfer(&client, project, Direction::Push, args).await;
            }
            Command::Pull(args) => {
                let project = project_dir.as_deref();
                return super::remote::transfer(&client, project, Direction::Pull, args).await;
            }
            Command::Shell(args) => {
                return super::shell::shell(&client, &project_dir.expect("found above"), args)
                    .await;
            }
            Command::Cache(CacheCommand::List(args)) => {
                let caches = client.manager().await?.caches().await?;
                if args.json {
                    let list: Vec<serde_json::Value> = caches
                        .into_iter()
                        .map(|(element, name, tree, size, last_used)| {
                            serde_json::json!({
                                "element": element, "name": name, "tree": tree,
                                "size": size, "last_used": last_used,
                            })
                        })
                        .collect();
                    print_json(&list)?;
                } else {
                    let text: String = caches
                        .into_iter()
                        .map(|(element, name, tree, size, _)| {
                            format!("{element}\t{name}\t{}\t{tree}\n", bytes(size))
                        })
                        .collect();
                    print(&text)?;
                }
            }
            Command::Cache(CacheCommand::Drop(args)) => {
                let dropped = client
                    .manager()
                    .await?
                    .drop_cache(&args.element, args.name.as_deref().unwrap_or(""))
                    .await?;
                for name in dropped {
                    print(&format!("{}: dropped cache {name}\n", args.element))?;
                }
            }
            Command::Artifact(ArtifactCommand::Checkout(args)) => {
                let project = project_dir.expect("found above");
                return build::artifact_checkout(&client, &project, args).await;
            }
            Command::Open(args) if args.source.is_none() => {
                let backend = args.backend.map(backend_name).unwrap_or("");
                let project = project_dir.expect("found above");
                let (path, continued, key) = {
                    let _spinner = Spinner::start(&format!("opening {}", args.name));
                    build::open_element(&client, &project, &args, backend).await?
                };
                let ws = client.workspace(path).await?;
                let shown = describe(&client, &ws, 0).await?;
                if args.json {
                    print_json(&serde_json::json!({
                        "workspace": shown,
                        "cache_key": key,
                        "continues_failed_build": continued,
                    }))?;
                } else {
                    print(&format!(
                        "opened {} at {} ({}, source {})\n",
                        shown.name, shown.path, shown.backend, shown.source_digest
                    ))?;
                    if continued {
                        print(&format!(
                            "continuing from the failed build's buildtree (key {}): the next `ws build {}` picks up where it stopped\n",
                            &key[..key.len().min(12)],
                            shown.name
                        ))?;
                    }
                }
            }
            Command::Open(args) => {
                let source_dir = args
                    .source
                    .clone()
                    .expect("the arm above takes open without --source");
                let source = open_dir(&source_dir)?;
                let backend = args.backend.map(backend_name).unwrap_or("");
                let manager = client.manager().await?;
                let spinner = Spinner::start(&format!(
                    "opening {}: importing {}",
                    args.name,
                    source_dir.display()
                ));
                let path = match &args.path {
                    Some(at) => {
                        let at = open_dir(at)?;
                        manager
                            .open_at(&args.name, (&source).into(), (&at).into(), backend)
                            .await?
                    }
                    None => manager.open(&args.name, (&source).into(), backend).await?,
                };
                drop(spinner);
                let ws = client.workspace(path).await?;
                let shown = describe(&client, &ws, 0).await?;
                if args.json {
                    print_json(&shown)?;
                } else {
                    print(&format!(
                        "opened {} at {} ({}, source {})\n",
                        shown.name, shown.path, shown.backend, shown.source_digest
                    ))?;
                }
            }
            Command::Status(args) => {
                let names = match args.name {
                    Some(name) => vec![name],
                    None => client
                        .manager()
                        .await?
                        .list()
                        .await?
                        .into_iter()
                        .map(|(name, _)| name)
                        .collect(),
                };
                let mut shown = Vec::new();
                for name in &names {
                    let ws = client.workspace_named(name).await?;
                    let changes = ws.status().await?;
                    shown.push((describe(&client, &ws, changes.len()).await?, changes));
                }
                if args.json {
                    let list: Vec<&WorkspaceJson> = shown.iter().map(|(w, _)| w).collect();
                    match list.as_slice() {
                        [one] if names.len() == 1 => print_json(one)?,
                        _ => print_json(&list)?,
                    }
                } else {
                    let mut text = String::new();
                    for (ws, changes) in &shown {
                        text.push_str(&format!("{} ({}) at {}: ", ws.name, ws.state, ws.path));
                        if changes.is_empty() {
                            text.push_str("clean\n");
                        } else {
                            text.push_str(&format!("{} changed\n", changes.len()));
                            for (path, change) in changes {
                                text.push_str(&format!("  {} {path}\n", letter(change)));
                            }
                        }
                    }
                    print(&text)?;
                }
            }
            Command::Diff(args) => {
                let ws = client.workspace_named(&args.name).await?;
                if args.stat || args.name_only || args.json {
                    let changes = ws.status().await?;
                    if args.json {
                        let list: Vec<ChangeJson> = changes
                            .into_iter()
                            .map(|(path, change)| ChangeJson { path, change })
                            .collect();
                        print_json(&list)?;
                    } else {
                        let mut text = String::new();
                        for (path, change) in changes {
                            if args.name_only {
                                text.push_str(&format!("{path}\n"));
                            } else {
                                text.push_str(&format!("{} {path}\n", letter(&change)));
                            }
                        }
                        print(&text)?;
                    }
                } else {
                    print(&ws.diff().await?)?;
                }
            }
            Command::Commit(args) => return commit(&client, args).await,
            Command::Discard(args) => {
                let ws = client.workspace_named(&args.name).await?;
                let dropped = {
                    let _spinner = Spinner::start(&format!("discarding {}", args.name));
                    ws.discard().await?
                };
                if args.json {
                    print_json(&serde_json::json!({ "name": args.name, "discarded": dropped }))?;
                } else {
                    print(&format!("{}: discarded {dropped} change(s)\n", args.name))?;
                }
            }
            Command::Close(args) => {
                let ws = client.workspace_named(&args.name).await?;
                ws.close(args.force).await?;
                print(&format!("{}: closed\n", args.name))?;
            }
            Command::List(args) => {
                let list = client.manager().await?.list().await?;
                let mut shown = Vec::new();
                for (_, path) in list {
                    let ws = client.workspace(path).await?;
                    shown.push(describe(&client, &ws, 0).await?);
                }
                if args.json {
                    print_json(&shown)?;
                } else {
                    let text: String = shown
                        .iter()
                        .map(|w| format!("{}\t{}\t{}\t{}\n", w.name, w.state, w.backend, w.path))
                        .collect();
                    print(&text)?;
                }
            }
            Command::Log(args) => {
                let ws = client.workspace_named(&args.name).await?;
                let log = ws.log().await?;
                if args.json {
                    let list: Vec<serde_json::Value> = log
                        .into_iter()
                        .map(|(seq, op, before, after, changes, message, time)| {
                            serde_json::json!({
                                "seq": seq, "op": op, "before": before, "after": after,
                                "changes": changes, "message": message, "time": time,
                            })
                        })
                        .collect();
                    print_json(&list)?;
                } else {
                    let text: String = log
                        .into_iter()
                        .map(|(seq, op, _, after, changes, message, _)| {
                            let message = if message.is_empty() {
                                String::new()
                            } else {
                                format!("  {message}")
                            };
                            format!("{seq}\t{op}\t{changes} change(s)\t{after}{message}\n")
                        })
                        .collect();
                    print(&text)?;
                }
            }
            Command::Undo(args) => {
                let ws = client.workspace_named(&args.name).await?;
                let (seq, op) = ws.undo().await?;
                if args.json {
                    print_json(
                        &serde_json::json!({ "name": args.name, "undone": { "seq": seq, "op": op } }),
                    )?;
                } else {
                    print(&format!("{}: undid the {op} (op {seq})\n", args.name))?;
                }
            }
            Command::Fsck(args) => {
                let manager = client.manager().await?;
                let (clean, problems, counts) = {
                    let _spinner = Spinner::start("checking the store and the database");
                    manager.fsck().await?
                };
                if args.json {
                    print_json(
                        &serde_json::json!({ "clean": clean, "problems": problems, "checked": counts }),
                    )?;
                } else {
                    for problem in &problems {
                        print(&format!("{problem}\n"))?;
                    }
                    let count = |k: &str| counts.get(k).copied().unwrap_or(0);
                    eprintln!(
                        "checked {} objects ({}), {} trees, {} workspaces, {} snapshots: {} problem(s)",
                        count("objects"),
                        bytes(count("bytes")),
                        count("trees"),
                        count("workspaces"),
                        count("snapshots"),
                        problems.len()
                    );
                }
                if !clean {
                    return Err(CliError::Damaged(problems.len()));
                }
            }
            Command::Gc(args) => {
                let manager = client.manager().await?;
                let (counts, evicted, within) = {
                    let _spinner = Spinner::start("collecting garbage");
                    manager.gc(args.quota.unwrap_or(0)).await?
                };
                let count = |k: &str| counts.get(k).copied().unwrap_or(0);
                if args.json {
                    print_json(&serde_json::json!({
                        "removed_objects": count("removed_objects"),
                        "removed_bytes": count("removed_bytes"),
                        "kept_objects": count("kept_objects"),
                        "kept_bytes": count("kept_bytes"),
                        "removed_snapshots": count("removed_snapshots"),
                        "removed_sysroots": count("removed_sysroots"),
                        "evicted_refs": evicted,
                        "within_quota": within,
                    }))?;
                } else {
                    print(&format!(
                        "removed {} objects ({}) and {} snapshot(s); {} objects ({}) kept\n",
                        count("removed_objects"),
                        bytes(count("removed_bytes")),
                        count("removed_snapshots"),
                        count("kept_objects"),
                        bytes(count("kept_bytes")),
                    ))?;
                    for name in &evicted {
                        print(&format!("evicted {name}\n"))?;
                    }
                    if !within {
                        eprintln!(
                            "ws: the store is still over the quota: what is left is in use or pinned"
                        );
                    }
                }
            }
            Command::Store(_) | Command::Daemon => unreachable!("handled by the caller"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `ws commit`, and with `--write-back` the committed sources written into the
/// workspace's source directory or the one named.
async fn commit(client: &Client, args: CommitArgs) -> Result<ExitCode, CliError> {
    let ws = client.workspace_named(&args.name).await?;
    let before = ws.source_digest().await?;
    let message = args.message.as_deref().unwrap_or("");
    // Opened before anything is committed: a wrong directory costs nothing.
    let write_back = match &args.write_back {
        None => None,
        Some(dir) => {
            let dir = match dir {
                Some(dir) => dir.clone(),
                None => Some(PathBuf::from(ws.source().await?))
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .ok_or_else(|| CliError::NoWriteBackDir(args.name.clone()))?,
            };
            Some(open_dir(&dir)?)
        }
    };
    let (after, written) = match &write_back {
        None => {
            let _spinner = Spinner::start(&format!("committing {}", args.name));
            (ws.commit(message).await?, None)
        }
        Some(dir) => {
            let _spinner = Spinner::start(&format!("committing {} and writing it back", args.name));
            let options = HashMap::from([(
                "write_back",
                zbus::zvariant::Value::from(zbus::zvariant::Fd::from(dir.as_fd())),
            )]);
            let reply = match ws.commit_with(message, options).await {
                Ok(reply) => reply,
                Err(e) => {
                    // The commit comes first and stays when the write-back is
                    // refused or fails: say so before the error.
                    drop(_spinner);
                    if let Ok(now) = ws.source_digest().await
                        && now != before
                    {
                        print(&format!("{}: committed {now}\n", args.name))?;
                    }
                    return Err(e.into());
                }
            };
            let dict = super::Dict(&reply);
            let written = WriteBackJson {
                dir: dict.text("write_back_dir"),
                written: dict.number("written"),
                made_dirs: dict.number("made_dirs"),
                removed: dict.number("removed"),
                already: dict.number("already"),
                kept: dict.texts("kept"),
            };
            (dict.text("source_digest"), Some(written))
        }
    };
    if args.json {
        print_json(&CommitJson {
            workspace: describe(client, &ws, 0).await?,
            write_back: written,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = if before == after {
        format!("{}: nothing to commit\n", args.name)
    } else {
        format!("{}: committed {after}\n", args.name)
    };
    if let Some(w) = written {
        let changes = w.written + w.made_dirs + w.removed;
        if changes == 0 {
            text.push_str(&format!(
                "{}: {} holds the commit already\n",
                args.name, w.dir
            ));
        } else {
            text.push_str(&format!(
                "{}: wrote back {changes} change(s) into {}: {} file(s) written, {} removed, {} dir(s) made\n",
                args.name, w.dir, w.written, w.removed, w.made_dirs
            ));
        }
        for kept in &w.kept {
            text.push_str(&format!(
                "{}: kept {}/{kept}, which the commit deletes: it holds ignored files\n",
                args.name, w.dir
            ));
        }
    }
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `ws daemon`: runs `wsd` for `state_dir` in the foreground.
pub fn daemon(state_dir: &Path) -> Result<ExitCode, CliError> {
    use std::os::unix::process::CommandExt;
    let binary = crate::client::wsd_binary();
    let err = std::process::Command::new(&binary)
        .arg("--state-dir")
        .arg(state_dir)
        .exec();
    Err(CliError::DaemonStart {
        state_dir: state_dir.to_owned(),
        detail: format!("cannot run {}: {err}", binary.display()),
    })
}

/// The workspace's properties, read in one `GetAll` round trip.
async fn describe(
    client: &Client,
    ws: &Workspace1Proxy<'_>,
    dirty: usize,
) -> Result<WorkspaceJson, CliError> {
    let properties = zbus::fdo::PropertiesProxy::builder(ws.inner().connection())
        .destination("org.ws.Daemon")?
        .path(ws.inner().path().to_owned())?
        .build()
        .await?;
    let all = properties
        .get_all(zbus::names::InterfaceName::from_static_str_unchecked(
            "org.ws.Workspace1",
        ))
        .await
        .map_err(zbus::Error::from)?;
    let text = |name: &str| -> Result<String, CliError> {
        let value = all.get(name).ok_or_else(|| {
            CliError::Daemon(zbus::Error::Failure(format!(
                "the daemon did not report the property {name}; is it an older wsd?"
            )))
        })?;
        String::try_from(value.try_clone().map_err(zbus::Error::from)?)
            .map_err(|e| CliError::Daemon(e.into()))
    };
    Ok(WorkspaceJson {
        name: text("Name")?,
        path: text("Path")?,
        state: text("State")?,
        backend: text("Backend")?,
        source: text("Source").ok().filter(|t| !t.is_empty()),
        base_source_digest: text("BaseSourceDigest")?,
        source_digest: text("SourceDigest")?,
        dirty,
        socket: client.socket().display().to_string(),
        element: text("Element").ok().filter(|t| !t.is_empty()),
        dependency_hash: text("DependencyHash").ok().filter(|t| !t.is_empty()),
        artifact_ref: text("ArtifactRef").ok().filter(|t| !t.is_empty()),
        last_build: all.get("LastBuild").and_then(last_build_json),
    })
}

/// The `LastBuild` property as JSON (`None` before a build).
fn last_build_json(value: &zbus::zvariant::OwnedValue) -> Option<serde_json::Value> {
    let map =
        HashMap::<String, zbus::zvariant::OwnedValue>::try_from(value.try_clone().ok()?).ok()?;
    if map.is_empty() {
        return None;
    }
    let dict = super::Dict(&map);
    let text = |k: &str| dict.text(k);
    Some(serde_json::json!({
        "id": text("id"),
        "cache_key": text("cache_key"),
        "result": text("result"),
        "incremental": map.get("incremental").and_then(|v| bool::try_from(v).ok()).unwrap_or(false),
        "buildtree": dict.some("buildtree"),
        "time": dict.number("time"),
    }))
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Overlayfs => "overlayfs",
        Backend::FuseOverlayfs => "fuse-overlayfs",
        Backend::Mirror => "mirror",
    }
}
