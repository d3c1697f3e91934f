//! Tree diffs on a real store: change kinds, tree order, Merkle pruning, `expand`,
//! and the unified text diffs of `textdiff`.

mod common;

use std::collections::BTreeMap;

use common::{TestStore, TreeBuilder};
use treediff::diff::{self, changes};
use treediff::textdiff::{self, unified_diff};
use treediff::{
    Change, ChangeKind, DiffError, Digest, Dir, Entry, Mtime, Node, Props, Store, TextDiffError,
    TreeError,
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

fn symlink(name: &str, target: &str) -> Entry {
    Entry {
        name: name.to_owned(),
        node: Node::Symlink {
            target: target.to_owned(),
        },
        props: None,
    }
}

fn dir_entry(name: &str, digest: Digest) -> Entry {
    Entry {
        name: name.to_owned(),
        node: Node::Dir { digest },
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

/// The digest of the subtree at `path` (a directory) in `root`.
fn subtree(store: &Store, root: Digest, path: &str) -> Digest {
    let mut digest = root;
    for name in path.split('/') {
        let dir = Dir::read(store, digest, "").unwrap();
        match dir.get(name).unwrap().node {
            Node::Dir { digest: d } => digest = d,
            _ => panic!("{path} is not a directory"),
        }
    }
    digest
}

fn kinds(changes: &[Change]) -> Vec<(&str, ChangeKind)> {
    changes.iter().map(|c| (c.path.as_str(), c.kind)).collect()
}

#[test]
fn every_change_kind_in_tree_order() {
    let t = TestStore::new();
    let a = TreeBuilder::new()
        .file("same.txt", "x")
        .file("mod.txt", "one\n")
        .file("exec.sh", "echo\n")
        .file("both.sh", "a")
        .symlink("link", "t1")
        .file("gone.txt", "bye")
        .file("dir2file/x", "1")
        .file("dir2file/y/z", "2")
        .file("file2dir", "f")
        .file("file2link", "f")
        .file("olddir/a", "1")
        .file("olddir/b/c", "2")
        .file("sub/deep/f", "1")
        .file("sub/a.txt", "same")
        .file("a/x", "1")
        .file("a.b", "1")
        .build(&t.store);
    let b = TreeBuilder::new()
        .file("same.txt", "x")
        .file("mod.txt", "two\n")
        .exec("exec.sh", "echo\n")
        .exec("both.sh", "b")
        .symlink("link", "t2")
        .file("new.txt", "hi")
        .file("dir2file", "now a file")
        .file("file2dir/inner", "i")
        .symlink("file2link", "f")
        .file("newdir/a/b", "1")
        .file("sub/deep/f", "2")
        .file("sub/a.txt", "same")
        .file("a/x", "2")
        .file("a.b", "2")
        .build(&t.store);

    let found = changes(&t.store, a, b).unwrap();
    use ChangeKind::*;
    assert_eq!(
        kinds(&found),
        vec![
            ("a/x", Modified),
            ("a.b", Modified),
            ("both.sh", Modified),
            ("dir2file", TypeChanged),
            ("exec.sh", ModeChanged),
            ("file2dir", TypeChanged),
            ("file2link", TypeChanged),
            ("gone.txt", Deleted),
            ("link", Modified),
            ("mod.txt", Modified),
            ("new.txt", Added),
            ("newdir", Added),
            ("olddir", Deleted),
            ("sub/deep/f", Modified),
        ]
    );
    let by_path: BTreeMap<&str, &Change> = found.iter().map(|c| (c.path.as_str(), c)).collect();

    let c = by_path["both.sh"];
    assert_eq!(c.old, Some(file("both.sh", b"a", false)));
    assert_eq!(c.new, Some(file("both.sh", b"b", true)));
    let c = by_path["exec.sh"];
    assert_eq!(c.old, Some(file("exec.sh", b"echo\n", false)));
    assert_eq!(c.new, Some(file("exec.sh", b"echo\n", true)));
    let c = by_path["link"];
    assert_eq!(c.old, Some(symlink("link", "t1")));
    assert_eq!(c.new, Some(symlink("link", "t2")));
    let c = by_path["gone.txt"];
    assert_eq!(
        (c.old.clone(), c.new.clone()),
        (Some(file("gone.txt", b"bye", false)), None)
    );
    let c = by_path["new.txt"];
    assert_eq!(
        (c.old.clone(), c.new.clone()),
        (None, Some(file("new.txt", b"hi", false)))
    );
    let c = by_path["sub/deep/f"];
    assert_eq!(c.old, Some(file("f", b"1", false)));
    assert_eq!(c.new, Some(file("f", b"2", false)));
    let c = by_path["file2link"];
    assert_eq!(c.old, Some(file("file2link", b"f", false)));
    assert_eq!(c.new, Some(symlink("file2link", "f")));

    // A directory replaced by a file, and the reverse: one change each, carrying the
    // directory's entry, and nothing reported inside.
    let c = by_path["dir2file"];
    assert_eq!(
        c.old,
        Some(dir_entry("dir2file", subtree(&t.store, a, "dir2file")))
    );
    assert_eq!(c.new, Some(file("dir2file", b"now a file", false)));
    let c = by_path["file2dir"];
    assert_eq!(c.old, Some(file("file2dir", b"f", false)));
    assert_eq!(
        c.new,
        Some(dir_entry("file2dir", subtree(&t.store, b, "file2dir")))
    );
    // Directories on one side only: one change with the Dir entry, not read.
    let c = by_path["newdir"];
    assert_eq!(
        c.new,
        Some(dir_entry("newdir", subtree(&t.store, b, "newdir")))
    );
    assert_eq!(c.old, None);
    let c = by_path["olddir"];
    assert_eq!(
        c.old,
        Some(dir_entry("olddir", subtree(&t.store, a, "olddir")))
    );
    assert_eq!(c.new, None);

    // The reverse diff mirrors every change.
    let back = changes(&t.store, b, a).unwrap();
    assert_eq!(back.len(), found.len());
    for (f, r) in found.iter().zip(&back) {
        assert_eq!(f.path, r.path);
        assert_eq!((&f.old, &f.new), (&r.new, &r.old));
        let mirrored = match f.kind {
            Added => Deleted,
            Deleted => Added,
            other => other,
        };
        assert_eq!(r.kind, mirrored, "{}", f.path);
    }
}

#[test]
fn identical_trees_have_no_changes_and_are_not_read() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("a/b/c", "1").build(&t.store);
    let stats = diff::diff(&t.store, a, a, &mut |c| panic!("unexpected change {c:?}")).unwrap();
    assert_eq!(stats, diff::DiffStats::default());
}

#[test]
fn buildtree_props_changes_are_mode_changes() {
    let t = TestStore::new();
    let a = TreeBuilder::new()
        .file_with_props("mtime.o", "obj", 0o644, 100)
        .file_with_props("mode.o", "obj", 0o644, 100)
        .file_with_props("exec", "bin", 0o644, 100)
        .file_with_props("content.o", "old", 0o644, 100)
        .root_props(props(0o755, 1))
        .build(&t.store);
    let b = TreeBuilder::new()
        .file_with_props("mtime.o", "obj", 0o644, 200)
        .file_with_props("mode.o", "obj", 0o600, 100)
        .file_with_props("exec", "bin", 0o755, 100)
        .file_with_props("content.o", "new", 0o644, 200)
        .root_props(props(0o755, 2))
        .build(&t.store);
    let found = changes(&t.store, a, b).unwrap();
    use ChangeKind::*;
    assert_eq!(
        kinds(&found),
        vec![
            ("", ModeChanged),
            ("content.o", Modified),
            ("exec", ModeChanged),
            ("mode.o", ModeChanged),
            ("mtime.o", ModeChanged),
        ]
    );
    // The root's own change carries its properties.
    assert_eq!(found[0].old.as_ref().unwrap().props, Some(props(0o755, 1)));
    assert_eq!(found[0].new.as_ref().unwrap().props, Some(props(0o755, 2)));
    assert_eq!(found[0].new.as_ref().unwrap().node, Node::Dir { digest: b });
    assert_eq!(
        found[2].new.as_ref().unwrap().props,
        Some(props(0o755, 100))
    );
}

/// Writes one directory node in its own committed transaction.
fn write_dir(store: &Store, entries: Vec<Entry>, props: Option<Props>) -> Digest {
    let txn = store.begin().unwrap();
    let digest = Dir::new(entries, props).unwrap().write(&txn).unwrap();
    txn.commit().unwrap();
    digest
}

fn put_blob(store: &Store, content: &[u8]) {
    let txn = store.begin().unwrap();
    txn.put(content).unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_directory_whose_own_props_change_is_reported_before_its_contents() {
    let t = TestStore::new();
    put_blob(&t.store, b"1");
    put_blob(&t.store, b"2");
    let d1 = write_dir(
        &t.store,
        vec![file("f", b"1", false)],
        Some(props(0o755, 10)),
    );
    let d2 = write_dir(
        &t.store,
        vec![file("f", b"2", false)],
        Some(props(0o700, 20)),
    );
    // Same contents, other props: the directory alone changes.
    let d3 = write_dir(
        &t.store,
        vec![file("f", b"1", false)],
        Some(props(0o700, 20)),
    );
    let a = write_dir(&t.store, vec![dir_entry("d", d1), dir_entry("e", d1)], None);
    let b = write_dir(&t.store, vec![dir_entry("d", d2), dir_entry("e", d3)], None);
    let found = changes(&t.store, a, b).unwrap();
    use ChangeKind::*;
    assert_eq!(
        kinds(&found),
        vec![("d", ModeChanged), ("d/f", Modified), ("e", ModeChanged)]
    );
    let d = &found[0];
    assert_eq!(
        d.old,
        Some(Entry {
            name: "d".into(),
            node: Node::Dir { digest: d1 },
            props: Some(props(0o755, 10)),
        })
    );
    assert_eq!(
        d.new,
        Some(Entry {
            name: "d".into(),
            node: Node::Dir { digest: d2 },
            props: Some(props(0o700, 20)),
        })
    );
}

/// A tree of files and directories, built in memory and written bottom-up (fast for
/// large trees, unlike building them path by path).
#[derive(Default)]
struct Big {
    children: BTreeMap<String, BigNode>,
}

enum BigNode {
    File(Vec<u8>),
    Dir(Big),
}

impl Big {
    fn file(&mut self, path: &str, content: &[u8]) {
        let mut dir = self;
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap();
        for part in parts {
            let node = dir
                .children
                .entry(part.to_owned())
                .or_insert_with(|| BigNode::Dir(Big::default()));
            dir = match node {
                BigNode::Dir(d) => d,
                BigNode::File(_) => panic!("{part} is a file"),
            };
        }
        dir.children
            .insert(name.to_owned(), BigNode::File(content.to_vec()));
    }

    fn build(&self, store: &Store) -> Digest {
        let txn = store.begin().unwrap();
        let digest = self.write(&txn);
        txn.commit().unwrap();
        digest
    }

    fn write(&self, txn: &treediff::StoreTxn<'_>) -> Digest {
        let entries = self
            .children
            .iter()
            .map(|(name, node)| match node {
                BigNode::File(content) => Entry {
                    name: name.clone(),
                    node: Node::File {
                        digest: txn.put(content).unwrap(),
                        executable: false,
                    },
                    props: None,
                },
                BigNode::Dir(d) => dir_entry(name, d.write(txn)),
            })
            .collect();
        Dir::new(entries, None).unwrap().write(txn).unwrap()
    }
}

#[test]
fn one_deep_change_among_2000_directories_reads_only_its_path() {
    let t = TestStore::new();
    let deep = "m0/n0/o0/p1/p2/p3/p4/p5/p6/p7/p8/p9/p10/leaf.txt";
    let tree = |leaf: &[u8]| {
        let mut big = Big::default();
        for m in 0..20 {
            for n in 0..10 {
                for o in 0..10 {
                    // Distinct names make every directory node distinct.
                    big.file(&format!("m{m}/n{n}/o{o}/f{m}_{n}_{o}"), b"x\n");
                }
            }
        }
        big.file(deep, leaf);
        big.build(&t.store)
    };
    let a = tree(b"before\n");
    let b = tree(b"after\n");
    let mut seen = Vec::new();
    let stats = diff::diff(&t.store, a, b, &mut |c| {
        seen.push(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(kinds(&seen), vec![(deep, ChangeKind::Modified)]);
    let depth = deep.split('/').count();
    // The root and the 13 directories above the leaf, on each side.
    assert_eq!(stats.dirs_read, 2 * depth);
    assert!(stats.dirs_read <= 2 * depth + 2);
    assert_eq!(stats.changes, 1);
}

#[test]
fn the_same_change_costs_the_same_in_small_and_large_trees() {
    let t = TestStore::new();
    let tree = |files: usize, edited: bool| {
        let mut big = Big::default();
        for i in 0..files {
            big.file(&format!("bulk/k{}/f{i}", i / 100), b"x\n");
        }
        for i in 0..10 {
            let content = if edited { "edited\n" } else { "original\n" };
            big.file(&format!("p{i}/q/file.txt"), content.as_bytes());
        }
        big.build(&t.store)
    };
    let mut reads = Vec::new();
    for files in [1_000, 20_000] {
        let a = tree(files, false);
        let b = tree(files, true);
        let stats = diff::diff(&t.store, a, b, &mut |_| Ok(())).unwrap();
        assert_eq!(stats.changes, 10);
        reads.push(stats.dirs_read);
    }
    // Root, then p<i> and p<i>/q for each of the 10 changes, on both sides.
    assert_eq!(reads, vec![2 * (1 + 10 * 2); 2]);
}

#[test]
fn too_deep_trees_are_refused_with_the_path() {
    let t = TestStore::new();
    let chain = |leaf: &[u8]| {
        let path: Vec<String> = (0..300).map(|i| format!("d{i}")).collect();
        let mut big = Big::default();
        big.file(&format!("{}/leaf", path.join("/")), leaf);
        big.build(&t.store)
    };
    let a = chain(b"1");
    let b = chain(b"2");
    let err = changes(&t.store, a, b).unwrap_err();
    let DiffError::Tree(tree_err) = &err else {
        panic!("{err:?}");
    };
    let TreeError::TooDeep { path } = tree_err.as_ref() else {
        panic!("{err:?}");
    };
    assert_eq!(path.split('/').count(), treediff::tree::MAX_DEPTH + 1);
    assert!(path.starts_with("d0/d1/d2/"), "{path}");
    assert!(err.to_string().contains(path.as_str()));
}

#[test]
fn a_missing_directory_node_names_its_digest_and_path() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("x/y/f", "1").build(&t.store);
    let b = TreeBuilder::new().file("x/y/f", "2").build(&t.store);
    let y = subtree(&t.store, b, "x/y");
    std::fs::remove_file(t.store.blob_path(&y)).unwrap();
    let err = changes(&t.store, a, b).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("x/y") && text.contains(&y.to_string()),
        "{text}"
    );
}

#[test]
fn the_visitor_can_stop_the_walk() {
    let t = TestStore::new();
    let a = TreeBuilder::new().build(&t.store);
    let b = TreeBuilder::new()
        .file("a", "1")
        .file("b", "2")
        .build(&t.store);
    let mut seen = 0;
    let err = diff::diff(&t.store, a, b, &mut |_| {
        seen += 1;
        Err(DiffError::Stopped)
    })
    .unwrap_err();
    assert!(matches!(err, DiffError::Stopped));
    assert_eq!(seen, 1);
}

fn expanded(store: &Store, change: &Change) -> Vec<Change> {
    let mut out = Vec::new();
    diff::expand(store, change, &mut |c| {
        out.push(c);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn expand_lists_every_entry_under_an_added_or_deleted_directory() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("keep", "k").build(&t.store);
    let b = TreeBuilder::new()
        .file("keep", "k")
        .file("newdir/a", "1")
        .file("newdir/b/c", "2")
        .symlink("newdir/b/d", "../a")
        .dir("newdir/e")
        .exec("newdir/f", "#!/bin/sh\n")
        .file("newdir/g/h/i", "3")
        .build(&t.store);
    let found = changes(&t.store, a, b).unwrap();
    assert_eq!(kinds(&found), vec![("newdir", ChangeKind::Added)]);
    let leaves = expanded(&t.store, &found[0]);
    use ChangeKind::*;
    assert_eq!(
        kinds(&leaves),
        vec![
            ("newdir/a", Added),
            ("newdir/b/c", Added),
            ("newdir/b/d", Added),
            ("newdir/e", Added),
            ("newdir/f", Added),
            ("newdir/g/h/i", Added),
        ]
    );
    assert_eq!(leaves[2].new, Some(symlink("d", "../a")));
    assert_eq!(leaves[4].new, Some(file("f", b"#!/bin/sh\n", true)));
    assert_eq!(leaves[3].new, Some(dir_entry("e", Dir::default().digest())));
    assert!(leaves.iter().all(|c| c.old.is_none()));

    // And the other way round.
    let back = changes(&t.store, b, a).unwrap();
    let leaves = expanded(&t.store, &back[0]);
    assert_eq!(leaves.len(), 6);
    assert!(leaves.iter().all(|c| c.kind == Deleted && c.new.is_none()));
}

#[test]
fn expand_splits_a_type_change_with_a_directory_side() {
    let t = TestStore::new();
    let a = TreeBuilder::new()
        .file("x/one", "1")
        .file("x/sub/two", "2")
        .symlink("y", "target")
        .build(&t.store);
    let b = TreeBuilder::new()
        .file("x", "now a file")
        .file("y/inner", "i")
        .build(&t.store);
    let found = changes(&t.store, a, b).unwrap();
    use ChangeKind::*;
    let all: Vec<Change> = found.iter().flat_map(|c| expanded(&t.store, c)).collect();
    assert_eq!(
        kinds(&all),
        vec![
            ("x", Added),
            ("x/one", Deleted),
            ("x/sub/two", Deleted),
            ("y", Deleted),
            ("y/inner", Added),
        ]
    );
    assert_eq!(all[0].new, Some(file("x", b"now a file", false)));
    assert_eq!(all[3].old, Some(symlink("y", "target")));

    // A change without a directory side passes through as is.
    let plain = TreeBuilder::new().file("f", "1").build(&t.store);
    let plain2 = TreeBuilder::new().file("f", "2").build(&t.store);
    let change = changes(&t.store, plain, plain2).unwrap().remove(0);
    assert_eq!(expanded(&t.store, &change), vec![change]);
}

// ---- unified text diffs ----

/// The one change between two trees, rendered.
fn render(store: &Store, a: &TreeBuilder, b: &TreeBuilder, context: usize) -> String {
    let found = changes(store, a.build(store), b.build(store)).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    unified_diff(store, &found[0], context).unwrap()
}

#[test]
fn modified_text_file_renders_one_hunk() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("src/f.txt", "a\nb\nc\nd\ne\nf\ng\nh\n");
    let b = TreeBuilder::new().file("src/f.txt", "a\nb\nc\nD\ne\nf\ng\nh\n");
    assert_eq!(
        render(&t.store, &a, &b, 2),
        "diff --git a/src/f.txt b/src/f.txt\n\
         --- a/src/f.txt\n\
         +++ b/src/f.txt\n\
         @@ -2,5 +2,5 @@\n \
         b\n \
         c\n\
         -d\n\
         +D\n \
         e\n \
         f\n"
    );
}

#[test]
fn distant_changes_render_separate_hunks() {
    let t = TestStore::new();
    let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
    let new: String = (1..=20)
        .map(|i| match i {
            2 => "two\n".to_owned(),
            19 => "nineteen\n".to_owned(),
            i => format!("{i}\n"),
        })
        .collect();
    let a = TreeBuilder::new().file("n", &old);
    let b = TreeBuilder::new().file("n", &new);
    assert_eq!(
        render(&t.store, &a, &b, 1),
        "diff --git a/n b/n\n--- a/n\n+++ b/n\n\
         @@ -1,3 +1,3 @@\n 1\n-2\n+two\n 3\n\
         @@ -18,3 +18,3 @@\n 18\n-19\n+nineteen\n 20\n"
    );
}

#[test]
fn added_and_deleted_files_render_against_dev_null() {
    let t = TestStore::new();
    let empty = TreeBuilder::new();
    let added = TreeBuilder::new().file("new.txt", "one\ntwo\n");
    assert_eq!(
        render(&t.store, &empty, &added, 3),
        "diff --git a/new.txt b/new.txt\n\
         new file mode 100644\n\
         --- /dev/null\n\
         +++ b/new.txt\n\
         @@ -0,0 +1,2 @@\n\
         +one\n\
         +two\n"
    );
    let script = TreeBuilder::new().exec("run.sh", "echo hi\n");
    assert_eq!(
        render(&t.store, &script, &empty, 3),
        "diff --git a/run.sh b/run.sh\n\
         deleted file mode 100755\n\
         --- a/run.sh\n\
         +++ /dev/null\n\
         @@ -1 +0,0 @@\n\
         -echo hi\n"
    );
    // An empty file has no hunk, as in git.
    let empty_file = TreeBuilder::new().file("empty", "");
    assert_eq!(
        render(&t.store, &empty, &empty_file, 3),
        "diff --git a/empty b/empty\nnew file mode 100644\n"
    );
}

#[test]
fn binary_content_is_not_diffed() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("img.bin", b"\x89PNG\0\x01");
    let b = TreeBuilder::new().file("img.bin", b"\x89PNG\0\x02");
    assert_eq!(
        render(&t.store, &a, &b, 3),
        "diff --git a/img.bin b/img.bin\nBinary files a/img.bin and b/img.bin differ\n"
    );
    // Not UTF-8, without a NUL.
    let text = TreeBuilder::new().file("data", "text\n");
    let latin1 = TreeBuilder::new().file("data", b"caf\xe9\n");
    assert_eq!(
        render(&t.store, &text, &latin1, 3),
        "diff --git a/data b/data\nBinary files a/data and b/data differ\n"
    );
    let empty = TreeBuilder::new();
    assert_eq!(
        render(&t.store, &empty, &a, 3),
        "diff --git a/img.bin b/img.bin\n\
         new file mode 100644\n\
         Binary files /dev/null and b/img.bin differ\n"
    );
}

#[test]
fn mode_changes_render_mode_lines() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("s.sh", "echo\n");
    let b = TreeBuilder::new().exec("s.sh", "echo\n");
    assert_eq!(
        render(&t.store, &a, &b, 3),
        "diff --git a/s.sh b/s.sh\nold mode 100644\nnew mode 100755\n"
    );
    let c = TreeBuilder::new().exec("s.sh", "echo hi\n");
    assert_eq!(
        render(&t.store, &a, &c, 3),
        "diff --git a/s.sh b/s.sh\n\
         old mode 100644\n\
         new mode 100755\n\
         --- a/s.sh\n\
         +++ b/s.sh\n\
         @@ -1 +1 @@\n\
         -echo\n\
         +echo hi\n"
    );
    // Buildtree modes show their permission bits; an mtime alone shows nothing.
    let p1 = TreeBuilder::new().file_with_props("o", "x", 0o644, 1);
    let p2 = TreeBuilder::new().file_with_props("o", "x", 0o600, 1);
    let p3 = TreeBuilder::new().file_with_props("o", "x", 0o644, 2);
    assert_eq!(
        render(&t.store, &p1, &p2, 3),
        "diff --git a/o b/o\nold mode 100644\nnew mode 100600\n"
    );
    assert_eq!(render(&t.store, &p1, &p3, 3), "");
}

#[test]
fn a_missing_trailing_newline_is_marked() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("f", "a\nb");
    let b = TreeBuilder::new().file("f", "a\nc");
    assert_eq!(
        render(&t.store, &a, &b, 3),
        "diff --git a/f b/f\n--- a/f\n+++ b/f\n\
         @@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n"
    );
    // Adding the newline is a change of the last line.
    let c = TreeBuilder::new().file("f", "a\nb\n");
    assert_eq!(
        render(&t.store, &a, &c, 3),
        "diff --git a/f b/f\n--- a/f\n+++ b/f\n\
         @@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"
    );
}

#[test]
fn symlinks_render_their_targets() {
    let t = TestStore::new();
    let a = TreeBuilder::new().symlink("link", "old/target");
    let b = TreeBuilder::new().symlink("link", "new/target");
    assert_eq!(
        render(&t.store, &a, &b, 3),
        "diff --git a/link b/link\n--- a/link\n+++ b/link\n\
         @@ -1 +1 @@\n-old/target\n\\ No newline at end of file\n\
         +new/target\n\\ No newline at end of file\n"
    );
    // A file that became a symlink: a deletion, then an addition.
    let f = TreeBuilder::new().file("link", "x\n");
    assert_eq!(
        render(&t.store, &f, &b, 3),
        "diff --git a/link b/link\n\
         deleted file mode 100644\n\
         --- a/link\n\
         +++ /dev/null\n\
         @@ -1 +0,0 @@\n\
         -x\n\
         diff --git a/link b/link\n\
         new file mode 120000\n\
         --- /dev/null\n\
         +++ b/link\n\
         @@ -0,0 +1 @@\n\
         +new/target\n\
         \\ No newline at end of file\n"
    );
}

#[test]
fn unusual_paths_are_quoted_as_git_does() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("d/tab\there \"q\"", "1\n");
    let b = TreeBuilder::new().file("d/tab\there \"q\"", "2\n");
    assert_eq!(
        render(&t.store, &a, &b, 3),
        "diff --git \"a/d/tab\\there \\\"q\\\"\" \"b/d/tab\\there \\\"q\\\"\"\n\
         --- \"a/d/tab\\there \\\"q\\\"\"\n\
         +++ \"b/d/tab\\there \\\"q\\\"\"\n\
         @@ -1 +1 @@\n-1\n+2\n"
    );
    // Spaces and non-ASCII letters stay as they are.
    let c = TreeBuilder::new().file("ü ber", "1\n");
    let d = TreeBuilder::new().file("ü ber", "2\n");
    assert!(render(&t.store, &c, &d, 3).starts_with("diff --git a/ü ber b/ü ber\n--- a/ü ber\n"));
}

#[test]
fn directories_render_nothing_and_patch_expands_them() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("keep", "k").build(&t.store);
    let b = TreeBuilder::new()
        .file("keep", "k")
        .file("d/one", "1\n")
        .dir("d/empty")
        .build(&t.store);
    let found = changes(&t.store, a, b).unwrap();
    assert_eq!(unified_diff(&t.store, &found[0], 3).unwrap(), "");
    assert_eq!(
        textdiff::patch(&t.store, a, b, 3).unwrap(),
        "diff --git a/d/one b/d/one\n\
         new file mode 100644\n\
         --- /dev/null\n\
         +++ b/d/one\n\
         @@ -0,0 +1 @@\n\
         +1\n"
    );
}

#[test]
fn unreadable_content_names_the_path_and_digest() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("dir/f", "old\n").build(&t.store);
    let b = TreeBuilder::new().file("dir/f", "new\n").build(&t.store);
    let found = changes(&t.store, a, b).unwrap();
    let missing = Digest::of(b"new\n");
    std::fs::remove_file(t.store.blob_path(&missing)).unwrap();
    let err = unified_diff(&t.store, &found[0], 3).unwrap_err();
    assert!(
        matches!(&err, TextDiffError::Store { path, digest, .. } if path == "dir/f" && *digest == missing)
    );
    assert!(err.to_string().contains("dir/f"), "{err}");
    // patch() passes the same error on.
    let err = textdiff::patch(&t.store, a, b, 3).unwrap_err();
    assert!(matches!(err, TextDiffError::Store { .. }), "{err:?}");
}
