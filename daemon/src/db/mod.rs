//! The daemon's state in RocksDB: one column family per kind of record, a schema
//! version checked at open, and every state change as one `WriteBatch` written with
//! `sync = true` (docs/design.md, "The commit protocol": the data a batch points to is made durable
//! first, and the caller replies only after the batch).

mod records;
mod statcache;
mod upgrade;

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

pub use records::{RocksBatch, RocksRecords};
pub use statcache::RocksStatCache;

/// The schema this build reads and writes. Bumped on any incompatible change to a
/// key or value encoding; an unknown version is refused, never guessed at.
/// Version 2 added the `artifacts` and `builds` column families (and build fields
/// of workspace records, which default when absent): a version 1 database is
/// upgraded in place at open. Version 3 added the `digestmap` column family (the
/// remote cache's BLAKE3 ↔ SHA-256 table): versions 1 and 2 are upgraded alike.
/// Version 4 added the `grants` column family (the trees each user may read by
/// digest) and keys the stat cache by reader. Version 5 keys artifact records
/// and their refs by producer. What an upgrade changes is in `upgrade`.
pub const SCHEMA_VERSION: u32 = 5;

/// Older versions this build upgrades at open (the new column families are
/// created empty; see `upgrade` for what else changes).
const UPGRADABLE: [u32; 4] = [1, 2, 3, 4];

/// Past every key the stat cache has had (at most 32 bytes).
const STAT_KEYS_END: &[u8] = &[0xff; 33];

/// Column families.
pub(crate) mod cf {
    /// `schema` → version (u32 BE).
    pub const META: &str = "meta";
    /// workspace id → workspace record (JSON).
    pub const WORKSPACES: &str = "workspaces";
    /// owner uid (u32 BE) + name → workspace id: names are unique per owner.
    pub const NAMES: &str = "names";
    /// workspace id + sequence (u64 BE) → op log entry (JSON).
    pub const OPLOG: &str = "oplog";
    /// backend + `/` + key → snapshot record (the overlay crate's encoding).
    pub const SNAPSHOTS: &str = "snapshots";
    /// source id (16 bytes: directory and reader) + dev + ino (u64 BE) →
    /// stat-cache entry (see `statcache`).
    pub const STATCACHE: &str = "statcache";
    /// ref name (`artifact/<producer>/<key>`, `cache/<uid>/...`, ...) → ref
    /// record (JSON).
    pub const REFS: &str = "refs";
    /// producer uid + `/` + cache key → that producer's record of the last
    /// build under it (JSON; see `build::record`).
    pub const ARTIFACTS: &str = "artifacts";
    /// build id → a build that has started and not ended (JSON): what recovery
    /// removes after a crash.
    pub const BUILDS: &str = "builds";
    /// kind + digest → digest: the remote cache's BLAKE3 ↔ SHA-256 table (see
    /// `remote::digest_map`).
    pub const DIGESTMAP: &str = "digestmap";
    /// uid (u32 BE) + digest (hash, size u64 BE) → nothing: a tree that user may
    /// read by digest (see `manager::grants`).
    pub const GRANTS: &str = "grants";
    /// All of them, in the order they are created.
    pub const ALL: [&str; 11] = [
        META, WORKSPACES, NAMES, OPLOG, SNAPSHOTS, STATCACHE, REFS, ARTIFACTS, BUILDS, DIGESTMAP,
        GRANTS,
    ];
}

