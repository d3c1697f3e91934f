//! The daemon's own configuration file (`wsd --config`, by default
//! `/etc/ws/wsd.toml` for a root daemon): what only the machine's admin
//! decides, read with the same code as `ws.toml`, for the same errors
//! (docs/security.md, "Reuse across users").

use std::path::Path;
use std::time::Duration;

use toml::de::DeValue;

use super::ProjectError;
use super::parse::{self, Source, Value, a, entries};
use super::remotes::{RemoteSpec, read_remotes};
use crate::remote::DEFAULT_MAX_BLOB;
use crate::sandbox::TmpfsLimits;

/// The keys of the daemon's configuration file.
const DAEMON_KEYS: &[&str] = &["trusted-remote", "limits"];
/// The keys of `[limits]`, in the order docs/security.md lists them.
const LIMITS_KEYS: &[&str] = &[
    "max-connections-per-user",
    "max-connections",
    "handshake-timeout-seconds",
    "max-message-bytes",
    "max-long-operations-per-user",
    "max-imports",
    "sandbox-tmpfs-size",
    "sandbox-tmpfs-inodes",
    "remote-blob-size",
];
/// The largest message zbus reads at all (its own cap, a private constant).
const ZBUS_MAX_MESSAGE: u64 = 128 << 20;

/// What the daemon's configuration file says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The remote caches whose results every user may reuse: a pull from one
    /// of them (as a user's or project's remote with the same URL, instance
    /// and server certificate) is recorded as the daemon's, not the caller's.
    pub trusted_remotes: Vec<RemoteSpec>,
    /// What one client, and all of them, may hold of the daemon (`[limits]`).
    pub limits: Limits,
}

/// How much of the daemon its socket's clients may hold (docs/security.md,
/// "The daemon survives its clients"): the `[limits]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections on the socket one uid may have open at once
    /// (`max-connections-per-user`).
    pub connections_per_user: usize,
    /// Connections on the socket open at once, all uids together
    /// (`max-connections`).
    pub connections: usize,
    /// How long a client has from connecting to finishing the authentication
    /// handshake (`handshake-timeout-seconds`).
    pub handshake_timeout: Duration,
    /// The largest D-Bus message a client may send on the socket, headers,
    /// padding and body together (`max-message-bytes`).
    pub message_bytes: u32,
    /// Long operations (imports, transfers, builds) of one user at once
    /// (`max-long-operations-per-user`; see `manager::long_work`).
    pub long_operations_per_user: usize,
    /// Imports at once, of all users (`max-imports`; default: the CPUs).
    pub imports: usize,
    /// The most each in-memory filesystem of a build's sandbox may hold, and
    /// what an element gets unless it asks for less (`sandbox-tmpfs-size`,
    /// `sandbox-tmpfs-inodes`).
    pub sandbox_tmpfs: TmpfsLimits,
    /// The largest blob a pull takes from a remote (`remote-blob-size`).
    pub remote_blob_bytes: u64,
}

impl Default for Limits {
    /// For a shared machine: a user's `ws` commands, IDE and scripts need a few
    /// connections each; the daemon's descriptors (its unit gives it 65536)
    /// must last beyond every connection; a client handshakes in milliseconds;
    /// the daemon's calls carry names, paths and descriptors, never file
    /// contents.
    fn default() -> Limits {
        Limits {
            connections_per_user: 64,
            connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            message_bytes: 16 << 20,
            long_operations_per_user: 4,
            imports: std::thread::available_parallelism().map_or(2, |n| n.get()),
            sandbox_tmpfs: TmpfsLimits::DEFAULT,
            remote_blob_bytes: DEFAULT_MAX_BLOB,
        }
    }
}

impl DaemonConfig {
    /// Whether `spec` is one of the trusted remotes: the same server, checked
    /// the same way (its client credentials may differ).
    pub fn trusts(&self, spec: &RemoteSpec) -> bool {
        self.trusted_remotes.iter().any(|t| {
            t.url == spec.url && t.instance == spec.instance && t.server_cert == spec.server_cert
        })
    }
}

