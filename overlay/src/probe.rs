//! What this machine supports for workspace snapshots, found by trying, and the
//! backend to use when the user did not choose one.
//!
//! Whether a kernel overlay can be mounted depends on privileges, user namespaces,
//! the kernel's version and modules and on the filesystem that holds the upper
//! directories, so [`probe`] does not guess from any of these: in a scratch directory
//! inside the directory that will hold the snapshots it mounts a test overlay with the
//! exact options the overlayfs backend uses, clones a file, and looks for
//! `fuse-overlayfs` and `/dev/fuse`. Every finding carries a reason, so that
//! [`Probe::choose`] can say why a better backend was passed over and [`Probe::check`]
//! can say what is missing for the one the user asked for, and what to do about it.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;

use crate::error::SnapshotError;
use crate::plan::{MountPlan, OverlayPlan, Upper};
use crate::sys;

/// Which snapshot backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The kernel's overlayfs, mounted with the new mount API.
    Overlayfs,
    /// The `fuse-overlayfs` program, for when the kernel overlay cannot be mounted.
    FuseOverlayfs,
    /// A plain copy of the sources (cloned where the filesystem can), always available.
    Mirror,
}

impl BackendKind {
    /// Every backend, best first.
    pub const ALL: [BackendKind; 3] = [
        BackendKind::Overlayfs,
        BackendKind::FuseOverlayfs,
        BackendKind::Mirror,
    ];

    /// The backend's name, as users write it and as it is serialized.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Overlayfs => "overlayfs",
            BackendKind::FuseOverlayfs => "fuse-overlayfs",
            BackendKind::Mirror => "mirror",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = BackendKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown snapshot backend `{s}`: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What was found, each with the reason.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Probe {
    /// Whether this process can mount the kernel overlayfs with the exact options the
    /// overlayfs backend uses.
    pub kernel_overlay: Support,
    /// Whether the kernel overlay accepts the `userxattr` option (which it needs in a
    /// user namespace); a report only.
    pub userxattr: Support,
    /// Whether the `fuse-overlayfs` program is on `PATH` and `/dev/fuse` opens
    /// read-write for this process.
    pub fuse_overlayfs: Support,
    /// Whether the filesystem holding the probed directory can clone files (FICLONE).
    pub reflink: Support,
    /// Whether this process runs in a user namespace (its uid map is not the identity).
    pub in_user_namespace: bool,
}

/// One finding: whether something is available, and why (or why not).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Support {
    /// Whether it is available.
    pub available: bool,
    /// Why, as a sentence fragment without a trailing period, e.g. "mount failed:
    /// EPERM (Operation not permitted): needs root or CAP_SYS_ADMIN".
    pub reason: String,
}

impl Support {
    fn yes(reason: impl Into<String>) -> Support {
        Support {
            available: true,
            reason: reason.into(),
        }
    }

    fn no(reason: impl Into<String>) -> Support {
        Support {
            available: false,
            reason: reason.into(),
        }
    }
}

/// Probes by trying, in a scratch directory created inside `dir` (which must be on the
/// filesystem that will hold the snapshots) and removed afterwards, after unmounting
/// anything mounted in it.
///
/// Fails only when the scratch directory or the files in it cannot be made; what is
/// not supported is reported in the [`Probe`].
pub fn probe(dir: &Path) -> io::Result<Probe> {
    let mut scratch = Scratch::create(dir)?;
    let kernel_overlay = try_overlay(&mut scratch, "overlay", dir, false)?;
    let userxattr = try_overlay(&mut scratch, "userxattr", dir, true)?;
    let reflink = try_reflink(&scratch, dir)?;
    Ok(Probe {
        kernel_overlay,
        userxattr,
        fuse_overlayfs: find_fuse_overlayfs(),
        reflink,
        in_user_namespace: in_user_namespace(),
    })
}

