//! The remote cache end to end: two (or three) state directories stand for
//! machines that share a BuildGrid, each with its own `wsd`, driven by the real
//! `ws`. A build fails in CI (machine A, whose user configuration pushes); a
//! developer (machine B, pull only) opens the element and continues from that
//! failed buildtree, whose mtimes are an hour ahead of B's clock; an artifact
//! built on A is reused on a third machine with nothing run. Compiler runs are
//! counted by the `cc` wrapper of `build.rs`.

use ws_tests::Ws;

use super::build::{
    BREAK, compiled, edit, in_project, json, project, report, run_artifact, workspace_path,
};

/// A machine's user configuration naming the remote at `url`.
fn remote(url: &str, push: bool) -> String {
    format!("[[remote]]\nurl = \"{url}\"\npush = {push}\n")
}

#[test]
fn a_build_that_failed_in_ci_is_continued_on_another_machine_and_reused_on_a_third() {
    let test = "a_build_that_failed_in_ci_is_continued_on_another_machine_and_reused_on_a_third";
    if !ws_tests::privileged(test) {
        return;
    }
    let Some(url) = ws_tests::reapi_server(test) else {
        return;
    };
    // Every run makes new keys: a comment unique to it in main.c.
    let nonce = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    // What machine A's failed build made is an hour ahead, as a build on a
    // machine whose clock is ahead of B's leaves it.
    let build = "make || { find . -newer Makefile -exec touch -h -d '1 hour' {} +; exit 1; }";
    let copy = || {
        let dir = project(Some(build));
        edit(dir.path(), "hello/src/greeting.c", BREAK.0, BREAK.1);
        edit(
            dir.path(),
            "hello/src/main.c",
            "#include",
            &format!("/* {nonce} */\n#include"),
        );
        dir
    };

    // Machine A (CI): the build fails late and is pushed, the failure too.
    let ci = Ws::new();
    ci.configure(&remote(&url, true));
    let ci_project = copy();
    let failed = in_project(&ci, ci_project.path(), &["build", "hello", "--json"]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(
        compiled(&failed).0,
        vec!["src/greeting.c".to_owned(), "src/main.c".to_owned()]
    );
    let failed_hello = report(&failed, "hello");
    assert_eq!(failed_hello["result"], "failed");
    assert_eq!(
        failed_hello["pushed_to"],
        serde_json::json!([url]),
        "{failed_hello}"
    );
    assert!(failed.stderr.contains("pushed to"), "{}", failed.stderr);

    // Machine B: `ws open` pulls the failed buildtree and continues from it.
    let dev = Ws::new();
    dev.configure(&remote(&url, false));
    let dev_project = copy();
    let p = dev_project.path();
    let opened = json(&in_project(&dev, p, &["open", "hello", "--json"]).stdout);
    assert_eq!(opened["continues_failed_build"], true, "{opened}");
    assert_eq!(opened["cache_key"], failed_hello["cache_key"], "{opened}");
    let view = workspace_path(&dev, "hello");

    // The fix compiles what the failed build did not finish; main.o, made on
    // A "in the future", is kept.
    edit(&view, "src/greeting.c", BREAK.1, BREAK.0);
    let fixed = in_project(&dev, p, &["build", "hello", "--json"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    assert_eq!(
        compiled(&fixed),
        (
            vec![
                "src/farewell.c".into(),
                "src/greeting.c".into(),
                "src/names.c".into()
            ],
            1
        ),
        "{}",
        fixed.stderr
    );
    let fixed_hello = report(&fixed, "hello");
    assert_eq!(fixed_hello["incremental"], true);
    assert_eq!(
        fixed_hello["pushed_to"],
        serde_json::json!([]),
        "B only pulls"
    );
    // An edit of main.c on B is newer than A's main.o: compiled, and only it.
    edit(&view, "src/main.c", "%s, %s!", "%s, %s, from B!");
    let edited = in_project(&dev, p, &["build", "hello", "--json"]);
    assert_eq!(edited.code, 0, "{}", edited.stderr);
    assert_eq!(
        compiled(&edited),
        (vec!["src/main.c".into()], 1),
        "{}",
        edited.stderr
    );
    // B may not push: its remote does not take pushes.
    let refused = in_project(&dev, p, &["push", "hello"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("push = true"), "{}", refused.stderr);

    // A, fixed the same way, builds and pushes; a third machine then reuses
    // every artifact with nothing run, under the same keys.
    edit(ci_project.path(), "hello/src/greeting.c", BREAK.1, BREAK.0);
    let built = in_project(&ci, ci_project.path(), &["build", "hello", "--json"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let third = Ws::new();
    third.configure(&remote(&url, false));
    let third_project = copy();
    edit(
        third_project.path(),
        "hello/src/greeting.c",
        BREAK.1,
        BREAK.0,
    );
    let reused = in_project(&third, third_project.path(), &["build", "hello", "--json"]);
    assert_eq!(reused.code, 0, "{}", reused.stderr);
    assert_eq!(compiled(&reused), (vec![], 0), "{}", reused.stderr);
    for element in ["base", "counter", "hello"] {
        let (a, c) = (report(&built, element), report(&reused, element));
        assert_eq!(c["commands_run"], 0, "{c}");
        assert_eq!(c["cache_key"], a["cache_key"]);
        assert_eq!(c["artifact"], a["artifact"]);
    }
    // Imports are their sources, which are here: only hello comes from A.
    let hello = report(&reused, "hello");
    assert_eq!(hello["result"], "cached", "{hello}");
    assert_eq!(hello["pulled_from"], url.as_str(), "{hello}");
    assert!(
        reused
            .stderr
            .contains("▶ remote: fetching the successful build under"),
        "{}",
        reused.stderr
    );
    let artifact = report(&reused, "hello")["artifact"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        run_artifact(&third, &artifact).starts_with("Hello, world!"),
        "the pulled artifact runs"
    );

    // `ws pull` by key, on a fourth machine with no project: the failed build
    // A pushed first, buildtree and all.
    let fourth = Ws::new();
    fourth.configure(&remote(&url, false));
    let key = failed_hello["cache_key"].as_str().unwrap();
    let pulled = json(&fourth.ok(&["pull", key, "--json"]));
    assert_eq!(pulled["outcome"], "failed", "{pulled}");
    assert_eq!(pulled["element"], "hello");
    assert_eq!(pulled["buildtree"], failed_hello["buildtree"], "{pulled}");
    assert!(pulled["moved_blobs"].as_u64().unwrap() > 0, "{pulled}");
}

#[test]
fn an_unreachable_remote_is_a_warning_and_the_build_goes_on() {
    let test = "an_unreachable_remote_is_a_warning_and_the_build_goes_on";
    if !ws_tests::privileged(test) {
        return;
    }
    let ws = Ws::new();
    // Nothing listens on port 1.
    ws.configure("[[remote]]\nurl = \"grpc://127.0.0.1:1\"\npush = true\n");
    let project = project(None);
    let built = in_project(&ws, project.path(), &["build", "hello", "--json"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    assert!(
        built
            .stderr
            .contains("ws: warning: hello: remote cache grpc://127.0.0.1:1: "),
        "{}",
        built.stderr
    );
    assert_eq!(report(&built, "hello")["result"], "built");
    let pull = in_project(&ws, project.path(), &["pull", "hello"]);
    assert_eq!(pull.code, 1, "{}", pull.stderr);
    assert!(
        pull.stderr.contains("grpc://127.0.0.1:1") && pull.stderr.contains("GetCapabilities"),
        "{}",
        pull.stderr
    );
    // `--no-remote` asks nobody.
    let quiet = in_project(&ws, project.path(), &["build", "hello", "--no-remote"]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("warning"), "{}", quiet.stderr);
}

#[test]
fn a_corrupt_blob_on_the_server_is_a_miss_and_the_build_runs_here() {
    let test = "a_corrupt_blob_on_the_server_is_a_miss_and_the_build_runs_here";
    if !ws_tests::privileged(test) {
        return;
    }
    let Some(url) = ws_tests::reapi_server(test) else {
        return;
    };
    let Ok(cas) = std::env::var("WS_TEST_REAPI_CAS") else {
        assert_ne!(
            std::env::var("WS_TEST_REQUIRE_REAPI").as_deref(),
            Ok("1"),
            "{test} needs WS_TEST_REAPI_CAS"
        );
        return;
    };
    // A greeting unique to this run: its object files are blobs no other
    // build shares.
    let nonce = format!("{}", std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    let copy = || {
        let dir = project(None);
        edit(
            dir.path(),
            "hello/src/greeting.c",
            "return \"Hello\";",
            &format!("return \"Hello {nonce}\";"),
        );
        dir
    };
    let ci = Ws::new();
    ci.configure(&remote(&url, true));
    let ci_project = copy();
    let built = in_project(&ci, ci_project.path(), &["build", "hello", "--json"]);
    assert_eq!(built.code, 0, "{}", built.stderr);

    // Damage the server's copy of the program: its name in the CAS is the
    // SHA-256 of the binary the build installed.
    let artifact = report(&built, "hello")["artifact"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = tempfile::tempdir().unwrap();
    let checkout = out.path().join("artifact");
    ci.ok(&["store", "checkout", &artifact, checkout.to_str().unwrap()]);
    let binary = std::fs::read(checkout.join("usr/bin/hello")).unwrap();
    let sha = sha256_hex(&binary);
    let object = std::path::Path::new(&cas).join(&sha[..2]).join(&sha[2..]);
    assert!(
        object.exists(),
        "{} is not in the server's CAS",
        object.display()
    );
    std::fs::write(&object, b"not the program").unwrap();

    let dev = Ws::new();
    dev.configure(&remote(&url, false));
    let dev_project = copy();
    let rebuilt = in_project(&dev, dev_project.path(), &["build", "hello", "--json"]);
    assert_eq!(rebuilt.code, 0, "{}", rebuilt.stderr);
    let hello = report(&rebuilt, "hello");
    assert_eq!(
        hello["result"], "built",
        "a damaged entry is never used: {hello}"
    );
    assert!(
        compiled(&rebuilt).1 == 1,
        "it was built here: {}",
        rebuilt.stderr
    );
    assert!(
        rebuilt.stderr.contains("ws: warning: hello: remote cache ")
            && rebuilt.stderr.contains("corrupt"),
        "{}",
        rebuilt.stderr
    );
    let artifact = hello["artifact"].as_str().unwrap().to_owned();
    assert!(run_artifact(&dev, &artifact).starts_with(&format!("Hello {nonce}")));
}

/// SHA-256 in hex, by `sha256sum` (the tests crate has no hasher of its own).
fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}
