//! Running a parsed command line.

mod store;
mod workspace;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::state_dir::default_state_dir;

/// Runs the command and returns the exit code for success.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let state_dir = match cli.state_dir {
        Some(dir) => dir,
        None => default_state_dir()?,
    };
    match cli.command {
        Command::Store(command) => store::run(&state_dir, command),
        Command::Daemon => workspace::daemon(&state_dir),
        command => workspace::run(&state_dir, command),
    }
}

/// Writes `text` to stdout; a closed pipe ends the command quietly.
pub fn print(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Pretty JSON on stdout, with a final newline.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).expect("our JSON values always serialize");
    text.push('\n');
    print(&text)
}
