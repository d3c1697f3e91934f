//! Where a remote is and how to reach it: its URL, the REAPI instance, and for a
//! `grpcs://` remote the TLS settings and credentials ([`TlsConfig`]).
//!
//! **Bytes, not paths.** A `TlsConfig` holds PEM bytes and the token itself. The
//! daemon runs as root for many users and must never read a file because a user
//! named it: whoever builds the configuration reads the files, with the rights of
//! the user they belong to, and hands the contents over.
//!
//! Everything is checked when the connection is made ([`super::Remote::connect_with`]):
//! a PEM block that does not parse, a key without a certificate, a token that
//! cannot be a header value, or TLS settings for a plain `grpc://` URL are errors
//! that name the remote; nothing is connected then.

use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::error::RemoteError;

/// A remote to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `grpc://HOST:PORT` (or `http://`) for plain gRPC, `grpcs://HOST:PORT` (or
    /// `https://`) for TLS.
    pub url: String,
    /// The REAPI instance name, often `""`.
    pub instance: String,
    /// TLS settings and credentials; only for a `grpcs://` URL. A `grpcs://` URL
    /// without them trusts the system's root certificates and sends no token.
    pub tls: Option<TlsConfig>,
}

impl Endpoint {
    /// A remote at `url`, instance `instance`, with no TLS settings.
    pub fn new(url: impl Into<String>, instance: impl Into<String>) -> Endpoint {
        Endpoint {
            url: url.into(),
            instance: instance.into(),
            tls: None,
        }
    }

    /// The same remote with these TLS settings.
    pub fn with_tls(self, tls: TlsConfig) -> Endpoint {
        Endpoint {
            tls: Some(tls),
            ..self
        }
    }
}

/// TLS settings and credentials of a `grpcs://` remote, as bytes (see the module
/// doc). Its `Debug` shows neither the key nor the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate(s) that may sign the server's, PEM (one or more
    /// `CERTIFICATE` blocks). `None`: the system's root certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key, for a server that requires mutual TLS.
    pub client: Option<ClientIdentity>,
    /// An access token, sent as `authorization: Bearer TOKEN` with every call
    /// (bazel-remote, Buildbarn and BuildGrid's JWT authorization take one).
    pub token: Option<String>,
}

/// A client certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate (chain), `CERTIFICATE` blocks.
    pub cert_pem: Vec<u8>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .field("client", &self.client)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What goes with every call: the `authorization` header, if any.
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How to talk to a remote, checked: the TLS configuration for tonic (`None`:
/// plain gRPC) and the credentials for every call.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) tls: Option<ClientTlsConfig>,
    pub(crate) credentials: Credentials,
}

impl Endpoint {
    /// Checks the TLS settings against the URL's scheme (`tls`: `grpcs://`) and
    /// turns them into what tonic takes.
    pub(crate) fn transport(&self, tls: bool) -> Result<Transport, RemoteError> {
        let bad = |problem: String| RemoteError::BadTls {
            url: self.url.clone(),
            problem,
        };
        let Some(settings) = &self.tls else {
            return Ok(Transport {
                tls: tls.then(|| ClientTlsConfig::new().with_native_roots()),
                credentials: Credentials::default(),
            });
        };
        if !tls {
            return Err(bad(
                "TLS settings (a CA, a client certificate or a token) were given for a plain \
                 gRPC URL; use grpcs://HOST:PORT, or drop the settings"
                    .to_owned(),
            ));
        }
        let mut config = ClientTlsConfig::new();
        config = match &settings.ca_pem {
            Some(pem) => {
                certificates(pem)
                    .map_err(|problem| bad(format!("the CA certificate: {problem}")))?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        if let Some(client) = &settings.client {
            certificates(&client.cert_pem)
                .map_err(|problem| bad(format!("the client certificate: {problem}")))?;
            PrivateKeyDer::from_pem_slice(&client.key_pem).map_err(|e| {
                bad(format!(
                    "the client key: no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {e}"
                ))
            })?;
            config = config.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
        }
        let authorization = match &settings.token {
            None => None,
            Some(token) => {
                let token = token.trim();
                if token.is_empty() {
                    return Err(bad("the access token is empty".to_owned()));
                }
                // The token itself never goes into a message.
                let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    bad(
                        "the access token holds characters a gRPC header cannot carry \
                         (only visible ASCII)"
                            .to_owned(),
                    )
                })?;
                Some(value)
            }
        };
        Ok(Transport {
            tls: Some(config),
            credentials: Credentials { authorization },
        })
    }
}

/// Checks that `pem` holds one or more certificates and nothing unreadable.
fn certificates(pem: &[u8]) -> Result<usize, String> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("unreadable PEM: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("no PEM CERTIFICATE block found".to_owned());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let tls = TlsConfig {
            ca_pem: Some(b"ca".to_vec()),
            client: Some(ClientIdentity {
                cert_pem: b"cert".to_vec(),
                key_pem: b"the-private-key".to_vec(),
            }),
            token: Some("the-token".to_owned()),
        };
        let text = format!("{:?}", Endpoint::new("grpcs://h:1", "").with_tls(tls));
        assert!(
            !text.contains("the-private-key") && !text.contains("the-token"),
            "{text}"
        );
        assert!(text.contains("redacted"), "{text}");
    }

    #[test]
    fn settings_are_checked() {
        let endpoint = |tls: TlsConfig| Endpoint::new("grpcs://h:1", "").with_tls(tls);
        let problem = |endpoint: Endpoint, tls: bool| {
            let err = endpoint.transport(tls).unwrap_err().to_string();
            assert!(err.contains(&endpoint.url), "{err}");
            err
        };
        let err = problem(
            endpoint(TlsConfig {
                token: Some("t".into()),
                ..Default::default()
            }),
            false,
        );
        assert!(err.contains("grpcs://"), "{err}");
        let err = problem(
            endpoint(TlsConfig {
                ca_pem: Some(b"not a certificate".to_vec()),
                ..Default::default()
            }),
            true,
        );
        assert!(
            err.contains("CA certificate") && err.contains("no PEM"),
            "{err}"
        );
        let err = problem(
            endpoint(TlsConfig {
                token: Some("new\nline".into()),
                ..Default::default()
            }),
            true,
        );
        assert!(
            err.contains("access token") && !err.contains("new"),
            "{err}"
        );
        // No settings: plain, or TLS with the system's roots.
        let plain = Endpoint::new("grpc://h:1", "").transport(false).unwrap();
        assert!(plain.tls.is_none());
        let tls = Endpoint::new("grpcs://h:1", "").transport(true).unwrap();
        assert!(tls.tls.is_some() && tls.credentials.authorization.is_none());
    }
}
