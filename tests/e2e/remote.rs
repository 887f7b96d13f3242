//! Remote sync end to end, against real local servers: moto (S3), Azurite (Azure),
//! fake-gcs-server (GCS, pull only: it does not serve object_store's writes), `file://` and
//! read-only `http://` remotes, and a fault-injecting proxy in front of moto
//! (`scripts/faulty_proxy.py`).
//!
//! The servers come from `scripts/services.sh start`; their addresses from the env file it writes
//! (`source $(scripts/services.sh env)`). `scripts/test.sh` does both and sets
//! `CAIRN_REQUIRE_SERVICES=1`, under which a missing variable fails the test. Without it (a plain
//! `cargo test`), tests that need a server print `SKIPPED: …` and pass; `file://` and `http://`
//! tests always run.
//!
//! Objects are put on, read from and tampered with on the servers without cairn, through signed
//! REST calls (`scripts/check_services.py`'s helpers, run by `python3`). Every test works under
//! its own prefix, so tests run in parallel and re-runs against long-lived servers never meet
//! old objects. The shared proxy's fault configuration is global: tests using it take
//! [`SHARED_PROXY`]; Azure tests start a private proxy in front of Azurite.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::remote::*;
use crate::common::{Rng, assert_one_error_line, assert_same_tree, noise, s, write};

