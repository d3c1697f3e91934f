//! Slots for long operations (imports, transfers to and from remote caches,
//! builds), so that no user can
//! flood the daemon with them and a small commit never competes with a crowd
//! of 100k-file imports: at most [`Limits::per_user`] long operations of one
//! user run at once, at most [`Limits::imports`] imports in all (about the
//! number of CPUs: an import keeps several threads busy), and when a slot
//! frees, the operation of the user with the fewest running goes first, then
//! of the user served longest ago, then the oldest: users take turns, so one
//! user's queue never starves another's.
//!
//! A slot is taken before the store guard, so a queued operation never holds
//! up gc. An operation nested in another of the same thread (a build's
//! imports and pulls, an open's import) takes no per-user slot of its own; a
//! nested import still takes an import slot unless its thread holds one.
//! Short operations (commit, discard, status, ...) take none.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

/// What a long operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Reading a directory into the store (an open, a build's sources).
    Import,
    /// Fetching from, or sending to, a remote cache.
    Transfer,
    /// Building elements.
    Build,
}

/// The bounds (the daemon's configuration, `[limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Long operations of one user at once.
    pub per_user: usize,
    /// Imports at once, of all users.
    pub imports: usize,
}

/// The slots (one per daemon).
#[derive(Debug)]
pub(crate) struct LongWork {
    limits: Limits,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Per-user slots taken, by uid.
    running: HashMap<u32, usize>,
    /// Import slots taken.
    imports: usize,
    /// Waiting operations, oldest first.
    waiting: Vec<Waiter>,
    next_ticket: u64,
    /// When each user was last given a slot (a count of slots given).
    last_served: HashMap<u32, u64>,
    served: u64,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    ticket: u64,
    uid: u32,
    /// Takes a per-user slot.
    user_slot: bool,
    /// Takes an import slot.
    import_slot: bool,
}

thread_local! {
    /// Slots this thread holds: per-user ones, and whether an import one.
    static HELD: Cell<(usize, bool)> = const { Cell::new((0, false)) };
}

/// A taken slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    work: &'a LongWork,
    taken: Option<Waiter>,
}

