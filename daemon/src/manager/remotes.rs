//! The remote caches a request uses: the user's configuration (a file the client
//! names, read with the caller's permissions) and the project's `[[remote]]`
//! tables, connected once per daemon and kept (docs/remote.md).
//!
//! A remote that cannot be reached is never fatal to local work: builds note it
//! and go on (see `build::remote_cache`); only `ws push` and `ws pull` fail with
//! its error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Error;
use crate::manager::{Caller, Manager};
use crate::project::{RemoteSpec, parse_user_config};
use crate::remote::{ClientIdentity, DigestMap, Endpoint, Remote, TlsConfig};

/// How a request uses remote caches, as the client asks.
#[derive(Clone, Debug, Default)]
pub struct RemoteOptions {
    /// The user's configuration file (absolute), read as the caller; a file
    /// that does not exist declares no remote.
    pub user_config: Option<PathBuf>,
    /// Use no remote at all (`--no-remote`).
    pub disabled: bool,
}

/// The daemon's connections to remote caches, and the digest table they share.
/// A connection is kept per endpoint: URL, instance and credentials, so that
/// callers with other certificates or tokens never share one.
#[derive(Debug)]
pub(super) struct Remotes {
    connections: Mutex<HashMap<blake3::Hash, Arc<Remote>>>,
    pub(super) map: DigestMap,
}

impl Remotes {
    pub(super) fn new(map: DigestMap) -> Remotes {
        Remotes {
            connections: Mutex::new(HashMap::new()),
            map,
        }
    }
}

/// The runtime that drives every remote call (the gRPC client is async; the
/// manager's operations are blocking, see `crate::remote`). A static, so that
/// it is never dropped on an async thread; one worker is enough, since each call
/// is driven by the blocking thread that waits for it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wsd-remote")
            .enable_all()
            .build()
            .expect("a tokio runtime for remote calls")
    })
}

/// A remote a request uses: as configured, with its TLS and token files read
/// as the caller when the request began, before it took any lock (a slow file
/// never holds up anyone else's work). A file that cannot be read makes that
/// remote fail when used, like one that cannot be reached: never fatal to local
/// work.
#[derive(Clone, Debug)]
pub(crate) struct UsedRemote {
    spec: RemoteSpec,
    endpoint: Result<Endpoint, ReadFailure>,
}

impl std::ops::Deref for UsedRemote {
    type Target = RemoteSpec;
    fn deref(&self) -> &RemoteSpec {
        &self.spec
    }
}

/// A file of a remote's that could not be read, kept to be reported when the
/// remote is used.
#[derive(Clone, Debug)]
struct ReadFailure {
    op: &'static str,
    path: PathBuf,
    kind: std::io::ErrorKind,
    message: String,
}

impl ReadFailure {
    fn error(&self) -> Error {
        Error::Io {
            op: self.op,
            path: self.path.clone(),
            source: std::io::Error::new(self.kind, self.message.clone()),
        }
    }
}

impl Manager {
    /// The remotes a request of `caller` uses: the user's configuration first,
    /// then the project's (`project`, when the request has one); a remote both
    /// name (same URL and instance) is the user's. Reads every file they name,
    /// as `caller`: call it before taking the store guard.
    pub(crate) fn remotes_for(
        &self,
        caller: Caller,
        project: &[RemoteSpec],
        options: &RemoteOptions,
    ) -> Result<Vec<UsedRemote>, Error> {
        if options.disabled {
            return Ok(Vec::new());
        }
        let mut specs = match &options.user_config {
            Some(path) => read_user_config(caller, path)?,
            None => Vec::new(),
        };
        for spec in project {
            if !specs
                .iter()
                .any(|s| s.url == spec.url && s.instance == spec.instance)
            {
                specs.push(spec.clone());
            }
        }
        Ok(specs
            .into_iter()
            .map(|spec| UsedRemote {
                endpoint: endpoint(caller, &spec),
                spec,
            })
            .collect())
    }