/// Opening or using the database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// RocksDB refused.
    #[error("database {}: {op} failed: {source}", path.display())]
    Rocks {
        /// The database directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: rocksdb::Error,
    },
    /// The database was written by another version of ws.
    #[error("database {} has schema version {found}, and this wsd reads version {SCHEMA_VERSION}; use the matching wsd, or move the state directory aside", path.display())]
    Schema {
        /// The database directory.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// A record could not be decoded.
    #[error("database {}: a {what} record is damaged: {problem}; run `ws fsck`", path.display())]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// Which kind of record.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Options that keep the daemon's memory small (its RSS target is 100 MiB): the
/// defaults give every column family 64 MiB memtables and its own 8 MiB block
/// cache, which with seven families and a stat cache rewritten by every import
/// came to hundreds of MiB. Memtables of 4 MiB, and one block cache shared by all.
fn small_memory() -> Options {
    static CACHE: std::sync::OnceLock<rocksdb::Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| rocksdb::Cache::new_lru_cache(16 << 20));
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(cache);
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    options.set_write_buffer_size(4 << 20);
    options.set_max_write_buffer_number(2);
    options
}

/// A key and its value, as read by a scan.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// The open database.
pub struct Db {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (creating) the database in `path` and checks its schema version.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut options = small_memory();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_open_files(256);
        options.set_keep_log_file_num(4);
        // All memtables together, whichever column family fills them.
        options.set_db_write_buffer_size(16 << 20);
        // Flush the column families that rarely fill a memtable once the WAL
        // passes this, so old WAL files go (else 1.5 GB of them was seen, and a
        // restart replayed them all for seconds).
        options.set_max_total_wal_size(64 << 20);
        let cfs = cf::ALL.map(|name| ColumnFamilyDescriptor::new(name, small_memory()));
        let db = DB::open_cf_descriptors(&options, path, cfs).map_err(|source| DbError::Rocks {
            path: path.to_owned(),
            op: "open",
            source,
        })?;
        let db = Db {
            db,
            path: path.to_owned(),
        };
        db.check_schema()?;
        Ok(db)
    }

    fn check_schema(&self) -> Result<(), DbError> {
        let meta = self.cf(cf::META);
        match self.get(meta, b"schema")? {
            Some(bytes) => {
                let found = bytes
                    .as_slice()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| self.corrupt("schema", "the version is not 4 bytes"))?;
                if UPGRADABLE.contains(&found) {
                    let mut batch = upgrade::batch(self, found)?;
                    batch.put_cf(meta, b"schema", SCHEMA_VERSION.to_be_bytes());
                    return self.write(batch);
                }
                if found != SCHEMA_VERSION {
                    return Err(DbError::Schema {
                        path: self.path.clone(),
                        found,
                    });
                }
                Ok(())
            }
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, b"schema", SCHEMA_VERSION.to_be_bytes());
                self.write(batch)
            }
        }
    }

    /// The column family `name` (one of [`cf::ALL`]).
    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// A point read.
    pub(crate) fn get(&self, cf: &ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.db
            .get_cf(cf, key)
            .map_err(|source| self.rocks("read", source))
    }

    /// Every (key, value) whose key starts with `prefix`, in key order.
    pub(crate) fn scan(&self, cf: &ColumnFamily, prefix: &[u8]) -> Result<Vec<KeyValue>, DbError> {
        let mut out = Vec::new();
        let mode = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(cf, mode) {
            let (key, value) = item.map_err(|source| self.rocks("scan", source))?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }

    /// Writes `batch` durably (WAL synced): on return it survives a crash.
    pub fn write(&self, batch: WriteBatch) -> Result<(), DbError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|source| self.rocks("write", source))
    }

    /// Writes `batch` without waiting for the disk: for a batch that a synced
    /// intent already makes recovery write again if a power loss takes it
    /// (the end of a write through a view). A killed process loses nothing
    /// written here (the operating system has it), and the next synced write
    /// takes it to the disk as well.
    pub(crate) fn write_recoverable(&self, batch: WriteBatch) -> Result<(), DbError> {
        self.write_cache(batch)
    }

    /// Writes `batch` without waiting for the disk: for caches, whose loss costs
    /// work, never correctness.
    pub(crate) fn write_cache(&self, batch: WriteBatch) -> Result<(), DbError> {
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db
            .write_opt(batch, &options)
            .map_err(|source| self.rocks("write", source))
    }

    fn rocks(&self, op: &'static str, source: rocksdb::Error) -> DbError {
        DbError::Rocks {
            path: self.path.clone(),
            op,
            source,
        }
    }

    pub(crate) fn corrupt(&self, what: &'static str, problem: impl Into<String>) -> DbError {
        DbError::Corrupt {
            path: self.path.clone(),
            what,
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database as a wsd of `version` left it: its column families only (the
    /// first `families` of them), a ref and a stat-cache entry.
    fn old_db(path: &Path, version: u32, families: usize) {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf(&options, path, &cf::ALL[..families]).unwrap();
        let meta = db.cf_handle(cf::META).unwrap();
        db.put_cf(meta, b"schema", version.to_be_bytes()).unwrap();
        let refs = db.cf_handle(cf::REFS).unwrap();
        db.put_cf(refs, b"artifact/x", b"{}").unwrap();
        db.put_cf(refs, b"cache/1000/e/c", b"{}").unwrap();
        let workspaces = db.cf_handle(cf::WORKSPACES).unwrap();
        let ws = br#"{"name":"w","artifact_ref":"artifact/x","other":1}"#;
        db.put_cf(workspaces, b"id", ws).unwrap();
        if let Some(artifacts) = db.cf_handle(cf::ARTIFACTS) {
            db.put_cf(artifacts, b"x", br#"{"owner":0}"#).unwrap();
        }
        let stat = db.cf_handle(cf::STATCACHE).unwrap();
        db.put_cf(stat, [0xfe; 24], [0u8; 72]).unwrap();
    }

    /// Opens an old database: it is upgraded, keeps its records but the
    /// artifact records and their refs (and the stat cache, before version 4),
    /// has the new column families empty, and opens again.
    fn upgrades(version: u32, families: usize) {
        let dir = tempfile::tempdir().unwrap();
        old_db(dir.path(), version, families);
        let db = Db::open(dir.path()).unwrap();
        let meta = db.cf(cf::META);
        assert_eq!(
            db.get(meta, b"schema").unwrap().unwrap(),
            SCHEMA_VERSION.to_be_bytes()
        );
        assert_eq!(SCHEMA_VERSION, 5);
        for new in &cf::ALL[families..] {
            assert!(db.scan(db.cf(new), b"").unwrap().is_empty(), "{new}");
        }
        // Keyed by reader since version 4: kept from then on.
        let stat_entries = db.scan(db.cf(cf::STATCACHE), b"").unwrap().len();
        assert_eq!(stat_entries, usize::from(version >= 4));
        assert!(db.scan(db.cf(cf::ARTIFACTS), b"").unwrap().is_empty());
        assert!(db.get(db.cf(cf::REFS), b"artifact/x").unwrap().is_none());
        assert!(
            db.get(db.cf(cf::REFS), b"cache/1000/e/c")
                .unwrap()
                .is_some()
        );
        let ws = db.get(db.cf(cf::WORKSPACES), b"id").unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&ws).unwrap(),
            serde_json::json!({"name": "w", "artifact_ref": null, "other": 1})
        );
        drop(db);
        Db::open(dir.path()).unwrap();
    }

    #[test]
    fn version_2_is_upgraded_with_an_empty_digest_map() {
        assert_eq!(cf::ALL[9], cf::DIGESTMAP);
        upgrades(2, 9);
    }

    #[test]
    fn version_3_is_upgraded_with_no_grants_and_an_empty_stat_cache() {
        assert_eq!(cf::ALL[10], cf::GRANTS);
        upgrades(3, 10);
    }

    #[test]
    fn version_4_is_upgraded_without_its_shared_artifact_records() {
        upgrades(4, 11);
    }

    #[test]
    fn a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        batch.put_cf(db.cf(cf::META), b"schema", 6u32.to_be_bytes());
        db.write(batch).unwrap();
        drop(db);
        let err = Db::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema version 6"), "{err}");
    }
}
