//! Capture of real directories: what a tree holds, the stat cache, hostile input.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::{SmallTmpfs, TestStore, TreeBuilder, privileged};
use treediff::{
    CaptureError, CaptureMode, CaptureOptions, Dir, FileStatCache, Node, StoreError, import,
};

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn sample(root: &Path) {
    write(root, "README", "hello\n");
    write(root, "src/main.c", "int main(void) { return 0; }\n");
    write(root, "bin/run", "#!/bin/sh\necho run\n");
    chmod(&root.join("bin/run"), 0o755);
    symlink("../README", root.join("src/readme-link")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
}

#[test]
fn source_capture_equals_the_tree_built_by_hand() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let (digest, stats) = import(&t.store, src.path(), &CaptureOptions::default()).unwrap();
    let expected = TreeBuilder::new()
        .file("README", "hello\n")
        .file("src/main.c", "int main(void) { return 0; }\n")
        .exec("bin/run", "#!/bin/sh\necho run\n")
        .symlink("src/readme-link", "../README")
        .dir("empty")
        .build(&t.store);
    assert_eq!(digest, expected);
    assert_eq!((stats.files, stats.dirs, stats.symlinks), (3, 4, 1));
    assert!(t.store.recorded_trees().unwrap().contains(&digest));
}

#[test]
fn source_capture_ignores_timestamps_and_non_exec_mode_bits() {
    let t = TestStore::new();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    sample(a.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    sample(b.path());
    chmod(&b.path().join("README"), 0o600);
    let opts = CaptureOptions::default();
    assert_eq!(
        import(&t.store, a.path(), &opts).unwrap().0,
        import(&t.store, b.path(), &opts).unwrap().0
    );
}

#[test]
fn buildtree_capture_records_mtime_and_stripped_mode() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "obj/a.o", "object");
    chmod(&src.path().join("obj/a.o"), 0o4755);
    let opts = CaptureOptions {
        mode: CaptureMode::Buildtree,
        ..Default::default()
    };
    let (digest, _) = import(&t.store, src.path(), &opts).unwrap();
    let root = Dir::read(&t.store, digest, "").unwrap();
    assert!(
        root.props
            .is_some_and(|p| p.mtime.is_some() && p.unix_mode.is_some())
    );
    let Node::Dir { digest: obj } = root.get("obj").unwrap().node else {
        panic!()
    };
    let obj = Dir::read(&t.store, obj, "obj").unwrap();
    let file = obj.get("a.o").unwrap();
    let props = file.props.unwrap();
    assert_eq!(props.unix_mode, Some(0o755), "setuid is stripped");
    let meta = fs::metadata(src.path().join("obj/a.o")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let mtime = props.mtime.unwrap();
    assert_eq!(
        (mtime.seconds, i64::from(mtime.nanos)),
        (meta.mtime(), meta.mtime_nsec())
    );
    assert!(matches!(
        file.node,
        Node::File {
            executable: true,
            ..
        }
    ));
}

#[test]
fn hardlinks_are_captured_as_separate_files_and_symlinks_are_not_followed() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "a", "same");
    fs::hard_link(src.path().join("a"), src.path().join("b")).unwrap();
    symlink("/etc/passwd", src.path().join("passwd")).unwrap();
    let (digest, _) = import(&t.store, src.path(), &CaptureOptions::default()).unwrap();
    let expected = TreeBuilder::new()
        .file("a", "same")
        .file("b", "same")
        .symlink("passwd", "/etc/passwd")
        .build(&t.store);
    assert_eq!(digest, expected);
}

#[test]
fn wsignore_and_extra_patterns_exclude_paths() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), ".wsignore", ".git/\n*.o\n");
    write(src.path(), ".git/HEAD", "ref: x");
    write(src.path(), "a.c", "c");
    write(src.path(), "a.o", "o");
    write(src.path(), "sub/.wsignore", "local\n");
    write(src.path(), "sub/local", "l");
    write(src.path(), "sub/kept", "k");
    write(src.path(), "build/out", "b");
    let patterns = vec!["/build".to_owned()];
    let opts = CaptureOptions {
        ignore_patterns: &patterns,
        ..Default::default()
    };
    let (digest, _) = import(&t.store, src.path(), &opts).unwrap();
    let expected = TreeBuilder::new()
        .file(".wsignore", ".git/\n*.o\n")
        .file("a.c", "c")
        .file("sub/.wsignore", "local\n")
        .file("sub/kept", "k")
        .build(&t.store);
    assert_eq!(digest, expected);
}

