//! Concurrency: many `cairn` processes on one store at once, gc against writers and readers,
//! and lock timeouts.
//!
//! Randomized tests print their seed; `CAIRN_TEST_SEED=<seed>` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Env, Rng, assert_same_tree, gen_tree, test_seed, tree_diff};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lock_file(env: &Env, name: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.store().join("locks").join(name))
        .expect("lock file")
}

/// True if `err` is the lock-timeout error: the store's ("timed out after 0.3s waiting for
/// the gc lock (…); raise --lock-timeout or retry") or a remote ledger's ("timed out after …
/// waiting for another cairn process").
fn is_lock_timeout(err: &str) -> bool {
    let line = err.trim_end();
    line.lines().count() == 1
        && line.starts_with("cairn: error: ")
        && line.contains("timed out after ")
        && (line.contains("; raise --lock-timeout or retry")
            || line.contains("waiting for another cairn process"))
}

/// Checks the outcome of one command run by a worker. Success returns true. A failure is
/// accepted (returning false) only if `may_time_out` and it is a lock timeout: exit 1 and the
/// one-line lock-timeout error (see [`is_lock_timeout`]). Anything else panics.
fn outcome(out: &Output, may_time_out: bool, what: &str) -> bool {
    if out.status.success() {
        return true;
    }
    let err = text(&out.stderr);
    assert!(
        may_time_out && out.status.code() == Some(1) && is_lock_timeout(&err),
        "{what}: failed with {:?}: {err}",
        out.status
    );
    false
}

/// What one worker of the eight-process test left behind.
struct Worker {
    /// Its keys still bound at the end, with the version of its tree each is bound to.
    bound: BTreeMap<String, usize>,
    /// Its keys on the remote at the end, with the version of its tree each was pushed as.
    pushed: BTreeMap<String, usize>,
    /// Operations run, by kind (and "timed out" for lock timeouts).
    counts: BTreeMap<&'static str, u32>,
}

/// Operations each worker of the eight-process test runs.
const OPS_PER_WORKER: u64 = 50;

