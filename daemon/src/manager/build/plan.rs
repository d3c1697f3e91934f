//! From a caller's project to what each element's build would be: the project
//! file read with the caller's permissions, each element's source tree (imported
//! from the project, or the view of its open workspace) and its cache key.

use std::path::{Path, PathBuf};

use treediff::Digest;

use crate::access::shown_path;
use crate::error::Error;
use crate::manager::import::{self, ImportOptions};
use crate::manager::source_watch::SourceKey;
use crate::manager::{Caller, Manager};
use crate::project::{CacheKey, Element, Project, cache_key, dependency_hash};
use crate::workspace::Workspace;

/// The name of the project file at a project's root.
pub const PROJECT_FILE: &str = "ws.toml";

/// A project as the daemon read it.
#[derive(Debug)]
pub struct LoadedProject {
    /// The parsed file.
    pub project: Project,
    /// The project's root as it really is (for messages and for matching
    /// workspaces to it).
    pub root: PathBuf,
    /// The path the daemon reads it through (the caller's descriptor).
    pub dir: PathBuf,
}

/// One element of a build, planned.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The element.
    pub element: Element,
    /// The source tree it builds.
    pub source_digest: Digest,
    /// Over its dependencies' keys.
    pub dependency_hash: String,
    /// Its cache key.
    pub key: CacheKey,
    /// The open workspace it builds in, if any.
    pub workspace: Option<Workspace>,
}

impl Manager {
    /// Reads `dir`/ws.toml with the caller's permissions; `dir` is the path of the
    /// caller's descriptor for the project directory.
    pub fn load_project(&self, caller: Caller, dir: &Path) -> Result<LoadedProject, Error> {
        self.serves(caller)?;
        // Where the kernel says the caller's descriptor is: nothing the caller
        // names is resolved with the daemon's credentials.
        let root = shown_path(dir);
        let file = root.join(PROJECT_FILE);
        let bytes = crate::access::read_file_as(caller, &dir.join(PROJECT_FILE))
            .map_err(|source| Error::Io {
                op: "read the project file",
                path: file.clone(),
                source,
            })?
            .ok_or_else(|| Error::Invalid {
                what: "project",
                problem: format!(
                    "{} has no {PROJECT_FILE}; run ws in a project's directory or name one with -C DIR",
                    root.display()
                ),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Invalid {
            what: "project file",
            problem: format!("{} is not UTF-8", file.display()),
        })?;
        let project = Project::parse(&file, &text)?;
        Ok(LoadedProject {
            project,
            root,
            dir: dir.to_owned(),
        })
    }

    /// Imports `element`'s sources from the project with the caller's permissions.
    pub(super) fn import_element(
        &self,
        caller: Caller,
        loaded: &LoadedProject,
        element: &Element,
    ) -> Result<Digest, Error> {
        let shown = loaded.root.join(&element.sources);
        // Opened as the caller (following symlinks as they would), so that the
        // daemon looks nothing up under the project with its own credentials.
        let reader = import::reader_of(caller, &shown)?;
        let dir = reader
            .open_dir(&loaded.dir.join(&element.sources))
            .map_err(|source| sources_unreadable(element, &shown, source))?;
        let options = ImportOptions {
            ignore: element.ignore.clone(),
            ..ImportOptions::default()
        };
        // Unchanged since its last import by the same credentials (watched): no walk.
        let watch = self.source_watch.as_ref();
        let key = SourceKey::new(reader.id(), &dir, &options);
        if let Some(tree) = watch.and_then(|w| w.unchanged(&key)) {
            return Ok(tree);
        }
        let armed = watch.and_then(|w| w.arm(&key, &dir, &reader, caller.uid));
        let tree = self.import_opened(caller, &reader, &dir, &options)?.tree;
        if let (Some(watch), Some(generation)) = (watch, armed) {
            watch.record(&key, generation, tree);
        }
        Ok(tree)
    }

    /// Plans `target` and its dependencies, dependencies first: each element's
    /// source tree (its workspace's view when one is open, else imported from
    /// the project) and cache key.
    pub fn plan(
        &self,
        caller: Caller,
        loaded: &LoadedProject,
        target: &str,
    ) -> Result<Vec<Planned>, Error> {
        let _store = self.store_guard();
        let order = loaded.project.build_order(target)?;
        // The caller's workspaces opened for this project's elements, read once.
        let workspaces: Vec<Workspace> = self
            .list(caller)?
            .into_iter()
            .filter(|ws| {
                ws.owner == caller.uid
                    && ws
                        .element
                        .as_ref()
                        .is_some_and(|b| b.project == loaded.root)
            })
            .collect();
        let mut planned: Vec<Planned> = Vec::new();
        for element in order {
            let workspace = workspaces
                .iter()
                .find(|ws| {
                    ws.element
                        .as_ref()
                        .is_some_and(|b| b.element == element.name)
                })
                .cloned();
            let source_digest = match &workspace {
                Some(ws) => self.status_of(ws.clone())?.current,
                None => self.import_element(caller, loaded, element)?,
            };
            let keys: Vec<CacheKey> = element
                .depends
                .iter()
                .map(|d| {
                    planned
                        .iter()
                        .find(|p| &p.element.name == d)
                        .map(|p| p.key.clone())
                        .expect("build_order puts dependencies first")
                })
                .collect();
            let dependency_hash = dependency_hash(&keys);
            let key = cache_key(element, source_digest, &dependency_hash);
            self.grant_recorded(caller, &key)?;
            planned.push(Planned {
                element: element.clone(),
                source_digest,
                dependency_hash,
                key,
                workspace,
            });
        }
        Ok(planned)
    }
}

/// The error of an element whose sources do not open as the caller: refused,
/// or not a directory they can reach.
fn sources_unreadable(element: &Element, shown: &Path, source: std::io::Error) -> Error {
    let denied = matches!(
        source.raw_os_error(),
        Some(nix::libc::EACCES | nix::libc::EPERM)
    );
    if denied {
        return Error::Denied {
            problem: format!(
                "element {}: its sources {} cannot be opened with your permissions ({source}); make them readable to you or fix `sources` in {PROJECT_FILE}",
                element.name,
                shown.display()
            ),
        };
    }
    Error::Invalid {
        what: "element",
        problem: format!(
            "{}: its sources {} cannot be read ({source}); fix `sources` in {PROJECT_FILE}",
            element.name,
            shown.display()
        ),
    }
}

impl Manager {
    /// Grants `caller` the trees recorded under `key`, which their plan
    /// computed from sources read as them: what they would build themselves.
    fn grant_recorded(&self, caller: Caller, key: &CacheKey) -> Result<(), Error> {
        if let Some(record) = self.artifact(caller.uid, key)? {
            let trees: Vec<Digest> = [record.artifact, record.buildtree]
                .into_iter()
                .flatten()
                .collect();
            self.grant(caller.uid, &trees)?;
        }
        Ok(())
    }
}

/// The elements `name` depends on, directly or not, in build order.
pub fn closure<'a>(planned: &'a [Planned], name: &str) -> Vec<&'a Planned> {
    let mut wanted: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut stack = vec![name];
    while let Some(n) = stack.pop() {
        if let Some(p) = planned.iter().find(|p| p.element.name == n) {
            for d in &p.element.depends {
                if wanted.insert(d.as_str()) {
                    stack.push(d);
                }
            }
        }
    }
    planned
        .iter()
        .filter(|p| wanted.contains(p.element.name.as_str()))
        .collect()
}
