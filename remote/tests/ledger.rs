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
