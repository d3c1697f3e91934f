//! Reading a layer (an overlay upper directory) as edits of its parent's tree.
//!
//! Only the upper is read, plus the parent tree's directory nodes along the way:
//! committing K changed files costs O(K × depth), whatever the size of the tree.
//!
//! # The format
//!
//! - A *whiteout* hides the lower entry of the same name: a character device 0/0
//!   (kernel overlayfs, and fuse-overlayfs when it may create devices), or, in
//!   fuse-overlayfs layers, a file named `.wh.<name>`.
//! - An *opaque* directory hides everything below it in the lowers: the xattr
//!   `trusted.overlay.opaque` (`user.overlay.opaque` on a `userxattr` mount) set to
//!   `y`, or, in fuse-overlayfs layers, `user.fuseoverlayfs.opaque` or a
//!   `.wh..wh..opq` file inside it.
//! - Any other entry replaces the lower entry; a directory that is neither opaque nor
//!   new merges with the lower directory and is read entry by entry.
//!
//! # What is refused
//!
//! Entries that ws never writes and that could make the merged view show something
//! other than the lowers and the user's edits: devices other than whiteouts, and
//! overlay `redirect` or `metacopy` xattrs (the mounts use `redirect_dir=nofollow`
//! and `metacopy=off`, so the kernel refuses them too). The error names the path.
//!
//! # Ignore rules
//!
//! The same as a capture of the merged view: the caller's patterns, and the
//! `.wsignore` files of the merged view, read from the upper where it has one and
//! from the parent tree otherwise.
//!
//! # Concurrent writers
//!
//! Files are hashed as [`treediff::capture`] hashes them (between two stats that must
//! agree, retried when they do not). A write after a file was read leaves it in the
//! upper, newer, so the next read of the layer sees it: a racing write lands in
//! this change set or the next.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::FileType;
use treediff::capture::{IgnorePatterns, IgnoreRules, capture_entry_at};
use treediff::tree::MAX_DEPTH;
use treediff::{CaptureMode, Digest, Dir, Edit, Entry, Mtime, Node, Props, Store, StoreTxn};

use crate::error::SnapshotError;
use crate::sys;

/// Whose conventions the upper follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerFormat {
    /// Kernel overlayfs; `userxattr` mounts keep overlay xattrs in `user.`.
    Kernel {
        /// Whether the mount used `userxattr`.
        userxattr: bool,
    },
    /// fuse-overlayfs.
    Fuse,
}

const FUSE_WHITEOUT_PREFIX: &str = ".wh.";
const FUSE_OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What reading a layer cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadStats {
    /// Entries of the upper looked at.
    pub entries: u64,
    /// Files hashed.
    pub hashed_files: u64,
    /// Directory nodes of the parent tree read.
    pub parent_dirs_read: u64,
}

/// Reads the upper `upper` of snapshot `key` as edits of `parent` (the tree of
/// its lowers; `None` when it has none) and returns the tree of the merged view.
/// New blobs and directory nodes are staged in `txn`; the parent's nodes are read
/// from `txn`'s store.
pub fn read_layer(
    txn: &StoreTxn<'_>,
    key: &str,
    upper: &Path,
    parent: Option<Digest>,
    format: LayerFormat,
    content: CaptureMode,
    ignore_patterns: &[String],
) -> Result<(Digest, ReadStats), SnapshotError> {
    let patterns = IgnoreRules::patterns(ignore_patterns).map_err(SnapshotError::capture(key))?;
    let mut reader = Reader {
        txn,
        store: txn.store(),
        key,
        upper,
        format,
        content,
        patterns,
        edits: Vec::new(),
        stats: ReadStats::default(),
    };
    let root =
        std::fs::File::open(upper).map_err(SnapshotError::io(key, "open the layer", upper))?;
    let root: OwnedFd = root.into();
    let classes = reader.classify(root.as_fd(), "")?;
    let tree = match parent {
        Some(parent) => {
            let lower = reader.read_dir(parent, "")?;
            reader.merge(root.as_fd(), "", classes, &lower, &IgnoreRules::none(), 0)?;
            let edits = std::mem::take(&mut reader.edits);
            treediff::apply(txn, parent, edits)
                .map_err(SnapshotError::tree(key, "apply the layer's changes"))?
        }
        None => {
            // No lowers: the layer is the whole tree.
            let entry = reader.whole(root.as_fd(), "", "", classes, &IgnoreRules::none(), 0)?;
            let Node::Dir { digest } = entry.node else {
                unreachable!("a directory captures as a directory")
            };
            digest
        }
    };
    Ok((tree, reader.stats))
}

