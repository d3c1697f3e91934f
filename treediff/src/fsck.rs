//! `fsck`: checks that every object's content matches its name and that every tree
//! is complete and valid. Each problem is reported once, by digest and path.
//!
//! Two passes, as in ostree: first every object file is hashed (in parallel), so
//! content damage is found even in objects no tree reaches; then every root tree is
//! walked, each distinct directory node once, checking that nodes decode canonically
//! and that every blob they name is present with the right size.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::Digest;
use crate::names;
use crate::store::{Store, StoreError};
use crate::tree::{Dir, MAX_DEPTH, Node, TreeError};

/// One thing wrong with the store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// An object file whose content does not hash to its name.
    CorruptObject {
        /// The hash its file name claims.
        hash: String,
        /// The file.
        path: PathBuf,
        /// What it hashes to instead.
        actual: String,
    },
    /// A file in the object directories that is not named like an object.
    StrayFile {
        /// The file.
        path: PathBuf,
    },
    /// A blob a tree refers to that is not in the store (or has the wrong size).
    MissingBlob {
        /// The blob.
        digest: String,
        /// The first tree path found referring to it.
        tree_path: String,
        /// The root tree it was reached from.
        root: String,
        /// "missing", or the size mismatch.
        problem: String,
    },
    /// A directory node that is not a valid canonical tree node.
    InvalidTree {
        /// The node.
        digest: String,
        /// Its path.
        tree_path: String,
        /// The root tree it was reached from.
        root: String,
        /// What is wrong.
        problem: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CorruptObject { hash, path, actual } => {
                write!(
                    f,
                    "corrupt object {hash} ({}): its content hashes to {actual}",
                    path.display()
                )
            }
            Problem::StrayFile { path } => {
                write!(f, "stray file {} is not a store object", path.display())
            }
            Problem::MissingBlob {
                digest,
                tree_path,
                root,
                problem,
            } => {
                write!(
                    f,
                    "blob {digest} at {tree_path} (in tree {root}) is {problem}"
                )
            }
            Problem::InvalidTree {
                digest,
                tree_path,
                root,
                problem,
            } => {
                write!(
                    f,
                    "directory {digest} at {tree_path} (in tree {root}) is invalid: {problem}"
                )
            }
        }
    }
}

/// What fsck found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FsckReport {
    /// Object files hashed.
    pub objects_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Root trees walked.
    pub trees_checked: u64,
    /// Distinct directory nodes checked.
    pub dirs_checked: u64,
    /// Everything wrong, each problem once.
    pub problems: Vec<Problem>,
}

/// Checks the whole store and the trees `roots` (plus every recorded tree).
/// Fails only if the store cannot be read at all; damage is reported, not returned.
pub fn fsck(store: &Store, roots: &[Digest]) -> Result<FsckReport, StoreError> {
    let mut report = FsckReport::default();
    let corrupt = check_objects(store, &mut report)?;
    let mut roots = roots.to_vec();
    roots.extend(store.recorded_trees()?);
    roots.sort();
    roots.dedup();
    let mut walker = TreeWalk {
        store,
        corrupt: &corrupt,
        seen_dirs: HashSet::new(),
        reported: HashSet::new(),
        report: &mut report,
    };
    for root in &roots {
        walker.report.trees_checked += 1;
        walker.walk(*root, *root, String::new(), 0);
    }
    Ok(report)
}

/// Hashes every object file; returns the hashes (by file name) that did not match.
fn check_objects(store: &Store, report: &mut FsckReport) -> Result<HashSet<String>, StoreError> {
    let mut files = Vec::new();
    for kind in ["blobs", "exec"] {
        for fanout in 0..=255u8 {
            let dir = store.root().join(kind).join(format!("{fanout:02x}"));
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("list", dir)(e)),
            };
            for entry in entries {
                files.push(entry.map_err(StoreError::io("list", &dir))?.path());
            }
        }
    }
    let next = Mutex::new(files.into_iter());
    let results = Mutex::new((Vec::new(), HashSet::new(), 0u64, 0u64));
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let Some(path) = next.lock().unwrap().next() else {
                        break;
                    };
                    let checked = check_object(&path, &mut buf);
                    let mut results = results.lock().unwrap();
                    match checked {
                        Ok(bytes) => {
                            results.2 += 1;
                            results.3 += bytes;
                        }
                        Err(problem) => {
                            if let Problem::CorruptObject { hash, .. } = &problem {
                                results.1.insert(hash.clone());
                            }
                            results.0.push(problem);
                        }
                    }
                }
            });
        }
    });
    let (mut problems, corrupt, objects, bytes) = results.into_inner().unwrap();
    problems.sort_by_key(|p| p.to_string());
    report.problems.extend(problems);
    report.objects_checked = objects;
    report.bytes_checked = bytes;
    Ok(corrupt)
}

