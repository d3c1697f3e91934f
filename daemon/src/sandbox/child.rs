//! What runs inside the sandbox: `wsd __sandbox SPEC` (stage A) enters the new
//! pid, IPC, UTS and network namespaces and starts `wsd __sandbox-init SPEC`
//! (stage B), pid 1 there, which makes the mount namespace and the sandbox's
//! root, runs the steps and writes the report (see the module doc of
//! [`crate::sandbox`] for the whole sequence).
//!
//! Both stages are started by the `wsd` binary before anything else of it
//! (logging, the runtime, the argument parser), so they are small, single-threaded
//! programs: what they do between `fork` and `exec` is std's business, and they
//! use only `std::process::Command` to start processes.
//!
//! Every setup failure is reported as one message naming what failed and on
//! what, in `report.json` (`{"error": ...}`); the process then exits with
//! [`EXIT_SETUP`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::{
    INIT_SUBCOMMAND, Outcome, REPORT_FILE, Report, SUBCOMMAND, Spec, StepFailure, TTY_SUBCOMMAND,
};

/// The exit code of a stage that could not set the sandbox up (EX_SOFTWARE).
const EXIT_SETUP: u8 = 70;

/// The exit code reported for a step that could not be started (as a shell's).
const EXIT_NOT_STARTED: i32 = 127;

/// The host's device nodes the commands may use.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The entry point of the sandbox's processes, called by `wsd`'s `main` when
/// argv\[1\] starts with `__sandbox`, before anything else starts.
pub fn child_main() -> ExitCode {
    close_inherited_descriptors();
    // The daemon runs with umask 077; builds get the usual 022, whatever the
    // daemon's: the modes of what they write end up in artifacts, and the
    // directories made for the sandbox's root must be reachable by the caller.
    rustix::process::umask(Mode::from_raw_mode(0o022));
    let args: Vec<OsString> = std::env::args_os().collect();
    match (
        args.get(1).and_then(|a| a.to_str()),
        args.get(2),
        args.len(),
    ) {
        (Some(SUBCOMMAND), Some(spec), 3) => stage_a(Path::new(spec)),
        (Some(INIT_SUBCOMMAND), Some(spec), 3) => stage_b(Path::new(spec)),
        (Some(TTY_SUBCOMMAND), Some(_), _) => with_terminal(&args[2..]),
        _ => {
            eprintln!("wsd: `{SUBCOMMAND} SPEC` is run by the daemon for builds, not by hand");
            ExitCode::from(64)
        }
    }
}

/// Closes every descriptor but stdin, stdout and stderr. The daemon holds
/// descriptors that are not close-on-exec (zbus receives the ones clients pass
/// without `MSG_CMSG_CLOEXEC`: another user's source or terminal), and
/// `std::process::Command` passes on whatever is open; none of them may reach
/// the commands. This runs first thing after `exec`, when nothing of ours owns
/// a descriptor yet, so closing them by number is sound.
fn close_inherited_descriptors() {
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        // No procfs: by number, up to a generous limit.
        Err(_) => (3..4096).collect(),
    };
    // (The directory's own descriptor is among them, closed already: EBADF.)
    for fd in open.into_iter().filter(|&fd| fd > 2) {
        let _ = nix::unistd::close(fd);
    }
}

/// Where the report goes: next to the spec, in the scratch directory.
fn report_path(spec_path: &Path) -> PathBuf {
    spec_path.with_file_name(REPORT_FILE)
}

fn read_spec(path: &Path) -> Result<Spec, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read the spec {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("cannot read the spec {}: {e}", path.display()))
}

/// Writes `report` to the report file (from its start) and returns the stage's
/// exit code.
fn finish(mut file: &File, report: &Report) -> ExitCode {
    let written = serde_json::to_writer(&mut file, report)
        .map_err(std::io::Error::from)
        .and_then(|()| file.flush());
    match (written, report) {
        (Err(e), _) => {
            eprintln!("wsd {SUBCOMMAND}: cannot write the report: {e}");
            ExitCode::from(EXIT_SETUP)
        }
        (Ok(()), Report::Error { .. }) => ExitCode::from(EXIT_SETUP),
        (Ok(()), Report::Done(_)) => ExitCode::SUCCESS,
    }
}

