//! Cache lifecycle end to end (issue 13): remote gc's two phases, its lease and clock check,
//! pushes racing it, kill -9 in the middle of it, `rm --remote`, usage tracking and retention
//! policies. Remote tests run against `file://` and the local moto and Azurite servers (see
//! `remote.rs` for how they are started); races are made deterministic with the fault proxy's
//! stalls and SIGSTOP, never with sleeps that a slow machine could outrun. Ages are made with
//! `faketime` (one cairn process with its clock set ahead) or by waiting whole seconds, since
//! object stores stamp objects to the second.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::remote::*;
use crate::common::{assert_same_tree, s};

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

/// The units (`pack blake3:…`, `blob blake3:…`) the remote record of `key` names.
pub(crate) fn record_units(b: &Backend, key: &str) -> BTreeSet<String> {
    let rec: Value = serde_json::from_slice(
        &b.read(&format!("keys/{key}.key"))
            .unwrap_or_else(|| panic!("no record of {key}")),
    )
    .unwrap();
    let mut out = BTreeSet::new();
    for (field, kind) in [("packs", "pack"), ("blobs", "blob")] {
        for id in rec[field].as_array().unwrap() {
            out.insert(format!("{kind} {}", id.as_str().unwrap()));
        }
    }
    out
}

/// The objects of a unit, relative to the remote's root.
pub(crate) fn unit_objects(unit: &str) -> Vec<String> {
    let (kind, id) = unit.split_once(' ').unwrap();
    let hex = id.strip_prefix("blake3:").unwrap();
    match kind {
        "pack" => vec![
            format!("packs/{}/{hex}.pack", &hex[..2]),
            format!("packs/{}/{hex}.idx", &hex[..2]),
        ],
        _ => vec![format!("blobs/{}/{hex}.zst", &hex[..2])],
    }
}

pub(crate) fn set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The keys a gc report (`--json`, local or remote) says were removed.
fn removed(v: &Value) -> BTreeSet<String> {
    v["removed"]
        .as_array()
        .unwrap_or_else(|| panic!("no removed list: {v}"))
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn rgc(site: &Site, remote: &str, extra: &[&str]) -> Value {
    let mut args = vec!["remote", "gc", remote];
    args.extend_from_slice(extra);
    site.json(&args)
}

/// Object stores stamp objects to the second: waiting two makes "older than 1 s" certain.
pub(crate) fn next_seconds() {
    std::thread::sleep(Duration::from_millis(2100));
}

/// `cmd` run with its wall clock moved by `offset` (faketime's `-f` syntax, e.g. `+1h`);
/// monotonic clocks are left alone.
fn faked(cmd: Command, offset: &str) -> Command {
    let mut c = Command::new("faketime");
    c.args(["-f", offset])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    c
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig}");
}

