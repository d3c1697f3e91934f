//! Applying edits to trees on a real store: round trips with diff (by hand and by
//! proptest), canonical digests, reuse of untouched subtrees, and refused edits.

mod common;

use std::collections::BTreeMap;

use common::{TestStore, TreeBuilder};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use treediff::diff::changes;
use treediff::{
    ApplyError, Change, ChangeKind, Digest, Dir, Edit, Entry, Mtime, Node, Props, Store, apply,
};

fn file(name: &str, content: &[u8], executable: bool) -> Entry {
    Entry {
        name: name.to_owned(),
        node: Node::File {
            digest: Digest::of(content),
            executable,
        },
        props: None,
    }
}

fn props(mode: u32, mtime: i64) -> Props {
    Props {
        mtime: Some(Mtime {
            seconds: mtime,
            nanos: 0,
        }),
        unix_mode: Some(mode),
    }
}

/// Applies `edits` to `base` in a transaction that is committed on success.
fn apply_edits(
    store: &Store,
    base: Digest,
    edits: impl IntoIterator<Item = Edit>,
) -> Result<Digest, ApplyError> {
    let txn = store.begin().unwrap();
    let digest = apply(&txn, base, edits)?;
    txn.commit().unwrap();
    Ok(digest)
}

/// apply(a, diff(a, b)) must be b, in either edit order.
fn assert_round_trip(store: &Store, a: Digest, b: Digest) {
    let found = changes(store, a, b).unwrap();
    let edits: Vec<Edit> = found.iter().map(Edit::from).collect();
    assert_eq!(
        apply_edits(store, a, edits.clone()).unwrap(),
        b,
        "{found:#?}"
    );
    assert_eq!(
        apply_edits(store, a, edits.into_iter().rev()).unwrap(),
        b,
        "reversed edits"
    );
}

fn empty_tree(store: &Store) -> Digest {
    TreeBuilder::new().build(store)
}

#[test]
fn applying_a_diff_gives_the_new_tree() {
    let t = TestStore::new();
    let a = TreeBuilder::new()
        .file("same.txt", "x")
        .file("mod.txt", "one\n")
        .file("exec.sh", "echo\n")
        .symlink("link", "t1")
        .file("gone.txt", "bye")
        .file("dir2file/x", "1")
        .file("dir2file/y/z", "2")
        .file("file2dir", "f")
        .file("file2link", "f")
        .file("olddir/a", "1")
        .file("sub/deep/f", "1")
        .file("sub/deep/gone", "1")
        .dir("sub/empty")
        .build(&t.store);
    let b = TreeBuilder::new()
        .file("same.txt", "x")
        .file("mod.txt", "two\n")
        .exec("exec.sh", "echo\n")
        .symlink("link", "t2")
        .file("new.txt", "hi")
        .file("dir2file", "now a file")
        .file("file2dir/inner", "i")
        .symlink("file2link", "f")
        .file("newdir/a/b", "1")
        .file("sub/deep/f", "2")
        .file("sub/empty/now", "full")
        .build(&t.store);
    assert_round_trip(&t.store, a, b);
    assert_round_trip(&t.store, b, a);
    let empty = empty_tree(&t.store);
    assert_round_trip(&t.store, empty, b);
    assert_round_trip(&t.store, a, empty);
}

#[test]
fn applying_a_diff_of_buildtree_props_restores_them() {
    let t = TestStore::new();
    let a = TreeBuilder::new()
        .file_with_props("obj/a.o", "a", 0o644, 10)
        .file_with_props("obj/b.o", "b", 0o644, 10)
        .root_props(props(0o755, 1))
        .build(&t.store);
    let b = TreeBuilder::new()
        .file_with_props("obj/a.o", "a", 0o600, 10)
        .file_with_props("obj/b.o", "b2", 0o644, 20)
        .root_props(props(0o700, 2))
        .build(&t.store);
    assert_round_trip(&t.store, a, b);
    assert_round_trip(&t.store, b, a);

    // A directory whose own props change, with and without content changes under it.
    let txn = t.store.begin().unwrap();
    let blob = txn.put(b"1").unwrap();
    let f = Entry {
        name: "f".into(),
        node: Node::File {
            digest: blob,
            executable: false,
        },
        props: None,
    };
    let d1 = Dir::new(vec![f.clone()], Some(props(0o755, 1)))
        .unwrap()
        .write(&txn)
        .unwrap();
    let d2 = Dir::new(vec![f], Some(props(0o700, 5)))
        .unwrap()
        .write(&txn)
        .unwrap();
    let d3 = Dir::new(Vec::new(), Some(props(0o700, 6)))
        .unwrap()
        .write(&txn)
        .unwrap();
    let dir = |name: &str, digest| Entry {
        name: name.into(),
        node: Node::Dir { digest },
        props: None,
    };
    let a = Dir::new(vec![dir("d", d1), dir("e", d1)], None)
        .unwrap()
        .write(&txn)
        .unwrap();
    let b = Dir::new(vec![dir("d", d2), dir("e", d3)], None)
        .unwrap()
        .write(&txn)
        .unwrap();
    txn.commit().unwrap();
    let found = changes(&t.store, a, b).unwrap();
    assert_eq!(
        found.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
        ["d", "e", "e/f"]
    );
    assert_eq!(
        found[0].to_edit(),
        Edit::SetDirProps {
            path: "d".into(),
            props: Some(props(0o700, 5)),
        }
    );
    assert_round_trip(&t.store, a, b);
    assert_round_trip(&t.store, b, a);
}

