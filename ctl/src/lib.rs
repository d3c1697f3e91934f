//! `ws`: the command line of ws workspaces.
//!
//! `cli` declares the arguments, `commands` runs them, `error` is the one place where
//! failures become messages, hints and exit codes, `progress` draws spinners when
//! stderr is a terminal, and `client` talks to the daemon over its D-Bus socket,
//! starting it when none answers. Every command, `ws store` included, is a call to
//! the daemon.

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
