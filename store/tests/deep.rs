//! Trees nested deeper than `MAX_DEPTH` (which only a pull from a hostile remote can bring into
//! a store: put and archive ingest refuse them) are refused by get and export with an error
//! naming the path, never a stack overflow.

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

/// Runs `f` on a thread with the stack of a process's main thread (8 MiB), where the CLI runs
/// these walks; the test harness's threads have 2 MiB, less than a debug build needs for 1,024
/// levels.
fn on_main_sized_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn store_with(levels: usize) -> (tempfile::TempDir, Store, Root) {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store"), StoreOptions::default()).unwrap();
    let (top, trees) = chain(levels);
    let lock = store.lock_shared().unwrap();
    store
        .import(
            Import {
                blobs: vec![],
                trees,
                bind: None,
            },
            &lock,
        )
        .unwrap();
    drop(lock);
    (t, store, Root::Tree { id: top })
}

#[test]
fn a_tree_deeper_than_the_limit_is_refused_by_get_and_export() {
    on_main_sized_stack(deeper_than_the_limit);
}

fn deeper_than_the_limit() {
    // Deep enough that the recursive walks would overflow the stack without the limit.
    let (t, store, root) = store_with(20_000);
    let dest = t.path().join("out");
    let err = store
        .materialize(&root, &dest, false, &NoProgress)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { reason, .. } if reason.contains("nested more than")),
        "{err}"
    );
    assert!(!dest.exists(), "get left DEST behind");
    let tar = t.path().join("out.tar");
    let err = store.export(&root, &tar, ArchiveFormat::Tar).unwrap_err();
    assert!(err.to_string().contains("nested more than"), "{err}");
    assert!(!tar.exists());
}

#[test]
fn a_tree_exactly_at_the_limit_is_restored_and_exported() {
    on_main_sized_stack(exactly_at_the_limit);
}

fn exactly_at_the_limit() {
    let (t, store, root) = store_with(MAX_DEPTH);
    let dest = t.path().join("out");
    store.materialize(&root, &dest, false, &NoProgress).unwrap();
    let deepest = dest.join(vec!["d"; MAX_DEPTH].join("/"));
    assert!(deepest.is_dir(), "{}", deepest.display());
    let tar = t.path().join("out.tar");
    store.export(&root, &tar, ArchiveFormat::Tar).unwrap();
}
