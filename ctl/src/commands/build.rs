//! The project commands: `ws build`, `ws show` and `ws open ELEMENT`. Each finds
//! the project (ws.toml, upward from here or `-C DIR`) and passes the daemon a
//! descriptor of its directory.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use zbus::zvariant::{OwnedValue, Value};

use super::{Dict, open_dir, print, print_json};
use crate::cli::{ArtifactCheckoutArgs, BuildArgs, OpenArgs, ShowArgs};
use crate::client::Client;
use crate::error::CliError;

/// The project file's name.
const PROJECT_FILE: &str = "ws.toml";

/// The project directory: `-C DIR`, else the nearest directory upward from the
/// current one that has a ws.toml.
pub fn find_project(given: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(dir) = given {
        if dir.join(PROJECT_FILE).is_file() {
            return Ok(dir.to_owned());
        }
        return Err(CliError::NoProject(dir.to_owned()));
    }
    let here = std::env::current_dir().map_err(|source| CliError::BadPath {
        path: PathBuf::from("."),
        source,
    })?;
    here.ancestors()
        .find(|dir| dir.join(PROJECT_FILE).is_file())
        .map(Path::to_owned)
        .ok_or(CliError::NoProject(here))
}

/// An element's report as `ws build --json` prints it (docs/cli.md).
#[derive(Debug, Serialize)]
struct ReportJson {
    element: String,
    cache_key: String,
    result: String,
    incremental: bool,
    commands_run: u32,
    artifact: Option<String>,
    buildtree: Option<String>,
    log: Option<String>,
    workspace: Option<String>,
    message: Option<String>,
    /// The remote cache the artifact was pulled from.
    pulled_from: Option<String>,
    /// The remote caches the result was pushed to.
    pushed_to: Vec<String>,
    /// Remote caches that failed or had an unusable entry ("URL: what").
    remote_problems: Vec<String>,
    /// With `--verify`, for the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<VerifyJson>,
}

/// What `--verify`'s clean rebuild found (docs/cli.md).
#[derive(Debug, Serialize)]
struct VerifyJson {
    /// "identical", "differs" or "failed".
    result: String,
    clean_artifact: Option<String>,
    /// "modified PATH", "added PATH", ...
    differences: Vec<String>,
    message: Option<String>,
}

impl VerifyJson {
    /// One line for people.
    fn line(&self, element: &str) -> String {
        match self.result.as_str() {
            "identical" => format!("{element}: verified: a clean rebuild gives the same artifact"),
            "differs" => format!(
                "{element}: NOT verified: a clean rebuild's artifact differs in {} path(s): {}",
                self.differences.len(),
                self.differences.join(", ")
            ),
            _ => format!(
                "{element}: NOT verified: {}",
                self.message
                    .as_deref()
                    .unwrap_or("the clean rebuild failed")
            ),
        }
    }
}

impl ReportJson {
    fn from_value(map: &HashMap<String, OwnedValue>) -> ReportJson {
        let dict = Dict(map);
        let text = |k: &str| dict.text(k);
        let some = |k: &str| dict.some(k);
        ReportJson {
            element: text("element"),
            cache_key: text("cache_key"),
            result: text("result"),
            incremental: map
                .get("incremental")
                .and_then(|v| bool::try_from(v).ok())
                .unwrap_or(false),
            commands_run: map
                .get("commands_run")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            artifact: some("artifact"),
            buildtree: some("buildtree"),
            log: some("log"),
            workspace: some("workspace"),
            message: some("message"),
            pulled_from: some("pulled_from"),
            pushed_to: dict.texts("pushed_to"),
            remote_problems: dict.texts("remote_problems"),
            verify: some("verify").map(|result| VerifyJson {
                result,
                clean_artifact: some("clean_artifact"),
                differences: dict.texts("differences"),
                message: some("verify_message"),
            }),
        }
    }

    /// One line for people.
    fn line(&self) -> String {
        let mut line = format!("{}: {}", self.element, self.result);
        match self.result.as_str() {
            "cached" => line.push_str(" (nothing was built"),
            "built" if self.incremental => {
                line.push_str(&format!(" (incremental, {} command(s)", self.commands_run))
            }
            _ => line.push_str(&format!(" ({} command(s)", self.commands_run)),
        }
        if let Some(ws) = &self.workspace {
            line.push_str(&format!(", in workspace {ws}"));
        }
        line.push_str(&format!(", key {})", short(&self.cache_key)));
        if let Some(message) = &self.message {
            line.push_str(&format!(": {message}"));
        }
        line
    }
}

fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// A Build1 signal of interest.
enum Signal {
    Started(String, String, String),
    Output(Vec<u8>),
    ElementFinished(HashMap<String, OwnedValue>),
    Finished(String, Vec<HashMap<String, OwnedValue>>, String, String),
}

impl Signal {
    fn parse(member: &str, message: &zbus::Message) -> Option<Signal> {
        let body = message.body();
        match member {
            "ElementStarted" => body
                .deserialize::<(String, String, String)>()
                .ok()
                .map(|(e, k, w)| Signal::Started(e, k, w)),
            "Output" => body
                .deserialize::<(String, Vec<u8>)>()
                .ok()
                .map(|(_, data)| Signal::Output(data)),
            "ElementFinished" => body
                .deserialize::<HashMap<String, OwnedValue>>()
                .ok()
                .map(Signal::ElementFinished),
            "Finished" => body
                .deserialize::<(String, Vec<HashMap<String, OwnedValue>>, String, String)>()
                .ok()
                .map(|(s, r, n, e)| Signal::Finished(s, r, n, e)),
            _ => None,
        }
    }
}

/// `ws build ELEMENT`.
pub async fn build(client: &Client, project: &Path, args: BuildArgs) -> Result<ExitCode, CliError> {
    let dir = open_dir(project)?;
    let (listener, mut rx) = super::signals(client, "org.ws.Build1");
    let manager = client.manager().await?;
    let mut options: HashMap<&str, Value<'_>> = HashMap::new();
    if args.verify {
        options.insert("verify", true.into());
    }
    super::remote::add_options(&mut options, &args.remote);
    let path = manager.build((&dir).into(), &args.element, options).await?;
    let job = client.build_job(path.clone()).await?;
    let path = path.to_string();
    let mut cancelled = false;
    let (state, reports, error_name, error) = loop {
        tokio::select! {
            next = rx.recv() => {
                let Some((from, member, message)) = next else {
                    return Err(CliError::BuildFailed("the daemon went away during the build".into()));
                };
                if from != path {
                    continue;
                }
                let Some(signal) = Signal::parse(&member, &message) else {
                    continue;
                };
                match signal {
                    Signal::Started(element, key, workspace) => {
                        let place = if workspace.is_empty() { String::new() } else { format!(" in workspace {workspace}") };
                        eprintln!("ws: {element}: key {}{place}", short(&key));
                    }
                    Signal::Output(data) => {
                        let written = if args.json {
                            std::io::stderr().write_all(&data)
                        } else {
                            std::io::stdout().write_all(&data).and_then(|()| std::io::stdout().flush())
                        };
                        written.map_err(CliError::Output)?;
                    }
                    Signal::ElementFinished(report) => {
                        let report = ReportJson::from_value(&report);
                        if !args.json {
                            eprintln!("ws: {}", report.line());
                            if let Some(verify) = &report.verify {
                                eprintln!("ws: {}", verify.line(&report.element));
                            }
                        }
                        // On stderr with --json too: a remote that fails must be seen.
                        for problem in &report.remote_problems {
                            eprintln!("ws: warning: {}: remote cache {problem}", report.element);
                        }
                        if !report.pushed_to.is_empty() {
                            eprintln!("ws: {}: pushed to {}", report.element, report.pushed_to.join(", "));
                        }
                    }
                    Signal::Finished(state, reports, name, error) => break (state, reports, name, error),
                }
            }
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                cancelled = true;
                eprintln!("ws: cancelling the build");
                job.cancel().await?;
            }
        }
    };
    listener.abort();
    let reports: Vec<ReportJson> = reports.iter().map(ReportJson::from_value).collect();
    if args.json {
        print_json(&reports)?;
    }
    let unverified = reports.iter().find_map(|r| {
        r.verify
            .as_ref()
            .filter(|v| v.result != "identical")
            .map(|v| (r, v))
    });
    match state.as_str() {
        "succeeded" => match unverified {
            None => Ok(ExitCode::SUCCESS),
            Some((r, v)) => Err(CliError::BuildFailed(match v.result.as_str() {
                "differs" => format!(
                    "{} is not reproducible: a clean rebuild differs from its artifact",
                    r.element
                ),
                _ => format!("{} could not be verified", r.element),
            })),
        },
        "error" => Err(CliError::Remote {
            name: error_name,
            message: error,
        }),
        "cancelled" => Err(CliError::BuildFailed(format!(
            "the build of {} was cancelled",
            args.element
        ))),
        _ => {
            let failed = reports.iter().find(|r| r.result == "failed");
            let why = match failed {
                Some(r) if r.element == args.element => format!("{} failed", r.element),
                Some(r) => format!(
                    "{} was not built: its dependency {} failed",
                    args.element, r.element
                ),
                None => format!("{} failed", args.element),
            };
            Err(CliError::BuildFailed(why))
        }
    }
}

