//! A hostile remote holding a tree nested 100,000 folders deep: a pull must refuse it (or
//! handle it) with a one-line error, never crash on the depth (every walk over a pulled tree is
//! iterative), and leave the store as it was.

use std::path::Path;

use cairn_remote::pack::{ObjectKind, PackBuilder, encode_index};
use cairn_store::blobs::Encoding;
use cairn_store::{Entry, EntryKind, Id, Key, KeyRecord, Meta, Root, Tree};

use crate::common::{Env, s};

/// Folder levels of the hostile tree: far past any stack a recursive walk could survive.
const LEVELS: usize = 100_000;

/// Writes a `file://` remote at `dir` whose key `key` is bound to a chain of `LEVELS` folders
/// (each holding one folder `d`), with a valid pack, index and record: everything a pull checks
/// is consistent, only the depth is hostile.
fn deep_remote(dir: &Path, key: &str) -> Id {
    let dir_meta = Meta {
        mode: 0o755,
        ..Meta::default()
    };
    let mut pack = PackBuilder::new();
    let (mut child, bytes) = Tree { entries: vec![] }.encode_with_id().unwrap();
    pack.add(
        child,
        ObjectKind::Tree,
        Encoding::Raw,
        &bytes,
        bytes.len() as u64,
    );
    for _ in 0..LEVELS {
        let tree = Tree {
            entries: vec![Entry {
                name: b"d".to_vec(),
                meta: dir_meta.clone(),
                kind: EntryKind::Dir { tree: child },
            }],
        };
        let (id, bytes) = tree.encode_with_id().unwrap();
        pack.add(
            id,
            ObjectKind::Tree,
            Encoding::Raw,
            &bytes,
            bytes.len() as u64,
        );
        child = id;
    }
    let sealed = pack.finish();
    let hex = sealed.id.to_hex();
    let packs = dir.join("packs").join(&hex[..2]);
    std::fs::create_dir_all(&packs).unwrap();
    std::fs::write(packs.join(format!("{hex}.idx")), encode_index(&sealed)).unwrap();
    std::fs::write(packs.join(format!("{hex}.pack")), &sealed.bytes).unwrap();
    std::fs::write(dir.join("cairn-remote.json"), br#"{"layout": 1}"#).unwrap();
    let record = KeyRecord {
        key: Key::new(key).unwrap(),
        root: Root::Tree { id: child },
        created: 1,
        size: 0,
        files: 0,
        labels: Default::default(),
        attachments: Default::default(),
        signatures: vec![],
    };
    let rr = serde_json::json!({
        "format": 1,
        "record": record,
        "packs": [sealed.id],
        "blobs": [],
    });
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(
        keys.join(format!("{key}.key")),
        serde_json::to_vec(&rr).unwrap(),
    )
    .unwrap();
    child
}

#[test]
fn pulled_tree_nested_100000_levels_is_refused_without_a_crash() {
    let env = Env::new();
    let remote = env.path("remote");
    let root = deep_remote(&remote, "deep");
    env.ok(&["put", "base", s(&env.path("remote/cairn-remote.json"))]);
    let before = env.state();
    let url = format!("file://{}", remote.display());
    for args in [
        vec!["pull", url.as_str(), "deep"],
        vec![
            "get",
            "deep",
            s(&env.path("dest")),
            "--remote",
            url.as_str(),
        ],
    ] {
        let out = env.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "cairn {args:?} did not fail cleanly (a signal is a crash): {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "not one line: {stderr}");
        assert!(
            lines[0].contains("nested more than 1024") && lines[0].contains(&root.to_string()),
            "{args:?}: {stderr}"
        );
        assert!(!env.path("dest").exists(), "DEST was created");
        assert_eq!(env.state(), before, "the store changed");
    }
}
