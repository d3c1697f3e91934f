//! Checkout of trees into real directories: every mode, buildtree properties,
//! refused targets, hostile trees, damaged objects, and reflinks on XFS.

mod common;

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;

use common::{TestStore, TreeBuilder, privileged};
use treediff::store::OBJECT_MTIME;
use treediff::tree::MAX_DEPTH;
use treediff::{
    CheckoutError, CheckoutMode, CheckoutOptions, CheckoutStats, Digest, Dir, Entry, Mtime, Node,
    Props, Store, checkout,
};

const MODES: [CheckoutMode; 3] = [
    CheckoutMode::Hardlink,
    CheckoutMode::Reflink,
    CheckoutMode::Copy,
];

fn opts(mode: CheckoutMode) -> CheckoutOptions {
    CheckoutOptions { mode, owner: None }
}

/// The error and all its causes, as one line.
fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Checks the message conventions: no trailing period on any level.
fn assert_message_style(err: &dyn Error) {
    let mut level: Option<&dyn Error> = Some(err);
    while let Some(e) = level {
        let text = e.to_string();
        assert!(!text.ends_with('.'), "message ends with a period: {text}");
        level = e.source();
    }
}

/// What a checkout should contain at one path.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    File { content: Vec<u8>, exec: bool },
    Symlink(PathBuf),
    Dir,
}

/// Everything below `root`, by relative path; symlinks are read, not followed.
fn snapshot(root: &Path) -> BTreeMap<String, Item> {
    let mut items = BTreeMap::new();
    walk(root, root, &mut items);
    items
}

fn walk(root: &Path, dir: &Path, items: &mut BTreeMap<String, Item>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let meta = fs::symlink_metadata(&path).unwrap();
        let item = if meta.file_type().is_symlink() {
            Item::Symlink(fs::read_link(&path).unwrap())
        } else if meta.is_dir() {
            walk(root, &path, items);
            Item::Dir
        } else {
            Item::File {
                content: fs::read(&path).unwrap(),
                exec: meta.mode() & 0o111 != 0,
            }
        };
        items.insert(rel, item);
    }
}

fn file(content: &[u8]) -> Item {
    Item::File {
        content: content.to_vec(),
        exec: false,
    }
}

fn exec(content: &[u8]) -> Item {
    Item::File {
        content: content.to_vec(),
        exec: true,
    }
}

fn link(target: &str) -> Item {
    Item::Symlink(PathBuf::from(target))
}

fn big_content() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect()
}

/// A source tree with every kind of entry; the expected snapshot alongside.
fn source_tree(store: &Store) -> (Digest, BTreeMap<String, Item>) {
    let big = big_content();
    let tree = TreeBuilder::new()
        .file("README", "hello\n")
        .file("empty", "")
        .exec("bin/tool", "#!/bin/sh\necho hi\n")
        .file("bin/data", "#!/bin/sh\necho hi\n")
        .file("src/lib/a.rs", "fn a() {}\n")
        .file("src/lib/b.rs", "fn b() {}\n")
        .file("src/big.bin", &big)
        .symlink("src/up", "../README")
        .symlink("abs", "/etc")
        .symlink("dangling", "no/such/file")
        .symlink("dirlink", "src/lib")
        .dir("emptydir")
        .dir("src/nested/empty")
        .build(store);
    let mut expected = BTreeMap::new();
    for (path, item) in [
        ("README", file(b"hello\n")),
        ("empty", file(b"")),
        ("bin", Item::Dir),
        ("bin/tool", exec(b"#!/bin/sh\necho hi\n")),
        ("bin/data", file(b"#!/bin/sh\necho hi\n")),
        ("src", Item::Dir),
        ("src/lib", Item::Dir),
        ("src/lib/a.rs", file(b"fn a() {}\n")),
        ("src/lib/b.rs", file(b"fn b() {}\n")),
        ("src/big.bin", file(&big)),
        ("src/up", link("../README")),
        ("abs", link("/etc")),
        ("dangling", link("no/such/file")),
        ("dirlink", link("src/lib")),
        ("emptydir", Item::Dir),
        ("src/nested", Item::Dir),
        ("src/nested/empty", Item::Dir),
    ] {
        expected.insert(path.to_owned(), item);
    }
    (tree, expected)
}

/// The filesystem type of `path`.
fn fs_magic(path: &Path) -> nix::sys::statfs::FsType {
    nix::sys::statfs::statfs(path).unwrap().filesystem_type()
}

fn cannot_reflink(path: &Path) -> bool {
    use nix::sys::statfs::{EXT4_SUPER_MAGIC, TMPFS_MAGIC};
    let magic = fs_magic(path);
    magic == EXT4_SUPER_MAGIC || magic == TMPFS_MAGIC
}

fn object_path(store: &Store, kind: &str, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    store.root().join(kind).join(&hex[..2]).join(hex)
}

#[test]
fn every_mode_reproduces_the_tree() {
    let t = TestStore::new();
    let (tree, expected) = source_tree(&t.store);
    for mode in MODES {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("co");
        let stats = checkout(&t.store, tree, &target, &opts(mode)).unwrap();
        assert_eq!(snapshot(&target), expected, "{mode:?}");
        let files = 7;
        assert_eq!(stats.files, files, "{mode:?}");
        assert_eq!(stats.dirs, 6, "{mode:?}");
        assert_eq!(stats.symlinks, 4, "{mode:?}");
        assert_eq!(stats.bytes, 6 + 2 * 18 + 2 * 10 + 3_000_000, "{mode:?}");
        assert_eq!(
            stats.hardlinked + stats.reflinked + stats.copied,
            files,
            "{mode:?}"
        );
        match mode {
            CheckoutMode::Hardlink => assert_eq!(stats.hardlinked, files),
            CheckoutMode::Copy => assert_eq!(stats.copied, files),
            CheckoutMode::Reflink if cannot_reflink(out.path()) => {
                assert_eq!(stats.copied, files, "ext4/tmpfs cannot reflink: {stats:?}");
            }
            CheckoutMode::Reflink => {}
        }
        // Unedited files look equally old in every mode.
        for path in ["README", "bin/tool", "src/big.bin", "empty"] {
            let meta = fs::metadata(target.join(path)).unwrap();
            assert_eq!(meta.mtime(), OBJECT_MTIME.seconds, "{mode:?} {path}");
            assert_eq!(meta.mtime_nsec(), 0, "{mode:?} {path}");
        }
        for path in ["", "src", "emptydir", "src/nested/empty"] {
            let meta = fs::metadata(target.join(path)).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o755, "{mode:?} dir {path:?}");
        }
    }
}

