//! Every mount-related syscall of the crate: performing a [`MountPlan`],
//! unmounting, reading the mount table, and reading overlay xattrs; the
//! fuse-overlayfs servers this process starts are in [`fuse`].
//!
//! The kernel overlay is mounted with the new mount API (`fsopen`, `fsconfig`,
//! `fsmount`, `move_mount`, via rustix: nix does not wrap them): lowers are passed
//! one by one with `lowerdir+`, so a long chain does not hit the one-page limit of
//! a legacy option string and paths need no escaping, and when the kernel refuses
//! an option it explains why in the context's log, which the error carries. Bind
//! mounts and unmounting use nix. The mount table is read with procfs.

pub(crate) mod fuse;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create, fsconfig_set_flag,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

use crate::error::SnapshotError;
use crate::plan::{MountPlan, OVERLAY_OPTIONS, OverlayPlan};

pub use fuse::{FUSE_OVERLAYFS, adopt_fuse_view};

/// Mounts `plan` at `target`, an existing directory of this process's own (the
/// path is followed). A [`MountPlan::Fuse`] plan starts a server that mounts on
/// `target` ([`fuse`]); a [`MountPlan::Direct`] plan mounts nothing (its files
/// are already in place).
pub fn mount(plan: &MountPlan, target: &Path) -> Result<(), SnapshotError> {
    match plan {
        MountPlan::Overlay(overlay) => mount_overlay(overlay, target),
        MountPlan::Fuse(overlay) => fuse::mount_at(overlay, target).map(drop),
        MountPlan::Bind { source, read_only } => mount_bind(source, *read_only, target),
        MountPlan::Direct { .. } => Ok(()),
    }
}

/// Mounts `plan` on the directory `target` names, which the caller opened:
/// the mount lands on that very directory even if its path is swapped for a
/// symlink meanwhile (a root daemon mounting on a user's directory must not be
/// redirected onto `/etc`). `path` only names it in errors and records. The
/// kernel overlay is attached to the descriptor directly. A bind mount, and
/// under root a fuse-overlayfs mount (its server, another process, mounts on a
/// path: see [`fuse`]), are made on `staging` (an empty directory of the
/// caller's own, that no one else can touch), a clone of that mount is
/// attached to the descriptor, and the staging mount is detached (see
/// [`attach_clone`]). A daemon without privileges cannot clone mounts: its
/// fuse-overlayfs mounts on `path`, checked against the descriptor first (the
/// directory is its own user's, whom a swap could only mislead onto their own
/// files).
///
/// Returns the unique id of the mount attached ([`mount_id`]), by which writes
/// through the view later check that its path still leads to it; `None` for a
/// [`MountPlan::Direct`] plan, which mounts nothing.
pub fn mount_on(
    plan: &MountPlan,
    target: BorrowedFd<'_>,
    path: &Path,
    staging: &Path,
) -> Result<Option<u64>, SnapshotError> {
    match plan {
        MountPlan::Overlay(overlay) => {
            let mnt = overlay_mount_fd(overlay, path)?;
            attach("mount overlay on", mnt.as_fd(), target, path).map(Some)
        }
        MountPlan::Bind { source, read_only } => {
            mount_bind(source, *read_only, staging)?;
            let attached = attach_clone(staging, target, path);
            let _ = nix::mount::umount2(staging, MntFlags::MNT_DETACH);
            attached.map(Some)
        }
        MountPlan::Fuse(overlay) if rustix::process::geteuid().is_root() => {
            fuse::mount_on(overlay, target, path, staging).map(Some)
        }
        MountPlan::Fuse(overlay) => {
            check_same_dir(target, path)?;
            fuse::mount_at(overlay, path).map(Some)
        }
        MountPlan::Direct { .. } => Ok(None),
    }
}

/// Attaches the detached mount `from` to the directory `target` (`path` in
/// errors); returns its unique id.
fn attach(
    op: &'static str,
    from: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    path: &Path,
) -> Result<u64, SnapshotError> {
    let id = mount_id(from).map_err(|e| mount_error(op, path, e, String::new()))?;
    move_mount(
        from,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| mount_error(op, path, e.into(), String::new()))?;
    Ok(id)
}