#[test]
fn no_edits_return_the_base_unread() {
    let t = TestStore::new();
    // Not a tree at all: it is never read.
    let bogus = Digest::of(b"not a directory node");
    assert_eq!(apply_edits(&t.store, bogus, Vec::new()).unwrap(), bogus);
    let a = TreeBuilder::new().file("a/b", "1").build(&t.store);
    assert!(changes(&t.store, a, a).unwrap().is_empty());
    assert_eq!(apply_edits(&t.store, a, Vec::new()).unwrap(), a);
}

#[test]
fn puts_on_an_empty_tree_build_the_same_digest_as_from_scratch() {
    let t = TestStore::new();
    let built = TreeBuilder::new()
        .file("z/last", "z")
        .file("a/b/c/d", "deep")
        .exec("a/run", "#!")
        .symlink("a/b/link", "../run")
        .file("m", "m")
        .build(&t.store);
    let edits = vec![
        Edit::Put {
            path: "m".into(),
            entry: file("m", b"m", false),
        },
        Edit::Put {
            path: "a/b/link".into(),
            entry: Entry {
                name: "link".into(),
                node: Node::Symlink {
                    target: "../run".into(),
                },
                props: None,
            },
        },
        Edit::Put {
            path: "z/last".into(),
            entry: file("last", b"z", false),
        },
        Edit::Put {
            path: "a/run".into(),
            entry: file("run", b"#!", true),
        },
        Edit::Put {
            path: "a/b/c/d".into(),
            entry: file("d", b"deep", false),
        },
    ];
    let empty = empty_tree(&t.store);
    assert_eq!(apply_edits(&t.store, empty, edits.clone()).unwrap(), built);
    assert_eq!(
        apply_edits(&t.store, empty, edits.into_iter().rev()).unwrap(),
        built
    );
}

#[test]
fn untouched_subtrees_are_reused_without_being_read() {
    let t = TestStore::new();
    let before = TreeBuilder::new()
        .file("big/one/x", "1")
        .file("big/two/y", "2")
        .file("src/main.c", "int main;\n");
    let a = before.build(&t.store);
    let expected = before.clone().file("src/main.c", "int main(){}\n");
    // The expected digest, from a store that keeps everything.
    let other = TestStore::new();
    let b = expected.build(&other.store);

    // Remove the node of the untouched subtree `big`: apply must not need it.
    let big = match Dir::read(&t.store, a, "").unwrap().get("big").unwrap().node {
        Node::Dir { digest } => digest,
        _ => unreachable!(),
    };
    std::fs::remove_file(t.store.blob_path(&big)).unwrap();
    let edit = Edit::Put {
        path: "src/main.c".into(),
        entry: file("main.c", b"int main(){}\n", false),
    };
    assert_eq!(apply_edits(&t.store, a, [edit]).unwrap(), b);
}

fn apply_err(store: &Store, base: Digest, edits: Vec<Edit>) -> ApplyError {
    apply_edits(store, base, edits).unwrap_err()
}

fn put(path: &str) -> Edit {
    let name = path.rsplit('/').next().unwrap();
    Edit::Put {
        path: path.into(),
        entry: file(name, b"x", false),
    }
}

fn delete(path: &str) -> Edit {
    Edit::Delete { path: path.into() }
}