#[test]
fn copies_get_0644_or_0755_and_are_their_own_files() {
    let t = TestStore::new();
    let (tree, _) = source_tree(&t.store);
    for mode in [CheckoutMode::Reflink, CheckoutMode::Copy] {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("co");
        checkout(&t.store, tree, &target, &opts(mode)).unwrap();
        let mode_of = |p: &str| fs::metadata(target.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode_of("README"), 0o644);
        assert_eq!(mode_of("bin/data"), 0o644);
        assert_eq!(mode_of("bin/tool"), 0o755);
        // A copy is its own inode, writable, and editing it leaves the store alone.
        let readme = t
            .store
            .read(&Digest::of(b"hello\n"))
            .unwrap()
            .bytes()
            .to_vec();
        fs::write(target.join("README"), "edited\n").unwrap();
        assert_eq!(
            t.store.read(&Digest::of(b"hello\n")).unwrap().bytes(),
            readme
        );
    }
}

#[test]
fn hardlinks_share_the_store_objects_and_executables_use_the_twin() {
    let t = TestStore::new();
    let (tree, _) = source_tree(&t.store);
    let script = Digest::of(b"#!/bin/sh\necho hi\n");
    let twin = object_path(&t.store, "exec", &script);
    assert!(!twin.exists(), "no twin before the first hardlink checkout");

    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("co");
    checkout(&t.store, tree, &target, &opts(CheckoutMode::Hardlink)).unwrap();

    let tool = fs::metadata(target.join("bin/tool")).unwrap();
    let data = fs::metadata(target.join("bin/data")).unwrap();
    let blob = fs::metadata(t.store.blob_path(&script)).unwrap();
    let twin_meta = fs::metadata(&twin).unwrap();
    assert_eq!(data.ino(), blob.ino(), "non-executable links the blob");
    assert_eq!(
        tool.ino(),
        twin_meta.ino(),
        "executable links the 0555 twin"
    );
    assert_ne!(
        tool.ino(),
        data.ino(),
        "one object file per (digest, exec bit)"
    );
    assert_eq!(tool.mode() & 0o7777, 0o555);
    assert_eq!(data.mode() & 0o7777, 0o444);
    assert_eq!(tool.mtime(), OBJECT_MTIME.seconds);
    assert_eq!(tool.mtime(), 315_532_800, "1980-01-01");
    let readme = fs::metadata(target.join("README")).unwrap();
    assert_eq!(
        readme.ino(),
        fs::metadata(t.store.blob_path(&Digest::of(b"hello\n")))
            .unwrap()
            .ino()
    );
    assert_eq!(
        t.store.read(&script).unwrap().bytes(),
        b"#!/bin/sh\necho hi\n"
    );

    // A second checkout reuses the twin.
    let target2 = out.path().join("co2");
    checkout(&t.store, tree, &target2, &opts(CheckoutMode::Hardlink)).unwrap();
    assert_eq!(
        fs::metadata(target2.join("bin/tool")).unwrap().ino(),
        twin_meta.ino()
    );
}

#[test]
fn an_empty_existing_target_is_used() {
    let t = TestStore::new();
    let (tree, expected) = source_tree(&t.store);
    for mode in MODES {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("co");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o711)).unwrap();
        checkout(&t.store, tree, &target, &opts(mode)).unwrap();
        assert_eq!(snapshot(&target), expected, "{mode:?}");
        let meta = fs::metadata(&target).unwrap();
        assert_eq!(
            meta.mode() & 0o777,
            0o711,
            "the caller's dir keeps its mode"
        );
    }
}

#[test]
fn a_target_whose_parent_has_dotdot_works() {
    let t = TestStore::new();
    let tree = TreeBuilder::new().file("a", "x").build(&t.store);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x/../co");
    fs::create_dir(out.path().join("x")).unwrap();
    checkout(&t.store, tree, &target, &CheckoutOptions::default()).unwrap();
    assert_eq!(fs::read(out.path().join("co/a")).unwrap(), b"x");
}

// ----------------------------------------------------------------------------
// buildtree properties

fn mtime(seconds: i64, nanos: u32) -> Mtime {
    Mtime { seconds, nanos }
}

fn props(mode: Option<u32>, mtime: Option<Mtime>) -> Option<Props> {
    Some(Props {
        mtime,
        unix_mode: mode,
    })
}

fn put_dir(txn: &treediff::StoreTxn<'_>, entries: Vec<Entry>, props: Option<Props>) -> Digest {
    Dir::new(entries, props).unwrap().write(txn).unwrap()
}

fn entry(name: &str, node: Node, props: Option<Props>) -> Entry {
    Entry {
        name: name.to_owned(),
        node,
        props,
    }
}

/// A buildtree: modes and nanosecond mtimes on files, dirs, a symlink and the root;
/// one read-only directory (its mode must be set after its entries are written).
fn buildtree(store: &Store) -> Digest {
    let txn = store.begin().unwrap();
    let obj = txn.put(b"\x7fELF object").unwrap();
    let src = txn.put(b"int main() {}\n").unwrap();
    let sealed = put_dir(
        &txn,
        vec![entry(
            "inner.o",
            Node::File {
                digest: obj,
                executable: false,
            },
            props(Some(0o444), Some(mtime(1_700_000_300, 3))),
        )],
        props(Some(0o555), Some(mtime(1_700_000_400, 4))),
    );
    let build = put_dir(
        &txn,
        vec![
            entry(
                "main.o",
                Node::File {
                    digest: obj,
                    executable: false,
                },
                props(Some(0o600), Some(mtime(1_700_000_100, 123_456_789))),
            ),
            entry(
                "prog",
                Node::File {
                    digest: obj,
                    executable: true,
                },
                props(Some(0o750), Some(mtime(1_700_000_200, 999_999_999))),
            ),
            entry(
                "latest",
                Node::Symlink {
                    target: "prog".into(),
                },
                props(None, Some(mtime(1_600_000_000, 5))),
            ),
            entry("sealed", Node::Dir { digest: sealed }, None),
        ],
        props(Some(0o700), Some(mtime(1_700_000_500, 6))),
    );
    let root = put_dir(
        &txn,
        vec![
            entry(
                "main.c",
                Node::File {
                    digest: src,
                    executable: false,
                },
                // Only an mtime: the mode comes from the exec bit.
                props(None, Some(mtime(1_500_000_000, 7))),
            ),
            entry("build", Node::Dir { digest: build }, None),
            // A source-like file without properties inside a buildtree.
            entry(
                "plain",
                Node::File {
                    digest: src,
                    executable: false,
                },
                None,
            ),
        ],
        props(Some(0o751), Some(mtime(1_700_000_900, 9))),
    );
    txn.commit().unwrap();
    root
}

