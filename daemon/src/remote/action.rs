//! Build results in the action cache: a cache key as an Action digest, and a
//! build's trees, log and outcome as an `ActionResult` (see `docs/format.md`,
//! "Remote cache entries").
//!
//! The Action is a real REAPI `Action` whose `command_digest` names a `Command`
//! with the arguments `["ws-build", "--format=1", "<key>"]` and the output paths
//! `["artifact", "buildtree", "sources"]`, and whose `input_root_digest` is the empty
//! directory; nothing else is set. Its digest (in the remote's space) is the
//! action cache key. Both messages are uploaded with the result, so a server or
//! a person browsing it can tell what an entry is.
//!
//! The `ActionResult` holds the install root as the output directory `artifact`,
//! the buildtree as `buildtree` and the source tree built as `sources`, each by
//! `root_directory_digest` (REAPI 2.3's directory form: no `Tree` message, which
//! would repeat every directory and can pass 4 MiB), the log as
//! `stdout_digest`, the failure message inline in `stderr_raw`, `exit_code` 0
//! for a success, 1 for a failure, and what else the local record keeps (the
//! element, the dependency hash, commands run) as JSON in one
//! `execution_metadata.auxiliary_metadata` entry of type [`BUILD_INFO_TYPE`].

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
/// The output directory holding the source tree.
const SOURCES: &str = "sources";
/// The type URL of the `Any` holding [`BuildInfo`] as JSON.
pub const BUILD_INFO_TYPE: &str = "ws.invalid/ws.BuildInfo.v1+json";

/// What a build under a key left, in local digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildResult {
    /// How it ended.
    pub outcome: Outcome,
    /// The install root's tree (a success has one).
    pub artifact: Option<Digest>,
    /// The buildtree's tree.
    pub buildtree: Option<Digest>,
    /// The source tree built.
    pub sources: Option<Digest>,
    /// The build log, a blob.
    pub log: Option<Digest>,
    /// Why it failed.
    pub failure: Option<String>,
    /// What else the local record keeps.
    pub info: BuildInfo,
}

/// The parts of a build's record that are not trees, as an entry carries them.
/// Every field has a default, so that an entry lacking one still reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BuildInfo {
    /// The element built (for display).
    pub element: String,
    /// The dependency hash it was built with.
    pub dependency_hash: String,
    /// How many commands ran.
    pub commands_run: u32,
    /// Whether it continued from an earlier buildtree.
    pub incremental: bool,
    /// When it ended, in seconds since the epoch.
    pub time: u64,
}