/// Worker `w` of the eight-process test: [`OPS_PER_WORKER`] random operations on the store and
/// the remote `r`, each checked against a model of what the worker's keys are bound to, locally
/// (`bound`) and on the remote (`pushed`). Only worker `w` binds, pushes or removes the keys
/// `w<w>/*`, so the model is exact; the `shared/*` keys always hold the same trees.
fn worker(env: &Env, w: usize, seed: u64, shared: &[PathBuf], own: &[PathBuf]) -> Worker {
    let mut rng = Rng::new(seed ^ ((w as u64 + 1) * 0x1000_0001));
    let impatient = w == IMPATIENT;
    let run = |args: &[&str]| -> Output {
        let mut c = env.cmd();
        if impatient {
            c.args(["--lock-timeout", IMPATIENT_TIMEOUT]);
        }
        c.args(args).output().expect("run cairn")
    };
    // A refusal the model predicts (exit 1, one line naming `want`); for the impatient worker,
    // a lock timeout instead is accepted too.
    let refused = |out: &Output, want: &str, what: &str| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            (err.contains(want) && err.trim_end().lines().count() == 1)
                || (impatient && is_lock_timeout(&err)),
            "{what}: want \"{want}\": {err}"
        );
    };
    let mut bound: BTreeMap<String, usize> = BTreeMap::new();
    let mut pushed: BTreeMap<String, usize> = BTreeMap::new();
    let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
    for n in 0..OPS_PER_WORKER {
        let ctx = format!("worker {w} op {n}");
        let own_key = |rng: &mut Rng| format!("w{w}/{}", rng.below(2));
        let (kind, done) = match rng.below(100) {
            0..=15 => {
                let key = own_key(&mut rng);
                let v = rng.below(2) as usize;
                let out = run(&["put", &key, own[v].to_str().unwrap()]);
                let ok = outcome(&out, impatient, &format!("{ctx}: put {key}"));
                if ok {
                    bound.insert(key, v);
                }
                ("put", ok)
            }
            16..=23 => {
                let j = rng.below(2) as usize;
                let key = format!("shared/{j}");
                let out = run(&["put", &key, shared[j].to_str().unwrap()]);
                (
                    "put shared",
                    outcome(&out, impatient, &format!("{ctx}: put {key}")),
                )
            }
            24..=41 => {
                // A key not bound locally is fetched from the default remote `r` (and bound)
                // if it was pushed there.
                let dest = env.path(&format!("out/w{w}/{n}"));
                let pick = rng.below(4);
                let (key, want, via_remote) = if pick < 2 {
                    let key = format!("w{w}/{pick}");
                    match (bound.get(&key), pushed.get(&key)) {
                        (Some(&v), _) => (key, Some(&own[v]), None),
                        (None, Some(&v)) => (key, Some(&own[v]), Some(v)),
                        (None, None) => (key, None, None),
                    }
                } else {
                    let j = (pick - 2) as usize;
                    (format!("shared/{j}"), Some(&shared[j]), None)
                };
                let out = run(&["get", &key, dest.to_str().unwrap()]);
                let what = format!("{ctx}: get {key}");
                let ok = match want {
                    Some(src) => {
                        let ok = outcome(&out, impatient, &what);
                        if ok {
                            assert_same_tree(src, &dest, &what);
                        }
                        if let Some(v) = via_remote {
                            // A get that timed out may have bound the key before giving up:
                            // only the pushed version can be bound.
                            let now = env.key_roots().into_iter().any(|(k, _)| k == key);
                            assert!(!ok || now, "{what}: restored but did not bind the key");
                            if now {
                                bound.insert(key.clone(), v);
                            }
                        }
                        ok
                    }
                    None => {
                        refused(&out, "unknown key", &what);
                        true
                    }
                };
                if !ok || want.is_none() {
                    assert!(!dest.exists(), "{what}: a failed get left {dest:?}");
                }
                let _ = std::fs::remove_dir_all(&dest);
                ("get", ok)
            }
            42..=51 => {
                let (key, local) = if rng.below(3) == 0 {
                    let key = format!("shared/{}", rng.below(2));
                    (key, None)
                } else {
                    let key = own_key(&mut rng);
                    let local = bound.get(&key).copied();
                    (key, Some(local))
                };
                let out = run(&["push", "r", &key]);
                let what = format!("{ctx}: push {key}");
                let ok = match local {
                    None => outcome(&out, impatient, &what),
                    Some(Some(v)) => {
                        let ok = outcome(&out, impatient, &what);
                        if ok {
                            pushed.insert(key, v);
                        }
                        ok
                    }
                    Some(None) => {
                        refused(&out, "unknown key", &what);
                        true
                    }
                };
                ("push", ok)
            }
            52..=67 => {
                let (key, remote) = if rng.below(3) == 0 {
                    let key = format!("shared/{}", rng.below(2));
                    (key, None)
                } else {
                    let key = own_key(&mut rng);
                    let remote = pushed.get(&key).copied();
                    (key, Some(remote))
                };
                let out = run(&["pull", "r", &key]);
                let what = format!("{ctx}: pull {key}");
                let ok = match remote {
                    None => outcome(&out, impatient, &what),
                    Some(Some(v)) => {
                        let ok = outcome(&out, impatient, &what);
                        if ok {
                            bound.insert(key, v);
                        }
                        ok
                    }
                    Some(None) => {
                        refused(&out, "is not on the remote", &what);
                        true
                    }
                };
                ("pull", ok)
            }
            68..=77 => {
                let out = run(&["--json", "verify"]);
                let what = format!("{ctx}: verify");
                let ok = outcome(&out, impatient, &what);
                if ok {
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
                    assert_eq!(v["clean"], true, "{what}: {v}");
                }
                ("verify", ok)
            }
            78..=89 => (
                "gc",
                outcome(&run(&["gc"]), impatient, &format!("{ctx}: gc")),
            ),
            _ => {
                let key = own_key(&mut rng);
                let out = run(&["rm", &key]);
                let what = format!("{ctx}: rm {key}");
                let ok = if bound.contains_key(&key) {
                    let ok = outcome(&out, impatient, &what);
                    if ok {
                        bound.remove(&key);
                    }
                    ok
                } else {
                    refused(&out, "unknown key", &what);
                    true
                };
                ("rm", ok)
            }
        };
        *counts.entry(kind).or_default() += 1;
        if !done {
            *counts.entry("timed out").or_default() += 1;
        }
    }
    Worker {
        bound,
        pushed,
        counts,
    }
}