impl Probe {
    /// The backend to use when the user did not choose one: overlayfs if available,
    /// else fuse-overlayfs, else mirror (always available), with a reason that names
    /// why better ones were passed over.
    pub fn choose(&self) -> (BackendKind, String) {
        let kernel = &self.kernel_overlay;
        let fuse = &self.fuse_overlayfs;
        if kernel.available {
            let reason = format!(
                "overlayfs: kernel overlayfs is available ({})",
                kernel.reason
            );
            (BackendKind::Overlayfs, reason)
        } else if fuse.available {
            let reason = format!(
                "fuse-overlayfs: kernel overlayfs is not available ({})",
                kernel.reason
            );
            (BackendKind::FuseOverlayfs, reason)
        } else {
            let reason = format!(
                "mirror: kernel overlayfs is not available ({}) and fuse-overlayfs is not \
                 available ({})",
                kernel.reason, fuse.reason
            );
            (BackendKind::Mirror, reason)
        }
    }

    /// Checks that `kind` can work here; `Err` names what is missing and what to do.
    pub fn check(&self, kind: BackendKind) -> Result<(), String> {
        match kind {
            BackendKind::Overlayfs if !self.kernel_overlay.available => Err(self.overlay_missing()),
            BackendKind::FuseOverlayfs if !self.fuse_overlayfs.available => {
                Err(self.fuse_missing())
            }
            _ => Ok(()),
        }
    }

    /// Whether a daemon running as root may give `kind` to a user other than
    /// root: fuse-overlayfs only where kernel overlayfs cannot be mounted (as
    /// [`Probe::choose`] picks it). It is the backend of daemons without
    /// privileges; under root its server would run as root over the user's
    /// layers where the kernel's overlay would do. `Err` says why and what to
    /// use; [`Probe::check`] still says whether `kind` works at all.
    pub fn check_for_other_user(&self, kind: BackendKind) -> Result<(), String> {
        if kind == BackendKind::FuseOverlayfs && self.kernel_overlay.available {
            return Err(
                "a daemon running as root gives other users fuse-overlayfs only where kernel \
                 overlayfs cannot be mounted, and here it can (fuse-overlayfs would run as \
                 root over your files): use the overlayfs backend (the default), or mirror"
                    .to_owned(),
            );
        }
        Ok(())
    }

    fn overlay_missing(&self) -> String {
        let reason = &self.kernel_overlay.reason;
        let mut hints = Vec::new();
        if reason.contains("EPERM") || reason.contains("EACCES") {
            hints.push("run as root or give the daemon CAP_SYS_ADMIN".to_owned());
        }
        if reason.contains("ENODEV") {
            hints.push("load the overlay module (modprobe overlay)".to_owned());
        }
        if reason.contains("ENOSYS") {
            hints.push("use Linux 6.8 or later".to_owned());
        }
        hints.push("use the fuse-overlayfs or mirror backend".to_owned());
        format!(
            "kernel overlayfs is not available ({reason}): {}",
            hints.join(", or ")
        )
    }

    fn fuse_missing(&self) -> String {
        let reason = &self.fuse_overlayfs.reason;
        let mut hints = Vec::new();
        if reason.contains(NOT_ON_PATH) {
            hints.push("install fuse-overlayfs (apt install fuse-overlayfs)");
        }
        if reason.contains(DEV_FUSE) {
            if reason.contains("EACCES") || reason.contains("EPERM") {
                hints.push("give this process read-write access to /dev/fuse");
            } else {
                hints.push(
                    "load the fuse module (modprobe fuse), or in a container pass the \
                     device in (--device /dev/fuse)",
                );
            }
        }
        hints.push("or use the mirror backend");
        format!(
            "fuse-overlayfs is not available ({reason}): {}",
            hints.join(", ")
        )
    }
}

const DEV_FUSE: &str = "/dev/fuse";
const NOT_ON_PATH: &str = "fuse-overlayfs is not on PATH";

/// The scratch directory; dropping it unmounts what was mounted in it, then removes it.
#[derive(Debug)]
struct Scratch {
    path: PathBuf,
    /// Mount points in `path` that are (or may still be) mounted.
    mounted: Vec<PathBuf>,
}