pub(crate) fn wait_for_stall(f: &Faults, child: &mut Child, what: &str) {
    let start = Instant::now();
    while f.counters()["stalls"].as_u64().unwrap_or(0) < 1 {
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            for r in [child.stdout.take(), None].into_iter().flatten() {
                let mut r = r;
                std::io::Read::read_to_string(&mut r, &mut out).unwrap();
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            panic!(
                "{what} ended ({st:?}) before its stalled request: {out} {err}; proxy: {}",
                f.counters()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{what}: no stalled request after 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn finished(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status,
        text(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Two phases.

on!(two_phases:
    remote_gc_marks_then_sweeps_file => File,
    remote_gc_marks_then_sweeps_s3 => S3,
    remote_gc_marks_then_sweeps_azure => Azure,
);

/// A removed key's packs and standalone blob are tombstoned by one run (only once older than
/// the grace period; a dry run writes nothing) and deleted by a later one; the kept key's
/// objects are untouched and it restores in another store.
fn two_phases(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let keep = a.env.path("keep");
    small_files(&keep, "keep", 40, 3);
    let gone = a.env.path("gone");
    small_files(&gone, "gone", 40, 3);
    incompressible_files(&gone, 7, 1, 9 * 1024 * 1024); // a standalone blob
    a.ok(&["put", "keep/1", s(&keep)]);
    a.ok(&["put", "gone/1", s(&gone)]);
    a.add("r", &b, &[]);
    a.json(&["push", "r", "keep/1"]);
    a.json(&["push", "r", "gone/1"]);
    let dead = record_units(&b, "gone/1");
    let live = record_units(&b, "keep/1");
    assert!(dead.iter().any(|u| u.starts_with("blob ")), "{dead:?}");
    assert!(dead.is_disjoint(&live));

    // Nothing unreachable yet.
    next_seconds();
    let r = rgc(&a, "r", &["--grace", "1s"]);
    assert_eq!(set(&r["tombstoned"]), BTreeSet::new(), "{r}");

    a.ok(&["rm", "--remote", "r", "gone/1"]);
    assert!(b.read("keys/gone/1.key").is_none());
    next_seconds();

    let r = rgc(&a, "r", &["--dry-run", "--grace", "1s"]);
    assert_eq!(set(&r["tombstoned"]), dead, "dry run: {r}");
    assert!(
        b.list("gc/tombstones").is_empty(),
        "a dry run wrote tombstones"
    );

    let r = rgc(&a, "r", &["--grace", "1h"]);
    assert_eq!(set(&r["tombstoned"]), BTreeSet::new(), "young units: {r}");
    assert!(r["waiting"].as_u64().unwrap() >= dead.len() as u64, "{r}");

    let r = rgc(&a, "r", &["--grace", "1s"]);
    assert_eq!(set(&r["tombstoned"]), dead, "mark: {r}");
    assert_eq!(set(&r["deleted"]), BTreeSet::new(), "mark: {r}");
    assert_eq!(b.list("gc/tombstones").len(), dead.len());
    for u in &dead {
        for o in unit_objects(u) {
            assert!(b.read(&o).is_some(), "{o} deleted by the mark");
        }
    }

    next_seconds();
    let r = rgc(&a, "r", &["--grace", "1s"]);
    assert_eq!(set(&r["deleted"]), dead, "sweep: {r}");
    assert!(r["bytes_freed"].as_u64().unwrap() > 9 * 1024 * 1024, "{r}");
    assert!(b.list("gc/tombstones").is_empty(), "tombstones left");
    assert!(b.read("gc/lease").is_none(), "lease left");
    for u in &dead {
        for o in unit_objects(u) {
            assert!(b.read(&o).is_none(), "{o} not deleted");
        }
    }
    for u in &live {
        for o in unit_objects(u) {
            assert!(b.read(&o).is_some(), "live {o} deleted");
        }
    }
    a.ok(&["verify", "--remote", "r", "keep/1"]);
    let c = Site::new();
    c.add("r", &b, &[]);
    let out = c.get("keep/1", "out");
    assert_same_tree(&keep, &out, test);

    let r = rgc(&a, "r", &["--grace", "1s"]);
    assert!(
        set(&r["deleted"]).is_empty() && set(&r["tombstoned"]).is_empty(),
        "a third run found work: {r}"
    );
}

// ---------------------------------------------------------------------------------------------
// Recovery, and pushes treating tombstoned packs as absent.

on!(recovery:
    tombstone_named_by_a_record_is_recovered_file => File,
    tombstone_named_by_a_record_is_recovered_s3 => S3,
);

/// Tombstones of units a record names (as a mark racing a push can leave) are dropped by the
/// sweep and the units kept; a push that finds a tombstone uploads that unit's objects again,
/// into packs of new names.
fn recovery(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "rec", 30, 2);
    a.ok(&["put", "k/1", s(&src)]);
    a.add("r", &b, &[]);
    a.json(&["push", "r", "k/1"]);
    let units = record_units(&b, "k/1");
    for u in &units {
        let (kind, id) = u.split_once(' ').unwrap();
        let hex = id.strip_prefix("blake3:").unwrap();
        b.write(&format!("gc/tombstones/{kind}s/{hex}"), b"{}");
    }

    // A push of the same content does not rely on the tombstoned packs.
    a.ok(&["put", "k/2", s(&src)]);
    let p = a.json(&["push", "r", "k/2"]);
    let again = record_units(&b, "k/2");
    assert!(
        again.is_disjoint(&units),
        "k/2 names tombstoned units: {again:?} {units:?}; {p}"
    );

    next_seconds();
    let r = rgc(&a, "r", &["--grace", "1s"]);
    assert_eq!(set(&r["recovered"]), units, "{r}");
    assert!(set(&r["deleted"]).is_empty(), "{r}");
    assert!(b.list("gc/tombstones").is_empty());
    a.ok(&["verify", "--remote", "r", "k/1", "k/2"]);
}

// ---------------------------------------------------------------------------------------------
// A push paused across a whole mark and sweep.

/// The BuildKit/kopia race: a push that relies on old packs (its ledger knows them) and has
/// uploaded a new pack is paused (SIGSTOP, while the proxy stalls its first pack index) before
/// it writes its record; meanwhile the old key is removed, a gc marks the old packs (and the
/// push's pack, older than the 1 s grace), and a second gc deletes them. Resumed, the push
/// finds what it relied on gone, uploads it again, and its key restores elsewhere.
#[test]
fn push_paused_across_mark_and_sweep_keeps_its_key_s3() {
    let test = "push_paused_across_mark_and_sweep_keeps_its_key_s3";
    let Some(b) = Backend::new(Kind::S3, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "old", 60, 3);
    a.ok(&["put", "old/1", s(&src)]);
    a.add("r", &b, &[]);
    a.json(&["push", "r", "old/1"]);
    let old = record_units(&b, "old/1");
    a.ok(&["rm", "--remote", "r", "old/1"]);
    small_files(&src.join("extra"), "new", 10, 1);
    a.ok(&["put", "new/1", s(&src)]);

    let faults = Faults::new(&b);
    faults.set(json!({
        "methods": ["PUT"],
        "path_regex": path_regex(&b, r"packs/.*\.idx$"),
        "stall_first": 1,
        "stall_seconds": 15.0,
    }));
    a.add_via("slow", &b, &b.options_via(&faults.endpoint), &[]);
    next_seconds();
    let mut push = a.spawn(&["--json", "push", "slow", "new/1"]);
    wait_for_stall(&faults, &mut push, "push");
    signal(&push, "-STOP");
    assert!(
        push.try_wait().unwrap().is_none(),
        "the push ended before it was paused"
    );

    let g = Site::new();
    g.add("r", &b, &[]);
    let r = rgc(&g, "r", &["--grace", "1s"]);
    let marked = set(&r["tombstoned"]);
    assert!(old.is_subset(&marked), "mark: {r}");
    next_seconds();
    let r = rgc(&g, "r", &["--grace", "1s"]);
    assert!(old.is_subset(&set(&r["deleted"])), "sweep: {r}");
    assert!(
        b.read("keys/new/1.key").is_none(),
        "the paused push bound its key"
    );

    signal(&push, "-CONT");
    let out = finished(push, "the resumed push");
    drop(faults);
    let named = record_units(&b, "new/1");
    assert!(
        named.is_disjoint(&old),
        "the record names deleted units: {}",
        text(&out.stdout)
    );
    for u in &named {
        for o in unit_objects(u) {
            assert!(b.read(&o).is_some(), "{o} named but absent");
        }
    }
    let c = Site::new();
    c.add("r", &b, &[]);
    c.ok(&["verify", "--remote", "r", "new/1"]);
    let got = c.get("new/1", "out");
    assert_same_tree(&src, &got, test);
}

/// Eight machines push, round after round, keys whose files are those of a key they pushed
/// before and then removed (so their ledgers place them in packs no record names: the packs a
/// gc has tombstoned when they start, and deletes while they run), and remove every other key
/// again, while remote gcs (grace 3 s) mark and sweep back to back. Every push succeeds, and
/// pushes do upload again what the ledger placed in tombstoned packs; at the end, after two
/// more gcs a grace apart, every key still bound passes `verify --remote` and restores exactly
/// on a fresh machine.
#[test]
fn gc_racing_8_pushers_that_reuse_old_packs_s3() {
    let test = "gc_racing_8_pushers_that_reuse_old_packs_s3";
    let Some(b) = Backend::new(Kind::S3, test) else {
        return;
    };
    const PUSHERS: usize = 8;
    const ROUNDS: usize = 5;
    let sites: Vec<Site> = (0..PUSHERS)
        .map(|p| {
            let site = Site::new();
            site.add("r", &b, &[]);
            let base = site.env.path("base");
            small_files(&base, &format!("pusher {p}"), 30, 3);
            site.ok(&["put", &format!("old/{p}"), s(&base)]);
            site.json(&["push", "r", &format!("old/{p}")]);
            site.ok(&["rm", "--remote", "r", &format!("old/{p}")]);
            site
        })
        .collect();
    let g = Site::new();
    g.add("r", &b, &[]);
    next_seconds();
    next_seconds();
    // The old packs are tombstoned before the pushers start.
    let first = rgc(&g, "r", &["--grace", "3s"]);
    assert!(!set(&first["tombstoned"]).is_empty(), "{first}");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (bound, again, gcs) = std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            let mut runs = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                runs.push(rgc(&g, "r", &["--grace", "3s"]));
                std::thread::sleep(Duration::from_millis(300));
            }
            runs
        });
        let pushers: Vec<_> = sites
            .iter()
            .enumerate()
            .map(|(p, site)| {
                scope.spawn(move || {
                    let (mut kept, mut again) = (Vec::new(), 0);
                    for round in 0..ROUNDS {
                        let src = site.env.path(&format!("src-{round}"));
                        // The old key's files again (`small_files` is deterministic).
                        small_files(&src, &format!("pusher {p}"), 30, 3);
                        std::fs::write(src.join("own"), format!("pusher {p} round {round}"))
                            .unwrap();
                        let key = format!("new/{p}/{round}");
                        site.ok(&["put", &key, s(&src)]);
                        let out = site.run(&["-v", "push", "r", &key]);
                        let err = text(&out.stderr);
                        assert!(out.status.success(), "push {key}: {err}");
                        again += usize::from(err.contains("uploading them again"))
                            + usize::from(err.contains("uploading their objects again"));
                        if round % 2 == 1 {
                            site.ok(&["rm", "--remote", "r", &key]);
                        } else {
                            kept.push((key, src));
                        }
                        std::thread::sleep(Duration::from_millis(400 * (p as u64 % 4)));
                    }
                    (kept, again)
                })
            })
            .collect();
        let mut bound: Vec<(String, std::path::PathBuf)> = Vec::new();
        let mut again = 0;
        for h in pushers {
            let (kept, n) = h.join().unwrap();
            bound.extend(kept);
            again += n;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (bound, again, gc.join().unwrap())
    });
    let swept: usize = gcs.iter().map(|r| set(&r["deleted"]).len()).sum();
    let marked: usize = gcs.iter().map(|r| set(&r["tombstoned"]).len()).sum();
    assert!(
        again >= PUSHERS,
        "only {again} pushes uploaded again what tombstoned packs held ({} gcs, {marked} \
         units tombstoned, {swept} deleted)",
        gcs.len()
    );
    // Two more gcs a grace apart finish what was marked meanwhile.
    std::thread::sleep(Duration::from_millis(3100));
    rgc(&g, "r", &["--grace", "3s"]);
    std::thread::sleep(Duration::from_millis(3100));
    let last = rgc(&g, "r", &["--grace", "3s"]);
    let c = Site::new();
    c.add("r", &b, &[]);
    let keys: Vec<&str> = bound.iter().map(|(k, _)| k.as_str()).collect();
    let mut args = vec!["verify", "--remote", "r"];
    args.extend(&keys);
    let out = c.run(&args);
    assert!(
        out.status.success(),
        "verify --remote after {} gcs ({marked} units tombstoned, {swept} deleted; last: {last}): {}",
        gcs.len(),
        text(&out.stderr)
    );
    for (k, src) in &bound {
        let got = c.get(k, &format!("out-{}", k.replace('/', "_")));
        assert_same_tree(src, &got, k);
    }
}

// ---------------------------------------------------------------------------------------------
// Lease, clock, conditional puts.

on!(lease:
    one_gc_at_a_time_file => File,
    one_gc_at_a_time_s3 => S3,
);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// A live lease of another machine stops gc (naming its owner) and leaves the remote as it
/// was; a lease of a dead gc of this machine is taken over at once; on `file://`, a lease not
/// refreshed for 10 minutes too.
fn lease(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "lease", 10, 1);
    a.ok(&["put", "k", s(&src)]);
    a.add("r", &b, &[]);
    a.json(&["push", "r", "k"]);
    a.ok(&["rm", "--remote", "r", "k"]);
    next_seconds();
    let other = json!({"owner": "pid 7 on elsewhere", "host": "elsewhere", "pid": 7, "started": 1});
    b.write("gc/lease", other.to_string().as_bytes());
    a.fails(
        &["remote", "gc", "r", "--grace", "1s"],
        &["another gc is running", "pid 7 on elsewhere"],
    );
    assert!(b.list("gc/tombstones").is_empty(), "a refused gc marked");
    assert_eq!(
        b.read("gc/lease").unwrap(),
        other.to_string().into_bytes(),
        "a refused gc changed the lease"
    );

    // A gc of this machine that died.
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let mine = json!({"owner": format!("pid {pid} on {}", hostname()), "host": hostname(),
                      "pid": pid, "started": 1});
    b.write("gc/lease", mine.to_string().as_bytes());
    let r = rgc(&a, "r", &["--grace", "1s"]);
    assert!(!set(&r["tombstoned"]).is_empty(), "{r}");
    assert!(b.read("gc/lease").is_none(), "lease not released");

    if kind == Kind::File {
        b.write("gc/lease", other.to_string().as_bytes());
        let st = Command::new("touch")
            .args(["-d", "-11 minutes"])
            .arg(b.dir().join("gc/lease"))
            .status()
            .unwrap();
        assert!(st.success());
        a.ok(&["remote", "gc", "r", "--grace", "1s"]);
        assert!(b.read("gc/lease").is_none(), "stale lease not taken over");
    }
}