fn assert_props(path: &Path, mode: u32, mtime: Mtime) {
    let meta = fs::symlink_metadata(path).unwrap();
    assert_eq!(meta.mode() & 0o7777, mode, "mode of {}", path.display());
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (mtime.seconds, i64::from(mtime.nanos)),
        "mtime of {}",
        path.display()
    );
}

/// Makes every directory below `root` writable again, so the temp dir can go.
fn make_writable(root: &Path) {
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
        }
    }
}

#[test]
fn buildtree_properties_are_restored_by_reflink_and_copy() {
    let t = TestStore::new();
    let tree = buildtree(&t.store);
    for mode in [CheckoutMode::Reflink, CheckoutMode::Copy] {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("bt");
        let stats = checkout(&t.store, tree, &target, &opts(mode)).unwrap();
        assert_eq!((stats.files, stats.dirs, stats.symlinks), (5, 2, 1));
        let at = |p: &str| target.join(p);
        assert_props(&at(""), 0o751, mtime(1_700_000_900, 9));
        assert_props(&at("main.c"), 0o644, mtime(1_500_000_000, 7));
        assert_props(&at("plain"), 0o644, OBJECT_MTIME);
        assert_props(&at("build"), 0o700, mtime(1_700_000_500, 6));
        assert_props(
            &at("build/main.o"),
            0o600,
            mtime(1_700_000_100, 123_456_789),
        );
        assert_props(&at("build/prog"), 0o750, mtime(1_700_000_200, 999_999_999));
        assert_props(&at("build/sealed"), 0o555, mtime(1_700_000_400, 4));
        assert_props(&at("build/sealed/inner.o"), 0o444, mtime(1_700_000_300, 3));
        let latest = fs::symlink_metadata(at("build/latest")).unwrap();
        assert!(latest.file_type().is_symlink());
        assert_eq!((latest.mtime(), latest.mtime_nsec()), (1_600_000_000, 5));
        assert_eq!(fs::read(at("build/prog")).unwrap(), b"\x7fELF object");
        make_writable(&target);
    }
}

#[test]
fn hardlink_refuses_a_tree_with_properties_naming_the_first_path() {
    let t = TestStore::new();
    let tree = buildtree(&t.store);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("bt");
    let err = checkout(&t.store, tree, &target, &opts(CheckoutMode::Hardlink)).unwrap_err();
    assert!(
        matches!(err, CheckoutError::HardlinkProps { .. }),
        "{err:?}"
    );
    let text = chain(&err);
    // The root itself has properties: it is the first path.
    assert!(text.contains("hardlink"), "{text}");
    assert!(text.contains("reflink or copy"), "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    assert_message_style(&err);
    assert!(!target.exists(), "nothing was written");

    // Without root props, the first path is the first entry (by name) with any.
    let txn = t.store.begin().unwrap();
    let a = txn.put(b"a").unwrap();
    let inner = put_dir(
        &txn,
        vec![entry(
            "z.o",
            Node::File {
                digest: a,
                executable: false,
            },
            props(None, Some(mtime(1, 0))),
        )],
        None,
    );
    let root = put_dir(
        &txn,
        vec![
            entry("a", Node::Dir { digest: inner }, None),
            entry(
                "b",
                Node::Symlink { target: "a".into() },
                props(None, Some(mtime(2, 0))),
            ),
        ],
        None,
    );
    txn.commit().unwrap();
    let err = checkout(&t.store, root, &target, &opts(CheckoutMode::Hardlink)).unwrap_err();
    match &err {
        CheckoutError::HardlinkProps { path, .. } => assert_eq!(path, "a/z.o"),
        other => panic!("{other:?}"),
    }
    assert!(chain(&err).contains("a/z.o"));
    assert!(!target.exists());
}

// ----------------------------------------------------------------------------
// targets

#[test]
fn a_non_empty_target_is_refused_and_left_alone() {
    let t = TestStore::new();
    let (tree, _) = source_tree(&t.store);
    for mode in MODES {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("co");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("mine"), "keep").unwrap();
        let err = checkout(&t.store, tree, &target, &opts(mode)).unwrap_err();
        assert!(matches!(err, CheckoutError::Target { .. }), "{err:?}");
        let text = chain(&err);
        assert!(text.contains(&target.display().to_string()), "{text}");
        assert!(text.contains("not empty"), "{text}");
        assert!(text.contains("mine"), "{text}");
        assert_message_style(&err);
        assert_eq!(
            snapshot(&target),
            BTreeMap::from([("mine".to_owned(), file(b"keep"))])
        );
    }
}

#[test]
fn a_file_as_target_or_a_missing_parent_is_refused() {
    let t = TestStore::new();
    let tree = TreeBuilder::new().file("a", "x").build(&t.store);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("file");
    fs::write(&target, "data").unwrap();
    let err = checkout(&t.store, tree, &target, &CheckoutOptions::default()).unwrap_err();
    assert!(chain(&err).contains("not a directory"), "{}", chain(&err));
    assert_eq!(fs::read(&target).unwrap(), b"data");

    let target = out.path().join("missing/co");
    let err = checkout(&t.store, tree, &target, &CheckoutOptions::default()).unwrap_err();
    let text = chain(&err);
    assert!(text.contains("does not exist"), "{text}");
    assert!(
        text.contains(&out.path().join("missing").display().to_string()),
        "{text}"
    );
    assert_message_style(&err);
    assert!(!out.path().join("missing").exists());
}

#[test]
fn a_symlinked_target_is_refused_and_its_destination_untouched() {
    let t = TestStore::new();
    let (tree, _) = source_tree(&t.store);
    let out = tempfile::tempdir().unwrap();
    let elsewhere = out.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let target = out.path().join("co");
    std::os::unix::fs::symlink(&elsewhere, &target).unwrap();
    for mode in MODES {
        let err = checkout(&t.store, tree, &target, &opts(mode)).unwrap_err();
        assert!(matches!(err, CheckoutError::Target { .. }), "{err:?}");
        let text = chain(&err);
        assert!(text.contains("symlink"), "{text}");
        assert!(text.contains(&target.display().to_string()), "{text}");
        assert_message_style(&err);
        assert!(
            snapshot(&elsewhere).is_empty(),
            "nothing written through it"
        );
    }
    // A dangling symlink is refused too, and not created through.
    let dangling = out.path().join("dangling");
    std::os::unix::fs::symlink(out.path().join("nowhere"), &dangling).unwrap();
    let err = checkout(&t.store, tree, &dangling, &CheckoutOptions::default()).unwrap_err();
    assert!(chain(&err).contains("symlink"));
    assert!(!out.path().join("nowhere").exists());
}

