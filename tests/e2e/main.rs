//! End-to-end tests: the real `ws` and `wsd` binaries on real directories.

mod build;
mod crash_loop;
mod remote;
mod store;
mod workspace;
