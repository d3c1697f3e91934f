//! `org.ws.Shell1`, one object per running `ws shell` at `/org/ws/shell/<id>`:
//! the command runs on the client's own descriptors (a pty the client relays,
//! or its stdio), so the object carries only its state, `Cancel`, and the
//! `Started` and `Finished` signals. A client that disconnects cancels it.

use std::sync::{Arc, Mutex};

use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::OwnedObjectPath;

use super::args::fd_path;
use super::{DbusError, ROOT_PATH, Shared};
use crate::manager::Caller;
use crate::manager::build::{ShellEnd, ShellRequest, ShellStdio};
use crate::sandbox::Cancel;

/// How long an ended shell's object stays for late readers.
const LINGER: std::time::Duration = std::time::Duration::from_secs(60);

/// A shell's object.
#[derive(Debug)]
pub struct ShellIface {
    element: String,
    state: String,
    exit_code: i32,
    error: String,
    cancel: Cancel,
}

#[zbus::interface(name = "org.ws.Shell1")]
impl ShellIface {
    /// The element whose build environment it runs in.
    #[zbus(property)]
    fn element(&self) -> String {
        self.element.clone()
    }

    /// "running", "exited", "cancelled" or "error" (it could not start; `Error`
    /// says why).
    #[zbus(property)]
    fn state(&self) -> String {
        self.state.clone()
    }

    /// The command's exit code once "exited" (128 + the signal's number if a
    /// signal ended it); -1 before.
    #[zbus(property)]
    fn exit_code(&self) -> i32 {
        self.exit_code
    }

    /// Why it could not start ("" unless `State` is "error").
    #[zbus(property)]
    fn error(&self) -> String {
        self.error.clone()
    }

    /// Kills the command and everything it started; its changes are dropped.
    async fn cancel(&self) -> Result<(), DbusError> {
        self.cancel.cancel();
        Ok(())
    }

    /// The command starts; `on` says on what ("its failed buildtree (key …)").
    #[zbus(signal)]
    async fn started(emitter: &SignalEmitter<'_>, on: &str) -> zbus::Result<()>;

    /// The shell is over: its state (as `State`), exit code, the paths it wrote
    /// outside its build, install, cache and /tmp directories (dropped), and for
    /// the state "error" the error's name and message.
    #[zbus(signal)]
    async fn finished(
        emitter: &SignalEmitter<'_>,
        state: &str,
        exit_code: i32,
        stray_writes: Vec<String>,
        error_name: &str,
        error: &str,
    ) -> zbus::Result<()>;
}

/// What the blocking shell tells the task that emits the signals.
enum Event {
    Started(String),
}

/// Starts `request` in `element`'s build environment for `caller`; returns the
/// shell's object path.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start(
    shared: &Arc<Shared>,
    server: &ObjectServer,
    conn: &zbus::Connection,
    caller: Caller,
    project: std::os::fd::OwnedFd,
    element: String,
    request: ShellRequest,
    stdio: ShellStdio,
) -> Result<OwnedObjectPath, DbusError> {
    let path = format!("{ROOT_PATH}/shell/{}", crate::manager::new_id());
    let object =
        OwnedObjectPath::try_from(path.clone()).map_err(|e| DbusError::Io(e.to_string()))?;
    let cancel = Cancel::new();
    server
        .at(
            path.clone(),
            ShellIface {
                element: element.clone(),
                state: "running".to_owned(),
                exit_code: -1,
                error: String::new(),
                cancel: cancel.clone(),
            },
        )
        .await
        .map_err(DbusError::ZBus)?;
    let done = Arc::new(Mutex::new(false));
    super::build_iface::cancel_when_gone(conn, cancel.clone(), done.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = shared.clone();
    let server = server.clone();
    tokio::spawn(async move {
        let job_cancel = cancel.clone();
        let job = shared.run(move |m| {
            let mut on_start = |what: &str| {
                let _ = tx.send(Event::Started(what.to_owned()));
            };
            let end = m.shell(
                caller,
                &fd_path(&project),
                &element,
                request,
                stdio,
                &mut on_start,
                &job_cancel,
            );
            drop(project);
            end
        });
        tokio::pin!(job);
        let result = loop {
            tokio::select! {
                Some(Event::Started(what)) = rx.recv() => {
                    if let Ok(iface) = server.interface::<_, ShellIface>(path.as_str()).await {
                        let _ = ShellIface::started(iface.signal_emitter(), &what).await;
                    }
                }
                result = &mut job => break result,
            }
        };
        *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        if let Err(e) = finish(&server, &path, result).await {
            tracing::debug!(error = %e, "cannot announce the end of a shell");
        }
        let server = server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            let _ = server.remove::<ShellIface, _>(path.as_str()).await;
        });
    });
    Ok(object)
}

/// Records how the shell at `path` ended and announces it.
async fn finish(
    server: &ObjectServer,
    path: &str,
    result: Result<ShellEnd, DbusError>,
) -> zbus::Result<()> {
    let iface = server.interface::<_, ShellIface>(path).await?;
    let emitter = iface.signal_emitter();
    let (state, code, stray, error_name, error) = match result {
        Ok(end) if end.cancelled => ("cancelled", end.code, end.stray_writes, "", String::new()),
        Ok(end) => ("exited", end.code, end.stray_writes, "", String::new()),
        Err(e) => {
            let (name, message) = e.name_and_message();
            let mut shell = iface.get_mut().await;
            shell.error = message.clone();
            shell.state = "error".to_owned();
            shell.state_changed(emitter).await?;
            drop(shell);
            return ShellIface::finished(emitter, "error", -1, Vec::new(), &name, &message).await;
        }
    };
    {
        let mut shell = iface.get_mut().await;
        shell.state = state.to_owned();
        shell.exit_code = code;
        shell.state_changed(emitter).await?;
        shell.exit_code_changed(emitter).await?;
    }
    ShellIface::finished(emitter, state, code, stray, error_name, &error).await
}
