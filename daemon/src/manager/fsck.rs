//! `fsck`: the store and the database, checked against each other.
//!
//! The store's own check (every object hashed, every tree complete) runs over
//! every root gc keeps, so a workspace, op log entry, snapshot or ref naming a tree
//! the store lacks is reported. The database is checked for records that do not
//! decode, names and workspaces that disagree, and workspaces whose snapshots are
//! missing. Nothing is repaired: each problem names its object and what to do.

use std::collections::HashMap;

use serde::Serialize;

use super::{Caller, Manager, is_mounted};
use crate::db::cf;
use crate::error::Error;
use crate::workspace::{State, Workspace};

/// One thing wrong with the daemon's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FsckProblem {
    /// What kind of record: "workspace", "name", "op-log", "snapshot", "ref".
    pub record: &'static str,
    /// Which one.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.record, self.subject, self.problem)
    }
}

/// What fsck found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsckReport {
    /// Workspace records checked.
    pub workspaces_checked: u64,
    /// Snapshot records checked.
    pub snapshots_checked: u64,
    /// The store's check, over every root.
    pub store: treediff::fsck::FsckReport,
    /// What is wrong in the database.
    pub problems: Vec<FsckProblem>,
}

impl FsckReport {
    /// Whether nothing is wrong anywhere.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.store.problems.is_empty()
    }
}

impl Manager {
    /// Checks the store and the database; see the module documentation.
    pub fn fsck(&self, caller: Caller) -> Result<FsckReport, Error> {
        if caller.uid != 0 && caller.uid != self.euid {
            return Err(Error::Denied {
                problem: "fsck reads the state every user shares; run it as root".to_owned(),
            });
        }
        let _store = self.store_guard();
        let mut report = FsckReport::default();
        let mut problem = |record, subject: &str, problem: String| {
            report.problems.push(FsckProblem {
                record,
                subject: subject.to_owned(),
                problem,
            })
        };

        let mut workspaces: HashMap<String, Workspace> = HashMap::new();
        for (key, bytes) in self.db.scan(self.db.cf(cf::WORKSPACES), b"")? {
            let id = String::from_utf8_lossy(&key).into_owned();
            match serde_json::from_slice::<Workspace>(&bytes) {
                Ok(ws) => {
                    workspaces.insert(id, ws);
                }
                Err(e) => problem("workspace", &id, format!("does not decode: {e}")),
            }
        }
        let mut named = HashMap::new();
        for (key, value) in self.db.scan(self.db.cf(cf::NAMES), b"")? {
            let subject = String::from_utf8_lossy(&key[key.len().min(4)..]).into_owned();
            let id = String::from_utf8_lossy(&value).into_owned();
            match workspaces.get(&id) {
                Some(ws) if key == super::name_key(ws.owner, &ws.name) => {
                    named.insert(id, ());
                }
                Some(_) => problem(
                    "name",
                    &subject,
                    format!("points at workspace {id}, which has another name or owner"),
                ),
                None => problem(
                    "name",
                    &subject,
                    format!("points at workspace {id}, which does not exist"),
                ),
            }
        }
        for (key, bytes) in self.db.scan(self.db.cf(cf::OPLOG), b"")? {
            if let Err(e) = serde_json::from_slice::<crate::workspace::OpEntry>(&bytes) {
                let subject =
                    String::from_utf8_lossy(&key[..key.len().saturating_sub(8)]).into_owned();
                problem("op-log", &subject, format!("an entry does not decode: {e}"));
            }
        }
        let list: Vec<Workspace> = workspaces.values().cloned().collect();
        for ws in &list {
            report.workspaces_checked += 1;
            let subject = format!(
                "{} (owner {}, id {})",
                crate::workspace::shown(&ws.name),
                ws.owner,
                ws.id
            );
            if !named.contains_key(&ws.id) {
                problem("workspace", &subject, "no name points at it".to_owned());
            }
            let snapper = self.snapper(ws.backend, ws.owner, ws.group)?;
            for key in [&ws.snapshot, &ws.base_snapshot] {
                if let Err(e) = snapper.snap.stat(key) {
                    problem(
                        "workspace",
                        &subject,
                        format!("its snapshot {key} is missing: {e}"),
                    );
                }
            }
            if ws.state == State::Open && ws.mounted_by_daemon && !is_mounted(&ws.path) {
                problem(
                    "workspace",
                    &subject,
                    format!(
                        "its view is not mounted on {}; restart wsd to mount it again",
                        ws.path.display()
                    ),
                );
            }
        }
        for (name, snapper) in self.all_snappers(&list)? {
            let mut count = 0;
            if let Err(e) = snapper.snap.walk(&mut |_| count += 1) {
                problem("snapshot", &name, format!("the records do not read: {e}"));
            }
            report.snapshots_checked += count;
        }
        for (key, bytes) in self.db.scan(self.db.cf(cf::REFS), b"")? {
            if let Err(e) = serde_json::from_slice::<super::Ref>(&bytes) {
                problem(
                    "ref",
                    &String::from_utf8_lossy(&key),
                    format!("does not decode: {e}"),
                );
            }
        }
        let roots = self.roots()?;
        report.store =
            treediff::fsck(&self.store, &roots).map_err(Error::store_on("the store".into()))?;
        Ok(report)
    }
}