impl Scratch {
    fn create(dir: &Path) -> io::Result<Scratch> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            ".ws-probe-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        fs::create_dir(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create a probe directory in {}: {e}", dir.display()),
            )
        })?;
        Ok(Scratch {
            path,
            mounted: Vec::new(),
        })
    }

    fn unmount(&mut self, merged: &Path) -> io::Result<()> {
        sys::detach(merged)?;
        self.mounted.retain(|m| m != merged);
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for merged in std::mem::take(&mut self.mounted) {
            let _ = sys::detach(&merged);
        }
        // The kernel makes `work/work` with mode 000, which `remove_dir_all` cannot
        // open without CAP_DAC_OVERRIDE; it is empty, so remove it by name first.
        for name in ["overlay", "userxattr"] {
            let work = self.path.join(name).join("work");
            let _ = fs::remove_dir(work.join("work"));
            let _ = fs::remove_dir(work.join("index"));
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Mounts a test overlay in `scratch/name` and unmounts it again.
fn try_overlay(
    scratch: &mut Scratch,
    name: &str,
    dir: &Path,
    userxattr: bool,
) -> io::Result<Support> {
    let base = scratch.path.join(name);
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| base.join(d));
    fs::create_dir(&base)?;
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d)?;
    }
    fs::write(lower.join("lower-file"), b"lower\n")?;

    let dirs = OverlayDirs {
        lower: &lower,
        upper: &upper,
        work: &work,
        merged: &merged,
    };
    if let Err(reason) = mount_overlay(&dirs, userxattr, scratch) {
        return Ok(Support::no(reason));
    }
    let used = check_overlay(&dirs);
    if let Err(e) = scratch.unmount(&merged) {
        return Ok(Support::no(format!(
            "mounted a test overlay in {} but could not unmount it: {}",
            dir.display(),
            io_text(&e)
        )));
    }
    Ok(match used {
        Ok(()) => Support::yes(format!("mounted a test overlay in {}", dir.display())),
        Err(reason) => Support::no(format!(
            "mounted a test overlay in {} but {reason}",
            dir.display()
        )),
    })
}

#[derive(Debug)]
struct OverlayDirs<'a> {
    lower: &'a Path,
    upper: &'a Path,
    work: &'a Path,
    merged: &'a Path,
}

/// Mounts the overlay on `dirs.merged` with the overlayfs backend's own code and
/// options; `Err` is the reason it could not.
fn mount_overlay(
    dirs: &OverlayDirs<'_>,
    userxattr: bool,
    scratch: &mut Scratch,
) -> Result<(), String> {
    let plan = MountPlan::Overlay(OverlayPlan {
        lowers: vec![dirs.lower.to_owned()],
        upper: Some(Upper {
            dir: dirs.upper.to_owned(),
            work: dirs.work.to_owned(),
        }),
        userxattr,
    });
    // Recorded first: should the mount succeed but report failure, the guard still
    // detaches it (detaching what is not mounted fails harmlessly).
    scratch.mounted.push(dirs.merged.to_owned());
    sys::mount(&plan, dirs.merged).map_err(|e| match e {
        SnapshotError::Mount { source, detail, .. } => match source.raw_os_error() {
            Some(raw) => format!("mount failed: {}{detail}", errno_text(raw)),
            None => format!("mount failed: {source}{detail}"),
        },
        other => format!("mount failed: {other}"),
    })
}

/// Reads the lower file through the mount and writes a file through it; `Err` says
/// what did not work.
fn check_overlay(dirs: &OverlayDirs<'_>) -> Result<(), String> {
    match fs::read(dirs.merged.join("lower-file")) {
        Ok(bytes) if bytes == b"lower\n" => {}
        Ok(_) => return Err("a lower file read back different through it".to_owned()),
        Err(e) => {
            return Err(format!(
                "reading a lower file through it failed: {}",
                io_text(&e)
            ));
        }
    }
    fs::write(dirs.merged.join("upper-file"), b"upper\n")
        .map_err(|e| format!("writing through it failed: {}", io_text(&e)))?;
    if !dirs.upper.join("upper-file").exists() {
        return Err("a file written through it did not reach the upper directory".to_owned());
    }
    Ok(())
}

