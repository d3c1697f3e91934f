//! Unified text diffs of changes, in git's patch format.
//!
//! [`unified_diff`] renders one [`Change`] of a file or symlink as a `diff --git`
//! section: `new file mode`/`deleted file mode` or `old mode`/`new mode` lines, then
//! `--- a/PATH` and `+++ b/PATH` (`/dev/null` for a missing side) and the hunks.
//! A symlink's content is its target. Content with a NUL byte in its first 8000
//! bytes, or that is not UTF-8, is binary and shown as `Binary files … differ`.
//! Blobs are read through [`Store::read`], so only verified bytes are shown.
//!
//! Directories have no text: a directory side renders nothing, so run a change
//! through [`expand`](crate::diff::expand) first to see the files under an added
//! or deleted directory ([`patch`] does both for two whole trees). There is no
//! `index` line: the store's digests are not git object ids. Paths with quotes,
//! backslashes or control characters are quoted as git quotes them.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use similar::TextDiff;

use crate::diff::{self, Change, DiffError};
use crate::digest::Digest;
use crate::store::{Store, StoreError};
use crate::tree::{Entry, Node};

/// Bytes looked at for a NUL byte to call content binary (git's heuristic).
pub const BINARY_SNIFF_BYTES: usize = 8000;

/// A line diff that runs longer than this settles for a valid, less minimal diff.
const DIFF_TIMEOUT: Duration = Duration::from_secs(5);

/// A text diff could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TextDiffError {
    /// A file's content could not be read, or did not match its digest.
    #[error("cannot read the content {digest} of {path}")]
    Store {
        /// The file's tree path.
        path: String,
        /// The content's digest.
        digest: Digest,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// Diffing the trees failed (only from [`patch`]).
    #[error(transparent)]
    Diff(#[from] DiffError),
}

/// One side of a change as text: its git mode and content.
struct Side<'a> {
    mode: u32,
    content: Content<'a>,
}

enum Content<'a> {
    Blob(Digest),
    Target(&'a str),
}

impl<'a> Side<'a> {
    /// The text side of an entry; `None` for a directory.
    fn of(entry: &'a Entry) -> Option<Side<'a>> {
        match &entry.node {
            Node::File { digest, executable } => {
                let mode = match entry.props.and_then(|p| p.unix_mode) {
                    Some(bits) => 0o100_000 | bits,
                    None if *executable => 0o100_755,
                    None => 0o100_644,
                };
                Some(Side {
                    mode,
                    content: Content::Blob(*digest),
                })
            }
            Node::Symlink { target } => Some(Side {
                mode: 0o120_000,
                content: Content::Target(target),
            }),
            Node::Dir { .. } => None,
        }
    }

    fn same_content(&self, other: &Side<'_>) -> bool {
        match (&self.content, &other.content) {
            (Content::Blob(a), Content::Blob(b)) => a == b,
            (Content::Target(a), Content::Target(b)) => a == b,
            _ => false,
        }
    }

    fn read(&self, store: &Store, path: &str) -> Result<Cow<'a, [u8]>, TextDiffError> {
        match self.content {
            Content::Target(target) => Ok(Cow::Borrowed(target.as_bytes())),
            Content::Blob(digest) => store
                .read(&digest)
                .map(|blob| Cow::Owned(blob.into_bytes()))
                .map_err(|source| TextDiffError::Store {
                    path: path.to_owned(),
                    digest,
                    source: Box::new(source),
                }),
        }
    }
}

/// Renders `change` as a git-style patch with `context` lines around each hunk; the
/// empty string if it has nothing to show (a directory, or a change of buildtree
/// properties that alters no mode). A change between a file and a symlink is shown,
/// as git does, as the deletion of one and the addition of the other.
pub fn unified_diff(
    store: &Store,
    change: &Change,
    context: usize,
) -> Result<String, TextDiffError> {
    let old = change.old.as_ref().and_then(Side::of);
    let new = change.new.as_ref().and_then(Side::of);
    let mut out = String::new();
    let path = change.path.as_str();
    match (old, new) {
        (Some(old), Some(new)) if (old.mode & 0o170_000) != (new.mode & 0o170_000) => {
            section(&mut out, store, path, Some(&old), None, context)?;
            section(&mut out, store, path, None, Some(&new), context)?;
        }
        (old, new) => section(&mut out, store, path, old.as_ref(), new.as_ref(), context)?,
    }
    Ok(out)
}

