//! `gc`: drop the blobs and layers nothing can reach, then evict cached refs
//! least recently used first while the store is over its quota.
//!
//! # Roots
//!
//! What stays: every live workspace's base and source trees and every tree its op
//! log names (undo needs them); every committed snapshot's tree; every ref; the
//! trees `ws store import` recorded. Base snapshots (the checkouts workspaces are
//! layered on) that no workspace sits on are removed, and so are buildtree
//! snapshots that no workspace continues from and whose artifact record lost its
//! `buildtree/` ref (evicted) or was replaced: without that, every build's
//! buildtree would stay a root for good.
//!
//! # Running transactions
//!
//! Every operation that writes to the store holds the gc lock shared from its first
//! write until the batch that references what it wrote; gc holds it exclusively
//! from the mark to the end of the sweep. So nothing written but not yet referenced
//! can be swept, and gc waits for running operations (and they for it).

use std::collections::HashSet;

use serde::Serialize;
use treediff::Digest;
use treediff::gc::SweepStats;

use super::{Caller, Manager, Snapper};
use crate::error::Error;
use overlay::BackendKind;

/// How to collect.
#[derive(Clone, Copy, Debug, Default)]
pub struct GcOptions {
    /// The most the store's objects may take, in bytes; refs of evictable kinds
    /// that nothing else references are evicted, least recently used first,
    /// until it holds (or nothing evictable is left).
    pub quota: Option<u64>,
}

/// What gc did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// Object files removed and kept, with their bytes (all sweeps together;
    /// `kept_*` as after the last).
    #[serde(flatten)]
    pub sweep: SweepStats,
    /// Base snapshots removed.
    pub removed_snapshots: u64,
    /// Dependency sysroots removed (made again by the next build that needs one).
    pub removed_sysroots: u64,
    /// Refs evicted for the quota, oldest use first.
    pub evicted_refs: Vec<String>,
    /// Whether the store fits the quota (true without one).
    pub within_quota: bool,
}

impl Manager {
    /// Collects garbage; see the module documentation. Root only: the store and
    /// the layers are shared by every user.
    pub fn gc(&self, caller: Caller, options: GcOptions) -> Result<GcReport, Error> {
        if caller.uid != 0 && caller.uid != self.euid {
            return Err(Error::Denied {
                problem: "gc works on the store every user shares; run it as root".to_owned(),
            });
        }
        let mut report = GcReport {
            removed_snapshots: self.remove_unused_bases()?,
            ..GcReport::default()
        };
        loop {
            report.removed_snapshots += self.remove_unused_buildtrees()?;
            report.removed_sysroots += self.remove_unused_sysroots()?;
            let stats = self.mark_and_sweep()?;
            report.sweep.removed_objects += stats.removed_objects;
            report.sweep.removed_bytes += stats.removed_bytes;
            report.sweep.kept_objects = stats.kept_objects;
            report.sweep.kept_bytes = stats.kept_bytes;
            let Some(quota) = options.quota else {
                report.within_quota = true;
                break;
            };
            if stats.kept_bytes <= quota {
                report.within_quota = true;
                break;
            }
            let evicted = self.evict(stats.kept_bytes - quota)?;
            if evicted.is_empty() {
                break;
            }
            report.evicted_refs.extend(evicted);
        }
        tracing::info!(
            removed = report.sweep.removed_objects,
            bytes = report.sweep.removed_bytes,
            snapshots = report.removed_snapshots,
            evicted = report.evicted_refs.len(),
            "collected garbage"
        );
        Ok(report)
    }

    /// Every tree that must stay (see the module documentation).
    pub(super) fn roots(&self) -> Result<Vec<Digest>, Error> {
        let workspaces = self.list(Caller { uid: 0, gid: 0 })?;
        let mut roots = HashSet::new();
        for ws in &workspaces {
            roots.insert(ws.base_source_digest);
            roots.insert(ws.source_digest);
            if let Some(pending) = &ws.pending {
                roots.extend([pending.from, pending.to]);
            }
            for entry in self.log_of(&ws.id)? {
                roots.extend(entry.before);
                roots.extend(entry.after);
            }
        }
        for (_, snapper) in self.all_snappers(&workspaces)? {
            snapper
                .snap
                .walk(&mut |info| roots.extend(info.tree))
                .map_err(Error::snapshot(""))?;
        }
        roots.extend(self.refs()?.into_iter().map(|r| r.tree));
        roots.extend(
            self.store
                .recorded_trees()
                .map_err(Error::store_on("the store".into()))?,
        );
        let mut roots: Vec<Digest> = roots.into_iter().collect();
        roots.sort();
        Ok(roots)
    }

    fn mark_and_sweep(&self) -> Result<SweepStats, Error> {
        let _exclusive = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
        // Remembered imports may name trees this sweep removes: the next
        // build walks its sources again.
        if let Some(watch) = &self.source_watch {
            watch.forget_trees();
        }
        let roots = self.roots()?;
        let reachable = treediff::gc::mark(&self.store, &roots).map_err(Error::store_on(
            "gc: a root tree does not read, so nothing was removed; `ws fsck` says more".to_owned(),
        ))?;
        treediff::gc::sweep(&self.store, &reachable).map_err(Error::store_on("gc".to_owned()))
    }