// ----------------------------------------------------------------------------
// hostile trees

fn file_node(name: &str, digest: Digest) -> reapi::FileNode {
    reapi::FileNode {
        name: name.to_owned(),
        digest: Some(digest.to_proto()),
        is_executable: false,
        node_properties: None,
    }
}

fn dir_node(name: &str, digest: Digest) -> reapi::DirectoryNode {
    reapi::DirectoryNode {
        name: name.to_owned(),
        digest: Some(digest.to_proto()),
    }
}

fn symlink_node(name: &str, target: &str) -> reapi::SymlinkNode {
    reapi::SymlinkNode {
        name: name.to_owned(),
        target: target.to_owned(),
        node_properties: None,
    }
}

/// Stores raw bytes as a blob (no validation) and returns the digest.
fn put_raw(store: &Store, bytes: &[u8]) -> Digest {
    let txn = store.begin().unwrap();
    let digest = txn.put(bytes).unwrap();
    txn.commit().unwrap();
    digest
}

fn put_proto(store: &Store, proto: &reapi::Directory) -> Digest {
    put_raw(store, &proto.encode_to_vec())
}

/// A scratch area: `<tmp>/work/target` is checked out into, `<tmp>/work/sentinel`
/// and `<tmp>/sentinel` must stay empty.
struct Arena {
    dir: tempfile::TempDir,
}

impl Arena {
    fn new() -> Arena {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("work")).unwrap();
        fs::create_dir(dir.path().join("work/sentinel")).unwrap();
        fs::create_dir(dir.path().join("sentinel")).unwrap();
        Arena { dir }
    }

    fn target(&self) -> PathBuf {
        self.dir.path().join("work/target")
    }

    /// Only the target (if any) and the empty sentinels exist.
    fn assert_nothing_outside(&self) {
        assert!(snapshot(&self.dir.path().join("sentinel")).is_empty());
        assert!(snapshot(&self.dir.path().join("work/sentinel")).is_empty());
        let top: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(top.len(), 2, "{top:?}");
        for entry in fs::read_dir(self.dir.path().join("work")).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(name == "sentinel" || name == "target", "{name:?}");
        }
    }
}

/// Checks out `tree` in every mode, expecting an error whose text holds all of
/// `phrases`, and that nothing at all was written.
fn assert_refused(store: &Store, tree: Digest, phrases: &[&str]) {
    for mode in MODES {
        let arena = Arena::new();
        let err = checkout(store, tree, &arena.target(), &opts(mode)).unwrap_err();
        let text = chain(&err);
        assert!(
            matches!(err, CheckoutError::Tree { .. }),
            "{mode:?}: {text}"
        );
        for phrase in phrases {
            assert!(text.contains(phrase), "{mode:?}: {phrase:?} not in {text}");
        }
        assert!(text.contains("nothing was written"), "{text}");
        assert_message_style(&err);
        assert!(!arena.target().exists(), "{mode:?}: the target was created");
        arena.assert_nothing_outside();
    }
}

#[test]
fn hostile_names_are_refused_before_anything_is_written() {
    let t = TestStore::new();
    let blob = put_raw(&t.store, b"pwned\n");
    let empty_dir = put_proto(&t.store, &reapi::Directory::default());
    let cases: Vec<(reapi::Directory, &[&str])> = vec![
        (
            reapi::Directory {
                files: vec![file_node("..", blob)],
                ..Default::default()
            },
            &["\"..\""],
        ),
        (
            reapi::Directory {
                files: vec![file_node("../sentinel/x", blob)],
                ..Default::default()
            },
            &["'/'"],
        ),
        (
            reapi::Directory {
                files: vec![file_node("a/b", blob)],
                ..Default::default()
            },
            &["\"a/b\"", "'/'"],
        ),
        (
            reapi::Directory {
                directories: vec![dir_node(".", empty_dir)],
                ..Default::default()
            },
            &["\".\""],
        ),
        (
            reapi::Directory {
                directories: vec![dir_node("..", empty_dir)],
                ..Default::default()
            },
            &["\"..\""],
        ),
        (
            reapi::Directory {
                files: vec![file_node("", blob)],
                ..Default::default()
            },
            &["empty"],
        ),
        (
            reapi::Directory {
                files: vec![file_node("a\0b", blob)],
                ..Default::default()
            },
            &["NUL"],
        ),
        (
            reapi::Directory {
                symlinks: vec![symlink_node("/abs", "x")],
                ..Default::default()
            },
            &["'/'"],
        ),
    ];
    for (proto, phrases) in cases {
        let tree = put_proto(&t.store, &proto);
        assert_refused(&t.store, tree, phrases);
        // The same node one level down: the error names where it is.
        let parent = put_proto(
            &t.store,
            &reapi::Directory {
                directories: vec![dir_node("sub", tree)],
                ..Default::default()
            },
        );
        let mut with_path = phrases.to_vec();
        with_path.push("directory sub");
        assert_refused(&t.store, parent, &with_path);
    }
}

#[test]
fn duplicate_unsorted_and_non_canonical_nodes_are_refused() {
    let t = TestStore::new();
    let a = put_raw(&t.store, b"a");
    let b = put_raw(&t.store, b"b");
    let empty_dir = put_proto(&t.store, &reapi::Directory::default());
    let cases: Vec<(reapi::Directory, &[&str])> = vec![
        (
            reapi::Directory {
                files: vec![file_node("x", a), file_node("x", b)],
                ..Default::default()
            },
            &["duplicate", "\"x\""],
        ),
        (
            reapi::Directory {
                files: vec![file_node("b", a), file_node("a", b)],
                ..Default::default()
            },
            &["unsorted"],
        ),
        (
            reapi::Directory {
                files: vec![file_node("x", a)],
                directories: vec![dir_node("x", empty_dir)],
                ..Default::default()
            },
            &["two entries are named \"x\""],
        ),
    ];
    for (proto, phrases) in cases {
        let tree = put_proto(&t.store, &proto);
        assert_refused(&t.store, tree, phrases);
    }

    // Not a Directory message at all, and a name that is not UTF-8.
    let garbage = put_raw(&t.store, b"\xff\xff\xff\xff not protobuf");
    assert_refused(&t.store, garbage, &["not a Directory message"]);
    let mut bytes = reapi::Directory {
        files: vec![file_node("NAME", a)],
        ..Default::default()
    }
    .encode_to_vec();
    let at = bytes.windows(4).position(|w| w == b"NAME").unwrap();
    bytes[at..at + 4].copy_from_slice(b"\xffAME");
    let not_utf8 = put_raw(&t.store, &bytes);
    assert_refused(&t.store, not_utf8, &["not a Directory message"]);

    // A missing subtree: nothing is written before the whole tree was read.
    let missing = Digest::of(b"never stored");
    let parent = put_proto(
        &t.store,
        &reapi::Directory {
            files: vec![file_node("a", a)],
            directories: vec![dir_node("gone", missing)],
            ..Default::default()
        },
    );
    assert_refused(&t.store, parent, &["gone", &missing.to_string(), "missing"]);
}