#[test]
fn refused_edits_name_their_path() {
    let t = TestStore::new();
    let base = TreeBuilder::new()
        .file("dir/file", "f")
        .symlink("dir/link", "file")
        .file("top", "t")
        .build(&t.store);

    let err = apply_err(&t.store, base, vec![put("dir/file/under")]);
    assert!(
        matches!(&err, ApplyError::NotADirectory { path, parent, kind: "file" }
            if path == "dir/file/under" && parent == "dir/file"),
        "{err:?}"
    );
    assert!(err.to_string().contains("dir/file/under"), "{err}");
    let err = apply_err(&t.store, base, vec![put("dir/link/a/b")]);
    assert!(
        matches!(
            &err,
            ApplyError::NotADirectory {
                kind: "symlink",
                ..
            }
        ),
        "{err:?}"
    );
    let err = apply_err(&t.store, base, vec![delete("top/x")]);
    assert!(
        matches!(&err, ApplyError::NotADirectory { path, .. } if path == "top/x"),
        "{err:?}"
    );

    for missing in ["nope", "dir/nope", "new/deeper/nope"] {
        let err = apply_err(&t.store, base, vec![delete(missing)]);
        assert!(
            matches!(&err, ApplyError::NotFound { path, .. } if path == missing),
            "{err:?}"
        );
        assert!(err.to_string().contains(missing), "{err}");
    }

    let err = apply_err(&t.store, base, vec![put("a/b"), delete("top"), put("a/b")]);
    assert!(
        matches!(&err, ApplyError::Duplicate { path } if path == "a/b"),
        "{err:?}"
    );
    let err = apply_err(&t.store, base, vec![delete("top"), put("top")]);
    assert!(
        matches!(&err, ApplyError::Duplicate { path } if path == "top"),
        "{err:?}"
    );
    assert!(err.to_string().contains("top"), "{err}");

    // An edit under a path that another edit replaces or deletes.
    let err = apply_err(&t.store, base, vec![put("dir/file/x"), delete("dir")]);
    assert!(
        matches!(&err, ApplyError::Conflict { path, ancestor }
            if path == "dir/file/x" && ancestor == "dir"),
        "{err:?}"
    );

    for bad in [
        "",
        "/top",
        "top/",
        "a//b",
        "./top",
        "a/./b",
        "../x",
        "dir/../top",
        "a/..",
    ] {
        let name = bad.rsplit('/').next().unwrap();
        let edit = Edit::Put {
            path: bad.into(),
            entry: file(if name.is_empty() { "x" } else { name }, b"x", false),
        };
        let err = apply_err(&t.store, base, vec![edit]);
        assert!(
            matches!(&err, ApplyError::InvalidPath { path, .. } if path == bad),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        let err = apply_err(&t.store, base, vec![delete(bad)]);
        assert!(
            matches!(&err, ApplyError::InvalidPath { .. }),
            "{bad:?}: {err:?}"
        );
    }

    let err = apply_err(
        &t.store,
        base,
        vec![Edit::Put {
            path: "dir/a".into(),
            entry: file("b", b"x", false),
        }],
    );
    assert!(
        matches!(&err, ApplyError::NameMismatch { path, name } if path == "dir/a" && name == "b"),
        "{err:?}"
    );
    let err = apply_err(
        &t.store,
        base,
        vec![Edit::Put {
            path: "dir/l".into(),
            entry: Entry {
                name: "l".into(),
                node: Node::Symlink {
                    target: String::new(),
                },
                props: None,
            },
        }],
    );
    assert!(
        matches!(&err, ApplyError::InvalidEntry { path, .. } if path == "dir/l"),
        "{err:?}"
    );

    let set_props = |path: &str| Edit::SetDirProps {
        path: path.into(),
        props: Some(props(0o700, 1)),
    };
    let err = apply_err(&t.store, base, vec![set_props("top")]);
    assert!(
        matches!(&err, ApplyError::NotADirectory { path, .. } if path == "top"),
        "{err:?}"
    );
    let err = apply_err(&t.store, base, vec![set_props("nodir")]);
    assert!(
        matches!(&err, ApplyError::NotFound { path, .. } if path == "nodir"),
        "{err:?}"
    );
    let err = apply_err(
        &t.store,
        base,
        vec![Edit::SetDirProps {
            path: "dir".into(),
            props: Some(Props::default()),
        }],
    );
    assert!(
        matches!(&err, ApplyError::InvalidEntry { path, .. } if path == "dir"),
        "{err:?}"
    );

    // A file directly in a directory MAX_DEPTH levels down is fine; one deeper is not.
    let max = treediff::tree::MAX_DEPTH;
    let deepest = vec!["d"; max + 1].join("/");
    let empty = empty_tree(&t.store);
    let deep_tree = apply_edits(&t.store, empty, vec![put(&deepest)]).unwrap();
    let too_deep = vec!["d"; max + 2].join("/");
    let err = apply_err(&t.store, base, vec![put(&too_deep)]);
    assert!(
        matches!(&err, ApplyError::TooDeep { path } if *path == too_deep),
        "{err:?}"
    );
    let err = apply_err(
        &t.store,
        base,
        vec![Edit::SetDirProps {
            path: deepest.clone(),
            props: None,
        }],
    );
    assert!(matches!(&err, ApplyError::TooDeep { .. }), "{err:?}");
    // And diff reads as deep as apply writes.
    let found = changes(&t.store, empty, deep_tree).unwrap();
    assert_eq!(found.len(), 1);
    let edited = apply_edits(
        &t.store,
        deep_tree,
        vec![Edit::Put {
            path: deepest.clone(),
            entry: file("d", b"new", false),
        }],
    )
    .unwrap();
    let found = changes(&t.store, deep_tree, edited).unwrap();
    assert_eq!(found[0].path, deepest);
    assert_eq!(
        apply_edits(&t.store, deep_tree, found.iter().map(Edit::from)).unwrap(),
        edited
    );
}

#[test]
fn set_dir_props_keeps_the_contents_and_other_edits() {
    let t = TestStore::new();
    let base = TreeBuilder::new()
        .file("d/keep", "k")
        .file("d/old", "o")
        .root_props(props(0o755, 1))
        .build(&t.store);
    let expected = TreeBuilder::new()
        .file("d/keep", "k")
        .file("d/new", "n")
        .root_props(props(0o700, 9))
        .build(&t.store);
    let edits = vec![
        Edit::SetDirProps {
            path: String::new(),
            props: Some(props(0o700, 9)),
        },
        delete("d/old"),
        Edit::Put {
            path: "d/new".into(),
            entry: file("new", b"n", false),
        },
    ];
    assert_eq!(apply_edits(&t.store, base, edits).unwrap(), expected);
    // Without a root edit, the root keeps its props.
    let kept = apply_edits(&t.store, base, [delete("d/old")]).unwrap();
    assert_eq!(
        Dir::read(&t.store, kept, "").unwrap().props,
        Some(props(0o755, 1))
    );
}

// ---- proptest: random trees, random mutations ----

/// A model tree: what TreeBuilder cannot express (props on any directory).
#[derive(Clone, Debug)]
enum M {
    File {
        content: u8,
        exec: bool,
        props: Option<u8>,
    },
    Link {
        target: u8,
        props: Option<u8>,
    },
    Dir {
        props: Option<u8>,
        children: BTreeMap<String, M>,
    },
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(Vec<String>, M),
    Remove(Vec<String>),
    DirProps(Vec<String>, Option<u8>),
}

const PROPS: [Props; 3] = [
    Props {
        mtime: Some(Mtime {
            seconds: 1,
            nanos: 0,
        }),
        unix_mode: Some(0o644),
    },
    Props {
        mtime: Some(Mtime {
            seconds: 2,
            nanos: 5,
        }),
        unix_mode: None,
    },
    Props {
        mtime: None,
        unix_mode: Some(0o600),
    },
];

fn model_props(index: Option<u8>) -> Option<Props> {
    index.map(|i| PROPS[usize::from(i) % PROPS.len()])
}

fn leaf() -> impl Strategy<Value = M> {
    let props = proptest::option::of(0..3u8);
    prop_oneof![
        4 => (0..3u8, any::<bool>(), props.clone())
            .prop_map(|(content, exec, props)| M::File { content, exec, props }),
        2 => (0..2u8, props.clone()).prop_map(|(target, props)| M::Link { target, props }),
        1 => props.prop_map(|props| M::Dir { props, children: BTreeMap::new() }),
    ]
}

fn path() -> impl Strategy<Value = Vec<String>> {
    // A small alphabet, so that paths collide and types change.
    proptest::collection::vec(prop_oneof!["a", "b", "c"].prop_map(String::from), 1..4)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (path(), leaf()).prop_map(|(p, m)| Mutation::Set(p, m)),
        2 => path().prop_map(Mutation::Remove),
        1 => (proptest::collection::vec(prop_oneof!["a", "b", "c"].prop_map(String::from), 0..3),
              proptest::option::of(0..3u8))
            .prop_map(|(p, props)| Mutation::DirProps(p, props)),
    ]
}

