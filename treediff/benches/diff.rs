//! In-process timing of diff and apply on trees of 1k, 10k and 100k files that differ
//! in 10 files, to show that their cost follows the changes, not the tree. Run by hand:
//! `cargo bench -p treediff --bench diff`. A plain harness (no criterion) so that the
//! test build stays small; each figure is the median of many runs.

use std::time::{Duration, Instant};

use treediff::{Digest, Dir, Edit, Entry, Node, Store, apply, diff};

/// A tree of `files` files, 20 per directory, directories 10 wide: depth grows with
/// size as in real source trees.
fn build(store: &Store, files: usize) -> Digest {
    let txn = store.begin().unwrap();
    let mut leaves = Vec::new();
    for chunk in 0..files.div_ceil(20) {
        let entries = (0..20.min(files - chunk * 20))
            .map(|i| {
                let n = chunk * 20 + i;
                let digest = txn.put(format!("file {n}\n").as_bytes()).unwrap();
                Entry {
                    name: format!("f{i:02}.c"),
                    node: Node::File {
                        digest,
                        executable: false,
                    },
                    props: None,
                }
            })
            .collect();
        leaves.push(Dir::new(entries, None).unwrap().write(&txn).unwrap());
    }
    let mut level = leaves;
    while level.len() > 1 {
        level = level
            .chunks(10)
            .map(|group| {
                let entries = group
                    .iter()
                    .enumerate()
                    .map(|(i, digest)| Entry {
                        name: format!("d{i}"),
                        node: Node::Dir { digest: *digest },
                        props: None,
                    })
                    .collect();
                Dir::new(entries, None).unwrap().write(&txn).unwrap()
            })
            .collect();
    }
    txn.commit().unwrap();
    level[0]
}

/// Paths of 10 files spread over the tree.
fn ten_paths(store: &Store, root: Digest) -> Vec<String> {
    let mut paths = Vec::new();
    for k in 0..10 {
        let (mut digest, mut path) = (root, String::new());
        loop {
            let dir = Dir::read(store, digest, &path).unwrap();
            let entry = &dir.entries()[(k * 7 + path.len()) % dir.entries().len()];
            path = treediff::names::join(&path, &entry.name);
            match entry.node {
                Node::Dir { digest: child } => digest = child,
                _ => break,
            }
        }
        paths.push(path);
    }
    paths.sort();
    paths.dedup();
    paths
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    println!("| files | changed | diff median | dirs read | apply median |");
    println!("|---:|---:|---:|---:|---:|");
    for files in [1_000, 10_000, 100_000] {
        let a = build(&store, files);
        let paths = ten_paths(&store, a);
        let edits = |tag: &str| -> Vec<Edit> {
            let txn = store.begin().unwrap();
            let edits = paths
                .iter()
                .map(|path| {
                    let digest = txn.put(format!("{tag} {path}\n").as_bytes()).unwrap();
                    let name = path.rsplit('/').next().unwrap().to_owned();
                    Edit::Put {
                        path: path.clone(),
                        entry: Entry {
                            name,
                            node: Node::File {
                                digest,
                                executable: false,
                            },
                            props: None,
                        },
                    }
                })
                .collect();
            txn.commit().unwrap();
            edits
        };
        let txn = store.begin().unwrap();
        let b = apply(&txn, a, edits("changed")).unwrap();
        txn.commit().unwrap();
        let mut dirs_read = 0;
        let diff_time = time(200, || {
            let mut changes = 0;
            dirs_read = diff(&store, a, b, &mut |_| {
                changes += 1;
                Ok(())
            })
            .unwrap()
            .dirs_read;
            assert_eq!(changes, paths.len());
        });
        let prepared = edits("again");
        let apply_time = time(50, || {
            let txn = store.begin().unwrap();
            apply(&txn, a, prepared.iter().cloned()).unwrap();
            drop(txn);
        });
        println!(
            "| {files} | {} | {:.3} ms | {dirs_read} | {:.3} ms |",
            paths.len(),
            diff_time.as_secs_f64() * 1e3,
            apply_time.as_secs_f64() * 1e3
        );
    }
}
