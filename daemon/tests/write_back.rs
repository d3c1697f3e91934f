//! Write-back through the daemon's library: a workspace's commit written into
//! the directory it was opened over, and read back from there as the same tree;
//! conflicts refused with nothing written; a write-back that stopped partway
//! finished by running it again; ignored files left alone; a caller's own
//! permissions. Real RocksDB, real mounts (root).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use daemon::manager::ImportOptions;
use daemon::{
    Caller, Error, ErrorKind, Manager, MountPoint, OpKind, OpenRequest, Source, StateDir,
};
use overlay::BackendKind;
use overlay::testsuite::{chain, privileged};

const ROOT: Caller = Caller { uid: 0, gid: 0 };
const NOBODY: Caller = Caller {
    uid: 65534,
    gid: 65534,
};

/// A state directory, a source directory and a workspace over it.
struct Setup {
    dir: tempfile::TempDir,
    manager: Manager,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for (path, content) in [
            ("README", "readme\n"),
            ("run.sh", "#!/bin/sh\necho run\n"),
            ("src/main.c", "int main(void) { return 0; }\n"),
            ("src/util.c", "util\n"),
            ("old/one.c", "one\n"),
            ("old/two/deep.c", "deep\n"),
            ("gone/a.c", "a\n"),
            (".wsignore", "*.o\n"),
            // Ignored: never read, written or removed.
            ("main.o", "ignored\n"),
            ("src/util.o", "ignored too\n"),
            ("gone/b.o", "ignored in a directory the commit deletes\n"),
        ] {
            write(&src, path, content);
        }
        std::os::unix::fs::symlink("README", src.join("link")).unwrap();
        let manager = Manager::open(StateDir::new(dir.path().join("state"))).unwrap();
        Setup { dir, manager }
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    /// Opens the workspace `name` over the source for `caller`; returns its view.
    fn open(&self, caller: Caller, name: &str) -> PathBuf {
        self.manager
            .open_workspace(
                caller,
                OpenRequest {
                    name: name.to_owned(),
                    source: Source::Dir(self.src()),
                    path: None,
                    backend: Some(BackendKind::Overlayfs),
                },
            )
            .unwrap_or_else(|e| panic!("open {name}: {}", chain(&e)))
            .path
    }

    fn commit(&self, caller: Caller, name: &str) -> treediff::Digest {
        self.manager
            .commit(caller, name, None)
            .unwrap_or_else(|e| panic!("commit {name}: {}", chain(&e)))
            .workspace
            .source_digest
    }

    fn write_back(
        &self,
        caller: Caller,
        name: &str,
    ) -> Result<daemon::manager::WriteBackReport, Error> {
        let dir = MountPoint::open(&self.src()).unwrap();
        self.manager.write_back(caller, name, &dir)
    }

    /// The source directory's tree, read as an open reads it.
    fn tree(&self) -> treediff::Digest {
        self.manager
            .import_source(ROOT, &self.src(), &ImportOptions::default())
            .unwrap()
            .0
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for ws in self.manager.list(ROOT).unwrap_or_default() {
            let _ = overlay::unmount(&ws.path);
        }
    }
}

fn write(dir: &Path, path: &str, content: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path)).unwrap()
}