/// Clones one file into another in the scratch directory.
fn try_reflink(scratch: &Scratch, dir: &Path) -> io::Result<Support> {
    let mut src = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(scratch.path.join("reflink-src"))?;
    src.write_all(b"ws reflink probe\n")?;
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(scratch.path.join("reflink-dst"))?;
    Ok(reflink_support(
        sys::ficlone(dst.as_fd(), src.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(0)),
        dir,
    ))
}

fn reflink_support(result: Result<(), i32>, dir: &Path) -> Support {
    match result {
        Ok(()) => Support::yes(format!(
            "the filesystem at {} can clone files",
            dir.display()
        )),
        Err(raw) => match Errno::from_raw(raw) {
            Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY | Errno::ENOSYS => {
                Support::no(format!(
                    "the filesystem at {} cannot clone files (copies instead)",
                    dir.display()
                ))
            }
            _ => Support::no(format!(
                "cloning a file in {} failed: {}",
                dir.display(),
                errno_text(raw)
            )),
        },
    }
}

/// Looks for `fuse-overlayfs` on `PATH` and opens `/dev/fuse` read-write.
fn find_fuse_overlayfs() -> Support {
    let binary = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("fuse-overlayfs"))
            .find(|candidate| is_executable(candidate))
    });
    let device = OpenOptions::new().read(true).write(true).open(DEV_FUSE);
    match (binary, device) {
        (Some(binary), Ok(_)) => Support::yes(format!(
            "found {} and {DEV_FUSE} opens read-write",
            binary.display()
        )),
        (binary, device) => {
            let mut missing = Vec::new();
            if binary.is_none() {
                missing.push(NOT_ON_PATH.to_owned());
            }
            if let Err(e) = device {
                missing.push(format!(
                    "{DEV_FUSE} cannot be opened read-write: {}",
                    io_text(&e)
                ));
            }
            Support::no(missing.join("; "))
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `/proc/self/uid_map` maps anything but the whole range onto itself; false
/// if it cannot be read.
fn in_user_namespace() -> bool {
    fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| !is_identity_map(&map))
}

fn is_identity_map(uid_map: &str) -> bool {
    let lines: Vec<Vec<&str>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|fields: &Vec<&str>| !fields.is_empty())
        .collect();
    lines == [vec!["0", "0", "4294967295"]]
}

/// "EPERM (Operation not permitted)".
fn errno_text(raw: i32) -> String {
    let errno = Errno::from_raw(raw);
    format!("{errno:?} ({})", errno.desc())
}

