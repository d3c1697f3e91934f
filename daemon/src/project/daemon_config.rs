//! The daemon's own configuration file (`wsd --config`, by default
//! `/etc/ws/wsd.toml` for a root daemon): what only the machine's admin
//! decides, read with the same code as `ws.toml`, for the same errors
//! (docs/security.md, "Reuse across users").

use std::path::Path;

use super::ProjectError;
use super::parse::{self, Source, entries};
use super::remotes::{RemoteSpec, read_remotes};

/// The keys of the daemon's configuration file.
const DAEMON_KEYS: &[&str] = &["trusted-remote"];

/// What the daemon's configuration file says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The remote caches whose results every user may reuse: a pull from one
    /// of them (as a user's or project's remote with the same URL, instance
    /// and server certificate) is recorded as the daemon's, not the caller's.
    pub trusted_remotes: Vec<RemoteSpec>,
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
            _ => {
                return Err(src.unknown_key(key, "at the top level".to_owned(), DAEMON_KEYS));
            }
        }
    }
    Ok(config)
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
}