/// Attaches a clone of the mount at `staging` (`open_tree(OPEN_TREE_CLONE)`)
/// to the directory `target`, and returns the clone's unique id; the caller
/// detaches the staging mount. Moving the staging mount itself would fail
/// with EINVAL under a shared parent (systemd's default for `/`); a clone is
/// a mount of its own, of the same superblock, which stays when the staging
/// mount goes.
fn attach_clone(staging: &Path, target: BorrowedFd<'_>, path: &Path) -> Result<u64, SnapshotError> {
    use rustix::mount::{OpenTreeFlags, open_tree};
    let op = "attach a clone of the staging mount to";
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    let clone = open_tree(rustix::fs::CWD, staging, flags)
        .map_err(|e| mount_error(op, path, e.into(), format!("from {}", staging.display())))?;
    attach(op, clone.as_fd(), target, path)
}

/// Refuses unless `path` (not followed if a symlink) is the directory `fd`.
fn check_same_dir(fd: BorrowedFd<'_>, path: &Path) -> Result<(), SnapshotError> {
    let op = "mount fuse-overlayfs on";
    let by_fd =
        rustix::fs::fstat(fd).map_err(|e| mount_error(op, path, e.into(), String::new()))?;
    let by_path =
        rustix::fs::lstat(path).map_err(|e| mount_error(op, path, e.into(), String::new()))?;
    if (by_fd.st_dev, by_fd.st_ino) != (by_path.st_dev, by_path.st_ino) {
        return Err(mount_error(
            op,
            path,
            std::io::Error::other("the directory was moved or replaced"),
            "it is not the directory that was checked".to_owned(),
        ));
    }
    Ok(())
}

/// The unique id of the mount `fd` is on (`statx` with `STATX_MNT_ID_UNIQUE`,
/// Linux 6.8; rustix names no constant for it, so the bit is passed as is and
/// the answer's mask tells whether the kernel knew it). On an older kernel the
/// reusable `STATX_MNT_ID` stands in: a mount made later may get it again, so
/// callers check that the directory is a mount root as well.
pub fn mount_id(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    mount_id_at(fd, Path::new(""), rustix::fs::AtFlags::EMPTY_PATH)
}

/// Whether the mount `fd` is the root of is one the mount table lists as using
/// `layers` (see [`unmount_listed`]): for a view recorded before its unique
/// mount id was kept, the test that it is the daemon's own mount and not one
/// a user put at its path.
pub fn mount_uses(fd: BorrowedFd<'_>, layers: &Path) -> std::io::Result<bool> {
    use rustix::fs::{AtFlags, StatxFlags, statx};
    let st = statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(std::io::Error::other(
            "the kernel does not report mount ids (statx STATX_MNT_ID needs Linux 5.8)",
        ));
    }
    Ok(mount_table()?
        .iter()
        .any(|m| m.id == st.stx_mnt_id && m.uses(layers)))
}

/// The unique id of the mount that `path` (its last component not followed)
/// is on, asking no FUSE server (a dead one answers nothing, a hung one never):
/// for paths of this process's own.
pub(crate) fn path_mount_id(path: &Path) -> std::io::Result<u64> {
    use rustix::fs::AtFlags;
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
    mount_id_at(rustix::fs::CWD, path, flags)
}

/// [`mount_id`] of `path` in `dir`, with `flags`.
fn mount_id_at(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: rustix::fs::AtFlags,
) -> std::io::Result<u64> {
    use rustix::fs::{StatxFlags, statx};
    let unique = StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE);
    let st = statx(dir, path, flags, unique | StatxFlags::MNT_ID)?;
    if st.stx_mask & (StatxFlags::MNT_ID.bits() | STATX_MNT_ID_UNIQUE) == 0 {
        return Err(std::io::Error::other(
            "the kernel does not report mount ids (statx STATX_MNT_ID needs Linux 5.8)",
        ));
    }
    Ok(st.stx_mnt_id)
}