fn io_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(raw) => errno_text(raw),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_tempdir() -> Probe {
        let dir = tempfile::tempdir().unwrap();
        let probe = probe(dir.path()).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "the probe left {left:?} behind");
        eprintln!("{probe:#?}");
        probe
    }

    #[test]
    fn mirror_is_always_available_and_choose_picks_a_working_backend() {
        let probe = probe_tempdir();
        assert_eq!(probe.check(BackendKind::Mirror), Ok(()));
        let (kind, reason) = probe.choose();
        assert_eq!(probe.check(kind), Ok(()), "chose {kind}: {reason}");
        assert!(reason.starts_with(kind.name()), "{reason}");
        for kind in BackendKind::ALL {
            if let Err(why) = probe.check(kind) {
                assert!(!why.is_empty() && !why.ends_with('.'), "{why}");
            }
        }
        serde_json::to_string(&probe).unwrap();
    }

    #[test]
    fn root_can_mount_the_kernel_overlay() {
        if !nix::unistd::geteuid().is_root() {
            let note = "root_can_mount_the_kernel_overlay needs root";
            if std::env::var_os("WS_TEST_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
                panic!("{note}, and WS_TEST_REQUIRE_PRIVILEGED=1");
            }
            eprintln!("skipped: {note}");
            return;
        }
        let probe = probe_tempdir();
        assert!(probe.kernel_overlay.available, "{:?}", probe.kernel_overlay);
        assert_eq!(probe.check(BackendKind::Overlayfs), Ok(()));
        assert_eq!(probe.choose().0, BackendKind::Overlayfs);
    }

    #[test]
    fn probing_a_missing_directory_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = probe(&missing).unwrap_err();
        assert!(
            err.to_string().contains(&*dir.path().to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<BackendKind>(&json).unwrap(), kind);
        }
        let err = "overlay".parse::<BackendKind>().unwrap_err();
        assert!(err.contains("overlayfs, fuse-overlayfs, mirror"), "{err}");
    }

    #[test]
    fn choose_and_check_explain_what_is_missing() {
        let no = |reason: &str| Support::no(reason);
        let probe = Probe {
            kernel_overlay: no(
                "mount failed: EPERM (Operation not permitted): needs root or CAP_SYS_ADMIN",
            ),
            userxattr: no(
                "mount failed: EPERM (Operation not permitted): needs root or CAP_SYS_ADMIN",
            ),
            fuse_overlayfs: no(NOT_ON_PATH),
            reflink: no("the filesystem at /x cannot clone files (copies instead)"),
            in_user_namespace: false,
        };
        let (kind, reason) = probe.choose();
        assert_eq!(kind, BackendKind::Mirror);
        assert!(
            reason.contains("EPERM") && reason.contains(NOT_ON_PATH),
            "{reason}"
        );
        let why = probe.check(BackendKind::Overlayfs).unwrap_err();
        assert!(
            why.contains("run as root or give the daemon CAP_SYS_ADMIN"),
            "{why}"
        );
        let why = probe.check(BackendKind::FuseOverlayfs).unwrap_err();
        assert!(why.contains("apt install fuse-overlayfs"), "{why}");

        let probe = Probe {
            fuse_overlayfs: Support::yes("found /usr/bin/fuse-overlayfs"),
            ..probe
        };
        let (kind, reason) = probe.choose();
        assert_eq!(kind, BackendKind::FuseOverlayfs);
        assert_eq!(probe.check_for_other_user(kind), Ok(()));
        assert!(
            reason.starts_with(
                "fuse-overlayfs: kernel overlayfs is not available (mount failed: EPERM"
            ),
            "{reason}"
        );
    }

    #[test]
    fn other_users_get_fuse_overlayfs_only_without_kernel_overlayfs() {
        let probe = Probe {
            kernel_overlay: Support::yes("mounted a test overlay in /x"),
            userxattr: Support::yes("mounted a test overlay in /x"),
            fuse_overlayfs: Support::yes("found /usr/bin/fuse-overlayfs"),
            reflink: Support::no("the filesystem at /x cannot clone files (copies instead)"),
            in_user_namespace: false,
        };
        assert_eq!(probe.check(BackendKind::FuseOverlayfs), Ok(()));
        let why = probe
            .check_for_other_user(BackendKind::FuseOverlayfs)
            .unwrap_err();
        assert!(
            why.contains("use the overlayfs backend") && !why.ends_with('.'),
            "{why}"
        );
        for kind in [BackendKind::Overlayfs, BackendKind::Mirror] {
            assert_eq!(probe.check_for_other_user(kind), Ok(()));
        }
        assert_eq!(probe.choose().0, BackendKind::Overlayfs);
    }

    #[test]
    fn reflink_errors_that_mean_unsupported() {
        let dir = Path::new("/x");
        assert!(reflink_support(Ok(()), dir).available);
        let s = reflink_support(Err(Errno::EOPNOTSUPP as i32), dir);
        assert_eq!(
            s,
            Support::no("the filesystem at /x cannot clone files (copies instead)")
        );
        let s = reflink_support(Err(Errno::EIO as i32), dir);
        assert!(!s.available && s.reason.contains("EIO"), "{s:?}");
    }

    #[test]
    fn identity_uid_map() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("0 1000 1\n"));
        assert!(!is_identity_map("0 100000 65536\n"));
        assert!(!is_identity_map(""));
    }
}
