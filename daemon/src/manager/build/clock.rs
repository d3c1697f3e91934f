//! The timestamp rule of incremental builds (docs/design.md, "Workspaces and incremental builds").
//!
//! make and ninja rebuild a target when a prerequisite is newer. A build in a
//! workspace continues from the previous buildtree, whose outputs carry the real
//! mtimes of the build that wrote them, while every unedited source carries the
//! store's fixed old mtime. The sources changed since are laid over it with the
//! current time (`overlay::lay_over`), so they are newer than every output and
//! only what depends on them is rebuilt. Two things can break that order:
//!
//! - a buildtree made on a machine whose clock was ahead of this one's (or by a
//!   command that set future mtimes): its outputs look newer than any edit made
//!   here, and whatever this build writes looks older than them, so make would
//!   either miss an edit or rebuild the same target at every build. Entries in
//!   the future are therefore moved back, keeping their order, to just before now
//!   ([`future_stamps`]), through the build's own layer;
//! - a build that starts within the filesystem clock's granularity of the last
//!   one's end: [`settle`] waits that out.

use treediff::{Change, Digest, Dir, Entry, Mtime, Node, Store, TreeError};

/// The filesystem's timestamps come from a coarse clock (a jiffy, up to 10 ms
/// here); a build starting closer than this to the previous one's newest mtime
/// waits until it has passed.
const GRANULARITY_NANOS: i128 = 20_000_000;

/// Now, as an mtime.
pub fn now() -> Mtime {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Mtime {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    }
}

fn nanos(m: Mtime) -> i128 {
    i128::from(m.seconds) * 1_000_000_000 + i128::from(m.nanos)
}

fn from_nanos(n: i128) -> Mtime {
    Mtime {
        seconds: n.div_euclid(1_000_000_000) as i64,
        nanos: n.rem_euclid(1_000_000_000) as u32,
    }
}

/// Waits until `newest` (the previous buildtree's newest mtime) is safely in the
/// past, when it is only just before now. A newest mtime further ahead is not
/// waited for: its entries are restamped instead (see [`future_stamps`]).
pub fn settle(newest: Mtime) {
    let ahead = nanos(newest) + GRANULARITY_NANOS - nanos(now());
    if ahead > 0 && ahead <= 2 * GRANULARITY_NANOS {
        std::thread::sleep(std::time::Duration::from_nanos(ahead as u64));
    }
}

/// Whether a buildtree whose newest mtime is `newest` has entries in the future.
pub fn is_ahead(newest: Mtime) -> bool {
    nanos(newest) > nanos(now()) + GRANULARITY_NANOS
}

/// The new mtimes for every entry of `tree` whose mtime is ahead of now: each is
/// moved back by the same amount, so that the newest lands one second before
/// now and their order among themselves is kept. Reads every directory node of
/// the tree, so it runs only when [`is_ahead`] says so.
pub fn future_stamps(
    store: &Store,
    tree: Digest,
    newest: Mtime,
) -> Result<Vec<(String, Mtime)>, TreeError> {
    let now = nanos(now());
    let shift = nanos(newest) - (now - 1_000_000_000);
    let mut out = Vec::new();
    let mut visit = |path: &str, mtime: Mtime| {
        if nanos(mtime) > now {
            out.push((path.to_owned(), from_nanos(nanos(mtime) - shift)));
        }
    };
    walk_mtimes(store, tree, "", &mut visit)?;
    Ok(out)
}

/// The newest mtime among the entries `changes` brings in (their new side, and
/// everything under an added directory).
pub fn newest_in_changes(store: &Store, changes: &[Change]) -> Result<Option<Mtime>, TreeError> {
    let mut newest: Option<Mtime> = None;
    let mut visit = |_: &str, mtime: Mtime| {
        newest = Some(newest.map_or(mtime, |n| n.max(mtime)));
    };
    for change in changes {
        let Some(entry) = &change.new else { continue };
        match &entry.node {
            Node::Dir { digest } if !change.old_is_dir() => {
                walk_mtimes(store, *digest, &change.path, &mut visit)?
            }
            _ => visit_entry(entry, &change.path, &mut visit),
        }
    }
    Ok(newest)
}

fn visit_entry(entry: &Entry, path: &str, visit: &mut dyn FnMut(&str, Mtime)) {
    if let Some(mtime) = entry.props.and_then(|p| p.mtime) {
        visit(path, mtime);
    }
}

/// Calls `visit` with the path and mtime of the directory `tree` (at `path`) and
/// of everything under it that records one.
fn walk_mtimes(
    store: &Store,
    tree: Digest,
    path: &str,
    visit: &mut dyn FnMut(&str, Mtime),
) -> Result<(), TreeError> {
    let dir = Dir::read(store, tree, path)?;
    if let Some(mtime) = dir.props.and_then(|p| p.mtime) {
        visit(path, mtime);
    }
    for entry in dir.entries() {
        let child = treediff::names::join(path, &entry.name);
        match &entry.node {
            Node::Dir { digest } => walk_mtimes(store, *digest, &child, visit)?,
            _ => visit_entry(entry, &child, visit),
        }
    }
    Ok(())
}

/// The newest mtime anywhere in `tree`, and the bytes of its files: what a
/// buildtree that comes from elsewhere (a remote cache) is recorded with.
pub fn newest_and_size(store: &Store, tree: Digest) -> Result<(Option<Mtime>, u64), TreeError> {
    fn walk(
        store: &Store,
        tree: Digest,
        path: &str,
        newest: &mut Option<Mtime>,
        bytes: &mut u64,
    ) -> Result<(), TreeError> {
        fn see(newest: &mut Option<Mtime>, mtime: Option<Mtime>) {
            if let Some(m) = mtime {
                *newest = Some(newest.map_or(m, |n| n.max(m)));
            }
        }
        let dir = Dir::read(store, tree, path)?;
        see(newest, dir.props.and_then(|p| p.mtime));
        for entry in dir.entries() {
            see(newest, entry.props.and_then(|p| p.mtime));
            match &entry.node {
                Node::Dir { digest } => walk(
                    store,
                    *digest,
                    &treediff::names::join(path, &entry.name),
                    newest,
                    bytes,
                )?,
                Node::File { digest, .. } => *bytes += digest.size(),
                Node::Symlink { .. } => {}
            }
        }
        Ok(())
    }
    let (mut newest, mut bytes) = (None, 0);
    walk(store, tree, "", &mut newest, &mut bytes)?;
    Ok((newest, bytes))
}

/// The larger of two optional mtimes.
pub fn max(a: Option<Mtime>, b: Option<Mtime>) -> Option<Mtime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// An mtime as the records keep it.
pub fn pair(m: Mtime) -> (i64, u32) {
    (m.seconds, m.nanos)
}

/// An mtime from the records' pair.
pub fn from_pair((seconds, nanos): (i64, u32)) -> Mtime {
    Mtime { seconds, nanos }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_round_trip_also_before_the_epoch() {
        for m in [
            Mtime {
                seconds: 0,
                nanos: 0,
            },
            Mtime {
                seconds: 1_700_000_000,
                nanos: 999_999_999,
            },
            Mtime {
                seconds: -5,
                nanos: 3,
            },
        ] {
            assert_eq!(from_nanos(nanos(m)), m);
        }
    }

    #[test]
    fn a_newest_mtime_an_hour_ahead_is_ahead_and_one_in_the_past_is_not() {
        let now = now();
        assert!(is_ahead(Mtime {
            seconds: now.seconds + 3600,
            nanos: 0
        }));
        assert!(!is_ahead(Mtime {
            seconds: now.seconds - 1,
            nanos: 0
        }));
    }
}
