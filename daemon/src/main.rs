//! `wsd`, the workspace daemon: serves one state directory over D-Bus.

fn main() -> std::process::ExitCode {
    daemon::run::main()
}
