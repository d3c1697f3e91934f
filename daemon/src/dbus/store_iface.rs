//! `org.ws.Store1` at `/org/ws`: the store itself, for `ws store` and scripts.

use std::collections::HashMap;
use std::sync::Arc;

use treediff::CaptureMode;
use treediff::checkout::CheckoutMode;
use zbus::zvariant::OwnedValue;

use super::args::{bounded, counts, digest, fd_path, received};
use super::{DbusError, Shared};
use crate::manager::{Caller, ImportOptions, MountPoint};

/// The store interface of one connection.
#[derive(Debug)]
pub struct StoreIface {
    shared: Arc<Shared>,
    caller: Caller,
}

impl StoreIface {
    pub(super) fn new(shared: Arc<Shared>, caller: Caller) -> StoreIface {
        StoreIface { shared, caller }
    }
}

/// The most ignore patterns an import takes.
const MAX_PATTERNS: usize = 1024;

/// Import options from `a{sv}`: `mode` (s: "source" or "buildtree"), `ignore`
/// (as: gitignore patterns), `threads` (u). Anything else is refused by name.
fn import_options(options: HashMap<String, OwnedValue>) -> Result<ImportOptions, DbusError> {
    let invalid = |key: &str, problem: &str| {
        DbusError::InvalidArgument(format!("the import option {key:?}: {problem}"))
    };
    let mut import = ImportOptions {
        record: true,
        ..ImportOptions::default()
    };
    for (key, value) in options {
        match key.as_str() {
            "mode" => {
                let mode =
                    String::try_from(value).map_err(|_| invalid(&key, "expected a string"))?;
                import.mode = match mode.as_str() {
                    "source" => CaptureMode::Source,
                    "buildtree" => CaptureMode::Buildtree,
                    _ => return Err(invalid(&key, "expected \"source\" or \"buildtree\"")),
                };
            }
            "ignore" => {
                let patterns = Vec::<String>::try_from(value)
                    .map_err(|_| invalid(&key, "expected a list of strings"))?;
                if patterns.len() > MAX_PATTERNS {
                    return Err(invalid(&key, &format!("at most {MAX_PATTERNS} patterns")));
                }
                for pattern in &patterns {
                    bounded("ignore pattern", pattern)?;
                }
                import.ignore = patterns;
            }
            "threads" => {
                let threads = u32::try_from(value).map_err(|_| invalid(&key, "expected a u32"))?;
                import.threads = Some((threads as usize).clamp(1, 64));
            }
            _ => {
                let shown = bounded("option name", &key)
                    .map(str::to_owned)
                    .unwrap_or_default();
                return Err(DbusError::InvalidArgument(format!(
                    "unknown import option {shown:?}; known: mode, ignore, threads"
                )));
            }
        }
    }
    Ok(import)
}

#[zbus::interface(name = "org.ws.Store1")]
impl StoreIface {
    /// Imports the directory `dir` (a descriptor the client opened; read with the
    /// caller's permissions) and records the tree as imported. Options: `mode`
    /// ("source" or "buildtree"), `ignore` (gitignore patterns), `threads`.
    /// Returns the tree's digest and counts ("files", "dirs", "symlinks",
    /// "bytes", "hashed_files", "hashed_bytes", "cache_hits").
    async fn import(
        &self,
        dir: zbus::zvariant::OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, HashMap<String, u64>), DbusError> {
        let options = import_options(options)?;
        let dir = received(dir);
        let caller = self.caller;
        let (tree, stats) = self
            .shared
            .run(move |m| m.import_source(caller, &fd_path(&dir), &options))
            .await?;
        Ok((
            tree.to_string(),
            counts([
                ("files", stats.files),
                ("dirs", stats.dirs),
                ("symlinks", stats.symlinks),
                ("bytes", stats.bytes),
                ("hashed_files", stats.hashed_files),
                ("hashed_bytes", stats.hashed_bytes),
                ("cache_hits", stats.cache_hits),
            ]),
        ))
    }

