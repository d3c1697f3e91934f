//! What the socket's clients may hold of the daemon (docs/security.md, "The
//! daemon survives its clients"): connections per uid and in all, counted at
//! accept; what `accept` failing means; and the warnings about both, at most
//! one a while for each uid.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::project::Limits;

/// How often each kind of warning is logged for one uid (or one error): the
/// ones in between are counted, and the next says how many were held back.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long `accept` waits after running out of descriptors, at first and at
/// most: doubled while it keeps failing.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// The connections open on the socket, and the limits they are held to.
#[derive(Debug)]
pub(crate) struct Gate {
    limits: Limits,
    open: Mutex<Open>,
    /// The warnings about clients, each rate-limited on its own.
    pub log: Logs,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// One rate limit per kind of warning.
#[derive(Debug)]
pub(crate) struct Logs {
    /// Connections refused at accept, by uid.
    pub refused: RateLimit<u32>,
    /// Handshakes too slow or too long, by uid.
    pub handshake: RateLimit<u32>,
    /// Messages over the size limit, by uid.
    pub oversized: RateLimit<u32>,
    /// Connections that failed otherwise (the handshake, mostly), by uid.
    pub failed: RateLimit<u32>,
    /// `accept` failing, by errno.
    pub accept: RateLimit<Option<i32>>,
}

/// A connection's place among the open ones, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    gate: Arc<Gate>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.by_uid.remove(&self.uid);
            }
        }
    }
}

/// What to do after `accept` failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterAccept {
    /// Accept again after this pause (zero: at once).
    Retry(Duration),
    /// The listening socket itself is broken: stop serving.
    Stop,
}

impl Gate {
    pub fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            open: Mutex::default(),
            log: Logs {
                refused: RateLimit::new(LOG_EVERY),
                handshake: RateLimit::new(LOG_EVERY),
                oversized: RateLimit::new(LOG_EVERY),
                failed: RateLimit::new(LOG_EVERY),
                accept: RateLimit::new(LOG_EVERY),
            },
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A slot for a new connection of `uid`, or `None` (and a warning) when
    /// `uid` or everyone together has as many as the limits allow: the
    /// connection is then closed before anything is read from it.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.by_uid.get(&uid).copied().unwrap_or(0);
        let refusal = if mine >= self.limits.connections_per_user {
            Some(format!(
                "it has {mine} open, the limit for one user (max-connections-per-user)"
            ))
        } else if open.total >= self.limits.connections {
            Some(format!(
                "the daemon has {} open, the limit for all users (max-connections)",
                open.total
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            drop(open);
            if let Some(held_back) = self.log.refused.allow(uid) {
                tracing::warn!(uid, held_back, "refused a connection of uid {uid}: {why}");
            }
            return None;
        }
        open.total += 1;
        *open.by_uid.entry(uid).or_default() += 1;
        Some(Slot {
            gate: self.clone(),
            uid,
        })
    }

    /// Logs that `uid`'s client did not finish the handshake in time.
    pub fn handshake_timed_out(&self, uid: u32) {
        if let Some(held_back) = self.log.handshake.allow(uid) {
            tracing::warn!(
                uid,
                held_back,
                "closed the connection of a client of uid {uid}: no handshake within {} s (handshake-timeout-seconds)",
                self.limits.handshake_timeout.as_secs()
            );
        }
    }

    /// What to do after `accept` failed with `error`: out of descriptors or
    /// memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), wait, longer each
    /// time in a row (`pause`), since the listener stays ready and accepting
    /// at once fails again; one connection's trouble (`ECONNABORTED`,
    /// `EPROTO`, `EPERM`, and whatever else), go on; a listener that is no
    /// longer one (`EBADF`, `EINVAL`, `ENOTSOCK`, `EOPNOTSUPP`, `EFAULT`),
    /// stop.
    pub fn accept_failed(&self, error: &std::io::Error, pause: &mut Duration) -> AfterAccept {
        let errno = error.raw_os_error();
        match errno.map(Errno::from_raw) {
            Some(
                Errno::EBADF | Errno::EINVAL | Errno::ENOTSOCK | Errno::EOPNOTSUPP | Errno::EFAULT,
            ) => AfterAccept::Stop,
            Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
                *pause = (*pause * 2).clamp(FIRST_PAUSE, LONGEST_PAUSE);
                if let Some(held_back) = self.log.accept.allow(errno) {
                    tracing::warn!(
                        error = %error,
                        held_back,
                        "cannot accept a connection: {error}; accepting again in {} ms (if the daemon is out of descriptors, raise its limit, LimitNOFILE, or lower max-connections)",
                        pause.as_millis()
                    );
                }
                AfterAccept::Retry(*pause)
            }
            _ => {
                tracing::debug!(error = %error, "accept failed for one connection");
                AfterAccept::Retry(Duration::ZERO)
            }
        }
    }

