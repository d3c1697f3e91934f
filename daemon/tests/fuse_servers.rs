//! fuse-overlayfs under a root daemon: other users get it only where kernel
//! overlayfs cannot be mounted; its mounts land on the directory the user
//! passed, whatever the user does to the path meanwhile; what the daemon
//! counts as in use is what it started itself, never what a process's command
//! line says; and a restarted daemon takes over the views of the last one.
//!
//! The users are real accounts (`wstest1` opens, `wstest2` plays the decoy),
//! made with `useradd` if absent; their moves are made with `runuser`, as an
//! attacker would make them. Every test runs its body in two child processes
//! (this binary re-executed): one in the test's own mount namespace, and one in
//! a new namespace whose mounts are all shared (`unshare -m --propagation
//! shared`, systemd's setting for `/`), where moving a mount that sits under a
//! shared parent fails with EINVAL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon::manager::GcOptions;
use daemon::{Caller, Manager, MountPoint, OpenRequest, Source, StateDir};
use overlay::testsuite::privileged;
use overlay::{BackendKind, MountPlan, OverlayPlan, Upper};

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod support;

use support::user_view::{dir_state, mounts_under};

const USER: &str = "wstest1";
const DECOY: &str = "wstest2";
const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// Set in the children that run a test's body: "plain" or "shared".
const CHILD: &str = "WS_FUSE_TEST_CHILD";
/// Where a test finds the `fuse-overlayfs` wrapper's hook (see `hooked_path`).
const HOOK_DIR: &str = "WS_FUSE_TEST_HOOK_DIR";

fn user(name: &str) -> Caller {
    if nix::unistd::User::from_name(name).unwrap().is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", name])
            .output()
            .unwrap();
        // 9: made meanwhile by another test process.
        assert!(out.status.success() || out.status.code() == Some(9));
    }
    let entry = nix::unistd::User::from_name(name).unwrap().unwrap();
    Caller {
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
    }
}

/// Runs `sh -c script` as `name`.
fn as_user(name: &str, script: &str) {
    let out = Command::new("runuser")
        .args(["-u", name, "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the test `name`'s `body` in the two children (see the module doc); in
/// a child, runs `body` itself. `env` is added to the children's environment.
fn in_both_namespaces(name: &str, env: &[(&str, std::ffi::OsString)], body: fn()) {
    if !privileged(name) {
        return;
    }
    if let Ok(kind) = std::env::var(CHILD) {
        let root = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = root
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap();
        assert_eq!(root.contains(" shared:"), kind == "shared", "{root}");
        body();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for kind in ["plain", "shared"] {
        let mut cmd = if kind == "shared" {
            let mut cmd = Command::new("unshare");
            cmd.args(["-m", "--propagation", "shared", "--"]).arg(&exe);
            cmd
        } else {
            Command::new(&exe)
        };
        cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, kind);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let started = Instant::now();
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "--- {name} ({kind} namespace, {:?}) ---\n{stdout}{stderr}",
            started.elapsed()
        );
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{name} failed in a {kind} mount namespace"
        );
    }
}

/// A temporary directory every user can enter.
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

fn chown(path: &Path, who: Caller) {
    std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid)).unwrap();
}

/// The unique id (`STATX_MNT_ID_UNIQUE`, as the daemon records) of the mount
/// the path `path` is on, its last component not followed, and without asking
/// a FUSE server (a dead one answers nothing).
fn mount_id_at(path: &Path) -> std::io::Result<u64> {
    use rustix::fs::{AtFlags, StatxFlags, statx};
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
    let unique = StatxFlags::from_bits_retain(0x4000);
    Ok(statx(rustix::fs::CWD, path, flags, unique)?.stx_mnt_id)
}