fn children(m: &mut M) -> &mut BTreeMap<String, M> {
    match m {
        M::Dir { children, .. } => children,
        _ => unreachable!(),
    }
}

impl M {
    fn root() -> M {
        M::Dir {
            props: None,
            children: BTreeMap::new(),
        }
    }

    /// Sets `path` to `node`, turning non-directories on the way into directories.
    fn set(&mut self, path: &[String], node: M) {
        let mut dir = self;
        for name in &path[..path.len() - 1] {
            let child = children(dir).entry(name.clone()).or_insert_with(M::root);
            if !matches!(child, M::Dir { .. }) {
                *child = M::root();
            }
            dir = child;
        }
        children(dir).insert(path[path.len() - 1].clone(), node);
    }

    fn find(&mut self, path: &[String]) -> Option<&mut M> {
        let mut node = self;
        for name in path {
            match node {
                M::Dir { children, .. } => node = children.get_mut(name)?,
                _ => return None,
            }
        }
        Some(node)
    }

    fn mutate(&mut self, mutation: &Mutation) {
        match mutation {
            Mutation::Set(path, node) => self.set(path, node.clone()),
            Mutation::Remove(path) => {
                let (name, parent) = path.split_last().unwrap();
                if let Some(M::Dir { children, .. }) = self.find(parent) {
                    children.remove(name);
                }
            }
            Mutation::DirProps(path, new) => {
                if let Some(M::Dir { props, .. }) = self.find(path) {
                    *props = *new;
                }
            }
        }
    }