/// Whether the directory `fd` is the root of a mount.
pub fn is_mount_root(fd: BorrowedFd<'_>) -> std::io::Result<bool> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, statx};
    let st = statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;

    if !st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Err(std::io::Error::other(
            "the kernel does not say which directories are mount roots (Linux 5.8)",
        ));
    }
    Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8).
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// Unmounts whatever is mounted at `target`. Fails with [`SnapshotError::Busy`]
/// when files are open in it (nothing is detached lazily: a lazy unmount would
/// leave writers on a layer the caller believes is settled).
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    unmount_retrying(target, &mut || {
        Ok(nix::mount::umount2(target, MntFlags::empty()))
    })?;
    fuse::forget_view(target);
    Ok(())
}

/// Runs `unmount` until the kernel does not refuse it as busy, for a moment: a
/// reference can be fleeting (a process forked elsewhere holds its parent's
/// descriptors until it execs); only a mount still busy after that is busy.
/// `unmount` fails on its own (the outer error) when a check before it fails.
/// A mount that this process may not unmount is left to `fusermount3` (a FUSE
/// mount an unprivileged daemon made is its own to unmount, with its own rights).
fn unmount_retrying(
    target: &Path,
    unmount: &mut dyn FnMut() -> Result<nix::Result<()>, SnapshotError>,
) -> Result<(), SnapshotError> {
    let mut result = unmount()?;
    for _ in 0..10 {
        if result != Err(nix::errno::Errno::EBUSY) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        result = unmount()?;
    }
    match result {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(SnapshotError::Busy {
            key: target.display().to_string(),
            detail: format!("files are open under {}", target.display()),
        }),
        Err(nix::errno::Errno::EPERM) => fusermount_unmount(target),
        Err(errno) => Err(mount_error("unmount", target, errno.into(), String::new())),
    }
}

/// Unmounts the mount whose unique id is `id` at `path`, and nothing else: a
/// root daemon must not unmount whatever a user made `path` lead to. The
/// parent is opened without following symlinks and held; the entry is checked
/// through it (a mount root with that id, its name not followed) before each
/// try, and unmounted through the descriptor's `/proc/self/fd` path with
/// `UMOUNT_NOFOLLOW`. A mount point cannot be renamed or replaced while
/// mounted, so what was checked is what is unmounted. Nothing is held open on
/// the mount itself, which alone would make it busy, and the check asks no
/// FUSE server (`AT_STATX_DONT_SYNC`), so a view whose server died is
/// unmounted too. A fuse-overlayfs server of this process that served the
/// mount is waited for (see [`fuse`]).
pub fn unmount_checked(path: &Path, id: u64) -> Result<(), SnapshotError> {
    let unique = rustix::fs::StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE);
    unmount_if(path, id, unique | rustix::fs::StatxFlags::MNT_ID)?;
    fuse::forget_mount(id);
    Ok(())
}

/// Unmounts the mounts at `path` that the mount table lists as using
/// `layers` (an overlay with a layer there, or a bind mount of a directory in
/// it: what only this daemon mounts), or any mount at `path` if it is below
/// `layers` (the daemon's own directory), each as [`unmount_checked`] does, by the
/// id the table gives it: for mounts whose unique id was never recorded (an
/// orphan's, a workspace recorded by an older release). Nothing else is
/// unmounted, whatever `path` leads to meanwhile. `Ok(false)` if none was
/// there.
pub fn unmount_listed(path: &Path, layers: &Path) -> Result<bool, SnapshotError> {
    let table = mount_table()
        .map_err(|e| mount_error("read the mount table to unmount", path, e, String::new()))?;
    let mut found = false;
    // The last mounted first: it hides those under it.
    for entry in table.iter().rev() {
        if entry.target == path && (entry.uses(layers) || path.starts_with(layers)) {
            unmount_if(path, entry.id, rustix::fs::StatxFlags::MNT_ID)?;
            found = true;
        }
    }
    Ok(found)
}