fn fail(file: &File, error: String) -> ExitCode {
    finish(file, &Report::Error { error })
}

/// Stage A: creates the report, enters the new namespaces (all but the mount
/// namespace, which stage B makes) and runs stage B as their pid 1.
fn stage_a(spec_path: &Path) -> ExitCode {
    // Die with the daemon's thread that started us (it waits for us).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let path = report_path(spec_path);
    let report = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) => {
            eprintln!(
                "wsd {SUBCOMMAND}: cannot create the report {}: {e}",
                path.display()
            );
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let spec = match read_spec(spec_path) {
        Ok(spec) => spec,
        Err(error) => return fail(&report, error),
    };
    let mut flags = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if !spec.network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = nix::sched::unshare(flags) {
        return fail(
            &report,
            format!(
                "cannot create the pid, IPC, UTS and network namespaces: {e}; check the kernel's namespace limits (/proc/sys/user/max_*_namespaces)"
            ),
        );
    }
    // /proc/self/exe rather than the path: it is this binary even if the file
    // was replaced (a daemon upgrade) since the daemon started.
    let status = Command::new("/proc/self/exe")
        .arg0("wsd")
        .arg(INIT_SUBCOMMAND)
        .arg(spec_path)
        .env_clear()
        .status();
    match status {
        Err(e) => fail(&report, format!("cannot start the sandbox's init: {e}")),
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_SETUP)),
                (None, signal) => {
                    // Killed before it reported (out of memory?): the report
                    // stays empty, and `run` says the sandbox was killed.
                    eprintln!(
                        "wsd {SUBCOMMAND}: the sandbox's init was killed by signal {}",
                        signal.unwrap_or(0)
                    );
                    ExitCode::from(128 + signal.unwrap_or(0).clamp(0, 127) as u8)
                }
            }
        }
    }
}