/// An element as `ws show --json` prints it.
#[derive(Debug, Serialize)]
struct ShowJson {
    element: String,
    kind: String,
    cache_key: String,
    state: String,
    source_digest: String,
    dependency_hash: String,
    workspace: Option<String>,
    artifact: Option<String>,
    buildtree: Option<String>,
    log: Option<String>,
}

/// `ws show ELEMENT`.
pub async fn show(client: &Client, project: &Path, args: ShowArgs) -> Result<ExitCode, CliError> {
    let dir = open_dir(project)?;
    let shown = client
        .manager()
        .await?
        .show((&dir).into(), &args.element)
        .await?;
    let list: Vec<ShowJson> = shown
        .iter()
        .map(|map| {
            let dict = Dict(map);
            let text = |k: &str| dict.text(k);
            let some = |k: &str| dict.some(k);
            ShowJson {
                element: text("element"),
                kind: text("kind"),
                cache_key: text("cache_key"),
                state: text("state"),
                source_digest: text("source_digest"),
                dependency_hash: text("dependency_hash"),
                workspace: some("workspace"),
                artifact: some("artifact"),
                buildtree: some("buildtree"),
                log: some("log"),
            }
        })
        .collect();
    if args.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    for e in &list {
        text.push_str(&format!("{} ({}): {}\n", e.element, e.kind, e.state));
        text.push_str(&format!("  cache key        {}\n", e.cache_key));
        text.push_str(&format!("  source digest    {}\n", e.source_digest));
        text.push_str(&format!("  dependency hash  {}\n", e.dependency_hash));
        if let Some(ws) = &e.workspace {
            text.push_str(&format!("  workspace        {ws}\n"));
        }
        if let Some(a) = &e.artifact {
            text.push_str(&format!("  artifact         {a}\n"));
        }
        if let Some(b) = &e.buildtree {
            text.push_str(&format!("  buildtree        {b}\n"));
        }
    }
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `ws open ELEMENT`: returns the workspace's object and whether it continues a
/// failed build.
pub async fn open_element(
    client: &Client,
    project: &Path,
    args: &OpenArgs,
    backend: &str,
) -> Result<(zbus::zvariant::OwnedObjectPath, bool, String), CliError> {
    let dir = open_dir(project)?;
    let manager = client.manager().await?;
    let mut options: HashMap<&str, Value<'_>> = HashMap::new();
    options.insert("fresh", args.fresh.into());
    options.insert("backend", backend.into());
    super::remote::add_options(&mut options, &args.remote);
    Ok(match &args.path {
        Some(at) => {
            let at = open_dir(at)?;
            manager
                .open_element_at((&dir).into(), &args.name, (&at).into(), options)
                .await?
        }
        None => {
            manager
                .open_element((&dir).into(), &args.name, options)
                .await?
        }
    })
}

/// `ws artifact checkout ELEMENT DIR`: the element's artifact under its current
/// key, copied out (verified against its digests).
pub async fn artifact_checkout(
    client: &Client,
    project: &Path,
    args: ArtifactCheckoutArgs,
) -> Result<ExitCode, CliError> {
    let dir = open_dir(project)?;
    let shown = client
        .manager()
        .await?
        .show((&dir).into(), &args.element)
        .await?;
    let target = shown.last().ok_or_else(|| {
        CliError::BuildFailed(format!("the daemon showed nothing for {}", args.element))
    })?;
    let dict = Dict(target);
    let text = |k: &str| dict.text(k);
    if text("state") != "cached" {
        return Err(CliError::BuildFailed(format!(
            "{} has no cached artifact under its current key {} (it is {}); run `ws build {}` first",
            args.element,
            short(&text("cache_key")),
            text("state"),
            args.element
        )));
    }
    let artifact: treediff::Digest = text("artifact").parse()?;
    let store = client.store().await?;
    let stats = super::store::checkout_into(&store, artifact, &args.dir, "copy").await?;
    if args.json {
        print_json(&serde_json::json!({
            "element": args.element,
            "cache_key": text("cache_key"),
            "artifact": artifact.to_string(),
            "stats": stats.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }))?;
    } else {
        print(&format!(
            "{}: artifact {} checked out into {}\n",
            args.element,
            artifact,
            args.dir.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
