//! Tidy checks that keep the prose true: every Rust file starts with a `//!` summary,
//! docs/ARCHITECTURE.md has a section for every workspace member, and no path-taking
//! call appears in the libraries and the daemon outside the allow-list
//! (`tidy_paths`).

use std::path::{Path, PathBuf};

mod tidy_paths;

fn repo() -> PathBuf {
    manifest_dir().parent().unwrap().to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for member in ["treediff", "overlay", "daemon", "ctl", "tests"] {
        rust_files(&repo().join(member), &mut files);
    }
    assert!(files.len() > 20, "found only {files:?}");
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "files without a //! summary: {undocumented:?}"
    );
}

#[test]
fn architecture_doc_names_every_crate() {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    let doc = std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).unwrap();
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        assert!(
            doc.contains(&format!("### `{member}/`")),
            "docs/ARCHITECTURE.md has no section for {member}/"
        );
    }
}

/// The package's directory, as cargo gives it when it runs the test: not the
/// one compiled in, which a build reused from a clone at another path (CI's
/// fixed target directory) would get wrong.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
