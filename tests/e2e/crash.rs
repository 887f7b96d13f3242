//! Crash safety: `cairn` killed with SIGKILL at random points during put, gc, get and store
//! creation. Whatever the moment, the store must verify clean and every key still bound must
//! restore its source exactly.
//!
//! Kill points are drawn uniformly over an adaptive estimate of the command's duration (see
//! [`KillClock`]), and each test prints where its kills landed. Randomized tests print
//! their seed; `CAIRN_TEST_SEED=<seed>` replays a run (timing still varies).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Env, Rng, TreeModel, assert_same_tree, gen_tree, model_diff, rewrite_model, sample_tree,
    test_seed, tree_model, write_model,
};

/// How a killed command ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// SIGKILL landed while it ran.
    Killed,
    /// It had exited (successfully) before the kill.
    Finished,
}

/// Sleeps `delay`, then SIGKILLs `child` and reaps it. A child that exited on its own first
/// must have succeeded.
fn kill_after(mut child: Child, delay: Duration, what: &str) -> End {
    thread::sleep(delay);
    // Killing a child that has exited but not been reaped is harmless; the status tells.
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    if out.status.signal() == Some(9) {
        return End::Killed;
    }
    assert!(
        out.status.success(),
        "{what} failed on its own: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    End::Finished
}

/// Runs cairn `args` to completion and returns how long it took.
fn timed(env: &Env, args: &[&str]) -> Duration {
    let t = Instant::now();
    env.ok(args);
    t.elapsed()
}

/// A uniformly random delay in `0..=max`.
fn delay_up_to(rng: &mut Rng, max: Duration) -> Duration {
    Duration::from_micros(rng.below(max.as_micros() as u64 + 1))
}

/// Gets every listed key into a fresh folder and compares it with its source in `sources`
/// (key -> source folder); a listed key with no source fails.
fn check_keys(env: &Env, sources: &BTreeMap<String, PathBuf>, context: &str) {
    for (key, _) in env.key_roots() {
        let src = sources
            .get(&key)
            .unwrap_or_else(|| panic!("{context}: unexpected key {key}"));
        let dest = env.path("check");
        let _ = std::fs::remove_dir_all(&dest);
        env.ok(&["get", &key, dest.to_str().unwrap()]);
        assert_same_tree(src, &dest, &format!("{context}: get {key}"));
        std::fs::remove_dir_all(&dest).unwrap();
    }
}

/// Asserts `gc --dry-run --json` finds nothing to delete.
fn assert_no_garbage(env: &Env, context: &str) {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "gc", "--dry-run"])).expect("gc --json");
    for field in ["trees", "blobs", "orphan_files", "temp_files"] {
        assert_eq!(v[field], 0, "{context}: gc --dry-run: {v}");
    }
}

/// Draws kill delays uniformly over 0 to 1.2 times an estimate of the command's duration, and
/// adjusts the estimate as it goes: a run that finished before its kill means the estimate is
/// long enough (shrink it), a killed run that it may be short (grow it). This settles with
/// about a quarter of the runs finishing (ln 1.1 / (ln 1.1 + ln 1/0.75)), so kills spread over
/// whole runs however loaded the machine is.
struct KillClock {
    estimate: Duration,
}

impl KillClock {
    fn delay(&self, rng: &mut Rng) -> Duration {
        delay_up_to(rng, self.estimate.mul_f64(1.2))
    }

    fn update(&mut self, end: &End) {
        let f = if *end == End::Finished { 0.75 } else { 1.1 };
        self.estimate = self.estimate.mul_f64(f);
    }
}

