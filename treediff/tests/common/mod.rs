//! Test fixtures shared by treediff's integration tests: a store in a temp dir and a
//! builder that writes trees straight into it (no capture involved).
#![allow(dead_code)]

use std::collections::BTreeMap;

use treediff::{Digest, Dir, Entry, Mtime, Node, Props, Store};

/// A store in a fresh temp dir, removed when dropped.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        TestStore { dir, store }
    }
}

#[derive(Clone, Debug)]
enum Spec {
    File {
        content: Vec<u8>,
        executable: bool,
        props: Option<Props>,
    },
    Symlink {
        target: String,
        props: Option<Props>,
    },
    Dir {
        props: Option<Props>,
    },
}

/// Builds a tree from paths: `TreeBuilder::new().file("a/b.txt", "x").build(&store)`.
/// Parent directories are implied; `dir()` adds an empty one.
#[derive(Clone, Debug, Default)]
pub struct TreeBuilder {
    entries: BTreeMap<String, Spec>,
    root_props: Option<Props>,
}

impl TreeBuilder {
    pub fn new() -> TreeBuilder {
        TreeBuilder::default()
    }

    pub fn file(mut self, path: &str, content: impl AsRef<[u8]>) -> Self {
        let spec = Spec::File {
            content: content.as_ref().to_vec(),
            executable: false,
            props: None,
        };
        self.entries.insert(path.to_owned(), spec);
        self
    }

    pub fn exec(mut self, path: &str, content: impl AsRef<[u8]>) -> Self {
        let spec = Spec::File {
            content: content.as_ref().to_vec(),
            executable: true,
            props: None,
        };
        self.entries.insert(path.to_owned(), spec);
        self
    }

    /// A buildtree file with mode and mtime.
    pub fn file_with_props(
        mut self,
        path: &str,
        content: impl AsRef<[u8]>,
        mode: u32,
        mtime: i64,
    ) -> Self {
        let props = Some(Props {
            mtime: Some(Mtime {
                seconds: mtime,
                nanos: 0,
            }),
            unix_mode: Some(mode),
        });
        let spec = Spec::File {
            content: content.as_ref().to_vec(),
            executable: mode & 0o100 != 0,
            props,
        };
        self.entries.insert(path.to_owned(), spec);
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.insert(
            path.to_owned(),
            Spec::Symlink {
                target: target.to_owned(),
                props: None,
            },
        );
        self
    }

    pub fn dir(mut self, path: &str) -> Self {
        self.entries
            .insert(path.to_owned(), Spec::Dir { props: None });
        self
    }

    pub fn remove(mut self, path: &str) -> Self {
        self.entries.remove(path);
        self
    }

    pub fn root_props(mut self, props: Props) -> Self {
        self.root_props = Some(props);
        self
    }

    /// Writes the blobs and directory nodes in one committed transaction.
    pub fn build(&self, store: &Store) -> Digest {
        let txn = store.begin().unwrap();
        let root = self.build_dir("", &txn, self.root_props);
        txn.commit().unwrap();
        root
    }

    fn build_dir(
        &self,
        prefix: &str,
        txn: &treediff::StoreTxn<'_>,
        props: Option<Props>,
    ) -> Digest {
        let mut children: BTreeMap<String, Option<Spec>> = BTreeMap::new();
        for (path, spec) in &self.entries {
            let Some(rest) = (if prefix.is_empty() {
                Some(path.as_str())
            } else {
                path.strip_prefix(&format!("{prefix}/"))
            }) else {
                continue;
            };
            match rest.split_once('/') {
                None => {
                    children.insert(rest.to_owned(), Some(spec.clone()));
                }
                Some((first, _)) => {
                    children.entry(first.to_owned()).or_insert(None);
                }
            }
        }
        let mut entries = Vec::new();
        for (name, spec) in children {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let (node, props) = match spec {
                Some(Spec::File {
                    content,
                    executable,
                    props,
                }) => (
                    Node::File {
                        digest: txn.put(&content).unwrap(),
                        executable,
                    },
                    props,
                ),
                Some(Spec::Symlink { target, props }) => (Node::Symlink { target }, props),
                Some(Spec::Dir { props }) => (
                    Node::Dir {
                        digest: self.build_dir(&path, txn, props),
                    },
                    None,
                ),
                None => (
                    Node::Dir {
                        digest: self.build_dir(&path, txn, None),
                    },
                    None,
                ),
            };
            entries.push(Entry { name, node, props });
        }
        Dir::new(entries, props).unwrap().write(txn).unwrap()
    }
}

/// Whether a test that needs root may run. Without root it is skipped with a note,
/// unless `WS_TEST_REQUIRE_PRIVILEGED=1` (CI sets it), where it fails instead: a
/// privileged test must never pass by not running.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("WS_TEST_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{test} needs root, and WS_TEST_REQUIRE_PRIVILEGED=1 forbids skipping it");
    }
    eprintln!("skipping {test}: it needs root");
    false
}

/// A tmpfs of `size` (e.g. "2m") mounted on a fresh temp dir, unmounted when dropped.
pub struct SmallTmpfs {
    pub dir: tempfile::TempDir,
}

impl SmallTmpfs {
    pub fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs failed");
        SmallTmpfs { dir }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