#[test]
fn a_file_under_a_symlinks_name_cannot_write_through_it() {
    let t = TestStore::new();
    let blob = put_raw(&t.store, b"pwned\n");
    for escape in ["../sentinel", "../../sentinel", "../../etc/passwd", "/etc"] {
        // A directory and a symlink of the same name: the later level would be
        // written through the symlink if both were accepted.
        let inner = put_proto(
            &t.store,
            &reapi::Directory {
                files: vec![file_node("passwd", blob)],
                ..Default::default()
            },
        );
        let both = put_proto(
            &t.store,
            &reapi::Directory {
                directories: vec![dir_node("esc", inner)],
                symlinks: vec![symlink_node("esc", escape)],
                ..Default::default()
            },
        );
        assert_refused(&t.store, both, &["two entries are named \"esc\""]);
        // A path-shaped name below the symlink.
        let slash = put_proto(
            &t.store,
            &reapi::Directory {
                files: vec![file_node("esc/passwd", blob)],
                symlinks: vec![symlink_node("esc", escape)],
                ..Default::default()
            },
        );
        assert_refused(&t.store, slash, &["'/'"]);
    }
}

#[test]
fn symlinks_pointing_outside_are_created_as_data() {
    let t = TestStore::new();
    let blob = put_raw(&t.store, b"data\n");
    let sub = put_proto(
        &t.store,
        &reapi::Directory {
            files: vec![file_node("f", blob)],
            symlinks: vec![symlink_node("up", "../../../sentinel")],
            ..Default::default()
        },
    );
    let tree = put_proto(
        &t.store,
        &reapi::Directory {
            files: vec![file_node("file", blob)],
            directories: vec![dir_node("sub", sub)],
            symlinks: vec![
                symlink_node("abs", "/etc"),
                symlink_node("esc", "../sentinel"),
                symlink_node("passwd", "../../etc/passwd"),
            ],
            ..Default::default()
        },
    );
    for mode in MODES {
        let arena = Arena::new();
        let target = arena.target();
        checkout(&t.store, tree, &target, &opts(mode)).unwrap();
        let got = snapshot(&target);
        assert_eq!(got["abs"], link("/etc"));
        assert_eq!(got["esc"], link("../sentinel"));
        assert_eq!(got["passwd"], link("../../etc/passwd"));
        assert_eq!(got["sub/up"], link("../../../sentinel"));
        assert_eq!(got["sub/f"], file(b"data\n"));
        arena.assert_nothing_outside();
    }
}

/// A chain of `levels` nested directories named "d", with a file at the bottom.
fn chain_tree(store: &Store, levels: usize) -> Digest {
    let txn = store.begin().unwrap();
    let leaf = txn.put(b"bottom").unwrap();
    let mut digest = put_dir(
        &txn,
        vec![entry(
            "f",
            Node::File {
                digest: leaf,
                executable: false,
            },
            None,
        )],
        None,
    );
    for _ in 0..levels {
        digest = put_dir(&txn, vec![entry("d", Node::Dir { digest }, None)], None);
    }
    txn.commit().unwrap();
    digest
}

#[test]
fn depth_is_limited() {
    let t = TestStore::new();
    // MAX_DEPTH nested directories below the root are fine.
    let ok = chain_tree(&t.store, MAX_DEPTH);
    let out = tempfile::tempdir().unwrap();
    let stats = checkout(
        &t.store,
        ok,
        &out.path().join("co"),
        &CheckoutOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.dirs, MAX_DEPTH as u64);
    assert_eq!(stats.files, 1);

    // One more is refused, naming the first path past the limit.
    let deep = chain_tree(&t.store, MAX_DEPTH + 1);
    let too_deep_path = vec!["d"; MAX_DEPTH + 1].join("/");
    assert_refused(&t.store, deep, &["deeper than 256", &too_deep_path]);
    let arena = Arena::new();
    let err = checkout(&t.store, deep, &arena.target(), &CheckoutOptions::default()).unwrap_err();
    match &err {
        CheckoutError::Tree { path, source, .. } => {
            assert_eq!(path, &too_deep_path);
            assert!(matches!(**source, treediff::TreeError::TooDeep { .. }));
        }
        other => panic!("{other:?}"),
    }

    // A subtree seen first at a shallow place and again deeper (read only once)
    // is still measured where it sits.
    let shallow = chain_tree(&t.store, MAX_DEPTH - 10);
    let txn = t.store.begin().unwrap();
    let mut deeper = shallow;
    for _ in 0..20 {
        deeper = put_dir(
            &txn,
            vec![entry("e", Node::Dir { digest: deeper }, None)],
            None,
        );
    }
    let root = put_dir(
        &txn,
        vec![
            entry("a", Node::Dir { digest: shallow }, None),
            entry("b", Node::Dir { digest: deeper }, None),
        ],
        None,
    );
    txn.commit().unwrap();
    let mut expected = vec!["b"];
    expected.extend(vec!["e"; 20]);
    expected.extend(vec!["d"; MAX_DEPTH + 1 - 21]);
    assert_refused(&t.store, root, &["deeper than 256", &expected.join("/")]);
}

// ----------------------------------------------------------------------------
// damaged objects

fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).unwrap();
}