/// The worker of the eight-process test that runs with a tiny --lock-timeout.
const IMPATIENT: usize = 7;
const IMPATIENT_TIMEOUT: &str = "0.25";

/// Test 1: eight processes at once on one store and one (file://) remote, each running 50
/// random operations: put (of its own trees and of trees every worker shares), get (into a
/// fresh folder, checked against the source; a key not bound locally is fetched from the
/// remote if it was pushed), push and pull (of its own keys, checked against
/// what it last pushed, and of the shared keys), verify, gc and rm. Every one must succeed or
/// be refused as the worker's model predicts ("unknown key", "is not on the remote"), except
/// that worker 7 runs with a tiny --lock-timeout and may fail with the one-line lock-timeout
/// error (and then must have changed nothing its model tracks). Afterwards the store verifies
/// clean (every key's closure complete: no key points at a missing object) and holds exactly
/// the keys the workers left bound, each restoring the tree the model says; a fresh store
/// pulls every key the remote holds and each restores the tree last pushed.
#[test]
fn eight_processes_mixing_put_get_push_pull_verify_gc_rm_leave_a_consistent_store() {
    const WORKERS: usize = 8;
    let env = Env::new();
    let seed = test_seed("eight_processes");
    let remote = env.path("remote");
    env.ok(&[
        "remote",
        "add",
        "r",
        &format!("file://{}", remote.display()),
    ]);
    let shared: Vec<PathBuf> = (0..2)
        .map(|j| {
            let d = env.path(&format!("src/shared{j}"));
            gen_tree(&d, &format!("shared{j}"), 60, &[100_000]);
            env.ok(&["put", &format!("shared/{j}"), d.to_str().unwrap()]);
            d
        })
        .collect();
    env.ok(&["push", "r", "shared/0", "shared/1"]);
    let own: Vec<Vec<PathBuf>> = (0..WORKERS)
        .map(|w| {
            (0..2)
                .map(|v| {
                    let d = env.path(&format!("src/w{w}v{v}"));
                    gen_tree(&d, &format!("w{w}v{v}"), 16, &[40_000, 20_000]);
                    d
                })
                .collect()
        })
        .collect();

    let start = Instant::now();
    let results: Vec<Worker> = thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (env, shared, own) = (&env, &shared, &own[w]);
                s.spawn(move || worker(env, w, seed, shared, own))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();

    let mut totals: BTreeMap<&str, u32> = BTreeMap::new();
    let mut want: BTreeMap<String, &PathBuf> = BTreeMap::new();
    for (j, src) in shared.iter().enumerate() {
        want.insert(format!("shared/{j}"), src);
    }
    for (w, r) in results.iter().enumerate() {
        for (k, v) in &r.counts {
            *totals.entry(k).or_default() += v;
        }
        for (key, &v) in &r.bound {
            want.insert(key.clone(), &own[w][v]);
        }
    }
    let ops: u32 = totals
        .iter()
        .filter(|(k, _)| **k != "timed out")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(ops as u64, WORKERS as u64 * OPS_PER_WORKER);
    eprintln!("8 workers x {OPS_PER_WORKER} ops in {elapsed:?}: {totals:?}");
    for kind in ["put", "get", "push", "pull", "verify", "gc"] {
        assert!(totals.get(kind).copied().unwrap_or(0) > 0, "no {kind} ran");
    }

    env.assert_verify_clean("after the workers");
    let listed: Vec<String> = env.key_roots().into_iter().map(|(k, _)| k).collect();
    let wanted: Vec<String> = want.keys().cloned().collect();
    assert_eq!(listed, wanted, "keys bound at the end");
    for (key, src) in &want {
        let dest = env.path(&format!("final/{key}"));
        env.ok(&["get", key, dest.to_str().unwrap()]);
        assert_same_tree(src, &dest, &format!("final get {key}"));
    }

    // The remote: a fresh store pulls every key on it, each the tree last pushed.
    let mut on_remote: BTreeMap<String, &PathBuf> = BTreeMap::new();
    for (j, src) in shared.iter().enumerate() {
        on_remote.insert(format!("shared/{j}"), src);
    }
    for (w, r) in results.iter().enumerate() {
        for (key, &v) in &r.pushed {
            on_remote.insert(key.clone(), &own[w][v]);
        }
    }
    let fresh = Env::new();
    fresh.ok(&[
        "remote",
        "add",
        "r",
        &format!("file://{}", remote.display()),
    ]);
    let mut args = vec!["pull", "r"];
    args.extend(on_remote.keys().map(String::as_str));
    fresh.ok(&args);
    fresh.assert_verify_clean("a fresh store after pulling everything");
    for (key, src) in &on_remote {
        let dest = fresh.path(&format!("final/{key}"));
        fresh.ok(&["get", key, dest.to_str().unwrap()]);
        assert_same_tree(src, &dest, &format!("fresh pull of {key}"));
    }
}

