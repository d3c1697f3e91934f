//! Each way a user could redirect a root daemon's operation on a path of
//! theirs, made deterministic: the daemon stops at a named point between
//! resolving the location and using it (a race point, or a crash point given a
//! callback), the user swaps the path there, and the operation goes on. It then
//! acts on the location it resolved, through its descriptor, or refuses:
//! nothing outside the user's own files changes content, owner or mounts.
//!
//! The points are process-wide, so the tests of this binary take turns (each
//! holds a `fail::FailScenario`). The checkout's point (ownership given while a
//! layer or a build's cache is written) is tested in
//! `treediff/tests/checkout_swaps.rs`; the watch's in the unit tests of
//! `manager::source_watch`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use daemon::{Manager, MountPoint, OpenRequest, Source, StateDir};
use overlay::BackendKind;
use overlay::testsuite::privileged;

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod support;

use support::user_view::{Attack, Setup, as_user, attacks, mounts_under};

/// Runs `swap` the first time the point `point` is reached; the flag says
/// whether it was.
fn swap_at(point: &'static str, swap: impl Fn() + Send + Sync + 'static) -> Arc<AtomicBool> {
    let reached = Arc::new(AtomicBool::new(false));
    let flag = reached.clone();
    fail::cfg_callback(point, move || {
        if !flag.swap(true, Ordering::SeqCst) {
            swap();
        }
    })
    .unwrap();
    reached
}

/// Swaps `<home>/<parent>` with `attack` at `point`, once, aiming at `secret`'s
/// parent (root's directory).
fn redirect_at(
    point: &'static str,
    home: PathBuf,
    secret: &Path,
    attack: &'static Attack,
    parent: &'static str,
) {
    let secret = secret.parent().unwrap().to_owned();
    let reached = swap_at(point, move || attack.run(&home, parent, &secret));
    REACHED.with(|r| *r.borrow_mut() = Some(reached));
}

thread_local! {
    /// Whether the last `redirect_at` point was reached.
    static REACHED: std::cell::RefCell<Option<Arc<AtomicBool>>> = const { std::cell::RefCell::new(None) };
}

