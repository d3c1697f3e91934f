//! `wsd`, the workspace daemon: serves one state directory over D-Bus.

/// jemalloc, not glibc's malloc: an import walks and hashes on many threads, and
/// glibc kept what they freed (RSS grew by tens of MiB per import and stayed);
/// jemalloc gives it back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    daemon::run::main()
}
