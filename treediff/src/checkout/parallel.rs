//! Spreading a checkout over a few threads.
//!
//! Writing is split into parts by the work each subtree holds (known from the plan
//! before anything is written): the heaviest subtrees are split into their files and
//! their subdirectories until every part is small, and threads take parts heaviest
//! first. The directories that were split ("split dirs") are created up front and
//! held open; they get their modes and mtimes last, deepest first, once every part
//! is written. Each part's own directory is finished by the thread that wrote it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::write::{Shared, Worker};
use super::{CheckoutError, CheckoutStats};
use crate::digest::Digest;
use crate::names;
use crate::tree::Node;

/// More threads than this gain little: the work is mostly the filesystem's.
const MAX_THREADS: usize = 4;
/// Below this much work (about one unit per file), one thread does it all.
const PARALLEL_MIN_WEIGHT: u64 = 1024;
/// Parts per thread, so that uneven parts even out.
const PARTS_PER_THREAD: u64 = 8;
/// At most this many directories are split (each is held open until the end).
const MAX_SPLIT_DIRS: usize = 128;
/// Lists shorter than this are mapped on the calling thread.
const PARALLEL_MIN_ITEMS: usize = 64;

/// How many threads a checkout uses.
pub(super) fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_THREADS)
}

/// `items.iter().map(f)`, on up to `threads` threads for long lists; the results
/// keep the items' order.
pub(super) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() < PARALLEL_MIN_ITEMS {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("checkout threads do not panic"))
            .collect()
    })
}

/// A directory that is split into parts.
#[derive(Debug)]
struct Split<'p> {
    digest: Digest,
    path: String,
    /// Its parent split and its name there; `None` for the root.
    parent: Option<(usize, &'p str)>,
}

/// A unit of work for one thread.
#[derive(Debug)]
enum Part<'p> {
    /// Create the directory `name` in split `parent` and write the subtree into it.
    Subtree {
        parent: usize,
        name: &'p str,
        digest: Digest,
    },
    /// Write the files and symlinks of split `split`.
    Files { split: usize },
}

/// Writes the plan's tree into the open, empty directory `root`, on up to `threads`
/// threads. The root's own mode and mtime are left to the caller.
pub(super) fn write_tree(
    shared: &Shared<'_>,
    root: BorrowedFd<'_>,
    threads: usize,
) -> Result<CheckoutStats, CheckoutError> {
    let plan = shared.plan;
    let mut main = Worker::new(shared);
    if threads <= 1 || plan.weight(plan.root()) < PARALLEL_MIN_WEIGHT {
        main.write_dir(root, plan.root(), "", false)?;
        return Ok(main.stats);
    }
    let (splits, parts) = split(shared, threads);

    // Split dirs, parents first; the root is the caller's.
    let mut owned: Vec<Option<OwnedFd>> = Vec::with_capacity(splits.len());
    for split in &splits {
        let fd = match split.parent {
            None => None,
            Some((parent, name)) => {
                let parent_fd = fd_of(&owned, parent, root);
                main.set_path(&split.path);
                Some(main.make_dir(parent_fd, OsStr::new(name), split.digest)?)
            }
        };
        owned.push(fd);
    }

    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<CheckoutError>> = Mutex::new(None);
    let run = |worker: &mut Worker<'_>| {
        while !stop.load(Ordering::Relaxed) {
            let Some(part) = parts.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            let result = match *part {
                Part::Subtree {
                    parent,
                    name,
                    digest,
                } => worker.write_subtree(
                    fd_of(&owned, parent, root),
                    name,
                    digest,
                    &splits[parent].path,
                ),
                Part::Files { split } => worker.write_dir(
                    fd_of(&owned, split, root),
                    splits[split].digest,
                    &splits[split].path,
                    true,
                ),
            };
            if let Err(e) = result {
                stop.store(true, Ordering::Relaxed);
                failure.lock().unwrap().get_or_insert(e);
            }
        }
    };
    let mut stats = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut worker = Worker::new(shared);
                    run(&mut worker);
                    worker.stats
                })
            })
            .collect();
        run(&mut main);
        let mut stats = CheckoutStats::default();
        for helper in helpers {
            stats.add(&helper.join().expect("checkout threads do not panic"));
        }
        stats
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    // Deepest first: a split dir's mtime is final once everything below is written.
    for (i, split) in splits.iter().enumerate().skip(1).rev() {
        main.set_path(&split.path);
        main.finish_dir(fd_of(&owned, i, root), split.digest)?;
    }
    stats.add(&main.stats);
    Ok(stats)
}

fn fd_of<'a>(owned: &'a [Option<OwnedFd>], i: usize, root: BorrowedFd<'a>) -> BorrowedFd<'a> {
    owned[i].as_ref().map_or(root, |fd| fd.as_fd())
}

/// Splits the heaviest subtrees until parts are small or enough dirs are split.
/// Returns the split dirs (parents before children; the root first) and the parts,
/// heaviest first.
fn split<'p>(shared: &Shared<'p>, threads: usize) -> (Vec<Split<'p>>, Vec<Part<'p>>) {
    let plan = shared.plan;
    let limit = (plan.weight(plan.root()) / (threads as u64 * PARTS_PER_THREAD)).max(1);
    let mut splits: Vec<Split<'p>> = Vec::new();
    let mut weighed: Vec<(u64, Part<'p>)> = Vec::new();
    // Candidate subtrees: (weight, first-come order, parent split, name, digest).
    let mut heap = BinaryHeap::new();
    let mut order = 0usize;
    let mut add_split = |splits: &mut Vec<Split<'p>>,
                         heap: &mut BinaryHeap<_>,
                         weighed: &mut Vec<(u64, Part<'p>)>,
                         split: Split<'p>| {
        let index = splits.len();
        let own = plan.own_weight(split.digest);
        if own > 0 {
            weighed.push((own, Part::Files { split: index }));
        }
        for entry in plan.dir(split.digest).entries() {
            if let Node::Dir { digest } = entry.node {
                heap.push((
                    plan.weight(digest) + 1,
                    Reverse(order),
                    index,
                    entry.name.as_str(),
                    digest,
                ));
                order += 1;
            }
        }
        splits.push(split);
    };
    let root = Split {
        digest: plan.root(),
        path: String::new(),
        parent: None,
    };
    add_split(&mut splits, &mut heap, &mut weighed, root);
    while splits.len() < MAX_SPLIT_DIRS {
        match heap.peek() {
            Some(&(weight, ..)) if weight > limit => {}
            _ => break,
        }
        let (_, _, parent, name, digest) = heap.pop().unwrap();
        let split = Split {
            digest,
            path: names::join(&splits[parent].path, name),
            parent: Some((parent, name)),
        };
        add_split(&mut splits, &mut heap, &mut weighed, split);
    }
    weighed.extend(heap.into_iter().map(|(weight, _, parent, name, digest)| {
        (
            weight,
            Part::Subtree {
                parent,
                name,
                digest,
            },
        )
    }));
    weighed.sort_by_key(|(weight, _)| Reverse(*weight));
    let parts = weighed.into_iter().map(|(_, part)| part).collect();
    (splits, parts)
}