fn assert_reached(point: &str) {
    let reached = REACHED.with(|r| r.borrow_mut().take()).unwrap();
    assert!(
        reached.load(Ordering::SeqCst),
        "the point {point} was never reached: the test swapped nothing"
    );
    fail::remove(point);
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

static ATTACKS: std::sync::LazyLock<[Attack; 2]> = std::sync::LazyLock::new(attacks);

#[test]
fn discard_and_undo_write_into_the_view_they_resolved_when_its_path_is_swapped_there() {
    if !privileged(
        "discard_and_undo_write_into_the_view_they_resolved_when_its_path_is_swapped_there",
    ) {
        return;
    }
    let _points = fail::FailScenario::setup();
    for backend in [BackendKind::Overlayfs, BackendKind::Mirror] {
        for attack in ATTACKS.iter() {
            let context = format!("{backend}, {}", attack.name);
            let s = Setup::new(backend);
            let (m, home) = (&s.manager, s.home());
            // The edit matches root's file, so that a reversal written where the
            // path leads would take it for the edit and overwrite it.
            as_user(&format!(
                "echo \"root's own\" > {}/p/view/README",
                home.display()
            ));
            let secret = s.secret_state();
            redirect_at(
                "view-write-after-intent",
                s.home(),
                &s.secret(),
                attack,
                "p",
            );
            let dropped = m.discard(s.caller, "w").unwrap();
            assert_reached("view-write-after-intent");
            assert_eq!(dropped.len(), 2, "{context}");
            assert_eq!(
                s.secret_state(),
                secret,
                "{context}: discard changed root's files"
            );
            let moved = home.join("p.moved/view");
            assert_eq!(
                read(&moved.join("README")).unwrap(),
                "readme\n",
                "{context}"
            );
            assert_eq!(read(&moved.join("added")), None, "{context}");
            s.assert_redirect_untouched("p", &context);

            // Put back, then the undo is redirected the same way.
            as_user(&format!(
                "rm -rf {h}/p && mv {h}/p.moved {h}/p",
                h = home.display()
            ));
            redirect_at(
                "view-write-after-intent",
                s.home(),
                &s.secret(),
                attack,
                "p",
            );
            m.undo(s.caller, "w").unwrap();
            assert_reached("view-write-after-intent");
            assert_eq!(
                s.secret_state(),
                secret,
                "{context}: undo changed root's files"
            );
            assert_eq!(
                read(&moved.join("README")).unwrap(),
                "root's own\n",
                "{context}"
            );
            assert_eq!(read(&moved.join("added")).unwrap(), "new\n", "{context}");
            s.assert_redirect_untouched("p", &context);
        }
    }
}

#[test]
fn close_unmounts_the_mount_it_checked_when_its_path_is_swapped_there() {
    if !privileged("close_unmounts_the_mount_it_checked_when_its_path_is_swapped_there") {
        return;
    }
    let _points = fail::FailScenario::setup();
    for attack in ATTACKS.iter() {
        let context = attack.name;
        let s = Setup::new(BackendKind::Overlayfs);
        // Root's directory is a mount too: an unmount by path would take it.
        let secret_dir = s.secret();
        let bound = std::process::Command::new("mount")
            .arg("--bind")
            .args([&secret_dir, &secret_dir])
            .status()
            .unwrap();
        assert!(bound.success());
        let secret = s.secret_state();
        redirect_at("unmount-after-check", s.home(), &s.secret(), attack, "p");
        let closed = s.manager.close(s.caller, "w", true);
        assert_reached("unmount-after-check");
        assert_eq!(
            mounts_under(s.dir.path()),
            vec![secret_dir.clone()],
            "{context}: root's mount must stay and the view must go ({closed:?})"
        );
        closed.unwrap_or_else(|e| panic!("{context}: {e:#}"));
        assert_eq!(s.secret_state(), secret, "{context}");
        s.assert_redirect_untouched("p", context);
    }
}

#[test]
fn open_mounts_on_the_directory_passed_when_its_path_is_swapped_there() {
    if !privileged("open_mounts_on_the_directory_passed_when_its_path_is_swapped_there") {
        return;
    }
    let _points = fail::FailScenario::setup();
    for backend in [BackendKind::Overlayfs, BackendKind::Mirror] {
        for attack in ATTACKS.iter() {
            let context = format!("{backend}, {}", attack.name);
            let s = Setup::new(backend);
            let home = s.home();
            as_user(&format!("mkdir -p {}/q/view", home.display()));
            let secret = s.secret_state();
            redirect_at("open-before-mount", s.home(), &s.secret(), attack, "q");
            let ws = s
                .manager
                .open_workspace(
                    s.caller,
                    OpenRequest {
                        name: "w2".into(),
                        source: Source::Dir(s.dir.path().join("src")),
                        path: Some(MountPoint::open(&home.join("q/view")).unwrap()),
                        backend: Some(backend),
                    },
                )
                .unwrap();
            assert_reached("open-before-mount");
            let moved = home.join("q.moved/view");
            assert_eq!(
                mounts_under(s.dir.path()),
                vec![home.join("p/view"), moved.clone()],
                "{context}: the view must land on the directory passed, and only there"
            );
            assert_eq!(
                read(&moved.join("README")).unwrap(),
                "readme\n",
                "{context}"
            );
            assert!(ws.mount_id.is_some(), "{context}");
            assert_eq!(s.secret_state(), secret, "{context}");
            s.assert_redirect_untouched("q", &context);
        }
    }
}

#[test]
fn recovery_mounts_on_the_directory_it_checked_when_its_path_is_swapped_there() {
    if !privileged("recovery_mounts_on_the_directory_it_checked_when_its_path_is_swapped_there") {
        return;
    }
    let _points = fail::FailScenario::setup();
    for attack in ATTACKS.iter() {
        let context = attack.name;
        let s = Setup::new(BackendKind::Overlayfs);
        let secret = s.secret_state();
        let Setup {
            _unmounts,
            dir,
            manager,
            caller,
        } = s;
        // As after a reboot: the daemon is gone, and so is the view; its record stays.
        drop(manager);
        overlay::unmount(&dir.path().join("home/p/view")).unwrap();
        let home = dir.path().join("home");
        redirect_at(
            "recover-before-mount",
            home,
            &dir.path().join("secret/view"),
            attack,
            "p",
        );
        let s = Setup {
            _unmounts,
            manager: Manager::open(StateDir::new(dir.path().join("state"))).unwrap(),
            dir,
            caller,
        };
        assert_reached("recover-before-mount");
        let moved = s.home().join("p.moved/view");
        assert_eq!(
            mounts_under(s.dir.path()),
            vec![moved.clone()],
            "{context}: the view must be mounted again where the checked path led, and only there"
        );
        assert_eq!(
            read(&moved.join("README")).unwrap(),
            "edited\n",
            "{context}"
        );
        assert_eq!(s.secret_state(), secret, "{context}");
        s.assert_redirect_untouched("p", context);
    }
}
