//! Opening a snapshotter of a chosen backend, after checking that it can work here.

use std::path::Path;
use std::sync::Arc;

use treediff::Store;

use crate::error::SnapshotError;
use crate::info::Owner;
use crate::layered::{Driver, LayeredOptions, LayeredSnapshotter};
use crate::mirror::{MirrorOptions, MirrorSnapshotter};
use crate::probe::{BackendKind, Probe};
use crate::records::RecordStore;
use crate::snapshotter::Snapshotter;

/// Opens the `kind` snapshotter in `dir`, its files given to `owner` if set, or
/// fails with [`SnapshotError::Unavailable`] saying what this machine lacks (per
/// `probe`).
pub fn open(
    kind: BackendKind,
    probe: &Probe,
    dir: &Path,
    records: Arc<dyn RecordStore>,
    store: Arc<Store>,
    owner: Option<Owner>,
) -> Result<Box<dyn Snapshotter>, SnapshotError> {
    probe
        .check(kind)
        .map_err(|reason| SnapshotError::Unavailable {
            backend: kind.name(),
            reason,
        })?;
    Ok(match kind {
        BackendKind::Overlayfs => Box::new(LayeredSnapshotter::open(
            dir,
            records,
            store,
            LayeredOptions {
                owner,
                ..LayeredOptions::new(Driver::Kernel {
                    userxattr: probe.in_user_namespace,
                })
            },
        )?),
        BackendKind::FuseOverlayfs => Box::new(LayeredSnapshotter::open(
            dir,
            records,
            store,
            LayeredOptions {
                owner,
                ..LayeredOptions::new(Driver::Fuse)
            },
        )?),
        BackendKind::Mirror => Box::new(MirrorSnapshotter::open(
            dir,
            records,
            store,
            MirrorOptions { owner },
        )?),
    })
}