#[test]
fn a_flipped_bit_fails_copy_naming_the_digest_and_the_file_is_removed() {
    for content in [b"precious bytes\n".to_vec(), big_content()] {
        let t = TestStore::new();
        let tree = TreeBuilder::new()
            .file("a/ok", "fine\n")
            .file("a/precious", &content)
            .build(&t.store);
        let digest = Digest::of(&content);
        damage(&t.store.blob_path(&digest), |b| {
            let n = b.len();
            b[n - 3] ^= 0x10;
        });
        for mode in [CheckoutMode::Copy, CheckoutMode::Reflink] {
            let out = tempfile::tempdir().unwrap();
            let target = out.path().join("co");
            let result = checkout(&t.store, tree, &target, &opts(mode));
            if mode == CheckoutMode::Reflink && !cannot_reflink(out.path()) {
                continue; // a reflink shares the bytes without reading them
            }
            let err = result.unwrap_err();
            let text = chain(&err);
            assert!(matches!(err, CheckoutError::Corrupt { .. }), "{text}");
            assert!(text.contains(&digest.to_string()), "{text}");
            assert!(text.contains("a/precious"), "{text}");
            assert!(text.contains("corrupt"), "{text}");
            assert!(text.contains("incomplete"), "{text}");
            assert_message_style(&err);
            assert!(
                !target.join("a/precious").exists(),
                "unverified bytes were left in the checkout"
            );
        }
    }
}

#[test]
fn a_truncated_object_fails_every_mode_before_anything_is_written() {
    let t = TestStore::new();
    let tree = TreeBuilder::new()
        .file("ok", "fine\n")
        .exec("sub/tool", "#!/bin/sh\nexit 0\n")
        .build(&t.store);
    let digest = Digest::of(b"#!/bin/sh\nexit 0\n");
    damage(&t.store.blob_path(&digest), |b| b.truncate(5));
    for mode in MODES {
        let arena = Arena::new();
        let err = checkout(&t.store, tree, &arena.target(), &opts(mode)).unwrap_err();
        let text = chain(&err);
        assert!(
            matches!(err, CheckoutError::Object { .. }),
            "{mode:?}: {text}"
        );
        assert!(text.contains(&digest.to_string()), "{mode:?}: {text}");
        assert!(text.contains("sub/tool"), "{mode:?}: {text}");
        assert!(text.contains("5 bytes"), "{mode:?}: {text}");
        assert!(text.contains("nothing was written"), "{mode:?}: {text}");
        assert_message_style(&err);
        assert!(!arena.target().exists(), "{mode:?}");
        arena.assert_nothing_outside();
    }
}

#[test]
fn a_missing_object_fails_naming_it() {
    let t = TestStore::new();
    let tree = TreeBuilder::new()
        .file("x/gone", "vanishing\n")
        .build(&t.store);
    let digest = Digest::of(b"vanishing\n");
    fs::remove_file(t.store.blob_path(&digest)).unwrap();
    for mode in MODES {
        let arena = Arena::new();
        let err = checkout(&t.store, tree, &arena.target(), &opts(mode)).unwrap_err();
        let text = chain(&err);
        assert!(text.contains(&digest.to_string()), "{text}");
        assert!(text.contains("x/gone"), "{text}");
        assert!(text.contains("missing"), "{text}");
        assert!(!arena.target().exists());
    }
}

#[test]
fn hardlink_verifies_a_blob_before_making_its_exec_twin() {
    let t = TestStore::new();
    let tree = TreeBuilder::new()
        .exec("bin/run", "#!/bin/sh\n")
        .build(&t.store);
    let digest = Digest::of(b"#!/bin/sh\n");
    damage(&t.store.blob_path(&digest), |b| b[0] ^= 1);
    let arena = Arena::new();
    let err = checkout(
        &t.store,
        tree,
        &arena.target(),
        &opts(CheckoutMode::Hardlink),
    )
    .unwrap_err();
    let text = chain(&err);
    assert!(text.contains(&digest.to_string()), "{text}");
    assert!(text.contains("bin/run"), "{text}");
    assert!(text.contains("corrupt"), "{text}");
    assert!(!object_path(&t.store, "exec", &digest).exists());
    assert!(!arena.target().exists());
}

#[test]
fn an_object_at_the_link_limit_is_copied() {
    let t = TestStore::new();
    if fs_magic(t.dir.path()) != nix::sys::statfs::EXT4_SUPER_MAGIC {
        eprintln!("skipping: the link limit is only known for ext4 (65000)");
        return;
    }
    // 65001 names for one blob: the store's own name plus 65000 links exceed ext4's
    // limit of 65000.
    let txn = t.store.begin().unwrap();
    let blob = txn.put(b"same").unwrap();
    let entries = (0..65_001)
        .map(|i| {
            entry(
                &format!("f{i:05}"),
                Node::File {
                    digest: blob,
                    executable: false,
                },
                None,
            )
        })
        .collect();
    let tree = put_dir(&txn, entries, None);
    txn.commit().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("co");
    let stats = checkout(&t.store, tree, &target, &opts(CheckoutMode::Hardlink)).unwrap();
    assert_eq!(stats.files, 65_001);
    assert_eq!(stats.hardlinked, 64_999);
    assert_eq!(stats.copied, 2);
    let last = fs::metadata(target.join("f65000")).unwrap();
    assert_eq!(fs::read(target.join("f65000")).unwrap(), b"same");
    assert_eq!(last.mtime(), OBJECT_MTIME.seconds);
    assert_eq!(last.mode() & 0o777, 0o644);
}

#[test]
fn stats_serialize() {
    fn serializable<T: serde::Serialize>(_: &T) {}
    serializable(&CheckoutStats::default());
    serializable(&CheckoutMode::Hardlink);
}

// ----------------------------------------------------------------------------
// reflinks on XFS

/// A loop-mounted XFS image, unmounted when dropped.
struct XfsMount {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl XfsMount {
    fn new() -> Option<XfsMount> {
        let privileged = std::env::var("WS_TEST_REQUIRE_PRIVILEGED").as_deref() == Ok("1");
        let skip = |why: &str| {
            assert!(
                !privileged,
                "WS_TEST_REQUIRE_PRIVILEGED=1 but cannot test reflinks on XFS: {why}"
            );
            eprintln!("skipping the XFS reflink test: {why}");
            None
        };
        if !nix::unistd::geteuid().is_root() {
            return skip("not running as root (needed to loop-mount an image)");
        }
        let Some(mkfs) = ["/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs", "/usr/bin/mkfs.xfs"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            return skip("mkfs.xfs not found (install xfsprogs)");
        };
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("xfs.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&image)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        // Where the kernel or the container forbids loop mounts, skip (or fail, when
        // privileged tests are required).
        let run = |cmd: &mut std::process::Command| match cmd.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!("{cmd:?} failed: {out:?}")),
            Err(e) => Err(format!("cannot run {cmd:?}: {e}")),
        };
        if let Err(why) = run(std::process::Command::new(mkfs).arg("-q").arg(&image)) {
            return skip(&why);
        }
        let mount = run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt));
        if let Err(why) = mount {
            return skip(&why);
        }
        Some(XfsMount { _dir: dir, mnt })
    }
}