/// Unmounts everything under a test's directory when dropped, deepest first.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        let mut targets = mounts_under(&self.0);
        targets.sort_by_key(|t| std::cmp::Reverse(t.components().count()));
        for target in targets {
            let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A user's home (`home/p/view`, theirs, empty), their sources (`src`), and a
/// root-owned directory `secret/view` with files of root's.
struct Scene {
    // Dropped first: nothing may be mounted when the directory is removed.
    _unmount: Unmounter,
    dir: tempfile::TempDir,
    caller: Caller,
}

impl Scene {
    fn new() -> Scene {
        let caller = user(USER);
        let dir = shared_tempdir();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("README"), "readme\n").unwrap();
        for path in [src.clone(), src.join("README")] {
            chown(&path, caller);
        }
        let secret = dir.path().join("secret/view");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("README"), "root's own\n").unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("p/view")).unwrap();
        for d in [home.clone(), home.join("p"), home.join("p/view")] {
            chown(&d, caller);
        }
        let unmount = Unmounter(dir.path().to_owned());
        Scene {
            dir,
            caller,
            _unmount: unmount,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The user's move: `home/p` out of the way, a symlink to `secret` in its
    /// place, so `home/p/view` leads to root's directory.
    fn swap_script(&self) -> String {
        format!(
            "mv {h}/p {h}/moved && ln -s {s} {h}/p",
            h = self.path("home").display(),
            s = self.path("secret").display()
        )
    }
}

/// The `fuse-overlayfs` that the children find first on their `PATH`: a
/// wrapper that runs the script `$WS_FUSE_TEST_HOOK_DIR/before` once (if a
/// test put one there), then the real program. So a test can act at the last
/// moment before a server mounts, after every check the daemon makes.
fn hooked_path(hooks: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("fuse-overlayfs"))
        .find(|p| p.is_file())
        .expect("fuse-overlayfs is installed");
    let bin = hooks.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("fuse-overlayfs");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -f \"${HOOK_DIR}/before\" ]; then\n  mv \"${HOOK_DIR}/before\" \"${HOOK_DIR}/ran\" && sh \"${HOOK_DIR}/ran\"\nfi\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut path = std::ffi::OsString::from(bin.as_os_str());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap());
    vec![("PATH", path), (HOOK_DIR, hooks.as_os_str().to_owned())]
}

/// A root daemon on a machine where only fuse-overlayfs can layer: there, it
/// is every user's backend.
fn fuse_only_manager(state: &Path) -> Manager {
    Manager::open_with_probe(StateDir::new(state.to_owned()), |probe| {
        probe.kernel_overlay.available = false;
        probe.kernel_overlay.reason = "switched off by the test".to_owned();
    })
    .unwrap()
}

#[test]
fn a_fuse_view_lands_on_the_directory_passed_when_its_path_is_swapped() {
    let hooks = tempfile::tempdir().unwrap();
    in_both_namespaces(
        "a_fuse_view_lands_on_the_directory_passed_when_its_path_is_swapped",
        &hooked_path(hooks.path()),
        || {
            let s = Scene::new();
            let manager = fuse_only_manager(&s.path("state"));
            let secret = dir_state(&s.path("secret/view"));
            let secret_mount = mount_id_at(&s.path("secret/view")).unwrap();
            // The user passes their directory, then swaps its path for a symlink
            // to root's at the last moment: after the daemon checked it, as the
            // server starts.
            let hook = std::env::var_os(HOOK_DIR).unwrap();
            std::fs::write(
                Path::new(&hook).join("before"),
                format!("runuser -u {USER} -- sh -c '{}'\n", s.swap_script()),
            )
            .unwrap();
            let opened = manager.open_workspace(
                s.caller,
                OpenRequest {
                    name: "w".into(),
                    source: Source::Dir(s.path("src")),
                    path: Some(MountPoint::open(&s.path("home/p/view")).unwrap()),
                    backend: Some(BackendKind::FuseOverlayfs),
                },
            );
            assert!(
                !Path::new(&hook).join("before").exists(),
                "the hook did not run: no server was started"
            );
            let secret_now = mount_id_at(&s.path("secret/view")).unwrap();
            let listed = std::fs::read_to_string(s.path("secret/view/README"));
            // Unmounted before asserting, so a failure leaves no mount behind.
            if secret_now != secret_mount {
                let _ =
                    nix::mount::umount2(&s.path("secret/view"), nix::mount::MntFlags::MNT_DETACH);
            }
            assert_eq!(
                secret_now, secret_mount,
                "a fuse-overlayfs mount landed on root's directory"
            );
            assert_eq!(listed.unwrap(), "root's own\n");
            assert_eq!(dir_state(&s.path("secret/view")), secret);
            let ws = opened.expect("the open succeeds: the path played no part");
            // The view is on the directory passed, wherever it is now.
            let moved = s.path("home/moved/view");
            assert_eq!(Some(mount_id_at(&moved).unwrap()), ws.mount_id);
            assert_eq!(
                std::fs::read_to_string(moved.join("README")).unwrap(),
                "readme\n"
            );
            // Moved back, the view is the workspace's again.
            as_user(
                USER,
                &format!(
                    "rm {h}/p && mv {h}/moved {h}/p",
                    h = s.path("home").display()
                ),
            );
            manager.close(s.caller, "w", true).unwrap();
            assert_eq!(mounts_under(s.dir.path()), Vec::<PathBuf>::new());
        },
    );
}