on!(clock_skew:
    clock_skew_is_refused_file => File,
    clock_skew_is_refused_s3 => S3,
);

/// A gc whose clock is an hour off the object store's refuses, with one line, and leaves
/// nothing behind (no lease, no tombstone).
fn clock_skew(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "skew", 10, 1);
    a.ok(&["put", "k", s(&src)]);
    a.add("r", &b, &[]);
    a.json(&["push", "r", "k"]);
    a.ok(&["rm", "--remote", "r", "k"]);
    next_seconds();
    let before = b.list("");
    for offset in ["+1h", "-1h"] {
        let out = faked(a.cmd(&["remote", "gc", "r", "--grace", "1s"]), offset)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{offset}: {}",
            text(&out.stderr)
        );
        crate::common::assert_one_error_line(
            &text(&out.stderr),
            &["clock differs from the object store's"],
        );
        let after: Vec<String> = b
            .list("")
            .into_iter()
            .filter(|n| n != "gc/clock" && n != ".cairn-lock")
            .collect();
        let before: Vec<String> = before
            .iter()
            .filter(|n| *n != ".cairn-lock")
            .cloned()
            .collect();
        assert_eq!(after, before, "{offset}: the refused gc changed the remote");
    }
    // Within 5 minutes is accepted.
    let out = faked(a.cmd(&["remote", "gc", "r", "--grace", "1s"]), "+2m")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// An S3 store without conditional puts: gc refuses unless `--exclusive`; `http://` remotes