macro_rules! on {
    ($scenario:ident: $($name:ident => $kind:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $scenario(Kind::$kind, stringify!($name));
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// 1. Round trip.

on!(round_trip:
    round_trip_file => File,
    round_trip_s3 => S3,
    round_trip_azure => Azure,
    round_trip_gcs => Gcs,
);

/// A tree of a few hundred files, a >8 MiB file (stored on its own), symlinks, an executable
/// and empty folders goes to the remote and into a second store, which restores it exactly.
fn round_trip(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, c) = (Site::new(), Site::new());
    let src = a.env.path("src");
    small_files(&src, "rt", 300, 20);
    special_entries(&src);
    write(&src, "large.bin", &noise(9 * 1024 * 1024 + 4321, 7));
    write(&src, "text.txt", &b"compressible text\n".repeat(20_000));
    let root = a.ok(&["put", "app/linux@1", s(&src)]);
    if kind != Kind::Gcs {
        a.add("r", &b, &[]);
    }
    let pushed = b.publish(&a, "r", &["app/linux@1"]);
    assert_eq!(pushed["keys"], json!(["app/linux@1"]), "{pushed}");
    assert!(
        num(&pushed, "/standalone_blobs") >= 1,
        "the 9 MiB file goes alone: {pushed}"
    );
    assert!(num(&pushed, "/packs") >= 1, "{pushed}");
    assert!(
        b.read("keys/app/linux@1.key").is_some(),
        "no key record on {}",
        b.url()
    );

    c.add("r", &b, &[]);
    let pulled = c.json(&["pull", "r", "app/linux@1"]);
    assert_eq!(pulled["keys"][0]["key"], "app/linux@1", "{pulled}");
    assert_eq!(pulled["keys"][0]["root"]["id"], root.as_str(), "{pulled}");
    assert_eq!(
        num(&pulled, "/objects_received"),
        num(&pushed, "/objects_sent"),
        "pull {pulled} vs push {pushed}"
    );
    let out = c.get("app/linux@1", "out");
    assert_same_tree(&src, &out, &format!("{test}: get after pull"));
    assert_eq!(
        a.export_sha("app/linux@1"),
        c.export_sha("app/linux@1"),
        "{test}: exports differ between the pushing and the pulling store"
    );
    c.assert_verify_clean(test);
}

// ---------------------------------------------------------------------------------------------
// 2. Two stores, one remote.

on!(shared_remote:
    shared_remote_file => File,
    shared_remote_s3 => S3,
    shared_remote_azure => Azure,
);

/// Store A pushes k1, store B pushes k2 (most content shared); each pulls the other's key,
/// fetching only what it lacks.
fn shared_remote(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, z) = (Site::new(), Site::new());
    let (src1, src2) = (a.env.path("src1"), z.env.path("src2"));
    for src in [&src1, &src2] {
        small_files(src, "shared", 200, 10);
        write(src, "shared.bin", &noise(3 * 1024 * 1024, 11));
    }
    small_files(&src1.join("own"), "one", 50, 5);
    small_files(&src2.join("own"), "two", 50, 5);
    a.ok(&["put", "k1", s(&src1)]);
    z.ok(&["put", "k2", s(&src2)]);
    a.add("r", &b, &[]);
    z.add("r", &b, &[]);
    a.json(&["push", "r", "k1"]);
    z.json(&["push", "r", "k2"]);

    let p = a.json(&["pull", "r", "k2"]);
    assert!(
        num(&p, "/objects_skipped") > 0,
        "A already has k2's shared files: {p}"
    );
    let q = z.json(&["pull", "r", "k1"]);
    assert!(
        num(&q, "/objects_skipped") > 0,
        "B already has k1's shared files: {q}"
    );
    for site in [&a, &z] {
        assert_eq!(site.keys(), ["k1", "k2"]);
        site.assert_verify_clean(test);
    }
    assert_same_tree(&src2, &a.get("k2", "out2"), &format!("{test}: k2 in A"));
    assert_same_tree(&src1, &z.get("k1", "out1"), &format!("{test}: k1 in B"));
}

// ---------------------------------------------------------------------------------------------
// 3. Request counts.

/// 10,000 small files, pushed to a `file://`, an S3 and an Azure remote (one tree and one `put`
/// for all three: they are the slow part): each push makes at most 50 PUTs, each pull into an
/// empty store at most 50 GETs (and the store then verifies clean), and a second push of the same
/// key uploads nothing.
#[test]
fn request_counts_of_10000_files_on_file_s3_and_azure() {
    let test = "request_counts";
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "many", 10_000, 100);
    a.ok(&["put", "many", s(&src)]);
    for kind in [Kind::File, Kind::S3, Kind::Azure] {
        let Some(b) = Backend::new(kind, &format!("{test}_{kind:?}")) else {
            continue;
        };
        let what = format!("{test}: {kind:?}");
        let remote = format!("{kind:?}");
        a.add(&remote, &b, &[]);
        let first = a.json(&["push", &remote, "many"]);
        // 10,000 blobs + 100 folders + the root.
        assert_eq!(num(&first, "/objects_sent"), 10_101, "{what}: {first}");
        assert!(
            num(&first, "/requests/puts") <= 50,
            "{what}: push of 10,000 files: {first}"
        );

        let c = Site::new();
        c.add("r", &b, &[]);
        let pulled = c.json(&["pull", "r", "many"]);
        assert_eq!(
            num(&pulled, "/objects_received"),
            10_101,
            "{what}: {pulled}"
        );
        assert!(
            num(&pulled, "/requests/gets") <= 50,
            "{what}: pull of 10,000 files: {pulled}"
        );
        c.assert_verify_clean(&what);

        let again = a.json(&["push", &remote, "many"]);
        assert_eq!(
            num(&again, "/objects_sent"),
            0,
            "{what}: second push: {again}"
        );
        assert_eq!(
            num(&again, "/bytes_sent"),
            0,
            "{what}: second push: {again}"
        );
        assert_eq!(
            num(&again, "/objects_skipped"),
            10_101,
            "{what}: second push: {again}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Small change, small upload.

on!(small_change:
    small_change_file => File,
    small_change_s3 => S3,
    small_change_azure => Azure,
);

/// After 1% of 1000 files (4 KiB each) change, pushing the new version sends at most 3% of the
/// bytes the first push sent; the new version pulls into an empty store that verifies clean.
fn small_change(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, c) = (Site::new(), Site::new());
    let src = a.env.path("src");
    let mut rng = Rng::new(41);
    for i in 0..1000 {
        write(&src, &format!("d{:02}/f{i}.bin", i % 20), &rng.bytes(4096));
    }
    a.ok(&["put", "v1", s(&src)]);
    a.add("r", &b, &[]);
    let first = a.json(&["push", "r", "v1"]);
    for i in (0..1000).step_by(100) {
        write(&src, &format!("d{:02}/f{i}.bin", i % 20), &rng.bytes(4096));
    }
    a.ok(&["put", "v2", s(&src)]);
    let second = a.json(&["push", "r", "v2"]);
    let (b1, b2) = (num(&first, "/bytes_sent"), num(&second, "/bytes_sent"));
    assert!(
        b2 * 100 <= b1 * 3,
        "{test}: re-push after changing 10 of 1000 files sent {b2} bytes, more than 3% of the \
         first push's {b1}: {second}"
    );
    c.add("r", &b, &[]);
    c.json(&["pull", "r", "v2"]);
    c.assert_verify_clean(test);
}

// ---------------------------------------------------------------------------------------------
// 5. Interrupted push.

on!(interrupted_push:
    interrupted_push_file => File,
    interrupted_push_s3 => S3,
    interrupted_push_azure => Azure,
);

/// `push` SIGKILLed after some packs are up: the key is not on the remote; pushing again
/// completes, uploading only what is missing; the key then pulls and restores.
fn interrupted_push(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    // 2 MiB incompressible files: 8 per 16 MiB pack. Through a proxy that stalls every pack
    // upload by 2 s, 4 packs take two rounds (3 packs go up at once); a file:// push is not
    // slowed, so it gets more packs.
    let files = if kind == Kind::File { 56 } else { 28 };
    incompressible_files(&src, 5, files, 2 * 1024 * 1024);
    small_files(&src, "int", 100, 4);
    a.ok(&["put", "big", s(&src)]);
    a.add("r", &b, &[]);
    let faults = (kind != Kind::File).then(|| Faults::new(&b));
    match &faults {
        Some(f) => {
            f.set(json!({
                "methods": ["PUT"],
                "path_regex": path_regex(&b, r"packs/.*\.pack$"),
                "stall_prob": 1.0,
                "stall_seconds": 2.0,
            }));
            a.add_via("slow", &b, &b.options_via(&f.endpoint), &[]);
        }
        None => a.add("slow", &b, &[]),
    }

    let mut child = a.spawn(&["push", "slow", "big"]);
    let start = Instant::now();
    let (want_idx, margin, poll) = if kind == Kind::File {
        (2, Duration::from_millis(20), Duration::from_millis(2))
    } else {
        (1, Duration::from_millis(700), Duration::from_millis(50))
    };
    loop {
        let idx = b
            .list("packs")
            .iter()
            .filter(|n| n.ends_with(".idx"))
            .count();
        if idx >= want_idx {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{test}: push ended ({st:?}) before {want_idx} pack(s) were up: {}",
                text(&out.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{test}: no pack after 60 s"
        );
        std::thread::sleep(poll);
    }
    std::thread::sleep(margin);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{test}: push finished before the kill ({:?}): {}",
        out.status,
        text(&out.stderr)
    );
    drop(faults);
    let packs_up = b
        .list("packs")
        .iter()
        .filter(|n| n.ends_with(".idx"))
        .count();
    assert!(
        packs_up >= 1,
        "{test}: no pack on the remote after the kill"
    );

    // Not readable: no record, and pull says so.
    assert_eq!(
        b.read("keys/big.key"),
        None,
        "{test}: key record written by a killed push"
    );
    let c = Site::new();
    c.add("r", &b, &[]);
    let before = c.state();
    c.fails(&["pull", "r", "big"], &["big", "not on the remote"]);
    assert_eq!(c.state(), before, "{test}: failed pull changed the store");

    // Resumed.
    let again = a.json(&["push", "r", "big"]);
    assert_eq!(again["keys"], json!(["big"]), "{again}");
    let total = files as u64 * 2 * 1024 * 1024;
    assert!(
        num(&again, "/objects_skipped") > 0 && num(&again, "/bytes_sent") < total,
        "{test}: the push resumed after {packs_up} pack(s) were up re-sent everything: {again}"
    );
    c.json(&["pull", "r", "big"]);
    assert_same_tree(&src, &c.get("big", "out"), test);
    c.assert_verify_clean(test);
}

// ---------------------------------------------------------------------------------------------
// 6. Corrupt remote objects.

on!(corrupt_objects:
    corrupt_objects_file => File,
    corrupt_objects_s3 => S3,
    corrupt_objects_azure => Azure,
    corrupt_objects_gcs => Gcs,
);

/// One entry of a pack index.
struct IdxEntry {
    id: String,
    kind: u8,
    offset: usize,
    len: usize,
}

/// Parses a pack index (`docs/format.md`): zstd of magic, pack id, pack length, count, entries.
fn parse_index(bytes: &[u8]) -> Vec<IdxEntry> {
    let raw = zstd::decode_all(bytes).expect("index is zstd");
    assert_eq!(&raw[..10], b"cairn-idx\x01", "index magic");
    let count = u32::from_le_bytes(raw[50..54].try_into().unwrap()) as usize;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let u = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap()) as usize;
    (0..count)
        .map(|i| {
            let e = &raw[54 + i * 58..54 + (i + 1) * 58];
            IdxEntry {
                id: format!("blake3:{}", hex(&e[..32])),
                kind: e[32],
                offset: u(&e[34..42]),
                len: u(&e[42..50]),
            }
        })
        .collect()
}

fn hex_of(id: &Value) -> String {
    id.as_str()
        .and_then(|s| s.strip_prefix("blake3:"))
        .expect("an id")
        .to_string()
}

/// Flipped and truncated packs and standalone blobs, a record naming a pack that does not
/// exist, and records whose root was changed: pull fails naming what is wrong, exit 1, and
/// nothing enters the pulling store.
fn corrupt_objects(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "corrupt", 60, 6);
    write(&src, "large.bin", &noise(9 * 1024 * 1024, 3));
    a.ok(&["put", "k", s(&src)]);
    if kind != Kind::Gcs {
        a.add("r", &b, &[]);
    }
    b.publish(&a, "r", &["k"]);

    let rec_bytes = b.read("keys/k.key").expect("key record");
    let rec: Value = serde_json::from_slice(&rec_bytes).unwrap();
    let pack = hex_of(&rec["packs"][0]);
    let blob = hex_of(&rec["blobs"][0]);
    let pack_rel = format!("packs/{}/{pack}.pack", &pack[..2]);
    let idx_rel = format!("packs/{}/{pack}.idx", &pack[..2]);
    let blob_rel = format!("blobs/{}/{blob}.zst", &blob[..2]);
    let pack_bytes = b.read(&pack_rel).expect("pack");
    let blob_bytes = b.read(&blob_rel).expect("standalone blob");
    let entries = parse_index(&b.read(&idx_rel).expect("pack index"));
    let victim = entries
        .iter()
        .find(|e| e.kind == 1)
        .expect("a blob in the pack");

    let attempt = |what: &str, needles: &[&str]| refused_pull(&b, "k", what, needles, test);

    // A byte flipped inside one packed blob.
    let mut bad = pack_bytes.clone();
    bad[victim.offset + victim.len / 2] ^= 0x55;
    b.write(&pack_rel, &bad);
    attempt("flipped pack byte", &[&victim.id, "corrupt"]);

    // The pack cut in half.
    b.write(&pack_rel, &pack_bytes[..pack_bytes.len() / 2]);
    attempt("truncated pack", &[&pack, "corrupt"]);
    b.write(&pack_rel, &pack_bytes);

    // A byte flipped in the standalone blob.
    let mut bad = blob_bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    b.write(&blob_rel, &bad);
    attempt("flipped blob byte", &[&format!("blake3:{blob}"), "corrupt"]);

    // The standalone blob cut short.
    b.write(&blob_rel, &blob_bytes[..blob_bytes.len() / 3]);
    attempt("truncated blob", &[&format!("blake3:{blob}"), "corrupt"]);
    b.write(&blob_rel, &blob_bytes);

    // A record naming a pack that does not exist.
    let ghost = "ab".repeat(32);
    let mut r = rec.clone();
    r["packs"][0] = json!(format!("blake3:{ghost}"));
    b.write("keys/k.key", &serde_json::to_vec_pretty(&r).unwrap());
    attempt("record naming a missing pack", &[&ghost]);

    // A record whose root is an id the remote does not hold.
    let other = format!("blake3:{}", "cd".repeat(32));
    let mut r = rec.clone();
    r["record"]["root"]["id"] = json!(other);
    b.write("keys/k.key", &serde_json::to_vec_pretty(&r).unwrap());
    attempt("record with an unknown root", &[&other]);

    // Restored, it pulls.
    b.write("keys/k.key", &rec_bytes);
    let c = Site::new();
    c.add("r", &b, &[]);
    c.json(&["pull", "r", "k"]);
    assert_same_tree(&src, &c.get("k", "out"), test);
    c.assert_verify_clean(test);
}

