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
use crate::remote::{DigestMap, Remote, RemoteError};

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
#[derive(Debug)]
pub(super) struct Remotes {
    connections: Mutex<HashMap<(String, String), Arc<Remote>>>,
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

impl Manager {
    /// The remotes a request of `caller` uses: the user's configuration first,
    /// then the project's (`project`, when the request has one); a remote both
    /// name (same URL and instance) is the user's.
    pub(crate) fn remotes_for(
        &self,
        caller: Caller,
        project: &[RemoteSpec],
        options: &RemoteOptions,
    ) -> Result<Vec<RemoteSpec>, Error> {
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
        Ok(specs)
    }

    /// The connection to `spec`'s remote, made on first use (reading its
    /// capabilities) and kept: tonic reconnects a broken channel by itself.
    pub(crate) fn remote(&self, spec: &RemoteSpec) -> Result<Arc<Remote>, RemoteError> {
        let key = (spec.url.clone(), spec.instance.clone());
        if let Some(remote) = self.lock_connections().get(&key) {
            return Ok(remote.clone());
        }
        // Not under the lock: connecting waits for the server.
        let remote = Arc::new(Remote::connect(
            runtime().handle().clone(),
            &spec.url,
            &spec.instance,
        )?);
        Ok(self.lock_connections().entry(key).or_insert(remote).clone())
    }

    /// The BLAKE3 ↔ SHA-256 digest table.
    pub(crate) fn digest_map(&self) -> &DigestMap {
        &self.remotes.map
    }

    fn lock_connections(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Remote>>> {
        self.remotes
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
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
