//! Push and pull through a `file://` remote: round trip, dedup, request counts, tampering.

use std::fs;
use std::path::Path;

use cairn_remote::{Remote, RemoteConfig, RemoteError, TransferOptions, TrustPolicy, pull, push};
use cairn_store::{IngestOptions, Input, Key, NoProgress, Store, StoreOptions};

fn store(p: &Path) -> Store {
    Store::open(p, StoreOptions::default()).unwrap()
}

fn remote(dir: &Path) -> Remote {
    let cfg = RemoteConfig {
        url: format!("file://{}", dir.display()),
        ..Default::default()
    };
    Remote::open("test", &cfg, &TransferOptions::default()).unwrap()
}

fn tree(root: &Path, files: usize) {
    for i in 0..files {
        let p = root.join(format!("d{}/f{i}.txt", i % 10));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("file number {i} {}", "x".repeat(i % 300))).unwrap();
    }
    fs::write(
        root.join("big.bin"),
        (0..10_000_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn push_pull_round_trip_with_few_requests() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, 10_000);
    let a = store(&t.path().join("a"));
    let key = Key::new("app/v1").unwrap();
    let (_, rec) = a
        .put(
            &key,
            Input::Path(&src),
            &IngestOptions::default(),
            Default::default(),
            &NoProgress,
        )
        .unwrap();
    let rt = rt();
    let r = remote(&t.path().join("remote"));
    let s = rt
        .block_on(push(&a, &r, std::slice::from_ref(&key), &NoProgress))
        .unwrap();
    assert!(s.requests.puts <= 50, "{s:?}");
    assert_eq!(s.standalone_blobs, 1, "the 10 MB file goes on its own");

    // Again: nothing to send.
    let r2 = remote(&t.path().join("remote"));
    let s2 = rt
        .block_on(push(&a, &r2, std::slice::from_ref(&key), &NoProgress))
        .unwrap();
    assert_eq!(s2.objects_sent, 0, "{s2:?}");

    // A second store pulls it back.
    let b = store(&t.path().join("b"));
    let r3 = remote(&t.path().join("remote"));
    let p = rt
        .block_on(pull(
            &b,
            &r3,
            std::slice::from_ref(&key),
            &TrustPolicy::default(),
            &NoProgress,
        ))
        .unwrap();
    assert!(p.requests.gets <= 50, "{p:?}");
    assert_eq!(p.keys[0].root, rec.root);
    let out = t.path().join("out");
    b.read()
        .unwrap()
        .materialize(&rec.root, &out, false, &NoProgress)
        .unwrap();
    assert_eq!(
        Store::hash(&out, &IngestOptions::default()).unwrap().root,
        rec.root
    );
    assert!(
        b.read()
            .unwrap()
            .verify(&[], &NoProgress)
            .unwrap()
            .is_clean()
    );
}

#[test]
fn a_tampered_object_fails_the_pull_and_binds_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, 50);
    let a = store(&t.path().join("a"));
    let key = Key::new("app/v1").unwrap();
    a.put(
        &key,
        Input::Path(&src),
        &IngestOptions::default(),
        Default::default(),
        &NoProgress,
    )
    .unwrap();
    let rt = rt();
    let rdir = t.path().join("remote");
    rt.block_on(push(
        &a,
        &remote(&rdir),
        std::slice::from_ref(&key),
        &NoProgress,
    ))
    .unwrap();
    // Flip a byte in the middle of every pack.
    for entry in walk(&rdir.join("packs")) {
        if entry.extension().is_some_and(|e| e == "pack") {
            let mut b = fs::read(&entry).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x55;
            fs::write(&entry, b).unwrap();
        }
    }
    let b = store(&t.path().join("b"));
    let err = rt
        .block_on(pull(
            &b,
            &remote(&rdir),
            std::slice::from_ref(&key),
            &TrustPolicy::default(),
            &NoProgress,
        ))
        .unwrap_err();
    assert!(matches!(err, RemoteError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("blake3:"),
        "names the object: {err}"
    );
    assert!(b.keys("").unwrap().is_empty());
    assert!(
        b.read()
            .unwrap()
            .verify(&[], &NoProgress)
            .unwrap()
            .is_clean()
    );
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn required_signatures_refuse_unsigned_and_untrusted_records() {
    use cairn_store::SecretKey;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, 20);
    let a = store(&t.path().join("a"));
    let key = Key::new("app/signed").unwrap();
    let (_, rec) = a
        .put(
            &key,
            Input::Path(&src),
            &IngestOptions::default(),
            Default::default(),
            &NoProgress,
        )
        .unwrap();
    let ci = SecretKey::generate("ci").unwrap();
    let evil = SecretKey::generate("evil").unwrap();
    let rt = rt();
    let rdir = t.path().join("remote");
    let policy = TrustPolicy {
        required: true,
        trusted: vec![ci.public()],
    };
    let b = store(&t.path().join("b"));
    let pull_b = |rt: &tokio::runtime::Runtime| {
        rt.block_on(pull(
            &b,
            &remote(&rdir),
            std::slice::from_ref(&key),
            &policy,
            &NoProgress,
        ))
    };

    // Unsigned: refused before any object is fetched, nothing bound.
    rt.block_on(push(
        &a,
        &remote(&rdir),
        std::slice::from_ref(&key),
        &NoProgress,
    ))
    .unwrap();
    let err = pull_b(&rt).unwrap_err();
    assert!(err.to_string().contains("signatures found: none"), "{err}");
    assert!(b.keys("").unwrap().is_empty());

    // Signed by an untrusted key: refused, naming the signer.
    a.add_signature(&rec, evil.sign(&rec)).unwrap();
    rt.block_on(push(
        &a,
        &remote(&rdir),
        std::slice::from_ref(&key),
        &NoProgress,
    ))
    .unwrap();
    let err = pull_b(&rt).unwrap_err();
    assert!(err.to_string().contains("evil (not trusted)"), "{err}");

    // Signed by the trusted key: accepted, signatures carried along.
    let rec = a.record(&key).unwrap();
    a.add_signature(&rec, ci.sign(&rec)).unwrap();
    rt.block_on(push(
        &a,
        &remote(&rdir),
        std::slice::from_ref(&key),
        &NoProgress,
    ))
    .unwrap();
    let s = pull_b(&rt).unwrap();
    assert_eq!(s.keys[0].signatures.len(), 2);

    // A record re-pointed on the remote (root changed, signature kept) is refused.
    let kp = rdir.join("keys/app/signed.key");
    let mut rr: cairn_remote::RemoteRecord =
        serde_json::from_slice(&fs::read(&kp).unwrap()).unwrap();
    rr.record.root = cairn_store::Root::Tree {
        id: cairn_store::Id::of(b"elsewhere"),
    };
    fs::write(&kp, serde_json::to_vec(&rr).unwrap()).unwrap();
    let c = store(&t.path().join("c"));
    let err = rt
        .block_on(pull(
            &c,
            &remote(&rdir),
            std::slice::from_ref(&key),
            &policy,
            &NoProgress,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("ci (invalid)"), "{err}");
    assert!(c.keys("").unwrap().is_empty());
}
