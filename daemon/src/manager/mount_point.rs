//! Where a workspace's files appear, and mounting its view there.
//!
//! A root daemon mounts on directories users name, so every mount goes through a
//! descriptor, never a path the user could swap for a symlink between the check and
//! the mount: the client passes the directory it opened, the daemon checks it
//! through that descriptor (a directory, the caller's, empty) and mounts onto it
//! (`overlay::mount_on`). Directories the daemon opens again later (at a restart)
//! are opened without following any symlink on the way.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use overlay::MountPlan;

use super::{Caller, Manager};
use crate::error::Error;
use crate::state_dir::modes;

/// A directory to mount a workspace on, open.
#[derive(Clone, Debug)]
pub struct MountPoint(Arc<OwnedFd>);

impl MountPoint {
    /// The directory a client opened and passed.
    pub fn from_fd(fd: OwnedFd) -> MountPoint {
        MountPoint(Arc::new(fd))
    }

    /// Opens the directory `path` without following a symlink in any component.
    pub fn open(path: &Path) -> std::io::Result<MountPoint> {
        Ok(MountPoint::from_fd(
            treediff::safe_fs::open_dir_no_symlinks(path)?,
        ))
    }

    /// Where the directory is, once checked through the descriptor to be an
    /// empty directory owned by `owner` (`None`: by anyone). `what` names it in
    /// errors.
    pub(super) fn checked_path(
        &self,
        owner: Option<u32>,
        what: &'static str,
    ) -> Result<PathBuf, Error> {
        let path = self.path().map_err(|e| Error::Invalid {
            what,
            problem: format!("the directory passed: {e}"),
        })?;
        check_empty_dir(self, &path, owner, what)?;
        Ok(path)
    }

    /// The path that reaches the directory through this descriptor
    /// (`/proc/self/fd/N`), for walks that must not go by its name.
    pub(super) fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&*self.0)
        ))
    }

    /// Where the directory is now, as the kernel names it.
    pub(super) fn path(&self) -> std::io::Result<PathBuf> {
        let path = std::fs::read_link(self.fd_path())?;
        if !path.is_absolute() || path.to_string_lossy().ends_with(" (deleted)") {
            return Err(std::io::Error::other("it has been deleted"));
        }
        Ok(path)
    }
}

impl AsFd for MountPoint {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A checked mount point: its descriptor and where it is.
#[derive(Debug)]
pub(super) struct Target {
    dir: MountPoint,
    pub path: PathBuf,
}

impl Manager {
    /// The directory a new workspace is mounted on: `requested` (an empty directory
    /// owned by the caller) or a fresh one under the state directory.
    pub(super) fn mount_target(
        &self,
        caller: Caller,
        name: &str,
        requested: Option<&MountPoint>,
    ) -> Result<Target, Error> {
        let Some(dir) = requested else {
            return self.default_target(caller, name);
        };
        let path = dir.checked_path(Some(caller.uid), "mount point")?;
        Ok(Target {
            dir: dir.clone(),
            path,
        })
    }

    /// `<state>/workspaces/<uid>/<name>`, made if needed and the caller's. The
    /// caller owns `<uid>` and may have put anything there, so each step is made
    /// and opened beneath the descriptor of the one before, never following a
    /// symlink, and given to the caller through its own descriptor.
    fn default_target(&self, caller: Caller, name: &str) -> Result<Target, Error> {
        // The state directory's own path may go through symlinks (it is the
        // daemon's, not a caller's); recorded resolved, it opens again later.
        let workspaces = self.dirs.workspaces();
        let resolved = workspaces.canonicalize().map_err(|source| Error::Io {
            op: "resolve",
            path: workspaces.clone(),
            source,
        })?;
        let user_path = resolved.join(caller.uid.to_string());
        let path = user_path.join(name);
        let parent = self.dirs.open_workspaces()?;
        let user = modes::user_dir(&parent, caller.uid, Some(caller.gid), &user_path)?;
        let dir = modes::mount_dir(&user, name, caller.uid, caller.gid, &path)?;
        Ok(Target {
            dir: MountPoint::from_fd(dir),
            path,
        })
    }