    /// The connection to `used`'s remote, made on first use (reading its
    /// capabilities) and kept: tonic reconnects a broken channel by itself.
    pub(crate) fn remote(&self, used: &UsedRemote) -> Result<Arc<Remote>, Error> {
        let endpoint = used.endpoint.as_ref().map_err(ReadFailure::error)?;
        let key = endpoint_key(endpoint);
        if let Some(remote) = self.lock_connections().get(&key) {
            return Ok(remote.clone());
        }
        // Not under the lock: connecting waits for the server.
        let remote = Remote::connect_with(runtime().handle().clone(), endpoint)?
            .with_max_blob(self.config.limits.remote_blob_bytes);
        let remote = Arc::new(remote);
        Ok(self.lock_connections().entry(key).or_insert(remote).clone())
    }

    /// The BLAKE3 ↔ SHA-256 digest table.
    pub(crate) fn digest_map(&self) -> &DigestMap {
        &self.remotes.map
    }

    fn lock_connections(&self) -> std::sync::MutexGuard<'_, HashMap<blake3::Hash, Arc<Remote>>> {
        self.remotes
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// `spec` as the client connects to it: its certificate, key and token files
/// read as `caller` (the daemon never reads a file with its own rights because
/// a configuration names it), as input files (`crate::input_file`).
fn endpoint(caller: Caller, spec: &RemoteSpec) -> Result<Endpoint, ReadFailure> {
    let endpoint = Endpoint::new(&spec.url, &spec.instance);
    if !spec.uses_tls() {
        return Ok(endpoint);
    }
    let read = |path: &Option<PathBuf>, op: &'static str| -> Result<Option<Vec<u8>>, ReadFailure> {
        let Some(path) = path else { return Ok(None) };
        let failure = |e: std::io::Error| ReadFailure {
            op,
            path: path.clone(),
            kind: e.kind(),
            message: e.to_string(),
        };
        crate::access::read_file_as(caller, path)
            .map_err(failure)?
            .map(Some)
            .ok_or_else(|| failure(std::io::Error::from(std::io::ErrorKind::NotFound)))
    };
    let ca_pem = read(&spec.server_cert, "read the remote's server-cert")?;
    let client = match (
        read(&spec.client_cert, "read the remote's client-cert")?,
        read(&spec.client_key, "read the remote's client-key")?,
    ) {
        (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity { cert_pem, key_pem }),
        _ => None,
    };
    let token = read(
        &spec.access_token_file,
        "read the remote's access-token-file",
    )?
    .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned());
    Ok(endpoint.with_tls(TlsConfig {
        ca_pem,
        client,
        token,
    }))
}

/// What names a connection: everything an endpoint holds.
fn endpoint_key(endpoint: &Endpoint) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(endpoint.url.as_bytes());
    part(endpoint.instance.as_bytes());
    if let Some(tls) = &endpoint.tls {
        part(tls.ca_pem.as_deref().unwrap_or_default());
        if let Some(client) = &tls.client {
            part(&client.cert_pem);
            part(&client.key_pem);
        }
        part(tls.token.as_deref().unwrap_or_default().as_bytes());
    }
    h.finalize()
}

/// The remotes of the user's configuration file at `path`, read as `caller`.
fn read_user_config(caller: Caller, path: &std::path::Path) -> Result<Vec<RemoteSpec>, Error> {
    if !path.is_absolute() {
        return Err(Error::Invalid {
            what: "user configuration",
            problem: format!("{} is not an absolute path", path.display()),
        });
    }
    let Some(bytes) = crate::access::read_file_as(caller, path).map_err(|source| Error::Io {
        op: "read the user configuration",
        path: path.to_owned(),
        source,
    })?
    else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8(bytes).map_err(|_| Error::Invalid {
        what: "user configuration",
        problem: format!("{} is not UTF-8", path.display()),
    })?;
    Ok(parse_user_config(path, &text)?)
}
