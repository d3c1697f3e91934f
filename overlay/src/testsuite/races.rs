//! Checks in which the user a snapshotter gives its files to races it, with
//! that user's own credentials (set on one thread only: Linux keeps them per
//! thread), doing what a user could do to a directory that is theirs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Gid, Uid};

use super::fixture::{Fixture, Spec};
use crate::{Content, FileRecords, Owner};

/// Subdirectories of the raced tree, and files in each.
const DIRS: usize = 64;
const FILES: usize = 128;

/// While a root snapshotter checks out a large tree for another user (a
/// layered backend's base, the mirror's clone), that user swaps every
/// directory they can reach below the snapshot's `fs` for a symlink to a
/// root-owned directory holding files of the same names. Before, the layer
/// was chowned by a walk by path after the checkout, top first: as soon as
/// `fs` was theirs, the swaps led the walk into the root-owned directory and
/// gave its files away. Now each entry is given as the checkout makes it,
/// through its descriptor, and a directory only once it is complete, so the
/// user gets in only when nothing is left to give, and no path is followed.
pub fn owner_races_the_checkout(fx: &Fixture) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("owner_races_the_checkout needs root to give files away; not run");
        return;
    }
    let owner = Owner {
        uid: 65534,
        gid: 65534,
    };
    // A root daemon's snapshots are its own alone; opened up here, as older
    // releases left them, to check that the checkout holds even then.
    std::fs::set_permissions(fx.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = fx.root().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let names: Vec<String> = (0..FILES).map(|f| format!("f{f:03}")).collect();
    for name in &names {
        std::fs::write(victim.join(name), "root's own\n").unwrap();
    }
    let paths: Vec<String> = (0..DIRS)
        .flat_map(|d| names.iter().map(move |f| format!("d{d:03}/{f}")))
        .collect();
    let spec: Vec<Spec<'_>> = paths.iter().map(|p| Spec::File(p, "data\n")).collect();
    let tree = fx.tree(&spec);

    let records = Arc::new(FileRecords::open(&fx.root().join("records-race.json")).unwrap());
    let snap = fx.snapshotter_for(owner, records.clone());
    let snapshots = fx
        .root()
        .join(format!("snapshotter-{}", owner.uid))
        .join("snapshots");
    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            become_owner(owner);
            while !stop.load(Ordering::Relaxed) {
                swap_reachable_dirs(&snapshots, &victim, &swaps);
            }
        });
        let mut txn = snap.begin();
        // The swaps may make the checkout fail; what matters is what it gave.
        let made = snap
            .commit_tree(&mut txn, "base", tree, Content::Source)
            .and_then(|_| snap.prepare(&mut txn, "ws", Some("base"), Content::Source));
        let deadline = Instant::now() + Duration::from_secs(10);
        while swaps.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!("checkout under attack: {:?}", made.map(|_| "made"));
    });
    assert!(
        swaps.load(Ordering::Relaxed) > 0,
        "the owner never reached the checkout: the check proves nothing"
    );
    let given: Vec<String> = std::iter::once(victim.clone())
        .chain(names.iter().map(|n| victim.join(n)))
        .filter(|p| std::fs::symlink_metadata(p).unwrap().uid() != 0)
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        given.is_empty(),
        "root gave the owner {} of the {} entries of {} (outside the snapshot) through a swapped directory, first {:?}",
        given.len(),
        names.len() + 1,
        victim.display(),
        given.first()
    );
}

/// Takes on `owner`'s uid, gid and (no) groups on this thread only.
fn become_owner(owner: Owner) {
    rustix::thread::set_thread_groups(&[]).unwrap();
    rustix::thread::set_thread_res_gid(None, Gid::from_raw(owner.gid), None).unwrap();
    rustix::thread::set_thread_res_uid(None, Uid::from_raw(owner.uid), None).unwrap();
}

/// One pass of the attack: in every `snapshots/<id>/fs` this thread may list,
/// moves each directory aside and puts a symlink to `victim` in its place.
fn swap_reachable_dirs(snapshots: &Path, victim: &Path, swaps: &AtomicUsize) {
    let Ok(ids) = std::fs::read_dir(snapshots) else {
        return;
    };
    for id in ids.flatten() {
        let fs = id.path().join("fs");
        let Ok(entries) = std::fs::read_dir(&fs) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".moved-") || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let moved = fs.join(format!(".moved-{name}"));
            if std::fs::rename(entry.path(), moved).is_ok()
                && std::os::unix::fs::symlink(victim, entry.path()).is_ok()
            {
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