fn check_object(path: &Path, buf: &mut [u8]) -> Result<u64, Problem> {
    let stray = || Problem::StrayFile {
        path: path.to_owned(),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(stray)?;
    let fanout = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .ok_or_else(stray)?;
    let well_named = name.len() == 64
        && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && name.starts_with(fanout);
    if !well_named {
        return Err(stray());
    }
    let corrupt = |actual: String| Problem::CorruptObject {
        hash: name.to_owned(),
        path: path.to_owned(),
        actual,
    };
    let mut file = std::fs::File::open(path)
        .map_err(|e| corrupt(format!("nothing: it cannot be read ({e})")))?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) => return Err(corrupt(format!("nothing: it cannot be read ({e})"))),
        }
    }
    let actual = Digest::from_hasher(&hasher, size);
    if actual.hex() != name {
        return Err(corrupt(actual.to_string()));
    }
    Ok(size)
}

struct TreeWalk<'a> {
    store: &'a Store,
    corrupt: &'a HashSet<String>,
    seen_dirs: HashSet<Digest>,
    reported: HashSet<Digest>,
    report: &'a mut FsckReport,
}

impl TreeWalk<'_> {
    fn walk(&mut self, root: Digest, digest: Digest, path: String, depth: usize) {
        if !self.seen_dirs.insert(digest) {
            return;
        }
        if depth > MAX_DEPTH {
            self.invalid(
                root,
                digest,
                &path,
                format!("deeper than {MAX_DEPTH} levels"),
            );
            return;
        }
        let dir = match Dir::read(self.store, digest, &path) {
            Ok(dir) => dir,
            Err(TreeError::Store { source, .. })
                if matches!(*source, StoreError::Missing { .. }) =>
            {
                self.missing(root, digest, &path, "missing".into());
                return;
            }
            Err(TreeError::Store { source, .. })
                if matches!(*source, StoreError::Corrupt { .. }) =>
            {
                let StoreError::Corrupt { problem, .. } = *source else {
                    unreachable!()
                };
                // Content damage was reported by the object pass; a size mismatch
                // (a truncated file) is reported here, against the tree.
                if !self.corrupt.contains(&digest.hex()) {
                    self.missing(root, digest, &path, problem);
                }
                return;
            }
            Err(TreeError::Invalid { problem, .. }) => {
                self.invalid(root, digest, &path, problem);
                return;
            }
            Err(other) => {
                self.invalid(root, digest, &path, other.to_string());
                return;
            }
        };
        self.report.dirs_checked += 1;
        for entry in dir.entries() {
            let child = names::join(&path, &entry.name);
            match &entry.node {
                Node::Dir { digest } => self.walk(root, *digest, child, depth + 1),
                Node::File { digest, .. } => self.check_blob(root, *digest, &child),
                Node::Symlink { .. } => {}
            }
        }
    }

    fn check_blob(&mut self, root: Digest, digest: Digest, path: &str) {
        if self.corrupt.contains(&digest.hex()) || self.reported.contains(&digest) {
            return;
        }
        match std::fs::symlink_metadata(self.store.blob_path(&digest)) {
            Err(_) => self.missing(root, digest, path, "missing".into()),
            Ok(meta) if meta.len() != digest.size() => self.missing(
                root,
                digest,
                path,
                format!("{} bytes long instead of {}", meta.len(), digest.size()),
            ),
            Ok(_) => {}
        }
    }

    fn missing(&mut self, root: Digest, digest: Digest, path: &str, problem: String) {
        self.report_once(
            digest,
            |digest, tree_path| Problem::MissingBlob {
                digest,
                tree_path,
                root: root.to_string(),
                problem,
            },
            path,
        );
    }

    fn invalid(&mut self, root: Digest, digest: Digest, path: &str, problem: String) {
        self.report_once(
            digest,
            |digest, tree_path| Problem::InvalidTree {
                digest,
                tree_path,
                root: root.to_string(),
                problem,
            },
            path,
        );
    }

    /// Records the problem made by `make(digest, tree path)` unless `digest` already
    /// has one: each damaged object is reported once, at the first path found.
    fn report_once(
        &mut self,
        digest: Digest,
        make: impl FnOnce(String, String) -> Problem,
        path: &str,
    ) {
        if self.reported.insert(digest) {
            self.report
                .problems
                .push(make(digest.to_string(), names::display(path).to_owned()));
        }
    }
}