/// Pulls `key` from `b` into a fresh store: it must fail (exit 1, one error line naming every
/// needle) and leave the store as it was, with no key bound.
fn refused_pull(b: &Backend, key: &str, what: &str, needles: &[&str], test: &str) {
    let c = Site::new();
    c.add("r", b, &[]);
    let before = c.state();
    let line = c.fails(&["pull", "r", key], needles);
    eprintln!("{test}: {what}: {line}");
    assert_eq!(
        c.state(),
        before,
        "{test}: {what}: the failed pull changed the store"
    );
    assert!(c.keys().is_empty(), "{test}: {what}: a key was bound");
}

on!(swapped_root:
    swapped_root_file => File,
    swapped_root_s3 => S3,
    swapped_root_azure => Azure,
);

/// A key record whose root was changed to another tree the remote does hold (one of the key's
/// own folders): every object checks out, but the record's size and file count are not that
/// tree's. The pull must fail naming the root, and bind nothing.
fn swapped_root(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "swap", 60, 6);
    a.ok(&["put", "k", s(&src)]);
    a.add("r", &b, &[]);
    a.json(&["push", "r", "k"]);
    let mut rec: Value = serde_json::from_slice(&b.read("keys/k.key").unwrap()).unwrap();
    let pack = hex_of(&rec["packs"][0]);
    let entries = parse_index(&b.read(&format!("packs/{}/{pack}.idx", &pack[..2])).unwrap());
    let folder = entries
        .iter()
        .find(|e| e.kind == 2 && e.id != rec["record"]["root"]["id"])
        .expect("a folder's tree in the pack");
    rec["record"]["root"]["id"] = json!(folder.id);
    b.write("keys/k.key", &serde_json::to_vec_pretty(&rec).unwrap());
    refused_pull(
        &b,
        "k",
        "record with a folder's tree as root",
        &[&folder.id],
        test,
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Concurrent pushes.

on!(concurrent_push:
    concurrent_push_file => File,
    concurrent_push_s3 => S3,
    concurrent_push_azure => Azure,
);

/// Two processes push overlapping content to one remote at once: both succeed, and both keys
/// pull, verify and restore.
fn concurrent_push(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, z, c) = (Site::new(), Site::new(), Site::new());
    let (src1, src2) = (a.env.path("src1"), z.env.path("src2"));
    for src in [&src1, &src2] {
        small_files(src, "both", 200, 10);
        incompressible_files(src, 21, 6, 2 * 1024 * 1024);
    }
    small_files(&src1.join("own"), "one", 100, 4);
    small_files(&src2.join("own"), "two", 100, 4);
    incompressible_files(&src2.join("own"), 22, 1, 9 * 1024 * 1024);
    a.ok(&["put", "one", s(&src1)]);
    z.ok(&["put", "two", s(&src2)]);
    a.add("r", &b, &[]);
    z.add("r", &b, &[]);
    let p1 = a.spawn(&["push", "r", "one"]);
    let p2 = z.spawn(&["push", "r", "two"]);
    for (p, k) in [(p1, "one"), (p2, "two")] {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{test}: concurrent push of {k} failed ({:?}): {}",
            out.status,
            text(&out.stderr)
        );
    }
    c.add("r", &b, &[]);
    c.json(&["pull", "r", "one", "two"]);
    c.assert_verify_clean(test);
    assert_same_tree(&src1, &c.get("one", "out1"), test);
    assert_same_tree(&src2, &c.get("two", "out2"), test);
}

