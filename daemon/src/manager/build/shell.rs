//! `ws shell ELEMENT`: a command, or an interactive shell, in an element's
//! build environment (its sandbox, its dependencies at `/ws/sysroot`, its
//! environment and caches), on a throw-away layer.
//!
//! The layer goes on the element's sources (its workspace's current sources
//! when one is open), or with `buildtree` on its buildtree: the one cached under
//! its current key (a failed build's, to see what went wrong; else the last
//! successful one), else its workspace's last buildtree with the edits since
//! laid over (what its next build would start from). Whatever the shell
//! changes is dropped when it ends, like a build that never reached its batch:
//! the layer is recorded as running, so a crash leaves nothing recovery would
//! not remove.

use std::os::fd::OwnedFd;
use std::path::Path;

use super::open::BuildtreeSource;
use super::plan::{self, Planned};
use super::record::Outcome;
use super::run::Start;
use crate::error::Error;
use crate::manager::{Caller, Manager};
use crate::project::ElementKind;
use crate::sandbox::{self, Cancel, Step};

/// What `ws shell` asks for.
#[derive(Clone, Debug, Default)]
pub struct ShellRequest {
    /// Start from the element's buildtree rather than its sources.
    pub buildtree: bool,
    /// The command and its arguments; empty for an interactive shell.
    pub command: Vec<String>,
    /// The client's stdin is a terminal (a pty it relays): the command gets it
    /// as its controlling terminal.
    pub terminal: bool,
}

/// The client's descriptors the command runs with.
#[derive(Debug)]
pub struct ShellStdio {
    /// Its stdin.
    pub stdin: OwnedFd,
    /// Its stdout.
    pub stdout: OwnedFd,
    /// Its stderr.
    pub stderr: OwnedFd,
}

/// How a shell ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellEnd {
    /// The command's exit code; 128 + the signal's number if a signal killed it.
    pub code: i32,
    /// It was cancelled (the client went, or asked).
    pub cancelled: bool,
    /// Where it wrote outside its build, install, cache and /tmp directories
    /// (dropped, like all of its writes).
    pub stray_writes: Vec<String>,
}

/// The interactive shell when no command is given: bash if the host has it.
fn default_shell() -> Vec<String> {
    let shell = if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    vec![shell.to_owned(), "-i".to_owned()]
}