    /// Removes the base snapshots no workspace sits on; returns how many.
    fn remove_unused_bases(&self) -> Result<u64, Error> {
        let _exclusive = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
        let workspaces = self.list(Caller { uid: 0, gid: 0 })?;
        let used: HashSet<&str> = workspaces
            .iter()
            .map(|w| w.base_snapshot.as_str())
            .collect();
        let mut removed = 0;
        for (_, snapper) in self.all_snappers(&workspaces)? {
            let mut unused = Vec::new();
            snapper
                .snap
                .walk(&mut |info| {
                    if info.key.starts_with("source-") && !used.contains(info.key.as_str()) {
                        unused.push(info.key.clone());
                    }
                })
                .map_err(Error::snapshot(""))?;
            removed += self.remove_snapshots(&snapper, unused)?;
        }
        Ok(removed)
    }

    /// Removes the buildtree snapshots nothing needs any more: no workspace
    /// continues from them, and the artifact record that named them was
    /// replaced or lost its `buildtree/` ref (evicted for the quota). Such a
    /// record forgets its buildtree first, so that nothing reaches for it later.
    /// A snapshot that others sit on stays (its removal is refused). Returns how
    /// many went.
    fn remove_unused_buildtrees(&self) -> Result<u64, Error> {
        let _exclusive = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
        let workspaces = self.list(Caller { uid: 0, gid: 0 })?;
        let refs: HashSet<String> = self.refs()?.into_iter().map(|r| r.name).collect();
        // (backend, owner, snapshot) of every buildtree still needed.
        let mut used: HashSet<(BackendKind, u32, String)> = HashSet::new();
        for ws in &workspaces {
            if let Some(bt) = &ws.buildtree {
                used.insert((ws.backend, ws.owner, bt.snapshot.clone()));
            }
        }
        let mut forgotten = rocksdb::WriteBatch::default();
        for mut record in self.artifacts()? {
            let Some(snapshot) = record.snapshot.clone() else {
                continue;
            };
            if refs.contains(&record.buildtree_ref()) {
                used.insert((snapshot.backend, snapshot.owner, snapshot.name));
            } else {
                record.buildtree = None;
                record.snapshot = None;
                record.buildtree_size = 0;
                self.put_artifact_record(&mut forgotten, &record);
            }
        }
        self.db.write(forgotten)?;
        let mut removed = 0;
        for (dir, snapper) in self.all_snappers(&workspaces)? {
            let Some((backend, owner)) = super::parse_snapper_dir(&dir) else {
                continue;
            };
            let owner = owner.unwrap_or(self.euid);
            let mut unused = Vec::new();
            snapper
                .snap
                .walk(&mut |info| {
                    if info.key.starts_with("buildtree-")
                        && !used.contains(&(backend, owner, info.key.clone()))
                    {
                        unused.push(info.key.clone());
                    }
                })
                .map_err(Error::snapshot(""))?;
            removed += self.remove_snapshots(&snapper, unused)?;
        }
        Ok(removed)
    }

    /// Removes the committed snapshots `keys` of `snapper`, each in its own
    /// transaction; returns how many went. One that still has children or a
    /// mount is in use and stays; a parent goes once its children have, so the
    /// passes go on until one removes nothing (a chain of unneeded buildtrees
    /// goes whole).
    fn remove_snapshots(&self, snapper: &Snapper, mut keys: Vec<String>) -> Result<u64, Error> {
        let mut removed = 0;
        loop {
            let before = keys.len();
            let mut kept = Vec::new();
            for key in keys {
                let mut txn = snapper.snap.begin();
                if let Err(e) = snapper.snap.remove(&mut txn, &key) {
                    tracing::debug!(snapshot = key, error = %e, "kept");
                    kept.push(key);
                    continue;
                }
                self.commit_snapshots(snapper, txn, "", |_| {}, || {})?;
                removed += 1;
            }
            keys = kept;
            if keys.is_empty() || keys.len() == before {
                return Ok(removed);
            }
        }
    }

    /// Removes the dependency sysroots (`<state>/sysroots/`) no running build or
    /// shell uses: each is a hardlink checkout of a merged tree, made again when
    /// a build needs it, and its links would keep swept blobs' space in use. They
    /// are moved aside at once and deleted in the background.
    fn remove_unused_sysroots(&self) -> Result<u64, Error> {
        let _exclusive = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
        let root = self.dirs.root().join("sysroots");
        let in_use: HashSet<std::path::PathBuf> = self
            .running_builds()?
            .into_iter()
            .filter_map(|b| b.sysroot)
            .collect();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(Error::Io {
                    op: "list",
                    path: root,
                    source,
                });
            }
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if in_use.contains(&path) || name.to_string_lossy().starts_with(".trash-") {
                continue;
            }
            let aside = root.join(format!(".trash-{}", super::new_id()));
            match std::fs::rename(&path, &aside) {
                Ok(()) => {
                    super::build::stage::trash(&aside);
                    removed += 1;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove the sysroot")
                }
            }
        }
        Ok(removed)
    }

    /// Evicts evictable refs no workspace references, least recently used first,
    /// until their sizes add up to `excess`; returns their names (none if nothing
    /// is evictable).
    fn evict(&self, excess: u64) -> Result<Vec<String>, Error> {
        let workspaces = self.list(Caller { uid: 0, gid: 0 })?;
        let referenced: HashSet<&str> = workspaces
            .iter()
            .filter_map(|w| w.artifact_ref.as_deref())
            .collect();
        let mut candidates: Vec<_> = self
            .refs()?
            .into_iter()
            .filter(|r| r.kind.evictable() && !referenced.contains(r.name.as_str()))
            .collect();
        candidates.sort_by_key(|r| (r.last_used, r.name.clone()));
        let mut freed = 0;
        let mut names = Vec::new();
        for r in candidates {
            if freed >= excess {
                break;
            }
            freed += r.size.max(1);
            names.push(r.name);
        }
        self.drop_refs(&names)?;
        Ok(names)
    }
}