// ---------------------------------------------------------------------------------------------
// 8. Faults.

/// One transient fault pattern through the proxy (`cfg`, restricted to the backend's objects;
/// a `path_regex` in it applies to paths relative to the remote's root): push and pull still finish, the proxy's `counter` shows the
/// faults were injected, and the pulled key verifies and restores exactly.
fn transient_fault(kind: Kind, test: &str, mut cfg: Value, counter: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "faults", 150, 10);
    incompressible_files(&src, 31, 2, 3 * 1024 * 1024);
    write(&src, "large.bin", &noise(9 * 1024 * 1024, 32));
    a.ok(&["put", "k", s(&src)]);
    let only = cfg["path_regex"].as_str().unwrap_or("").to_string();
    cfg["path_regex"] = json!(path_regex(&b, &only));
    let f = Faults::new(&b);
    f.set(cfg.clone());
    a.add_via("r", &b, &b.options_via(&f.endpoint), &[]);
    let pushed = a.json(&["push", "r", "k"]);
    assert_eq!(pushed["keys"], json!(["k"]), "{test}: {pushed}");
    let after_push = f.counters();

    f.set(cfg);
    let c = Site::new();
    c.add_via("r", &b, &b.options_via(&f.endpoint), &[]);
    let pulled = c.json(&["pull", "r", "k"]);
    let after_pull = f.counters();
    drop(f);
    eprintln!("{test}: faults during push {after_push}, during pull {after_pull}");
    let field = format!("/{counter}");
    assert!(
        num(&after_push, &field) + num(&after_pull, &field) > 0,
        "{test}: no fault was injected: {after_push} {after_pull}"
    );
    assert_eq!(pulled["keys"][0]["key"], "k", "{pulled}");
    c.assert_verify_clean(test);
    assert_same_tree(&src, &c.get("k", "out"), test);
}