/// Stage B, pid 1 of the sandbox's pid namespace: sets the sandbox up, runs the
/// steps, lists the stray writes, reports.
fn stage_b(spec_path: &Path) -> ExitCode {
    // Die with stage A (and so, being pid 1, take every command with us).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let path = report_path(spec_path);
    let report = match OpenOptions::new().write(true).open(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!(
                "wsd {INIT_SUBCOMMAND}: cannot open the report {}: {e}",
                path.display()
            );
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let spec = match read_spec(spec_path) {
        Ok(spec) => spec,
        Err(error) => return fail(&report, error),
    };
    let sandbox = match setup(&spec) {
        Ok(sandbox) => sandbox,
        Err(error) => return fail(&report, error),
    };
    let mut outcome = run_steps(&spec);
    // What the steps left running (daemons, background jobs) must not write
    // while the upper is read, nor outlive the run.
    kill_all();
    match super::stray::stray_writes(sandbox.upper.as_fd(), sandbox.host.as_fd(), &sandbox.made) {
        Ok(paths) => outcome.stray_writes = paths,
        Err(e) => {
            return fail(
                &report,
                format!(
                    "cannot list the writes outside the writable places (the overlay's upper): {e}"
                ),
            );
        }
    }
    finish(&report, &Report::Done(outcome))
}

/// What stage B keeps of the setup for the stray report.
struct Sandbox {
    /// The overlay's upper directory (on a tmpfs no longer reachable by path).
    upper: OwnedFd,
    /// The host's root directory, the overlay's lower.
    host: OwnedFd,
    /// The directories the setup made in the root (mount points and their
    /// parents), relative to it: upper entries that are not the commands' doing.
    made: BTreeSet<String>,
}

/// Makes the sandbox's mount namespace and root, and enters it.
fn setup(spec: &Spec) -> Result<Sandbox, String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot create a mount namespace: {e}"))?;
    // Before anything is mounted: no mount of ours may propagate to the host.
    mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(|e| format!("cannot make the mounts private (mount --make-rprivate /): {e}"))?;

    let mnt = spec.scratch.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| format!("cannot create {}: {e}", mnt.display()))?;
    let limits = spec.tmpfs.options();
    tmpfs(&mnt, &format!("mode=0755,{limits}"), MsFlags::empty())?;
    let upper = mnt.join("upper");
    let work = mnt.join("work");
    let root = mnt.join("root");
    for dir in [&upper, &work, &root] {
        std::fs::create_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // The file that covers hidden files: a read-only mount of its own, because
    // a bind copies its source mount's flags (a remount through the hidden
    // file's descriptor would reach the file under the bind, not the bind).
    let empty_file = mnt.join("empty");
    File::create(&empty_file)
        .map_err(|e| format!("cannot create {}: {e}", empty_file.display()))?;
    mount(
        empty_file.to_str(),
        &empty_file,
        None,
        MsFlags::MS_BIND,
        None,
    )
    .and_then(|()| {
        mount(
            None,
            &empty_file,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
    })
    .map_err(|e| {
        format!(
            "cannot make {} a read-only mount: {e}",
            empty_file.display()
        )
    })?;

    let host = open_dir(Path::new("/"))?;
    // The host's root filesystem seen through a throw-away upper: every write
    // outside the bound places lands in the upper, where it is found afterwards.
    let plan = overlay::MountPlan::Overlay(overlay::OverlayPlan {
        lowers: vec![PathBuf::from("/")],
        upper: Some(overlay::Upper {
            dir: upper.clone(),
            work,
        }),
        userxattr: false,
    });
    overlay::mount(&plan, &root).map_err(|e| format!("{e}"))?;
    let upper = open_dir(&upper)?;
    let root_fd = open_dir(&root)?;

    let mut made = BTreeSet::new();
    let mut dir = |rel: &str| -> Result<PathBuf, String> {
        make_dir(root_fd.as_fd(), rel)?;
        let mut prefix = String::new();
        for component in rel.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            made.insert(prefix.clone());
        }
        Ok(root.join(rel))
    };

    // The writable places, and the read-only sysroot.
    bind(
        &spec.build_dir,
        &dir("ws/build")?,
        false,
        "the build directory",
    )?;
    match &spec.install_dir {
        Some(source) => bind(source, &dir("ws/install")?, false, "the install directory")?,
        None => tmpfs(&dir("ws/install")?, "mode=0755", MsFlags::MS_RDONLY)?,
    }
    match &spec.sysroot {
        Some(source) => bind(source, &dir("ws/sysroot")?, true, "the sysroot")?,
        None => tmpfs(&dir("ws/sysroot")?, "mode=0755", MsFlags::MS_RDONLY)?,
    }
    dir("ws/cache")?;
    for (name, source) in &spec.caches {
        bind(
            source,
            &dir(&format!("ws/cache/{name}"))?,
            false,
            &format!("the cache {name:?}"),
        )?;
    }

    // The system's places: private, or the sandbox's own.
    tmpfs(
        &dir("tmp")?,
        &format!("mode=1777,{limits}"),
        MsFlags::empty(),
    )?;
    let proc = dir("proc")?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(|e| format!("cannot mount proc on {}: {e}", proc.display()))?;
    // Read-only sysfs: glibc reads /sys/devices/system/cpu/online for the number
    // of processors (`getconf _NPROCESSORS_ONLN`, which build tools use for -j).
    let sys = dir("sys")?;
    mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(|e| format!("cannot mount sysfs on {}: {e}", sys.display()))?;
    make_dev(&dir("dev")?, &limits)?;

    // Last, so that nothing mounted above uncovers them. The scratch directory
    // holds the spec (and its environment) and the sandbox's own mounts.
    for path in spec.hide.iter().chain([&spec.scratch]) {
        hide(root_fd.as_fd(), path, &empty_file)?;
    }
    drop(root_fd);

    // Into the new root; the old one (the host's) goes away entirely.
    nix::unistd::chdir(&root).map_err(|e| format!("cannot enter {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| format!("cannot pivot_root into {}: {e}", root.display()))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| format!("cannot detach the host's root from the sandbox: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("cannot enter the sandbox's root: {e}"))?;
    nix::unistd::sethostname("ws-sandbox")
        .map_err(|e| format!("cannot set the sandbox's host name: {e}"))?;
    Ok(Sandbox { upper, host, made })
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    nix::mount::mount(source, target, fstype, flags, data)
}

/// A tmpfs at `target` (never set-uid programs or devices on it).
fn tmpfs(target: &Path, options: &str, flags: MsFlags) -> Result<(), String> {
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options),
    )
    .map_err(|e| format!("cannot mount a tmpfs on {}: {e}", target.display()))
}