    fn write(&self, txn: &treediff::StoreTxn<'_>, name: &str) -> Entry {
        let (node, props) = match self {
            M::File {
                content,
                exec,
                props,
            } => {
                let bytes = vec![b'a' + content; usize::from(*content) + 1];
                let digest = txn.put(&bytes).unwrap();
                let node = Node::File {
                    digest,
                    executable: *exec,
                };
                (node, model_props(*props))
            }
            M::Link { target, props } => {
                let node = Node::Symlink {
                    target: format!("target{target}"),
                };
                (node, model_props(*props))
            }
            M::Dir { props, children } => {
                let entries = children.iter().map(|(n, c)| c.write(txn, n)).collect();
                let dir = Dir::new(entries, model_props(*props)).unwrap();
                (
                    Node::Dir {
                        digest: dir.write(txn).unwrap(),
                    },
                    None,
                )
            }
        };
        Entry {
            name: name.to_owned(),
            node,
            props,
        }
    }

    fn build(&self, store: &Store) -> Digest {
        let txn = store.begin().unwrap();
        let Node::Dir { digest } = self.write(&txn, "").node else {
            unreachable!()
        };
        txn.commit().unwrap();
        digest
    }
}

fn components(path: &str) -> Vec<&str> {
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    }
}

/// Checks the changes' order and that nothing is reported under a directory that is
/// reported whole.
fn check_changes(found: &[Change]) -> Result<(), TestCaseError> {
    for pair in found.windows(2) {
        prop_assert!(
            components(&pair[0].path) < components(&pair[1].path),
            "not in tree order: {:?} then {:?}",
            pair[0].path,
            pair[1].path
        );
    }
    for whole in found.iter().filter(|c| c.kind != ChangeKind::ModeChanged) {
        let inner = found
            .iter()
            .find(|c| c.path.starts_with(&format!("{}/", whole.path)));
        prop_assert!(inner.is_none(), "{inner:?} is under {whole:?}");
    }
    Ok(())
}

#[test]
fn apply_of_diff_round_trips_on_random_trees() {
    let t = TestStore::new();
    let store = &t.store;
    let case = (
        proptest::collection::vec((path(), leaf()), 0..12),
        proptest::option::of(0..3u8),
        proptest::collection::vec(mutation(), 0..8),
    );
    let mut runner = TestRunner::new(Config::with_cases(128));
    runner
        .run(&case, |(inserts, root_props, mutations)| {
            let mut model = M::root();
            if let M::Dir { props, .. } = &mut model {
                *props = root_props;
            }
            for (path, node) in inserts {
                model.set(&path, node);
            }
            let a = model.build(store);
            for mutation in &mutations {
                model.mutate(mutation);
            }
            let b = model.build(store);

            let stats = treediff::diff(store, a, a, &mut |c| panic!("{c:?}")).unwrap();
            prop_assert_eq!(stats.dirs_read, 0);
            let forward = changes(store, a, b).unwrap();
            prop_assert_eq!(forward.is_empty(), a == b);
            check_changes(&forward)?;
            let edits: Vec<Edit> = forward.iter().map(Edit::from).collect();
            prop_assert_eq!(apply_edits(store, a, edits.clone()).unwrap(), b);
            prop_assert_eq!(apply_edits(store, a, edits.into_iter().rev()).unwrap(), b);

            let backward = changes(store, b, a).unwrap();
            check_changes(&backward)?;
            prop_assert_eq!(backward.len(), forward.len());
            prop_assert_eq!(
                apply_edits(store, b, backward.iter().map(Edit::from)).unwrap(),
                a
            );
            Ok(())
        })
        .unwrap();
}
