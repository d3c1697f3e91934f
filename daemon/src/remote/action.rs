//! Build results in the action cache: a cache key as an Action digest, and a
//! build's trees, log and outcome as an `ActionResult` (see `docs/format.md`,
//! "Remote cache entries").
//!
//! The Action is a real REAPI `Action` whose `command_digest` names a `Command`
//! with the arguments `["ws-build", "--format=1", "<key>"]` and the output paths
//! `["artifact", "buildtree"]`, and whose `input_root_digest` is the empty
//! directory; nothing else is set. Its digest (in the remote's space) is the
//! action cache key. Both messages are uploaded with the result, so a server or
//! a person browsing it can tell what an entry is.
//!
//! The `ActionResult` holds the install root as the output directory `artifact`
//! and the buildtree as `buildtree`, each by `root_directory_digest` (REAPI
//! 2.3's directory form: no `Tree` message, which would repeat every directory
//! and can pass 4 MiB), the log as `stdout_digest`, the failure message inline
//! in `stderr_raw`, and `exit_code` 0 for a success, 1 for a failure.

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;
use treediff::{Digest, Store};

use super::digest_map::DigestMap;
use super::pull::Puller;
use super::push::{Item, PushStats};
use super::space::{Function, RemoteDigest};
use super::{Remote, RemoteError};
use crate::manager::build::Outcome;
use crate::project::CacheKey;

/// The version of this encoding, in the Command's arguments: a change to the
/// layout of either message gives new action digests, never a misread entry.
pub const RESULT_FORMAT: u32 = 1;

/// The output directory holding the install root.
const ARTIFACT: &str = "artifact";
/// The output directory holding the buildtree.
const BUILDTREE: &str = "buildtree";

/// What a build under a key left, in local digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildResult {
    /// How it ended.
    pub outcome: Outcome,
    /// The install root's tree (a success has one).
    pub artifact: Option<Digest>,
    /// The buildtree's tree.
    pub buildtree: Option<Digest>,
    /// The build log, a blob.
    pub log: Option<Digest>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// What the action cache had for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// An entry whose every blob was fetched and verified into the store.
    Hit(BuildResult),
    /// No usable entry: none, or one whose blobs are missing, corrupt or not
    /// what ws writes. The reason is for logs.
    Miss(String),
}

/// The Command and Action messages for `key` (canonical encodings) and the
/// Action's digest in `function`'s space.
pub fn action_for_key(function: Function, key: &CacheKey) -> (RemoteDigest, Vec<u8>, Vec<u8>) {
    let command = reapi::Command {
        arguments: vec![
            "ws-build".to_owned(),
            format!("--format={RESULT_FORMAT}"),
            key.as_str().to_owned(),
        ],
        output_paths: vec![ARTIFACT.to_owned(), BUILDTREE.to_owned()],
        ..Default::default()
    }
    .encode_to_vec();
    let action = reapi::Action {
        command_digest: Some(function.digest(&command).to_proto()),
        input_root_digest: Some(function.digest(b"").to_proto()),
        ..Default::default()
    }
    .encode_to_vec();
    (function.digest(&action), action, command)
}

impl Remote {
    /// Uploads a build's result under `key`: every blob its trees and log
    /// reference first (and the Action and Command), then the action cache
    /// entry, so that the server never holds an entry whose blobs it lacks.
    pub fn put_result(
        &self,
        store: &Store,
        map: &DigestMap,
        key: &CacheKey,
        result: &BuildResult,
    ) -> Result<PushStats, RemoteError> {
        if !self.update_enabled() {
            return Err(RemoteError::Unsupported {
                url: self.url().to_owned(),
                instance: self.instance().to_owned(),
                problem: "its action cache does not take updates (update_enabled is false)".into(),
            });
        }
        let (action, action_bytes, command_bytes) = action_for_key(self.function(), key);
        let mut items = vec![Item::Raw(action_bytes), Item::Raw(command_bytes)];
        let trees = [(ARTIFACT, result.artifact), (BUILDTREE, result.buildtree)];
        for (_, tree) in &trees {
            if let Some(tree) = tree {
                items.push(Item::Tree(*tree));
            }
        }
        if let Some(log) = result.log {
            items.push(Item::Blob(log));
        }
        let stats = self.push(store, map, &items)?;
        // The roots come back in the order of the items.
        let mut roots = stats.roots[2..].iter();
        let mut output_directories = Vec::new();
        for (path, tree) in trees {
            if tree.is_some() {
                output_directories.push(reapi::OutputDirectory {
                    path: path.to_owned(),
                    root_directory_digest: Some(roots.next().unwrap().to_proto()),
                    ..Default::default()
                });
            }
        }
        let action_result = reapi::ActionResult {
            output_directories,
            exit_code: match result.outcome {
                Outcome::Success => 0,
                Outcome::Failed => 1,
            },
            stdout_digest: result.log.map(|_| roots.next().unwrap().to_proto()),
            stderr_raw: result.failure.clone().unwrap_or_default().into_bytes(),
            ..Default::default()
        };
        self.block_on(self.client.update_action_result(action, action_result))?;
        Ok(stats)
    }