/// Renders every change from tree `old` to tree `new` as one patch, with added and
/// deleted directories expanded to the files under them.
pub fn patch(
    store: &Store,
    old: Digest,
    new: Digest,
    context: usize,
) -> Result<String, TextDiffError> {
    let mut out = String::new();
    let mut failure = None;
    let result = diff::diff(store, old, new, &mut |change| {
        let shown = diff::expand(store, &change, &mut |leaf| match unified_diff(
            store, &leaf, context,
        ) {
            Ok(text) => {
                out.push_str(&text);
                Ok(())
            }
            Err(e) => {
                failure = Some(e);
                Err(DiffError::Stopped)
            }
        });
        shown.map(|_| ())
    });
    match (result, failure) {
        (_, Some(failure)) => return Err(failure),
        (Err(e), None) => return Err(e.into()),
        (Ok(_), None) => {}
    }
    Ok(out)
}

/// One `diff --git` section; appends nothing if there is nothing to show.
fn section(
    out: &mut String,
    store: &Store,
    path: &str,
    old: Option<&Side<'_>>,
    new: Option<&Side<'_>>,
    context: usize,
) -> Result<(), TextDiffError> {
    let mut head = format!("diff --git {} {}\n", quoted("a/", path), quoted("b/", path));
    match (old, new) {
        (None, None) => return Ok(()),
        (None, Some(new)) => {
            let _ = writeln!(head, "new file mode {:06o}", new.mode);
        }
        (Some(old), None) => {
            let _ = writeln!(head, "deleted file mode {:06o}", old.mode);
        }
        (Some(old), Some(new)) => {
            let mode_changed = old.mode != new.mode;
            if mode_changed {
                let _ = writeln!(head, "old mode {:06o}\nnew mode {:06o}", old.mode, new.mode);
            }
            if old.same_content(new) {
                if mode_changed {
                    out.push_str(&head);
                }
                return Ok(());
            }
        }
    }
    let old_bytes = old.map(|s| s.read(store, path)).transpose()?;
    let new_bytes = new.map(|s| s.read(store, path)).transpose()?;
    let name = |side: Option<_>, prefix| match side {
        Some(_) => quoted(prefix, path),
        None => "/dev/null".to_owned(),
    };
    let (old_name, new_name) = (name(old, "a/"), name(new, "b/"));
    let old_text = old_bytes.as_deref().map(as_text).unwrap_or(Some(""));
    let new_text = new_bytes.as_deref().map(as_text).unwrap_or(Some(""));
    out.push_str(&head);
    match (old_text, new_text) {
        (Some(old_text), Some(new_text)) => {
            let diff = TextDiff::configure()
                .timeout(DIFF_TIMEOUT)
                .diff_lines(old_text, new_text);
            let hunks = diff
                .unified_diff()
                .context_radius(context)
                .header(&old_name, &new_name)
                .to_string();
            out.push_str(&hunks);
        }
        _ => {
            let _ = writeln!(out, "Binary files {old_name} and {new_name} differ");
        }
    }
    Ok(())
}

/// The content as text, or `None` if it is binary.
fn as_text(bytes: &[u8]) -> Option<&str> {
    let sniff = &bytes[..bytes.len().min(BINARY_SNIFF_BYTES)];
    if sniff.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// `prefix` + `path` as git writes it in headers: as is, or in double quotes with
/// C-style escapes if the path has a quote, a backslash or a control character
/// (which tree names may hold: only `/` and NUL are refused).
fn quoted(prefix: &str, path: &str) -> String {
    if !path
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return format!("{prefix}{path}");
    }
    let mut out = format!("\"{prefix}");
    for c in path.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{byte:03o}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