/// are read-only.
#[test]
fn gc_without_conditional_puts_needs_exclusive_s3() {
    let test = "gc_without_conditional_puts_needs_exclusive_s3";
    let Some(b) = Backend::new(Kind::S3, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "excl", 10, 1);
    a.ok(&["put", "k", s(&src)]);
    let mut opts = b.options();
    opts.push("aws_conditional_put=disabled".into());
    a.add_via("r", &b, &opts, &[]);
    a.json(&["push", "r", "k"]);
    a.ok(&["rm", "--remote", "r", "k"]);
    next_seconds();
    a.fails(
        &["remote", "gc", "r", "--grace", "1s"],
        &["does not support conditional puts", "--exclusive"],
    );
    assert!(b.read("gc/lease").is_none());
    assert!(b.list("gc/tombstones").is_empty());
    let r = rgc(&a, "r", &["--grace", "1s", "--exclusive"]);
    assert!(!set(&r["tombstoned"]).is_empty(), "{r}");

    let url = format!("http://127.0.0.1:{}/cache", closed_port());
    a.fails(&["remote", "gc", &url], &["read-only"]);
}

// ---------------------------------------------------------------------------------------------
// kill -9.

/// A remote gc killed at each of its steps in turn, each time while the proxy stalls that
/// step's first request (which the proxy still forwards when the stall ends, as a server may
/// act on a dead client's last request): taking the lease, writing the grace marker, reading
/// a record, deleting a record (policy), writing a tombstone, deleting a pack's index, its
/// pack, a tombstone, and releasing the lease. After each kill `verify --remote` of the live
/// keys is clean; the next gc takes over the dead gc's lease and goes on; two more runs finish
/// the job: every dead unit and tombstone gone, the live keys restorable.
#[test]
fn kill_9_at_each_step_of_remote_gc_s3() {
    let test = "kill_9_at_each_step_of_remote_gc_s3";
    let Some(b) = Backend::new(Kind::S3, test) else {
        return;
    };
    let a = Site::new();
    a.add("r", &b, &[]);
    let mut dead = BTreeSet::new();
    let mut live_keys = Vec::new();
    for (i, key) in ["x/0", "x/1", "x/2", "x/3", "x/4", "x/5", "gone/0", "gone/1"]
        .into_iter()
        .enumerate()
    {
        let src = a.env.path(&format!("src{i}"));
        small_files(&src, &format!("kill{i}"), 12, 1);
        a.ok(&["put", key, s(&src)]);
        a.json(&["push", "r", key]);
        if i < 4 || key.starts_with("gone/") {
            dead.extend(record_units(&b, key));
        }
        if i < 4 {
            a.ok(&["rm", "--remote", "r", key]);
        } else if !key.starts_with("gone/") {
            live_keys.push(key.to_string());
        }
    }
    let faults = Faults::new(&b);
    a.add_via("slow", &b, &b.options_via(&faults.endpoint), &[]);
    // The policy removes gone/0 and gone/1.
    let mut config = std::fs::read_to_string(a.env.path("config.toml")).unwrap();
    config.push_str(
        "\n[[retention]]\nmatch = \"gone/\"\nmax-age-unused = \"1s\"\nkeep-newest = false\n",
    );
    std::fs::write(a.env.path("config.toml"), config).unwrap();
    let check = |what: &str| {
        let mut args = vec!["verify", "--remote", "r"];
        args.extend(live_keys.iter().map(String::as_str));
        let out = a.run(&args);
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    };
    next_seconds();

    let deleting =
        |what: &str| json!({"methods": ["POST"], "path_regex": r"\?delete", "body_regex": what});
    let p = &b.prefix;
    let steps: Vec<(&str, Value)> = vec![
        (
            "taking the lease",
            json!({"methods": ["PUT"], "path_regex": path_regex(&b, "gc/lease$")}),
        ),
        (
            "writing the grace marker",
            json!({"methods": ["PUT"], "path_regex": path_regex(&b, "gc/grace-")}),
        ),
        (
            "reading a record",
            json!({"methods": ["GET"], "path_regex": path_regex(&b, r"keys/.*\.key$")}),
        ),
        ("deleting a record", deleting(&format!("{p}/keys/gone/"))),
        (
            "writing a tombstone",
            json!({"methods": ["PUT"], "path_regex": path_regex(&b, "gc/tombstones/")}),
        ),
        (
            "deleting a pack index",
            deleting(&format!(r"{p}/packs/.*\.idx<")),
        ),
        (
            "deleting a pack",
            deleting(&format!(r"{p}/packs/.*\.pack<")),
        ),
        (
            "deleting a tombstone",
            deleting(&format!("{p}/gc/tombstones/")),
        ),
        ("releasing the lease", deleting(&format!("{p}/gc/lease<"))),
    ];
    for (what, mut cfg) in steps {
        if what == "deleting a pack index" {
            // The tombstones must be older than the grace for the sweep to start.
            next_seconds();
        }
        cfg["stall_prob"] = json!(1.0);
        cfg["stall_seconds"] = json!(3.0);
        faults.set(cfg);
        let mut gc = a.spawn(&["remote", "gc", "slow", "--policy", "--grace", "1s"]);
        wait_for_stall(&faults, &mut gc, what);
        gc.kill().unwrap();
        let st = gc.wait().unwrap();
        assert_eq!(
            st.signal(),
            Some(9),
            "{what}: the gc finished before the kill"
        );
        // Let the stalled request land before going on, so the state is the same every run.
        std::thread::sleep(Duration::from_millis(4000));
        faults.clear();
        check(&format!("after a kill while {what}"));
    }

    next_seconds();
    rgc(&a, "r", &["--policy", "--grace", "1s"]);
    next_seconds();
    let r = rgc(&a, "r", &["--policy", "--grace", "1s"]);
    for u in &dead {
        for o in unit_objects(u) {
            assert!(b.read(&o).is_none(), "{o} left after the reruns: {r}");
        }
    }
    let left = b.list("gc/tombstones");
    assert!(
        left.is_empty(),
        "tombstones left after the reruns: {left:?}; {r}"
    );
    assert!(b.read("gc/lease").is_none(), "lease left");
    for k in ["gone/0", "gone/1"] {
        assert!(
            b.read(&format!("keys/{k}.key")).is_none(),
            "{k}: record left"
        );
    }
    check("after the reruns");
    let c = Site::new();
    c.add("r", &b, &[]);
    for k in &live_keys {
        let got = c.get(k, &format!("out-{}", k.replace('/', "_")));
        let i = k.strip_prefix("x/").unwrap();
        assert_same_tree(&a.env.path(&format!("src{i}")), &got, k);
    }
}

