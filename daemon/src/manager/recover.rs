//! Recovery at start: reconcile the database, snapshot directories and mounts.

use overlay::BackendKind;
use rocksdb::WriteBatch;

use super::mount_point::MountNote;
use super::{Caller, Manager, is_mounted};
use crate::error::Error;
use crate::workspace::{State, Workspace};

impl Manager {
    /// Reconciles the database, the snapshot directories and the mount table after
    /// a start: snapshot directories that no record names (a crash before a
    /// commit's batch) are collected, with any mount on them; every open
    /// workspace's view is mounted again if it is not; a workspace whose view cannot
    /// be mounted is marked unmounted (and tried again at the next start). A
    /// fuse-overlayfs view still mounted is served by a server this process did
    /// not start: it is taken over (see `take_over_fuse_view`).
    pub fn recover(&self) -> Result<(), Error> {
        self.recover_builds()?;
        let workspaces = self.list(Caller { uid: 0, gid: 0 })?;
        let snappers = self.all_snappers(&workspaces)?;
        for (name, snapper) in &snappers {
            let cleaned = snapper.snap.cleanup().map_err(Error::snapshot(""))?;
            if !cleaned.orphans.is_empty() {
                tracing::info!(
                    snapshotter = name,
                    orphans = cleaned.orphans.len(),
                    unmounted = cleaned.unmounted.len(),
                    "collected what a crash left"
                );
            }
            for (orphan, why) in &cleaned.left {
                tracing::warn!(
                    snapshotter = name,
                    orphan = %orphan.display(),
                    why = %why,
                    "left what a crash left: its mount could not be unmounted; tried again at the next start"
                );
            }
        }
        self.unmount_unrecorded(&workspaces);
        // Before the views are mounted again: it may unmount some.
        self.verify_layers(&snappers, &workspaces)?;
        for mut ws in workspaces {
            if !ws.mounted_by_daemon || (is_mounted(&ws.path) && !self.take_over_fuse_view(&ws)?) {
                continue;
            }
            let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
            let mounted = snapper
                .snap
                .mounts(&ws.snapshot)
                .map_err(Error::snapshot(&ws.name))
                .and_then(|plan| {
                    let target = self.reopen_target(&ws.path, ws.owner)?;
                    // From here on the mount point is reached only through `target`.
                    treediff::race_point("recover-before-mount");
                    self.mount_view(&ws.name, &plan, &target, true)
                });
            let state = match &mounted {
                Ok(mounted) => {
                    ws.mount_id = mounted.mount_id;
                    State::Open
                }
                Err(e) => {
                    tracing::error!(workspace = ws.name, error = %e, "cannot mount the view again");
                    State::Unmounted
                }
            };
            if state != ws.state || mounted.is_ok() {
                ws.state = state;
                let mut batch = WriteBatch::default();
                self.put_workspace(&mut batch, &mut ws, None);
                self.db.write(batch)?;
            }
            if let Ok(mounted) = mounted {
                mounted.settled();
            }
        }
        self.finish_pending_writes()
    }

