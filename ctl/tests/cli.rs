//! The `ws` binary answers `--version` and `--help`. (Also makes `cargo test` build
//! the binary that the end-to-end tests in `tests/` drive.)

use std::process::Command;

fn ws(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ws"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_names_the_program_and_version() {
    let out = ws(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("ws {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_store_commands() {
    let out = ws(&["store", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["import", "checkout", "diff", "fsck"] {
        assert!(help.contains(command), "{help}");
    }
}
