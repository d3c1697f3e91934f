//! Project sources watched with inotify, so that an element's sources that
//! have not changed since their last import are not walked again: a cache hit
//! or `ws open ELEMENT` on a 100k-file element then costs no stat per file.
//!
//! Before a directory is imported, every directory under it is watched (one
//! watch per directory, for changes to the entries in it). Each watched root
//! has a generation that every event under it bumps; an import's tree is
//! remembered with the generation it started at, and reused while the
//! generation is the same, that is while nothing under the root has changed
//! since before the walk began. A root is watched per [`SourceKey`]: a tree is
//! reused only for the credentials that read it (a change of groups makes it
//! another key), as the walk it saves would have run with them.
//!
//! The kernel queues an event before the write that causes it returns, so the
//! queue is read *when asked* (the descriptor is non-blocking), not by a
//! thread that might not have caught up: an edit followed at once by
//! `ws build` is always seen. Anything the watches cannot vouch for is a
//! miss, never a wrong tree: a queue overflow or a removed watch bumps the
//! generation, a root with more than [`MAX_DIRS`] directories or a failed watch
//! is not remembered, and gc forgets everything (the trees may be swept).
//!
//! The watches are armed as the caller (on a thread with their credentials,
//! so the kernel lets them watch only what they may read), through
//! descriptors: each directory is opened from its parent's descriptor without
//! following a symlink, and watched through its `/proc/self/fd` link, so a
//! directory swapped for a symlink during the walk sends no watch elsewhere.
//! Every watch counts against the daemon's own inotify limit, shared by every
//! user: one user's roots together get at most [`MAX_DIRS_PER_USER`]
//! directories, past which their imports walk.
//!
//! Not seen: writes through a hard link in a directory outside the root, and
//! writes to a file through a shared mapping (the kernel reports neither to
//! the root's watches). `ws build` outside a workspace is meant for sources
//! edited the usual way; a user who changes them otherwise can touch a file.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::sync::Mutex;

use rustix::fs::FileType;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use treediff::Digest;

use super::import::ImportOptions;
use crate::access::{Reader, ReaderId, SourceDir};

/// The most directories watched under one root: a bigger one is walked at every
/// import (watches cost kernel memory, and the user's limit is shared).
pub const MAX_DIRS: usize = 50_000;

/// The most directories watched for one user, over all their roots.
pub const MAX_DIRS_PER_USER: usize = 100_000;

/// What an import's tree depends on besides the directory's content: who read
/// it (the credentials, supplementary groups included: they decide what could
/// be read, and a tree is reused only for the very credentials that read it),
/// which directory (by device and inode, of the descriptor the caller's
/// credentials opened: a path can be swapped) and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    reader: ReaderId,
    dev: u64,
    ino: u64,
    options: String,
}

impl SourceKey {
    /// The key of importing `dir`, opened by `reader`, with `options`.
    pub fn new(reader: ReaderId, dir: &SourceDir, options: &ImportOptions) -> SourceKey {
        SourceKey {
            reader,
            dev: dir.dev,
            ino: dir.ino,
            options: format!("{:?} {:?}", options.mode, options.ignore),
        }
    }
}

/// The watches and what they vouch for.
#[derive(Debug)]
pub struct SourceWatch {
    inotify: Inotify,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    roots: HashMap<SourceKey, Root>,
    /// Several roots may watch one directory (other users, other options).
    by_watch: HashMap<WatchDescriptor, Vec<SourceKey>>,
}

#[derive(Debug, Default)]
struct Root {
    /// Whose imports it serves (for the per-user budget).
    uid: u32,
    generation: u64,
    /// The tree of the last import, and the generation it started at.
    tree: Option<(Digest, u64)>,
    watches: Vec<WatchDescriptor>,
}

/// What an event or a lost watch does to a root: nothing it vouched for holds.
fn bump(state: &mut State, key: &SourceKey) {
    if let Some(root) = state.roots.get_mut(key) {
        root.generation += 1;
    }
}

impl SourceWatch {
    /// Starts watching; `None` where inotify is not available, and every import
    /// walks.
    pub fn start() -> Option<SourceWatch> {
        match Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) {
            Ok(inotify) => Some(SourceWatch {
                inotify,
                state: Mutex::new(State::default()),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no inotify: project sources are walked at every build");
                None
            }
        }
    }