// ---------------------------------------------------------------------------------------------
// Retention on a remote.

on!(remote_policy:
    remote_gc_policy_counts_pulls_as_uses_file => File,
    remote_gc_policy_counts_pulls_as_uses_s3 => S3,
);

/// `remote gc --policy` with the remote's own rules: a key pulled by another machine (its usage
/// object written by the pull) counts as used, the newest key of a prefix stays, keys no rule
/// matches stay; the removed keys' records and usage objects go at once (a dry run lists the
/// same and changes nothing), their units are tombstoned in the same run and deleted by the
/// next one a grace period later; the survivors restore elsewhere.
fn remote_policy(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    a.add("r", &b, &[]);
    let mut units = std::collections::BTreeMap::new();
    for k in ["p/00", "p/01", "p/02", "p/03", "q/00"] {
        let src = a.env.path(&format!("src-{}", k.replace('/', "_")));
        small_files(&src, k, 6, 1);
        a.ok(&["put", k, s(&src)]);
        a.json(&["push", "r", k]);
        units.insert(k, record_units(&b, k));
    }
    let mut config = std::fs::read_to_string(a.env.path("config.toml")).unwrap();
    // Global rules would remove everything unused for a second: the remote's rules win.
    config.push_str("\n[[retention]]\nmatch = \"**\"\nmax-age-unused = \"1s\"\n");
    config.push_str("\n[[remotes.r.retention]]\nmatch = \"p/\"\nmax-age-unused = \"8s\"\n");
    std::fs::write(a.env.path("config.toml"), config).unwrap();
    // Object stores stamp to the second and gc reads their clock: p/02 (pushed before these
    // 10.5 s) is then more than 8 s unused, p/01 (pulled below, seconds before the gcs) less,
    // with room for a loaded machine.
    for _ in 0..5 {
        next_seconds();
    }
    // Another machine pulls p/01: the pull records its use on the remote.
    let c = Site::new();
    c.add("r", &b, &[]);
    c.ok(&["pull", "r", "p/01"]);
    assert!(
        b.read("usage/p/01.used").is_some(),
        "the pull wrote no usage"
    );

    let want: BTreeSet<String> = ["p/00", "p/02"].map(String::from).into();
    let dry = rgc(&a, "r", &["--policy", "--dry-run", "--grace", "1s"]);
    assert_eq!(removed(&dry), want, "{dry}");
    assert!(
        b.read("keys/p/00.key").is_some(),
        "a dry run removed a record"
    );
    let r = rgc(&a, "r", &["--policy", "--grace", "1s"]);
    assert_eq!(removed(&r), want, "{r}");
    assert!(
        r["removed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["reason"] == "max-age-unused"),
        "{r}"
    );
    for k in &want {
        assert!(
            b.read(&format!("keys/{k}.key")).is_none(),
            "{k}: record left"
        );
        assert!(
            b.read(&format!("usage/{k}.used")).is_none(),
            "{k}: usage left"
        );
    }
    let dead: BTreeSet<String> = want
        .iter()
        .flat_map(|k| units[k.as_str()].clone())
        .collect();
    assert_eq!(set(&r["tombstoned"]), dead, "{r}");
    next_seconds();
    let r2 = rgc(&a, "r", &["--grace", "1s"]);
    assert_eq!(set(&r2["deleted"]), dead, "{r2}");
    for u in &dead {
        for o in unit_objects(u) {
            assert!(b.read(&o).is_none(), "{o} left after the sweep");
        }
    }
    let d = Site::new();
    d.add("r", &b, &[]);
    for k in ["p/01", "p/03", "q/00"] {
        let got = d.get(k, &format!("out-{}", k.replace('/', "_")));
        assert_same_tree(
            &a.env.path(&format!("src-{}", k.replace('/', "_"))),
            &got,
            k,
        );
    }
    d.ok(&["verify", "--remote", "r", "p/01", "p/03", "q/00"]);
}

// ---------------------------------------------------------------------------------------------
// rm --remote.

/// `rm --remote` deletes records (and usage objects); an absent key fails the whole command
/// before anything is deleted, naming the key.
#[test]
fn rm_remote_file() {
    let Some(b) = Backend::new(Kind::File, "rm_remote_file") else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "rm", 5, 1);
    a.add("r", &b, &[]);
    for k in ["a/1", "a/2", "b/1"] {
        a.ok(&["put", k, s(&src)]);
    }
    a.json(&["push", "r", "a/1", "a/2", "b/1"]);
    a.fails(&["rm", "--remote", "r", "a/1", "nope/1"], &["nope/1"]);
    assert!(b.read("keys/a/1.key").is_some(), "a failed rm deleted a/1");
    let v = a.json(&["rm", "--remote", "r", "a/1", "b/1"]);
    assert_eq!(v["keys"].as_array().unwrap().len(), 2, "{v}");
    assert!(b.read("keys/a/1.key").is_none());
    assert!(b.read("keys/b/1.key").is_none());
    assert!(b.read("keys/a/2.key").is_some());
    // The local store is untouched.
    assert_eq!(a.keys(), vec!["a/1", "a/2", "b/1"]);
}

