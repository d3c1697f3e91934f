//! fuse-overlayfs servers: started by this process in the foreground, known by
//! what this process recorded when it started them, and signalled through
//! their pidfds only.
//!
//! # Where a server mounts
//!
//! A server is `fuse-overlayfs -f`: it stays in the foreground, a child of this
//! process, with the layers and a mount point on its command line. Under root
//! that mount point is a staging directory of the daemon's, which no one else
//! can reach. Once the mount shows there (the directory's mount id changes,
//! asked without the server's help), a clone of it is attached to the
//! descriptor of the user's directory and the staging mount is detached: the
//! server never sees a path that a user could redirect. The clone keeps the
//! superblock, and so the server's connection, alive; when the last mount of
//! it goes, the kernel ends the connection and the server exits by itself.
//!
//! # What is in use
//!
//! Which layers a server serves and where its view is are this process's own
//! records, never a process's command line, which anyone can write. A view is
//! recorded until it is unmounted through this crate or its server dies. After
//! an unmount its server has [`EXIT_WAIT`] to exit and is then terminated, so
//! no server of this process writes to a layer once its view is gone (a copy
//! of the mount in another mount namespace, which would keep it serving, loses
//! its server too).
//!
//! # Across restarts
//!
//! Servers outlive the process that started them: nothing kills them, so the
//! views stay up while the daemon restarts. The next process knows none of
//! them. Its caller unmounts each view it recorded (by mount id, so nothing
//! else), and the old server exits; it mounts the view again with a server of
//! its own. A view that cannot be unmounted because files are open in it is
//! adopted instead ([`adopt_fuse_view`]): recorded, with no server to signal,
//! until it is unmounted.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::{attach_clone, detach, mount_error, mount_id, path_mount_id};
use crate::error::SnapshotError;
use crate::plan::{MountPlan, OverlayPlan};

/// The program that serves [`MountPlan::Fuse`] plans.
pub const FUSE_OVERLAYFS: &str = "fuse-overlayfs";

/// How long a server may take to mount.
const MOUNT_WAIT: Duration = Duration::from_secs(10);

/// How long a server may take to exit once its mount is gone (it takes
/// milliseconds), or once told to, before it is killed.
const EXIT_WAIT: Duration = Duration::from_secs(2);

const OP: &str = "mount fuse-overlayfs on";

/// A view served by fuse-overlayfs, as recorded when it was mounted.
#[derive(Debug)]
struct Served {
    /// The layers.
    layers: OverlayPlan,
    /// Where the view was attached.
    view: PathBuf,
    /// The unique id of the view's mount.
    mount_id: u64,
    /// Its server, if this process started it.
    server: Option<Server>,
}

/// Every view this process mounted with fuse-overlayfs, or adopted.
static SERVED: Mutex<Vec<Served>> = Mutex::new(Vec::new());

