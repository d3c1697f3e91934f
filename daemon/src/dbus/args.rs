//! Checking and converting method arguments, for every interface.

use std::collections::HashMap;
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

/// Reads `options` (`a{sv}`) that are all booleans into `flags`; an unknown key
/// or a value of another type is refused, naming it.
pub fn bool_options(
    options: HashMap<String, zbus::zvariant::OwnedValue>,
    what: &str,
    flags: &mut [(&str, &mut bool)],
) -> Result<(), DbusError> {
    for (key, value) in options {
        let Some((_, flag)) = flags.iter_mut().find(|(name, _)| *name == key) else {
            return Err(DbusError::InvalidArgument(format!(
                "unknown {what} option {}",
                crate::workspace::shown(&key)
            )));
        };
        **flag = bool::try_from(value).map_err(|_| {
            DbusError::InvalidArgument(format!(
                "{what} option {} must be a boolean",
                crate::workspace::shown(&key)
            ))
        })?;
    }
    Ok(())
}

/// Takes the remote cache options out of `options` into `remotes`: "user-config"
/// (s, the absolute path of the caller's configuration file, read with the
/// caller's permissions) and "remote" (b, false: use no remote cache).
pub fn remote_options(
    options: &mut HashMap<String, zbus::zvariant::OwnedValue>,
    what: &str,
    remotes: &mut crate::manager::RemoteOptions,
) -> Result<(), DbusError> {
    if let Some(value) = options.remove("user-config") {
        let path = String::try_from(value).map_err(|_| {
            DbusError::InvalidArgument(format!("{what} option \"user-config\" must be a string"))
        })?;
        bounded("user configuration path", &path)?;
        remotes.user_config = (!path.is_empty()).then(|| PathBuf::from(path));
    }
    if let Some(value) = options.remove("remote") {
        let on = bool::try_from(value).map_err(|_| {
            DbusError::InvalidArgument(format!("{what} option \"remote\" must be a boolean"))
        })?;
        remotes.disabled = !on;
    }
    Ok(())
}

/// A dictionary as D-Bus returns it (`a{sv}`) from named plain values: new
/// keys can be added without changing a signature.
pub fn dict(
    pairs: Vec<(&str, zbus::zvariant::Value<'_>)>,
) -> HashMap<String, zbus::zvariant::OwnedValue> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.try_to_owned().expect("plain values have no descriptors"),
            )
        })
        .collect()
}

/// Named counts as D-Bus returns them (`a{st}`): new ones can be added without
/// changing a method's signature.
pub fn counts<const N: usize>(pairs: [(&str, u64); N]) -> HashMap<String, u64> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A descriptor a client passed, made close-on-exec: zbus receives descriptors
/// without `MSG_CMSG_CLOEXEC`, so without this every child the daemon starts
/// (fuse-overlayfs, a build's sandbox) would inherit the clients' sources,
/// mount points and terminals.
pub fn received(fd: zbus::zvariant::OwnedFd) -> OwnedFd {
    let fd: OwnedFd = fd.into();
    if let Err(e) = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC) {
        tracing::warn!(error = %e, "cannot make a received descriptor close-on-exec");
    }
    fd
}