    /// The tree `key`'s directory had at its last import, if nothing under it
    /// has changed since that import began.
    pub fn unchanged(&self, key: &SourceKey) -> Option<Digest> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.read_events(&mut state);
        let root = state.roots.get(key)?;
        root.tree
            .and_then(|(tree, at)| (at == root.generation).then_some(tree))
    }

    /// Watches every directory under `dir` (opened by `reader`, for `uid`)
    /// before it is imported, as the reader; returns the generation to
    /// [`record`](Self::record) the import's tree with, or `None` when the
    /// directory cannot be watched whole (then nothing is remembered).
    pub fn arm(&self, key: &SourceKey, dir: &SourceDir, reader: &Reader, uid: u32) -> Option<u64> {
        // The generation before the first watch: an event from here on, even
        // one that comes while the rest are added, makes the import unvouched.
        let (start, budget) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.read_events(&mut state);
            let used: usize = state
                .roots
                .iter()
                .filter(|(k, r)| r.uid == uid && *k != key)
                .map(|(_, r)| r.watches.len())
                .sum();
            let root = state.roots.entry(key.clone()).or_default();
            root.uid = uid;
            root.generation += 1;
            root.tree = None;
            (
                root.generation,
                MAX_DIRS.min(MAX_DIRS_PER_USER.saturating_sub(used)),
            )
        };
        let walked = crate::access::as_reader(reader, || Ok(self.watch_tree(dir, budget)));
        let watches = match walked {
            Ok(Ok(watches)) => watches,
            Ok(Err(why)) | Err(why) => {
                tracing::info!(dir = %dir.shown().display(), uid, why = %why, "cannot watch the sources: walked at every build");
                return None;
            }
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::take(&mut state.roots.get_mut(key)?.watches);
        for wd in &watches {
            let keys = state.by_watch.entry(*wd).or_default();
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        for wd in old.into_iter().filter(|wd| !watches.contains(wd)) {
            let unused = state.by_watch.get_mut(&wd).is_some_and(|keys| {
                keys.retain(|k| k != key);
                keys.is_empty()
            });
            if unused {
                state.by_watch.remove(&wd);
                let _ = self.inotify.rm_watch(wd);
            }
        }
        state.roots.get_mut(key)?.watches = watches;
        Some(start)
    }

    /// Remembers `tree` as `key`'s, imported by a walk that began at `generation`.
    pub fn record(&self, key: &SourceKey, generation: u64, tree: Digest) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(root) = state.roots.get_mut(key) {
            root.tree = Some((tree, generation));
        }
    }

    /// Watches `dir` and every directory under it, at most `budget` of them,
    /// walking by descriptors (see the module doc).
    fn watch_tree(&self, dir: &SourceDir, budget: usize) -> std::io::Result<Vec<WatchDescriptor>> {
        let mask = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR
            | AddWatchFlags::IN_DONT_FOLLOW;
        let open = treediff::safe_fs::open_dir_at;
        let mut watches = Vec::new();
        // Each directory's parent stays open until its children are walked.
        let mut todo: Vec<(Rc<OwnedFd>, OsString)> = Vec::new();
        let mut current = Some(Rc::new(open(dir.as_fd(), OsStr::new("."))?));
        loop {
            let fd = match current.take() {
                Some(fd) => fd,
                None => match todo.pop() {
                    Some((parent, name)) => match open(parent.as_fd(), &name) {
                        Ok(fd) => Rc::new(fd),
                        // Gone or replaced meanwhile: the event on its parent says so.
                        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => continue,
                        Err(rustix::io::Errno::LOOP) => continue,
                        Err(e) => return Err(e.into()),
                    },
                    None => return Ok(watches),
                },
            };
            if watches.len() == budget {
                return Err(std::io::Error::other(format!(
                    "more than {budget} directories to watch (at most {MAX_DIRS} under one root, {MAX_DIRS_PER_USER} for one user)"
                )));
            }
            // From here on the directory is reached only through `fd`.
            treediff::race_point("watch-before-arm");
            // Through `N/.`: IN_DONT_FOLLOW would watch the `/proc` link itself.
            let link = format!("/proc/self/fd/{}/.", fd.as_raw_fd());
            match self.inotify.add_watch(link.as_str(), mask) {
                Ok(wd) => watches.push(wd),
                Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                Err(e) => return Err(e.into()),
            }
            for entry in rustix::fs::Dir::read_from(fd.as_fd())? {
                let entry = entry?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let kind = entry.file_type();
                if kind == FileType::Directory || kind == FileType::Unknown {
                    todo.push((fd.clone(), OsStr::from_bytes(name).to_owned()));
                }
            }
        }
    }

    /// Forgets every tree (gc may sweep them); the watches stay.
    pub fn forget_trees(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for root in state.roots.values_mut() {
            root.tree = None;
        }
    }
}