fn served() -> MutexGuard<'static, Vec<Served>> {
    SERVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves `plan` on the directory `target` (`path` names it in errors and in
/// the record) through the empty directory `staging`: see the module doc.
/// Returns the unique id of the mount attached to `target`.
pub(crate) fn mount_on(
    plan: &OverlayPlan,
    target: BorrowedFd<'_>,
    path: &Path,
    staging: &Path,
) -> Result<u64, SnapshotError> {
    let mut server = Server::mount(plan, staging, path)?;
    let attached = attach_clone(staging, target, path);
    if attached.is_err() {
        server.stop();
    }
    // After the stop too: a server that had to be killed leaves its mount.
    let _ = detach(staging);
    let id = attached?;
    record(plan, path, id, Some(server));
    Ok(id)
}

/// Serves `plan` on the directory `target`, a path of this process's own user
/// (a build's view in the state directory, a daemon without privileges'
/// mount point). Returns the unique id of the mount.
pub(crate) fn mount_at(plan: &OverlayPlan, target: &Path) -> Result<u64, SnapshotError> {
    let mut server = Server::mount(plan, target, target)?;
    match path_mount_id(target) {
        Ok(id) => {
            record(plan, target, id, Some(server));
            Ok(id)
        }
        Err(e) => {
            server.stop();
            Err(mount_error(OP, target, e, String::new()))
        }
    }
}

/// Records that the mount `mount_id` at `path`, which an earlier process made
/// and which is still in use, serves `plan`: until it is unmounted, its layers
/// count as in use and their readers flush it first. Its server (of that
/// earlier process) is not known, and is never signalled. Plans other than
/// [`MountPlan::Fuse`], and views already recorded, are left alone.
pub fn adopt_fuse_view(plan: &MountPlan, path: &Path, mount_id: u64) {
    let MountPlan::Fuse(layers) = plan else {
        return;
    };
    let mut served = served();
    if !served.iter().any(|s| s.mount_id == mount_id) {
        served.push(Served::new(layers, path, mount_id, None));
    }
}

fn record(layers: &OverlayPlan, view: &Path, mount_id: u64, server: Option<Server>) {
    served().push(Served::new(layers, view, mount_id, server));
}

impl Served {
    fn new(layers: &OverlayPlan, view: &Path, mount_id: u64, server: Option<Server>) -> Served {
        Served {
            layers: layers.clone(),
            view: view.to_owned(),
            mount_id,
            server,
        }
    }
}

/// Forgets the view of the mount `mount_id`, just unmounted, and sees its
/// server gone (see the module doc).
pub(crate) fn forget_mount(mount_id: u64) {
    forget(|s| s.mount_id == mount_id);
}

/// Forgets the views recorded at `path`, just unmounted, and sees their
/// servers gone.
pub(crate) fn forget_view(path: &Path) {
    forget(|s| s.view == path);
}

fn forget(which: impl Fn(&Served) -> bool) {
    let gone: Vec<Served> = {
        let mut served = served();
        let (gone, kept) = std::mem::take(&mut *served).into_iter().partition(which);
        *served = kept;
        gone
    };
    // Outside the lock: other mounts need not wait for these exits.
    for mut view in gone {
        if let Some(server) = &mut view.server {
            server.finish();
        }
    }
}

/// A view of a fuse-overlayfs mount that uses a layer: where, and which mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServedView {
    /// Where the view was attached.
    pub path: PathBuf,
    /// The unique id of its mount.
    pub mount_id: u64,
    /// Its server's process id, if this process started it.
    pub pid: Option<u32>,
}

/// The recorded views whose layers (lowers, upper, work directory) are `dir`
/// or under it, whose servers still run. Servers that died are forgotten here.
pub(crate) fn views_using(dir: &Path) -> Vec<ServedView> {
    let mut served = served();
    served.retain_mut(|s| s.server.as_mut().is_none_or(Server::running));
    served
        .iter()
        .filter(|s| uses(&s.layers, dir))
        .map(|s| ServedView {
            path: s.view.clone(),
            mount_id: s.mount_id,
            pid: s.server.as_ref().map(|server| server.child.id()),
        })
        .collect()
}

/// Flushes the writes cached in the kernel for the views that use `dir`
/// (fuse-overlayfs mounts use the writeback cache, so a write may not have
/// reached the upper yet): each view is opened without following symlinks and
/// checked to be the recorded mount, then `syncfs`ed. A view whose path no
/// longer leads to it is flushed with every other filesystem (`sync`).
pub(crate) fn flush_views_using(dir: &Path) -> std::io::Result<()> {
    for view in views_using(dir) {
        match open_view(&view) {
            Some(fd) => rustix::fs::syncfs(&fd)?,
            None => rustix::fs::sync(),
        }
    }
    Ok(())
}

/// The root of `view`, if its path still leads to its mount.
fn open_view(view: &ServedView) -> Option<OwnedFd> {
    let fd = treediff::safe_fs::open_dir_no_symlinks(&view.path).ok()?;
    (mount_id(fd.as_fd()).ok()? == view.mount_id).then_some(fd)
}