/// Parses the daemon's configuration file (`text`, the content of `file`).
pub fn parse_daemon_config(file: &Path, text: &str) -> Result<DaemonConfig, ProjectError> {
    let src = Source::new(file, text);
    let root = parse::document(&src)?;
    let mut config = DaemonConfig::default();
    for (key, value) in entries(root.get_ref()) {
        match key.get_ref().as_ref() {
            "trusted-remote" => config.trusted_remotes = read_remotes(&src, value)?,
            "limits" => config.limits = read_limits(&src, value)?,
            _ => {
                return Err(src.unknown_key(key, "at the top level".to_owned(), DAEMON_KEYS));
            }
        }
    }
    Ok(config)
}

/// The `[limits]` table: each key optional, its default otherwise.
fn read_limits(src: &Source<'_>, value: &Value<'_>) -> Result<Limits, ProjectError> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(src.invalid(
            value.span(),
            format!(
                "\"limits\" must be a table, not {}; write a [limits] table",
                a(value)
            ),
        ));
    };
    let mut limits = Limits::default();
    for (key, value) in entries(table) {
        let name: &str = key.get_ref().as_ref();
        match name {
            "max-connections-per-user" => {
                limits.connections_per_user = whole(src, value, name, 1, u32::MAX.into())? as usize
            }
            "max-connections" => {
                limits.connections = whole(src, value, name, 1, u32::MAX.into())? as usize
            }
            "handshake-timeout-seconds" => {
                limits.handshake_timeout = Duration::from_secs(whole(src, value, name, 1, 3600)?)
            }
            "max-message-bytes" => {
                limits.message_bytes = whole(src, value, name, 4096, ZBUS_MAX_MESSAGE)? as u32
            }
            "max-long-operations-per-user" => {
                limits.long_operations_per_user = whole(src, value, name, 1, 1024)? as usize
            }
            "max-imports" => limits.imports = whole(src, value, name, 1, 1024)? as usize,
            "sandbox-tmpfs-size" => {
                limits.sandbox_tmpfs.size = size(src, value, name, 1 << 20)?;
            }
            "sandbox-tmpfs-inodes" => {
                limits.sandbox_tmpfs.inodes = whole(src, value, name, 1000, u32::MAX.into())?;
            }
            "remote-blob-size" => limits.remote_blob_bytes = size(src, value, name, 1 << 20)?,
            _ => return Err(src.unknown_key(key, "in [limits]".to_owned(), LIMITS_KEYS)),
        }
    }
    Ok(limits)
}

/// A size of at least `min` bytes (a number, or a string with a unit: "2G"),
/// the value of `key` in `[limits]`.
fn size(src: &Source<'_>, value: &Value<'_>, key: &str, min: u64) -> Result<u64, ProjectError> {
    let bytes = match value.get_ref() {
        DeValue::Integer(n) => {
            u64::from_str_radix(n.as_str(), n.radix()).map_err(|e| e.to_string())
        }
        DeValue::String(text) => super::size::parse_size(text),
        _ => Err(format!("it must be a size like \"2G\", not {}", a(value))),
    };
    match bytes {
        Ok(n) if n >= min => Ok(n),
        Ok(n) => Err(src.invalid(
            value.span(),
            format!(
                "{key:?} in [limits] must be at least {}, not {}",
                super::size::shown_size(min),
                super::size::shown_size(n)
            ),
        )),
        Err(why) => Err(src.invalid(value.span(), format!("{key:?} in [limits]: {why}"))),
    }
}

