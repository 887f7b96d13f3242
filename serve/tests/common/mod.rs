//! Shared by the integration tests: an in-process server over a temp store, and request helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cairn_serve::{Limits, ServeConfig, StoreBackend, StoreBackendOptions};
use cairn_store::{NoProgress, Store, StoreOptions};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use sha2::Digest as _;

pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// A server on a free loopback port over a store in a temp folder.
pub struct Server {
    pub base: String,
    pub store_dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(
        store_dir: &std::path::Path,
        read_only: bool,
        tokens: Option<&str>,
    ) -> Server {
        let limits = Limits {
            max_upload_bytes: 64 << 20,
            body_idle_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        Server::start_with(store_dir, read_only, tokens, limits).await
    }

    pub async fn start_with(
        store_dir: &std::path::Path,
        read_only: bool,
        tokens: Option<&str>,
        limits: Limits,
    ) -> Server {
        let store = Store::open(store_dir, StoreOptions::default()).unwrap();
        let tokens_path = tokens.map(|t| {
            let p = store_dir.with_extension("tokens.toml");
            std::fs::write(&p, t).unwrap();
            p
        });
        let cfg = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            read_only,
            tls: None,
            tokens: tokens_path,
            limits,
        };
        let opts = StoreBackendOptions {
            pin_grace: Some(cfg.limits.pin_grace),
            ..StoreBackendOptions::default()
        };
        let backend = tokio::task::spawn_blocking({
            let h = tokio::runtime::Handle::current();
            move || StoreBackend::new(store, opts, h).unwrap()
        })
        .await
        .unwrap();
        let app = cairn_serve::app(&cfg, Arc::new(backend)).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (atx, arx) = std::sync::mpsc::channel();
        let task = tokio::spawn(async move {
            cairn_serve::server::serve(
                &cfg,
                app,
                async {
                    let _ = rx.await;
                },
                move |a| atx.send(a).unwrap(),
            )
            .await
            .unwrap();
        });
        let addr = tokio::task::spawn_blocking(move || arx.recv().unwrap())
            .await
            .unwrap();
        Server {
            base: format!("http://{addr}"),
            store_dir: store_dir.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn verify_clean(&self) {
        let store = Store::open(&self.store_dir, StoreOptions::default()).unwrap();
        let report = store.read().unwrap().verify(&[], &NoProgress).unwrap();
        assert!(report.is_clean(), "verify: {report:?}");
    }
}

pub async fn send(
    c: &Client,
    m: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> reqwest::Response {
    let mut r = c.request(m, url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.body(b);
    }
    r.send().await.unwrap()
}

pub async fn code_of(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        v["errors"][0]["code"].as_str().unwrap_or("").to_string(),
    )
}

pub fn h<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// The names of the store's live pins, in order.
pub fn pins(store_dir: &std::path::Path) -> Vec<String> {
    let store = Store::open(store_dir, StoreOptions::default()).unwrap();
    store
        .read()
        .unwrap()
        .pins("")
        .unwrap()
        .into_iter()
        .map(|p| p.name.to_string())
        .collect()
}

/// The keys of the store, in order.
pub fn keys(store_dir: &std::path::Path) -> Vec<String> {
    let store = Store::open(store_dir, StoreOptions::default()).unwrap();
    store
        .keys("")
        .unwrap()
        .into_iter()
        .map(|r| r.key.to_string())
        .collect()
}