/// Binds the host directory `source` (`what`, for messages) at `target`.
fn bind(source: &Path, target: &Path, read_only: bool, what: &str) -> Result<(), String> {
    match std::fs::metadata(source) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "cannot bind {what} {}: it is not a directory",
                source.display()
            ));
        }
        Err(e) => return Err(format!("cannot bind {what} {}: {e}", source.display())),
    }
    let plan = overlay::MountPlan::Bind {
        source: source.to_owned(),
        read_only,
    };
    overlay::mount(&plan, target)
        .map_err(|e| format!("cannot bind {what} {}: {e}", source.display()))
}

fn open_dir(path: &Path) -> Result<OwnedFd, String> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// Makes the directory `rel` (and its parents) under `root` unless it is there,
/// one component at a time, following no symlink: a symlink in the host's root
/// (say `/ws` -> `/etc`) must not move a mount point out of the sandbox's root.
fn make_dir(root: BorrowedFd<'_>, rel: &str) -> Result<(), String> {
    let mut dir: Option<OwnedFd> = None;
    let mut shown = String::new();
    for component in rel.split('/') {
        shown.push('/');
        shown.push_str(component);
        let parent = dir.as_ref().map_or(root, |d| d.as_fd());
        match rustix::fs::mkdirat(parent, component, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(format!("cannot create {shown} in the sandbox's root: {e}")),
        }
        let opened = rustix::fs::openat(
            parent,
            component,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => format!(
                "{shown} in the host's root is not a directory (a symlink or a file), so the sandbox cannot mount on it"
            ),
            e => format!("cannot open {shown} in the sandbox's root: {e}"),
        })?;
        dir = Some(opened);
    }
    Ok(())
}

/// The sandbox's /dev: a tmpfs with the host's harmless devices bound in, the
/// usual links, a private /dev/shm and a private devpts instance.
fn make_dev(dev: &Path, limits: &str) -> Result<(), String> {
    tmpfs(dev, &format!("mode=0755,{limits}"), MsFlags::MS_NOEXEC)?;
    for name in DEVICES {
        let target = dev.join(name);
        File::create(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        let source = Path::new("/dev").join(name);
        // A bind mount keeps the host mount's flags: the devices work although
        // the tmpfs under them is nodev.
        mount(source.to_str(), &target, None, MsFlags::MS_BIND, None).map_err(|e| {
            format!(
                "cannot bind {} on {}: {e}",
                source.display(),
                target.display()
            )
        })?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let link = dev.join(name);
        std::os::unix::fs::symlink(to, &link)
            .map_err(|e| format!("cannot create {}: {e}", link.display()))?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(|e| format!("cannot create {}: {e}", shm.display()))?;
    tmpfs(&shm, &format!("mode=1777,{limits}"), MsFlags::empty())?;
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(|e| format!("cannot create {}: {e}", pts.display()))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| format!("cannot mount devpts on {}: {e}", pts.display()))
}

/// Covers the host path `path` in the sandbox's root with an empty read-only
/// tmpfs (a directory) or an empty read-only file (anything else). The path is
/// resolved as the commands would resolve it, symlinks included, inside the
/// root; a path that does not exist there is left alone.
fn hide(root: BorrowedFd<'_>, path: &Path, empty_file: &Path) -> Result<(), String> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        return Err("the host's root directory cannot be hidden".to_owned());
    }
    let fd = match rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(format!("cannot open {} to hide it: {e}", path.display())),
    };
    let is_dir = rustix::fs::fstat(&fd)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
        .map_err(|e| format!("cannot stat {} to hide it: {e}", path.display()))?;
    // The mount lands on the very file opened, through its descriptor.
    let target = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ));
    let hidden = if is_dir {
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0755"),
        )
    } else {
        mount(empty_file.to_str(), &target, None, MsFlags::MS_BIND, None)
    };
    hidden.map_err(|e| format!("cannot hide {}: {e}", path.display()))
}