/// What the action cache had for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
// Returned once per lookup and matched at once, never stored: boxing would
// only cost an allocation.
#[allow(clippy::large_enum_variant)]
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
        output_paths: vec![
            ARTIFACT.to_owned(),
            BUILDTREE.to_owned(),
            SOURCES.to_owned(),
        ],
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
        let trees = [
            (ARTIFACT, result.artifact),
            (BUILDTREE, result.buildtree),
            (SOURCES, result.sources),
        ];
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
            execution_metadata: Some(reapi::ExecutedActionMetadata {
                auxiliary_metadata: vec![bazel_remote_apis::google::protobuf::Any {
                    type_url: BUILD_INFO_TYPE.to_owned(),
                    value: serde_json::to_vec(&result.info).expect("build info serializes"),
                }],
                ..Default::default()
            }),
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
        match self.find_result(key)? {
            Found::Entry(entry) => self.fetch_result(store, map, &entry, Parts::ALL),
            Found::Miss(reason) => Ok(Lookup::Miss(reason)),
        }
    }

    /// Looks `key` up in the action cache without fetching anything: what the
    /// entry says, to decide what to pull ([`Remote::fetch_result`]). An entry
    /// not as ws writes it is a miss.
    pub fn find_result(&self, key: &CacheKey) -> Result<Found, RemoteError> {
        let (action, _, _) = action_for_key(self.function(), key);
        let Some(entry) = self.block_on(self.client.get_action_result(action))? else {
            return Ok(Found::Miss(format!("no entry for action {action}")));
        };
        Ok(match parse(&entry) {
            Ok(parsed) => Found::Entry(Entry {
                key: key.clone(),
                parsed,
            }),
            Err(problem) => Found::Miss(format!("entry {action}: {problem}")),
        })
    }

    /// Pulls the `parts` of `entry` into the store, in one transaction: all of
    /// them, verified, or nothing. A blob missing or corrupt on the server is a
    /// [`Lookup::Miss`]; the parts not asked for are `None` in the result.
    pub fn fetch_result(
        &self,
        store: &Store,
        map: &DigestMap,
        entry: &Entry,
        parts: Parts,
    ) -> Result<Lookup, RemoteError> {
        let parsed = &entry.parsed;
        let txn = store.begin()?;
        let mut puller = Puller::new(self, map, &txn);
        let pulled = (|| {
            let mut tree = |remote: Option<RemoteDigest>, wanted: bool| {
                remote
                    .filter(|_| wanted)
                    .map(|r| puller.tree(r))
                    .transpose()
            };
            let artifact = tree(parsed.artifact, parts.artifact)?;
            let buildtree = tree(parsed.buildtree, parts.buildtree)?;
            let sources = tree(parsed.sources, parts.sources)?;
            let log = match parsed.log.filter(|_| parts.log) {
                Some(r) => Some(puller.blob(r)?),
                None => None,
            };
            Ok::<_, RemoteError>(BuildResult {
                outcome: parsed.outcome,
                artifact,
                buildtree,
                sources,
                log,
                failure: parsed.failure.clone(),
                info: parsed.info.clone(),
            })
        })();
        let result = match pulled {
            Ok(result) => result,
            Err(e) if e.is_miss() => {
                tracing::info!(url = self.url(), key = %entry.key, error = %e, "remote cache entry unusable");
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

/// What [`Remote::find_result`] found.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // as for Lookup
pub enum Found {
    /// An entry as ws writes it; nothing is fetched yet.
    Entry(Entry),
    /// None, or one ws cannot use (the reason is for logs).
    Miss(String),
}

/// An action cache entry for a key, read but not fetched.
#[derive(Debug)]
pub struct Entry {
    key: CacheKey,
    parsed: Parsed,
}

impl Entry {
    /// How the build ended.
    pub fn outcome(&self) -> Outcome {
        self.parsed.outcome
    }

    /// Whether it has a buildtree.
    pub fn has_buildtree(&self) -> bool {
        self.parsed.buildtree.is_some()
    }
}

/// Which parts of an entry to pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// The install root.
    pub artifact: bool,
    /// The buildtree (the largest part, wanted only to continue a build).
    pub buildtree: bool,
    /// The source tree.
    pub sources: bool,
    /// The log.
    pub log: bool,
}

impl Parts {
    /// Everything.
    pub const ALL: Parts = Parts {
        artifact: true,
        buildtree: true,
        sources: true,
        log: true,
    };
}

/// An entry's fields in the remote's space.
#[derive(Debug)]
struct Parsed {
    outcome: Outcome,
    artifact: Option<RemoteDigest>,
    buildtree: Option<RemoteDigest>,
    sources: Option<RemoteDigest>,
    log: Option<RemoteDigest>,
    failure: Option<String>,
    info: BuildInfo,
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
    let (mut artifact, mut buildtree, mut sources) = (None, None, None);
    for dir in &entry.output_directories {
        let slot = match dir.path.as_str() {
            ARTIFACT => &mut artifact,
            BUILDTREE => &mut buildtree,
            SOURCES => &mut sources,
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
    let info = match entry.execution_metadata.as_ref().and_then(|m| {
        m.auxiliary_metadata
            .iter()
            .find(|any| any.type_url == BUILD_INFO_TYPE)
    }) {
        Some(any) => serde_json::from_slice(&any.value)
            .map_err(|e| format!("its {BUILD_INFO_TYPE} metadata does not read: {e}"))?,
        None => BuildInfo::default(),
    };
    Ok(Parsed {
        outcome,
        artifact,
        buildtree,
        sources,
        log: digest(entry.stdout_digest.as_ref(), "stdout")?,
        failure,
        info,
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
            "041e04c2152252aec628e3bd527b1a50364841661041f0fe48846e145309af17/138"
        );
        assert_eq!(
            Function::Sha256.digest(&command_bytes).to_string(),
            "218869c753bca1e51364f8667e11adbb3933e24f16aacb71d9cdcf5e17492894/118"
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