/// The write-back's temporary files left anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".wsd-writeback-")
            {
                found.push(entry.path());
            }
            if entry.file_type().unwrap().is_dir() {
                todo.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn a_commit_written_back_is_what_the_directory_then_holds() {
    if !privileged("a_commit_written_back_is_what_the_directory_then_holds") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    write(&view, "README", "edited\n");
    write(&view, "NEWS", "news\n");
    write(&view, "new/dir/file.c", "new\n");
    std::fs::remove_file(view.join("src/util.c")).unwrap();
    std::fs::remove_dir_all(view.join("old")).unwrap();
    std::fs::set_permissions(view.join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::remove_file(view.join("link")).unwrap();
    std::os::unix::fs::symlink("NEWS", view.join("link")).unwrap();
    std::os::unix::fs::symlink("src/main.c", view.join("latest")).unwrap();
    let committed = s.commit(ROOT, "hello");
    let ignored_inode = std::fs::metadata(s.src().join("src/util.o")).unwrap().ino();

    let report = s
        .write_back(ROOT, "hello")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));

    let src = s.src();
    assert_eq!(report.dir, src.canonicalize().unwrap());
    assert_eq!(report.tree, committed);
    // README, NEWS, new/dir/file.c, run.sh, link, latest.
    assert_eq!(report.written, 6, "{report:?}");
    // src/util.c, old/one.c, old/two/deep.c, old/two, old.
    assert_eq!(report.removed, 5, "{report:?}");
    assert_eq!(report.made_dirs, 2, "{report:?}");
    assert_eq!(report.already, 0);
    assert!(report.kept.is_empty(), "{report:?}");
    assert_eq!(
        s.tree(),
        committed,
        "the directory reads back as the commit"
    );
    assert_eq!(read(&src, "README"), "edited\n");
    assert_eq!(read(&src, "new/dir/file.c"), "new\n");
    assert!(!src.join("src/util.c").exists() && !src.join("old").exists());
    let mode = std::fs::metadata(src.join("run.sh")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o755, "{mode:o}");
    assert_eq!(
        std::fs::read_link(src.join("link")).unwrap(),
        Path::new("NEWS")
    );
    assert_eq!(
        std::fs::read_link(src.join("latest")).unwrap(),
        Path::new("src/main.c")
    );
    // Ignored files are untouched: same content, same inode.
    assert_eq!(read(&src, "main.o"), "ignored\n");
    assert_eq!(read(&src, "src/util.o"), "ignored too\n");
    assert_eq!(
        std::fs::metadata(src.join("src/util.o")).unwrap().ino(),
        ignored_inode
    );
    assert!(leftovers(&src).is_empty(), "{:?}", leftovers(&src));

    let log = s.manager.log(ROOT, "hello").unwrap();
    let entry = log.last().unwrap();
    assert_eq!(entry.op, OpKind::WriteBack);
    assert_eq!(entry.after, Some(committed));
    assert_eq!(entry.changes, 13);
    assert_eq!(
        entry.message.as_deref(),
        Some(&*src.canonicalize().unwrap().to_string_lossy())
    );
    // The workspace's base stays what it was opened over.
    let ws = s.manager.get(ROOT, "hello").unwrap();
    assert_ne!(ws.base_source_digest, committed);

    // Again: nothing left to do, and nothing logged.
    let again = s.write_back(ROOT, "hello").unwrap();
    assert_eq!((again.written, again.removed, again.made_dirs), (0, 0, 0));
    assert_eq!(s.manager.log(ROOT, "hello").unwrap().len(), log.len());
}

#[test]
fn a_path_changed_in_the_directory_since_the_open_refuses_the_whole_write_back() {
    if !privileged("a_path_changed_in_the_directory_since_the_open_refuses_the_whole_write_back") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    write(&view, "README", "edited\n");
    write(&view, "src/main.c", "int main(void) { return 1; }\n");
    s.commit(ROOT, "hello");
    // Someone edits the project meanwhile.
    write(&s.src(), "src/main.c", "int main(void) { return 2; }\n");
    let before = s.tree();

    let err = s.write_back(ROOT, "hello").unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Conflict, "{}", chain(&err));
    let message = chain(&err);
    assert!(
        message.contains("src/main.c (changed there since the workspace was opened)"),
        "{message}"
    );
    assert!(!message.contains("README"), "{message}");
    assert!(message.contains("nothing was written"), "{message}");
    assert_eq!(s.tree(), before, "nothing was written");
    assert_eq!(read(&s.src(), "README"), "readme\n");
    assert!(leftovers(&s.src()).is_empty());
    assert_eq!(
        s.manager.log(ROOT, "hello").unwrap().last().unwrap().op,
        OpKind::Commit
    );
}

#[test]
fn an_ignored_file_in_the_way_of_the_commit_is_a_conflict() {
    if !privileged("an_ignored_file_in_the_way_of_the_commit_is_a_conflict") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    // The workspace stops ignoring objects and commits one where the project
    // has an ignored file of that name.
    write(&view, ".wsignore", "");
    write(&view, "main.o", "committed object\n");
    write(&view, "README", "edited\n");
    s.commit(ROOT, "hello");

    let err = s.write_back(ROOT, "hello").unwrap_err();

    assert_eq!(err.kind(), ErrorKind::Conflict, "{}", chain(&err));
    assert!(
        chain(&err).contains("main.o (ignored there"),
        "{}",
        chain(&err)
    );
    assert_eq!(read(&s.src(), "main.o"), "ignored\n");
    assert_eq!(read(&s.src(), "README"), "readme\n");
    assert_eq!(read(&s.src(), ".wsignore"), "*.o\n");
}