impl Drop for XfsMount {
    /// Unmounts, retrying for a while: a process that another test thread forks
    /// holds this test's descriptors until it execs, which makes the mount busy
    /// for a moment. A mount still busy after 5 s fails the test, naming who holds
    /// it, and is detached so that it does not outlive the test.
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        for _ in 0..50 {
            if umount(false) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let holders = holders_of(&self.mnt);
        umount(true);
        assert!(
            std::thread::panicking(),
            "umount of {} failed: busy after 5 s; held by {holders:?}",
            self.mnt.display()
        );
    }
}

/// The processes whose working directory or open files are under `dir`.
fn holders_of(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.path();
        let mut links: Vec<PathBuf> = vec![pid.join("cwd"), pid.join("root")];
        if let Ok(fds) = std::fs::read_dir(pid.join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        if links
            .iter()
            .any(|l| std::fs::read_link(l).is_ok_and(|t| t.starts_with(dir)))
        {
            let cmd = std::fs::read(pid.join("cmdline")).unwrap_or_default();
            out.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    out
}

#[test]
fn reflink_on_xfs_clones_every_file() {
    let Some(xfs) = XfsMount::new() else { return };
    {
        let store = Store::open(&xfs.mnt.join("state")).unwrap();
        let (tree, expected) = source_tree(&store);
        let target = xfs.mnt.join("co");
        let stats = checkout(&store, tree, &target, &opts(CheckoutMode::Reflink)).unwrap();
        assert_eq!(stats.reflinked, stats.files, "{stats:?}");
        assert_eq!(stats.copied, 0);
        assert_eq!(snapshot(&target), expected);
        assert_eq!(
            fs::metadata(target.join("bin/tool")).unwrap().mode() & 0o777,
            0o755
        );
        // Copy on write: editing the clone leaves the store's object intact.
        fs::write(target.join("src/big.bin"), "edited").unwrap();
        assert_eq!(
            store.read(&Digest::of(&big_content())).unwrap().bytes(),
            &big_content()[..]
        );
        // Buildtree properties apply to clones too.
        let bt = buildtree(&store);
        let bt_target = xfs.mnt.join("bt");
        let stats = checkout(&store, bt, &bt_target, &opts(CheckoutMode::Reflink)).unwrap();
        assert_eq!(stats.reflinked, stats.files);
        assert_props(
            &bt_target.join("build/main.o"),
            0o600,
            mtime(1_700_000_100, 123_456_789),
        );
        make_writable(&bt_target);
        drop(store);
    }
    drop(xfs);
}

// ----------------------------------------------------------------------------
// trees big enough to be written by several threads

/// 12 top dirs × 8 subdirs × (20 files, one executable, one symlink), plus files at
/// the root: over a thousand files, so the checkout is split between threads. With
/// `props`, every entry and directory carries a distinct mode and mtime.
fn wide_tree(store: &Store, props_on: bool) -> (Digest, BTreeMap<String, Item>) {
    let txn = store.begin().unwrap();
    let mut expected = BTreeMap::new();
    let mut stamp = 0u32;
    let mut next_props = |mode: u32| {
        stamp += 1;
        props_on.then(|| Props {
            mtime: Some(mtime(1_600_000_000 + i64::from(stamp), stamp * 7)),
            unix_mode: Some(mode),
        })
    };
    let mut top = Vec::new();
    for d in 0..12 {
        let mut subs = Vec::new();
        for s in 0..8 {
            let dir_path = format!("d{d:02}/s{s}");
            let mut entries = Vec::new();
            for f in 0..20 {
                let content = format!("{dir_path}/f{f:02}\n");
                let executable = f == 0;
                let mode = if executable { 0o750 } else { 0o640 };
                entries.push(entry(
                    &format!("f{f:02}"),
                    Node::File {
                        digest: txn.put(content.as_bytes()).unwrap(),
                        executable,
                    },
                    next_props(mode),
                ));
                expected.insert(
                    format!("{dir_path}/f{f:02}"),
                    Item::File {
                        content: content.into_bytes(),
                        exec: executable,
                    },
                );
            }
            entries.push(entry(
                "link",
                Node::Symlink {
                    target: "f01".into(),
                },
                next_props(0o777),
            ));
            expected.insert(format!("{dir_path}/link"), link("f01"));
            expected.insert(dir_path, Item::Dir);
            let digest = put_dir(&txn, entries, next_props(0o755));
            subs.push(entry(&format!("s{s}"), Node::Dir { digest }, None));
        }
        expected.insert(format!("d{d:02}"), Item::Dir);
        let mode = if d % 3 == 0 { 0o555 } else { 0o750 };
        let digest = put_dir(&txn, subs, next_props(mode));
        top.push(entry(&format!("d{d:02}"), Node::Dir { digest }, None));
    }
    for f in 0..30 {
        let content = format!("root file {f}\n");
        top.push(entry(
            &format!("r{f:02}"),
            Node::File {
                digest: txn.put(content.as_bytes()).unwrap(),
                executable: false,
            },
            next_props(0o644),
        ));
        expected.insert(format!("r{f:02}"), file(content.as_bytes()));
    }
    let root = put_dir(&txn, top, next_props(0o751));
    txn.commit().unwrap();
    (root, expected)
}

/// Every mode and mtime the wide tree's nodes carry, by path ("" for the root).
fn wide_props(store: &Store, tree: Digest) -> BTreeMap<String, Props> {
    fn walk(store: &Store, digest: Digest, path: &str, out: &mut BTreeMap<String, Props>) {
        let dir = Dir::read(store, digest, path).unwrap();
        if let Some(p) = dir.props {
            out.insert(path.to_owned(), p);
        }
        for e in dir.entries() {
            let child = treediff::names::join(path, &e.name);
            if let Some(p) = e.props {
                out.insert(child.clone(), p);
            }
            if let Node::Dir { digest } = e.node {
                walk(store, digest, &child, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(store, tree, "", &mut out);
    out
}

#[test]
fn a_wide_tree_is_reproduced_by_every_mode() {
    let t = TestStore::new();
    let (tree, expected) = wide_tree(&t.store, false);
    for mode in MODES {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("co");
        let stats = checkout(&t.store, tree, &target, &opts(mode)).unwrap();
        assert_eq!(snapshot(&target), expected, "{mode:?}");
        assert_eq!(stats.files, 12 * 8 * 20 + 30);
        assert_eq!(stats.dirs, 12 + 12 * 8);
        assert_eq!(stats.symlinks, 12 * 8);
        assert_eq!(
            stats.hardlinked + stats.reflinked + stats.copied,
            stats.files
        );
        for (path, item) in &expected {
            let meta = fs::symlink_metadata(target.join(path)).unwrap();
            match item {
                Item::Dir => assert_eq!(meta.mode() & 0o7777, 0o755, "{mode:?} {path}"),
                Item::File { .. } => assert_eq!(meta.mtime(), OBJECT_MTIME.seconds),
                Item::Symlink(_) => {}
            }
        }
    }
}

#[test]
fn a_wide_buildtree_gets_every_mode_and_mtime() {
    let t = TestStore::new();
    let (tree, expected) = wide_tree(&t.store, true);
    let props = wide_props(&t.store, tree);
    assert_eq!(props.len(), expected.len() + 1, "every node has props");
    for mode in [CheckoutMode::Reflink, CheckoutMode::Copy] {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("bt");
        checkout(&t.store, tree, &target, &opts(mode)).unwrap();
        assert_eq!(snapshot(&target), expected, "{mode:?}");
        for (path, p) in &props {
            let meta = fs::symlink_metadata(target.join(path)).unwrap();
            let want = p.mtime.unwrap();
            assert_eq!(
                (meta.mtime(), meta.mtime_nsec()),
                (want.seconds, i64::from(want.nanos)),
                "{mode:?} mtime of {path:?}"
            );
            if !meta.file_type().is_symlink() {
                assert_eq!(
                    meta.mode() & 0o7777,
                    p.unix_mode.unwrap(),
                    "{mode:?} mode of {path:?}"
                );
            }
        }
        make_writable(&target);
    }
    let out = tempfile::tempdir().unwrap();
    let err = checkout(
        &t.store,
        tree,
        &out.path().join("hl"),
        &opts(CheckoutMode::Hardlink),
    )
    .unwrap_err();
    assert!(
        matches!(err, CheckoutError::HardlinkProps { .. }),
        "{err:?}"
    );
}

#[test]
fn a_corrupt_blob_deep_in_a_wide_tree_fails_the_copy() {
    let t = TestStore::new();
    let (tree, _) = wide_tree(&t.store, false);
    let digest = Digest::of(b"d07/s5/f13\n");
    damage(&t.store.blob_path(&digest), |b| b[0] ^= 0x20);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("co");
    let err = checkout(&t.store, tree, &target, &opts(CheckoutMode::Copy)).unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, CheckoutError::Corrupt { .. }), "{text}");
    assert!(text.contains(&digest.to_string()), "{text}");
    assert!(text.contains("d07/s5/f13"), "{text}");
    assert!(!target.join("d07/s5/f13").exists());
    make_writable(&target);
}

// ----------------------------------------------------------------------------
// checkouts given to an owner

/// A user and group nobody on the machine has.
const OWNER: (u32, u32) = (4242, 4343);

/// The entries below `root` (and `root` itself, as "") not owned by `owner`.
fn not_owned_by(root: &Path, owner: (u32, u32)) -> Vec<String> {
    let mut paths = vec![String::new()];
    paths.extend(snapshot(root).into_keys());
    paths
        .into_iter()
        .filter(|path| {
            let meta = fs::symlink_metadata(root.join(path)).unwrap();
            (meta.uid(), meta.gid()) != owner
        })
        .collect()
}

#[test]
fn an_owner_is_given_every_file_dir_and_symlink() {
    if !privileged("an_owner_is_given_every_file_dir_and_symlink") {
        return;
    }
    let t = TestStore::new();
    let (small, small_expected) = source_tree(&t.store);
    // Wide: written by several threads; a buildtree: modes and mtimes to keep.
    let (wide, wide_expected) = wide_tree(&t.store, true);
    let wide_props = wide_props(&t.store, wide);
    for mode in [CheckoutMode::Reflink, CheckoutMode::Copy] {
        let options = CheckoutOptions {
            mode,
            owner: Some(OWNER),
        };
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("co");
        checkout(&t.store, small, &target, &options).unwrap();
        assert_eq!(snapshot(&target), small_expected, "{mode:?}");
        assert_eq!(
            not_owned_by(&target, OWNER),
            Vec::<String>::new(),
            "{mode:?}"
        );
        assert_eq!(
            fs::metadata(target.join("bin/tool")).unwrap().mode() & 0o7777,
            0o755,
            "{mode:?}"
        );

        let existing = out.path().join("existing");
        fs::create_dir(&existing).unwrap();
        checkout(&t.store, small, &existing, &options).unwrap();
        assert_eq!(
            not_owned_by(&existing, OWNER),
            Vec::<String>::new(),
            "{mode:?}"
        );

        let bt = out.path().join("bt");
        checkout(&t.store, wide, &bt, &options).unwrap();
        assert_eq!(snapshot(&bt), wide_expected, "{mode:?}");
        assert_eq!(not_owned_by(&bt, OWNER), Vec::<String>::new(), "{mode:?}");
        for (path, p) in &wide_props {
            let meta = fs::symlink_metadata(bt.join(path)).unwrap();
            let want = p.mtime.unwrap();
            assert_eq!(
                (meta.mtime(), meta.mtime_nsec()),
                (want.seconds, i64::from(want.nanos)),
                "{mode:?} mtime of {path:?}"
            );
            if !meta.file_type().is_symlink() {
                assert_eq!(
                    meta.mode() & 0o7777,
                    p.unix_mode.unwrap(),
                    "{mode:?} mode of {path:?}"
                );
            }
        }
        make_writable(&bt);
    }
}

#[test]
fn hardlink_refuses_an_owner_and_writes_nothing() {
    let t = TestStore::new();
    let (tree, _) = source_tree(&t.store);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("co");
    let options = CheckoutOptions {
        mode: CheckoutMode::Hardlink,
        owner: Some(OWNER),
    };
    let err = checkout(&t.store, tree, &target, &options).unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, CheckoutError::HardlinkOwner { .. }), "{text}");
    assert!(text.contains("reflink or copy"), "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    assert_message_style(&err);
    assert!(!target.exists());
    let blob = object_path(&t.store, "blobs", &Digest::of(b"hello\n"));
    assert_eq!(
        fs::metadata(blob).unwrap().uid(),
        nix::unistd::geteuid().as_raw()
    );
}