#[test]
fn non_utf8_name_is_refused_naming_the_path() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join(OsStr::from_bytes(b"bad\xffname")), "x").unwrap();
    let err = import(&t.store, src.path(), &CaptureOptions::default()).unwrap_err();
    assert!(matches!(err, CaptureError::NameNotUtf8 { .. }), "{err}");
    assert!(
        err.to_string().contains("bad") && err.to_string().contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn fifo_is_refused_naming_the_path() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(
        &src.path().join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let err = import(&t.store, src.path(), &CaptureOptions::default()).unwrap_err();
    assert!(
        matches!(err, CaptureError::Unsupported { kind: "FIFO", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("pipe"), "{err}");
}

#[test]
fn capturing_a_file_is_refused() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "f", "x");
    let err = import(&t.store, &src.path().join("f"), &CaptureOptions::default()).unwrap_err();
    assert!(matches!(err, CaptureError::NotADirectory { .. }), "{err}");
}

/// Backdates every file's mtime so that only ctime can keep an entry untrusted.
fn settle() {
    // Entries are dated RECORD_MARGIN before the capture's start; wait past it so
    // that files written by the test count as older than the next capture.
    std::thread::sleep(treediff::statcache::RECORD_MARGIN + std::time::Duration::from_millis(50));
}

#[test]
fn stat_cache_makes_a_second_capture_hash_nothing() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    settle();
    let cache_path = t.dir.path().join("statcache");
    let cache = FileStatCache::load(&cache_path);
    let opts = CaptureOptions {
        stat_cache: Some(&cache),
        ..Default::default()
    };
    let (first, stats) = import(&t.store, src.path(), &opts).unwrap();
    assert_eq!((stats.hashed_files, stats.cache_hits), (3, 0));
    cache.save().unwrap();

    let cache = FileStatCache::load(&cache_path);
    let opts = CaptureOptions {
        stat_cache: Some(&cache),
        ..Default::default()
    };
    let (second, stats) = import(&t.store, src.path(), &opts).unwrap();
    assert_eq!(first, second);
    assert_eq!((stats.hashed_files, stats.cache_hits), (0, 3));
}

#[test]
fn stat_cache_sees_a_same_size_edit_with_a_faked_mtime() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    settle();
    let cache = FileStatCache::load(&t.dir.path().join("statcache"));
    let opts = CaptureOptions {
        stat_cache: Some(&cache),
        ..Default::default()
    };
    let (first, _) = import(&t.store, src.path(), &opts).unwrap();
    // Same size, same mtime (restored by hand): only the ctime tells.
    let readme = src.path().join("README");
    let mtime = fs::metadata(&readme).unwrap().modified().unwrap();
    fs::write(&readme, "HELLO\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&readme)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (second, stats) = import(&t.store, src.path(), &opts).unwrap();
    assert_ne!(first, second);
    assert_eq!(stats.hashed_files, 1);
}

#[test]
fn racily_clean_files_are_hashed_again() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    // No settling: the files are as new as the capture, so their entries cannot be
    // trusted yet, and the next capture hashes them again.
    let cache = FileStatCache::load(&t.dir.path().join("statcache"));
    let opts = CaptureOptions {
        stat_cache: Some(&cache),
        ..Default::default()
    };
    import(&t.store, src.path(), &opts).unwrap();
    let (_, stats) = import(&t.store, src.path(), &opts).unwrap();
    assert_eq!(stats.cache_hits, 0);
    assert_eq!(stats.hashed_files, 3);
}

#[test]
fn large_files_are_streamed_into_the_store() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    fs::write(src.path().join("big"), &big).unwrap();
    let (digest, _) = import(&t.store, src.path(), &CaptureOptions::default()).unwrap();
    let root = Dir::read(&t.store, digest, "").unwrap();
    let Node::File { digest: blob, .. } = root.get("big").unwrap().node else {
        panic!()
    };
    assert_eq!(t.store.read(&blob).unwrap().bytes(), &big[..]);
}