    /// Unmounts the mounts that the daemon made and no batch recorded (a crash
    /// came between: see `MountNote`), each by the mount id its note names,
    /// so nothing else is; a mount still in use keeps its note, for the next
    /// start. Removes the staging directories a crash left, after unmounting
    /// what is on them (the daemon's own directories).
    fn unmount_unrecorded(&self, workspaces: &[Workspace]) {
        let Ok(entries) = std::fs::read_dir(self.dirs.root().join("mounting")) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "view") {
                if is_mounted(&path) {
                    let _ = overlay::unmount(&path);
                }
                let _ = std::fs::remove_dir(&path);
                continue;
            }
            let recorded = |id| workspaces.iter().any(|w| w.mount_id == Some(id));
            if let Some((id, view)) = MountNote::read(&path).filter(|(id, _)| !recorded(*id)) {
                match overlay::unmount_checked(&view, id) {
                    Ok(()) => {
                        tracing::info!(path = %view.display(), "unmounted a view a crash left unrecorded")
                    }
                    Err(e @ overlay::SnapshotError::Busy { .. }) => {
                        tracing::warn!(error = %e, "a view a crash left unrecorded is in use; tried again at the next start");
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "a view a crash left unrecorded is gone"),
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Whether the still mounted view of `ws` is to be mounted again. A
    /// fuse-overlayfs view that an earlier daemon mounted is served by a server
    /// this one cannot signal (or by none, if it died): it is unmounted, by the
    /// mount id recorded so that nothing else is, and its server exits. A view
    /// that cannot be unmounted (files are open in it) stays with its server
    /// and is adopted (its layers count as in use and are flushed through it)
    /// until it is closed. Views of the other backends, and those recorded
    /// without a mount id, stay as they are.
    fn take_over_fuse_view(&self, ws: &Workspace) -> Result<bool, Error> {
        let Some(id) = ws
            .mount_id
            .filter(|_| ws.backend == BackendKind::FuseOverlayfs)
        else {
            return Ok(false);
        };
        match overlay::unmount_checked(&ws.path, id) {
            Ok(()) => return Ok(true),
            Err(e) => {
                tracing::warn!(workspace = ws.name, owner = ws.owner, error = %e, "a fuse-overlayfs view stays with the server that mounted it until it is closed")
            }
        }
        let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
        match snapper.snap.mounts(&ws.snapshot) {
            Ok(plan) => overlay::adopt_fuse_view(&plan, &ws.path, id),
            Err(e) => {
                tracing::error!(workspace = ws.name, error = %e, "cannot read the view's layers")
            }
        }
        Ok(false)
    }

    /// Finishes the writes through views that a crash cut off (see
    /// `view_write`). One that cannot be finished now (its view is not mounted)
    /// stays recorded, and the next operation on its workspace finishes it.
    fn finish_pending_writes(&self) -> Result<(), Error> {
        for ws in self.list(Caller { uid: 0, gid: 0 })? {
            if ws.pending.is_none() {
                continue;
            }
            let name = ws.name.clone();
            match self.finish_pending(ws) {
                Ok(_) => {
                    tracing::info!(
                        workspace = name,
                        "finished a write through the view that a crash cut off"
                    )
                }
                Err(e) => {
                    tracing::error!(workspace = name, error = %e, "cannot finish a write through the view that a crash cut off; the next operation on the workspace tries again")
                }
            }
        }
        Ok(())
    }

    /// Removes what the builds that were running at a crash left: their views
    /// are unmounted and their active snapshots removed, so every workspace is
    /// as before its build; their directories go to the trash.
    fn recover_builds(&self) -> Result<(), Error> {
        for build in self.running_builds()? {
            if is_mounted(&build.mount) {
                let _ = overlay::unmount(&build.mount);
            }
            let snapper = self.snapper(build.backend, build.owner, build.group)?;
            let mut txn = snapper.snap.begin();
            match snapper.snap.remove(&mut txn, &build.snapshot) {
                Ok(()) | Err(overlay::SnapshotError::NotFound { .. }) => {}
                Err(e) => return Err(Error::snapshot(&build.element)(e)),
            }
            self.commit_snapshots(
                &snapper,
                txn,
                &build.element,
                |batch| self.end_running(batch, &build.id),
                || {},
            )?;
            tracing::info!(
                build = build.id,
                element = build.element,
                "removed a build a crash interrupted"
            );
        }
        let builds = self.dirs.root().join("builds");
        if let Ok(entries) = std::fs::read_dir(&builds) {
            for entry in entries.flatten() {
                let path = entry.path();
                if is_mounted(&path.join("build")) {
                    let _ = overlay::unmount(&path.join("build"));
                }
                super::build::stage::trash(&path);
            }
        }
        Ok(())
    }
}
