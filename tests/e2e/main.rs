//! End-to-end tests: the real `ws` and `wsd` binaries on real directories.

mod store;
mod workspace;
