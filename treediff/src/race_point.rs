//! Named points where a test may stop an operation between resolving a
//! location and using it, change what the location's path leads to, and let
//! the operation go on: the deterministic form of a path race. Compiled to
//! nothing without the `failpoints` feature (the daemon's tests turn it on).
//!
//! A test configures the point with `fail::cfg_callback(NAME, swap)`; the
//! callback runs on the operation's thread, at the point.

/// Runs the callback a test configured for the point `name`, if any.
#[inline]
pub fn race_point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    fail::eval(name, |_| ());
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
