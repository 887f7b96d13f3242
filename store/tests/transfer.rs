//! Moving a key between two stores through the transfer API, as `cairn-remote` does.

use std::fs;

use cairn_store::blobs::SMALL_BLOB_MAX;
use cairn_store::{Error, Import, IngestOptions, Input, Key, NoProgress, Store, StoreOptions};

fn stores() -> (tempfile::TempDir, Store, Store) {
    let t = tempfile::tempdir().unwrap();
    let a = Store::open(&t.path().join("a"), StoreOptions::default()).unwrap();
    let b = Store::open(&t.path().join("b"), StoreOptions::default()).unwrap();
    (t, a, b)
}

fn sample(root: &std::path::Path) {
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(
        root.join("small.txt"),
        b"hello hello hello hello hello hello hello hello",
    )
    .unwrap();
    fs::write(
        root.join("d/big.bin"),
        vec![7u8; SMALL_BLOB_MAX as usize + 10],
    )
    .unwrap();
    fs::write(
        root.join("d/dup.txt"),
        b"hello hello hello hello hello hello hello hello",
    )
    .unwrap();
}

#[test]
fn import_binds_only_complete_closures() {
    let (t, a, b) = stores();
    let src = t.path().join("src");
    sample(&src);
    let key = Key::new("k/v1").unwrap();
    let (_, rec) = a
        .put(
            &key,
            Input::Path(&src),
            &IngestOptions::default(),
            Default::default(),
            &NoProgress,
        )
        .unwrap();
    let reader = a.read().unwrap();
    let closure = reader.record_closure(&rec).unwrap();
    assert_eq!(closure.blobs.len(), 2, "duplicate content listed once");
    assert_eq!(closure.trees.len(), 2);
    let trees: Vec<_> = closure
        .order
        .iter()
        .map(|id| (*id, closure.trees[id].encode().unwrap()))
        .collect();

    // Missing a blob: refused, nothing bound.
    let session = b.import().unwrap();
    let err = session
        .commit(Import {
            trees: trees.clone(),
            bind: Some(rec.clone()),
            ..Import::default()
        })
        .unwrap_err();
    assert!(matches!(err, Error::UnknownObject(_)), "{err}");
    assert!(b.keys("").unwrap().is_empty());

    // Complete: bound, restorable, verifiable.
    let mut blobs = Vec::new();
    for (id, size) in &closure.blobs {
        if *size <= SMALL_BLOB_MAX {
            let (enc, bytes) = reader.read_stored(id, *size, None).unwrap();
            blobs.push(session.stage_encoded(*id, *size, enc, &bytes).unwrap());
        } else {
            let r = reader.open_blob(id, Some(*size), None).unwrap();
            blobs.push(
                session
                    .stage_stream(r, *size, Some((*id, *size)), "test")
                    .unwrap(),
            );
        }
    }
    let bound = session
        .commit(Import {
            blobs,
            trees,
            bind: Some(rec.clone()),
            ..Import::default()
        })
        .unwrap()
        .unwrap();
    drop(session);
    assert_eq!(bound.root, rec.root);
    let out = t.path().join("out");
    let read_b = b.read().unwrap();
    read_b
        .materialize(&bound.root, &out, false, &NoProgress)
        .unwrap();
    assert_eq!(
        fs::read(out.join("d/dup.txt")).unwrap(),
        fs::read(src.join("d/dup.txt")).unwrap()
    );
    assert!(read_b.verify(&[], &NoProgress).unwrap().is_clean());
}

#[test]
fn staging_a_stream_that_lies_is_refused() {
    let (_t, a, _b) = stores();
    let id = cairn_store::Id::of(b"the real content");
    let err = a
        .import()
        .unwrap()
        .stage_stream(
            &b"some other bytes"[..],
            16,
            Some((id, 16)),
            "remote object x",
        )
        .unwrap_err();
    assert!(err.to_string().contains("remote object x"), "{err}");
}