#[test]
fn a_write_back_that_stopped_partway_is_finished_by_running_it_again() {
    if !privileged("a_write_back_that_stopped_partway_is_finished_by_running_it_again") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    write(&view, "README", "edited\n");
    write(&view, "NEWS", "news\n");
    write(&view, "src/main.c", "int main(void) { return 1; }\n");
    std::fs::remove_file(view.join("src/util.c")).unwrap();
    let committed = s.commit(ROOT, "hello");
    // What a write-back that stopped after two renames leaves.
    for path in ["README", "NEWS"] {
        std::fs::copy(view.join(path), s.src().join(path)).unwrap();
    }

    let report = s
        .write_back(ROOT, "hello")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));

    assert_eq!(report.already, 2, "{report:?}");
    assert_eq!((report.written, report.removed), (1, 1), "{report:?}");
    assert_eq!(s.tree(), committed);
}

#[test]
fn a_second_commit_is_written_back_over_the_first() {
    if !privileged("a_second_commit_is_written_back_over_the_first") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    write(&view, "README", "first\n");
    s.commit(ROOT, "hello");
    s.write_back(ROOT, "hello").unwrap();
    // The directory now holds the first commit's README, not the base's: the
    // second write-back must start from what the first one left.
    write(&view, "README", "second\n");
    let second = s.commit(ROOT, "hello");

    let report = s
        .write_back(ROOT, "hello")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));

    assert_eq!(report.written, 1);
    assert_eq!(read(&s.src(), "README"), "second\n");
    assert_eq!(s.tree(), second);
}

#[test]
fn files_and_directories_that_swap_places_are_written_back() {
    if !privileged("files_and_directories_that_swap_places_are_written_back") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    // A file becomes a directory, a directory a file, a symlink a file.
    std::fs::remove_file(view.join("README")).unwrap();
    write(&view, "README/inner", "inside\n");
    std::fs::remove_dir_all(view.join("src")).unwrap();
    write(&view, "src", "now a file\n");
    std::fs::remove_file(view.join("link")).unwrap();
    write(&view, "link", "no longer a link\n");
    let committed = s.commit(ROOT, "hello");

    // `src/` holds the ignored `src/util.o`: it cannot become a file.
    let err = s.write_back(ROOT, "hello").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{}", chain(&err));
    assert!(
        chain(&err).contains("src (a directory holding ignored entries"),
        "{}",
        chain(&err)
    );
    assert_eq!(read(&s.src(), "README"), "readme\n");

    // Without it in the way, the whole swap goes through.
    std::fs::remove_file(s.src().join("src/util.o")).unwrap();
    let report = s
        .write_back(ROOT, "hello")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(s.tree(), committed, "{report:?}");
    assert_eq!(read(&s.src(), "README/inner"), "inside\n");
    assert_eq!(read(&s.src(), "src"), "now a file\n");
    assert!(
        std::fs::symlink_metadata(s.src().join("link"))
            .unwrap()
            .is_file()
    );
    assert!(leftovers(&s.src()).is_empty());
}

#[test]
fn a_directory_the_commit_deletes_is_kept_while_it_holds_ignored_files() {
    if !privileged("a_directory_the_commit_deletes_is_kept_while_it_holds_ignored_files") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    std::fs::remove_dir_all(view.join("gone")).unwrap();
    s.commit(ROOT, "hello");

    let report = s
        .write_back(ROOT, "hello")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));

    assert_eq!(report.removed, 1, "{report:?}");
    assert_eq!(report.kept, ["gone"]);
    assert!(!s.src().join("gone/a.c").exists());
    assert_eq!(
        read(&s.src(), "gone/b.o"),
        "ignored in a directory the commit deletes\n"
    );
}

