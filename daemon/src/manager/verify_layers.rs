//! Layers an older release left where their owners could change them, checked
//! against their trees once.
//!
//! Before the state directory was private, a user could write the committed
//! layers of their own workspaces (`snapshots/` was 0755 and the layers theirs),
//! which the daemon takes to hold their recorded trees: what a view shows below
//! its edits, what a build continues from. `state_dir::modes::prepare` leaves a
//! mark when it finds `snapshots/` open; at the next start every committed layer
//! is read again, and one that differs is replaced by a fresh checkout of its
//! tree from the store (`Snapshotter::renew`), after the views on its
//! snapshotter are unmounted (recovery mounts them again, on the new layers).
//! The mark goes once every layer holds its tree; what could not be done (a view
//! in use) is tried again at the next start.

use std::sync::Arc;

use super::{Manager, Snapper, is_mounted};
use crate::error::Error;
use crate::state_dir::modes::VERIFY_LAYERS;
use crate::workspace::Workspace;

impl Manager {
    /// See the module doc. Errors other than the database's are logged, and
    /// leave the mark for the next start.
    pub(super) fn verify_layers(
        &self,
        snappers: &[(String, Arc<Snapper>)],
        workspaces: &[Workspace],
    ) -> Result<(), Error> {
        let mark = self.dirs.root().join(VERIFY_LAYERS);
        if std::fs::symlink_metadata(&mark).is_err() {
            return Ok(());
        }
        tracing::info!(
            "the state directory was open to other users: checking every layer against its tree"
        );
        let mut done = true;
        for (name, snapper) in snappers {
            done &= self.verify_snapper(name, snapper, workspaces)?;
        }
        if done && let Err(e) = std::fs::remove_file(&mark) {
            tracing::warn!(mark = %mark.display(), error = %e, "cannot remove the mark: the layers are checked again at the next start");
        }
        Ok(())
    }

    /// Checks the committed layers of one snapshotter and renews those that
    /// differ; `Ok(false)` if something is left for the next start.
    fn verify_snapper(
        &self,
        name: &str,
        snapper: &Arc<Snapper>,
        workspaces: &[Workspace],
    ) -> Result<bool, Error> {
        let mut committed = Vec::new();
        if let Err(e) = snapper.snap.walk(&mut |info| {
            if info.kind == overlay::Kind::Committed {
                committed.push(info.key.clone());
            }
        }) {
            tracing::error!(snapshotter = name, error = %e, "cannot list the layers to check");
            return Ok(false);
        }
        let mut changed = Vec::new();
        for key in committed {
            match snapper.snap.verify(&key) {
                Ok(None) => {}
                Ok(Some(found)) => changed.push((key, found)),
                Err(e) => {
                    tracing::error!(snapshotter = name, snapshot = key, error = %e, "cannot check a layer against its tree");
                    return Ok(false);
                }
            }
        }
        if changed.is_empty() {
            return Ok(true);
        }
        // The changed layers may be under any view of this snapshotter.
        for ws in workspaces {
            let same = self
                .snapper(ws.backend, ws.owner, ws.group)
                .is_ok_and(|s| Arc::ptr_eq(&s, snapper));
            if !same || !ws.mounted_by_daemon || !is_mounted(&ws.path) {
                continue;
            }
            let unmounted = match ws.mount_id {
                Some(id) => overlay::unmount_checked(&ws.path, id),
                None => overlay::unmount_listed(&ws.path, self.dirs.root()).map(|_| ()),
            };
            if let Err(e) = unmounted {
                tracing::error!(snapshotter = name, workspace = ws.name, owner = ws.owner, error = %e, "a layer was changed while the state directory was open, and a view on it cannot be unmounted to replace it; tried again at the next start");
                return Ok(false);
            }
        }
        let mut txn = snapper.snap.begin();
        for (key, found) in &changed {
            let renewed = snapper.snap.renew(&mut txn, key);
            match renewed {
                Ok(info) => tracing::warn!(
                    snapshotter = name,
                    snapshot = key,
                    recorded = %info.tree.map(|t| t.to_string()).unwrap_or_default(),
                    found = %found,
                    "a layer was changed while the state directory was open to other users: replaced by a checkout of its recorded tree"
                ),
                Err(e) => {
                    tracing::error!(snapshotter = name, snapshot = key, error = %e, "cannot replace a changed layer; tried again at the next start");
                    return Ok(false);
                }
            }
        }
        self.commit_snapshots(snapper, txn, name, |_| {}, || {})?;
        Ok(true)
    }
}
