//! End-to-end tests: the real `ws` and `wsd` binaries on real directories.

mod crash_loop;
mod store;
mod workspace;