/// Time spent per phase of a test, printed at its end.
#[derive(Default)]
struct Phases(BTreeMap<&'static str, Duration>);

impl Phases {
    fn time<T>(&mut self, phase: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        *self.0.entry(phase).or_default() += t.elapsed();
        out
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for (phase, d) in &self.0 {
            write!(f, "{phase} {:.1}s; ", d.as_secs_f64())?;
        }
        Ok(())
    }
}

/// Checks that the keys `listed` (by `ls`) are exactly those of `models`, and gets each into a
/// fresh folder and compares it with its model.
fn check_keys_model(
    env: &Env,
    listed: &[String],
    models: &BTreeMap<String, &TreeModel>,
    context: &str,
) {
    assert_eq!(
        listed.iter().collect::<Vec<_>>(),
        models.keys().collect::<Vec<_>>(),
        "{context}: keys"
    );
    for (key, model) in models {
        let dest = env.path("check");
        if dest.exists() {
            std::fs::remove_dir_all(&dest).unwrap();
        }
        env.ok(&["get", key, dest.to_str().unwrap()]);
        if let Some(d) = model_diff(model, &dest) {
            panic!("{context}: get {key} restored a tree that differs from its source: {d}");
        }
        std::fs::remove_dir_all(&dest).unwrap();
    }
}

/// Test 4: SIGKILL during `put`, 50 times, on trees of 2000 small files and two MB-sized
/// files. Iterations cycle through: a new key to a fresh tree; rebinding that key to a fresh
/// tree; a new key to a fresh tree; rebinding it to a tree that is stored but no longer bound.
/// After each kill the key is bound either as before or to the complete new tree, `verify` is
/// clean, and every key restores its source. Prints how many kills landed before the key was
/// bound, after it was bound, and after put had finished.
///
/// The trees are versions of one source folder (each version rewrites an eighth of the small
/// files and the big ones), checked against in-memory models, to keep file I/O down.
#[test]
fn kill_9_during_put_never_binds_an_incomplete_tree() {
    const ITERATIONS: usize = 50;
    const SMALL: usize = 2000;
    const BIG: [usize; 2] = [1_500_000, 1_000_000];
    let env = Env::new();
    let mut rng = Rng::new(test_seed("kill_during_put"));
    let mut phases = Phases::default();
    let work = env.path("src");
    let work_s = work.to_str().unwrap();
    // Version models (dropped once nothing needs them) and the one in the source folder.
    let mut models: Vec<Option<TreeModel>> = vec![Some(tree_model("version0", SMALL, &BIG))];
    let mut current = 0;
    write_model(&work, models[0].as_ref().unwrap());
    let switch_to = |models: &[Option<TreeModel>], current: &mut usize, v: usize| {
        if *current != v {
            let old = models[*current].as_ref().unwrap();
            rewrite_model(&work, old, models[v].as_ref().unwrap());
            *current = v;
        }
    };

    // First estimates: a put of a fresh tree (sharing most blobs with what is stored, like
    // the ones below), and a put of a tree whose blobs are all stored.
    env.ok(&["put", "cal", work_s]);
    models.push(Some(tree_model("version1", SMALL, &BIG)));
    switch_to(&models, &mut current, 1);
    let mut fresh = KillClock {
        estimate: timed(&env, &["put", "cal", work_s]),
    };
    let mut stored = KillClock {
        estimate: timed(&env, &["put", "cal2", work_s]),
    };
    env.ok(&["rm", "cal"]);
    env.ok(&["rm", "cal2"]);
    env.ok(&["gc"]);

    // key -> version it is bound to.
    let mut bound: BTreeMap<String, usize> = BTreeMap::new();
    // What `ls` showed last: key -> root id.
    let mut roots: BTreeMap<String, String> = BTreeMap::new();
    // The version of the key removed last: stored, but bound to nothing.
    let mut spare: Option<usize> = None;
    let mut stats: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for i in 0..ITERATIONS {
        let (key, kind) = match i % 4 {
            0 | 2 => (format!("k{i}"), "new key, fresh tree"),
            1 => (format!("k{}", i - 1), "rebind, fresh tree"),
            _ => (format!("k{}", i - 1), "rebind, stored tree"),
        };
        // Only the key being put is bound (if at all), so each iteration gets one tree.
        let others: Vec<String> = bound.keys().filter(|k| **k != key).cloned().collect();
        for old in others {
            env.ok(&["rm", &old]);
            spare = bound.remove(&old);
            roots.remove(&old);
        }
        if i % 16 == 0 {
            phases.time("gc", || env.ok(&["gc"]));
        }
        let prev = bound.get(&key).copied();
        let prev_root = roots.get(&key).cloned();
        let (v, clock) = match spare {
            Some(s) if kind == "rebind, stored tree" && Some(s) != prev => (s, &mut stored),
            _ => {
                models.push(Some(tree_model(
                    &format!("version{}", models.len()),
                    SMALL,
                    &BIG,
                )));
                (models.len() - 1, &mut fresh)
            }
        };
        phases.time("new tree", || switch_to(&models, &mut current, v));
        let delay = clock.delay(&mut rng);
        let ctx = format!("iteration {i} ({kind}, kill after {delay:?})");
        let child = env.spawn(&["put", &key, work_s]);
        let end = phases.time("put", || kill_after(child, delay, &ctx));
        clock.update(&end);

        roots = env.key_roots().into_iter().collect();
        let landed = if roots.get(&key) != prev_root.as_ref() {
            // Bound anew: the content check below compares it with the new version.
            bound.insert(key.clone(), v);
            if end == End::Finished {
                "after put finished"
            } else {
                "after the key was bound"
            }
        } else {
            assert_eq!(
                end,
                End::Killed,
                "{ctx}: put succeeded but {key} is not bound"
            );
            "before the key was bound"
        };
        *stats.entry((kind, landed)).or_default() += 1;

        phases.time("verify", || env.assert_verify_clean(&ctx));
        let want = bound
            .iter()
            .map(|(k, &v)| (k.clone(), models[v].as_ref().unwrap()))
            .collect();
        let listed: Vec<String> = roots.keys().cloned().collect();
        phases.time("get", || check_keys_model(&env, &listed, &want, &ctx));

        for (n, m) in models.iter_mut().enumerate() {
            if n != current && Some(n) != spare && !bound.values().any(|&b| b == n) {
                *m = None;
            }
        }
    }
    let (mut before, mut after, mut finished) = (0, 0, 0);
    for ((kind, landed), n) in &stats {
        eprintln!("kill during put: {kind}: {n} {landed}");
        match *landed {
            "before the key was bound" => before += n,
            "after the key was bound" => after += n,
            _ => finished += n,
        }
    }
    eprintln!(
        "kill during put: {before} killed before the key was bound, {after} killed after it \
         was bound, {finished} finished before the kill; estimates at the end: {:?} (fresh), \
         {:?} (stored); {phases}",
        fresh.estimate, stored.estimate
    );
    assert!(
        before > 0,
        "no kill landed before the bind: the test tested nothing"
    );

    env.ok(&["gc"]);
    assert_no_garbage(&env, "after the last gc");
    env.assert_verify_clean("at the end");
    let want = bound
        .iter()
        .map(|(k, &v)| (k.clone(), models[v].as_ref().unwrap()))
        .collect();
    let listed: Vec<String> = env.key_roots().into_iter().map(|(k, _)| k).collect();
    check_keys_model(&env, &listed, &want, "at the end");
}

/// Test 5: SIGKILL during `gc`, 50 times. Each round binds `g/I` to a new version of a tree
/// that shares most blobs with the previous version and with the key `kept`, and removes
/// `g/I-1` (garbage), then kills a gc at a random point. The store must verify clean and the
/// bound keys restore exactly; a final gc, not killed, leaves no garbage. Prints where the
/// kills landed.
#[test]
fn kill_9_during_gc_never_loses_a_reachable_object() {
    const ITERATIONS: usize = 50;
    let env = Env::new();
    let mut rng = Rng::new(test_seed("kill_during_gc"));
    let mut phases = Phases::default();
    let mut models: BTreeMap<String, TreeModel> = BTreeMap::new();
    let kept = env.path("src/kept");
    let m = tree_model("kept", 100, &[300_000, 100_000]);
    write_model(&kept, &m);
    env.ok(&["put", "kept", kept.to_str().unwrap()]);
    models.insert("kept".to_string(), m);
    let work = env.path("src/garbage");
    let work_s = work.to_str().unwrap();
    let mut on_disk = tree_model("garbage0", 300, &[200_000]);
    write_model(&work, &on_disk);
    let mut garbage = |i: usize, models: &mut BTreeMap<String, TreeModel>| {
        let m = tree_model(&format!("garbage{i}"), 300, &[200_000]);
        rewrite_model(&work, &on_disk, &m);
        on_disk = m.clone();
        let key = format!("g/{i}");
        env.ok(&["put", &key, work_s]);
        models.insert(key, m);
        if i > 0 {
            let old = format!("g/{}", i - 1);
            env.ok(&["rm", &old]);
            models.remove(&old);
        }
    };
    // First estimate: a gc with as much garbage as each round makes.
    garbage(0, &mut models);
    garbage(1, &mut models);
    let mut clock = KillClock {
        estimate: timed(&env, &["gc"]),
    };

    let mut stats: BTreeMap<&str, u32> = BTreeMap::new();
    for i in 2..ITERATIONS + 2 {
        phases.time("garbage", || garbage(i, &mut models));
        let delay = clock.delay(&mut rng);
        let ctx = format!("iteration {i} (kill after {delay:?})");
        let child = env.spawn(&["gc"]);
        let end = phases.time("gc", || kill_after(child, delay, &ctx));
        clock.update(&end);
        // What is left tells where the kill landed.
        let v: serde_json::Value = phases.time("gc --dry-run", || {
            serde_json::from_str(&env.ok(&["--json", "gc", "--dry-run"])).unwrap()
        });
        let n = |f: &str| v[f].as_u64().unwrap();
        let landed = match (end, n("trees") + n("blobs"), n("orphan_files")) {
            (End::Finished, ..) => "gc finished before the kill",
            (End::Killed, 0, 0) => "killed after gc deleted everything",
            (End::Killed, 0, _) => "killed after the index commit, while deleting files",
            (End::Killed, ..) => "killed before the index commit",
        };
        *stats.entry(landed).or_default() += 1;
        phases.time("verify", || env.assert_verify_clean(&ctx));
        let listed: Vec<String> = env.key_roots().into_iter().map(|(k, _)| k).collect();
        let want = models.iter().map(|(k, m)| (k.clone(), m)).collect();
        phases.time("get", || check_keys_model(&env, &listed, &want, &ctx));
    }
    for (landed, n) in &stats {
        eprintln!("kill during gc: {n} {landed}");
    }
    eprintln!(
        "kill during gc: estimate at the end {:?}; {phases}",
        clock.estimate
    );
    // A kill before the commit may have landed before gc did anything at all; one after the
    // commit, with the process still running, landed mid-way for certain.
    let mid_way = stats
        .iter()
        .filter(|(landed, _)| landed.starts_with("killed after"))
        .map(|(_, n)| n)
        .sum::<u32>();
    assert!(
        mid_way > 0,
        "no kill landed between gc's index commit and its end: the test tested nothing"
    );
    let last = format!("g/{}", ITERATIONS + 1);
    env.ok(&["rm", &last]);
    models.remove(&last);
    env.ok(&["gc"]);
    assert_no_garbage(&env, "after a gc that was not killed");
    env.assert_verify_clean("at the end");
    let listed: Vec<String> = env.key_roots().into_iter().map(|(k, _)| k).collect();
    let want = models.iter().map(|(k, m)| (k.clone(), m)).collect();
    check_keys_model(&env, &listed, &want, "at the end");
}

/// Names and sizes of everything under the store's blobs/ and tmp/ folders.
fn store_files(env: &Env) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    for top in ["blobs", "tmp"] {
        let mut stack = vec![env.store().join(top)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let md = e.metadata().unwrap();
                if md.is_dir() {
                    stack.push(e.path());
                } else {
                    out.insert(e.path(), md.len());
                }
            }
        }
    }
    out
}