/// The commands' environment: the documented defaults, then the spec's.
fn environment(spec: &Spec) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("WS_BUILDDIR", "/ws/build"),
        ("WS_INSTALLDIR", "/ws/install"),
        ("WS_SYSROOT", "/ws/sysroot"),
        ("WS_CACHEDIR", "/ws/cache"),
        ("LANG", "C.UTF-8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Runs the steps in order, up to the first that fails.
fn run_steps(spec: &Spec) -> Outcome {
    let env = environment(spec);
    let mut outcome = Outcome {
        succeeded: 0,
        failed: None,
        cancelled: false,
        stray_writes: Vec::new(),
    };
    for (index, step) in spec.steps.iter().enumerate() {
        if !spec.interactive {
            say(&format!("▶ {}: {}\n", step.phase, step.display));
        }
        // A command with a terminal goes through `with_terminal` (the crates deny
        // the `unsafe` of a `pre_exec` that would call setsid): /proc/self/exe is
        // this binary even where the sandbox's root does not show it.
        let mut command = if spec.terminal {
            let mut c = Command::new("/proc/self/exe");
            c.arg(TTY_SUBCOMMAND).args(&step.argv);
            c
        } else {
            let mut c = Command::new(&step.argv[0]);
            c.args(&step.argv[1..]);
            c
        };
        command.env_clear().envs(&env).current_dir("/ws/build");
        // std calls setgroups(0) when it sets the uid of a root parent's child:
        // the commands keep no supplementary group of ours (intended: they get
        // only the uid and gid asked for).
        if spec.uid != 0 {
            command.uid(spec.uid).gid(spec.gid);
        } else if spec.gid != 0 {
            command.gid(spec.gid);
        }
        if !spec.interactive {
            command.stdin(std::process::Stdio::null());
        }
        let failure = match command.spawn() {
            Ok(child) => match wait_for(Pid::from_raw(child.id() as i32)) {
                WaitStatus::Exited(_, 0) => None,
                WaitStatus::Exited(_, code) => Some((Some(code), None)),
                WaitStatus::Signaled(_, signal, _) => Some((None, Some(signal as i32))),
                _ => Some((None, None)),
            },
            Err(e) => {
                say(&format!(
                    "▶ {}: cannot run {}: {e}\n",
                    step.phase, step.argv[0]
                ));
                Some((Some(EXIT_NOT_STARTED), None))
            }
        };
        match failure {
            None => outcome.succeeded += 1,
            Some((code, signal)) => {
                outcome.failed = Some(StepFailure {
                    step: index,
                    code,
                    signal,
                });
                break;
            }
        }
    }
    outcome
}

/// The terminal stage: starts a session, whose controlling terminal stdin
/// becomes (a session leader without one that opens a terminal gets it, and its
/// process group is the foreground one), then executes `argv`.
fn with_terminal(argv: &[OsString]) -> ExitCode {
    if let Err(e) = nix::unistd::setsid() {
        eprintln!("wsd: cannot start a session for the shell: {e}");
        return ExitCode::from(EXIT_NOT_STARTED as u8);
    }
    // Opened without O_NOCTTY: this is what makes it the controlling terminal.
    // The descriptor itself is not needed (0, 1 and 2 are the terminal already).
    if let Err(e) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/fd/0")
    {
        eprintln!("wsd: stdin is not a terminal the shell can have: {e}");
        return ExitCode::from(EXIT_NOT_STARTED as u8);
    }
    let error = Command::new(&argv[0]).args(&argv[1..]).exec();
    eprintln!("wsd: cannot run {}: {error}", argv[0].to_string_lossy());
    ExitCode::from(EXIT_NOT_STARTED as u8)
}

/// Writes a line of ours into the output stream (ahead of what the next command
/// writes: it is flushed before the command starts).
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    // Nobody to tell if the output is gone.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Waits for `pid`, reaping whatever else ends meanwhile: as pid 1 we inherit
/// every orphan of the namespace, and would otherwise collect their zombies.
fn wait_for(pid: Pid) -> WaitStatus {
    loop {
        match nix::sys::wait::wait() {
            Ok(status @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _))) if p == pid => {
                return status;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            // Not our child any more: nothing to wait for.
            Err(_) => return WaitStatus::StillAlive,
        }
    }
}

/// Kills every other process of the pid namespace and reaps them all.
fn kill_all() {
    // As pid 1, kill(-1) reaches the whole namespace but ourselves.
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
    // Until ECHILD: every process of the namespace is ours to reap.
    while let Ok(_) | Err(Errno::EINTR) = nix::sys::wait::wait() {}
}
