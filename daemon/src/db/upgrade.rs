//! What opening a database an older wsd wrote changes in it: one batch, written
//! with the new schema version, so an upgrade is done whole or not at all.
//!
//! - Before version 4 the stat cache was keyed by path alone: a hit on one of
//!   its entries would answer for credentials that never read the file. It is
//!   emptied.
//! - Before version 5 an artifact record was shared by every user under its
//!   cache key, and a build reused another user's artifacts as dependencies.
//!   Any record may hold, or have been built over, what another user could
//!   change, so none is kept: the records go, with the refs that kept their
//!   trees (`artifact/`, `buildtree/`, `log/`) and the workspaces' artifact
//!   refs. Each element is built once more, and recorded under its producer
//!   (see `manager::build::record`). Saved caches are per user already and
//!   stay.

use rocksdb::WriteBatch;

use super::{Db, DbError, STAT_KEYS_END, cf};

/// Past every key of a column family whose keys are text.
const TEXT_KEYS_END: &[u8] = &[0xff];

/// The batch that brings the database from schema version `found` to the
/// current one (without the version itself).
pub(super) fn batch(db: &Db, found: u32) -> Result<WriteBatch, DbError> {
    let mut batch = WriteBatch::default();
    if found < 4 {
        batch.delete_range_cf(db.cf(cf::STATCACHE), [].as_slice(), STAT_KEYS_END);
    }
    if found < 5 {
        forget_artifact_records(db, &mut batch)?;
    }
    Ok(batch)
}

fn forget_artifact_records(db: &Db, batch: &mut WriteBatch) -> Result<(), DbError> {
    batch.delete_range_cf(db.cf(cf::ARTIFACTS), [].as_slice(), TEXT_KEYS_END);
    for prefix in ["artifact/", "buildtree/", "log/"] {
        for (name, _) in db.scan(db.cf(cf::REFS), prefix.as_bytes())? {
            batch.delete_cf(db.cf(cf::REFS), name);
        }
    }
    for (id, bytes) in db.scan(db.cf(cf::WORKSPACES), b"")? {
        let mut record: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| db.corrupt("workspace", e.to_string()))?;
        if let Some(field) = record.get_mut("artifact_ref")
            && !field.is_null()
        {
            *field = serde_json::Value::Null;
            batch.put_cf(
                db.cf(cf::WORKSPACES),
                id,
                serde_json::to_vec(&record).expect("JSON values serialize"),
            );
        }
    }
    Ok(())
}