// ---------------------------------------------------------------------------------------------
// Usage and policies (local).

/// `ls --json`/`show --json` give `created` and `last_used` as epoch seconds, text output RFC
/// 3339; a `get` moves `last_used` (at most once an hour).
#[test]
fn last_used_in_ls_and_show() {
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "used", 3, 1);
    a.ok(&["put", "k", s(&src)]);
    let ls = a.json(&["ls"]);
    let created = ls[0]["created"].as_u64().unwrap();
    assert_eq!(ls[0]["last_used"].as_u64(), Some(created), "{ls}");
    // A read an hour and a half later is recorded.
    let out = faked(a.cmd(&["get", "k", s(&a.env.path("o1"))]), "+90m")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = a.json(&["show", "k"]);
    let used = show["last_used"].as_u64().unwrap();
    assert!(used >= created + 5400, "{show}");
    // Another within the hour writes nothing.
    let out = faked(a.cmd(&["get", "k", s(&a.env.path("o2"))]), "+100m")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(a.json(&["show", "k"])["last_used"].as_u64(), Some(used));
    let text_show = a.ok(&["show", "k"]);
    assert!(
        text_show
            .lines()
            .any(|l| l.starts_with("used:") && l.ends_with('Z')),
        "{text_show}"
    );
    let text_ls = a.ok(&["ls"]);
    assert!(
        text_ls.contains('T') && text_ls.trim_end().ends_with('Z'),
        "{text_ls}"
    );
}

