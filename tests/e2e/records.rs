//! Key records: attachments (and the names they may have), and a record the local index holds
//! but cannot read, which must be reported as corrupt rather than treated as a missing key.

use crate::common::{Env, s, write};

/// `keys` table of the index (docs/format.md, "redb tables").
const KEYS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("keys");

/// Overwrites `key`'s record in the store's index with `bytes`, as a damaged index (or a bug in
/// another version) could leave it.
fn damage_record(env: &Env, key: &str, bytes: &[u8]) {
    let db = redb::Database::open(env.store().join("index.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(KEYS).unwrap();
        t.insert(key, bytes).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn attachments_round_trip_and_bad_names_are_refused() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, "out.txt", b"output\n");
    write(&src, "sbom.json", b"{\"sbom\": 1}\n");
    env.ok(&["put", "app", s(&src.join("out.txt"))]);
    env.ok(&["attach", "app", "sbom.json", s(&src.join("sbom.json"))]);
    let listed = env.json(&["attachments", "app"]);
    assert_eq!(listed["sbom.json"]["size"], 12, "{listed}");
    assert_eq!(
        env.ok(&["cat", "app", "--attachment", "sbom.json"]),
        "{\"sbom\": 1}"
    );
    for bad in ["", ".hidden", "a=b", "a\nb", "a/b"] {
        let err = env.fails(&["attach", "app", bad, s(&src.join("sbom.json"))]);
        assert!(err.contains("invalid attachment name"), "{bad:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let err = env.fails(&["cat", "app", "--attachment", "a=b"]);
    assert!(err.contains("invalid attachment name"), "{err}");
    env.ok(&["verify"]);
}

#[test]
fn a_corrupt_local_record_is_reported_not_pulled_over() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, "f.txt", b"from the remote\n");
    // A remote that has the key, so a `get --remote` that took the damaged record for a missing
    // one would pull and succeed.
    let publisher = Env::new();
    publisher.ok(&["put", "app", s(&src)]);
    let url = format!("file://{}", env.path("remote").display());
    publisher.ok(&["push", &url, "app"]);
    env.ok(&["put", "app", s(&src)]);
    damage_record(&env, "app", b"{\"key\": \"app\", \"root\": ");
    for args in [
        vec!["get", "app", s(&env.path("dest")), "--remote", url.as_str()],
        vec!["show", "app"],
        vec!["ls"],
        vec!["gc"],
    ] {
        let err = env.fails(&args);
        assert!(
            err.contains("key app") && err.contains("record") && err.contains("corrupt"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("unknown key"), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert!(!env.path("dest").exists(), "get wrote DEST");
    let v = env.run(&["--json", "verify"]);
    let code = v.status.code().expect("verify exited");
    assert_eq!(
        code & 8,
        8,
        "verify did not report the corrupt record: {code}"
    );
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert!(report.to_string().contains("app"), "{report}");
}
