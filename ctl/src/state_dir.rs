//! Where the state lives when `--state-dir` and `WS_STATE_DIR` are not given.

use std::path::PathBuf;

use crate::error::CliError;

/// `/var/lib/ws` for root; `$XDG_STATE_HOME/ws`, else `~/.local/state/ws`, for a user.
pub fn default_state_dir() -> Result<PathBuf, CliError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/ws"));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("ws"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/ws")),
        None => Err(CliError::NoStateDir),
    }
}
