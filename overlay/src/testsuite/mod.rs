//! The conformance suite: one check per behaviour, run against every backend
//! (`overlay/tests/conformance.rs`), each on fresh directories. Every change set a
//! check reads is compared with a naive capture of the whole mounted view, before
//! and after. A failing check prints the view and the snapshot directories.
//!
//! Checks that need mounts are run by the test file only where the backend works;
//! as in the rest of the workspace, they fail rather than skip when
//! `WS_TEST_REQUIRE_PRIVILEGED=1` and the process is not root.

mod checks;
mod fixture;
mod races;

pub use checks::*;
pub use fixture::{Factory, Fixture, LoopXfs, Spec, dump, listing};
pub use races::owner_races_the_checkout;

/// Runs `check` on a fresh fixture made by `make`; on failure prints the fixture's
/// directories before passing the panic on.
pub fn run(make: impl FnOnce() -> Fixture, check: fn(&Fixture)) {
    let fixture = make();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&fixture)));
    if let Err(panic) = result {
        eprintln!(
            "--- {} backend, state in {}:",
            fixture.snap.kind(),
            fixture.root().display()
        );
        for part in ["snapshotter/snapshots", "mnt"] {
            eprintln!("{}", dump(&fixture.root().join(part)));
        }
        std::panic::resume_unwind(panic);
    }
}

/// Whether a test that needs root may run: without root it is skipped with a note,
/// unless `WS_TEST_REQUIRE_PRIVILEGED=1` (CI sets it), where it fails instead: a
/// privileged test must never pass by not running.
pub fn privileged(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("WS_TEST_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{what} needs root, and WS_TEST_REQUIRE_PRIVILEGED=1 forbids skipping it"
    );
    eprintln!("skipping {what}: it needs root");
    false
}

/// Unmounts the mount `id` (its unique id, as [`crate::mount_on`] returns it)
/// from whichever of `places` it is at now: for race tests in which a user
/// keeps moving the directory it is mounted on. Waits up to 10 s for it to
/// be found.
pub fn unmount_wherever(places: &[std::path::PathBuf], id: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !places.iter().any(|p| crate::unmount_checked(p, id).is_ok()) {
        assert!(
            std::time::Instant::now() < deadline,
            "mount {id} not found to unmount at {places:?}"
        );
        std::thread::yield_now();
    }
}

/// A tmpfs of `size` (`96m`) mounted on `dir`, made if missing: a filesystem to
/// fill in tests of a full disk. Dropped, it unmounts every mount below it
/// (workspace views, a build's) and then itself.
#[derive(Debug)]
pub struct SmallTmpfs {
    dir: std::path::PathBuf,
}

impl SmallTmpfs {
    /// Mounts it; panics when the mount fails (the caller checked [`privileged`]).
    pub fn mount(dir: &std::path::Path, size: &str) -> SmallTmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs on {}",
            dir.display()
        );
        SmallTmpfs {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        for m in crate::mount_table().unwrap_or_default() {
            if m.target.starts_with(&self.dir) && m.target != self.dir {
                let _ = crate::unmount(&m.target);
            }
        }
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// An error and its sources, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