    /// Warns when the connections the limits allow could take most of the
    /// daemon's descriptors (`RLIMIT_NOFILE`): accepting then waits for some to
    /// close, and operations that open files fail meanwhile. A user daemon's
    /// connections are its one user's.
    pub fn check_descriptors(&self, one_user: bool) {
        let connections = if one_user {
            self.limits
                .connections
                .min(self.limits.connections_per_user)
        } else {
            self.limits.connections
        };
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        if let Some(nofile) = nofile
            && connections as u64 > nofile / 2
        {
            tracing::warn!(
                connections,
                nofile,
                "the limits allow {connections} connections, and the daemon may open {nofile} descriptors in all: raise its limit (LimitNOFILE) or lower max-connections in [limits]"
            );
        }
    }
}

/// Lets one warning a key through every `every`, counting the others.
#[derive(Debug)]
pub(crate) struct RateLimit<K> {
    every: Duration,
    seen: Mutex<HashMap<K, Seen>>,
}

#[derive(Debug)]
struct Seen {
    logged: Instant,
    held_back: u64,
}

impl<K: Eq + Hash> RateLimit<K> {
    pub fn new(every: Duration) -> RateLimit<K> {
        RateLimit {
            every,
            seen: Mutex::default(),
        }
    }

    /// `Some(n)`: log this one, saying `n` like it were held back since the
    /// last; `None`: hold it back.
    pub fn allow(&self, key: K) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = seen.get_mut(&key) {
            if now.duration_since(last.logged) < self.every {
                last.held_back += 1;
                return None;
            }
            let held_back = last.held_back;
            *last = Seen {
                logged: now,
                held_back: 0,
            };
            return Some(held_back);
        }
        // Keys (uids, errnos) are few; those not seen for a while go.
        if seen.len() >= 1024 {
            seen.retain(|_, last| now.duration_since(last.logged) < self.every);
        }
        seen.insert(
            key,
            Seen {
                logged: now,
                held_back: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_user: usize, total: usize) -> Arc<Gate> {
        Arc::new(Gate::new(Limits {
            connections_per_user: per_user,
            connections: total,
            ..Limits::default()
        }))
    }

    #[test]
    fn a_uid_gets_its_share_and_all_together_the_total_and_a_slot_comes_back_when_dropped() {
        let gate = gate(2, 3);
        let a1 = gate.admit(1000).unwrap();
        let _a2 = gate.admit(1000).unwrap();
        assert!(gate.admit(1000).is_none(), "a third for one uid");
        let _b1 = gate.admit(1001).unwrap();
        assert!(gate.admit(1002).is_none(), "a fourth in all");
        drop(a1);
        let _a3 = gate.admit(1000).unwrap();
        assert!(gate.admit(1000).is_none());
    }

    #[test]
    fn running_out_of_descriptors_pauses_accept_and_only_a_broken_listener_stops_it() {
        let gate = gate(1, 1);
        let mut pause = Duration::ZERO;
        let emfile = std::io::Error::from_raw_os_error(Errno::EMFILE as i32);
        assert_eq!(
            gate.accept_failed(&emfile, &mut pause),
            AfterAccept::Retry(FIRST_PAUSE)
        );
        assert_eq!(
            gate.accept_failed(&emfile, &mut pause),
            AfterAccept::Retry(FIRST_PAUSE * 2)
        );
        for _ in 0..20 {
            gate.accept_failed(&emfile, &mut pause);
        }
        assert_eq!(pause, LONGEST_PAUSE);
        let aborted = std::io::Error::from_raw_os_error(Errno::ECONNABORTED as i32);
        assert_eq!(
            gate.accept_failed(&aborted, &mut pause),
            AfterAccept::Retry(Duration::ZERO)
        );
        let badf = std::io::Error::from_raw_os_error(Errno::EBADF as i32);
        assert_eq!(gate.accept_failed(&badf, &mut pause), AfterAccept::Stop);
    }

    #[test]
    fn a_warning_is_let_through_once_a_while_per_key_and_says_how_many_were_held_back() {
        let limit = RateLimit::new(Duration::from_millis(200));
        assert_eq!(limit.allow(1), Some(0));
        assert_eq!(limit.allow(1), None);
        assert_eq!(limit.allow(1), None);
        assert_eq!(limit.allow(2), Some(0), "another uid's own");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.allow(1), Some(2));
    }
}
