//! `ws store`: import, diff, checkout and fsck through the daemon, as a user
//! scripts them.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ws_tests::{Ws, examples, write};

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The README's quick start: import the example, change a copy, diff the two.
#[test]
fn quick_start_import_change_diff() {
    let ws = Ws::new();
    let work = tempfile::tempdir().unwrap();
    let a = ws.import(&examples().join("hello"));
    let copy = work.path().join("hello");
    copy_tree(&examples().join("hello"), &copy);
    write(
        &copy,
        "src/greeting.c",
        "#include \"greeting.h\"\n\nconst char *greeting(void)\n{\n    return \"Hello again\";\n}\n",
    );
    write(&copy, "NEWS", "Greets again.\n");
    std::fs::remove_file(copy.join("src/greeting.h")).unwrap();
    write(&copy, "src/hello.o", "ignored by .wsignore");
    let b = ws.import(&copy);
    assert_ne!(a, b);

    let name_status = ws.ok(&["store", "diff", "--name-status", &a, &b]);
    assert_eq!(
        name_status,
        "A\tNEWS\nM\tsrc/greeting.c\nD\tsrc/greeting.h\n"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ws.ok(&["store", "diff", "--json", &a, &b])).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"path": "NEWS", "change": "added"},
            {"path": "src/greeting.c", "change": "modified"},
            {"path": "src/greeting.h", "change": "deleted"},
        ])
    );

    let patch = ws.ok(&["store", "diff", &a, &b]);
    assert!(
        patch
            .contains("-    return \"Hello from a ws workspace\";\n+    return \"Hello again\";\n"),
        "{patch}"
    );
    assert_eq!(ws.ok(&["store", "diff", &a, &a]), "");
}

#[test]
fn checkout_in_every_mode_reimports_to_the_same_digest() {
    let ws = Ws::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "a/b/c.txt", "c\n");
    write(src.path(), "run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        src.path().join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("a/b/c.txt", src.path().join("link")).unwrap();
    std::fs::create_dir(src.path().join("empty")).unwrap();
    let digest = ws.import(src.path());
    let out = tempfile::tempdir().unwrap();
    for mode in ["hardlink", "reflink", "copy"] {
        let target = out.path().join(mode);
        let stats = ws.ok(&[
            "store",
            "checkout",
            &digest,
            target.to_str().unwrap(),
            "--mode",
            mode,
            "--json",
        ]);
        let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats["files"], 2, "{mode}: {stats}");
        assert_eq!(ws.import(&target), digest, "{mode}");
    }
}

#[test]
fn checkout_refuses_a_non_empty_target() {
    let ws = Ws::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "f", "x");
    let digest = ws.import(src.path());
    let target = tempfile::tempdir().unwrap();
    write(target.path(), "precious", "keep me");
    let run = ws.run(&[
        "store",
        "checkout",
        &digest,
        target.path().to_str().unwrap(),
    ]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(target.path().to_str().unwrap()),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(target.path().join("precious")).unwrap(),
        "keep me"
    );
}

#[test]
fn second_import_of_an_unchanged_tree_hashes_nothing() {
    let ws = Ws::new();
    let src = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write(src.path(), &format!("d{}/f{i}", i % 5), &format!("{i}\n"));
    }
    // The stat cache trusts only files older than the capture's start minus 2 s.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let dir = src.path().to_str().unwrap();
    let first: serde_json::Value =
        serde_json::from_str(&ws.ok(&["store", "import", "--json", dir])).unwrap();
    let second: serde_json::Value =
        serde_json::from_str(&ws.ok(&["store", "import", "--json", dir])).unwrap();
    assert_eq!(first["digest"], second["digest"]);
    assert_eq!(first["stats"]["hashed_files"], 50);
    assert_eq!(second["stats"]["hashed_files"], 0);
    assert_eq!(second["stats"]["cache_hits"], 50);
}

#[test]
fn fsck_names_a_damaged_blob_and_exits_3() {
    let ws = Ws::new();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "data.txt", "precious data\n");
    ws.import(src.path());
    let run = ws.run(&["store", "fsck"]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let blob = blake3::hash(b"precious data\n").to_hex().to_string();
    let path = ws
        .state
        .path()
        .join("cas/blobs")
        .join(&blob[..2])
        .join(&blob);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, "precious dat4\n").unwrap();
    let run = ws.run(&["store", "fsck"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains(&blob), "{}", run.stdout);
    assert!(
        run.stderr.contains("fsck found 1 problem"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let ws = Ws::new();
    let run = ws.run(&["store", "diff", "nonsense", "also-nonsense"]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "ws: error: invalid digest \"nonsense\": no '/' between hash and size; expected <64 lowercase hex digits>/<size in bytes>\n"
    );

    let missing = format!("{}/42", "ab".repeat(32));
    let run = ws.run(&[
        "store",
        "checkout",
        &missing,
        ws.state.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains(&missing) && run.stderr.contains("missing"),
        "{}",
        run.stderr
    );

    // The daemon reads through the descriptor ws passes; errors name the directory.
    let fifo = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(&fifo.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let run = ws.run(&["store", "import", fifo.path().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    let named = format!("{}/pipe: it is a FIFO", fifo.path().display());
    assert!(run.stderr.contains(&named), "{}", run.stderr);
    assert!(!run.stderr.contains("/proc/self"), "{}", run.stderr);

    let run = ws.run(&["store", "import", "/nonexistent/dir"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("/nonexistent/dir") && run.stderr.contains("No such file"),
        "{}",
        run.stderr
    );
}

/// Another user, through a daemon root started: checks out only trees they
/// imported themselves (root's import of the same files is not theirs until
/// they import them), only into their own directories, and not as hard links
/// to the store's files.
#[test]
fn another_user_checks_out_only_into_their_own_directories() {
    use std::os::unix::process::CommandExt;
    if !ws_tests::privileged("another_user_checks_out_only_into_their_own_directories") {
        return;
    }
    let ws = Ws::new();
    std::fs::set_permissions(ws.state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = ws.import(&examples().join("hello"));
    let nobody = |args: &[&str]| -> ws_tests::Run {
        ws.command()
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
            .into()
    };
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mine = scratch.path().join("mine");
    let run = nobody(&["store", "checkout", &tree, mine.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("not one you imported"),
        "{}",
        run.stderr
    );
    assert!(!mine.exists(), "the directory ws made for it is gone again");
    // The same files, imported by the user: the same tree, theirs now.
    let copy = scratch.path().join("hello");
    copy_tree(&examples().join("hello"), &copy);
    let run = nobody(&["store", "import", copy.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), tree);
    // Root's empty directory.
    let roots = scratch.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = nobody(&["store", "checkout", &tree, roots.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("does not belong to you"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(&roots).unwrap().count(), 0);

    let run = nobody(&[
        "store",
        "checkout",
        &tree,
        mine.to_str().unwrap(),
        "--mode",
        "hardlink",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("hardlink"), "{}", run.stderr);
    assert!(!mine.exists(), "the directory ws made for it is gone again");

    let run = nobody(&["store", "checkout", &tree, mine.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let file = mine.join("src/greeting.c");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (65534, 65534),
        "the files are the caller's"
    );
}