/// Retention rules on a local store: `keep-last`, `max-age-unused` (keys read recently stay)
/// and `max-size` (least recently used first), with `--dry-run --json` listing exactly what a
/// real run then removes; the newest key of each prefix stays.
#[test]
fn gc_policy_local() {
    let a = Site::new();
    // Ten keys per prefix, of 4 KiB each, bound in name order.
    for p in ["main", "pr", "big"] {
        for i in 0..10 {
            let d = a.env.path(&format!("src-{p}-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), format!("{p}{i}").repeat(1024)).unwrap();
            a.ok(&["put", &format!("{p}/{i:02}"), s(&d)]);
        }
    }
    std::fs::write(
        a.env.path("config.toml"),
        r#"
[[retention]]
match = "main/"
keep-last = 3

[[retention]]
match = "pr/*"
max-age-unused = "7d"

[[retention]]
match = "big/"
max-size = "20K"
"#,
    )
    .unwrap();
    // pr/03 and pr/04 are read 8 days in (recorded), then the policy runs 10 days in.
    for k in ["pr/03", "pr/04"] {
        let out = faked(a.cmd(&["get", k, s(&a.env.path(&format!("o-{k}")))]), "+8d")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let run = |dry: bool| -> Value {
        let mut args = vec!["--json", "gc", "--policy"];
        if dry {
            args.push("--dry-run");
        }
        let out = faked(a.cmd(&args), "+10d").output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut want: BTreeSet<String> = (0..7).map(|i| format!("main/{i:02}")).collect();
    // pr/09 is the newest of pr/: kept; pr/03 and pr/04 were used 2 days ago.
    want.extend([0, 1, 2, 5, 6, 7, 8].map(|i| format!("pr/{i:02}")));
    // big/: 40 KiB over a 20 KiB cap: down to 18 KiB, least recently used (oldest) first.
    want.extend((0..6).map(|i| format!("big/{i:02}")));
    let dry = run(true);
    assert_eq!(removed(&dry), want, "{dry}");
    assert_eq!(a.keys().len(), 30, "a dry run removed keys");
    let real = run(false);
    assert_eq!(removed(&real), want, "{real}");
    let left: BTreeSet<String> = a.keys().into_iter().collect();
    assert_eq!(left.len(), 30 - want.len());
    assert!(left.is_disjoint(&want));
    a.assert_verify_clean("after gc --policy");
}

/// Size of each key's one incompressible file in the size-cap tests: a key stores a little
/// more (its tree, the blob's frame), far less than the margins the tests leave (> 5 KB).
const CAP_FILE: usize = 100_000;

/// A source folder of `CAP_FILE` random bytes (and, for the race, a few small files).
fn cap_source(site: &Site, name: &str, seed: u64, small: usize) -> std::path::PathBuf {
    let d = site.env.path(&format!("src-{}", name.replace('/', "_")));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("f.bin"), crate::common::noise(CAP_FILE, seed)).unwrap();
    if small > 0 {
        small_files(&d.join("small"), name, small, 2);
    }
    d
}

/// `max-size` in the config: a `put` that takes the store over its cap evicts the least
/// recently used keys (a read more than an hour after the last recorded one counts) down to
/// 90 % of the cap, never the key it wrote; every key has been used within the last day, so
/// only recency decides. Above 105 % of the cap, `put` warns, stores nothing and exits 0; `gc
/// --policy` then enforces the cap.
#[test]
fn size_cap_evicts_least_recently_used_local() {
    let a = Site::new();
    let set_cap = |cap: u64| {
        std::fs::write(a.env.path("config.toml"), format!("max-size = {cap}\n")).unwrap();
    };
    // 6 keys (~600.9 kB) fit in 650 kB; 7 do not, and 90 % (585 kB) holds 5.
    set_cap(650_000);
    let put_at = |key: &str, seed: u64, hours: u32| -> std::process::Output {
        let src = cap_source(&a, key, seed, 0);
        let out = faked(a.cmd(&["put", key, s(&src)]), &format!("+{hours}h"))
            .output()
            .unwrap();
        assert!(out.status.success(), "put {key}: {}", text(&out.stderr));
        out
    };
    let keys = |site: &Site| -> BTreeSet<String> { site.keys().into_iter().collect() };
    let names = |ks: &[&str]| -> BTreeSet<String> { ks.iter().map(|k| k.to_string()).collect() };
    for i in 0..6u32 {
        put_at(&format!("k/{i:02}"), 100 + u64::from(i), i);
    }
    assert_eq!(keys(&a).len(), 6, "evicted below the cap");
    put_at("k/06", 106, 6);
    assert_eq!(
        keys(&a),
        names(&["k/02", "k/03", "k/04", "k/05", "k/06"]),
        "the two least recently used keys go"
    );
    // k/02, read 5 hours after it was made, is now more recent than k/03…k/06.
    let out = faked(a.cmd(&["get", "k/02", s(&a.env.path("o-k02"))]), "+7h")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    put_at("k/07", 107, 8);
    assert_eq!(keys(&a).len(), 6);
    put_at("k/08", 108, 9);
    assert_eq!(
        keys(&a),
        names(&["k/02", "k/05", "k/06", "k/07", "k/08"]),
        "eviction ignored the read of k/02"
    );
    a.assert_verify_clean("after evictions");
    let got = a.get("k/02", "o-k02-again");
    assert_eq!(
        std::fs::read(got.join("f.bin")).unwrap(),
        crate::common::noise(CAP_FILE, 102)
    );

    // Over 105 % of a lowered cap (5 keys, ~500.7 kB > 493.5 kB): put warns and skips.
    set_cap(470_000);
    let out = put_at("k/09", 109, 10);
    let err = text(&out.stderr);
    assert!(
        err.contains("not caching k/09") && err.contains("max-size"),
        "{err}"
    );
    assert!(!keys(&a).contains("k/09"), "a refused put bound its key");
    // gc --policy enforces the cap: down to 423 kB, 4 keys; k/05 is now the least recent.
    let v = a.json(&["gc", "--policy"]);
    assert_eq!(removed(&v), names(&["k/05"]), "{v}");
    assert_eq!(v["removed"][0]["reason"], "store-size", "{v}");
    a.assert_verify_clean("after gc --policy");
}

/// Evictions (each `put` over the cap) racing 8 processes that restore the keys being evicted:
/// every `get` either restores its key exactly or fails naming it as unknown and writes
/// nothing; no `put` fails waiting for the lock, and the store stays clean.
#[test]
fn eviction_racing_8_gets_never_breaks_a_restore_local() {
    let a = Site::new();
    // 6 keys fit; every put after the sixth evicts.
    std::fs::write(a.env.path("config.toml"), "max-size = 650_000\n").unwrap();
    let hot: Vec<(String, std::path::PathBuf)> = (0..5u64)
        .map(|i| {
            let key = format!("hot/{i}");
            let src = cap_source(&a, &key, 200 + i, 40);
            a.ok(&["put", &key, s(&src)]);
            (key, src)
        })
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (restored, refused) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..8usize)
            .map(|t| {
                let (a, hot, stop) = (&a, &hot, &stop);
                scope.spawn(move || {
                    let (mut ok, mut gone) = (0u32, 0u32);
                    let mut n = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (key, src) = &hot[(t + n) % hot.len()];
                        let dest = a.env.path(&format!("out-{t}-{n}"));
                        n += 1;
                        let out = a.run(&["get", key, s(&dest)]);
                        if out.status.success() {
                            assert_same_tree(src, &dest, &format!("reader {t}: {key}"));
                            ok += 1;
                        } else {
                            let err = text(&out.stderr);
                            assert!(
                                err.contains(&format!("unknown key {key}")),
                                "reader {t}: get {key}: {err}"
                            );
                            assert!(!dest.exists(), "a failed get of {key} left {dest:?}");
                            gone += 1;
                        }
                        let _ = std::fs::remove_dir_all(&dest);
                    }
                    (ok, gone)
                })
            })
            .collect();
        for i in 0..8u64 {
            let key = format!("new/{i}");
            let src = cap_source(&a, &key, 300 + i, 0);
            a.ok(&["put", &key, s(&src)]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0), |(x, y), (o, g)| (x + o, y + g))
    });
    let left: BTreeSet<String> = a.keys().into_iter().collect();
    assert!(left.len() <= 6, "over the cap: {left:?}");
    // Both outcomes happened: restores, and refusals of keys evicted meanwhile.
    assert!(restored > 0, "no get restored anything ({refused} refused)");
    assert!(
        refused > 0,
        "no get met an evicted key ({restored} restored): {left:?}"
    );
    a.assert_verify_clean("after evictions racing gets");
}