/// A process of `DECOY` whose command line reads like fuse-overlayfs serving
/// `layers` at `target`: `fuse-overlayfs -- - ,lowerdir=A:B TARGET` (a `cat`
/// reading its stdin, so it ends when the test closes that).
fn decoy(layers: &[PathBuf], target: &Path) -> Child {
    let lowers: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
    let script = format!(
        "exec -a fuse-overlayfs cat -- - ,lowerdir={} {}",
        lowers.join(":"),
        target.display()
    );
    let child = Command::new("runuser")
        .args(["-u", DECOY, "--", "bash", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Until its command line shows, it decoys nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = format!("lowerdir={}", lowers.join(":"));
    let shows = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read(p.path().join("cmdline")).is_ok_and(|line| {
                let line = String::from_utf8_lossy(&line);
                line.starts_with("fuse-overlayfs\0") && line.contains(&wanted)
            })
        })
    };
    while !shows() {
        assert!(Instant::now() < deadline, "the decoy did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn a_decoy_command_line_neither_blocks_close_and_gc_nor_gets_a_mount_unmounted() {
    in_both_namespaces(
        "a_decoy_command_line_neither_blocks_close_and_gc_nor_gets_a_mount_unmounted",
        &[],
        || {
            user(DECOY);
            let s = Scene::new();
            let state = s.path("state");
            let mut manager = Some(Manager::open(StateDir::new(state.clone())).unwrap());
            let m = || manager.as_ref().unwrap();
            m().open_workspace(
                s.caller,
                OpenRequest {
                    name: "w".into(),
                    source: Source::Dir(s.path("src")),
                    path: Some(MountPoint::open(&s.path("home/p/view")).unwrap()),
                    backend: None,
                },
            )
            .unwrap();
            // Root's own mount, which the decoy names as where it serves.
            let guarded = s.path("secret/mnt");
            std::fs::create_dir_all(&guarded).unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                &guarded,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=1m"),
            )
            .unwrap();
            // Every layer of the user's snapshotter, and a leftover directory
            // that no record names (as a crash leaves), which recovery collects.
            let layers_dir = state.join(format!("snapshots/overlayfs-{}/snapshots", s.caller.uid));
            let leftover = layers_dir.join("leftover");
            std::fs::create_dir(&leftover).unwrap();
            let layers: Vec<PathBuf> = std::fs::read_dir(&layers_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(layers.len(), 3, "{layers:?}");
            let mut decoy = decoy(&layers, &guarded);

            let mut wrong = Vec::new();
            if let Err(e) = m().close(s.caller, "w", true) {
                wrong.push(format!("close was refused: {e}"));
            }
            match m().gc(ROOT, GcOptions::default()) {
                Ok(report) if report.removed_snapshots == 1 => {}
                Ok(report) => wrong.push(format!(
                    "gc removed {} base snapshots, not 1",
                    report.removed_snapshots
                )),
                Err(e) => wrong.push(format!("gc failed: {e}")),
            }
            // A restart: recovery collects the leftover directory.
            drop(manager.take());
            manager = Some(Manager::open(StateDir::new(state.clone())).unwrap());
            if leftover.exists() {
                wrong.push("recovery did not collect the leftover layer".to_owned());
            }
            if !mounts_under(s.dir.path()).contains(&guarded) {
                wrong.push(format!("recovery unmounted {}", guarded.display()));
            }
            drop(manager);
            drop(decoy.stdin.take());
            let _ = decoy.wait();
            assert!(wrong.is_empty(), "{wrong:#?}");
        },
    );
}

/// What the race loop does, and how often each thing happened.
#[derive(Debug, Default)]
struct Race {
    /// Mounts made (the path led to the user's directory when the "client"
    /// opened it).
    mounted: u32,
    /// Of those, the mounts during which the path was swapped: when the
    /// mount was attached, `home/p` was the symlink or the directory had moved.
    swapped_meanwhile: u32,
    /// Opens that found root's directory, which the daemon refuses as not the
    /// caller's, or nothing (mid-swap).
    refused: u32,
    /// Mounts that landed on root's directory.
    escaped: Vec<String>,
}

#[test]
fn racing_path_swaps_never_move_a_fuse_mount_outside_the_users_files() {
    in_both_namespaces(
        "racing_path_swaps_never_move_a_fuse_mount_outside_the_users_files",
        &[],
        || {
            let s = Scene::new();
            let caller = s.caller;
            // A small tree: a root-owned lower, and the user's upper.
            for d in ["lower", "upper/fs", "upper/work", "mounting"] {
                std::fs::create_dir_all(s.path(d)).unwrap();
            }
            std::fs::write(s.path("lower/a"), "lower\n").unwrap();
            for d in ["upper", "upper/fs", "upper/work"] {
                chown(&s.path(d), caller);
            }
            let plan = MountPlan::Fuse(OverlayPlan {
                lowers: vec![s.path("lower")],
                upper: Some(Upper {
                    dir: s.path("upper/fs"),
                    work: s.path("upper/work"),
                }),
                userxattr: false,
            });
            let secret = dir_state(&s.path("secret/view"));
            let lower = dir_state(&s.path("lower"));
            let secret_mount = mount_id_at(&s.path("secret/view")).unwrap();
            let before = mounts_under(s.dir.path());

            // The user swaps `home/p` for a symlink to `secret` and back, flat out.
            let stop = s.path("stop");
            let swapper = Command::new("runuser")
                .args(["-u", USER, "--", "sh", "-c"])
                .arg(format!(
                    "while [ ! -e {stop} ]; do {swap}; rm {h}/p && mv {h}/moved {h}/p; done",
                    stop = stop.display(),
                    swap = s.swap_script(),
                    h = s.path("home").display()
                ))
                .spawn()
                .unwrap();
            let stopper = Stopper(stop, swapper);

            let mut race = Race::default();
            let started = Instant::now();
            let mut attempt = 0u32;
            while race.mounted < 1000 {
                attempt += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(100),
                    "too slow: {race:?} after {:?}",
                    started.elapsed()
                );
                mount_once(&s, &plan, attempt, secret_mount, &mut race);
                assert!(race.escaped.is_empty(), "{race:?}");
            }
            drop(stopper);
            eprintln!("{race:?} in {:?}", started.elapsed());
            assert_eq!(dir_state(&s.path("secret/view")), secret);
            assert_eq!(dir_state(&s.path("lower")), lower);
            assert_eq!(mounts_under(s.dir.path()), before);
            assert_eq!(mount_id_at(&s.path("secret/view")).unwrap(), secret_mount);
        },
    );
}