#[test]
fn a_caller_writes_back_as_themselves_and_root_keeps_the_owners() {
    if !privileged("a_caller_writes_back_as_themselves_and_root_keeps_the_owners") {
        return;
    }
    let s = Setup::new();
    std::fs::set_permissions(s.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let chown = |path: &Path, uid: u32| {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    };
    let view = s.open(NOBODY, "theirs");
    write(&view, "NEWS", "news\n");
    write(&view, "src/main.c", "int main(void) { return 1; }\n");
    s.commit(NOBODY, "theirs");

    // Root owns the source: its caller may not write there, and nothing changes.
    let before = s.tree();
    let err = s.write_back(NOBODY, "theirs").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{}", chain(&err));
    assert!(
        chain(&err).contains("before it replaced or removed anything"),
        "{}",
        chain(&err)
    );
    assert_eq!(s.tree(), before);
    assert!(leftovers(&s.src()).is_empty());

    // Theirs: written, and what is written is theirs.
    for dir in [s.src(), s.src().join("src")] {
        chown(&dir, NOBODY.uid);
    }
    s.write_back(NOBODY, "theirs")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    for path in ["NEWS", "src/main.c"] {
        let meta = std::fs::metadata(s.src().join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (NOBODY.uid, NOBODY.gid), "{path}");
    }

    // Root writing into their directory leaves their files theirs, not root's.
    let view = s.open(ROOT, "roots");
    write(&view, "ROOTNEWS", "by root\n");
    write(&view, "README", "edited by root\n");
    s.commit(ROOT, "roots");
    chown(&s.src().join("README"), NOBODY.uid);
    s.write_back(ROOT, "roots")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    for path in ["ROOTNEWS", "README"] {
        let meta = std::fs::metadata(s.src().join(path)).unwrap();
        assert_eq!(meta.uid(), NOBODY.uid, "{path}");
    }
}

#[test]
fn a_write_back_that_fails_removes_its_temporary_files_and_a_rerun_finishes_it() {
    if !privileged("a_write_back_that_fails_removes_its_temporary_files_and_a_rerun_finishes_it") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    write(&view, "README", "edited\n");
    write(&view, "a-dir/x", "x\n");
    write(&view, "b-fails", "b\n");
    write(&view, "c-last", "c\n");
    let committed = s.commit(ROOT, "hello");
    let before = s.tree();

    // Writing b-fails under its temporary name fails: nothing was replaced,
    // and what was staged and made is gone again.
    fail::cfg("write-back-stage", "return(b-fails)").unwrap();
    let err = s.write_back(ROOT, "hello").unwrap_err();
    fail::remove("write-back-stage");
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{}", chain(&err));
    let message = chain(&err);
    assert!(
        message.contains("before it replaced or removed anything there"),
        "{message}"
    );
    assert!(message.contains("could not write"), "{message}");
    assert!(message.contains("b-fails"), "{message}");
    assert!(leftovers(&s.src()).is_empty(), "{:?}", leftovers(&s.src()));
    assert!(
        !s.src().join("a-dir").exists(),
        "the directory made for a-dir/x is removed"
    );
    assert_eq!(s.tree(), before);

    // Renaming it into place fails: what came before it in tree order is in
    // place, the rest is not, and no temporary file is left.
    fail::cfg("write-back-rename", "return(b-fails)").unwrap();
    let err = s.write_back(ROOT, "hello").unwrap_err();
    fail::remove("write-back-rename");
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{}", chain(&err));
    let message = chain(&err);
    assert!(message.contains("after 2 of its 4 changes"), "{message}");
    assert!(
        message.contains("run the same command again to finish it"),
        "{message}"
    );
    assert!(message.contains("rename into place"), "{message}");
    assert!(leftovers(&s.src()).is_empty(), "{:?}", leftovers(&s.src()));
    assert_eq!(read(&s.src(), "README"), "edited\n");
    assert_eq!(read(&s.src(), "a-dir/x"), "x\n");
    assert!(!s.src().join("b-fails").exists() && !s.src().join("c-last").exists());

    // The same command again finishes it.
    let report = s
        .write_back(ROOT, "hello")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!((report.already, report.written), (2, 2), "{report:?}");
    assert_eq!(s.tree(), committed);
}

#[test]
fn what_a_killed_write_back_left_is_never_recorded_and_the_rerun_removes_it() {
    if !privileged("what_a_killed_write_back_left_is_never_recorded") {
        return;
    }
    let s = Setup::new();
    let view = s.open(ROOT, "hello");
    write(&view, "README", "edited\n");
    write(&view, "src/util.c", "changed\n");
    let committed = s.commit(ROOT, "hello");
    // A write-back killed after staging leaves its temporary files beside
    // their destinations (a SIGKILL runs no cleanup).
    let before = s.tree();
    write(&s.src(), ".wsd-writeback-killed-0", "edited\n");
    write(&s.src(), "src/.wsd-writeback-killed-1", "half");
    assert_eq!(s.tree(), before, "capture never records the daemon's files");
    let report = s
        .write_back(ROOT, "hello")
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(report.written, 2, "{report:?}");
    assert_eq!(s.tree(), committed);
    // A killed write-back stages only where it writes, and so does its rerun,
    // which sweeps every directory it writes in.
    assert!(leftovers(&s.src()).is_empty(), "{:?}", leftovers(&s.src()));
}
