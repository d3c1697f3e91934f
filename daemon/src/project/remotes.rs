//! Remote caches as configured: the `[[remote]]` tables of `ws.toml` and of the
//! user's configuration file (`~/.config/ws/config.toml`), read by the same code
//! so that both take the same keys and give the same errors (docs/remote.md).

use std::path::{Path, PathBuf};

use toml::de::DeValue;

use super::parse::{self, Source, Value, a, entries, string};
use super::{Location, ProjectError};

/// The keys of a `[[remote]]` table, in the order the docs list them.
const REMOTE_KEYS: &[&str] = &[
    "url",
    "instance",
    "pull",
    "push",
    "server-cert",
    "client-cert",
    "client-key",
    "access-token-file",
];
/// The keys of the user's configuration file.
const USER_KEYS: &[&str] = &["remote"];
/// The URL schemes a remote may have: plain gRPC, and gRPC over TLS.
const PLAIN: &[&str] = &["grpc://", "http://"];
const TLS: &[&str] = &["grpcs://", "https://"];

/// One remote cache, as a configuration file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    /// `grpc://HOST:PORT`, or `grpcs://HOST:PORT` for TLS.
    pub url: String,
    /// The REAPI instance name (often `""`).
    pub instance: String,
    /// Whether builds look results up there (default true).
    pub pull: bool,
    /// Whether builds upload what they build there, and `ws push` may (default
    /// false: most machines only read a team's cache).
    pub push: bool,
    /// PEM files, resolved against the configuration file's directory: the CA
    /// that signs the server's certificate, and a client certificate and key.
    pub server_cert: Option<PathBuf>,
    /// The client certificate (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// Its key.
    pub client_key: Option<PathBuf>,
    /// A file holding an access token, sent as `authorization: Bearer TOKEN`.
    pub access_token_file: Option<PathBuf>,
    /// Where it is declared, for messages.
    pub origin: Location,
}

impl RemoteSpec {
    /// Whether the URL asks for TLS.
    pub fn uses_tls(&self) -> bool {
        TLS.iter().any(|s| self.url.starts_with(s))
    }
}

/// Parses the user's configuration file (`text`, the content of `file`).
pub fn parse_user_config(file: &Path, text: &str) -> Result<Vec<RemoteSpec>, ProjectError> {
    let src = Source::new(file, text);
    let root = parse::document(&src)?;
    let mut remotes = Vec::new();
    for (key, value) in entries(root.get_ref()) {
        match key.get_ref().as_ref() {
            "remote" => remotes = read_remotes(&src, value)?,
            _ => {
                return Err(src.unknown_key(key, "at the top level".to_owned(), USER_KEYS));
            }
        }
    }
    Ok(remotes)
}

/// The `[[remote]]` array of tables.
pub(super) fn read_remotes(
    src: &Source<'_>,
    value: &Value<'_>,
) -> Result<Vec<RemoteSpec>, ProjectError> {
    let DeValue::Array(items) = value.get_ref() else {
        return Err(src.invalid(
            value.span(),
            format!(
                "\"remote\" must be an array of tables, not {}; write [[remote]] tables",
                a(value)
            ),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| read_remote(src, i + 1, item))
        .collect()
}

fn read_remote(src: &Source<'_>, n: usize, value: &Value<'_>) -> Result<RemoteSpec, ProjectError> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(src.invalid(
            value.span(),
            format!(
                "remote {n} must be a table, not {}; write a [[remote]] table",
                a(value)
            ),
        ));
    };
    let of = |key: &str| format!("{key:?} in remote {n}");
    let dir = src.file().parent().unwrap_or(Path::new(""));
    let mut spec = RemoteSpec {
        url: String::new(),
        instance: String::new(),
        pull: true,
        push: false,
        server_cert: None,
        client_cert: None,
        client_key: None,
        access_token_file: None,
        origin: src.at(value.span().start),
    };
    let mut url_span = None;
    for (key, value) in entries(table) {
        let name: &str = key.get_ref().as_ref();
        match name {
            "url" => {
                spec.url = string(src, value, &of(name))?;
                url_span = Some(value.span());
            }
            "instance" => spec.instance = string(src, value, &of(name))?,
            "pull" | "push" => {
                let DeValue::Boolean(on) = *value.get_ref() else {
                    return Err(src.invalid(
                        value.span(),
                        format!("{} must be true or false, not {}", of(name), a(value)),
                    ));
                };
                *if name == "pull" {
                    &mut spec.pull
                } else {
                    &mut spec.push
                } = on;
            }
            "server-cert" | "client-cert" | "client-key" | "access-token-file" => {
                let path = dir.join(string(src, value, &of(name))?);
                *match name {
                    "server-cert" => &mut spec.server_cert,
                    "client-cert" => &mut spec.client_cert,
                    "client-key" => &mut spec.client_key,
                    _ => &mut spec.access_token_file,
                } = Some(path);
            }
            _ => {
                return Err(src.unknown_key(key, format!("in remote {n}"), REMOTE_KEYS));
            }
        }
    }
    let Some(url_span) = url_span else {
        return Err(src.invalid(
            value.span(),
            format!("remote {n} has no \"url\"; add url = \"grpc://HOST:PORT\""),
        ));
    };
    if let Some(problem) = url_problem(&spec.url) {
        return Err(src.invalid(url_span, format!("{} {:?} {problem}", of("url"), spec.url)));
    }
    let tls_files = spec.server_cert.is_some()
        || spec.client_cert.is_some()
        || spec.access_token_file.is_some();
    if tls_files && !spec.uses_tls() {
        return Err(src.invalid(
            url_span,
            format!(
                "remote {n} names certificates or a token but its URL {:?} is not TLS (a token is never sent in the clear); write grpcs://",
                spec.url
            ),
        ));
    }
    if spec.client_cert.is_some() != spec.client_key.is_some() {
        return Err(src.invalid(
            value.span(),
            format!("remote {n} needs both \"client-cert\" and \"client-key\", or neither"),
        ));
    }
    Ok(spec)
}