    /// Writes the tree `tree` into `dest`, an empty directory the caller owns (a
    /// descriptor), with the caller's permissions. The tree must be the
    /// caller's to read: one they imported, built or hold in a workspace (root:
    /// any); else AccessDenied, whether it exists or not. `mode`: "copy",
    /// "reflink" or "hardlink" (the daemon's own user only: the links share the
    /// store's files). Returns counts ("files", "dirs", "symlinks", "bytes",
    /// "hardlinked", "reflinked", "copied").
    async fn checkout(
        &self,
        tree: String,
        dest: zbus::zvariant::OwnedFd,
        mode: String,
    ) -> Result<HashMap<String, u64>, DbusError> {
        let tree = digest("tree", &tree)?;
        let mode = match bounded("mode", &mode)? {
            "copy" | "" => CheckoutMode::Copy,
            "reflink" => CheckoutMode::Reflink,
            "hardlink" => CheckoutMode::Hardlink,
            other => {
                return Err(DbusError::InvalidArgument(format!(
                    "unknown checkout mode {other:?}; known: copy, reflink, hardlink"
                )));
            }
        };
        let dest = MountPoint::from_fd(received(dest));
        let caller = self.caller;
        let stats = self
            .shared
            .run(move |m| m.store_checkout(caller, tree, &dest, mode))
            .await?;
        Ok(counts([
            ("files", stats.files),
            ("dirs", stats.dirs),
            ("symlinks", stats.symlinks),
            ("bytes", stats.bytes),
            ("hardlinked", stats.hardlinked),
            ("reflinked", stats.reflinked),
            ("copied", stats.copied),
        ]))
    }

    /// The changes from `old` to `new` (both the caller's to read, as for
    /// `Checkout`), directories added or deleted expanded to their files: (path,
    /// change, patch), the change one of "added", "deleted", "modified",
    /// "mode_changed", "type_changed"; the patch is a unified diff with
    /// `context` lines when `patches`, else "".
    async fn diff(
        &self,
        old: String,
        new: String,
        patches: bool,
        context: u32,
    ) -> Result<Vec<(String, String, String)>, DbusError> {
        let (old, new) = (digest("old tree", &old)?, digest("new tree", &new)?);
        let context = context.min(1000) as usize;
        let caller = self.caller;
        let changes = self
            .shared
            .run(move |m| m.store_diff(caller, old, new, patches, context))
            .await?;
        Ok(changes
            .into_iter()
            .map(|c| (c.path, c.change.to_owned(), c.patch.unwrap_or_default()))
            .collect())
    }

    /// Checks every object in the store, and the trees `trees` besides every
    /// imported one (root, or the daemon's own user). Returns whether all is
    /// well, each problem as (kind, fields) — the kinds and fields of `ws store
    /// fsck --json`, plus "message", the problem as a sentence — and counts
    /// ("objects", "bytes", "trees", "directories").
    async fn fsck(
        &self,
        trees: Vec<String>,
    ) -> Result<
        (
            bool,
            Vec<(String, HashMap<String, String>)>,
            HashMap<String, u64>,
        ),
        DbusError,
    > {
        let roots = trees
            .iter()
            .map(|t| digest("tree", t))
            .collect::<Result<Vec<_>, _>>()?;
        let caller = self.caller;
        let report = self
            .shared
            .run(move |m| m.store_fsck(caller, &roots))
            .await?;
        let problems: Vec<_> = report.problems.iter().map(problem_fields).collect();
        Ok((
            problems.is_empty(),
            problems,
            counts([
                ("objects", report.objects_checked),
                ("bytes", report.bytes_checked),
                ("trees", report.trees_checked),
                ("directories", report.dirs_checked),
            ]),
        ))
    }
}

/// A problem as (kind, fields as text, with "message").
fn problem_fields(problem: &treediff::fsck::Problem) -> (String, HashMap<String, String>) {
    let mut fields = HashMap::from([("message".to_owned(), problem.to_string())]);
    let mut kind = String::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(problem) {
        for (key, value) in map {
            let text = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            if key == "kind" {
                kind = text;
            } else {
                fields.insert(key, text);
            }
        }
    }
    (kind, fields)
}
