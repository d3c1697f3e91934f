//! End-to-end tests: the real `ws` binary on real directories.

mod store;
