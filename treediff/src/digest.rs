//! BLAKE3 digests: a hash and the size of the bytes it names.
//!
//! Users see a digest as `<64 lowercase hex>/<size>`; REAPI messages carry the same
//! pair as `Digest { hash, size_bytes }`.

use std::fmt;
use std::str::FromStr;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;

/// The BLAKE3 hash and size of a blob. Equal digests name equal bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hash: [u8; 32],
    size: u64,
}

/// A string or REAPI message that does not spell a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {text:?}: {reason}; expected <64 lowercase hex digits>/<size in bytes>")]
pub struct DigestParseError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hash: *blake3::hash(bytes).as_bytes(),
            size: bytes.len() as u64,
        }
    }

    /// A digest from a finished hasher that was fed `size` bytes.
    pub fn from_hasher(hasher: &blake3::Hasher, size: u64) -> Digest {
        Digest {
            hash: *hasher.finalize().as_bytes(),
            size,
        }
    }

    /// A digest from its parts.
    pub fn from_parts(hash: [u8; 32], size: u64) -> Digest {
        Digest { hash, size }
    }

    /// The digest of the empty blob.
    pub fn empty() -> Digest {
        Digest::of(b"")
    }

    /// The 32 hash bytes.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The size in bytes of the blob this digest names.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The hash as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.hash).to_hex().to_string()
    }

    /// The digest as a REAPI message.
    pub fn to_proto(&self) -> reapi::Digest {
        reapi::Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// The digest from a REAPI message; the hash must be 64 lowercase hex digits and
    /// the size not negative.
    pub fn from_proto(proto: &reapi::Digest) -> Result<Digest, DigestParseError> {
        let text = || format!("{}/{}", proto.hash, proto.size_bytes);
        let size = u64::try_from(proto.size_bytes).map_err(|_| DigestParseError {
            text: text(),
            reason: "negative size",
        })?;
        let hash = parse_hex(&proto.hash).ok_or_else(|| DigestParseError {
            text: text(),
            reason: "the hash is not 64 lowercase hex digits",
        })?;
        Ok(Digest { hash, size })
    }
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    blake3::Hash::from_hex(text).ok().map(|h| *h.as_bytes())
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hex(), self.size)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(text: &str) -> Result<Digest, DigestParseError> {
        let err = |reason| DigestParseError {
            text: text.to_owned(),
            reason,
        };
        let (hex, size) = text
            .split_once('/')
            .ok_or_else(|| err("no '/' between hash and size"))?;
        let hash = parse_hex(hex).ok_or_else(|| err("the hash is not 64 lowercase hex digits"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("the size is not a decimal number"));
        }
        let size = size
            .parse()
            .map_err(|_| err("the size does not fit in 64 bits"))?;
        Ok(Digest { hash, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_pinned() {
        assert_eq!(
            Digest::empty().to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262/0"
        );
    }

    #[test]
    fn display_and_parse_round_trip() {
        let d = Digest::of(b"hello\n");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(Digest::from_proto(&d.to_proto()).unwrap(), d);
    }

    #[test]
    fn bad_text_is_refused_with_reason() {
        for (text, reason) in [
            ("abc", "no '/'"),
            ("abc/3", "64 lowercase hex"),
            (&format!("{}/3", "A".repeat(64)), "64 lowercase hex"),
            (&format!("{}/-3", "a".repeat(64)), "decimal"),
            (&format!("{}/", "a".repeat(64)), "decimal"),
            (
                &format!("{}/99999999999999999999999", "a".repeat(64)),
                "64 bits",
            ),
        ] {
            let err = text.parse::<Digest>().unwrap_err();
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn negative_proto_size_is_refused() {
        let proto = reapi::Digest {
            hash: "a".repeat(64),
            size_bytes: -1,
        };
        assert!(Digest::from_proto(&proto).is_err());
    }
}
