//! What a caller may read by digest: `ws store checkout`, `ws store diff`, a
//! workspace opened over a tree, `ws push` of a cache key.
//!
//! The store is shared by every user of a root daemon, and a digest is easy to
//! come by (a log, a terminal, a guess at a known file's tree), so knowing one
//! is not enough. A caller other than root (or the daemon's own user) gets a
//! tree only when their own records lead to it:
//!
//! - a *grant*: a record (`grants` column family, uid + digest) that the daemon
//!   handed the tree to them after checking they were entitled to it — every
//!   tree an import made for them (they read its files themselves), the
//!   artifact and buildtree of each build recorded as theirs, and those under
//!   a cache key their own plan computed (`ws show`, `ws build`: a key is
//!   computed only from sources read as the caller);
//! - a tree one of their workspaces holds: its base and source, its buildtree,
//!   the trees of its op log and of its artifact ref;
//! - a tree one of their saved caches holds (`cache/<uid>/…` refs).
//!
//! Not covered: a subtree of such a tree (not walked: that would cost a read
//! of every directory node on the way), and a tree that is theirs only by
//! content (another user's import of the same files): they import it again.
//! Grants are written without waiting for the disk (a crash may lose the
//! newest, which costs an import) and never removed: a grant names content
//! the caller had, which stays theirs to read whoever stores it later.

use rocksdb::WriteBatch;
use treediff::Digest;

use super::{Caller, Manager};
use crate::db::cf;
use crate::error::Error;

impl Manager {
    /// Fails with [`Error::NotYours`] unless `caller` may read `tree` by digest
    /// (see the module doc). Whether the tree exists is not said first: an
    /// unknown digest and another user's answer alike.
    pub(super) fn check_readable(&self, caller: Caller, tree: Digest) -> Result<(), Error> {
        let uid = caller.uid;
        if self.reads_everything(uid)
            || self.is_granted(uid, tree)?
            || self.in_workspaces(uid, tree)?
            || self.in_caches(uid, tree)?
        {
            return Ok(());
        }
        Err(Error::NotYours { tree })
    }

    /// Records that `uid` may read `trees` (those recorded already are left).
    pub(super) fn grant(&self, uid: u32, trees: &[Digest]) -> Result<(), Error> {
        if self.reads_everything(uid) {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for tree in trees {
            if !self.is_granted(uid, *tree)? {
                self.grant_into(&mut batch, uid, &[*tree]);
            }
        }
        if !batch.is_empty() {
            self.db.write_cache(batch)?;
        }
        Ok(())
    }

    /// Puts the grants of `trees` to `uid` into `batch`, for a transaction that
    /// records them with what they come from.
    pub(super) fn grant_into(&self, batch: &mut WriteBatch, uid: u32, trees: &[Digest]) {
        if self.reads_everything(uid) {
            return;
        }
        for tree in trees {
            batch.put_cf(self.db.cf(cf::GRANTS), grant_key(uid, *tree), []);
        }
    }

    /// Root, and the user a per-user daemon runs as (whose store it is).
    fn reads_everything(&self, uid: u32) -> bool {
        uid == 0 || uid == self.euid
    }

    fn is_granted(&self, uid: u32, tree: Digest) -> Result<bool, Error> {
        let key = grant_key(uid, tree);
        Ok(self.db.get(self.db.cf(cf::GRANTS), &key)?.is_some())
    }

    /// Whether one of `uid`'s workspaces holds `tree`.
    fn in_workspaces(&self, uid: u32, tree: Digest) -> Result<bool, Error> {
        for ws in self.list(Caller { uid, gid: 0 })? {
            if ws.owner != uid {
                continue;
            }
            let mut held = vec![ws.base_source_digest, ws.source_digest];
            if let Some(buildtree) = &ws.buildtree {
                held.extend([buildtree.tree, buildtree.source_digest]);
            }
            held.extend(ws.last_build.as_ref().and_then(|b| b.buildtree));
            if let Some(name) = &ws.artifact_ref {
                held.extend(self.ref_tree(name)?);
            }
            if held.contains(&tree) {
                return Ok(true);
            }
            for entry in self.log_of(&ws.id)? {
                if entry.before == Some(tree) || entry.after == Some(tree) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Whether one of `uid`'s saved caches holds `tree`.
    fn in_caches(&self, uid: u32, tree: Digest) -> Result<bool, Error> {
        let caller = Caller { uid, gid: 0 };
        Ok(self.saved_caches(caller)?.iter().any(|c| c.tree == tree))
    }
}

/// uid (u32 BE), then the digest's hash and size (u64 BE).
fn grant_key(uid: u32, tree: Digest) -> [u8; 44] {
    let mut key = [0u8; 44];
    key[..4].copy_from_slice(&uid.to_be_bytes());
    key[4..36].copy_from_slice(tree.hash());
    key[36..].copy_from_slice(&tree.size().to_be_bytes());
    key
}
