//! `RemoteError`: what talking to a remote cache can fail with. Every variant
//! names the remote (its URL) and, for a call, the gRPC method; blob errors name
//! the digest in the remote's space.

use treediff::{Digest, StoreError, TreeError};

use crate::db::DbError;

/// A remote cache operation failed. Nothing was recorded locally unless the
/// message says so: pulled objects enter the store only when all of them were
/// fetched and verified.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URL is not one this client speaks.
    #[error(
        "invalid remote cache URL {url:?}: {problem}; expected grpc://HOST:PORT, or grpcs://HOST:PORT for TLS"
    )]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The TLS settings or credentials given for a remote are unusable.
    #[error("remote cache {url}: bad TLS settings: {problem}; nothing was connected")]
    BadTls {
        /// The remote's URL.
        url: String,
        /// What is wrong (never the key or the token itself).
        problem: String,
    },
    /// A gRPC call failed as a whole (the server is unreachable, refused it, or
    /// broke off).
    #[error("remote cache {url}: {call} failed: {}: {}; {}", code_name(.status.code()), detail(.status), hint(url, .status))]
    Call {
        /// The remote's URL.
        url: String,
        /// The gRPC method (`ContentAddressableStorage.FindMissingBlobs`, ...).
        call: &'static str,
        /// The server's (or the transport's) status (boxed: it is large, and
        /// errors travel through every `Result`).
        status: Box<tonic::Status>,
    },
    /// The server offers no digest function this client can use.
    #[error(
        "remote cache {url} (instance {instance:?}) offers the digest functions {offered:?}; ws needs BLAKE3 or SHA256"
    )]
    NoDigestFunction {
        /// The remote's URL.
        url: String,
        /// The instance asked for.
        instance: String,
        /// What it offers, by name.
        offered: Vec<String>,
    },
    /// The server has no cache capabilities, or refuses updates to its action cache.
    #[error("remote cache {url} (instance {instance:?}): {problem}")]
    Unsupported {
        /// The remote's URL.
        url: String,
        /// The instance asked for.
        instance: String,
        /// What it lacks.
        problem: String,
    },
    /// A blob the operation needs is not on the server.
    #[error("remote cache {url}: blob {digest} is missing ({call})")]
    Missing {
        /// The remote's URL.
        url: String,
        /// The call that found it missing.
        call: &'static str,
        /// The blob, in the remote's digest space (`<hex>/<size>`).
        digest: String,
    },
    /// The server sent bytes that do not match the digest asked for.
    #[error(
        "remote cache {url}: blob {digest} from {call} is corrupt: {problem}; nothing was stored (the server's copy is damaged)"
    )]
    Corrupt {
        /// The remote's URL.
        url: String,
        /// The call that returned it.
        call: &'static str,
        /// The blob asked for, in the remote's digest space.
        digest: String,
        /// What does not match.
        problem: String,
    },
    /// A directory from the server is not a valid tree node.
    #[error("remote cache {url}: directory {digest} is invalid: {problem}; nothing was stored")]
    InvalidDirectory {
        /// The remote's URL.
        url: String,
        /// The directory, in the remote's digest space.
        digest: String,
        /// What is wrong.
        problem: String,
    },
    /// The server refused one blob of a batch upload.
    #[error("remote cache {url}: {call} refused blob {digest}: {code}: {message}")]
    Rejected {
        /// The remote's URL.
        url: String,
        /// The call.
        call: &'static str,
        /// The blob, in the remote's digest space.
        digest: String,
        /// The per-blob status code's name.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A pulled tree is not the tree asked for.
    #[error(
        "remote cache {url}: tree {remote} became {got} in the store, not the expected {expected}; nothing was stored"
    )]
    WrongTree {
        /// The remote's URL.
        url: String,
        /// The tree pulled, in the remote's space.
        remote: String,
        /// The local digest expected (boxed, like `got`: errors stay small).
        expected: Box<Digest>,
        /// The local digest it gave.
        got: Box<Digest>,
    },
    /// No remote digest is known for a local object (nothing pushed or pulled it).
    #[error(
        "no {space} digest is known for {digest}: push it first, or pull it by its remote digest"
    )]
    Unmapped {
        /// The local digest.
        digest: Digest,
        /// The remote's digest function.
        space: &'static str,
    },
    /// Reading or writing the local store failed.
    /// A blob the remote names is larger than the daemon takes from one.
    #[error(
        "remote cache {url}: blob {digest} claims {size} bytes, more than the {limit} a blob may have here; nothing was stored"
    )]
    TooLarge {
        /// The remote.
        url: String,
        /// The blob.
        digest: String,
        /// The size it claims.
        size: u64,
        /// The most the daemon takes.
        limit: u64,
    },
    /// The store's filesystem has too little space for what a pull needs.
    #[error(
        "remote cache {url}: the pull needs {needed} bytes and the store's filesystem has {available} free, {reserve} of which stay spare; nothing was stored: free some space (ws gc) and pull again"
    )]
    NoSpace {
        /// The remote.
        url: String,
        /// The bytes the blobs to fetch claim.
        needed: u64,
        /// The bytes free.
        available: u64,
        /// The bytes never used by a pull.
        reserve: u64,
    },
    #[error("the local store: {0}")]
    Store(#[from] StoreError),
    /// A local tree node is unreadable or invalid.
    #[error("the local store: {0}")]
    Tree(#[from] TreeError),
    /// The digest table in the database failed.
    #[error("the remote digest table: {0}")]
    Db(#[from] DbError),
}

impl RemoteError {
    /// Whether the error says a blob is absent or damaged on the server: for a
    /// cache lookup that is a miss, not a failure.
    pub fn is_miss(&self) -> bool {
        matches!(
            self,
            RemoteError::Missing { .. }
                | RemoteError::Corrupt { .. }
                | RemoteError::InvalidDirectory { .. }
                | RemoteError::WrongTree { .. }
        )
    }
}

/// A gRPC code as the spec names it (`UNAVAILABLE`, ...).
pub(crate) fn code_name(code: tonic::Code) -> String {
    let text = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A status's message and the transport errors under it ("tcp connect error:
/// Connection refused (os error 111)").
fn detail(status: &tonic::Status) -> String {
    chain_from(
        status.message().to_owned(),
        std::error::Error::source(status),
    )
}

/// An error and the errors under it, each once.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    chain_from(error.to_string(), error.source())
}

fn chain_from(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(error) = source {
        let part = error.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = error.source();
    }
    text
}

/// Whether a transport error is about TLS: a handshake refused, a certificate
/// not trusted, an alert from the server.
fn is_tls(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    ["certificate", "handshake", "tls", "alert"]
        .iter()
        .any(|word| detail.contains(word))
}

/// Whether a transport error says the server closed the connection under a call.
fn is_closed(detail: &str) -> bool {
    [
        "broken pipe",
        "connection reset",
        "connection closed",
        "stream closed",
    ]
    .iter()
    .any(|words| detail.contains(words))
}

/// What to do about a failed call, by its code (and for a transport error, whether
/// TLS failed).
fn hint(url: &str, status: &tonic::Status) -> &'static str {
    use tonic::Code;
    let tls_url = url.starts_with("grpcs://") || url.starts_with("https://");
    match status.code() {
        Code::Unavailable | Code::Unknown if is_tls(&detail(status)) => {
            "the TLS connection failed: check that the server's certificate is signed by the \
             CA given for this remote (or a system root) and names the host of the URL, and \
             that the client certificate is one the server accepts"
        }
        // TLS 1.3: a server that refuses the client's certificate (or its
        // absence) does so after the client's handshake is done; the client sees
        // a closed connection, not the alert.
        Code::Unavailable | Code::Unknown | Code::Cancelled
            if tls_url && is_closed(&detail(status)) =>
        {
            "the server closed the TLS connection: if it requires a client certificate \
             (mutual TLS), give one it accepts; else check that it runs, and see its log"
        }
        Code::Unavailable | Code::DeadlineExceeded => {
            "check that the server runs and answers at that address, then retry"
        }
        Code::Unimplemented => "the server does not offer this service for the instance",
        Code::InvalidArgument | Code::NotFound => {
            "check the instance name and that the server is a REAPI v2 cache"
        }
        Code::PermissionDenied | Code::Unauthenticated => {
            "the server refuses this client: check its authorization settings"
        }
        Code::ResourceExhausted => "the server is out of space or the request was too large",
        _ => "see the server's log",
    }
}
