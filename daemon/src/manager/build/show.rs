//! `ws show`: what building an element would do, without building anything.

use treediff::Digest;

use super::record::Outcome;
use crate::error::Error;
use crate::manager::{Caller, Manager};
use crate::project::{CacheKey, ElementKind};

/// An element's state, as `ws show` reports it (docs/design.md, "Builds").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementState {
    /// Its artifact is cached under its key.
    Cached,
    /// Its last build under its key failed; the buildtree is cached.
    Failed,
    /// Not cached, and every dependency is: it can be built now.
    Buildable,
    /// Some dependency must be built first.
    Waiting,
}

impl ElementState {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            ElementState::Cached => "cached",
            ElementState::Failed => "failed",
            ElementState::Buildable => "buildable",
            ElementState::Waiting => "waiting",
        }
    }
}

/// One element as `ws show` reports it.
#[derive(Clone, Debug)]
pub struct ShownElement {
    /// Its name.
    pub element: String,
    /// Manual or import.
    pub kind: ElementKind,
    /// Its cache key now.
    pub cache_key: CacheKey,
    /// Its state.
    pub state: ElementState,
    /// The source tree it would build.
    pub source_digest: Digest,
    /// Over its dependencies' keys.
    pub dependency_hash: String,
    /// The open workspace it builds in, if any.
    pub workspace: Option<String>,
    /// The cached artifact, buildtree and log under its key, if any.
    pub artifact: Option<Digest>,
    /// See `artifact`.
    pub buildtree: Option<Digest>,
    /// See `artifact`.
    pub log: Option<Digest>,
}

impl Manager {
    /// The plan for `target` of the project at `dir`, with each element's state.
    pub fn show(
        &self,
        caller: Caller,
        dir: &std::path::Path,
        target: &str,
    ) -> Result<Vec<ShownElement>, Error> {
        let loaded = self.load_project(caller, dir)?;
        let planned = self.plan(caller, &loaded, target)?;
        let mut shown: Vec<ShownElement> = Vec::new();
        for p in &planned {
            let record = self.artifact(caller.uid, &p.key)?;
            let state = match record.as_ref().map(|r| r.outcome) {
                Some(Outcome::Success) => ElementState::Cached,
                Some(Outcome::Failed) => ElementState::Failed,
                None => {
                    let ready = p.element.depends.iter().all(|d| {
                        shown
                            .iter()
                            .any(|s| &s.element == d && s.state == ElementState::Cached)
                    });
                    if ready {
                        ElementState::Buildable
                    } else {
                        ElementState::Waiting
                    }
                }
            };
            shown.push(ShownElement {
                element: p.element.name.clone(),
                kind: p.element.kind,
                cache_key: p.key.clone(),
                state,
                source_digest: p.source_digest,
                dependency_hash: p.dependency_hash.clone(),
                workspace: p.workspace.as_ref().map(|w| w.name.clone()),
                artifact: record.as_ref().and_then(|r| r.artifact),
                buildtree: record.as_ref().and_then(|r| r.buildtree),
                log: record.as_ref().and_then(|r| r.log),
            });
        }
        Ok(shown)
    }
}
