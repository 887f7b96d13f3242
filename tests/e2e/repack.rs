//! Repacking sparse remote packs (issue 13): a pack shared by many keys is rewritten with only
//! what the remaining keys reach once it is mostly dead, its records re-pointed, and the old
//! pack goes through the tombstone path. Against `file://`, moto and Azurite; kill -9 at each
//! step against moto behind the fault proxy.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::remote::*;
use crate::common::{assert_same_tree, s};
use crate::lifecycle::{next_seconds, record_units, rgc, set, unit_objects, wait_for_stall};

/// Keys pushed in one push, so that they share one pack, with most of them then removed.
struct Shared {
    site: Site,
    kept: Vec<String>,
    /// `pack blake3:…`
    pack: String,
    pack_bytes: usize,
}

const KEYS: usize = 10;
const KEPT: usize = 3;

/// Pushes `KEYS` keys at once (each 4 incompressible files of its own, small text files, and
/// one file all share), checks they share one pack, and removes all but the last `KEPT`.
fn shared_pack(b: &Backend) -> Shared {
    let a = Site::new();
    a.add("r", b, &[]);
    let mut keys = Vec::new();
    for i in 0..KEYS {
        let src = a.env.path(&format!("src{i}"));
        incompressible_files(&src, 7000 + i as u64, 4, 40_000);
        small_files(&src, &format!("key{i}"), 6, 2);
        std::fs::write(src.join("common.txt"), "in every key\n".repeat(100)).unwrap();
        let key = format!("k/{i}");
        a.ok(&["put", &key, s(&src)]);
        keys.push(key);
    }
    let mut args = vec!["push", "r"];
    args.extend(keys.iter().map(String::as_str));
    a.json(&args);
    let units = record_units(b, "k/0");
    assert_eq!(units.len(), 1, "one shared pack: {units:?}");
    for k in &keys {
        assert_eq!(record_units(b, k), units, "{k}");
    }
    for k in &keys[..KEYS - KEPT] {
        a.ok(&["rm", "--remote", "r", k]);
    }
    let pack = units.into_iter().next().unwrap();
    let pack_bytes = b.read(&unit_objects(&pack)[0]).unwrap().len();
    Shared {
        site: a,
        kept: keys[KEYS - KEPT..].to_vec(),
        pack,
        pack_bytes,
    }
}

