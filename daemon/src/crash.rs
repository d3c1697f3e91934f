//! Named crash points in the commit protocol, for the tests that kill the daemon
//! at each step (`daemon/tests/crash.rs`), and error points, for tests that make
//! one step fail. Both compile to nothing without the `failpoints` feature. A
//! crash point configured with the action `return` aborts the process on the
//! spot: no destructor runs and nothing is cleaned up, as after a SIGKILL; one
//! configured with a callback runs it there instead, and the step goes on (the
//! tests that swap a path mid-operation, like `treediff::race_point`).

/// Aborts the process here if the failpoint `$name` is configured.
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if fail::eval($name, |_| ()).is_some() {
            std::process::abort();
        }
    };
}

/// Whether the failpoint `$name` is configured to fail this step: with the
/// action `return`, or `return(SUBJECT)` for the step on `$subject` only (so a
/// test's point leaves the other tests of its process alone).
macro_rules! error_point {
    ($name:literal, $subject:expr) => {{
        #[cfg(feature = "failpoints")]
        let hit = fail::eval($name, |arg| arg.is_none_or(|a| a == $subject)).unwrap_or(false);
        #[cfg(not(feature = "failpoints"))]
        let hit = false;
        hit
    }};
}

pub(crate) use {crash_point, error_point};