/// Unmounts `path` if the mount there has the id `id`, as `statx` gives it
/// for `mask` (the unique id, or the reused one the mount table shows): see
/// [`unmount_checked`].
fn unmount_if(path: &Path, id: u64, mask: rustix::fs::StatxFlags) -> Result<(), SnapshotError> {
    use rustix::fs::{AtFlags, StatxAttributes, statx};
    let not_ours = |why: &str| {
        mount_error(
            "unmount",
            path,
            std::io::Error::other(format!("it is not the workspace's mount: {why}")),
            "nothing was unmounted".to_owned(),
        )
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(not_ours("the path has no parent"));
    };
    let parent_fd = treediff::safe_fs::open_path_no_symlinks(parent)
        .map_err(|e| mount_error("open the parent of", path, e.into(), String::new()))?;
    let check = || -> Result<(), SnapshotError> {
        let st = statx(
            &parent_fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
            mask,
        )
        .map_err(|e| mount_error("stat", path, e.into(), String::new()))?;
        if !st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
            return Err(not_ours("nothing is mounted there"));
        }
        if st.stx_mnt_id != id {
            return Err(not_ours("another mount is there"));
        }
        Ok(())
    };
    let at = treediff::safe_fs::proc_fd_path(parent_fd.as_fd(), Some(name));
    let flags = MntFlags::from_bits_retain(nix::libc::UMOUNT_NOFOLLOW);
    unmount_retrying(path, &mut || {
        check()?;
        // What was checked is what `at` leads to: the parent is held, and a
        // mount point cannot be renamed or replaced.
        treediff::race_point("unmount-after-check");
        Ok(nix::mount::umount2(&at, flags))
    })
}

fn fusermount_unmount(target: &Path) -> Result<(), SnapshotError> {
    let output = Command::new("fusermount3")
        .arg("-u")
        .arg(target)
        .output()
        .map_err(|e| mount_error("unmount", target, e, "cannot run fusermount3".into()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(mount_error(
        "unmount",
        target,
        std::io::Error::from_raw_os_error(nix::libc::EPERM),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    ))
}

pub(crate) fn mount_error(
    op: &'static str,
    target: &Path,
    source: std::io::Error,
    said: String,
) -> SnapshotError {
    let detail = if said.is_empty() {
        String::new()
    } else {
        format!(" ({said})")
    };
    SnapshotError::Mount {
        op,
        target: target.to_owned(),
        detail,
        source,
    }
}

fn mount_overlay(plan: &OverlayPlan, target: &Path) -> Result<(), SnapshotError> {
    let mnt = overlay_mount_fd(plan, target)?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| mount_error("mount overlay on", target, e.into(), String::new()))
}

/// The overlay of `plan` as a detached mount, to attach at `target` (named in
/// errors).
fn overlay_mount_fd(plan: &OverlayPlan, target: &Path) -> Result<OwnedFd, SnapshotError> {
    let op = "mount overlay on";
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| {
        let hint = match e {
            rustix::io::Errno::NODEV => "the overlay module is not loaded".to_owned(),
            rustix::io::Errno::PERM => "needs root or CAP_SYS_ADMIN".to_owned(),
            _ => String::new(),
        };
        mount_error(op, target, e.into(), hint)
    })?;
    let fail = |e: rustix::io::Errno| mount_error(op, target, e.into(), kernel_log(fs.as_fd()));
    fsconfig_set_string(&fs, "source", "ws").map_err(fail)?;
    for lower in &plan.lowers {
        fsconfig_set_string(&fs, "lowerdir+", lower.as_os_str()).map_err(fail)?;
    }
    if let Some(upper) = &plan.upper {
        fsconfig_set_string(&fs, "upperdir", upper.dir.as_os_str()).map_err(fail)?;
        fsconfig_set_string(&fs, "workdir", upper.work.as_os_str()).map_err(fail)?;
    }
    for (key, value) in OVERLAY_OPTIONS {
        fsconfig_set_string(&fs, key, value).map_err(fail)?;
    }
    if plan.userxattr {
        fsconfig_set_flag(&fs, "userxattr").map_err(fail)?;
    }
    fsconfig_create(&fs).map_err(fail)?;
    let mut attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
    if plan.upper.is_none() {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(fail)
}

/// What the kernel logged about a failing mount context, as "kernel: ..." (its
/// messages start with a severity letter, "e ", "w " or "i ", which is dropped).
fn kernel_log(fs: BorrowedFd<'_>) -> String {
    let mut messages = Vec::new();
    let mut buf = [0u8; 1024];
    // One message per read; the kernel keeps a few, then reads fail (ENODATA).
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 || messages.len() >= 16 {
            break;
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        let text = text.trim_end();
        let text = match text.split_once(' ') {
            Some((level, rest)) if level.len() == 1 => rest,
            _ => text,
        };
        if !text.is_empty() {
            messages.push(text.to_owned());
        }
    }
    if messages.is_empty() {
        String::new()
    } else {
        format!("kernel: {}", messages.join("; "))
    }
}

fn mount_bind(source: &Path, read_only: bool, target: &Path) -> Result<(), SnapshotError> {
    let op = "bind-mount on";
    let flags = MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .map_err(|e| mount_error(op, target, e.into(), format!("from {}", source.display())))?;
    // The first bind ignores MS_RDONLY and friends: they take a remount.
    let remount = flags
        | MsFlags::MS_REMOUNT
        | if read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
    if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
        let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
        return Err(mount_error(
            op,
            target,
            e.into(),
            "remount with nosuid,nodev".into(),
        ));
    }
    Ok(())
}

