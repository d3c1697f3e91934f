//! The `wsd` binary answers `--version`. (Also makes `cargo test` build it.)

#[test]
fn version_names_the_program_and_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("wsd {}\n", env!("CARGO_PKG_VERSION"))
    );
}