struct Reader<'a, 't> {
    txn: &'a StoreTxn<'t>,
    store: &'a Store,
    key: &'a str,
    upper: &'a Path,
    format: LayerFormat,
    content: CaptureMode,
    patterns: IgnorePatterns,
    edits: Vec<Edit>,
    stats: ReadStats,
}

/// How an upper entry is to be read.
enum Class {
    /// Hides the lower entry of this name.
    Whiteout(String),
    /// Bookkeeping of the format (fuse-overlayfs's opaque marker): skipped.
    Marker,
    /// An entry of the view.
    Entry(String, FileType),
}

impl Reader<'_, '_> {
    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.upper.to_owned()
        } else {
            self.upper.join(rel)
        }
    }

    fn io(&self, op: &'static str, rel: &str) -> impl FnOnce(std::io::Error) -> SnapshotError {
        SnapshotError::io(self.key, op, self.path(rel))
    }

    fn read_dir(&mut self, digest: Digest, rel: &str) -> Result<Dir, SnapshotError> {
        self.stats.parent_dirs_read += 1;
        Dir::read(self.store, digest, rel)
            .map_err(SnapshotError::tree(self.key, "read the parent tree"))
    }

    /// Lists `dir` and says what each entry is.
    fn classify(&mut self, dir: BorrowedFd<'_>, rel: &str) -> Result<Vec<Class>, SnapshotError> {
        let listed = sys::list_dir(dir).map_err(self.io("list", rel))?;
        let mut out = Vec::with_capacity(listed.len());
        for (name, mut kind) in listed {
            self.stats.entries += 1;
            let Ok(name) = String::from_utf8(name.clone()) else {
                return Err(SnapshotError::Capture {
                    key: self.key.to_owned(),
                    source: Box::new(treediff::CaptureError::NameNotUtf8 {
                        path: self.path(rel).join(OsStr::from_bytes(&name)),
                    }),
                });
            };
            if kind == FileType::Unknown || kind == FileType::CharacterDevice {
                let st = treediff::safe_fs::lstat_at(dir, OsStr::new(&name))
                    .map_err(std::io::Error::from)
                    .map_err(self.io("stat", &treediff::names::join(rel, &name)))?;
                kind = FileType::from_raw_mode(st.st_mode);
                if kind == FileType::CharacterDevice && st.st_rdev == 0 {
                    out.push(Class::Whiteout(name));
                    continue;
                }
            }
            if self.format == LayerFormat::Fuse {
                if name == FUSE_OPAQUE_MARKER || name == ".wh..opq" {
                    out.push(Class::Marker);
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(FUSE_WHITEOUT_PREFIX) {
                    out.push(Class::Whiteout(hidden.to_owned()));
                    continue;
                }
            }
            out.push(Class::Entry(name, kind));
        }
        Ok(out)
    }

    /// Refuses an entry that carries overlay metadata ws never writes.
    fn check_xattrs(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        rel: &str,
    ) -> Result<(), SnapshotError> {
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd_number(dir))).join(name);
        let mut buf = vec![0u8; 4096];
        let names = match rustix::fs::llistxattr(&proc_path, &mut buf[..]) {
            Ok(n) => &buf[..n],
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(()),
            Err(rustix::io::Errno::RANGE) => &buf[..],
            Err(e) => return Err(self.io("list the xattrs of", rel)(e.into())),
        };
        for xattr in names.split(|b| *b == 0) {
            let xattr = String::from_utf8_lossy(xattr);
            let crafted = ["trusted.overlay.", "user.overlay."].iter().any(|ns| {
                xattr
                    .strip_prefix(ns)
                    .is_some_and(|rest| rest == "redirect" || rest == "metacopy")
            });
            if crafted {
                return Err(SnapshotError::Layer {
                    key: self.key.to_owned(),
                    path: self.path(rel),
                    problem: format!(
                        "carries the overlay xattr {xattr}, which ws never writes (its mounts neither follow redirects nor use metacopy); remove the xattr or the file"
                    ),
                });
            }
        }
        Ok(())
    }

    fn is_opaque(
        &self,
        dir: BorrowedFd<'_>,
        classes: &[Class],
        rel: &str,
    ) -> Result<bool, SnapshotError> {
        let names: &[&str] = match self.format {
            LayerFormat::Kernel { userxattr: false } => &["trusted.overlay.opaque"],
            LayerFormat::Kernel { userxattr: true } => &["user.overlay.opaque"],
            LayerFormat::Fuse => &[
                "trusted.overlay.opaque",
                "user.overlay.opaque",
                "user.fuseoverlayfs.opaque",
            ],
        };
        for name in names {
            let value = sys::xattr(dir, name).map_err(self.io("read the xattrs of", rel))?;
            if value.as_deref() == Some(b"y") {
                return Ok(true);
            }
        }
        Ok(self.format == LayerFormat::Fuse
            && classes.iter().any(|c| matches!(c, Class::Marker))
            && has_marker(dir))
    }

    /// The rules in force in the merged directory `rel`: its `.wsignore` from the
    /// upper if there, else from the lower (unless whited out or opaque).
    fn rules_for(
        &self,
        dir: BorrowedFd<'_>,
        rel: &str,
        classes: &[Class],
        lower: Option<&Dir>,
        parent_rules: &Arc<IgnoreRules>,
    ) -> Result<Arc<IgnoreRules>, SnapshotError> {
        // `.wsignore` files describe sources; a buildtree keeps everything (the
        // build's outputs above all), as a capture of it does.
        if self.content == CaptureMode::Buildtree {
            return Ok(parent_rules.clone());
        }
        let mut text = None;
        let mut hidden = false;
        for class in classes {
            match class {
                Class::Entry(name, kind)
                    if name == ".wsignore" && *kind == FileType::RegularFile =>
                {
                    let path = treediff::names::join(rel, ".wsignore");
                    let file = rustix::fs::openat(
                        dir,
                        ".wsignore",
                        rustix::fs::OFlags::RDONLY
                            | rustix::fs::OFlags::NOFOLLOW
                            | rustix::fs::OFlags::NONBLOCK
                            | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .map_err(|e| self.io("open", &path)(e.into()))?;
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::fs::File::from(file), &mut s)
                        .map_err(self.io("read", &path))?;
                    text = Some(s);
                }
                Class::Entry(name, _) | Class::Whiteout(name) if name == ".wsignore" => {
                    hidden = true
                }
                _ => {}
            }
        }
        if text.is_none()
            && !hidden
            && let Some(lower) = lower
            && let Some(Entry {
                node: Node::File { digest, .. },
                ..
            }) = lower.get(".wsignore")
        {
            let blob = self
                .store
                .read(digest)
                .map_err(SnapshotError::store(self.key))?;
            text = Some(String::from_utf8_lossy(blob.bytes()).into_owned());
        }
        match text {
            Some(text) => IgnoreRules::child(parent_rules, rel, &text)
                .map_err(SnapshotError::capture(self.key)),
            None => Ok(parent_rules.clone()),
        }
    }

    /// Whether `rel` stays out of the change set: ignored by the rules, or one
    /// of the daemon's temporary files, which no tree records.
    fn ignored(&self, rules: &IgnoreRules, rel: &str, is_dir: bool) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        treediff::names::is_daemon_temp(name)
            || self.patterns.ignores(rel, is_dir)
            || rules.ignores(rel, is_dir)
    }

    /// Reads the merged directory `rel` (present in the upper and, as a directory,
    /// in the lower).
    fn merge(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &str,
        classes: Vec<Class>,
        lower: &Dir,
        parent_rules: &Arc<IgnoreRules>,
        depth: usize,
    ) -> Result<(), SnapshotError> {
        let rules = self.rules_for(dir, rel, &classes, Some(lower), parent_rules)?;
        if self.content == CaptureMode::Buildtree {
            let st = rustix::fs::fstat(dir).map_err(|e| self.io("stat", rel)(e.into()))?;
            let props = Some(props_of(&st));
            if props != lower.props {
                self.edits.push(Edit::SetDirProps {
                    path: rel.to_owned(),
                    props,
                });
            }
        }
        for class in classes {
            let (name, kind) = match class {
                Class::Marker => continue,
                Class::Whiteout(name) => {
                    if lower.get(&name).is_some() {
                        self.edits.push(Edit::Delete {
                            path: treediff::names::join(rel, &name),
                        });
                    }
                    continue;
                }
                Class::Entry(name, kind) => (name, kind),
            };
            let child_rel = treediff::names::join(rel, &name);
            let is_dir = kind == FileType::Directory;
            if self.ignored(&rules, &child_rel, is_dir) {
                continue;
            }
            self.check_xattrs(dir, &name, &child_rel)?;
            if is_dir {
                if depth + 1 > MAX_DEPTH {
                    return Err(self.too_deep(&child_rel));
                }
                let fd = treediff::safe_fs::open_dir_at(dir, OsStr::new(&name))
                    .map_err(std::io::Error::from)
                    .map_err(self.io("open", &child_rel))?;
                let child_classes = self.classify(fd.as_fd(), &child_rel)?;
                let opaque = self.is_opaque(fd.as_fd(), &child_classes, &child_rel)?;
                let lower_dir = match lower.get(&name) {
                    Some(Entry {
                        node: Node::Dir { digest },
                        ..
                    }) if !opaque => Some(*digest),
                    _ => None,
                };
                match lower_dir {
                    Some(digest) => {
                        let lower_child = self.read_dir(digest, &child_rel)?;
                        self.merge(
                            fd.as_fd(),
                            &child_rel,
                            child_classes,
                            &lower_child,
                            &rules,
                            depth + 1,
                        )?;
                    }
                    None => {
                        let entry = self.whole(
                            fd.as_fd(),
                            &name,
                            &child_rel,
                            child_classes,
                            &rules,
                            depth + 1,
                        )?;
                        self.edits.push(Edit::Put {
                            path: child_rel,
                            entry,
                        });
                    }
                }
            } else {
                let entry = self.entry(dir, &name, &child_rel, kind)?;
                self.edits.push(Edit::Put {
                    path: child_rel,
                    entry,
                });
            }
        }
        Ok(())
    }

    /// Captures the directory `rel` of the upper as a whole (new or opaque: nothing
    /// of the lower shows through it) and stages its node.
    fn whole(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        rel: &str,
        classes: Vec<Class>,
        parent_rules: &Arc<IgnoreRules>,
        depth: usize,
    ) -> Result<Entry, SnapshotError> {
        let rules = self.rules_for(dir, rel, &classes, None, parent_rules)?;
        let mut entries = Vec::new();
        for class in classes {
            let Class::Entry(child, kind) = class else {
                continue;
            };
            let child_rel = treediff::names::join(rel, &child);
            let is_dir = kind == FileType::Directory;
            if self.ignored(&rules, &child_rel, is_dir) {
                continue;
            }
            self.check_xattrs(dir, &child, &child_rel)?;
            if is_dir {
                if depth + 1 > MAX_DEPTH {
                    return Err(self.too_deep(&child_rel));
                }
                let fd = treediff::safe_fs::open_dir_at(dir, OsStr::new(&child))
                    .map_err(std::io::Error::from)
                    .map_err(self.io("open", &child_rel))?;
                let child_classes = self.classify(fd.as_fd(), &child_rel)?;
                entries.push(self.whole(
                    fd.as_fd(),
                    &child,
                    &child_rel,
                    child_classes,
                    &rules,
                    depth + 1,
                )?);
            } else {
                entries.push(self.entry(dir, &child, &child_rel, kind)?);
            }
        }
        let props = if self.content == CaptureMode::Buildtree {
            let st = rustix::fs::fstat(dir).map_err(|e| self.io("stat", rel)(e.into()))?;
            Some(props_of(&st))
        } else {
            None
        };
        let node = Dir::new(entries, props).map_err(|problem| SnapshotError::Layer {
            key: self.key.to_owned(),
            path: self.path(rel),
            problem,
        })?;
        let digest = node
            .write(self.txn)
            .map_err(SnapshotError::store(self.key))?;
        Ok(Entry {
            name: name.to_owned(),
            node: Node::Dir { digest },
            props: None,
        })
    }

    /// Captures a file or symlink; refuses devices, FIFOs and sockets.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        rel: &str,
        kind: FileType,
    ) -> Result<Entry, SnapshotError> {
        if matches!(kind, FileType::CharacterDevice | FileType::BlockDevice) {
            return Err(SnapshotError::Layer {
                key: self.key.to_owned(),
                path: self.path(rel),
                problem: "is a device node, which a workspace cannot hold (its mounts are nodev); remove it".to_owned(),
            });
        }
        if kind == FileType::RegularFile {
            self.stats.hashed_files += 1;
        }
        capture_entry_at(self.txn, dir, name, &self.path(rel), self.content)
            .map_err(SnapshotError::capture(self.key))
    }

    fn too_deep(&self, rel: &str) -> SnapshotError {
        SnapshotError::Capture {
            key: self.key.to_owned(),
            source: Box::new(treediff::CaptureError::TooDeep {
                path: self.path(rel),
            }),
        }
    }
}

fn has_marker(dir: BorrowedFd<'_>) -> bool {
    treediff::safe_fs::lstat_at(dir, OsStr::new(FUSE_OPAQUE_MARKER)).is_ok()
}

fn fd_number(fd: BorrowedFd<'_>) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// Buildtree properties of a directory, as a capture records them.
fn props_of(st: &rustix::fs::Stat) -> Props {
    Props {
        mtime: Some(Mtime {
            seconds: st.st_mtime,
            nanos: st.st_mtime_nsec as u32,
        }),
        unix_mode: Some(st.st_mode & 0o777),
    }
}
