//! `ws cache`: the elements' saved caches of a user (refs
//! `cache/<uid>/<element>/<name>`), listed and dropped.

use treediff::Digest;

use crate::error::Error;
use crate::manager::{Caller, Manager};

/// One saved cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCache {
    /// The element it belongs to.
    pub element: String,
    /// The cache's name.
    pub name: String,
    /// Its content, as the last successful build saved it.
    pub tree: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Seconds since the epoch at its last use.
    pub last_used: u64,
}

impl Manager {
    /// The caller's saved caches, by element and name.
    pub fn saved_caches(&self, caller: Caller) -> Result<Vec<SavedCache>, Error> {
        let prefix = format!("cache/{}/", caller.uid);
        Ok(self
            .refs()?
            .into_iter()
            .filter_map(|r| {
                let (element, name) = r.name.strip_prefix(&prefix)?.split_once('/')?;
                Some(SavedCache {
                    element: element.to_owned(),
                    name: name.to_owned(),
                    tree: r.tree,
                    size: r.size,
                    last_used: r.last_used,
                })
            })
            .collect())
    }

    /// Drops the caller's saved cache `name` of `element` (every cache of it when
    /// `name` is `None`): the next build starts it empty. Returns the names
    /// dropped; none matching is [`Error::NoSuchCache`].
    pub fn drop_caches(
        &self,
        caller: Caller,
        element: &str,
        name: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let dropped: Vec<SavedCache> = self
            .saved_caches(caller)?
            .into_iter()
            .filter(|c| c.element == element && name.is_none_or(|n| c.name == n))
            .collect();
        if dropped.is_empty() {
            return Err(Error::NoSuchCache {
                element: element.to_owned(),
                name: name.map(str::to_owned),
            });
        }
        let refs: Vec<String> = dropped
            .iter()
            .map(|c| super::record::cache_ref(caller.uid, &c.element, &c.name))
            .collect();
        self.drop_refs(&refs)?;
        Ok(dropped.into_iter().map(|c| c.name).collect())
    }
}
