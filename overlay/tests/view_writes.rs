//! Writing through a view without reverting it: `lay_over` (the source changes a
//! build lays over the previous buildtree) and `restamp` (mtimes moved back
//! from a clock that was ahead). Both only write through a path, so a plain
//! directory stands in for the mounted view.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use overlay::testsuite::{Fixture, Spec};
use treediff::{CaptureOptions, Digest, Mtime, Store};

fn tree(store: &Store, scratch: &Path, name: &str, spec: &[Spec<'_>]) -> Digest {
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    Fixture::write(&dir, spec);
    treediff::import(store, &dir, &CaptureOptions::default())
        .unwrap()
        .0
}

#[test]
fn lay_over_writes_only_the_changed_sources_and_leaves_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state")).unwrap();
    let scratch = dir.path().join("scratch");
    let old = tree(
        &store,
        &scratch,
        "old",
        &[
            Spec::File("a.c", "a"),
            Spec::File("b.c", "b"),
            Spec::File("gone.c", "g"),
        ],
    );
    let new = tree(
        &store,
        &scratch,
        "new",
        &[
            Spec::File("a.c", "a"),
            Spec::File("b.c", "b2"),
            Spec::File("sub/new.c", "n"),
        ],
    );
    // The view: the old sources and a build output.
    let view = dir.path().join("view");
    std::fs::create_dir(&view).unwrap();
    Fixture::write(
        &view,
        &[
            Spec::File("a.c", "a"),
            Spec::File("b.c", "b"),
            Spec::File("gone.c", "g"),
            Spec::File("a.o", "object"),
        ],
    );
    let before = std::fs::metadata(view.join("a.c")).unwrap().mtime();
    let changes = overlay::lay_over(&store, "build", &view, old, new, None).unwrap();
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["b.c", "gone.c", "sub"]);
    assert_eq!(std::fs::read_to_string(view.join("b.c")).unwrap(), "b2");
    assert_eq!(
        std::fs::read_to_string(view.join("sub/new.c")).unwrap(),
        "n"
    );
    assert!(!view.join("gone.c").exists());
    assert_eq!(std::fs::read_to_string(view.join("a.o")).unwrap(), "object");
    assert_eq!(std::fs::metadata(view.join("a.c")).unwrap().mtime(), before);
}

#[test]
fn restamp_sets_the_mtimes_it_is_given_and_follows_no_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state")).unwrap();
    let view = dir.path().join("view");
    std::fs::create_dir(&view).unwrap();
    Fixture::write(
        &view,
        &[Spec::File("src/a.o", "o"), Spec::Link("link", "src/a.o")],
    );
    let stamp = Mtime {
        seconds: 1_700_000_000,
        nanos: 5,
    };
    let later = Mtime {
        seconds: 1_700_000_100,
        nanos: 0,
    };
    overlay::restamp(
        &store,
        "build",
        &view,
        &[("src/a.o".to_owned(), stamp), ("link".to_owned(), later)],
    )
    .unwrap();
    let file = std::fs::metadata(view.join("src/a.o")).unwrap();
    assert_eq!((file.mtime(), file.mtime_nsec()), (1_700_000_000, 5));
    let link = std::fs::symlink_metadata(view.join("link")).unwrap();
    assert_eq!(link.mtime(), 1_700_000_100);
    // Through a symlink nothing is reached.
    let err = overlay::restamp(&store, "build", &view, &[("link/x".to_owned(), stamp)]);
    assert!(err.is_err());
}