/// Test 2: `put` and `gc` started together, 30 times. Each round first `add`s the tree, so
/// its objects are in the store but unreferenced: gc, if it gets the lock first, deletes them,
/// and the put must then store them again rather than trust what it saw before. After every
/// round the store verifies clean and the key restores the tree exactly.
#[test]
fn gc_racing_put_never_deletes_what_the_put_binds() {
    const ROUNDS: usize = 30;
    let env = Env::new();
    let mut rng = Rng::new(test_seed("gc_racing_put"));
    let (mut gc_first, mut put_first) = (0, 0);
    let mut kept: Vec<(String, PathBuf)> = Vec::new();
    for n in 0..ROUNDS {
        let src = env.path(&format!("src/t{n}"));
        gen_tree(&src, &format!("round{n}"), 120, &[400_000, 100_000]);
        let src_s = src.to_str().unwrap();
        env.ok(&["add", src_s]);
        let key = format!("k{n}");
        let (put_delay, gc_delay) = (rng.below(25), rng.below(25));
        let (put, gc) = thread::scope(|s| {
            let p = s.spawn(|| {
                thread::sleep(Duration::from_millis(put_delay));
                env.cmd().args(["--json", "put", &key, src_s]).output()
            });
            let g = s.spawn(|| {
                thread::sleep(Duration::from_millis(gc_delay));
                env.cmd().args(["gc"]).output()
            });
            (p.join().unwrap().unwrap(), g.join().unwrap().unwrap())
        });
        assert!(
            put.status.success(),
            "round {n}: put: {}",
            text(&put.stderr)
        );
        assert!(gc.status.success(), "round {n}: gc: {}", text(&gc.stderr));
        let rep: serde_json::Value = serde_json::from_slice(&put.stdout).expect("put --json");
        // The add recorded every blob: the put finds new ones only if gc deleted them first.
        if rep["new_blobs"].as_u64().expect("new_blobs") > 0 {
            gc_first += 1;
        } else {
            put_first += 1;
        }
        env.assert_verify_clean(&format!("round {n}"));
        let dest = env.path(&format!("out/{n}"));
        env.ok(&["get", &key, dest.to_str().unwrap()]);
        assert_same_tree(&src, &dest, &format!("round {n}: get {key}"));
        std::fs::remove_dir_all(&dest).unwrap();
        // Unbind most keys again so that the next gc has garbage sharing blobs with live trees.
        if n % 5 == 0 {
            kept.push((key, src));
        } else {
            env.ok(&["rm", &key]);
        }
    }
    eprintln!("gc vs put: gc ran first {gc_first} times, put first {put_first} times");
    env.ok(&["gc"]);
    env.assert_verify_clean("after the rounds");
    for (key, src) in &kept {
        let dest = env.path(&format!("final/{key}"));
        env.ok(&["get", key, dest.to_str().unwrap()]);
        assert_same_tree(src, &dest, &format!("final get {key}"));
    }
}