/// Defines `fn $scenario(kind, test)` running [`transient_fault`] with `$cfg`, and its tests.
macro_rules! fault {
    ($scenario:ident, $cfg:expr, $counter:literal: $($name:ident => $kind:ident),+ $(,)?) => {
        fn $scenario(kind: Kind, test: &str) {
            transient_fault(kind, test, $cfg, $counter);
        }
        on!($scenario: $($name => $kind),+);
    };
}

// 503 on the first requests, then on some.
fault!(fault_503_first, json!({"seed": 1, "error_first": 4}), "errors":
    fault_503_first_s3 => S3, fault_503_first_azure => Azure);
fault!(fault_503_some, json!({"seed": 2, "error_first": 1, "error_prob": 0.2}), "errors":
    fault_503_some_s3 => S3, fault_503_some_azure => Azure);
// Connection resets before the request reaches the server.
fault!(
    fault_reset_before,
    json!({"seed": 3, "reset_first": 1, "reset_prob": 0.2, "reset_when": "before"}),
    "resets":
    fault_reset_before_s3 => S3, fault_reset_before_azure => Azure
);
// Resets after the server acted (the response is lost).
fault!(
    fault_reset_after,
    json!({"seed": 4, "reset_first": 1, "reset_prob": 0.2, "reset_when": "after"}),
    "resets":
    fault_reset_after_s3 => S3, fault_reset_after_azure => Azure
);
// Resets half way through a response body, on any request (the first one is push's GET of the
// layout file, answered 404 on a new remote).
fault!(
    fault_reset_mid_body,
    json!({"seed": 5, "reset_first": 1, "reset_prob": 0.2, "reset_when": "mid_body"}),
    "resets":
    fault_reset_mid_body_s3 => S3, fault_reset_mid_body_azure => Azure
);
// Resets half way through a response body, on pack and blob requests only.
fault!(
    fault_reset_mid_object,
    json!({"seed": 6, "reset_first": 1, "reset_prob": 0.3, "reset_when": "mid_body",
           "path_regex": "(packs|blobs)/"}),
    "resets":
    fault_reset_mid_object_s3 => S3, fault_reset_mid_object_azure => Azure
);
// Stalls (shorter than the request timeout) before forwarding, and half way through a response.
fault!(
    fault_stall,
    json!({"seed": 7, "stall_first": 1, "stall_prob": 0.5, "stall_seconds": 1.0}),
    "stalls":
    fault_stall_s3 => S3, fault_stall_azure => Azure
);
fault!(
    fault_stall_mid_body,
    json!({"seed": 8, "stall_first": 1, "stall_prob": 0.5, "stall_seconds": 1.0,
           "stall_when": "mid_body"}),
    "stalls":
    fault_stall_mid_body_s3 => S3, fault_stall_mid_body_azure => Azure
);

