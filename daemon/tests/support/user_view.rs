//! A user's workspace for the tests that attack the paths of views: a root
//! manager, the test user's home with a view opened in it and edited, and a
//! root-owned directory the attacks aim at.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use daemon::{Caller, Manager, MountPoint, OpenRequest, Source, StateDir};
use overlay::BackendKind;

pub const USER: &str = "wstest1";

/// The first test user, as the daemon sees a caller.
pub fn user() -> Caller {
    let user = super::users()[0];
    Caller {
        uid: user.uid,
        gid: user.gid,
    }
}

/// Runs `sh -c script` as the test user.
pub fn as_user(script: &str) {
    let out = Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Setup {
    /// First, so that it is dropped before the directory is removed.
    pub _unmounts: UnmountUnder,
    pub dir: tempfile::TempDir,
    pub manager: Manager,
    pub caller: Caller,
}

impl Setup {
    /// A root manager, a user's home with `home/p/view` opened as workspace `w`
    /// and edited (a file changed, one added), and a root-owned directory
    /// `secret/view` with a file the attack aims at.
    pub fn new(backend: BackendKind) -> Setup {
        let caller = user();
        let dir = super::shared_tempdir();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("README"), "readme\n").unwrap();
        std::fs::write(src.join("main.c"), "int main;\n").unwrap();
        let secret = dir.path().join("secret/view");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("README"), "root's own\n").unwrap();
        std::fs::write(secret.join("main.c"), "root's main\n").unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("p/view")).unwrap();
        for d in [home.clone(), home.join("p"), home.join("p/view")] {
            std::os::unix::fs::chown(&d, Some(caller.uid), Some(caller.gid)).unwrap();
        }
        for f in ["README", "main.c"] {
            std::os::unix::fs::chown(src.join(f), Some(caller.uid), Some(caller.gid)).unwrap();
        }
        std::os::unix::fs::chown(&src, Some(caller.uid), Some(caller.gid)).unwrap();
        let manager = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
        let view = home.join("p/view");
        manager
            .open_workspace(
                caller,
                OpenRequest {
                    name: "w".into(),
                    source: Source::Dir(src),
                    path: Some(MountPoint::open(&view).unwrap()),
                    backend: Some(backend),
                },
            )
            .unwrap();
        as_user(&format!(
            "echo edited > {v}/README && echo new > {v}/added",
            v = view.display()
        ));
        Setup {
            _unmounts: UnmountUnder(dir.path().to_owned()),
            dir,
            manager,
            caller,
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn secret(&self) -> PathBuf {
        self.dir.path().join("secret/view")
    }

    /// Redirects the path of workspace `w`'s view (`home/p/view`) with `attack`.
    pub fn redirect(&self, attack: &Attack) {
        attack.run(&self.home(), "p", self.secret().parent().unwrap());
    }

    /// Checks that what `home/<parent>/view` leads to after an attack (the
    /// user's decoy, or root's directory) was not written.
    pub fn assert_redirect_untouched(&self, parent: &str, context: &str) {
        let now = std::fs::read_to_string(self.home().join(parent).join("view/README")).unwrap();
        assert!(
            now == "mine\n" || now == "root's own\n",
            "{context}: what the path leads to now was written: {now:?}"
        );
    }

    /// What the root-owned directory holds, with owners.
    pub fn secret_state(&self) -> Vec<(String, String, u32)> {
        dir_state(&self.secret())
    }
}

/// Names, contents and owners of the entries of `dir`, sorted.
pub fn dir_state(dir: &Path) -> Vec<(String, String, u32)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap_or_default(),
                meta.uid(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The targets of the mounts under `dir`, in the order they were mounted.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    overlay::mount_table()
        .unwrap()
        .into_iter()
        .filter(|m| m.target.starts_with(dir))
        .map(|m| m.target)
        .collect()
}

/// Unmounts, when dropped, whatever is mounted under its directory.
pub struct UnmountUnder(pub PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        for mount in overlay::mount_table().unwrap_or_default() {
            if mount.target.starts_with(&self.0) {
                let _ = overlay::unmount(&mount.target);
            }
        }
    }
}

/// A way to redirect a view's path: the user moves the view's parent away (to
/// `<parent>.moved`) and puts something else in its place.
pub struct Attack {
    pub name: &'static str,
    /// The user's script, given their home, the parent's name in it, and
    /// root's directory (which holds a `view`).
    script: fn(&Path, &str, &Path) -> String,
}

impl Attack {
    /// Makes the moves as the test user.
    pub fn run(&self, home: &Path, parent: &str, secret: &Path) {
        as_user(&(self.script)(home, parent, secret));
    }
}

pub fn attacks() -> [Attack; 2] {
    [
        Attack {
            name: "a symlink to a root-owned directory",
            script: |h, p, secret| {
                format!(
                    "mv {h}/{p} {h}/{p}.moved && ln -s {secret} {h}/{p}",
                    h = h.display(),
                    secret = secret.display()
                )
            },
        },
        Attack {
            name: "a plain directory of the user's",
            script: |h, p, _| {
                format!(
                    "mv {h}/{p} {h}/{p}.moved && mkdir -p {h}/{p}/view && echo mine > {h}/{p}/view/README",
                    h = h.display()
                )
            },
        },
    ]
}
