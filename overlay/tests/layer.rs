//! Reading hand-made upper directories in each format, without mounting: the
//! result must be the tree of the merged view they stand for.

use std::path::Path;

use overlay::SnapshotError;
use overlay::layer::{LayerFormat, read_layer};
use overlay::testsuite::{Fixture, Spec};
use treediff::{CaptureMode, CaptureOptions, Digest, Store};

struct Case {
    _dir: tempfile::TempDir,
    store: Store,
    upper: std::path::PathBuf,
    scratch: std::path::PathBuf,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let upper = dir.path().join("upper");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&upper).unwrap();
        Case {
            store,
            upper,
            scratch,
            _dir: dir,
        }
    }

    fn tree(&self, name: &str, spec: &[Spec<'_>]) -> Digest {
        let dir = self.scratch.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Fixture::write(&dir, spec);
        treediff::import(&self.store, &dir, &CaptureOptions::default())
            .unwrap()
            .0
    }

    fn read(
        &self,
        parent: Digest,
        format: LayerFormat,
        patterns: &[String],
    ) -> Result<Digest, SnapshotError> {
        let txn = self.store.begin().unwrap();
        let (tree, _) = read_layer(
            &txn,
            "ws",
            &self.upper,
            Some(parent),
            format,
            CaptureMode::Source,
            patterns,
        )?;
        txn.commit().unwrap();
        Ok(tree)
    }
}

const LOWER: &[Spec<'static>] = &[
    Spec::File("keep", "keep\n"),
    Spec::File("gone", "gone\n"),
    Spec::File("dir/a", "a\n"),
    Spec::File("dir/b", "b\n"),
    Spec::File("opaque/old", "old\n"),
    Spec::File(".wsignore", "*.o\n"),
];

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::setxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

#[test]
fn fuse_overlayfs_whiteout_files_and_opaque_markers() {
    let case = Case::new();
    let lower = case.tree("lower", LOWER);
    Fixture::write(
        &case.upper,
        &[
            Spec::File(".wh.gone", ""),
            Spec::File("dir/.wh.a", ""),
            Spec::File("dir/c", "c\n"),
            Spec::File("opaque/.wh..wh..opq", ""),
            Spec::File("opaque/new", "new\n"),
            Spec::File("xattr-opaque/n", "n\n"),
        ],
    );
    let expected = case.tree(
        "expected",
        &[
            Spec::File("keep", "keep\n"),
            Spec::File("dir/b", "b\n"),
            Spec::File("dir/c", "c\n"),
            Spec::File("opaque/new", "new\n"),
            Spec::File("xattr-opaque/n", "n\n"),
            Spec::File(".wsignore", "*.o\n"),
        ],
    );
    assert_eq!(case.read(lower, LayerFormat::Fuse, &[]).unwrap(), expected);
    // The rootless marker: an xattr in the user namespace.
    std::fs::remove_file(case.upper.join("opaque/.wh..wh..opq")).unwrap();
    set_xattr(
        &case.upper.join("opaque"),
        "user.fuseoverlayfs.opaque",
        b"y",
    );
    assert_eq!(case.read(lower, LayerFormat::Fuse, &[]).unwrap(), expected);
}

#[test]
fn userxattr_opaque_dirs_and_refused_redirects() {
    let case = Case::new();
    let lower = case.tree("lower", LOWER);
    Fixture::write(&case.upper, &[Spec::File("opaque/new", "new\n")]);
    set_xattr(&case.upper.join("opaque"), "user.overlay.opaque", b"y");
    let expected_opaque = case.tree(
        "opaque",
        &[
            Spec::File("keep", "keep\n"),
            Spec::File("gone", "gone\n"),
            Spec::File("dir/a", "a\n"),
            Spec::File("dir/b", "b\n"),
            Spec::File("opaque/new", "new\n"),
            Spec::File(".wsignore", "*.o\n"),
        ],
    );
    let userxattr = LayerFormat::Kernel { userxattr: true };
    assert_eq!(case.read(lower, userxattr, &[]).unwrap(), expected_opaque);
    // Without userxattr the kernel ignores user.overlay.*: the directory merges.
    let merged = case
        .read(lower, LayerFormat::Kernel { userxattr: false }, &[])
        .unwrap();
    assert_ne!(merged, expected_opaque);
    // A redirect is refused in either namespace, naming the path.
    std::fs::create_dir(case.upper.join("dir")).unwrap();
    set_xattr(&case.upper.join("dir"), "user.overlay.redirect", b"/opaque");
    let err = case.read(lower, userxattr, &[]).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Layer { path, .. } if path.ends_with("dir")),
        "{err}"
    );
    assert!(err.to_string().contains("user.overlay.redirect"), "{err}");
}

#[test]
fn ignore_rules_of_the_merged_view_apply() {
    let case = Case::new();
    let lower = case.tree("lower", LOWER);
    Fixture::write(
        &case.upper,
        &[
            Spec::File("main.o", "object\n"),
            Spec::File("dir/x.o", "object\n"),
            Spec::File("dir/x.tmp", "tmp\n"),
            Spec::File("dir/kept", "kept\n"),
        ],
    );
    let kernel = LayerFormat::Kernel { userxattr: false };
    let expected = case.tree(
        "expected",
        &[
            Spec::File("keep", "keep\n"),
            Spec::File("gone", "gone\n"),
            Spec::File("dir/a", "a\n"),
            Spec::File("dir/b", "b\n"),
            Spec::File("dir/kept", "kept\n"),
            Spec::File("opaque/old", "old\n"),
            Spec::File(".wsignore", "*.o\n"),
        ],
    );
    // The lower's .wsignore ignores *.o; the caller's pattern ignores *.tmp.
    assert_eq!(
        case.read(lower, kernel, &["*.tmp".to_owned()]).unwrap(),
        expected
    );
    // A .wsignore edited in the upper replaces the lower's.
    std::fs::write(case.upper.join(".wsignore"), "*.tmp\n").unwrap();
    let with_objects = case.read(lower, kernel, &[]).unwrap();
    let listed = treediff::diff::changes(&case.store, lower, with_objects).unwrap();
    let paths: Vec<&str> = listed.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, [".wsignore", "dir/kept", "dir/x.o", "main.o"]);
}

#[test]
fn kernel_whiteouts_are_character_devices_0_0() {
    if !overlay::testsuite::privileged("kernel_whiteouts_are_character_devices_0_0") {
        return;
    }
    let case = Case::new();
    let lower = case.tree("lower", LOWER);
    let whiteout = |path: &Path| {
        nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
    };
    whiteout(&case.upper.join("gone"));
    std::fs::create_dir(case.upper.join("dir")).unwrap();
    whiteout(&case.upper.join("dir/a"));
    // A whiteout of something the lower does not have hides nothing.
    whiteout(&case.upper.join("never"));
    let expected = case.tree(
        "expected",
        &[
            Spec::File("keep", "keep\n"),
            Spec::File("dir/b", "b\n"),
            Spec::File("opaque/old", "old\n"),
            Spec::File(".wsignore", "*.o\n"),
        ],
    );
    assert_eq!(
        case.read(lower, LayerFormat::Kernel { userxattr: false }, &[])
            .unwrap(),
        expected
    );
}