/// A whole number from `min` to `max`, the value of `key` in `[limits]`.
fn whole(
    src: &Source<'_>,
    value: &Value<'_>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<u64, ProjectError> {
    let number = match value.get_ref() {
        DeValue::Integer(n) => u64::from_str_radix(n.as_str(), n.radix()).ok(),
        _ => None,
    };
    match number {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(src.invalid(
            value.span(),
            format!(
                "{key:?} in [limits] must be a whole number from {min} to {max}, not {}",
                match value.get_ref() {
                    DeValue::Integer(n) => n.to_string(),
                    _ => a(value),
                }
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, cert: Option<&str>) -> RemoteSpec {
        let text = match cert {
            Some(cert) => {
                format!("[[trusted-remote]]\nurl = \"{url}\"\nserver-cert = \"{cert}\"\n")
            }
            None => format!("[[trusted-remote]]\nurl = \"{url}\"\n"),
        };
        parse_daemon_config(Path::new("/etc/ws/wsd.toml"), &text)
            .unwrap()
            .trusted_remotes
            .remove(0)
    }

    #[test]
    fn a_remote_is_trusted_only_as_the_admin_declared_it() {
        let config = DaemonConfig {
            trusted_remotes: vec![spec("grpcs://cache.example:443", Some("/etc/ws/ca.pem"))],
            ..DaemonConfig::default()
        };
        assert!(config.trusts(&spec("grpcs://cache.example:443", Some("/etc/ws/ca.pem"))));
        // Another CA could vouch for another server under that name.
        assert!(!config.trusts(&spec("grpcs://cache.example:443", Some("/home/u/ca.pem"))));
        assert!(!config.trusts(&spec("grpcs://cache.example:443", None)));
        assert!(!config.trusts(&spec("grpcs://other.example:443", Some("/etc/ws/ca.pem"))));
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_keys_there_are() {
        let err = parse_daemon_config(Path::new("/etc/ws/wsd.toml"), "remote = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("trusted-remote"), "{text}");
        assert!(text.contains("/etc/ws/wsd.toml"), "{text}");
    }

    fn limits(text: &str) -> Result<Limits, String> {
        parse_daemon_config(Path::new("/etc/ws/wsd.toml"), text)
            .map(|config| config.limits)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn limits_default_for_a_shared_machine_and_each_may_be_set() {
        assert_eq!(limits("").unwrap(), Limits::default());
        assert_eq!(limits("[limits]\n").unwrap(), Limits::default());
        let set = limits(
            "[limits]\nmax-connections-per-user = 8\nmax-connections = 100\n\
             handshake-timeout-seconds = 2\nmax-message-bytes = 1_048_576\n\
             max-long-operations-per-user = 2\nmax-imports = 3\n\
             sandbox-tmpfs-size = \"512M\"\nsandbox-tmpfs-inodes = 10000\n\
             remote-blob-size = \"4G\"\n",
        )
        .unwrap();
        assert_eq!(
            set,
            Limits {
                connections_per_user: 8,
                connections: 100,
                handshake_timeout: Duration::from_secs(2),
                message_bytes: 1 << 20,
                long_operations_per_user: 2,
                imports: 3,
                sandbox_tmpfs: TmpfsLimits {
                    size: 512 << 20,
                    inodes: 10_000,
                },
                remote_blob_bytes: 4 << 30,
            }
        );
        // One key set, the others their defaults.
        assert_eq!(
            limits("[limits]\nmax-connections = 10\n").unwrap(),
            Limits {
                connections: 10,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn a_limit_out_of_range_or_unknown_is_refused_with_where_and_why() {
        for (text, says) in [
            ("[limits]\nmax-connections = 0\n", "from 1 to"),
            (
                "[limits]\nsandbox-tmpfs-size = \"1K\"\n",
                "at least 1M, not 1K",
            ),
            ("[limits]\nremote-blob-size = \"2X\"\n", "unknown unit"),
            ("[limits]\nmax-connections = -1\n", "not -1"),
            (
                "[limits]\nmax-connections-per-user = \"8\"\n",
                "not a string",
            ),
            ("[limits]\nhandshake-timeout-seconds = 1.5\n", "not a float"),
            (
                "[limits]\nhandshake-timeout-seconds = 0\n",
                "from 1 to 3600",
            ),
            // Beyond what zbus reads at all.
            (
                "[limits]\nmax-message-bytes = 268435456\n",
                "from 4096 to 134217728",
            ),
            ("limits = 3\n", "write a [limits] table"),
        ] {
            let err = limits(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(err.contains("/etc/ws/wsd.toml:"), "{text:?}: {err}");
        }
        let err = limits("[limits]\nmax-sessions = 3\n").unwrap_err();
        for key in LIMITS_KEYS {
            assert!(err.contains(key), "{err}");
        }
        assert!(err.contains("max-sessions"), "{err}");
    }
}