    /// Looks `key` up in the action cache and, on a hit, pulls its trees and log
    /// into the store (one transaction: all or nothing). An entry whose blobs
    /// are missing or corrupt is a [`Lookup::Miss`]; only a failure to talk to
    /// the server (or to the store) is an error.
    pub fn get_result(
        &self,
        store: &Store,
        map: &DigestMap,
        key: &CacheKey,
    ) -> Result<Lookup, RemoteError> {
        let (action, _, _) = action_for_key(self.function(), key);
        let Some(entry) = self.block_on(self.client.get_action_result(action))? else {
            return Ok(Lookup::Miss(format!("no entry for action {action}")));
        };
        let parsed = match parse(&entry) {
            Ok(parsed) => parsed,
            Err(problem) => return Ok(Lookup::Miss(format!("entry {action}: {problem}"))),
        };
        let txn = store.begin()?;
        let mut puller = Puller::new(self, map, &txn);
        let pulled = (|| {
            let mut tree =
                |remote: Option<RemoteDigest>| remote.map(|r| puller.tree(r)).transpose();
            let artifact = tree(parsed.artifact)?;
            let buildtree = tree(parsed.buildtree)?;
            let log = parsed.log.map(|r| puller.blob(r)).transpose()?;
            Ok::<_, RemoteError>(BuildResult {
                outcome: parsed.outcome,
                artifact,
                buildtree,
                log,
                failure: parsed.failure.clone(),
            })
        })();
        let result = match pulled {
            Ok(result) => result,
            Err(e) if e.is_miss() => {
                tracing::info!(url = self.url(), %key, error = %e, "remote cache entry unusable");
                return Ok(Lookup::Miss(e.to_string()));
            }
            Err(e) => return Err(e),
        };
        let pairs = std::mem::take(&mut puller.pairs);
        txn.commit()?;
        map.insert(&pairs)?;
        Ok(Lookup::Hit(result))
    }
}

/// An entry's fields in the remote's space.
#[derive(Debug)]
struct Parsed {
    outcome: Outcome,
    artifact: Option<RemoteDigest>,
    buildtree: Option<RemoteDigest>,
    log: Option<RemoteDigest>,
    failure: Option<String>,
}

/// Reads an entry as ws writes it; anything else is a problem (a miss).
fn parse(entry: &reapi::ActionResult) -> Result<Parsed, String> {
    let outcome = match entry.exit_code {
        0 => Outcome::Success,
        1 => Outcome::Failed,
        code => return Err(format!("exit code {code} is not one ws writes")),
    };
    let digest = |d: Option<&reapi::Digest>, what: &str| {
        d.map(|d| RemoteDigest::from_proto(d).map_err(|e| format!("{what}: {e}")))
            .transpose()
    };
    let (mut artifact, mut buildtree) = (None, None);
    for dir in &entry.output_directories {
        let slot = match dir.path.as_str() {
            ARTIFACT => &mut artifact,
            BUILDTREE => &mut buildtree,
            other => return Err(format!("unknown output directory {other:?}")),
        };
        *slot = Some(
            digest(dir.root_directory_digest.as_ref(), &dir.path)?.ok_or_else(|| {
                format!(
                    "output directory {:?} has no root_directory_digest",
                    dir.path
                )
            })?,
        );
    }
    if outcome == Outcome::Success && artifact.is_none() {
        return Err("a success without an artifact".into());
    }
    if !entry.output_files.is_empty() || !entry.output_symlinks.is_empty() {
        return Err("output files or symlinks, which ws does not write".into());
    }
    let failure = (!entry.stderr_raw.is_empty())
        .then(|| String::from_utf8_lossy(&entry.stderr_raw).into_owned());
    Ok(Parsed {
        outcome,
        artifact,
        buildtree,
        log: digest(entry.stdout_digest.as_ref(), "stdout")?,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of `base` pinned in docs/format.md.
    fn base_key() -> CacheKey {
        CacheKey::parse("d5faf9f730541461609742148087aa953b0492231d977dd9941325ba242143b8").unwrap()
    }

    #[test]
    fn action_digest_is_pinned() {
        let (action, action_bytes, command_bytes) = action_for_key(Function::Sha256, &base_key());
        assert_eq!(Function::Sha256.digest(&action_bytes), action);
        assert_eq!(
            action.to_string(),
            "8b436043ffd8dad58f72daf119ce098415b35e861d0e9f585e7d223dca8c2cdb/138"
        );
        assert_eq!(
            Function::Sha256.digest(&command_bytes).to_string(),
            "cbca6cdcd32794121f8bb643018143f05b571f1cfa292b6bf3a5de14f66b19e1/109"
        );
        // Another key, another action; another space, another digest.
        let other = CacheKey::parse(&"0".repeat(64)).unwrap();
        assert_ne!(action_for_key(Function::Sha256, &other).0, action);
        assert_ne!(action_for_key(Function::Blake3, &base_key()).0, action);
    }

    #[test]
    fn foreign_entries_are_refused() {
        let good = reapi::ActionResult {
            output_directories: vec![reapi::OutputDirectory {
                path: ARTIFACT.into(),
                root_directory_digest: Some(Function::Sha256.digest(b"").to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(parse(&good).is_ok());
        let mut bad = good.clone();
        bad.exit_code = 2;
        assert!(parse(&bad).unwrap_err().contains("exit code 2"));
        let mut bad = good.clone();
        bad.output_directories[0].path = "out".into();
        assert!(parse(&bad).unwrap_err().contains("\"out\""));
        let mut bad = good.clone();
        bad.output_directories.clear();
        assert!(parse(&bad).unwrap_err().contains("without an artifact"));
        let mut bad = good;
        bad.output_directories[0].root_directory_digest = None;
        assert!(parse(&bad).unwrap_err().contains("root_directory_digest"));
    }
}