/// Test 6: SIGKILL during `get`, 30 times: `get` writes only to its destination, so the store's
/// files are unchanged and verify clean; and `get --force` over the half-written destination
/// restores the tree exactly.
#[test]
fn kill_9_during_get_leaves_the_store_untouched() {
    const ITERATIONS: usize = 30;
    let env = Env::new();
    let mut rng = Rng::new(test_seed("kill_during_get"));
    let src = env.path("src");
    gen_tree(&src, "get", 800, &[1_500_000, 500_000]);
    env.ok(&["put", "k", src.to_str().unwrap()]);
    let mut clock = KillClock {
        estimate: timed(&env, &["get", "k", env.path("cal").to_str().unwrap()]),
    };
    let files = store_files(&env);
    let (mut killed, mut finished) = (0, 0);
    for i in 0..ITERATIONS {
        let dest = env.path(&format!("out/{i}"));
        let delay = clock.delay(&mut rng);
        let ctx = format!("iteration {i} (kill after {delay:?})");
        let end = kill_after(
            env.spawn(&["get", "k", dest.to_str().unwrap()]),
            delay,
            &ctx,
        );
        clock.update(&end);
        match end {
            End::Killed => killed += 1,
            End::Finished => {
                finished += 1;
                assert_same_tree(&src, &dest, &ctx);
            }
        }
        assert_eq!(
            store_files(&env),
            files,
            "{ctx}: get changed the store's files"
        );
        env.assert_verify_clean(&ctx);
        if i % 3 == 0 {
            env.ok(&["get", "--force", "k", dest.to_str().unwrap()]);
            assert_same_tree(&src, &dest, &format!("{ctx}: get --force afterwards"));
        }
        if dest.exists() {
            std::fs::remove_dir_all(&dest).unwrap();
        }
    }
    eprintln!(
        "kill during get: {killed} killed, {finished} finished before the kill (estimate at \
         the end {:?})",
        clock.estimate
    );
    assert!(killed > 0, "no kill landed during a get");
}