/// Disk full mid-import: a clear error, and no object published under any digest.
#[test]
fn disk_full_during_import_publishes_nothing() {
    if !privileged("disk_full_during_import_publishes_nothing") {
        return;
    }
    let fs_dir = SmallTmpfs::mount("1m");
    let store = treediff::Store::open(fs_dir.dir.path()).unwrap();
    let src = tempfile::tempdir().unwrap();
    for i in 0..40 {
        let content: String = format!("file {i}\n").repeat(10_000);
        write(src.path(), &format!("d{}/f{i}", i % 4), &content);
    }
    let err = import(&store, src.path(), &CaptureOptions::default()).unwrap_err();
    assert!(
        matches!(err, CaptureError::Store(StoreError::NoSpace { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("no space left"), "{err}");
    let published = walkdir::WalkDir::new(store.root().join("blobs"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(published, 0, "nothing may be published by a failed import");
}

#[test]
fn deeper_wsignore_can_reinclude_and_ignored_dirs_are_not_entered() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), ".wsignore", "*.log\nbuild/\n");
    write(src.path(), "a.log", "x");
    write(src.path(), "keep/.wsignore", "!important.log\n");
    write(src.path(), "keep/important.log", "kept");
    write(src.path(), "keep/other.log", "dropped");
    write(src.path(), "build/.wsignore", "!*\n");
    write(src.path(), "build/out.o", "never seen");
    let (digest, _) = import(&t.store, src.path(), &CaptureOptions::default()).unwrap();
    let expected = TreeBuilder::new()
        .file(".wsignore", "*.log\nbuild/\n")
        .file("keep/.wsignore", "!important.log\n")
        .file("keep/important.log", "kept")
        .build(&t.store);
    assert_eq!(digest, expected);
}

#[test]
fn bad_wsignore_pattern_is_named_with_file_and_line() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "sub/.wsignore", "ok\n{a,b\n");
    let err = import(&t.store, src.path(), &CaptureOptions::default()).unwrap_err();
    assert!(err.to_string().contains("sub/.wsignore, line 2"), "{err}");
}

#[test]
fn one_entry_captures_as_the_walk_does() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let (tree, _) = import(&t.store, src.path(), &CaptureOptions::default()).unwrap();
    let root = Dir::read(&t.store, tree, "").unwrap();
    let src_dir = fs::File::open(src.path().join("src")).unwrap();
    let bin_dir = fs::File::open(src.path().join("bin")).unwrap();
    let txn = t.store.begin().unwrap();
    let one = |dir: &fs::File, name: &str, mode| {
        use std::os::fd::AsFd;
        treediff::capture::capture_entry_at(&txn, dir.as_fd(), name, Path::new(name), mode)
    };
    let main = one(&src_dir, "main.c", CaptureMode::Source).unwrap();
    let link = one(&src_dir, "readme-link", CaptureMode::Source).unwrap();
    let run = one(&bin_dir, "run", CaptureMode::Source).unwrap();
    let Node::Dir { digest } = root.get("src").unwrap().node else {
        panic!("src is a directory")
    };
    let walked = Dir::read(&t.store, digest, "src").unwrap();
    assert_eq!(Some(&main), walked.get("main.c"));
    assert_eq!(Some(&link), walked.get("readme-link"));
    assert!(matches!(
        run.node,
        Node::File {
            executable: true,
            ..
        }
    ));
    let bt = one(&bin_dir, "run", CaptureMode::Buildtree).unwrap();
    assert_eq!(bt.props.and_then(|p| p.unix_mode), Some(0o755));
    // Directories are the caller's to walk; FIFOs are refused, naming the path.
    let dir_err = one(&src_dir, "..", CaptureMode::Source).unwrap_err();
    assert!(matches!(dir_err, CaptureError::Invalid { .. }), "{dir_err}");
    nix::unistd::mkfifo(&src.path().join("src/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo_err = one(&src_dir, "fifo", CaptureMode::Source).unwrap_err();
    assert!(
        matches!(fifo_err, CaptureError::Unsupported { kind: "FIFO", .. }),
        "{fifo_err}"
    );
}

#[test]
fn a_buildtree_keeps_what_the_sources_wsignore_ignores() {
    let t = TestStore::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), ".wsignore", "*.o\n");
    write(src.path(), "a.c", "c");
    write(src.path(), "a.o", "o");
    let source = import(&t.store, src.path(), &CaptureOptions::default())
        .unwrap()
        .0;
    let buildtree = import(
        &t.store,
        src.path(),
        &CaptureOptions {
            mode: CaptureMode::Buildtree,
            ..Default::default()
        },
    )
    .unwrap()
    .0;
    let names = |tree| {
        treediff::Dir::read(&t.store, tree, "")
            .unwrap()
            .entries()
            .iter()
            .map(|e| e.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(source), [".wsignore", "a.c"]);
    assert_eq!(names(buildtree), [".wsignore", "a.c", "a.o"]);
}