// ---------------------------------------------------------------------------------------------
// Restore keys.

on!(fallback_restores:
    get_fallback_restores_the_newest_key_of_a_prefix_file => File,
    get_fallback_restores_the_newest_key_of_a_prefix_s3 => S3,
);

/// `get --fallback PREFIX`: a key found nowhere restores the newest key starting with PREFIX,
/// locally first, else from the remote (listing only that prefix); the prefixes are tried in
/// order; none matching is `unknown key`, and nothing is written.
fn fallback_restores(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let (old, new, other) = (a.env.path("old"), a.env.path("new"), a.env.path("other"));
    small_files(&old, "old", 4, 1);
    small_files(&new, "new", 4, 1);
    small_files(&other, "other", 4, 1);
    a.add("r", &b, &[]);
    a.ok(&["put", "ci/main@1", s(&old)]);
    a.json(&["push", "r", "ci/main@1"]);
    // Later by creation (and, pushed later, on the remote too); a key of another prefix sorts
    // after both.
    std::thread::sleep(Duration::from_millis(1100));
    a.ok(&["put", "ci/main@2", s(&new)]);
    a.ok(&["put", "ci/other@9", s(&other)]);
    a.json(&["push", "r", "ci/main@2", "ci/other@9"]);

    let dest = a.env.path("local");
    let line = a.ok(&[
        "get",
        "ci/main@3",
        s(&dest),
        "--offline",
        "--fallback",
        "ci/main@",
    ]);
    assert_eq!(line, "restored ci/main@2 (fallback for ci/main@3)");
    assert_same_tree(&new, &dest, "local fallback");

    // A fresh store finds it on the remote; a prefix nothing matches is skipped.
    let c = Site::new();
    c.add("r", &b, &[]);
    let dest = c.env.path("pulled");
    let v = c.json(&[
        "get",
        "ci/main@3",
        s(&dest),
        "--remote",
        "r",
        "--fallback",
        "nope/",
        "--fallback",
        "ci/main@",
    ]);
    assert_eq!(v["key"], "ci/main@2", "{v}");
    assert_eq!(v["fallback"], true, "{v}");
    assert_same_tree(&new, &dest, "remote fallback");
    c.env.assert_verify_clean("after a fallback pull");

    let dest = c.env.path("none");
    c.fails(
        &[
            "get",
            "x@1",
            s(&dest),
            "--remote",
            "r",
            "--fallback",
            "nope/",
        ],
        &["unknown key", "x@1"],
    );
    assert!(!dest.exists(), "a failed fallback wrote {}", dest.display());
}