    /// The mount point of a workspace recorded at `path`, opened again (at a
    /// restart) one component at a time from `/`, never following a symlink,
    /// and only if no one but root and `owner` could have changed where the
    /// path leads: every directory on the way is root's or the owner's, and
    /// one that others may write in is sticky (so they cannot rename what is
    /// in it). Otherwise the view is not mounted there until its owner opens it
    /// again: another user could have put a directory of theirs, or one of
    /// root's, at that path.
    pub(super) fn reopen_target(&self, path: &Path, owner: u32) -> Result<Target, Error> {
        let refused = |problem: String| Error::Denied {
            problem: format!(
                "the view is not mounted again at {}: {problem}",
                path.display()
            ),
        };
        let fd = open_trusted(path, owner).map_err(refused)?;
        let meta = rustix::fs::fstat(&fd).map_err(|e| refused(e.to_string()))?;
        if meta.st_uid != owner {
            return Err(refused(
                "it no longer belongs to the workspace's owner".to_owned(),
            ));
        }
        Ok(Target {
            dir: MountPoint::from_fd(fd),
            path: path.to_owned(),
        })
    }

    /// Mounts `plan` on `target`; returns where the files are and what the
    /// daemon mounted there. A mirror's directory is bind-mounted when the
    /// daemon may mount; otherwise its files stay where they are, and a
    /// requested path cannot be honoured.
    pub(super) fn mount_view(
        &self,
        name: &str,
        plan: &MountPlan,
        target: &Target,
        requested: bool,
    ) -> Result<Mounted, Error> {
        let plan = match plan {
            MountPlan::Direct {
                path: dir,
                read_only,
            } => {
                if !self.probe.kernel_overlay.available {
                    if requested {
                        return Err(Error::Invalid {
                            what: "mount point",
                            problem: format!(
                                "the mirror backend cannot mount without privileges; its files are in {}: omit --path",
                                dir.display()
                            ),
                        });
                    }
                    return Ok(Mounted {
                        path: dir.clone(),
                        mount_id: None,
                        note: None,
                    });
                }
                MountPlan::Bind {
                    source: dir.clone(),
                    read_only: *read_only,
                }
            }
            other => other.clone(),
        };
        // A bind mount, or a fuse-overlayfs server's, is made here first, where
        // no one else can reach, and a clone of it is attached to the target.
        let staging = self.dirs.root().join("mounting").join(super::new_id());
        std::fs::create_dir_all(&staging).map_err(|source| Error::Io {
            op: "create a staging mount point",
            path: staging.clone(),
            source,
        })?;
        let mounted = overlay::mount_on(&plan, target.dir.0.as_fd(), &target.path, &staging);
        let _ = std::fs::remove_dir(&staging);
        let mount_id = mounted.map_err(Error::snapshot(name))?;
        let note = match mount_id {
            Some(id) => Some(
                MountNote::write(&staging, id, &target.path).inspect_err(|_| {
                    let _ = overlay::unmount_checked(&target.path, id);
                })?,
            ),
            None => None,
        };
        Ok(Mounted {
            path: target.path.clone(),
            mount_id,
            note,
        })
    }
}

/// Where a view's files are, and the mount the daemon made there.
#[derive(Debug)]
pub(super) struct Mounted {
    /// Where the files are.
    pub path: PathBuf,
    /// The unique id of the mount the daemon made at `path`; `None` when it
    /// mounted nothing (a mirror's own directory).
    pub mount_id: Option<u64>,
    /// The note of that mount, until [`Mounted::settled`].
    note: Option<MountNote>,
}

/// A note of a mount that the database does not record yet,
/// `<state>/mounting/<id>.view`: the mount's unique id on the first line, then
/// its path. Written as soon as the mount is attached, and removed once a
/// batch records the workspace or the mount is undone, so that a crash in
/// between leaves it, and recovery unmounts that mount and no other
/// (`Manager::unmount_unrecorded`). A fuse-overlayfs view needs it: nothing
/// else tells a new daemon where it is (the mount table shows no layers).
#[derive(Debug)]
pub(super) struct MountNote(PathBuf);

impl MountNote {
    /// Notes the mount `id` at `path`, next to the staging directory `staging`.
    fn write(staging: &Path, id: u64, path: &Path) -> Result<MountNote, Error> {
        let note = staging.with_extension("view");
        let mut text = format!("{id}\n").into_bytes();
        text.extend_from_slice(path.as_os_str().as_bytes());
        std::fs::write(&note, text).map_err(|source| Error::Io {
            op: "note the new mount in",
            path: note.clone(),
            source,
        })?;
        Ok(MountNote(note))
    }

