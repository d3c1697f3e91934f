//! `ws`: the command line of ws workspaces.
//!
//! `cli` declares the arguments, `commands` runs them, `error` is the one place where
//! failures become messages, hints and exit codes, and `progress` draws progress bars
//! when stderr is a terminal, and `client` talks to the daemon over its D-Bus socket,
//! starting it when none answers. `ws store` works on a store directly, without the
//! daemon, for scripting and benchmarks.

mod cli;
mod client;
mod commands;
mod error;
mod progress;
mod state_dir;

use clap::Parser;

pub use error::CliError;

/// Runs `ws` with the process's arguments and returns its exit code.
pub fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => err.report(),
    }
}
