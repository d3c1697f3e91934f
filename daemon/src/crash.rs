//! Named crash points in the commit protocol, for the tests that kill the daemon
//! at each step (`daemon/tests/crash.rs`). They compile to nothing without the
//! `failpoints` feature. A point configured with the action `return` aborts the
//! process on the spot: no destructor runs and nothing is cleaned up, as after a
//! SIGKILL.

/// Aborts the process here if the failpoint `$name` is configured.
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if fail::eval($name, |_| ()).is_some() {
            std::process::abort();
        }
    };
}

pub(crate) use crash_point;