/// Ends the swapper: the stop file, then its exit.
struct Stopper(PathBuf, Child);

impl Drop for Stopper {
    fn drop(&mut self) {
        std::fs::write(&self.0, "").unwrap();
        let _ = self.1.wait();
    }
}

/// One round of the race: the "client" opens `home/p/view`, the "daemon"
/// checks that it is the caller's and mounts on the descriptor, then the
/// mount is found where it landed and removed.
fn mount_once(s: &Scene, plan: &MountPlan, attempt: u32, secret_mount: u64, race: &mut Race) {
    use rustix::fs::{Mode, OFlags};
    let view = s.path("home/p/view");
    let refused = |race: &mut Race| {
        race.refused += 1;
        // Leaves the swapper the CPU, rather than spinning.
        std::thread::sleep(Duration::from_micros(200));
    };
    let Ok(fd) = rustix::fs::open(&view, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) else {
        return refused(race);
    };
    if rustix::fs::fstat(&fd).unwrap().st_uid != s.caller.uid {
        return refused(race);
    }
    let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let shown = std::fs::read_link(&fd_path).unwrap();
    let staging = s.path(&format!("mounting/{attempt}"));
    std::fs::create_dir(&staging).unwrap();
    let mounted = overlay::mount_on(plan, std::os::fd::AsFd::as_fd(&fd), &shown, &staging);
    let swapped = s.path("home/p").is_symlink() || std::fs::read_link(&fd_path).unwrap() != shown;
    let _ = std::fs::remove_dir(&staging);
    drop(fd);
    if mount_id_at(&s.path("secret/view")).unwrap() != secret_mount {
        race.escaped.push(format!("attempt {attempt}: {mounted:?}"));
        let _ = overlay::unmount(&s.path("secret/view"));
        return;
    }
    let id = match mounted {
        Ok(Some(id)) => id,
        Ok(None) => panic!("a fuse plan mounts something"),
        // A move of the path between the checks of a mount by path.
        Err(e) => {
            eprintln!("attempt {attempt}: {e}");
            return refused(race);
        }
    };
    race.mounted += 1;
    race.swapped_meanwhile += u32::from(swapped);
    // Wherever the swapper has the directory now.
    overlay::testsuite::unmount_wherever(&[s.path("home/p/view"), s.path("home/moved/view")], id);
}