fn verify_remote(site: &Site, keys: &[String], what: &str) {
    let mut args = vec!["verify", "--remote", "r"];
    args.extend(keys.iter().map(String::as_str));
    let out = site.run(&args);
    assert!(
        out.status.success(),
        "{what}: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Every key in `keys` restores, in a store that never saw it, as it was put.
fn restores_elsewhere(b: &Backend, from: &Site, keys: &[String]) {
    let c = Site::new();
    c.add("r", b, &[]);
    for k in keys {
        let i = k.strip_prefix("k/").unwrap();
        let got = c.get(k, &format!("out{i}"));
        assert_same_tree(&from.env.path(&format!("src{i}")), &got, k);
    }
}

fn record(b: &Backend, key: &str) -> Value {
    serde_json::from_slice(&b.read(&format!("keys/{key}.key")).unwrap()).unwrap()
}

#[test]
fn repack_frees_the_dead_part_of_a_shared_pack_file() {
    repack_frees(
        Kind::File,
        "repack_frees_the_dead_part_of_a_shared_pack_file",
    );
}

#[test]
fn repack_frees_the_dead_part_of_a_shared_pack_s3() {
    repack_frees(Kind::S3, "repack_frees_the_dead_part_of_a_shared_pack_s3");
}

#[test]
fn repack_frees_the_dead_part_of_a_shared_pack_azure() {
    repack_frees(
        Kind::Azure,
        "repack_frees_the_dead_part_of_a_shared_pack_azure",
    );
}

/// A dry run names the sparse pack and changes nothing; a run copies the kept keys' objects
/// into one new pack, re-points their records and tombstones the old pack; a push that relied
/// on the old pack uploads again; a run a grace period later deletes it; the new pack is not
/// repacked again; everything kept restores elsewhere.
fn repack_frees(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let sh = shared_pack(&b);
    let a = &sh.site;
    next_seconds(); // the pack older than the grace
    let before: Vec<Value> = sh.kept.iter().map(|k| record(&b, k)).collect();
    let dry = rgc(a, "r", &["--grace", "1s", "--dry-run"]);
    assert_eq!(
        set(&dry["repacked"]),
        BTreeSet::from([sh.pack.clone()]),
        "{dry}"
    );
    assert!(
        num(&dry, "/repack_bytes_copied") * 2 < sh.pack_bytes as u64,
        "{dry}"
    );
    let after_dry: Vec<Value> = sh.kept.iter().map(|k| record(&b, k)).collect();
    assert_eq!(before, after_dry, "a dry run rewrote records");
    assert_eq!(b.list("packs").len(), 2, "a dry run wrote packs");

    let r = rgc(a, "r", &["--grace", "1s"]);
    assert_eq!(
        set(&r["repacked"]),
        BTreeSet::from([sh.pack.clone()]),
        "{r}"
    );
    assert_eq!(num(&r, "/repack_records_rewritten"), KEPT as u64, "{r}");
    let written = set(&r["repack_packs_written"]);
    assert_eq!(written.len(), 1, "{r}");
    assert!(set(&r["tombstoned"]).contains(&sh.pack), "{r}");
    assert!(set(&r["repack_skipped"]).is_empty(), "{r}");
    let new_pack = written.into_iter().next().unwrap();
    let new_bytes = b.read(&unit_objects(&new_pack)[0]).unwrap().len();
    assert!(
        new_bytes * 10 < sh.pack_bytes * 4,
        "{new_bytes} of {} bytes kept for {KEPT} of {KEYS} keys",
        sh.pack_bytes
    );
    for (k, old) in sh.kept.iter().zip(&before) {
        let now = record(&b, k);
        assert_eq!(
            record_units(&b, k),
            BTreeSet::from([new_pack.clone()]),
            "{k}"
        );
        // Only where the closure lives changed: the key's record (and signatures) did not.
        assert_eq!(now["record"], old["record"], "{k}");
    }
    verify_remote(a, &sh.kept, "after the repack");

    // This machine's ledger places k/0's objects in the tombstoned pack: pushing it again
    // uploads them anew rather than naming that pack.
    a.json(&["push", "r", "k/0"]);
    assert!(!record_units(&b, "k/0").contains(&sh.pack));
    let mut all = sh.kept.clone();
    all.push("k/0".into());
    verify_remote(a, &all, "after pushing k/0 again");

    next_seconds();
    let r2 = rgc(a, "r", &["--grace", "1s"]);
    assert!(set(&r2["deleted"]).contains(&sh.pack), "{r2}");
    for o in unit_objects(&sh.pack) {
        assert!(b.read(&o).is_none(), "{o} left: {r2}");
    }
    assert!(set(&r2["repacked"]).is_empty(), "repacked again: {r2}");
    verify_remote(a, &all, "after the sweep");
    restores_elsewhere(&b, a, &all);
}

/// A record pushed before cairn wrote spans gives no way to judge its packs: gc leaves them
/// whole and says how many it could not judge.
#[test]
fn packs_of_records_without_spans_are_left_whole_file() {
    let Some(b) = Backend::new(Kind::File, "packs_of_records_without_spans") else {
        return;
    };
    let sh = shared_pack(&b);
    let last = sh.kept.last().unwrap();
    let mut rec = record(&b, last);
    rec.as_object_mut().unwrap().remove("spans").unwrap();
    b.write(
        &format!("keys/{last}.key"),
        &serde_json::to_vec_pretty(&rec).unwrap(),
    );
    next_seconds();
    let r = rgc(&sh.site, "r", &["--grace", "1s"]);
    assert!(set(&r["repacked"]).is_empty(), "{r}");
    assert_eq!(num(&r, "/packs_without_spans"), 1, "{r}");
    assert!(!set(&r["tombstoned"]).contains(&sh.pack), "{r}");
    verify_remote(&sh.site, &sh.kept, "records without spans");
}

/// Spans that leave out objects a key needs (a bug, or a forged record) never make gc drop
/// them: what is kept comes from walking the trees. `verify --remote` names the record.
#[test]
fn spans_that_omit_objects_cannot_make_gc_drop_them_file() {
    let Some(b) = Backend::new(Kind::File, "spans_that_omit_objects") else {
        return;
    };
    let sh = shared_pack(&b);
    let last = sh.kept.last().unwrap().clone();
    let mut rec = record(&b, &last);
    // A single byte of the pack: as if the key used nothing there.
    let pack_id = sh.pack.strip_prefix("pack ").unwrap();
    rec["spans"][pack_id] = json!([11, 1]);
    b.write(
        &format!("keys/{last}.key"),
        &serde_json::to_vec_pretty(&rec).unwrap(),
    );
    let out = sh.site.run(&["verify", "--remote", "r", &last]);
    assert!(!out.status.success(), "verify passed lying spans");
    assert!(
        text(&out.stdout).contains("spans of pack"),
        "{}",
        text(&out.stdout)
    );
    next_seconds();
    let r = rgc(&sh.site, "r", &["--grace", "1s"]);
    assert_eq!(
        set(&r["repacked"]),
        BTreeSet::from([sh.pack.clone()]),
        "{r}"
    );
    // The rewritten record has spans from its trees again.
    verify_remote(&sh.site, &sh.kept, "after repacking around lying spans");
    next_seconds();
    let r2 = rgc(&sh.site, "r", &["--grace", "1s"]);
    assert!(set(&r2["deleted"]).contains(&sh.pack), "{r2}");
    restores_elsewhere(&b, &sh.site, &sh.kept);
}

/// A record a push replaces while gc repacks is not overwritten, nor one `rm --remote` deletes
/// brought back (the rewrite is conditional on the ETag gc read), and the old pack the
/// replaced record may name stays live.
#[test]
fn a_record_replaced_during_repack_keeps_its_pack_s3() {
    let test = "a_record_replaced_during_repack_keeps_its_pack_s3";
    let Some(b) = Backend::new(Kind::S3, test) else {
        return;
    };
    let sh = shared_pack(&b);
    let a = &sh.site;
    let faults = Faults::new(&b);
    a.add_via("slow", &b, &b.options_via(&faults.endpoint), &[]);
    next_seconds();
    // Stall the gc's first read of a pack index (the repack's walk), then push one kept key
    // again from another machine meanwhile.
    faults.set(
        json!({"methods": ["GET"], "path_regex": path_regex(&b, r"packs/.*\.idx$"),
                      "stall_first": 1, "stall_seconds": 5.0}),
    );
    let mut gc = a.spawn(&["--json", "remote", "gc", "slow", "--grace", "1s"]);
    wait_for_stall(&faults, &mut gc, "the repack's index read");
    let other = Site::new();
    other.add("r", &b, &[]);
    let key = sh.kept[0].clone();
    let i = key.strip_prefix("k/").unwrap();
    other.ok(&["put", &key, s(&a.env.path(&format!("src{i}")))]);
    other.json(&["push", "r", &key]);
    let replaced = record(&b, &key);
    let removed = sh.kept[1].clone();
    other.ok(&["rm", "--remote", "r", &removed]);
    let out = crate::lifecycle::finished(gc, "gc");
    faults.clear();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        record(&b, &key),
        replaced,
        "gc overwrote the pushed record: {r}"
    );
    assert!(
        b.read(&format!("keys/{removed}.key")).is_none(),
        "gc brought back a removed record: {r}"
    );
    assert_eq!(
        num(&r, "/repack_records_rewritten"),
        (KEPT - 2) as u64,
        "{r}"
    );
    // Either the pushed record names the old pack (uploaded nothing: its ledger was empty, so
    // it did) or not; gc could not know which, so the old pack stays.
    assert!(set(&r["repacked"]).is_empty(), "{r}");
    assert!(!set(&r["tombstoned"]).contains(&sh.pack), "{r}");
    let left: Vec<String> = sh.kept.iter().filter(|k| **k != removed).cloned().collect();
    verify_remote(a, &left, "after the race");
    restores_elsewhere(&b, a, &left);
}

/// kill -9 at each step of a repack (a new pack's upload, its index's, a record's rewrite),
/// each while the fault proxy stalls that step's first request: `verify --remote` is clean
/// after each, and two later runs leave only the new pack, every kept key restoring.
#[test]
fn kill_9_at_each_step_of_a_repack_s3() {
    let test = "kill_9_at_each_step_of_a_repack_s3";
    let Some(b) = Backend::new(Kind::S3, test) else {
        return;
    };
    let sh = shared_pack(&b);
    let a = &sh.site;
    let faults = Faults::new(&b);
    a.add_via("slow", &b, &b.options_via(&faults.endpoint), &[]);
    next_seconds();
    let steps: Vec<(&str, Value)> = vec![
        (
            "uploading a new pack",
            json!({"methods": ["PUT"], "path_regex": path_regex(&b, r"packs/.*\.pack$")}),
        ),
        (
            "uploading its index",
            json!({"methods": ["PUT"], "path_regex": path_regex(&b, r"packs/.*\.idx$")}),
        ),
        (
            "rewriting a record",
            json!({"methods": ["PUT"], "path_regex": path_regex(&b, r"keys/.*\.key$")}),
        ),
    ];
    for (what, mut cfg) in steps {
        cfg["stall_prob"] = json!(1.0);
        cfg["stall_seconds"] = json!(3.0);
        faults.set(cfg);
        let mut gc = a.spawn(&["remote", "gc", "slow", "--grace", "1s"]);
        wait_for_stall(&faults, &mut gc, what);
        gc.kill().unwrap();
        let st = gc.wait().unwrap();
        assert_eq!(
            st.signal(),
            Some(9),
            "{what}: the gc finished before the kill"
        );
        // Let the stalled request land, so the state is the same every run.
        std::thread::sleep(Duration::from_millis(4000));
        faults.clear();
        verify_remote(a, &sh.kept, &format!("after a kill while {what}"));
    }
    // Reruns finish the job: the old pack and the killed runs' orphan packs are tombstoned,
    // then deleted; only packs some record names are left.
    for _ in 0..3 {
        next_seconds();
        rgc(a, "r", &["--grace", "1s"]);
    }
    for o in unit_objects(&sh.pack) {
        assert!(b.read(&o).is_none(), "{o} left after the reruns");
    }
    let named: BTreeSet<String> = sh
        .kept
        .iter()
        .flat_map(|k| record_units(&b, k))
        .flat_map(|u| unit_objects(&u))
        .collect();
    let left: BTreeSet<String> = b.list("packs").into_iter().collect();
    assert_eq!(left, named, "packs left besides the named ones");
    assert!(b.list("gc/tombstones").is_empty(), "tombstones left");
    verify_remote(a, &sh.kept, "after the reruns");
    restores_elsewhere(&b, a, &sh.kept);
}