impl Manager {
    /// Runs `request.command` in `target`'s build environment (see the module
    /// documentation). `on_start` is told what the shell runs on before it
    /// starts. Blocks until the command ends; call it on a thread of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn shell(
        &self,
        caller: Caller,
        dir: &Path,
        target: &str,
        request: ShellRequest,
        stdio: ShellStdio,
        on_start: &mut dyn FnMut(&str),
        cancel: &Cancel,
    ) -> Result<ShellEnd, Error> {
        // The store is read and the layer made under the guard; the shell itself
        // writes nothing to the store, and its running layer keeps its parent.
        let (planned, start, sysroot, what, layer) = {
            let loaded = self.load_project(caller, dir)?;
            let _store = self.store_guard();
            let mut planned = self.plan(caller, &loaded, target)?;
            let p = planned.last().expect("a plan ends with its target");
            if p.element.kind == ElementKind::Import {
                return Err(Error::NotBuilt {
                    element: target.to_owned(),
                    problem: "it is an import, which has no build environment; open a shell in an element that depends on it".to_owned(),
                });
            }
            let mut deps = Vec::new();
            for d in plan::closure(&planned, target) {
                match self.cached(caller, d)?.and_then(|r| r.artifact) {
                    Some(artifact) => deps.push(artifact),
                    None => {
                        return Err(Error::NotBuilt {
                            element: target.to_owned(),
                            problem: format!(
                                "its dependency {} is not built (key {}); build it first: ws build {target}",
                                d.element.name, d.key
                            ),
                        });
                    }
                }
            }
            let sysroot = self.dependency_sysroot(&deps)?;
            let p = planned.pop().expect("a plan ends with its target");
            let (start, what) = self.shell_start(caller, &p, request.buildtree)?;
            let layer = self.prepare_layer(&start, caller, target, "shell", sysroot.as_deref())?;
            (p, start, sysroot, what, layer)
        };
        on_start(&what);
        let result = self.run_shell(
            caller, &planned, &start, &layer, sysroot, request, stdio, cancel,
        );
        self.finish_layer(&start, &layer, true);
        result
    }

    /// Where the shell's layer goes, and those words for the user.
    fn shell_start(
        &self,
        caller: Caller,
        p: &Planned,
        buildtree: bool,
    ) -> Result<(Start, String), Error> {
        let name = p.element.name.as_str();
        if !buildtree {
            let what = match &p.workspace {
                Some(ws) => format!("the sources of workspace {}", ws.name),
                None => "its sources".to_owned(),
            };
            return Ok((self.build_start(caller, p, false)?, what));
        }
        if let Some(record) = self.artifact(caller.uid, &p.key)?
            && let Some(source) = BuildtreeSource::of(&record)
        {
            // The snapshotter and owner its builds have (its workspace's, if open).
            let start = self.build_start(caller, p, false)?;
            let bt = self.adopt_buildtree(&start.snapper, name, source)?;
            let what = match record.outcome {
                Outcome::Failed => "its failed buildtree",
                Outcome::Success => "its buildtree",
            };
            return Ok((
                Start {
                    parent: bt.snapshot.clone(),
                    parent_tree: bt.tree,
                    from: bt.source_digest,
                    previous: Some(bt),
                    ..start
                },
                format!("{what} (key {})", p.key),
            ));
        }
        match p.workspace.as_ref().filter(|ws| ws.buildtree.is_some()) {
            Some(ws) => Ok((
                self.build_start(caller, p, true)?,
                format!(
                    "the buildtree of workspace {}'s last build, with the edits since",
                    ws.name
                ),
            )),
            None => Err(Error::NotBuilt {
                element: name.to_owned(),
                problem: format!(
                    "no buildtree is cached under its key {}; build it first (ws build {name}), or open a shell on its sources without --buildtree",
                    p.key
                ),
            }),
        }
    }

    /// Mounts the layer, lays the delta and runs the command on the client's
    /// descriptors; unmounts whatever happens.
    #[allow(clippy::too_many_arguments)]
    fn run_shell(
        &self,
        caller: Caller,
        p: &Planned,
        start: &Start,
        layer: &super::run::Layer,
        sysroot: Option<std::path::PathBuf>,
        request: ShellRequest,
        stdio: ShellStdio,
        cancel: &Cancel,
    ) -> Result<ShellEnd, Error> {
        let name = p.element.name.as_str();
        let key = layer.running.snapshot.as_str();
        overlay::mount(&layer.plan, &layer.dirs.build).map_err(Error::snapshot(name))?;
        let view = layer.plan.view_path(&layer.dirs.build).to_owned();
        let ran = (|| {
            self.lay_delta(start, p, key, &view)?;
            let argv = if request.command.is_empty() {
                default_shell()
            } else {
                request.command.clone()
            };
            let step = Step {
                phase: "shell".to_owned(),
                display: argv.join(" "),
                argv,
            };
            let mut spec = self.sandbox_spec(
                caller,
                &p.element,
                sysroot,
                &layer.dirs,
                &view,
                vec![step],
                true,
            )?;
            spec.interactive = true;
            spec.terminal = request.terminal;
            sandbox::run(
                &self.sandbox_exe,
                &spec,
                sandbox::Stdio::Inherit {
                    stdin: stdio.stdin,
                    stdout: stdio.stdout,
                    stderr: stdio.stderr,
                },
                &mut |_| {},
                cancel,
            )
            .map_err(|source| Error::Sandbox {
                element: name.to_owned(),
                source,
            })
        })();
        if !matches!(layer.plan, overlay::MountPlan::Direct { .. }) {
            overlay::unmount(&layer.dirs.build).map_err(Error::snapshot(name))?;
        }
        let outcome = ran?;
        let code = match &outcome.failed {
            None => 0,
            Some(f) => f.code.or(f.signal.map(|s| 128 + s)).unwrap_or(1),
        };
        Ok(ShellEnd {
            code,
            cancelled: outcome.cancelled,
            stray_writes: outcome.stray_writes,
        })
    }
}
