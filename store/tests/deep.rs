//! Trees nested deeper than `MAX_DEPTH` (put and archive ingest refuse them, and so does an
//! import that binds a key) are refused by get and export with an error naming the path, never
//! a stack overflow: every walk is iterative, so these tests run on the test harness's own
//! (small) threads.

use cairn_store::tree::MAX_DEPTH;
use cairn_store::{
    ArchiveFormat, Entry, EntryKind, Error, Import, Meta, NoProgress, Root, Store, StoreOptions,
    Tree,
};

/// A chain of `levels` folders named `d`, the innermost empty; returns the top tree's id and
/// every tree's encoding.
fn chain(levels: usize) -> (cairn_store::Id, Vec<(cairn_store::Id, Vec<u8>)>) {
    let (mut id, bytes) = Tree::default().encode_with_id().unwrap();
    let mut trees = vec![(id, bytes)];
    for _ in 0..levels {
        let t = Tree {
            entries: vec![Entry {
                name: b"d".to_vec(),
                meta: Meta {
                    mode: 0o755,
                    ..Meta::default()
                },
                kind: EntryKind::Dir { tree: id },
            }],
        };
        let (parent, bytes) = t.encode_with_id().unwrap();
        trees.push((parent, bytes));
        id = parent;
    }
    (id, trees)
}

fn store_with(levels: usize) -> (tempfile::TempDir, Store, Root) {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store"), StoreOptions::default()).unwrap();
    let (top, trees) = chain(levels);
    store
        .import()
        .unwrap()
        .commit(Import {
            trees,
            ..Import::default()
        })
        .unwrap();
    (t, store, Root::Tree { id: top })
}

#[test]
fn a_tree_deeper_than_the_limit_is_refused_by_get_and_export() {
    // Deep enough that a recursive walk would overflow any thread's stack.
    let (t, store, root) = store_with(100_000);
    let session = store.read().unwrap();
    let dest = t.path().join("out");
    let err = session
        .materialize(&root, &dest, false, &NoProgress)
        .unwrap_err();
    assert!(
        matches!(&err, Error::TooDeep { path, .. } if path.len() == 2 * MAX_DEPTH - 1),
        "{err}"
    );
    assert!(err.to_string().contains("nested more than 1024"), "{err}");
    assert!(!dest.exists(), "get left DEST behind");
    let tar = t.path().join("out.tar");
    let err = session.export(&root, &tar, ArchiveFormat::Tar).unwrap_err();
    assert!(err.to_string().contains("nested more than 1024"), "{err}");
    assert!(!tar.exists());
}

#[test]
fn a_tree_exactly_at_the_limit_is_restored_and_exported() {
    let (t, store, root) = store_with(MAX_DEPTH);
    let session = store.read().unwrap();
    let dest = t.path().join("out");
    session
        .materialize(&root, &dest, false, &NoProgress)
        .unwrap();
    let deepest = dest.join(vec!["d"; MAX_DEPTH].join("/"));
    assert!(deepest.is_dir(), "{}", deepest.display());
    let tar = t.path().join("out.tar");
    session.export(&root, &tar, ArchiveFormat::Tar).unwrap();
}