/// Test 2, second half: keys are removed while other processes get them, with gc running in
/// a loop. Each get either restores the complete tree or fails with "unknown key" and leaves
/// no destination behind.
#[test]
fn get_racing_rm_and_gc_restores_the_tree_or_reports_unknown_key() {
    const KEYS: usize = 24;
    const BATCH: usize = 4;
    let env = Env::new();
    let mut rng = Rng::new(test_seed("get_racing_rm"));
    let srcs: Vec<PathBuf> = (0..KEYS)
        .map(|i| {
            let d = env.path(&format!("src/{i}"));
            gen_tree(&d, &format!("victim{i}"), 60, &[150_000]);
            env.ok(&["put", &format!("v{i}"), d.to_str().unwrap()]);
            d
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (mut restored, mut unknown) = (0, 0);
    let mut failures = Vec::new();
    thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut runs = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let out = env.run(&["gc"]);
                assert!(out.status.success(), "gc: {}", text(&out.stderr));
                runs += 1;
            }
            runs
        });
        for batch in (0..KEYS).collect::<Vec<_>>().chunks(BATCH) {
            let delays: Vec<(u64, u64)> = batch
                .iter()
                .map(|_| (rng.below(30), rng.below(30)))
                .collect();
            let outs: Vec<(usize, Output, Output)> = thread::scope(|s2| {
                let hs: Vec<_> = batch
                    .iter()
                    .zip(&delays)
                    .map(|(&i, &(dg, dr))| {
                        let env = &env;
                        let key = format!("v{i}");
                        let dest = env.path(&format!("out/{i}"));
                        let g = s2.spawn({
                            let key = key.clone();
                            move || {
                                thread::sleep(Duration::from_millis(dg));
                                env.run(&["get", &key, dest.to_str().unwrap()])
                            }
                        });
                        let r = s2.spawn(move || {
                            thread::sleep(Duration::from_millis(dr));
                            env.run(&["rm", &key])
                        });
                        (i, g, r)
                    })
                    .collect();
                hs.into_iter()
                    .map(|(i, g, r)| (i, g.join().unwrap(), r.join().unwrap()))
                    .collect()
            });
            for (i, get, rm) in outs {
                assert!(rm.status.success(), "rm v{i}: {}", text(&rm.stderr));
                let dest = env.path(&format!("out/{i}"));
                if get.status.success() {
                    match tree_diff(&srcs[i], &dest) {
                        None => restored += 1,
                        Some(d) => failures.push(format!("get v{i} restored a wrong tree: {d}")),
                    }
                } else {
                    let err = text(&get.stderr);
                    if get.status.code() == Some(1) && err.contains("unknown key") {
                        unknown += 1;
                    } else {
                        failures.push(format!(
                            "get v{i} racing rm: {:?}, want success or \"unknown key\": {}",
                            get.status,
                            err.trim_end()
                        ));
                    }
                    if dest.exists() {
                        failures.push(format!("failed get v{i} left {}", dest.display()));
                    }
                }
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let runs = gc.join().unwrap();
        eprintln!("get racing rm: {restored} restored, {unknown} unknown key, {runs} gc runs");
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    env.assert_verify_clean("after the races");
    assert!(env.key_roots().is_empty());
}

/// Waits until the file `name` in the store's lock folder is locked by someone else.
fn wait_until_locked(env: &Env, name: &str) {
    let f = lock_file(env, name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f.try_lock_shared() {
            Ok(()) => f.unlock().unwrap(),
            Err(std::fs::TryLockError::WouldBlock) => return,
            Err(e) => panic!("{name}: {e}"),
        }
        assert!(Instant::now() < deadline, "nobody took locks/{name}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until process `pid` has a file whose path ends with `suffix` open.
fn wait_until_open(pid: u32, suffix: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("{what} (pid {pid}) is gone: {e}"));
        if fds
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|p| p.ends_with(suffix))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never opened {suffix}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The same race as above, made deterministic: readers that resolved a key and then queued
/// behind a waiting gc must not act on the key after it was removed and collected. A reader
/// (this test) holds the gc lock shared, so a `gc` waits holding the turnstile; `get`, `verify`,
/// `cat` and `export` of key `victim` start and queue behind it; `victim` is removed; the
/// reader lets go, gc deletes victim's objects, and the queued commands run. Each must either
/// succeed with the complete content or fail with "unknown key".
#[test]
fn commands_queued_behind_gc_do_not_act_on_a_key_removed_meanwhile() {
    let env = Env::new();
    let src = env.path("src");
    gen_tree(&src, "victim", 30, &[200_000]);
    env.ok(&["put", "victim", src.to_str().unwrap()]);

    let reader = lock_file(&env, "gc");
    reader.lock_shared().unwrap();
    let gc = env.spawn(&["gc"]);
    wait_until_locked(&env, "turnstile");
    let dest = env.path("out");
    let archive = env.path("victim.tar");
    let queued = [
        ("get", env.spawn(&["get", "victim", dest.to_str().unwrap()])),
        ("verify", env.spawn(&["verify", "victim"])),
        ("cat", env.spawn(&["cat", "victim", "big0.bin"])),
        (
            "export",
            env.spawn(&["export", "victim", "-o", archive.to_str().unwrap()]),
        ),
    ];
    // Each has resolved the key once it has the turnstile open (it locks after resolving).
    for (what, child) in &queued {
        wait_until_open(child.id(), "locks/turnstile", what);
    }
    env.ok(&["rm", "victim"]);
    reader.unlock().unwrap();
    let gc = gc.wait_with_output().unwrap();
    assert!(gc.status.success(), "gc: {}", text(&gc.stderr));

    let mut failures = Vec::new();
    for (what, child) in queued {
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        let ok = if out.status.success() {
            what != "get" || tree_diff(&src, &dest).is_none()
        } else {
            out.status.code() == Some(1) && err.contains("unknown key")
        };
        if !ok {
            failures.push(format!(
                "{what} victim (removed and collected while it waited): {:?}: {}",
                out.status,
                err.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "want success or \"unknown key\":\n{}",
        failures.join("\n")
    );
}

/// Test 3: with the gc lock held exclusively (as a running gc holds it), `put` waits
/// --lock-timeout and fails: exit 1, one stderr line saying "timed out", nothing bound and no
/// blob written. Once the lock is released the same put succeeds.
#[test]
fn put_times_out_on_a_held_gc_lock_and_binds_nothing() {
    let env = Env::new();
    let src = env.path("src");
    gen_tree(&src, "timeout", 20, &[50_000]);
    let src_s = src.to_str().unwrap();
    env.ok(&["ls"]); // creates the store

    let held = lock_file(&env, "gc");
    held.lock().unwrap();
    let t = Instant::now();
    let out = env.run(&["--lock-timeout", "0.5", "put", "k", src_s]);
    let took = t.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "want one stderr line: {err:?}");
    assert!(err.contains("timed out"), "{err}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(4),
        "put gave up after {took:?}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(env.key_roots().is_empty(), "a key was bound");
    let mut blob_files = walk_files(&env.store().join("blobs"));
    blob_files.extend(walk_files(&env.store().join("packs")));
    assert!(blob_files.is_empty(), "blobs written: {blob_files:?}");

    held.unlock().unwrap();
    env.ok(&["--lock-timeout", "0.5", "put", "k", src_s]);
    let dest = env.path("out");
    env.ok(&["get", "k", dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest, "get after the lock was released");
    env.assert_verify_clean("after the timeout");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts `out` is a lock timeout: exit 1, one stderr line with "timed out" naming `file`,
/// after at least 0.3 s and well within a few seconds.
fn assert_timed_out(out: &Output, took: Duration, file: &str, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: want one stderr line: {err:?}"
    );
    assert!(
        err.contains("timed out") && err.contains(file),
        "{what}: {err}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(4),
        "{what}: gave up after {took:?}"
    );
}

/// Test 3, the other commands: readers time out on a held gc lock; gc times out while a reader
/// holds it shared; a writer arriving while gc waits queues behind gc (the turnstile) and times
/// out, and gc then runs; commands that only touch the index time out while another process
/// has the index open.
#[test]
fn every_command_gives_up_after_lock_timeout() {
    let env = Env::new();
    let src = env.path("src");
    gen_tree(&src, "timeouts", 20, &[50_000]);
    let src_s = src.to_str().unwrap();
    env.ok(&["put", "k", src_s]);
    let timed = |args: &[&str]| {
        let t = Instant::now();
        let out = env
            .cmd()
            .args(["--lock-timeout", "0.3"])
            .args(args)
            .output();
        (out.unwrap(), t.elapsed())
    };

    // A gc holds the lock: readers and writers give up.
    let main = lock_file(&env, "gc");
    main.lock().unwrap();
    let dest = env.path("out");
    let archive = env.path("k.tar");
    for args in [
        vec!["get", "k", dest.to_str().unwrap()],
        vec!["verify"],
        vec!["cat", "k", "big0.bin"],
        vec!["export", "k", "-o", archive.to_str().unwrap()],
        vec!["add", src_s],
    ] {
        let (out, took) = timed(&args);
        assert_timed_out(&out, took, "locks/gc", &format!("{args:?} under gc"));
    }
    assert!(!dest.exists() && !archive.exists());
    main.unlock().unwrap();

    // A reader holds it shared: gc gives up, and lets the turnstile go when it does.
    main.lock_shared().unwrap();
    let (out, took) = timed(&["gc"]);
    assert_timed_out(&out, took, "locks/gc", "gc under a reader");
    env.ok(&["--lock-timeout", "0.3", "verify"]);

    // A patient gc waits for the reader, holding the turnstile: a new writer queues behind it
    // and gives up; when the reader is done, gc runs.
    let gc = env.spawn(&["gc"]);
    wait_until_locked(&env, "turnstile");
    let (out, took) = timed(&["put", "k2", src_s]);
    assert_timed_out(&out, took, "locks/turnstile", "put behind a waiting gc");
    main.unlock().unwrap();
    let gc = gc.wait_with_output().unwrap();
    assert!(gc.status.success(), "gc: {}", text(&gc.stderr));

    // Another process has the index open (redb takes a whole-file lock on it): index-only
    // commands give up too.
    let index = OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.store().join("index.redb"))
        .unwrap();
    index.lock().unwrap();
    for args in [vec!["ls"], vec!["rm", "k"], vec!["log", "k"]] {
        let (out, took) = timed(&args);
        assert_timed_out(
            &out,
            took,
            "index.redb",
            &format!("{args:?} with the index busy"),
        );
    }
    index.unlock().unwrap();

    let listed: BTreeSet<String> = env.key_roots().into_iter().map(|(k, _)| k).collect();
    assert_eq!(listed, BTreeSet::from(["k".to_string()]));
    env.ok(&["get", "k", dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest, "get after the timeouts");
    env.assert_verify_clean("after the timeouts");
}

/// Spawns `cairn ARGS` for each entry of `all` at once and waits for them all.
fn run_all(env: &Env, all: &[Vec<String>]) -> Vec<Output> {
    let children: Vec<_> = all
        .iter()
        .map(|args| {
            env.cmd()
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn cairn")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// Eight processes whose first command creates the store (index, blob folders, lock files)
/// all succeed, and the store holds all eight keys.
#[test]
fn eight_processes_creating_one_store_at_once_all_succeed() {
    let env = Env::new();
    let srcs: Vec<PathBuf> = (0..8)
        .map(|i| {
            let d = env.path(&format!("src/{i}"));
            gen_tree(&d, &format!("first{i}"), 30, &[60_000]);
            d
        })
        .collect();
    let all: Vec<Vec<String>> = srcs
        .iter()
        .enumerate()
        .map(|(i, d)| vec!["put".into(), format!("k{i}"), d.to_str().unwrap().into()])
        .collect();
    for (i, out) in run_all(&env, &all).iter().enumerate() {
        assert!(out.status.success(), "put k{i}: {}", text(&out.stderr));
    }
    env.assert_verify_clean("after the puts");
    let keys: Vec<String> = env.key_roots().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, (0..8).map(|i| format!("k{i}")).collect::<Vec<_>>());
    for (i, src) in srcs.iter().enumerate() {
        let dest = env.path(&format!("out/{i}"));
        env.ok(&["get", &format!("k{i}"), dest.to_str().unwrap()]);
        assert_same_tree(src, &dest, &format!("get k{i}"));
    }
}

/// Eight processes bind one key to eight different trees at once: the key ends up bound to
/// one of them, complete, and its log records all eight bindings as one unbroken chain (each
/// entry's previous root is the root of the entry before it).
#[test]
fn eight_puts_racing_on_one_key_leave_a_complete_binding_and_an_unbroken_log() {
    let env = Env::new();
    env.ok(&["ls"]);
    let srcs: Vec<PathBuf> = (0..8)
        .map(|i| {
            let d = env.path(&format!("src/{i}"));
            gen_tree(&d, &format!("racer{i}"), 30, &[60_000]);
            d
        })
        .collect();
    let roots: BTreeSet<String> = srcs
        .iter()
        .map(|d| env.ok(&["hash", d.to_str().unwrap()]))
        .collect();
    assert_eq!(roots.len(), 8);
    let all: Vec<Vec<String>> = srcs
        .iter()
        .map(|d| vec!["put".into(), "same".into(), d.to_str().unwrap().into()])
        .collect();
    for (i, out) in run_all(&env, &all).iter().enumerate() {
        assert!(out.status.success(), "put {i}: {}", text(&out.stderr));
    }
    env.assert_verify_clean("after the puts");

    let bound = env.key_roots();
    assert_eq!(bound.len(), 1, "{bound:?}");
    let winner = srcs
        .iter()
        .find(|d| env.ok(&["hash", d.to_str().unwrap()]) == bound[0].1)
        .expect("bound to one of the trees");
    let dest = env.path("out");
    env.ok(&["get", "same", dest.to_str().unwrap()]);
    assert_same_tree(winner, &dest, "get same");

    let log: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "log", "same"])).unwrap();
    let log = log.as_array().expect("log --json gives an array");
    assert_eq!(log.len(), 8, "{log:?}");
    let mut prev = serde_json::Value::Null;
    let mut logged = BTreeSet::new();
    for (n, e) in log.iter().enumerate() {
        let want = if n == 0 { "bind" } else { "rebind" };
        assert_eq!(e["action"], want, "entry {n}: {e}");
        assert_eq!(e["previous"], prev, "entry {n}: {e}");
        prev = e["root"].clone();
        logged.insert(e["root"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(logged, roots, "every put is logged once");
    assert_eq!(
        prev["id"],
        bound[0].1.as_str(),
        "the last entry is the binding"
    );
}
