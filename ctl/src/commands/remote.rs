//! The remote caches from the client's side: the user's configuration file,
//! whose path every project command passes to the daemon (which reads it with
//! the caller's permissions, docs/remote.md), and `ws push` / `ws pull`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use zbus::zvariant::Value;

use super::{Dict, open_dir, print, print_json};
use crate::cli::{RemoteArgs, TransferArgs};
use crate::client::Client;
use crate::error::CliError;
use crate::progress::{Spinner, bytes};

/// The user's configuration file: `$WS_CONFIG`, else
/// `$XDG_CONFIG_HOME/ws/config.toml`, else `~/.config/ws/config.toml`. It need
/// not exist.
pub fn user_config() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("WS_CONFIG") {
        return std::path::absolute(PathBuf::from(path)).ok();
    }
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    std::path::absolute(base.join("ws/config.toml")).ok()
}

/// Adds the remote cache options of a request: the user's configuration, or
/// none at all with `--no-remote`.
pub fn add_options<'a>(options: &mut HashMap<&'a str, Value<'a>>, args: &RemoteArgs) {
    if args.no_remote {
        options.insert("remote", false.into());
    } else if let Some(path) = user_config() {
        options.insert("user-config", path.to_string_lossy().into_owned().into());
    }
}

/// Whether `target` is a cache key rather than an element name.
pub fn is_key(target: &str) -> bool {
    target.len() == 64 && target.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Which way a transfer goes.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// `ws push`.
    Push,
    /// `ws pull`.
    Pull,
}

/// What `ws push --json` and `ws pull --json` print (docs/cli.md).
#[derive(Debug, Serialize)]
struct TransferJson {
    element: String,
    cache_key: String,
    outcome: String,
    artifact: Option<String>,
    buildtree: Option<String>,
    log: Option<String>,
    remotes: Vec<String>,
    blobs: u64,
    moved_blobs: u64,
    moved_bytes: u64,
}

/// `ws push TARGET` / `ws pull TARGET`: `project` is the project found (needed
/// for an element, optional for a key).
pub async fn transfer(
    client: &Client,
    project: Option<&Path>,
    direction: Direction,
    args: TransferArgs,
) -> Result<ExitCode, CliError> {
    let by_key = is_key(&args.target);
    let dir = match project {
        Some(project) => open_dir(project)?,
        None => open_dir(Path::new("/"))?,
    };
    let mut options: HashMap<&str, Value<'_>> = HashMap::new();
    options.insert("key", by_key.into());
    options.insert("project", project.is_some().into());
    add_options(&mut options, &RemoteArgs { no_remote: false });
    let manager = client.manager().await?;
    let (verb, done) = match direction {
        Direction::Push => ("pushing", "pushed"),
        Direction::Pull => ("pulling", "pulled"),
    };
    let report = {
        let _spinner = Spinner::start(&format!("{verb} {}", args.target));
        match direction {
            Direction::Push => manager.push((&dir).into(), &args.target, options).await?,
            Direction::Pull => manager.pull((&dir).into(), &args.target, options).await?,
        }
    };
    let d = Dict(&report);
    let json = TransferJson {
        element: d.text("element"),
        cache_key: d.text("cache_key"),
        outcome: d.text("outcome"),
        artifact: d.some("artifact"),
        buildtree: d.some("buildtree"),
        log: d.some("log"),
        remotes: d.texts("remotes"),
        blobs: d.number("blobs"),
        moved_blobs: d.number("moved_blobs"),
        moved_bytes: d.number("moved_bytes"),
    };
    if args.json {
        print_json(&json)?;
    } else {
        print(&format!(
            "{}: {done} the {} build under key {} {} {}: {} of its {} blob(s), {}\n",
            json.element,
            if json.outcome == "failed" {
                "failed"
            } else {
                "successful"
            },
            &json.cache_key[..json.cache_key.len().min(12)],
            if matches!(direction, Direction::Push) {
                "to"
            } else {
                "from"
            },
            json.remotes.join(", "),
            json.moved_blobs,
            json.blobs,
            bytes(json.moved_bytes),
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_64_hex_digits_and_anything_else_an_element() {
        assert!(is_key(&"0a".repeat(32)));
        assert!(!is_key("app"));
        assert!(!is_key(&"0".repeat(63)));
        assert!(!is_key(&"g".repeat(64)));
    }
}
