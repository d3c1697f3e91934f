//! `org.ws.Build1`, one object per running build at `/org/ws/build/<id>`, on
//! the connection that started it: its state as properties, its progress and
//! output as signals, and `Cancel`.
//!
//! A client subscribes to the signals before it calls `Manager1.Build` (on a
//! peer-to-peer connection every signal reaches the peer; on a bus, the caller's
//! clients), since output may come before the reply does. The object stays a
//! while after the build ends, so that a client can still read `Reports`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::{OwnedValue, Value};

use super::args::dict;
use super::{DbusError, ROOT_PATH};
use crate::manager::build::{BuildObserver, ElementReport};
use crate::project::CacheKey;
use crate::sandbox::Cancel;

/// How long a finished build's object stays for late readers.
const LINGER: std::time::Duration = std::time::Duration::from_secs(300);

/// The object path of a build.
pub fn build_path(id: &str) -> String {
    format!("{ROOT_PATH}/build/{id}")
}

/// A build's object.
#[derive(Debug)]
pub struct BuildIface {
    target: String,
    state: String,
    current: String,
    reports: Vec<HashMap<String, OwnedValue>>,
    error: String,
    cancel: Cancel,
}

impl BuildIface {
    pub(super) fn new(target: String, cancel: Cancel) -> BuildIface {
        BuildIface {
            target,
            state: "running".to_owned(),
            current: String::new(),
            reports: Vec::new(),
            error: String::new(),
            cancel,
        }
    }
}

/// What a build's observer passes to the task that emits its signals.
#[derive(Debug)]
pub(super) enum Progress {
    Started {
        element: String,
        key: String,
        workspace: String,
    },
    Output {
        element: String,
        data: Vec<u8>,
    },
    Finished(Box<ElementReport>),
}

/// The observer of a build run on the blocking pool: it forwards to the
/// connection's task, never blocking the build.
#[derive(Debug)]
pub(super) struct Forward(pub tokio::sync::mpsc::UnboundedSender<Progress>);

impl BuildObserver for Forward {
    fn element_started(&self, element: &str, key: &CacheKey, workspace: Option<&str>) {
        let _ = self.0.send(Progress::Started {
            element: element.to_owned(),
            key: key.to_string(),
            workspace: workspace.unwrap_or_default().to_owned(),
        });
    }

    fn output(&self, element: &str, chunk: &[u8]) {
        let _ = self.0.send(Progress::Output {
            element: element.to_owned(),
            data: chunk.to_vec(),
        });
    }

    fn element_finished(&self, report: &ElementReport) {
        let _ = self.0.send(Progress::Finished(Box::new(report.clone())));
    }
}

/// A report as D-Bus carries it (`a{sv}`; documented in docs/dbus.md).
pub(super) fn report_value(r: &ElementReport) -> HashMap<String, OwnedValue> {
    let text = |d: Option<treediff::Digest>| d.map(|d| d.to_string()).unwrap_or_default();
    let pairs: Vec<(&str, Value<'_>)> = vec![
        ("element", r.element.clone().into()),
        ("cache_key", r.cache_key.to_string().into()),
        ("result", r.result.name().into()),
        ("incremental", r.incremental.into()),
        ("commands_run", r.commands_run.into()),
        ("artifact", text(r.artifact).into()),
        ("buildtree", text(r.buildtree).into()),
        ("log", text(r.log).into()),
        ("workspace", r.workspace.clone().unwrap_or_default().into()),
        ("message", r.message.clone().unwrap_or_default().into()),
        (
            "pulled_from",
            r.remote.pulled_from.clone().unwrap_or_default().into(),
        ),
        ("pushed_to", r.remote.pushed_to.clone().into()),
        ("remote_problems", r.remote.problems.clone().into()),
        (
            "verify",
            r.verification
                .as_ref()
                .map_or("", |v| v.result.name())
                .into(),
        ),
        (
            "clean_artifact",
            text(r.verification.as_ref().and_then(|v| v.clean_artifact)).into(),
        ),
        (
            "differences",
            r.verification
                .iter()
                .flat_map(|v| &v.differences)
                .map(|c| format!("{} {}", c.change, c.path))
                .collect::<Vec<_>>()
                .into(),
        ),
        (
            "verify_message",
            r.verification
                .as_ref()
                .and_then(|v| v.message.clone())
                .unwrap_or_default()
                .into(),
        ),
    ];
    dict(pairs)
}

