//! The persistent BLAKE3 ↔ SHA-256 table (`digestmap` column family), for remotes
//! that take no BLAKE3.
//!
//! An entry says: the local object with this BLAKE3 digest is, in SHA-256 space,
//! the remote blob with this SHA-256 digest. For a file's content both name the
//! same bytes; for a directory the SHA-256 one names its re-encoding (children
//! by their SHA-256 digests, see `encode`). Entries are keyed by kind as well,
//! since a file may hold exactly the bytes of a directory node, whose two SHA-256
//! names differ. A directory's two encodings differ only in 64-hex-digit hashes,
//! so both digests share one size.
//!
//! Keys and values (sizes u64 big-endian):
//!
//! ```text
//! b'f' | b'd'  + BLAKE3 hash (32) + size (8)  → SHA-256 hash (32)
//! b'F' | b'D'  + SHA-256 hash (32) + size (8) → BLAKE3 hash (32)
//! ```
//!
//! An entry is written only from bytes this process hashed both ways (read from
//! the store and verified, or fetched and verified), so it is never wrong, only
//! possibly unused: it is a cache, written without a sync, and an entry whose
//! object left the store is harmless (pull checks the store before trusting one).

use std::sync::Arc;

use rocksdb::WriteBatch;
use treediff::Digest;

use super::space::RemoteDigest;
use crate::db::{Db, DbError, cf};

/// Which kind of object an entry maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A file's content: the same bytes under both hashes.
    File,
    /// A directory node and its SHA-256 re-encoding.
    Dir,
}

impl Kind {
    fn forward_tag(self) -> u8 {
        match self {
            Kind::File => b'f',
            Kind::Dir => b'd',
        }
    }

    fn reverse_tag(self) -> u8 {
        match self {
            Kind::File => b'F',
            Kind::Dir => b'D',
        }
    }
}

/// The table, in the daemon's database.
#[derive(Debug, Clone)]
pub struct DigestMap {
    db: Arc<Db>,
}

fn key(tag: u8, hash: &[u8; 32], size: u64) -> [u8; 41] {
    let mut key = [0u8; 41];
    key[0] = tag;
    key[1..33].copy_from_slice(hash);
    key[33..].copy_from_slice(&size.to_be_bytes());
    key
}

impl DigestMap {
    /// The table in `db`.
    pub fn new(db: Arc<Db>) -> DigestMap {
        DigestMap { db }
    }

    fn hash_value(&self, value: Option<Vec<u8>>) -> Result<Option<[u8; 32]>, DbError> {
        match value {
            None => Ok(None),
            Some(bytes) => bytes
                .as_slice()
                .try_into()
                .map(Some)
                .map_err(|_| self.db.corrupt("digest map", "a value is not 32 bytes")),
        }
    }

    /// The SHA-256 digest of the local object `digest`, if known.
    pub fn sha256_of(&self, kind: Kind, digest: Digest) -> Result<Option<RemoteDigest>, DbError> {
        let value = self.db.get(
            self.db.cf(cf::DIGESTMAP),
            &key(kind.forward_tag(), digest.hash(), digest.size()),
        )?;
        Ok(self.hash_value(value)?.map(|hash| RemoteDigest {
            hash,
            size: digest.size(),
        }))
    }

    /// The local (BLAKE3) digest of the SHA-256 object `remote`, if known.
    pub fn blake3_of(&self, kind: Kind, remote: RemoteDigest) -> Result<Option<Digest>, DbError> {
        let value = self.db.get(
            self.db.cf(cf::DIGESTMAP),
            &key(kind.reverse_tag(), &remote.hash, remote.size),
        )?;
        Ok(self
            .hash_value(value)?
            .map(|hash| Digest::from_parts(hash, remote.size)))
    }

    /// Records pairs (local, remote) of `kind`, both ways, in one batch. The
    /// sizes must be equal (they always are, see the module doc).
    pub fn insert(&self, pairs: &[(Kind, Digest, RemoteDigest)]) -> Result<(), DbError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let cf = self.db.cf(cf::DIGESTMAP);
        let mut batch = WriteBatch::default();
        for (kind, local, remote) in pairs {
            debug_assert_eq!(local.size(), remote.size);
            batch.put_cf(
                cf,
                key(kind.forward_tag(), local.hash(), local.size()),
                remote.hash,
            );
            batch.put_cf(
                cf,
                key(kind.reverse_tag(), &remote.hash, remote.size),
                local.hash(),
            );
        }
        self.db.write_cache(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::space::Function;

    #[test]
    fn pairs_are_found_both_ways_by_kind_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"hello\n";
        let (local, remote) = (Digest::of(content), Function::Sha256.digest(content));
        {
            let map = DigestMap::new(Arc::new(Db::open(dir.path()).unwrap()));
            assert_eq!(map.sha256_of(Kind::File, local).unwrap(), None);
            map.insert(&[(Kind::File, local, remote)]).unwrap();
            assert_eq!(map.sha256_of(Kind::File, local).unwrap(), Some(remote));
            assert_eq!(map.blake3_of(Kind::File, remote).unwrap(), Some(local));
            // The same bytes as a directory node are another entry.
            assert_eq!(map.sha256_of(Kind::Dir, local).unwrap(), None);
            assert_eq!(map.blake3_of(Kind::Dir, remote).unwrap(), None);
            // Another size is another object.
            let other = Digest::from_parts(*local.hash(), 7);
            assert_eq!(map.sha256_of(Kind::File, other).unwrap(), None);
        }
        // Written without a sync, but a clean close keeps it.
        let map = DigestMap::new(Arc::new(Db::open(dir.path()).unwrap()));
        assert_eq!(map.sha256_of(Kind::File, local).unwrap(), Some(remote));
        assert_eq!(
            remote.to_string(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03/6"
        );
    }

    #[test]
    fn a_damaged_value_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let local = Digest::of(b"x");
        let mut batch = WriteBatch::default();
        batch.put_cf(
            db.cf(cf::DIGESTMAP),
            key(b'f', local.hash(), local.size()),
            b"short",
        );
        db.write(batch).unwrap();
        let err = DigestMap::new(db).sha256_of(Kind::File, local).unwrap_err();
        assert!(err.to_string().contains("digest map"), "{err}");
    }
}