on!(permanent_faults:
    permanent_faults_s3 => S3,
    permanent_faults_azure => Azure,
);

/// Faults on every request and `--retries 2`: push fails with one clear error in bounded time,
/// writes no key record and leaves the local store as it was; pull fails and binds nothing.
fn permanent_faults(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "perm", 200, 10);
    incompressible_files(&src, 51, 3, 2 * 1024 * 1024);
    write(&src, "large.bin", &noise(9 * 1024 * 1024, 52));
    a.ok(&["put", "k", s(&src)]);
    let f = Faults::new(&b);
    a.add_via("r", &b, &b.options_via(&f.endpoint), &[]);
    let cases = [
        ("503 on everything", json!({"error_prob": 1.0}), "503"),
        (
            "503 on objects and records",
            json!({"error_prob": 1.0, "path_regex": path_regex(&b, "(packs|blobs|keys)/")}),
            "503",
        ),
        (
            "resets on objects and records",
            json!({"reset_prob": 1.0, "path_regex": path_regex(&b, "(packs|blobs|keys)/")}),
            "",
        ),
    ];
    for (what, mut cfg, needle) in cases {
        if cfg.get("path_regex").is_none() {
            cfg["path_regex"] = json!(path_regex(&b, ""));
        }
        f.set(cfg);
        let before = a.state();
        let t = Instant::now();
        let line = a.fails(&["--retries", "2", "push", "r", "k"], &[&b.prefix, needle]);
        let took = t.elapsed();
        eprintln!("{test}: {what}: push failed in {took:?}: {line}");
        assert!(
            took < Duration::from_secs(30),
            "{test}: {what}: push took {took:?}"
        );
        assert_eq!(
            a.state(),
            before,
            "{test}: {what}: the failed push changed the store"
        );
        assert_eq!(
            b.read("keys/k.key"),
            None,
            "{test}: {what}: a key record was written"
        );
    }

    // Pull: the key is on the remote, every request to it fails.
    f.clear();
    a.json(&["push", "r", "k"]);
    for (what, cfg) in [
        ("503 on everything", json!({"error_prob": 1.0})),
        (
            "resets on packs and blobs",
            json!({"reset_prob": 1.0, "path_regex": path_regex(&b, "(packs|blobs)/")}),
        ),
    ] {
        let mut cfg = cfg;
        if cfg.get("path_regex").is_none() {
            cfg["path_regex"] = json!(path_regex(&b, ""));
        }
        f.set(cfg);
        let c = Site::new();
        c.add_via("r", &b, &b.options_via(&f.endpoint), &[]);
        let before = c.state();
        let t = Instant::now();
        let line = c.fails(&["--retries", "2", "pull", "r", "k"], &[&b.prefix]);
        let took = t.elapsed();
        eprintln!("{test}: pull, {what}: failed in {took:?}: {line}");
        assert!(
            took < Duration::from_secs(30),
            "{test}: pull, {what}: took {took:?}"
        );
        assert_eq!(
            c.state(),
            before,
            "{test}: pull, {what}: the failed pull changed the store"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. get --remote, and remote failures as cache misses.

on!(get_from_remote:
    get_from_remote_file => File,
    get_from_remote_s3 => S3,
    get_from_remote_azure => Azure,
    get_from_remote_gcs => Gcs,
);

/// `get --remote` on a cold store pulls and restores; a key on no remote is one error line.
fn get_from_remote(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, c) = (Site::new(), Site::new());
    let src = a.env.path("src");
    small_files(&src, "cold", 120, 6);
    special_entries(&src);
    write(&src, "large.bin", &noise(9 * 1024 * 1024 + 1, 61));
    a.ok(&["put", "cold", s(&src)]);
    if kind != Kind::Gcs {
        a.add("r", &b, &[]);
    }
    b.publish(&a, "r", &["cold"]);

    c.add("r", &b, &[]);
    let out = c.env.path("out");
    c.ok(&["get", "cold", s(&out), "--remote", "r"]);
    assert_same_tree(&src, &out, test);
    assert_eq!(c.keys(), ["cold"]);
    c.assert_verify_clean(test);

    let nowhere = c.env.path("nowhere");
    c.fails(
        &["get", "absent", s(&nowhere), "--remote", "r"],
        &["unknown key absent"],
    );
    assert!(
        !nowhere.exists(),
        "{test}: a failed get created its destination"
    );
}

on!(unreachable_remote:
    unreachable_remote_file => File,
    unreachable_remote_s3 => S3,
    unreachable_remote_azure => Azure,
);

/// A remote that cannot be reached: with `--no-fail-on-cache-error`, `put --push` succeeds with a
/// warning and `get` reports a miss (with a warning), not a remote error; without it, both are
/// remote errors.
fn unreachable_remote(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    // A file:// remote under a regular file can never be created.
    let blocker = a.env.path("blocker");
    std::fs::write(&blocker, b"a file").unwrap();
    let dead_url = match kind {
        Kind::File => format!("file://{}/remote", blocker.display()),
        _ => b.url(),
    };
    let dead_endpoint = match kind {
        Kind::S3 => format!("http://127.0.0.1:{}", closed_port()),
        Kind::Azure => format!("http://127.0.0.1:{}/devstoreaccount1", closed_port()),
        _ => String::new(),
    };
    let dead: &str = if kind == Kind::File {
        &dead_url
    } else {
        a.add_via("dead", &b, &b.options_via(&dead_endpoint), &[]);
        "dead"
    };
    let src = a.env.path("src");
    small_files(&src, "dead", 20, 2);

    let out = a.run(&[
        "--no-fail-on-cache-error",
        "put",
        "k",
        s(&src),
        "--push",
        dead,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{test}: put --push: {stderr}");
    assert!(
        text(&out.stdout).trim().starts_with("blake3:"),
        "{test}: put prints the id"
    );
    assert!(
        stderr.contains("WARN") && stderr.contains("remote failed"),
        "{test}: put --push to an unreachable remote gave no warning: {stderr:?}"
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("cairn: error:")),
        "{test}: {stderr:?}"
    );
    assert_eq!(a.keys(), ["k"]);
    a.fails(
        &["push", dead, "k"],
        &[&dead_url_or_prefix(kind, &dead_url, &b)],
    );

    let c = Site::new();
    if kind != Kind::File {
        c.add_via("dead", &b, &b.options_via(&dead_endpoint), &[]);
    }
    let dest = c.env.path("out");
    let out = c.run(&[
        "--no-fail-on-cache-error",
        "get",
        "k",
        s(&dest),
        "--remote",
        dead,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{test}: get: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 2 && lines[..lines.len() - 1].iter().all(|l| l.contains("WARN")),
        "{test}: get with --no-fail-on-cache-error: want warnings then one error: {stderr:?}"
    );
    assert!(
        lines[lines.len() - 1].starts_with("cairn: error: unknown key k "),
        "{test}: get with --no-fail-on-cache-error: want a miss, got: {stderr:?}"
    );
    assert!(!dest.exists());
    // Without the flag, the remote's failure is the error.
    c.fails(
        &["get", "k", s(&dest), "--remote", dead],
        &[&dead_url_or_prefix(kind, &dead_url, &b)],
    );
    assert!(c.keys().is_empty());
}

fn dead_url_or_prefix(kind: Kind, dead_url: &str, b: &Backend) -> String {
    if kind == Kind::File {
        dead_url.to_string()
    } else {
        b.url()
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Read-only remotes.

on!(read_only_remote:
    read_only_remote_file => File,
    read_only_remote_s3 => S3,
    read_only_remote_azure => Azure,
);

/// A remote added `--read-only` refuses push and is left untouched, but pulls.
fn read_only_remote(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "ro", 30, 3);
    a.ok(&["put", "k", s(&src)]);
    a.add("ro", &b, &["--read-only"]);
    a.fails(&["push", "ro", "k"], &["read-only", &b.url()]);
    a.fails(&["push", "ro", "--all"], &["read-only"]);
    let out = a.run(&["put", "k2", s(&src), "--push", "ro"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{test}: put --push to a read-only remote"
    );
    assert!(
        b.list("").is_empty(),
        "{test}: wrote to a read-only remote: {:?}",
        b.list("")
    );

    a.add("rw", &b, &[]);
    a.json(&["push", "rw", "k"]);
    let c = Site::new();
    c.add("ro", &b, &["--read-only"]);
    c.json(&["pull", "ro", "k"]);
    assert_same_tree(&src, &c.get("k", "out"), test);
}

/// Serves `dir` over HTTP on a free loopback port with `python3 SCRIPT… PORT-ARGS`; returns the
/// server (killed on drop) and its port, read from its first line of output.
fn serve(args: &[&str]) -> (ChildGuard, u16) {
    let mut child = Command::new("python3")
        .arg("-u")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (ChildGuard(child), port)
}

/// `http.server` with single-range `Range: bytes=A-B` support (206 + Content-Range).
const RANGE_SERVER: &str = r#"
import http.server, os, re, sys
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def send_head(self):
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("Range") or "").strip())
        path = self.translate_path(self.path)
        if not m or not os.path.isfile(path):
            self.remaining = None
            return super().send_head()
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size:
            f.close()
            self.send_error(416)
            return None
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Last-Modified", self.date_time_string(int(os.fstat(f.fileno()).st_mtime)))
        self.end_headers()
        self.remaining = end - start + 1
        return f
    def copyfile(self, src, dst):
        if self.remaining is None:
            return super().copyfile(src, dst)
        while self.remaining > 0:
            b = src.read(min(self.remaining, 65536))
            if not b:
                break
            dst.write(b)
            self.remaining -= len(b)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: H(*a, directory=sys.argv[1]))
print(f"Serving HTTP on 127.0.0.1 port {srv.server_address[1]}", flush=True)
srv.serve_forever()
"#;

/// An `http://` remote is read-only; pulling from it needs a server that answers range requests.
/// Python's `http.server` does not (it answers 200 with the whole file): the pull fails, naming
/// the pack and the missing range support, and binds nothing. A server that does serve ranges
/// works.
#[test]
fn http_remote_is_read_only_and_needs_range_requests() {
    let test = "http_remote";
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "http", 80, 4);
    special_entries(&src);
    write(&src, "large.bin", &noise(9 * 1024 * 1024 + 5, 71));
    a.ok(&["put", "k", s(&src)]);
    let served = a.env.path("www");
    let cache = served.join("pub/cache");
    let pushed = a.json(&["push", &format!("file://{}", cache.display()), "k"]);
    assert_eq!(pushed["keys"], json!(["k"]));
    let files_before = crate::common::files_under(&served);

    // python3 -m http.server: no Range support.
    {
        let (_srv, port) = serve(&[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "0",
            "--directory",
            s(&served),
        ]);
        let url = format!("http://127.0.0.1:{port}/pub/cache/");
        let c = Site::new();
        let before = c.state();
        let line = c.fails(&["pull", &url, "k"], &["packs/", ".pack", "Range"]);
        eprintln!("{test}: python -m http.server: {line}");
        assert_eq!(c.state(), before, "{test}: failed pull changed the store");
        a.fails(&["push", &url, "k"], &["read-only"]);
    }

    // A server with Range support.
    let (_srv, port) = serve(&["-c", RANGE_SERVER, s(&served)]);
    let url = format!("http://127.0.0.1:{port}/pub/cache/");
    let c = Site::new();
    let pulled = c.json(&["pull", &url, "k"]);
    assert_eq!(pulled["keys"][0]["key"], "k", "{pulled}");
    assert_same_tree(&src, &c.get("k", "out"), test);
    c.assert_verify_clean(test);
    a.fails(&["push", &url, "k"], &["read-only"]);
    c.ok(&["remote", "add", "web", &url]);
    c.fails(&["push", "web", "k"], &["read-only"]);
    assert_eq!(
        crate::common::files_under(&served),
        files_before,
        "{test}: the served folder changed"
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials.

/// An S3 remote with no credentials anywhere says so, naming where cairn looked, instead of
/// reporting the failed instance-metadata request it fell back to; credentials in the shared
/// credentials file (a profile) are found and used.
#[test]
fn an_s3_remote_without_credentials_says_where_it_looked() {
    let Some(b) = Backend::new(Kind::S3, "no_credentials") else {
        return;
    };
    let site = Site::new();
    site.add("s3", &b, &[]);
    let src = site.env.path("src");
    small_files(&src, "creds", 5, 1);
    site.ok(&["put", "k", s(&src)]);
    let home = site.env.path("home");
    std::fs::create_dir_all(&home).unwrap();
    // No credentials in the environment, no ~/.aws, and an instance metadata service that
    // refuses connections (the real one is unreachable here, and slow to time out).
    let without = |extra: &[(&str, String)]| {
        let mut c = site.cmd(&["--retries", "0", "push", "s3", "k"]);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env("HOME", &home)
            .env(
                "AWS_METADATA_ENDPOINT",
                format!("http://127.0.0.1:{}", closed_port()),
            );
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().expect("run cairn")
    };
    let out = without(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_one_error_line(
        &stderr,
        &[
            "no credentials found",
            "AWS_ACCESS_KEY_ID",
            "~/.aws/credentials",
            "instance metadata",
            &b.url(),
        ],
    );
    // A profile in the shared credentials file is used.
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n\
         [ci]\naws_access_key_id = test\naws_secret_access_key = test\n",
    )
    .unwrap();
    let out = without(&[("AWS_PROFILE", "ci".into())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A profile the file lacks is an error that names it.
    let out = without(&[("AWS_PROFILE", "missing".into())]);
    assert_one_error_line(&text(&out.stderr), &["AWS_PROFILE=missing", "credentials"]);
}