#[test]
fn a_user_who_asks_for_fuse_overlayfs_where_kernel_overlayfs_works_is_told_to_use_that() {
    in_both_namespaces(
        "a_user_who_asks_for_fuse_overlayfs_where_kernel_overlayfs_works_is_told_to_use_that",
        &[],
        refused_where_kernel_overlayfs_works,
    );
}

fn refused_where_kernel_overlayfs_works() {
    let s = Scene::new();
    let manager = Manager::open(StateDir::new(s.path("state"))).unwrap();
    assert!(manager.probe().kernel_overlay.available);
    let open = |backend| {
        manager.open_workspace(
            s.caller,
            OpenRequest {
                name: "w".into(),
                source: Source::Dir(s.path("src")),
                path: None,
                backend: Some(backend),
            },
        )
    };
    let err = open(BackendKind::FuseOverlayfs).unwrap_err();
    assert_eq!(err.kind(), daemon::ErrorKind::AccessDenied, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("fuse-overlayfs") && text.contains("use the overlayfs backend"),
        "{text}"
    );
    assert!(manager.list(ROOT).unwrap().is_empty());
    // The default is the kernel's overlay, and root may still choose fuse-overlayfs.
    assert_eq!(
        open(BackendKind::Overlayfs).unwrap().backend,
        BackendKind::Overlayfs
    );
    manager.close(s.caller, "w", true).unwrap();
    let root = manager
        .open_workspace(
            ROOT,
            OpenRequest {
                name: "r".into(),
                source: Source::Dir(s.path("src")),
                path: None,
                backend: Some(BackendKind::FuseOverlayfs),
            },
        )
        .unwrap();
    assert_eq!(root.backend, BackendKind::FuseOverlayfs);
    manager.close(ROOT, "r", true).unwrap();
}

/// Set in the process that plays the daemon before a restart.
const FIRST_DAEMON: &str = "WS_FUSE_TEST_FIRST_DAEMON";

/// The fuse-overlayfs processes whose command line names `dir` (a test may
/// look there; the daemon never does).
fn servers_naming(dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_str()?.parse().ok()?;
            let line = std::fs::read(p.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&line);
            let zombie = std::fs::read_to_string(p.path().join("stat"))
                .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|r| r.starts_with(" Z")));
            (line.starts_with("fuse-overlayfs\0") && line.contains(&dir) && !zombie).then_some(pid)
        })
        .collect()
}

