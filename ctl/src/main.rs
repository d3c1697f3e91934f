//! `ws`, the command-line client. All of it lives in the `ctl` library.

fn main() -> std::process::ExitCode {
    ctl::main()
}
