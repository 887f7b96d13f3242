//! The ledger (the local record of what a remote holds) while another process holds it: a push
//! waits no longer than the store's lock timeout, and never blocks the async runtime it runs on
//! while it waits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_remote::{Remote, RemoteConfig, RemoteError, TransferOptions, push};
use cairn_store::{Id, IngestOptions, Input, Key, NoProgress, Store, StoreOptions};

/// The ledger file of `url` in the store at `store` (docs/format.md, "the ledger").
fn ledger_path(store: &Path, url: &str) -> PathBuf {
    let h = Id::of(url.trim_end_matches('/').as_bytes()).to_hex();
    store.join("remotes").join(format!("{}.redb", &h[..32]))
}

/// A store holding key `k` and a `file://` remote for it; the store waits `timeout` for locks.
fn setup(t: &Path, timeout: Duration) -> (Store, Remote, PathBuf) {
    let store = Store::open(
        &t.join("store"),
        StoreOptions {
            lock_timeout: timeout,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.txt"), b"content").unwrap();
    store
        .put(
            &Key::new("k").unwrap(),
            Input::Path(&src),
            &IngestOptions::default(),
            Default::default(),
            &NoProgress,
        )
        .unwrap();
    let url = format!("file://{}", t.join("remote").display());
    let remote = Remote::open(
        "r",
        &RemoteConfig {
            url: url.clone(),
            ..Default::default()
        },
        &TransferOptions::default(),
    )
    .unwrap();
    let ledger = ledger_path(&t.join("store"), &url);
    std::fs::create_dir_all(ledger.parent().unwrap()).unwrap();
    (store, remote, ledger)
}

#[test]
fn a_held_ledger_times_out_after_the_stores_lock_timeout() {
    let t = tempfile::tempdir().unwrap();
    let (store, remote, ledger) = setup(t.path(), Duration::from_secs(1));
    let held = redb::Database::create(&ledger).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(push(
            &store,
            &remote,
            &[Key::new("k").unwrap()],
            &NoProgress,
        ))
        .unwrap_err();
    drop(held);
    let msg = err.to_string();
    assert!(
        matches!(
            &err,
            RemoteError::Local(cairn_store::Error::LockTimeout { .. })
        ),
        "{msg}"
    );
    assert!(
        msg.contains("the remote ledger") && msg.contains("timed out after 1."),
        "{msg}"
    );
}

#[test]
fn waiting_for_the_ledger_leaves_the_runtime_free() {
    let t = tempfile::tempdir().unwrap();
    let (store, remote, ledger) = setup(t.path(), Duration::from_secs(60));
    let held = redb::Database::create(&ledger).unwrap();
    let start = Instant::now();
    // When a task on the runtime last ran, in milliseconds since `start`.
    let last_tick = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (tick, stop) = (last_tick.clone(), done.clone());
    // One runtime thread: if the push waited for the ledger on it, nothing else could run.
    let pusher = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ticker = tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tick.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            let r = push(&store, &remote, &[Key::new("k").unwrap()], &NoProgress).await;
            done.store(true, Ordering::SeqCst);
            ticker.await.unwrap();
            r
        })
    });
    // By now the push has long been waiting for the held ledger.
    std::thread::sleep(Duration::from_secs(5));
    let now = start.elapsed().as_millis() as u64;
    let stale = now - last_tick.load(Ordering::SeqCst);
    drop(held);
    let pushed = pusher.join().unwrap();
    assert!(
        stale < 2000,
        "no task ran on the runtime for {stale} ms while the push waited for the ledger"
    );
    pushed.unwrap();
}

/// A ledger written before spans existed (locations only, in its old `objects` table) still
/// lets a push reuse what it places, and the record gets complete spans: push reads the index of
/// each such pack (instead of a HEAD) to learn where its objects are.
#[test]
fn a_ledger_from_before_spans_still_gives_complete_spans() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const PLACES: TableDefinition<&[u8; 32], &[u8; 49]> = TableDefinition::new("places");
    const OLD: TableDefinition<&[u8; 32], &[u8; 33]> = TableDefinition::new("objects");
    let t = tempfile::tempdir().unwrap();
    let (store, remote, ledger) = setup(t.path(), Duration::from_secs(5));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(push(
        &store,
        &remote,
        &[Key::new("k").unwrap()],
        &NoProgress,
    ))
    .unwrap();

    // Turn the ledger into one from before spans: every row moved to the old table, with the
    // old encoding (tag byte, then the pack or blob id).
    {
        let db = redb::Database::open(&ledger).unwrap();
        let rows: Vec<([u8; 32], [u8; 33])> = {
            let r = db.begin_read().unwrap();
            let t = r.open_table(PLACES).unwrap();
            t.iter()
                .unwrap()
                .map(|row| {
                    let (k, v) = row.unwrap();
                    let v = v.value();
                    let mut old = [0u8; 33];
                    old[0] = if v[0] == 2 { 2 } else { 1 };
                    old[1..].copy_from_slice(&v[1..33]);
                    (*k.value(), old)
                })
                .collect()
        };
        assert!(!rows.is_empty());
        let w = db.begin_write().unwrap();
        {
            let mut old = w.open_table(OLD).unwrap();
            for (k, v) in &rows {
                old.insert(k, v).unwrap();
            }
        }
        w.delete_table(PLACES).unwrap();
        w.commit().unwrap();
    }

    // A second key reusing the first one's file, plus a file of its own.
    let src = t.path().join("src2");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.txt"), b"content").unwrap();
    std::fs::write(src.join("g.txt"), b"more content").unwrap();
    let k2 = Key::new("k2").unwrap();
    store
        .put(
            &k2,
            Input::Path(&src),
            &IngestOptions::default(),
            Default::default(),
            &NoProgress,
        )
        .unwrap();
    let s = rt
        .block_on(push(
            &store,
            &remote,
            std::slice::from_ref(&k2),
            &NoProgress,
        ))
        .unwrap();
    assert!(
        s.objects_skipped >= 1,
        "the shared file was not reused: {s:?}"
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("remote/keys/k2.key")).unwrap())
            .unwrap();
    let packs = rec["packs"].as_array().unwrap();
    assert!(packs.len() >= 2, "k2 names the old pack and its own: {rec}");
    for p in packs {
        assert!(
            rec["spans"][p.as_str().unwrap()].is_array(),
            "no spans for {p}: {rec}"
        );
    }
    // The spans cover everything k2 reaches (verify --remote checks exactly that).
    let audit = rt
        .block_on(cairn_remote::audit(
            &remote,
            &[k2],
            &cairn_remote::TrustPolicy::default(),
        ))
        .unwrap();
    assert!(audit.clean, "{audit:?}");
}