/// What is wrong with a remote's URL, if anything.
fn url_problem(url: &str) -> Option<String> {
    let Some(rest) = PLAIN
        .iter()
        .chain(TLS)
        .find_map(|scheme| url.strip_prefix(scheme))
    else {
        return Some("is not a gRPC URL; write grpc://HOST:PORT (grpcs:// for TLS)".to_owned());
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    match authority.rsplit_once(':') {
        _ if authority.is_empty() || authority.contains('/') => {
            Some("must be SCHEME://HOST:PORT, with no path".to_owned())
        }
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => None,
        _ => Some("has no port; write grpc://HOST:PORT".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Result<Vec<RemoteSpec>, ProjectError> {
        parse_user_config(Path::new("/home/u/.config/ws/config.toml"), text)
    }

    #[test]
    fn remotes_parse_with_defaults_and_resolved_paths() {
        let remotes = user(
            "[[remote]]\nurl = \"grpc://cache:50051\"\n\n\
             [[remote]]\nurl = \"grpcs://ci.example:443\"\ninstance = \"main\"\npush = true\n\
             pull = false\nserver-cert = \"ca.pem\"\nclient-cert = \"/etc/me.pem\"\n\
             client-key = \"me.key\"\naccess-token-file = \"token\"\n",
        )
        .unwrap();
        assert_eq!(remotes.len(), 2);
        let plain = &remotes[0];
        assert_eq!(
            (plain.url.as_str(), plain.instance.as_str()),
            ("grpc://cache:50051", "")
        );
        assert!(plain.pull && !plain.push && !plain.uses_tls());
        assert_eq!(plain.origin.line(), Some(1));
        let tls = &remotes[1];
        assert!(!tls.pull && tls.push && tls.uses_tls());
        assert_eq!(tls.instance, "main");
        assert_eq!(
            tls.server_cert.as_deref(),
            Some(Path::new("/home/u/.config/ws/ca.pem"))
        );
        assert_eq!(tls.client_cert.as_deref(), Some(Path::new("/etc/me.pem")));
        assert_eq!(
            tls.access_token_file.as_deref(),
            Some(Path::new("/home/u/.config/ws/token"))
        );
    }

    #[test]
    fn mistakes_name_the_remote_the_key_and_the_line() {
        let cases = [
            (
                "[[remote]]\ninstance = \"\"\n",
                "1:1",
                "remote 1 has no \"url\"",
            ),
            (
                "[[remote]]\nurl = \"cache:50051\"\n",
                "2:7",
                "is not a gRPC URL",
            ),
            ("[[remote]]\nurl = \"grpc://cache\"\n", "2:7", "has no port"),
            ("[[remote]]\nurl = \"grpc://cache:1/x\"\n", "2:7", "no path"),
            (
                "[[remote]]\nurl = \"grpc://c:1\"\npush = \"yes\"\n",
                "3:8",
                "\"push\" in remote 1 must be true or false",
            ),
            (
                "[[remote]]\nurl = \"grpc://c:1\"\nserver-cert = \"ca.pem\"\n",
                "2:7",
                "is not TLS",
            ),
            (
                "[[remote]]\nurl = \"grpcs://c:1\"\nclient-cert = \"c.pem\"\n",
                "1:1",
                "both \"client-cert\" and \"client-key\"",
            ),
            (
                "[[remote]]\nurl = \"grpc://c:1\"\nadress = \"x\"\n",
                "3:1",
                "unknown key \"adress\" in remote 1",
            ),
            (
                "remote = \"grpc://c:1\"\n",
                "1:10",
                "write [[remote]] tables",
            ),
            ("[build]\n", "1:2", "unknown key \"build\" at the top level"),
        ];
        for (text, at, message) in cases {
            let e = user(text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/home/u/.config/ws/config.toml:{at}: ")),
                "{text:?}: {e}"
            );
            assert!(e.contains(message), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_project_file_declares_remotes_too() {
        let project = super::super::Project::parse(
            Path::new("/src/p/ws.toml"),
            "[[remote]]\nurl = \"grpc://127.0.0.1:50051\"\npush = true\n\n\
             [element.a]\nkind = \"import\"\nsources = \"a\"\n",
        )
        .unwrap();
        assert_eq!(project.remotes.len(), 1);
        assert!(project.remotes[0].push);
        assert_eq!(project.remotes[0].origin.line(), Some(1));
    }
}