/// SIGKILL during the very first command on a new store (which creates the index, the blob
/// folders and the lock files), 30 times, alternating `ls` (which does little else) and `put`:
/// afterwards `put` works, the store verifies clean and the key restores its source.
#[test]
fn kill_9_while_creating_a_store_leaves_it_usable() {
    const ITERATIONS: usize = 30;
    let mut rng = Rng::new(test_seed("kill_during_create"));
    let cal = Env::new();
    let src = cal.path("src");
    sample_tree(&src);
    let src_s = src.to_str().unwrap();
    let mut ls_clock = KillClock {
        estimate: timed(&Env::new(), &["ls"]),
    };
    let mut put_clock = KillClock {
        estimate: timed(&cal, &["put", "k", src_s]),
    };
    let (mut killed, mut finished, mut mid_way) = (0, 0, 0);
    let mut broken = Vec::new();
    for i in 0..ITERATIONS {
        let env = Env::new();
        let (args, clock) = if i % 2 == 0 {
            (vec!["ls"], &mut ls_clock)
        } else {
            (vec!["put", "k", src_s], &mut put_clock)
        };
        let delay = clock.delay(&mut rng);
        let ctx = format!("iteration {i} (`{}` killed after {delay:?})", args[0]);
        let end = kill_after(env.spawn(&args), delay, &ctx);
        clock.update(&end);
        match end {
            End::Killed => killed += 1,
            End::Finished => finished += 1,
        }
        // The lock files are made last: a store folder without them is a creation that the
        // kill interrupted.
        if env.store().exists() && !env.store().join("locks/gc").exists() {
            mid_way += 1;
        }
        let out = env.run(&["put", "k", src_s]);
        if !out.status.success() {
            broken.push(format!(
                "{ctx}: put afterwards: {}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
            continue;
        }
        env.assert_verify_clean(&ctx);
        let sources = BTreeMap::from([("k".to_string(), src.clone())]);
        check_keys(&env, &sources, &ctx);
    }
    eprintln!(
        "kill during store creation: {killed} killed ({mid_way} while the store was being \
         created), {finished} finished before the kill; {} stores left unusable",
        broken.len()
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert!(
        mid_way > 0,
        "no kill landed while a store was being created: the test tested nothing"
    );
}

/// What a SIGKILL during the index's creation leaves (found by the test above): redb sizes
/// the new file and writes its header first, and the magic number only after an fsync, so a
/// kill in between leaves a non-empty `index.redb` without the magic number, and no lock files
/// (they are created after the index). Nothing was ever committed to such a store, so it must
/// still work.
#[test]
fn a_store_whose_creation_was_killed_before_the_index_was_complete_still_works() {
    let env = Env::new();
    let src = env.path("src");
    sample_tree(&src);
    std::fs::create_dir_all(env.store()).unwrap();
    std::fs::write(env.store().join("index.redb"), vec![0u8; 4096]).unwrap();
    let out = env.run(&["put", "k", src.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "put into the store: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_verify_clean("after the put");
    let sources = BTreeMap::from([("k".to_string(), src.clone())]);
    check_keys(&env, &sources, "get");
}

/// SIGKILL during `pull` from a `file://` remote, 50 times, into a store that alternately
/// already has part of the tree (a shared blob) and nothing: the store verifies clean after
/// every kill, the key is either unbound or bound to the complete tree, and a final pull works.
#[test]
fn kill_9_during_pull_never_binds_an_incomplete_tree() {
    const ITERATIONS: usize = 50;
    let src_env = Env::new();
    let mut rng = Rng::new(test_seed("kill_during_pull"));
    let src = src_env.path("src");
    gen_tree(&src, "pull", 1500, &[2_000_000, 9_500_000]);
    src_env.ok(&["put", "k", src.to_str().unwrap()]);
    let remote = format!("file://{}", src_env.path("remote").display());
    src_env.ok(&["push", &remote, "k"]);

    let env = Env::new();
    let mut clock = KillClock {
        estimate: timed(&env, &["pull", &remote, "k"]),
    };
    env.ok(&["rm", "k"]);
    env.ok(&["gc"]);
    let (mut killed, mut finished, mut bound_after_kill) = (0, 0, 0);
    for i in 0..ITERATIONS {
        let delay = clock.delay(&mut rng);
        let ctx = format!("pull iteration {i} (kill after {delay:?})");
        let end = kill_after(env.spawn(&["pull", &remote, "k"]), delay, &ctx);
        clock.update(&end);
        env.assert_verify_clean(&ctx);
        let bound = env.run(&["show", "k"]).status.success();
        match end {
            End::Killed => {
                killed += 1;
                bound_after_kill += usize::from(bound);
            }
            End::Finished => {
                finished += 1;
                assert!(bound, "{ctx}: a finished pull left the key unbound");
            }
        }
        if bound {
            let dest = env.path(&format!("out/{i}"));
            env.ok(&["get", "k", dest.to_str().unwrap()]);
            assert_same_tree(&src, &dest, &ctx);
            std::fs::remove_dir_all(&dest).unwrap();
            env.ok(&["rm", "k"]);
        }
        // Half the time start from nothing; otherwise keep what the killed pull left behind.
        if i % 2 == 0 {
            env.ok(&["gc"]);
        }
    }
    env.ok(&["pull", &remote, "k"]);
    let dest = env.path("final");
    env.ok(&["get", "k", dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest, "final pull");
    env.assert_verify_clean("after the final pull");
    eprintln!(
        "kill during pull: {killed} killed ({bound_after_kill} after the key was bound), \
         {finished} finished before the kill"
    );
    assert!(killed > 0, "no kill landed during a pull");
}