impl LongWork {
    pub(crate) fn new(limits: Limits) -> LongWork {
        LongWork {
            limits: Limits {
                per_user: limits.per_user.max(1),
                imports: limits.imports.max(1),
            },
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// Waits for a slot for `work` of `uid` (see the module doc).
    pub(crate) fn enter(&self, uid: u32, work: Work) -> Slot<'_> {
        let (held, holds_import) = HELD.get();
        let user_slot = held == 0;
        let import_slot = work == Work::Import && !holds_import;
        if !user_slot && !import_slot {
            return Slot {
                work: self,
                taken: None,
            };
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let me = Waiter {
            ticket: state.next_ticket,
            uid,
            user_slot,
            import_slot,
        };
        state.next_ticket += 1;
        state.waiting.push(me);
        while self.next(&state) != Some(me.ticket) {
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.waiting.retain(|w| w.ticket != me.ticket);
        if user_slot {
            *state.running.entry(uid).or_default() += 1;
        }
        if import_slot {
            state.imports += 1;
        }
        state.served += 1;
        let served = state.served;
        state.last_served.insert(uid, served);
        HELD.set((held + usize::from(user_slot), holds_import || import_slot));
        // Another waiter may be admissible too.
        self.freed.notify_all();
        Slot {
            work: self,
            taken: Some(me),
        }
    }

    /// The waiter to go next: among those whose slots are free, the one whose
    /// user runs the fewest, then was served longest ago, then the oldest.
    fn next(&self, state: &State) -> Option<u64> {
        let running = |uid| state.running.get(&uid).copied().unwrap_or(0);
        let last = |uid| state.last_served.get(&uid).copied().unwrap_or(0);
        state
            .waiting
            .iter()
            .filter(|w| !w.user_slot || running(w.uid) < self.limits.per_user)
            .filter(|w| !w.import_slot || state.imports < self.limits.imports)
            .min_by_key(|w| (running(w.uid), last(w.uid), w.ticket))
            .map(|w| w.ticket)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let Some(taken) = self.taken else { return };
        let mut state = self.work.state.lock().unwrap_or_else(|e| e.into_inner());
        if taken.user_slot
            && let Some(n) = state.running.get_mut(&taken.uid)
        {
            *n -= 1;
            if *n == 0 {
                state.running.remove(&taken.uid);
            }
        }
        if taken.import_slot {
            state.imports -= 1;
        }
        let (held, holds_import) = HELD.get();
        HELD.set((
            held - usize::from(taken.user_slot),
            holds_import && !taken.import_slot,
        ));
        self.work.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `ops` (uid, work) on threads of their own, each holding its slot
    /// until told; returns the order in which they got their slots, and the
    /// most running at once.
    fn run(long: &LongWork, ops: &[(u32, Work)], first_hold: usize) -> (Vec<usize>, usize) {
        let order = Mutex::new(Vec::new());
        let now = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let (go, release) = mpsc::channel::<()>();
        let release = Mutex::new(release);
        std::thread::scope(|scope| {
            // The first `first_hold` take their slots before the others queue.
            for (i, &(uid, work)) in ops.iter().enumerate() {
                let (order, now, most, release) = (&order, &now, &most, &release);
                scope.spawn(move || {
                    let _slot = long.enter(uid, work);
                    order.lock().unwrap().push(i);
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    release.lock().unwrap().recv().unwrap();
                    now.fetch_sub(1, Ordering::SeqCst);
                });
                if i + 1 == first_hold {
                    while order.lock().unwrap().len() < first_hold {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                // Queued in this order.
                while order.lock().unwrap().len() + long.state.lock().unwrap().waiting.len() <= i {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            for _ in ops {
                let before = order.lock().unwrap().len();
                go.send(()).unwrap();
                // The slot it frees is taken (and noted) before the next goes.
                while ![before + 1, ops.len()].contains(&order.lock().unwrap().len()) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        (order.into_inner().unwrap(), most.into_inner())
    }

    #[test]
    fn one_user_runs_at_most_their_share_at_once() {
        let long = LongWork::new(Limits {
            per_user: 2,
            imports: 8,
        });
        let (_, most) = run(&long, &[(1, Work::Build); 6], 0);
        assert_eq!(most, 2);
    }

    #[test]
    fn imports_of_all_users_are_bounded_together() {
        let long = LongWork::new(Limits {
            per_user: 4,
            imports: 2,
        });
        let ops: Vec<_> = (0..6).map(|uid| (uid, Work::Import)).collect();
        let (_, most) = run(&long, &ops, 0);
        assert_eq!(most, 2);
    }

    /// User 1 queues many; user 2, queued later, goes at the first free slot.
    #[test]
    fn a_freed_slot_goes_to_the_user_with_the_fewest_running() {
        let long = LongWork::new(Limits {
            per_user: 4,
            imports: 1,
        });
        let mut ops = vec![(1, Work::Import); 5];
        ops.push((2, Work::Import));
        let (order, _) = run(&long, &ops, 1);
        assert_eq!(order[0], 0);
        assert_eq!(
            order[1], 5,
            "user 2 waited behind user 1's queue: {order:?}"
        );
    }

    #[test]
    fn a_nested_operation_takes_no_slot_of_its_user_and_imports_take_theirs() {
        let long = LongWork::new(Limits {
            per_user: 1,
            imports: 1,
        });
        let build = long.enter(7, Work::Build);
        // Would wait for ever if it needed user 7's only slot.
        let pull = long.enter(7, Work::Transfer);
        let import = long.enter(7, Work::Import);
        assert_eq!(long.state.lock().unwrap().imports, 1);
        let nested = long.enter(7, Work::Import);
        assert!(nested.taken.is_none(), "the thread holds an import slot");
        drop((nested, import, pull, build));
        let state = long.state.lock().unwrap();
        assert_eq!((state.imports, state.running.len()), (0, 0));
        assert_eq!(HELD.get(), (0, false));
    }
}
