//! Running a build for a client: the job's object, the blocking build on the
//! pool, and the task that turns its progress into the object's signals.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use zbus::object_server::ObjectServer;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::args::{dict, fd_path};
use super::build_iface::{self, BuildIface, Forward, Progress, build_path};
use super::{DbusError, Event, Shared};
use crate::manager::Caller;
use crate::manager::build::{BuildOptions, ElementResult, ShownElement};
use crate::sandbox::Cancel;

/// Starts building `element` of the project `project` for `caller`; returns
/// the build's object path.
pub(super) async fn start(
    shared: &Arc<Shared>,
    server: &ObjectServer,
    conn: &zbus::Connection,
    caller: Caller,
    project: OwnedFd,
    element: String,
    options: BuildOptions,
) -> Result<OwnedObjectPath, DbusError> {
    let path = build_path(&crate::manager::new_id());
    let object =
        OwnedObjectPath::try_from(path.clone()).map_err(|e| DbusError::Io(e.to_string()))?;
    let cancel = Cancel::new();
    server
        .at(
            path.clone(),
            BuildIface::new(element.clone(), cancel.clone()),
        )
        .await
        .map_err(DbusError::ZBus)?;
    let done = Arc::new(Mutex::new(false));
    build_iface::cancel_when_gone(conn, cancel.clone(), done.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = shared.clone();
    let server = server.clone();
    tokio::spawn(async move {
        let observer = Forward(tx);
        let job_cancel = cancel.clone();
        let job = shared.run(move |m| {
            let reports = m.build_with(
                caller,
                &fd_path(&project),
                &element,
                options,
                &observer,
                &job_cancel,
            );
            drop(project);
            reports
        });
        tokio::pin!(job);
        let result = loop {
            tokio::select! {
                Some(progress) = rx.recv() => shown(&server, &path, progress).await,
                result = &mut job => break result,
            }
        };
        while let Ok(progress) = rx.try_recv() {
            shown(&server, &path, progress).await;
        }
        *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        let (state, error_name, error) = match &result {
            Ok(reports) if reports.iter().all(|r| r.result != ElementResult::Failed) => {
                if cancel.is_cancelled() {
                    ("cancelled", String::new(), String::new())
                } else {
                    ("succeeded", String::new(), String::new())
                }
            }
            Ok(_) if cancel.is_cancelled() => ("cancelled", String::new(), String::new()),
            Ok(_) => ("failed", String::new(), String::new()),
            Err(e) => {
                let (name, message) = e.name_and_message();
                ("error", name, message)
            }
        };
        if let Ok(reports) = &result {
            let names: Vec<String> = reports.iter().filter_map(|r| r.workspace.clone()).collect();
            announce(&shared, caller, names).await;
        }
        if let Err(e) = build_iface::finish(&server, path, state, error_name, error).await {
            tracing::debug!(error = %e, "cannot announce the end of a build");
        }
    });
    Ok(object)
}

async fn shown(server: &ObjectServer, path: &str, progress: Progress) {
    if let Err(e) = build_iface::show(server, path, progress).await {
        tracing::debug!(error = %e, "cannot show a build's progress");
    }
}

/// Tells the owner's connections that the workspaces `names` changed.
async fn announce(shared: &Arc<Shared>, caller: Caller, names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let changed = shared
        .run(move |m| {
            let mut out = Vec::new();
            for name in names {
                let status = m.status(caller, &name)?;
                out.push((status.workspace, status.changes.len() as u32));
            }
            Ok(out)
        })
        .await;
    for (ws, dirty) in changed.unwrap_or_default() {
        shared.notify(Event::Changed {
            ws: Box::new(ws),
            dirty,
        });
    }
}

/// An element of `Show`'s answer as D-Bus carries it.
pub(super) fn shown_value(e: &ShownElement) -> HashMap<String, OwnedValue> {
    let pairs: Vec<(&str, Value<'_>)> = vec![
        ("element", e.element.clone().into()),
        ("kind", e.kind.name().into()),
        ("cache_key", e.cache_key.to_string().into()),
        ("state", e.state.name().into()),
        ("source_digest", e.source_digest.to_string().into()),
        ("dependency_hash", e.dependency_hash.clone().into()),
        ("workspace", e.workspace.clone().unwrap_or_default().into()),
        (
            "artifact",
            e.artifact.map(|d| d.to_string()).unwrap_or_default().into(),
        ),
        (
            "buildtree",
            e.buildtree
                .map(|d| d.to_string())
                .unwrap_or_default()
                .into(),
        ),
        (
            "log",
            e.log.map(|d| d.to_string()).unwrap_or_default().into(),
        ),
    ];
    dict(pairs)
}
