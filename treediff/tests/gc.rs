//! gc on real stores: what a root reaches stays, the rest goes, damage stops it.

mod common;

use common::{TestStore, TreeBuilder};
use treediff::gc::{mark, sweep};
use treediff::{Digest, fsck};

#[test]
fn a_sweep_keeps_what_the_roots_reach_and_removes_the_rest() {
    let t = TestStore::new();
    let a = TreeBuilder::new()
        .file("x/shared.txt", "shared")
        .file("a", "only a")
        .build(&t.store);
    let b = TreeBuilder::new()
        .file("y/shared.txt", "shared")
        .file("b", "only b")
        .build(&t.store);
    let reachable = mark(&t.store, &[a]).unwrap();
    // a, x/, shared, "only a".
    assert_eq!(reachable.len(), 4);
    let stats = sweep(&t.store, &reachable).unwrap();
    assert_eq!(stats.kept_objects, 4, "{stats:?}");
    // b's root and "only b"; y/ is the same node as x/, and "shared" is a's too.
    assert_eq!(stats.removed_objects, 2, "{stats:?}");
    assert!(t.store.contains(&Digest::of(b"shared")).unwrap());
    assert!(!t.store.contains(&Digest::of(b"only b")).unwrap());
    assert!(!t.store.contains(&b).unwrap());
    assert_eq!(fsck(&t.store, &[a]).unwrap().problems, vec![]);
    // A second sweep has nothing left to do.
    let again = sweep(&t.store, &mark(&t.store, &[a]).unwrap()).unwrap();
    assert_eq!(again.removed_objects, 0);
}

#[test]
fn a_damaged_root_stops_the_mark_before_anything_is_swept() {
    let t = TestStore::new();
    let a = TreeBuilder::new().file("x/f", "f").build(&t.store);
    let missing = Digest::of(b"not a stored tree");
    assert!(mark(&t.store, &[a, missing]).is_err());
    assert!(t.store.contains(&Digest::of(b"f")).unwrap());
}