/// Emits `progress` as signals and properties of the build at `path`.
pub(super) async fn show(
    server: &ObjectServer,
    path: &str,
    progress: Progress,
) -> zbus::Result<()> {
    let iface = server.interface::<_, BuildIface>(path).await?;
    let emitter = iface.signal_emitter();
    match progress {
        Progress::Started {
            element,
            key,
            workspace,
        } => {
            {
                let mut build = iface.get_mut().await;
                build.current = element.clone();
                build.current_changed(emitter).await?;
            }
            BuildIface::element_started(emitter, &element, &key, &workspace).await
        }
        Progress::Output { element, data } => BuildIface::output(emitter, &element, &data).await,
        Progress::Finished(report) => {
            let value = report_value(&report);
            iface.get_mut().await.reports.push(value.clone());
            BuildIface::element_finished(emitter, value).await
        }
    }
}

/// Records the end of the build at `path` and announces it; the object goes
/// after [`LINGER`].
pub(super) async fn finish(
    server: &ObjectServer,
    path: String,
    state: &str,
    error_name: String,
    error: String,
) -> zbus::Result<()> {
    let iface = server.interface::<_, BuildIface>(path.as_str()).await?;
    let emitter = iface.signal_emitter();
    let reports = {
        let mut build = iface.get_mut().await;
        build.state = state.to_owned();
        build.error = error.clone();
        build.state_changed(emitter).await?;
        build.reports.clone()
    };
    BuildIface::finished(emitter, state, reports, &error_name, &error).await?;
    let server = server.clone();
    tokio::spawn(async move {
        tokio::time::sleep(LINGER).await;
        let _ = server.remove::<BuildIface, _>(path.as_str()).await;
    });
    Ok(())
}

/// Cancels the build when the client that started it goes (its `ws build` was
/// killed): nothing is left half-done either way.
pub(super) fn cancel_when_gone(conn: &zbus::Connection, cancel: Cancel, done: Arc<Mutex<bool>>) {
    let conn = conn.clone();
    tokio::spawn(async move {
        super::closed_signal(&conn).await;
        if !*done.lock().unwrap_or_else(|e| e.into_inner()) {
            tracing::info!("the client of a running build has gone: cancelling it");
            cancel.cancel();
        }
    });
}

#[zbus::interface(name = "org.ws.Build1")]
impl BuildIface {
    /// The element asked for.
    #[zbus(property)]
    fn element(&self) -> String {
        self.target.clone()
    }

    /// "running", "succeeded", "failed", "cancelled" or "error" (the build could
    /// not be done; `Error` says why).
    #[zbus(property)]
    fn state(&self) -> String {
        self.state.clone()
    }

    /// The element being built now.
    #[zbus(property)]
    fn current(&self) -> String {
        self.current.clone()
    }

    /// Why the build could not be done ("" unless `State` is "error").
    #[zbus(property)]
    fn error(&self) -> String {
        self.error.clone()
    }

    /// The reports of the elements done so far (as in `ElementFinished`).
    async fn reports(&self) -> Vec<HashMap<String, OwnedValue>> {
        self.reports.clone()
    }

    /// Cancels the build: the running commands are killed and the element's
    /// transaction ends as a failure does (the workspace stays as it was).
    async fn cancel(&self) -> Result<(), DbusError> {
        self.cancel.cancel();
        Ok(())
    }

    /// An element's build starts (`workspace` is "" outside a workspace).
    #[zbus(signal)]
    async fn element_started(
        emitter: &SignalEmitter<'_>,
        element: &str,
        cache_key: &str,
        workspace: &str,
    ) -> zbus::Result<()>;

    /// Output of an element's commands, as it comes.
    #[zbus(signal)]
    async fn output(emitter: &SignalEmitter<'_>, element: &str, data: &[u8]) -> zbus::Result<()>;

    /// An element is done: its report.
    #[zbus(signal)]
    async fn element_finished(
        emitter: &SignalEmitter<'_>,
        report: HashMap<String, OwnedValue>,
    ) -> zbus::Result<()>;

    /// The build is over: its state (as `State`), every report, and for the
    /// state "error" the error's name (`org.ws.Error.InvalidArgument`, ...) and
    /// message, as a failed method call would carry them.
    #[zbus(signal)]
    async fn finished(
        emitter: &SignalEmitter<'_>,
        state: &str,
        reports: Vec<HashMap<String, OwnedValue>>,
        error_name: &str,
        error: &str,
    ) -> zbus::Result<()>;
}