#[test]
fn a_restarted_daemon_takes_over_the_fuse_views_of_the_last_one() {
    const NAME: &str = "a_restarted_daemon_takes_over_the_fuse_views_of_the_last_one";
    in_both_namespaces(NAME, &[], || {
        if let Some(state) = std::env::var_os(FIRST_DAEMON) {
            // The first daemon opens the workspace and is gone (its process
            // ends), leaving its server behind.
            let view = Path::new(&state).parent().unwrap().join("home/p/view");
            let m = fuse_only_manager(Path::new(&state));
            m.open_workspace(
                user(USER),
                OpenRequest {
                    name: "w".into(),
                    source: Source::Dir(Path::new(&state).parent().unwrap().join("src")),
                    path: Some(MountPoint::open(&view).unwrap()),
                    backend: Some(BackendKind::FuseOverlayfs),
                },
            )
            .unwrap();
            return;
        }
        let s = Scene::new();
        let state = s.path("state");
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(FIRST_DAEMON, &state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let view = s.path("home/p/view");
        as_user(USER, &format!("echo edited > {}/README", view.display()));
        let old = servers_naming(&state);
        assert_eq!(old.len(), 1, "the first daemon's server serves on: {old:?}");
        let first_id = mount_id_at(&view).unwrap();

        // A file open in the view: the new daemon leaves it with the old
        // server, and still reads the edit through it.
        let held = std::fs::File::open(view.join("README")).unwrap();
        let m = fuse_only_manager(&state);
        let status = m.status(s.caller, "w").unwrap();
        assert_eq!(status.workspace.mount_id, Some(first_id));
        assert_eq!(status.changes.len(), 1, "{:?}", status.changes);
        assert_eq!(servers_naming(&state), old);
        drop(m);
        drop(held);

        // Nothing open: the view is mounted again, by a server of the new
        // daemon's, and the old server is gone with its mount.
        let m = fuse_only_manager(&state);
        let ws = m.get(s.caller, "w").unwrap();
        assert_ne!(ws.mount_id, Some(first_id));
        assert_eq!(ws.mount_id, Some(mount_id_at(&view).unwrap()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while servers_naming(&state).iter().any(|pid| old.contains(pid)) {
            assert!(Instant::now() < deadline, "the old server serves on");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::read_to_string(view.join("README")).unwrap(),
            "edited\n"
        );
        assert_eq!(m.status(s.caller, "w").unwrap().changes.len(), 1);
        m.close(s.caller, "w", true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !servers_naming(&state).is_empty() {
            assert!(Instant::now() < deadline, "a server outlived close");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(mounts_under(s.dir.path()), Vec::<PathBuf>::new());
    });
}

/// Set in the process that opens a workspace and crashes before recording it.
const CRASHING_DAEMON: &str = "WS_FUSE_TEST_CRASHING_DAEMON";

#[test]
fn a_crash_between_a_fuse_mount_and_its_record_leaves_no_view_behind() {
    const NAME: &str = "a_crash_between_a_fuse_mount_and_its_record_leaves_no_view_behind";
    in_both_namespaces(NAME, &[], || {
        if let Some(state) = std::env::var_os(CRASHING_DAEMON) {
            let dir = Path::new(&state).parent().unwrap();
            let m = fuse_only_manager(Path::new(&state));
            fail::cfg("open-before-batch", "return").unwrap();
            let _ = m.open_workspace(
                user(USER),
                OpenRequest {
                    name: "w".into(),
                    source: Source::Dir(dir.join("src")),
                    path: Some(MountPoint::open(&dir.join("home/p/view")).unwrap()),
                    backend: Some(BackendKind::FuseOverlayfs),
                },
            );
            panic!("the crash point was not reached");
        }
        let s = Scene::new();
        let state = s.path("state");
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(CRASHING_DAEMON, &state)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(nix::libc::SIGABRT),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let view = s.path("home/p/view");
        assert_eq!(
            mounts_under(s.dir.path()),
            std::slice::from_ref(&view),
            "the crash left the view"
        );
        assert_eq!(servers_naming(&state).len(), 1);

        let m = fuse_only_manager(&state);
        assert!(m.list(ROOT).unwrap().is_empty());
        assert_eq!(mounts_under(s.dir.path()), Vec::<PathBuf>::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !servers_naming(&state).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the crashed daemon's server serves on"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let left: Vec<_> = std::fs::read_dir(state.join("mounting")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // The name and the directory are free again.
        m.open_workspace(
            s.caller,
            OpenRequest {
                name: "w".into(),
                source: Source::Dir(s.path("src")),
                path: Some(MountPoint::open(&view).unwrap()),
                backend: Some(BackendKind::FuseOverlayfs),
            },
        )
        .unwrap();
        m.close(s.caller, "w", true).unwrap();
    });
}
