//! What the race loops among the daemon's unit tests share: how many rounds
//! they run, a cheap random source for their timing, and a way for a racer
//! thread to act as a user (per thread, as the daemon's own readers do).

#![cfg(test)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::access::CallerAccess;
use crate::manager::Caller;
use treediff::SourceAccess;

/// The rounds of a race loop: 1,000, or `WS_RACE_ROUNDS`.
pub fn rounds() -> usize {
    std::env::var("WS_RACE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// An unprivileged user that exists on every system: the racer.
pub const NOBODY: Caller = Caller {
    uid: 65534,
    gid: 65534,
};

/// Takes on `caller`'s uid, gid and groups on this thread only, for good (the
/// thread should end with them).
pub fn become_caller(caller: Caller) {
    CallerAccess::for_caller(caller)
        .unwrap()
        .expect("a race loop runs as root, and its racer as someone else")
        .as_reader()
        .unwrap();
}

/// A small random source (xorshift64*), seeded from the clock: enough to
/// vary a racer's timing from round to round.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(nanos | 1)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    /// A pause of up to `max_micros` microseconds (none at times).
    pub fn pause(&mut self, max_micros: u64) {
        match self.below(max_micros + 1) {
            0 => {}
            us => std::thread::sleep(Duration::from_micros(us)),
        }
    }
}

/// Exchanges the entries `a` and `b` in one step (`RENAME_EXCHANGE`): a
/// directory and a symlink trade places with no moment where either is gone.
pub fn exchange(a: &Path, b: &Path) -> bool {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .is_ok()
}

/// Runs `main` while a thread acting as `caller` runs `racer` over and over;
/// the racer stops when `main` returns, or fails an assertion.
pub fn with_racer<T>(
    caller: Caller,
    mut racer: impl FnMut(&mut Rng) + Send,
    main: impl FnOnce() -> T,
) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            become_caller(caller);
            let mut rng = Rng::new();
            while !stop.load(Ordering::Relaxed) {
                racer(&mut rng);
            }
        });
        let _stop = StopOnDrop(&stop);
        main()
    })
}

/// Stops a racer when dropped, also while a failed assertion unwinds (its
/// scope would otherwise wait for it for ever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
