//! From a caller's project to what each element's build would be: the project
//! file read with the caller's permissions, each element's source tree (imported
//! from the project, or the view of its open workspace) and its cache key.

use std::path::{Path, PathBuf};

use treediff::Digest;

use crate::error::Error;
use crate::manager::import::ImportOptions;
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
        let root = dir.canonicalize().map_err(|e| Error::Invalid {
            what: "project directory",
            problem: format!("{}: {e}", dir.display()),
        })?;
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
        let path = if element.sources.is_empty() {
            loaded.dir.clone()
        } else {
            loaded.dir.join(&element.sources)
        };
        let shown = loaded.root.join(&element.sources);
        let options = ImportOptions {
            ignore: element.ignore.clone(),
            ..ImportOptions::default()
        };
        // Unchanged since its last import (watched): no walk.
        let watch = self.source_watch.as_ref();
        let key = watch.and_then(|_| SourceKey::new(caller, &path, &options));
        if let (Some(watch), Some(key)) = (watch, &key)
            && let Some(tree) = watch.unchanged(key)
        {
            return Ok(tree);
        }
        let armed = watch.zip(key.as_ref()).and_then(|(w, k)| w.arm(k, &path));
        match self.import_source(caller, &path, &options) {
            Ok((tree, _)) => {
                if let (Some(watch), Some(key), Some(generation)) = (watch, &key, armed) {
                    watch.record(key, generation, tree);
                }
                Ok(tree)
            }
            Err(Error::Invalid { problem, .. }) => Err(Error::Invalid {
                what: "element",
                problem: format!(
                    "{}: its sources {} cannot be read ({problem}); fix `sources` in {PROJECT_FILE}",
                    element.name,
                    shown.display()
                ),
            }),
            Err(e) => Err(e),
        }
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