/// Whether any layer of `plan` is `dir` or under it.
fn uses(plan: &OverlayPlan, dir: &Path) -> bool {
    let upper = plan.upper.iter().flat_map(|u| [&u.dir, &u.work]);
    plan.lowers.iter().chain(upper).any(|p| p.starts_with(dir))
}

/// fuse-overlayfs's options: the layers, and the FUSE mount flags. It has no
/// redirects, metacopy or index to turn off.
fn options(plan: &OverlayPlan) -> String {
    let lowers: Vec<String> = plan.lowers.iter().map(|p| crate::plan::escape(p)).collect();
    let mut options = vec![format!("lowerdir={}", lowers.join(":"))];
    if let Some(upper) = &plan.upper {
        options.push(format!("upperdir={}", crate::plan::escape(&upper.dir)));
        options.push(format!("workdir={}", crate::plan::escape(&upper.work)));
    }
    options.push("nosuid,nodev".to_owned());
    options.join(",")
}

/// A fuse-overlayfs process this process started, and its pidfd.
#[derive(Debug)]
struct Server {
    child: Child,
    pidfd: OwnedFd,
    /// What it wrote to its stderr while it mounted: a memory file, which
    /// neither fills up and blocks it nor breaks (SIGPIPE) once nobody reads
    /// it; dropped once it serves.
    stderr: Option<File>,
}

