//! The remote's digest space: which hash names its blobs (BLAKE3, like the local
//! store, or SHA-256), and [`RemoteDigest`], a digest in that space.

use std::fmt;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use reapi::digest_function::Value as DigestFunctionValue;
use sha2::Digest as _;
use treediff::Digest;

/// The digest function the client uses with a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    /// The store's own: remote digests are local digests, nothing is mapped.
    Blake3,
    /// SHA-256: blobs are mapped through the digest table and directories
    /// re-encoded.
    Sha256,
}

impl Function {
    /// The function's name as REAPI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Function::Blake3 => "BLAKE3",
            Function::Sha256 => "SHA256",
        }
    }

    /// The value of the requests' `digest_function` field.
    pub fn proto(self) -> i32 {
        match self {
            Function::Blake3 => DigestFunctionValue::Blake3 as i32,
            Function::Sha256 => DigestFunctionValue::Sha256 as i32,
        }
    }

    /// The digest of `bytes` in this space.
    pub fn digest(self, bytes: &[u8]) -> RemoteDigest {
        let hash = match self {
            Function::Blake3 => *blake3::hash(bytes).as_bytes(),
            Function::Sha256 => sha2::Sha256::digest(bytes).into(),
        };
        RemoteDigest {
            hash,
            size: bytes.len() as u64,
        }
    }

    /// A hasher for a blob that arrives in parts.
    pub(crate) fn hasher(self) -> RemoteHasher {
        match self {
            Function::Blake3 => RemoteHasher::Blake3(Box::default()),
            Function::Sha256 => RemoteHasher::Sha256(sha2::Sha256::default()),
        }
    }

    /// The function to use given what a server offers: BLAKE3 if offered (no
    /// mapping), else SHA-256; `None` if neither. An empty list is taken as
    /// SHA-256, REAPI v2's original and default function.
    pub fn choose(offered: &[i32]) -> Option<Function> {
        if offered.contains(&(DigestFunctionValue::Blake3 as i32)) {
            Some(Function::Blake3)
        } else if offered.is_empty() || offered.contains(&(DigestFunctionValue::Sha256 as i32)) {
            Some(Function::Sha256)
        } else {
            None
        }
    }

    /// A name for an offered function value, for messages.
    pub fn value_name(value: i32) -> String {
        DigestFunctionValue::try_from(value)
            .map(|v| v.as_str_name().to_owned())
            .unwrap_or_else(|_| format!("unknown ({value})"))
    }
}

/// A blob's digest in the remote's space, computed as its bytes arrive.
pub(crate) enum RemoteHasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl RemoteHasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            RemoteHasher::Blake3(h) => {
                h.update(bytes);
            }
            RemoteHasher::Sha256(h) => h.update(bytes),
        }
    }

    /// The digest of the `size` bytes given.
    pub(crate) fn finish(self, size: u64) -> RemoteDigest {
        let hash = match self {
            RemoteHasher::Blake3(h) => *h.finalize().as_bytes(),
            RemoteHasher::Sha256(h) => h.finalize().into(),
        };
        RemoteDigest { hash, size }
    }
}

/// A blob's name in the remote's space: 32 hash bytes (SHA-256 or BLAKE3) and the
/// size. Shown like a local digest, `<64 hex>/<size>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteDigest {
    /// The hash bytes.
    pub hash: [u8; 32],
    /// The blob's size in bytes.
    pub size: u64,
}

impl RemoteDigest {
    /// A local digest taken as a remote one (BLAKE3 spaces).
    pub fn from_local(digest: Digest) -> RemoteDigest {
        RemoteDigest {
            hash: *digest.hash(),
            size: digest.size(),
        }
    }

    /// The same bytes as a local digest (BLAKE3 spaces only).
    pub fn to_local(self) -> Digest {
        Digest::from_parts(self.hash, self.size)
    }

    /// The hash in 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.hash {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// As a REAPI message.
    pub fn to_proto(self) -> reapi::Digest {
        reapi::Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// From a REAPI message: 64 lowercase hex digits and a size that is not negative.
    pub fn from_proto(proto: &reapi::Digest) -> Result<RemoteDigest, String> {
        // The text form is the same as a local digest's; its parser checks it.
        let local = Digest::from_proto(proto).map_err(|e| e.to_string())?;
        Ok(RemoteDigest::from_local(local))
    }
}

impl fmt::Display for RemoteDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hex(), self.size)
    }
}

impl fmt::Debug for RemoteDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteDigest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        // printf 'hello\n' | sha256sum
        assert_eq!(
            Function::Sha256.digest(b"hello\n").to_string(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03/6"
        );
        assert_eq!(
            Function::Blake3.digest(b"hello\n").to_local(),
            Digest::of(b"hello\n")
        );
    }

    #[test]
    fn blake3_is_preferred_and_sha256_is_the_fallback() {
        let (sha, blake, md5) = (
            DigestFunctionValue::Sha256 as i32,
            DigestFunctionValue::Blake3 as i32,
            DigestFunctionValue::Md5 as i32,
        );
        assert_eq!(Function::choose(&[sha, blake]), Some(Function::Blake3));
        assert_eq!(Function::choose(&[sha]), Some(Function::Sha256));
        assert_eq!(Function::choose(&[]), Some(Function::Sha256));
        assert_eq!(Function::choose(&[md5]), None);
        assert_eq!(Function::value_name(md5), "MD5");
    }

    #[test]
    fn proto_round_trip() {
        let d = Function::Sha256.digest(b"x");
        assert_eq!(RemoteDigest::from_proto(&d.to_proto()).unwrap(), d);
        let bad = reapi::Digest {
            hash: "ABC".into(),
            size_bytes: 1,
        };
        assert!(RemoteDigest::from_proto(&bad).is_err());
    }
}
