//! `VerifiedBlob`: bytes that are known to match their digest.

use crate::digest::Digest;

/// Bytes whose BLAKE3 hash and size were checked against a digest. The only ways to
/// make one are to hash bytes ([`VerifiedBlob::new`]) or to check them against an
/// expected digest ([`VerifiedBlob::verify`]), so holding one is proof of integrity.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedBlob {
    digest: Digest,
    bytes: Vec<u8>,
}

/// Bytes that did not match the digest they were expected to have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {actual}")]
pub struct DigestMismatch {
    /// The digest asked for.
    pub expected: Digest,
    /// The digest of the bytes actually found.
    pub actual: Digest,
}

impl VerifiedBlob {
    /// Hashes `bytes`: they are then their own proof.
    pub fn new(bytes: Vec<u8>) -> VerifiedBlob {
        VerifiedBlob {
            digest: Digest::of(&bytes),
            bytes,
        }
    }

    /// Checks `bytes` against `expected`.
    pub fn verify(expected: Digest, bytes: Vec<u8>) -> Result<VerifiedBlob, DigestMismatch> {
        let actual = Digest::of(&bytes);
        if actual == expected {
            Ok(VerifiedBlob {
                digest: actual,
                bytes,
            })
        } else {
            Err(DigestMismatch { expected, actual })
        }
    }

    /// The digest the bytes were checked against.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The verified bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The verified bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl std::fmt::Debug for VerifiedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VerifiedBlob({}, {} bytes)",
            self.digest,
            self.bytes.len()
        )
    }
}
