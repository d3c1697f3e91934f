//! `Manager1.Push` and `Manager1.Pull`: their arguments read into a transfer
//! target and remote options, and their report as `a{sv}` (docs/dbus.md).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use zbus::zvariant::{OwnedValue, Value};

use super::args::{bool_options, bounded, dict, fd_path, received, remote_options};
use super::{DbusError, Shared};
use crate::manager::build::{TransferReport, TransferTarget};
use crate::manager::{Caller, Manager, RemoteOptions};
use crate::project::CacheKey;

/// What `Manager::push` and `Manager::pull` are.
type Transfer =
    fn(&Manager, Caller, TransferTarget, &RemoteOptions) -> Result<TransferReport, crate::Error>;

/// Runs `transfer` (a push or a pull, `what`) for `caller` on a blocking
/// thread: the request read from the method's arguments, the report returned.
pub(super) async fn run(
    shared: &Arc<Shared>,
    caller: Caller,
    what: &'static str,
    project: zbus::zvariant::OwnedFd,
    target: String,
    options: HashMap<String, OwnedValue>,
    transfer: Transfer,
) -> Result<HashMap<String, OwnedValue>, DbusError> {
    let project = received(project);
    let (target, remotes) = request(what, &project, &target, options)?;
    let report = shared
        .run(move |m| {
            let report = transfer(m, caller, target, &remotes);
            // The project's descriptor lives until the manager has read it.
            drop(project);
            report
        })
        .await?;
    Ok(report_value(&report))
}

/// A push's or pull's request: `target` is an element of the project
/// `project`, or with the option "key": true a cache key; with "project":
/// false the project's remotes are not read (a key outside any project;
/// `project` may then be any descriptor). Also "user-config" and "remote".
fn request(
    what: &str,
    project: &OwnedFd,
    target: &str,
    options: HashMap<String, OwnedValue>,
) -> Result<(TransferTarget, RemoteOptions), DbusError> {
    bounded("target", target)?;
    let mut options = options;
    let mut remotes = RemoteOptions::default();
    remote_options(&mut options, what, &mut remotes)?;
    let (mut by_key, mut with_project) = (false, true);
    bool_options(
        options,
        what,
        &mut [("key", &mut by_key), ("project", &mut with_project)],
    )?;
    let project_dir = with_project.then(|| fd_path(project));
    let target = if by_key {
        TransferTarget::Key {
            key: CacheKey::parse(target).map_err(|e| {
                DbusError::InvalidArgument(format!("invalid cache key {target:?}: {e}"))
            })?,
            project_dir,
        }
    } else {
        TransferTarget::Element {
            project_dir: project_dir.ok_or_else(|| {
                DbusError::InvalidArgument(format!(
                    "{what} of an element needs its project (option \"project\" is false)"
                ))
            })?,
            element: target.to_owned(),
        }
    };
    Ok((target, remotes))
}

/// The report: "element", "cache_key", "outcome", "artifact", "buildtree",
/// "log", and per remote that took part ("remotes"), the blobs the result
/// references ("blobs"), those moved ("moved_blobs") and their bytes
/// ("moved_bytes"), summed.
fn report_value(r: &TransferReport) -> HashMap<String, OwnedValue> {
    let text = |d: Option<treediff::Digest>| d.map(|d| d.to_string()).unwrap_or_default();
    let sum =
        |f: fn(&crate::manager::build::Transfer) -> u64| r.transfers.iter().map(f).sum::<u64>();
    let pairs: Vec<(&str, Value<'_>)> = vec![
        ("element", r.element.clone().into()),
        ("cache_key", r.cache_key.to_string().into()),
        (
            "outcome",
            match r.outcome {
                crate::manager::build::Outcome::Success => "success",
                crate::manager::build::Outcome::Failed => "failed",
            }
            .into(),
        ),
        ("artifact", text(r.artifact).into()),
        ("buildtree", text(r.buildtree).into()),
        ("log", text(r.log).into()),
        (
            "remotes",
            r.transfers
                .iter()
                .map(|t| t.url.clone())
                .collect::<Vec<_>>()
                .into(),
        ),
        ("blobs", sum(|t| t.blobs).into()),
        ("moved_blobs", sum(|t| t.moved_blobs).into()),
        ("moved_bytes", sum(|t| t.moved_bytes).into()),
    ];
    dict(pairs)
}
