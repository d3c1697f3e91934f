//! A checkout for an owner (a layer checked out for its workspace's owner, a
//! build's restored cache: both call `treediff::checkout` with `owner`) gives
//! ownership through the descriptors it made, never by path. Made
//! deterministic with the race point `checkout-dir-made`: every directory the
//! checkout makes is swapped, right after it is made and opened, for a symlink
//! to a root-owned directory; nothing there changes owner, mode or content.
//!
//! Its own test binary: the point is process-wide, and fires in every checkout
//! of the process.

mod common;

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{TestStore, TreeBuilder, privileged};
use treediff::{CheckoutMode, CheckoutOptions, checkout};

const OWNER: (u32, u32) = (65534, 65534);

/// Every entry under `dir` (not following symlinks): owner, mode and content.
fn state(dir: &Path) -> BTreeMap<PathBuf, (u32, u32, Vec<u8>)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .map(|e| {
            let meta = e.metadata().unwrap();
            let content = if meta.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.path().to_owned(), (meta.uid(), meta.mode(), content))
        })
        .collect()
}

/// Swaps every real directory below `target` not swapped before (by inode)
/// for a symlink to `victim`, keeping it at `<name>.moved`.
fn swap_new_dirs(target: &Path, victim: &Path, swapped: &mut HashSet<u64>) {
    let dirs: Vec<_> = walkdir::WalkDir::new(target)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .map(|e| (e.path().to_owned(), e.metadata().unwrap().ino()))
        .collect();
    // Deepest first, so that a parent's rename does not move a child's path.
    for (dir, ino) in dirs.into_iter().rev() {
        if swapped.insert(ino) {
            let mut moved = dir.clone().into_os_string();
            moved.push(".moved");
            std::fs::rename(&dir, &moved).unwrap();
            std::os::unix::fs::symlink(victim, &dir).unwrap();
        }
    }
}

#[test]
fn directories_swapped_for_symlinks_as_they_are_made_lead_no_owner_anywhere() {
    if !privileged("directories_swapped_for_symlinks_as_they_are_made_lead_no_owner_anywhere") {
        return;
    }
    let t = TestStore::new();
    let tree = TreeBuilder::new()
        .file("a/f", "1\n")
        .file("a/b/g", "2\n")
        .exec("a/b/c/run", "#!/bin/sh\n")
        .file("d/h", "3\n")
        .symlink("d/up", "../a")
        .dir("e")
        .build(&t.store);
    for mode in [CheckoutMode::Copy, CheckoutMode::Reflink] {
        let out = tempfile::tempdir().unwrap();
        let victim = out.path().join("victim");
        std::fs::create_dir_all(victim.join("sub")).unwrap();
        std::fs::write(victim.join("f"), "root's own\n").unwrap();
        std::fs::write(victim.join("sub/g"), "root's too\n").unwrap();
        let before = state(&victim);
        let target = out.path().join("co");
        let swapped = Arc::new(Mutex::new(HashSet::new()));
        let (at, to, set) = (target.clone(), victim.clone(), swapped.clone());
        fail::cfg_callback("checkout-dir-made", move || {
            swap_new_dirs(&at, &to, &mut set.lock().unwrap());
        })
        .unwrap();
        let options = CheckoutOptions {
            mode,
            owner: Some(OWNER),
        };
        let result = checkout(&t.store, tree, &target, &options);
        fail::remove("checkout-dir-made");
        assert_eq!(
            state(&victim),
            before,
            "{mode:?}: root's directory changed through a swapped directory"
        );
        assert!(
            swapped.lock().unwrap().len() >= 5,
            "{mode:?}: the point swapped {} directories, not every one",
            swapped.lock().unwrap().len()
        );
        result.unwrap();
        // What was written went where the checkout's descriptors led, all given.
        let written = state(&target);
        let not_given: Vec<_> = written
            .iter()
            .filter(|(path, (uid, ..))| {
                *uid != OWNER.0 && std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_symlink())
            })
            .map(|(path, _)| path)
            .collect();
        assert!(not_given.is_empty(), "{mode:?}: not given: {not_given:?}");
        assert_eq!(
            std::fs::read_to_string(target.join("a.moved/b.moved/g")).unwrap(),
            "2\n",
            "{mode:?}"
        );
    }
}