    /// The mount id and path that the note `note` names, if it reads.
    pub(super) fn read(note: &Path) -> Option<(u64, PathBuf)> {
        let text = std::fs::read(note).ok()?;
        let (id, path) = text.split_at(text.iter().position(|&b| b == b'\n')?);
        let id = std::str::from_utf8(id).ok()?.parse().ok()?;
        Some((id, PathBuf::from(OsStr::from_bytes(&path[1..]))))
    }

    /// The mount is recorded, or undone: the note goes.
    fn done(self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Mounted {
    /// Whether the daemon mounted something (and so unmounts it at close).
    pub fn by_daemon(&self) -> bool {
        self.mount_id.is_some()
    }

    /// The mount is recorded by a batch, or undone: its note goes.
    pub fn settled(self) {
        if let Some(note) = self.note {
            note.done();
        }
    }
}

/// Refuses a directory that is not empty or not owned by `owner` (if given),
/// checked through its descriptor.
fn check_empty_dir(
    dir: &MountPoint,
    path: &Path,
    owner: Option<u32>,
    what: &'static str,
) -> Result<(), Error> {
    let invalid = |problem: String| Error::Invalid {
        what,
        problem: format!("{}: {problem}", path.display()),
    };
    let meta = rustix::fs::fstat(dir.0.as_fd()).map_err(|e| invalid(e.to_string()))?;
    if rustix::fs::FileType::from_raw_mode(meta.st_mode) != rustix::fs::FileType::Directory {
        return Err(invalid("it is not a directory".to_owned()));
    }
    if owner.is_some_and(|uid| meta.st_uid != uid) {
        return Err(Error::Denied {
            problem: format!(
                "{} does not belong to you; the daemon writes only into your own empty directories",
                path.display()
            ),
        });
    }
    let entries = rustix::fs::Dir::read_from(dir.0.as_fd()).map_err(|e| invalid(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| invalid(e.to_string()))?;
        if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
            return Err(invalid("it is not empty".to_owned()));
        }
    }
    Ok(())
}

/// Opens the directory `path` from `/`, one component at a time without
/// following symlinks, refusing a path whose directories someone other than
/// root and `owner` owns, or may write in without the sticky bit.
fn open_trusted(path: &Path, owner: u32) -> Result<OwnedFd, String> {
    use std::path::Component;
    let trusted = |fd: &OwnedFd, shown: &Path| -> Result<(), String> {
        let st = rustix::fs::fstat(fd).map_err(|e| format!("{}: {e}", shown.display()))?;
        if st.st_uid != 0 && st.st_uid != owner {
            return Err(format!(
                "{} belongs to uid {}, neither root nor the workspace's owner",
                shown.display(),
                st.st_uid
            ));
        }
        if st.st_mode & 0o022 != 0 && st.st_mode & 0o1000 == 0 {
            return Err(format!(
                "others may write in {} (mode {:o}) and it is not sticky",
                shown.display(),
                st.st_mode & 0o7777
            ));
        }
        Ok(())
    };
    let open = treediff::safe_fs::open_dir_at;
    if !path.is_absolute() {
        return Err("the recorded path is not absolute".to_owned());
    }
    let mut shown = PathBuf::from("/");
    let mut dir =
        open(rustix::fs::CWD, std::ffi::OsStr::new("/")).map_err(|e| format!("/: {e}"))?;
    trusted(&dir, &shown)?;
    for component in path.components() {
        let Component::Normal(name) = component else {
            if component == Component::RootDir {
                continue;
            }
            return Err(format!("{} has a '.' or '..' component", path.display()));
        };
        shown.push(name);
        dir = open(dir.as_fd(), name).map_err(|e| format!("{}: {e}", shown.display()))?;
        trusted(&dir, &shown)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use overlay::OverlayPlan;
    use rustix::fs::{Mode, OFlags};

    use super::*;
    use crate::StateDir;
    use crate::testing::{NOBODY, Rng, rounds, with_racer};

    /// Every entry under `dir`, not following symlinks: path, owner, content.
    fn entries(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
        let meta = std::fs::symlink_metadata(dir).unwrap();
        let content = if meta.is_file() {
            std::fs::read(dir).unwrap()
        } else {
            Vec::new()
        };
        let mut out = vec![(dir.to_owned(), meta.uid(), content)];
        if meta.is_dir() {
            for entry in std::fs::read_dir(dir).unwrap() {
                out.extend(entries(&entry.unwrap().path()));
            }
        }
        out.sort();
        out
    }

    /// A race loop for recovery's mount (1,000 rounds, `WS_RACE_ROUNDS` for
    /// more): the recorded mount point `home/p/view` is opened again as
    /// recovery opens it ([`Manager::reopen_target`]) and a view is mounted on
    /// what that returns ([`Manager::mount_view`]: a bind mount, as for a
    /// mirror's view, and a read-only overlay, in turn), while its owner,
    /// acting on a thread of their own, keeps moving `p` away for short random
    /// moments and puts in its place a symlink to root's directory (which has
    /// a `view` of root's), a symlink to a directory of theirs, a decoy
    /// directory of theirs, or nothing. Each round mounts on the owner's real
    /// mount point or on their decoy (a directory of theirs at the recorded
    /// path) or is refused; after every mount, nothing is mounted outside the
    /// owner's home; root's directory keeps its files, owners and contents.
    #[test]
    fn racing_path_swaps_never_get_a_view_mounted_again_outside_the_owners_directories() {
        if !overlay::testsuite::privileged(
            "racing_path_swaps_never_get_a_view_mounted_again_outside_the_owners_directories",
        ) {
            return;
        }
        let owner = NOBODY;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let at = |rel: &str| dir.path().join(rel);
        let m = Manager::open(StateDir::new(at("state"))).unwrap();
        for d in ["lower1", "lower2", "secret/view"] {
            std::fs::create_dir_all(at(d)).unwrap();
        }
        std::fs::write(at("lower1/file"), "a layer's\n").unwrap();
        std::fs::write(at("secret/view/file"), "root's own\n").unwrap();
        for d in [
            "home",
            "home/p",
            "home/p/view",
            "home/other",
            "home/other/view",
        ] {
            std::fs::create_dir(at(d)).unwrap();
            std::os::unix::fs::chown(at(d), Some(owner.uid), Some(owner.gid)).unwrap();
        }
        let plans = [
            MountPlan::Bind {
                source: at("lower1"),
                read_only: true,
            },
            MountPlan::Overlay(OverlayPlan {
                lowers: vec![at("lower1"), at("lower2")],
                upper: None,
                userxattr: false,
            }),
        ];
        let recorded = at("home/p/view");
        let real = std::fs::metadata(&recorded).unwrap().ino();
        let secret_before = entries(&at("secret"));
        let places = [recorded.clone(), at("home/moved/view")];

        // The owner's moves: mostly the path as recorded, now and then for a
        // moment something else there.
        let (p, moved) = (at("home/p"), at("home/moved"));
        let swapped = AtomicBool::new(false);
        let swap = |rng: &mut Rng| {
            rng.pause(5000);
            swapped.store(true, Ordering::Relaxed);
            if std::fs::rename(&p, &moved).is_err() {
                swapped.store(false, Ordering::Relaxed);
                return;
            }
            let kind = rng.below(4);
            match kind {
                0 => std::os::unix::fs::symlink(at("secret"), &p),
                1 => std::os::unix::fs::symlink(at("home/other"), &p),
                2 => std::fs::create_dir(&p).and_then(|()| std::fs::create_dir(p.join("view"))),
                _ => Ok(()),
            }
            .unwrap();
            rng.pause(300);
            if kind == 2 {
                // A decoy goes once nothing is mounted on it.
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::fs::remove_dir(p.join("view")).is_err() {
                    assert!(Instant::now() < deadline, "the decoy stays mounted");
                    std::thread::yield_now();
                }
                std::fs::remove_dir(&p).unwrap();
            } else if kind < 2 {
                std::fs::remove_file(&p).unwrap();
            }
            std::fs::rename(&moved, &p).unwrap();
            swapped.store(false, Ordering::Relaxed);
        };
        // After a refusal (quick), the next round waits for the path to be
        // back: otherwise most rounds would fall in the moments it is swapped.
        let path_back = || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while swapped.load(Ordering::Relaxed) {
                assert!(Instant::now() < deadline, "the path stays swapped");
                std::thread::sleep(Duration::from_micros(50));
            }
        };

        let (mut on_real, mut on_decoy, mut refused, mut moved_meanwhile) = (0, 0, 0, 0);
        let rounds = rounds();
        let started = Instant::now();
        with_racer(owner, swap, || {
            for round in 0..rounds {
                let target = match m.reopen_target(&recorded, owner.uid) {
                    Ok(target) => target,
                    Err(e) => {
                        if std::env::var_os("WS_RACE_VERBOSE").is_some() {
                            eprintln!("round {round}: {e}");
                        }
                        refused += 1;
                        path_back();
                        continue;
                    }
                };
                // The owner's mount point, wherever they have moved it since,
                // or a decoy of theirs at the recorded path itself (unless gone
                // already: then the mount fails).
                let st = rustix::fs::fstat(target.dir.as_fd()).unwrap();
                let now_at = target.dir.path();
                assert!(
                    st.st_uid == owner.uid
                        && (st.st_ino == real
                            || now_at.as_ref().ok().is_none_or(|now| *now == recorded)),
                    "round {round}: recovery opened {:?} (uid {}), neither the owner's mount point nor a directory of theirs at its path",
                    now_at,
                    st.st_uid
                );
                let Ok(mounted) = m.mount_view("w", &plans[round % 2], &target, true) else {
                    assert_ne!(st.st_ino, real, "round {round}: the mount point refused");
                    refused += 1;
                    path_back();
                    continue;
                };
                if st.st_ino == real {
                    on_real += 1;
                    // Mounted on the descriptor, wherever the path led by then.
                    let there = rustix::fs::open(&recorded, OFlags::PATH, Mode::empty());
                    let id = there.ok().and_then(|fd| overlay::mount_id(fd.as_fd()).ok());
                    moved_meanwhile += usize::from(id != mounted.mount_id);
                } else {
                    on_decoy += 1;
                }
                let outside: Vec<PathBuf> = overlay::mount_table()
                    .unwrap()
                    .into_iter()
                    .map(|mount| mount.target)
                    .filter(|t| t.starts_with(dir.path()) && !t.starts_with(at("state")))
                    .filter(|t| !t.starts_with(at("home")))
                    .collect();
                assert!(
                    outside.is_empty(),
                    "round {round}: mounted outside the owner's home: {outside:?}"
                );
                overlay::testsuite::unmount_wherever(&places, mounted.mount_id.unwrap());
                mounted.settled();
            }
        });
        eprintln!(
            "recovery's mount race: {rounds} rounds in {:.1} s: {on_real} mounted on the owner's mount point ({moved_meanwhile} of them with the path leading elsewhere just after), {on_decoy} on their decoy at its path, {refused} refused",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            entries(&at("secret")),
            secret_before,
            "root's directory changed"
        );
        for (path, uid, _) in entries(&at("home")) {
            assert_eq!(uid, owner.uid, "{} is not the owner's", path.display());
        }
        assert!(
            on_real >= rounds / 4,
            "only {on_real} of {rounds} rounds mounted on the real mount point: the race proves little"
        );
        assert!(
            refused > 0,
            "no round met a swapped path: the race proves nothing"
        );
    }
}
