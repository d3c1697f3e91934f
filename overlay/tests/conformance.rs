//! The conformance suite (`overlay::testsuite`) run against every backend:
//! overlayfs and fuse-overlayfs (root: they mount), the mirror on the temp
//! directory's filesystem (ext4 here: copies), and the mirror on a loop-mounted XFS
//! image (root: reflinks).

use std::path::Path;
use std::sync::Arc;

use overlay::testsuite::{self, Factory, Fixture, LoopXfs, privileged};
use overlay::{
    Driver, FileRecords, LayeredOptions, LayeredSnapshotter, MirrorOptions, MirrorSnapshotter,
    Owner, Snapshotter,
};
use treediff::Store;

fn layered(driver: Driver) -> Factory {
    Box::new(
        move |dir: &Path, records: Arc<FileRecords>, store: Arc<Store>, owner: Option<Owner>| {
            let options = LayeredOptions {
                owner,
                ..LayeredOptions::new(driver)
            };
            Box::new(LayeredSnapshotter::open(dir, records, store, options).unwrap())
                as Box<dyn Snapshotter>
        },
    )
}

fn mirror() -> Factory {
    Box::new(
        |dir: &Path, records: Arc<FileRecords>, store: Arc<Store>, owner: Option<Owner>| {
            let options = MirrorOptions { owner };
            Box::new(MirrorSnapshotter::open(dir, records, store, options).unwrap())
                as Box<dyn Snapshotter>
        },
    )
}

fn overlayfs(check: fn(&Fixture)) {
    if privileged("the overlayfs conformance suite") {
        let factory = layered(Driver::Kernel { userxattr: false });
        testsuite::run(|| Fixture::new(&std::env::temp_dir(), factory), check);
    }
}

fn fuse_overlayfs(check: fn(&Fixture)) {
    if privileged("the fuse-overlayfs conformance suite (/dev/fuse is root-only here)") {
        let factory = layered(Driver::Fuse);
        testsuite::run(|| Fixture::new(&std::env::temp_dir(), factory), check);
    }
}

fn mirror_copy(check: fn(&Fixture)) {
    testsuite::run(|| Fixture::new(&std::env::temp_dir(), mirror()), check);
}

fn mirror_reflink(check: fn(&Fixture)) {
    if privileged("the mirror conformance suite on XFS (loop mount)") {
        let xfs = LoopXfs::mount();
        testsuite::run(|| Fixture::new(&xfs.path(), mirror()), check);
    }
}

macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        mod overlayfs { $( #[test] fn $check() { super::overlayfs(overlay::testsuite::$check) } )* }
        mod fuse_overlayfs { $( #[test] fn $check() { super::fuse_overlayfs(overlay::testsuite::$check) } )* }
        mod mirror_copy { $( #[test] fn $check() { super::mirror_copy(overlay::testsuite::$check) } )* }
        mod mirror_reflink { $( #[test] fn $check() { super::mirror_reflink(overlay::testsuite::$check) } )* }
    };
}

suite!(
    basic,
    deleted_in_child,
    opaque_dir,
    rename_lower_dir,
    permissions,
    symlinks,
    hardlinks,
    chain_of_130,
    concurrent_prepares,
    open_writer,
    remove_rules,
    cleanup_orphans,
    revert_open_view,
    crafted_upper,
    errors,
    foreign_owner,
    revert_to_a_commit,
    reverse_again_and_keep_newer_edits,
    owner_races_the_checkout,
    verify_and_renew_changed_layers,
);