impl SourceWatch {
    /// Reads the queued events: each bumps the roots watching its directory.
    fn read_events(&self, state: &mut State) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read inotify events: forgetting every watched tree");
                    for root in state.roots.values_mut() {
                        root.generation += 1;
                    }
                    return;
                }
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    for root in state.roots.values_mut() {
                        root.generation += 1;
                    }
                    continue;
                }
                let keys = if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    state.by_watch.remove(&event.wd).unwrap_or_default()
                } else {
                    state.by_watch.get(&event.wd).cloned().unwrap_or_default()
                };
                for key in &keys {
                    bump(state, key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::Caller;
    use std::path::{Path, PathBuf};

    const ME: Caller = Caller { uid: 0, gid: 0 };

    fn digest(text: &str) -> Digest {
        Digest::of(text.as_bytes())
    }

    /// `dir` opened as an import opens it, with its key for `caller`.
    fn opened(caller: Caller, dir: &Path, options: &ImportOptions) -> (SourceDir, SourceKey) {
        let mine = Reader::for_caller(ME).unwrap();
        let dir = mine.open_dir(dir).unwrap();
        let reader = Reader::for_caller(caller).unwrap();
        let key = SourceKey::new(reader.id(), &dir, options);
        (dir, key)
    }

    /// A watched root with `tree` remembered, as an import leaves it: armed
    /// through the descriptor's `/proc/self/fd` path, as imports arm it.
    fn imported(watch: &SourceWatch, dir: &Path, tree: Digest) -> SourceKey {
        let (dir, key) = opened(ME, dir, &ImportOptions::default());
        let reader = Reader::for_caller(ME).unwrap();
        let generation = watch.arm(&key, &dir, &reader, ME.uid).unwrap();
        watch.record(&key, generation, tree);
        key
    }

    #[test]
    fn an_unchanged_directory_keeps_its_tree_and_any_change_below_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/file"), "1").unwrap();
        std::fs::write(dir.path().join("top"), "1").unwrap();
        let watch = SourceWatch::start().unwrap();
        let tree = digest("tree");
        let changes: [&dyn Fn(&Path); 8] = [
            &|d| std::fs::write(d.join("a/b/file"), "2").unwrap(),
            &|d| std::fs::write(d.join("a/new"), "").unwrap(),
            &|d| std::fs::remove_file(d.join("a/new")).unwrap(),
            &|d| std::fs::rename(d.join("a/b/file"), d.join("a/b/renamed")).unwrap(),
            &|d| {
                use std::os::unix::fs::PermissionsExt;
                let p = std::fs::Permissions::from_mode(0o755);
                std::fs::set_permissions(d.join("a/b/renamed"), p).unwrap()
            },
            &|d| std::fs::create_dir(d.join("a/b/c")).unwrap(),
            // In the root itself, which is watched through its descriptor.
            &|d| std::fs::write(d.join("top"), "2").unwrap(),
            &|d| std::fs::write(d.join("new-at-the-top"), "").unwrap(),
        ];
        for (i, change) in changes.iter().enumerate() {
            let key = imported(&watch, dir.path(), tree);
            assert_eq!(watch.unchanged(&key), Some(tree), "change {i}: before");
            change(dir.path());
            // At once: the event is queued before the write returns.
            assert_eq!(watch.unchanged(&key), None, "change {i}: after");
        }
        // A directory made since the last arm is watched by the next.
        let key = imported(&watch, dir.path(), tree);
        std::fs::write(dir.path().join("a/b/c/deep"), "").unwrap();
        assert_eq!(watch.unchanged(&key), None);
    }

    #[test]
    fn watches_are_armed_with_the_callers_rights() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // `nobody` may list the root but not the 0700 directory in it: the
        // root cannot be watched whole for them, and nothing is remembered
        // (their import fails on that directory anyway).
        let nobody = Caller {
            uid: 65534,
            gid: 65534,
        };
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("private")).unwrap();
        std::fs::set_permissions(
            dir.path().join("private"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let watch = SourceWatch::start().unwrap();
        let (theirs, key) = opened(nobody, dir.path(), &ImportOptions::default());
        let reader = Reader::for_caller(nobody).unwrap();
        assert_eq!(watch.arm(&key, &theirs, &reader, nobody.uid), None);
        // Root may: the same directory is watched whole for it.
        let (mine, key) = opened(ME, dir.path(), &ImportOptions::default());
        let reader = Reader::for_caller(ME).unwrap();
        assert!(watch.arm(&key, &mine, &reader, ME.uid).is_some());
    }

    /// A directory as the kernel names it in an inotify descriptor's fdinfo:
    /// its filesystem's device (major, minor) and its inode.
    type Watched = (u32, u32, u64);

    fn identity(path: &Path) -> Watched {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).unwrap();
        let dev = meta.dev();
        (rustix::fs::major(dev), rustix::fs::minor(dev), meta.ino())
    }

    /// The directories `watch` holds a watch on, from the kernel: the lines
    /// `inotify wd:N ino:HEX sdev:HEX ...` of `/proc/self/fdinfo/<fd>`.
    fn watched(watch: &SourceWatch) -> Vec<Watched> {
        let fd = watch.inotify.as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let hex = |line: &str, field: &str| {
            let value = line.split(' ').find_map(|f| f.strip_prefix(field));
            u64::from_str_radix(value.expect(field), 16).unwrap()
        };
        info.lines()
            .filter(|line| line.starts_with("inotify "))
            .map(|line| {
                // The kernel's own encoding: 12 bits of major, 20 of minor.
                let sdev = hex(line, "sdev:");
                (
                    (sdev >> 20) as u32,
                    (sdev & 0xf_ffff) as u32,
                    hex(line, "ino:"),
                )
            })
            .collect()
    }

    /// A race loop (1,000 rounds, `WS_RACE_ROUNDS` for more): while the
    /// caller, on a thread of their own, swaps each directory of their source
    /// tree in turn for a symlink to one of root's (one only root may read,
    /// one anyone may read, directories in those) and back, root arms the
    /// watches on the tree again and again, as the caller. After every arm,
    /// each watch the kernel lists is on one of the caller's own directories:
    /// never on root's, and so never on one the caller may not read.
    #[test]
    fn racing_symlink_swaps_never_get_a_watch_on_anyone_elses_directory() {
        use std::collections::{HashMap, HashSet};
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use crate::testing::{NOBODY, Rng, exchange, rounds, with_racer};

        if !overlay::testsuite::privileged(
            "racing_symlink_swaps_never_get_a_watch_on_anyone_elses_directory",
        ) {
            return;
        }
        let caller = NOBODY;
        let dir = tempfile::tempdir().unwrap();
        let mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        mode(dir.path(), 0o755);
        let src = dir.path().join("src");
        let swappable = ["a", "a/b", "a/b/c", "d", "d/e"];
        for d in std::iter::once("").chain(swappable) {
            std::fs::create_dir_all(src.join(d)).unwrap();
            std::os::unix::fs::chown(src.join(d), Some(caller.uid), Some(caller.gid)).unwrap();
        }
        let roots = [
            ("rootonly", 0o700),
            ("rootonly/in", 0o755),
            ("rootpub", 0o755),
            ("rootpub/open", 0o755),
            ("rootpub/closed", 0o700),
            ("rootpub/closed/in", 0o755),
        ];
        for (d, m) in roots {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            mode(&dir.path().join(d), m);
        }
        let own: HashSet<Watched> = std::iter::once("")
            .chain(swappable)
            .map(|d| identity(&src.join(d)))
            .collect();
        let roots: HashMap<Watched, PathBuf> = std::iter::once(dir.path().to_owned())
            .chain(roots.iter().map(|(d, _)| dir.path().join(d)))
            .map(|d| (identity(&d), d))
            .collect();
        let targets: Vec<&PathBuf> = roots.values().collect();

        let watch = SourceWatch::start().unwrap();
        let reader = Reader::for_caller(caller).unwrap();
        let opened = reader.open_dir(&src).unwrap();
        let key = SourceKey::new(reader.id(), &opened, &ImportOptions::default());
        let swaps = AtomicUsize::new(0);
        let (mut whole, mut raced) = (0, 0);
        let started = std::time::Instant::now();
        let rounds = rounds();
        let swap = |rng: &mut Rng| {
            let d = src.join(swappable[rng.below(swappable.len() as u64) as usize]);
            let target = targets[rng.below(targets.len() as u64) as usize];
            let link = d.with_file_name(".swapped");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).unwrap();
            // Odd while a symlink stands where the directory was.
            swaps.fetch_add(1, Ordering::Relaxed);
            assert!(exchange(&d, &link), "swap {}", d.display());
            rng.pause(300);
            assert!(exchange(&d, &link), "swap back {}", d.display());
            swaps.fetch_add(1, Ordering::Relaxed);
            rng.pause(300);
        };
        with_racer(caller, swap, || {
            for round in 0..rounds {
                let before = swaps.load(Ordering::Relaxed);
                let armed = watch.arm(&key, &opened, &reader, caller.uid);
                if before % 2 == 1 || swaps.load(Ordering::Relaxed) != before {
                    raced += 1;
                }
                whole += usize::from(armed.is_some());
                for w in watched(&watch) {
                    assert!(
                        own.contains(&w),
                        "round {round}: a watch on {}",
                        roots.get(&w).map_or_else(
                            || format!("{w:?}, none of the caller's directories"),
                            |path| format!("root's {}", path.display())
                        )
                    );
                }
            }
        });
        eprintln!(
            "source watch race: {rounds} arms in {:.1} s, {raced} raced by a swap, {whole} watched the tree whole, {} swaps",
            started.elapsed().as_secs_f64(),
            swaps.load(Ordering::Relaxed) / 2
        );
        assert!(
            raced >= rounds / 4,
            "only {raced} of {rounds} arms met a swap: the race proves little"
        );
        assert!(
            whole >= rounds / 4,
            "only {whole} of {rounds} arms watched the tree whole"
        );
    }

    #[test]
    fn a_change_during_the_import_is_not_vouched_for() {
        let dir = tempfile::tempdir().unwrap();
        let watch = SourceWatch::start().unwrap();
        let (opened, key) = opened(ME, dir.path(), &ImportOptions::default());
        let reader = Reader::for_caller(ME).unwrap();
        let generation = watch.arm(&key, &opened, &reader, ME.uid).unwrap();
        std::fs::write(dir.path().join("written-while-walking"), "").unwrap();
        watch.record(&key, generation, digest("tree"));
        assert_eq!(watch.unchanged(&key), None);
    }

    #[test]
    fn other_callers_options_and_a_forgetting_gc_miss() {
        let dir = tempfile::tempdir().unwrap();
        let watch = SourceWatch::start().unwrap();
        let key = imported(&watch, dir.path(), digest("tree"));
        let other = Caller {
            uid: 1000,
            gid: 1000,
        };
        let (_, theirs) = opened(other, dir.path(), &ImportOptions::default());
        assert_eq!(watch.unchanged(&theirs), None);
        let ignoring = ImportOptions {
            ignore: vec!["*.o".into()],
            ..ImportOptions::default()
        };
        let (_, ignoring) = opened(ME, dir.path(), &ignoring);
        assert_eq!(watch.unchanged(&ignoring), None);
        watch.forget_trees();
        assert_eq!(watch.unchanged(&key), None);
    }
    /// The inodes `watch` has watches on, from its descriptor's `fdinfo`.
    fn watched_inodes(watch: &SourceWatch) -> Vec<u64> {
        use std::os::fd::{AsFd, AsRawFd};
        let fd = watch.inotify.as_fd().as_raw_fd();
        std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("inotify "))
            .map(|l| {
                let ino = l.split(' ').find_map(|f| f.strip_prefix("ino:")).unwrap();
                u64::from_str_radix(ino, 16).unwrap()
            })
            .collect()
    }

    /// A directory swapped for a symlink to root's between the walk's open
    /// and the watch (the race point `watch-before-arm`, on the second
    /// directory) is watched where it was opened; root's directory, which
    /// the caller (root here, so the kernel would not refuse) could watch by
    /// path, is not watched.
    #[test]
    fn a_directory_swapped_after_its_open_is_watched_where_it_was_opened() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("a")).unwrap();
        let secret = dir.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        let ino = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
        let (src_ino, a_ino, secret_ino) = (ino(&src), ino(&src.join("a")), ino(&secret));
        // The point is process-wide; it swaps only on this test's thread.
        thread_local!(static SWAP: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
        let (a, moved, target) = (src.join("a"), src.join("a.moved"), secret.clone());
        SWAP.with(|n| n.set(1));
        fail::cfg_callback("watch-before-arm", move || {
            // 1: the root is about to be watched; 2: `a` is open.
            SWAP.with(|n| match n.get() {
                0 => {}
                1 => n.set(2),
                _ => {
                    n.set(0);
                    std::fs::rename(&a, &moved).unwrap();
                    std::os::unix::fs::symlink(&target, &a).unwrap();
                }
            })
        })
        .unwrap();
        let watch = SourceWatch::start().unwrap();
        let (opened, key) = opened(ME, &src, &ImportOptions::default());
        let reader = Reader::for_caller(ME).unwrap();
        let armed = watch.arm(&key, &opened, &reader, ME.uid);
        let swapped = SWAP.with(|n| n.get()) == 0;
        fail::remove("watch-before-arm");
        assert!(
            swapped,
            "the point was not reached twice: nothing was swapped"
        );
        assert!(armed.is_some());
        let mut watched = watched_inodes(&watch);
        watched.sort();
        let mut expected = vec![src_ino, a_ino];
        expected.sort();
        assert!(
            !watched.contains(&secret_ino),
            "root's directory, where the swapped path leads, is watched"
        );
        assert_eq!(watched, expected);
    }
}
