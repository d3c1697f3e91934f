//! `wsd`, the workspace daemon: serves one state directory over D-Bus.

/// jemalloc, not glibc's malloc: an import walks and hashes on many threads, and
/// glibc kept what they freed (RSS grew by tens of MiB per import and stayed);
/// jemalloc gives it back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // The build sandbox's own processes (`wsd __sandbox ...`): before logging, the
    // argument parser or the runtime start.
    if std::env::args_os().nth(1).is_some_and(|a| {
        a.as_encoded_bytes()
            .starts_with(daemon::sandbox::SUBCOMMAND.as_bytes())
    }) {
        return daemon::sandbox::child_main();
    }
    daemon::run::main()
}
