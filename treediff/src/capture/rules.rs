//! Ignore rules: `.wsignore` files (gitignore syntax) found during the walk, chained
//! from the root down, plus the caller's root-level patterns.
//!
//! The walk of [`capture`](super::capture) uses them, and so does anything else that
//! must decide what a tree would hold (reading an overlay upper as a change set).
//!
//! Matching follows gitignore precedence: the deepest `.wsignore` that says anything
//! about a path decides (a `!pattern` re-includes), then its parent's, up to the root.
//! The caller's patterns are checked first and always exclude. An ignored directory
//! is not entered, so nothing below it can be re-included, as in git.

use std::path::Path;
use std::sync::Arc;

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::CaptureError;

/// The caller's root-level patterns, which always exclude.
#[derive(Debug)]
pub struct Patterns(Gitignore);

impl Patterns {
    /// Whether the root-relative path `rel` is excluded.
    pub fn ignores(&self, rel: &str, is_dir: bool) -> bool {
        self.0.matched(Path::new(rel), is_dir).is_ignore()
    }
}

/// The rules in force in one directory: its own `.wsignore`, then its parents'.
#[derive(Debug)]
pub struct Rules {
    matcher: Gitignore,
    parent: Option<Arc<Rules>>,
}

impl Rules {
    /// No rules at all.
    pub fn none() -> Arc<Rules> {
        Arc::new(Rules {
            matcher: Gitignore::empty(),
            parent: None,
        })
    }

    /// The caller's patterns, anchored at the root of the capture.
    pub fn patterns(patterns: &[String]) -> Result<Patterns, CaptureError> {
        let mut builder = GitignoreBuilder::new(".");
        for pattern in patterns {
            builder
                .add_line(None, pattern)
                .map_err(|e| CaptureError::Ignore {
                    message: format!("pattern {pattern:?}: {e}"),
                })?;
        }
        let matcher = builder.build().map_err(|e| CaptureError::Ignore {
            message: e.to_string(),
        })?;
        Ok(Patterns(matcher))
    }

    /// The rules of the directory `rel` whose `.wsignore` holds `text`.
    pub fn child(parent: &Arc<Rules>, rel: &str, text: &str) -> Result<Arc<Rules>, CaptureError> {
        let file = crate::names::join(rel, ".wsignore");
        let mut builder = GitignoreBuilder::new(if rel.is_empty() { "." } else { rel });
        for (number, line) in text.lines().enumerate() {
            builder
                .add_line(None, line)
                .map_err(|e| CaptureError::Ignore {
                    message: format!("{file}, line {}: {e}", number + 1),
                })?;
        }
        let matcher = builder.build().map_err(|e| CaptureError::Ignore {
            message: format!("{file}: {e}"),
        })?;
        Ok(Arc::new(Rules {
            matcher,
            parent: Some(parent.clone()),
        }))
    }

    /// Whether the root-relative path `rel` is ignored.
    pub fn ignores(&self, rel: &str, is_dir: bool) -> bool {
        let path = Path::new(rel);
        let mut rules = Some(self);
        while let Some(current) = rules {
            match current.matcher.matched(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => rules = current.parent.as_deref(),
            }
        }
        false
    }
}