impl Server {
    /// Starts a server of `plan` that mounts on `at` (`shown` in errors), and
    /// waits until its mount shows there. What the server said goes into the
    /// error when it fails, and nowhere once it serves (as of a daemon).
    fn mount(plan: &OverlayPlan, at: &Path, shown: &Path) -> Result<Server, SnapshotError> {
        let fail = |e: std::io::Error, said: String| mount_error(OP, shown, e, said);
        let before = path_mount_id(at).map_err(|e| fail(e, format!("at {}", at.display())))?;
        let stderr = rustix::fs::memfd_create(FUSE_OVERLAYFS, rustix::fs::MemfdFlags::CLOEXEC)
            .map(File::from)
            .map_err(|e| {
                fail(
                    e.into(),
                    "cannot make a memory file for its messages".into(),
                )
            })?;
        let theirs = stderr
            .try_clone()
            .map_err(|e| fail(e, "cannot make a memory file for its messages".into()))?;
        let mut child = Command::new(FUSE_OVERLAYFS)
            .arg("-f")
            .arg("-o")
            .arg(options(plan))
            .arg(at)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(theirs)
            .spawn()
            .map_err(|e| fail(e, format!("cannot run {FUSE_OVERLAYFS}")))?;
        // Until this process waits for it, the child's pid names it alone.
        let pidfd = match pidfd_open(Pid::from_child(&child), PidfdFlags::empty()) {
            Ok(pidfd) => pidfd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(e.into(), "a pidfd needs Linux 5.3".to_owned()));
            }
        };
        let mut server = Server {
            child,
            pidfd,
            stderr: Some(stderr),
        };
        if let Err(why) = server.wait_mounted(at, before) {
            server.stop();
            return Err(fail(std::io::Error::other(why), server.said()));
        }
        server.stderr = None;
        Ok(server)
    }

    /// Waits until the mount id of `at` is no longer `before`, or the server
    /// exits, or [`MOUNT_WAIT`] passes.
    fn wait_mounted(&mut self, at: &Path, before: u64) -> Result<(), String> {
        let deadline = Instant::now() + MOUNT_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("{FUSE_OVERLAYFS} exited with {status}"));
            }
            match path_mount_id(at) {
                Ok(id) if id != before => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("cannot stat {}: {e}", at.display())),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{FUSE_OVERLAYFS} did not mount within {MOUNT_WAIT:?}"
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// What the server wrote to its stderr.
    fn said(&mut self) -> String {
        let mut said = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            let _ = stderr.rewind();
            let _ = stderr.read_to_string(&mut said);
        }
        said.trim().to_owned()
    }

    /// Whether the server still runs (one that exited is reaped here).
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for a server whose mount is gone to exit; stops it if it serves
    /// on (a copy of its mount elsewhere).
    fn finish(&mut self) {
        if !self.exited_within(EXIT_WAIT) {
            self.stop();
        }
    }

    /// Terminates the server (it unmounts what it still has mounted, by the
    /// path it was given, which is never a user's), killing it if it lingers,
    /// and reaps it.
    fn stop(&mut self) {
        if self.exited_within(Duration::ZERO) {
            return;
        }
        let _ = pidfd_send_signal(&self.pidfd, Signal::TERM);
        if !self.exited_within(EXIT_WAIT) {
            let _ = pidfd_send_signal(&self.pidfd, Signal::KILL);
            let _ = self.child.wait();
        }
    }

    /// Whether the server exits (and is reaped) within `wait`.
    fn exited_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if !self.running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Upper;

    fn plan(dir: &Path) -> OverlayPlan {
        for d in ["l", "snap/fs", "snap/work", "m", "staging", "view"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("l/a"), "lower\n").unwrap();
        OverlayPlan {
            lowers: vec![dir.join("l")],
            upper: Some(Upper {
                dir: dir.join("snap/fs"),
                work: dir.join("snap/work"),
            }),
            userxattr: false,
        }
    }

    #[test]
    fn servers_are_known_by_their_layers_until_their_view_is_unmounted() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let m = dir.path().join("m");
        let id = mount_at(&plan, &m).unwrap();
        let found = views_using(&dir.path().join("snap"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].path.as_path(), found[0].mount_id),
            (m.as_path(), id)
        );
        let pid = found[0].pid.expect("started here");
        assert!(views_using(&dir.path().join("other")).is_empty());
        flush_views_using(&dir.path().join("snap")).unwrap();
        super::super::unmount(&m).unwrap();
        assert!(views_using(&dir.path().join("snap")).is_empty());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the server exited and was reaped"
        );
    }

    #[test]
    fn a_clone_of_the_staging_mount_is_served_after_the_staging_mount_goes() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let view = treediff::safe_fs::open_dir_no_symlinks(&dir.path().join("view")).unwrap();
        let (shown, staging) = (dir.path().join("view"), dir.path().join("staging"));
        let id = mount_on(&plan, view.as_fd(), &shown, &staging).unwrap();
        assert!(
            !super::super::mount_table()
                .unwrap()
                .iter()
                .any(|m| m.target == staging)
        );
        // The clone keeps the flags the server mounted with.
        let infos = procfs::process::Process::myself()
            .unwrap()
            .mountinfo()
            .unwrap();
        let info = infos.into_iter().find(|m| m.mount_point == shown).unwrap();
        assert_eq!(info.fs_type, "fuse.fuse-overlayfs");
        for flag in ["nosuid", "nodev"] {
            assert!(info.mount_options.contains_key(flag), "{info:?}");
        }
        assert_eq!(std::fs::read_to_string(shown.join("a")).unwrap(), "lower\n");
        std::fs::write(shown.join("b"), "upper\n").unwrap();
        flush_views_using(&dir.path().join("snap")).unwrap();
        let upper = dir.path().join("snap/fs/b");
        assert_eq!(std::fs::read_to_string(upper).unwrap(), "upper\n");
        drop(view);
        super::super::unmount_checked(&shown, id).unwrap();
        assert!(views_using(&dir.path().join("snap")).is_empty());
    }

    #[test]
    fn a_server_that_cannot_mount_is_reported_with_what_it_said() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut plan = plan(dir.path());
        plan.lowers = vec![dir.path().join("missing")];
        let err = mount_at(&plan, &dir.path().join("m")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exited with"), "{text}");
        assert!(text.contains("missing"), "{text}");
        assert!(views_using(dir.path()).is_empty());
    }
}