/// One line of the mount table, reduced to what the snapshotter checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Its id (the one the kernel may reuse once it is gone, not the unique one).
    pub id: u64,
    /// Where it is mounted.
    pub target: PathBuf,
    /// The filesystem type (`overlay`, `fuse.fuse-overlayfs`, ...).
    pub fs_type: String,
    /// The superblock options with a value (`upperdir`, `lowerdir`, ...).
    pub options: Vec<(String, String)>,
    /// The directory of its filesystem that is mounted (a bind mount's source,
    /// relative to that filesystem's root).
    pub root: PathBuf,
}

impl MountEntry {
    /// Whether any option names a path under `dir` (an overlay using a layer), or
    /// it is a bind mount of a directory under `dir` (when `dir`'s filesystem is
    /// mounted at `/`, where the two paths compare directly).
    pub fn uses(&self, dir: &Path) -> bool {
        if self.root != Path::new("/") && self.root.starts_with(dir) {
            return true;
        }
        let dir = dir.to_string_lossy();
        self.options.iter().any(|(_, value)| {
            value.split(':').any(|part| {
                let part = part.trim_end_matches('/');
                part == dir
                    || part
                        .strip_prefix(dir.as_ref())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        })
    }
}

/// The mount table of this process's mount namespace.
pub fn mount_table() -> std::io::Result<Vec<MountEntry>> {
    let infos = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| std::io::Error::other(format!("cannot read /proc/self/mountinfo: {e}")))?;
    Ok(infos
        .into_iter()
        .map(|m| MountEntry {
            id: u64::from(m.mnt_id.unsigned_abs()),
            target: m.mount_point,
            root: PathBuf::from(m.root),
            fs_type: m.fs_type,
            options: m
                .super_options
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
        })
        .collect())
}

/// Detaches whatever is mounted at `target`, lazily: for cleaning up after a probe
/// or a failed step, never for a snapshot in use.
pub(crate) fn detach(target: &Path) -> std::io::Result<()> {
    Ok(nix::mount::umount2(target, MntFlags::MNT_DETACH)?)
}

/// Makes `dst` share `src`'s extents (FICLONE).
pub(crate) fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> std::io::Result<()> {
    Ok(rustix::fs::ioctl_ficlone(dst, src)?)
}

/// The value of the xattr `name` of the open file `fd`, if it has one. Filesystems
/// without xattrs answer "none".
pub(crate) fn xattr(fd: BorrowedFd<'_>, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::OPNOTSUPP) => Ok(None),
        Err(rustix::io::Errno::RANGE) => Ok(Some(Vec::new())),
        Err(e) => Err(e.into()),
    }
}

/// Names in the open directory `dir`, with their types as the directory reports
/// them (`.` and `..` left out).
pub(crate) fn list_dir(
    dir: BorrowedFd<'_>,
) -> std::io::Result<Vec<(Vec<u8>, rustix::fs::FileType)>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name.to_vec(), entry.file_type()));
    }
    Ok(out)
}

/// `syncfs` of the filesystem holding `path`.
pub(crate) fn syncfs(path: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(path)?;
    Ok(rustix::fs::syncfs(dir.as_fd())?)
}
