//! Checking and converting method arguments, for every interface.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use super::DbusError;

/// The longest string argument accepted: names are at most 64 bytes and digests
/// under 100; anything longer is refused before it reaches the manager.
const MAX_ARGUMENT: usize = 4096;

/// `value`, if it is at most [`MAX_ARGUMENT`] bytes long.
pub fn bounded<'a>(what: &str, value: &'a str) -> Result<&'a str, DbusError> {
    if value.len() > MAX_ARGUMENT {
        return Err(DbusError::InvalidArgument(format!(
            "the {what} is {} bytes long; at most {MAX_ARGUMENT} are accepted",
            value.len()
        )));
    }
    Ok(value)
}

/// A digest argument (`<hex>/<size>`).
pub fn digest(what: &str, value: &str) -> Result<treediff::Digest, DbusError> {
    bounded(what, value)?
        .parse()
        .map_err(|e: treediff::digest::DigestParseError| DbusError::InvalidArgument(e.to_string()))
}

/// The path the kernel gives an open descriptor: read through it, never by name.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
