//! The library side of `wsd`. Empty until the daemon issue.
