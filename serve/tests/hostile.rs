//! Hostile clients against the real server: path tricks in names, digest and size mismatches,
//! a manifest naming blobs of a repository the token may not read, a slowloris client, 200
//! concurrent uploads and a writer without a token. After each, the store verifies clean and
//! nothing is bound that should not be.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Server, code_of, digest, h, keys, pins, send};
use reqwest::{Client, Method, StatusCode};
use serde_json::json;

const TOKENS: &str = r#"
[[token]]
name = "mine"
secret = "mine-secret-0123456789"
scopes = ["mine/**:read,write"]

[[token]]
name = "admin"
secret = "admin-secret-0123456789"
scopes = ["**:read,write,delete"]
"#;

fn client(secret: &str) -> Client {
    let mut hm = reqwest::header::HeaderMap::new();
    hm.insert("authorization", format!("Bearer {secret}").parse().unwrap());
    Client::builder().default_headers(hm).build().unwrap()
}

/// Sends raw bytes on a fresh connection and returns the status line of the answer.
fn raw(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn image(config: &[u8], layer: &[u8], layer_size: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(layer), "size": layer_size}],
    }))
    .unwrap()
}

async fn push(c: &Client, s: &Server, repo: &str, blob: &[u8]) -> StatusCode {
    send(
        c,
        Method::POST,
        &s.url(&format!(
            "/v2/{repo}/blobs/uploads/?digest={}",
            digest(blob)
        )),
        &[],
        Some(blob.to_vec()),
    )
    .await
    .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = Server::start(&store, false, Some(TOKENS)).await;
    let admin = client("admin-secret-0123456789");
    let mine = client("mine-secret-0123456789");
    let addr = s.base.trim_start_matches("http://").to_string();

    // A secret image in a repository "mine" may not read.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let secret_layer = b"secret layer bytes".to_vec();
    assert_eq!(
        push(&admin, &s, "secret", config).await,
        StatusCode::CREATED
    );
    assert_eq!(
        push(&admin, &s, "secret", &secret_layer).await,
        StatusCode::CREATED
    );
    let m = image(config, &secret_layer, secret_layer.len());
    let r = send(
        &admin,
        Method::PUT,
        &s.url("/v2/secret/manifests/1"),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        Some(m.clone()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let before = keys(&store);
    let pins_before = pins(&store);

    // 1. Names with `..`, `%2e%2e`, absolute paths, and a path outside /v2.
    for path in [
        "/v2/../../etc/passwd/manifests/x",
        "/v2/%2e%2e/%2e%2e/etc/manifests/x",
        "/v2//etc/blobs/uploads/",
        "/v2/mine/../secret/manifests/1",
        "/v2/mine/%2e%2e/secret/manifests/1",
        "/../../etc/passwd",
    ] {
        for method in ["GET", "POST", "PUT"] {
            let line = raw(
                &addr,
                &format!(
                    "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer mine-secret-0123456789\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                ),
            );
            assert!(
                line.contains(" 400 ") || line.contains(" 404 "),
                "{method} {path}: {line}"
            );
        }
    }

    // 2. Digest and size mismatches.
    let r = send(
        &mine,
        Method::POST,
        &s.url(&format!(
            "/v2/mine/app/blobs/uploads/?digest={}",
            digest(b"claimed")
        )),
        &[],
        Some(b"actual".to_vec()),
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let layer = b"my layer".to_vec();
    assert_eq!(
        push(&mine, &s, "mine/app", config).await,
        StatusCode::CREATED
    );
    assert_eq!(
        push(&mine, &s, "mine/app", &layer).await,
        StatusCode::CREATED
    );
    let wrong_size = image(config, &layer, layer.len() + 1);
    let r = send(
        &mine,
        Method::PUT,
        &s.url("/v2/mine/app/manifests/1"),
        &[],
        Some(wrong_size),
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into())
    );
    let r = send(
        &mine,
        Method::PUT,
        &s.url(&format!("/v2/mine/app/manifests/{}", digest(b"other"))),
        &[],
        Some(image(config, &layer, layer.len())),
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );

    // 3. A manifest naming the secret repository's layer: the layer is not in mine/app, and a
    // mount from a repository the token may not read is a plain upload, not a link.
    let r = send(
        &mine,
        Method::PUT,
        &s.url("/v2/mine/app/manifests/stolen"),
        &[],
        Some(m.clone()),
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let r = send(
        &mine,
        Method::POST,
        &s.url(&format!(
            "/v2/mine/app/blobs/uploads/?mount={}&from=secret",
            digest(&secret_layer)
        )),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = send(
        &mine,
        Method::GET,
        &s.url(&format!("/v2/mine/app/blobs/{}", digest(&secret_layer))),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send(
        &mine,
        Method::GET,
        &s.url(&format!("/v2/secret/blobs/{}", digest(&secret_layer))),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(
        &mine,
        Method::PUT,
        &s.url("/v2/mine/app/manifests/stolen"),
        &[],
        Some(m.clone()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // 4. A writer without a token, and one with a wrong token.
    let anon = Client::new();
    assert_eq!(
        push(&anon, &s, "mine/app", b"anon").await,
        StatusCode::UNAUTHORIZED
    );
    let wrong = client("not-a-token-0123456789");
    assert_eq!(
        push(&wrong, &s, "mine/app", b"anon").await,
        StatusCode::UNAUTHORIZED
    );

    // 5. Oversize manifest and a huge header.
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = send(
        &mine,
        Method::PUT,
        &s.url("/v2/mine/app/manifests/huge"),
        &[],
        Some(huge),
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into())
    );
    let line = raw(
        &addr,
        &format!(
            "GET /v2/ HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(1024 * 1024)
        ),
    );
    assert!(line.contains(" 431 ") || line.is_empty(), "{line}");

    // Nothing was bound; only the blobs pushed to mine/app are pinned.
    let after: Vec<String> = keys(&store)
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    assert!(after.is_empty(), "{after:?}");
    let pinned: Vec<String> = pins(&store)
        .into_iter()
        .filter(|p| !pins_before.contains(p))
        .collect();
    assert!(
        pinned
            .iter()
            .all(|k| k.starts_with("_cairn-serve/pin/mine/app/")),
        "{pinned:?}"
    );
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    s.verify_clean();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_cannot_hold_the_server_and_200_uploads_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = Server::start(&store, false, Some(TOKENS)).await;
    let addr = s.base.trim_start_matches("http://").to_string();

    // Slowloris: many connections trickling a request head; the server answers others
    // meanwhile and cuts the slow ones off (head timeout 10 s).
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(&addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let start = Instant::now();
                let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\n");
                for _ in 0..25 {
                    if c.write_all(b"x-a: b\r\n").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                let mut buf = [0u8; 64];
                let _ = c.read(&mut buf);
                start.elapsed()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let r = reqwest::get(s.url("/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "health took {:?}",
        t.elapsed()
    );
    for h in slow {
        let held = tokio::task::spawn_blocking(move || h.join().unwrap())
            .await
            .unwrap();
        assert!(
            held < Duration::from_secs(20),
            "a slow client held on for {held:?}"
        );
    }

    // 200 uploads at once, each POST, PATCH, PUT.
    let c = client("mine-secret-0123456789");
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let c = c.clone();
        let base = s.base.clone();
        tasks.push(tokio::spawn(async move {
            let blob = format!("upload number {i} ").repeat(1000).into_bytes();
            let r = c
                .post(format!("{base}/v2/mine/many/blobs/uploads/"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let loc = h(&r, "location").to_string();
            let r = c
                .patch(format!("{base}{loc}"))
                .body(blob.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let r = c
                .put(format!("{base}{loc}?digest={}", digest(&blob)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            digest(&blob)
        }));
    }
    let mut digests = Vec::new();
    for t in tasks {
        digests.push(t.await.unwrap());
    }
    for d in digests.iter().step_by(37) {
        let r = send(
            &c,
            Method::HEAD,
            &s.url(&format!("/v2/mine/many/blobs/{d}")),
            &[],
            None,
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Each pushed blob is pinned (a store pin, not a key).
    assert_eq!(pins(&store).len(), 200);
    s.verify_clean();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_caps_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let limits = cairn_serve::Limits {
        max_uploads: 2,
        max_upload_bytes: 1000,
        upload_expiry: Duration::from_secs(1),
        pin_grace: Duration::from_secs(2),
        ..cairn_serve::Limits::default()
    };
    let s = Server::start_with(&store, false, Some(TOKENS), limits).await;
    let c = client("mine-secret-0123456789");
    let start_url = s.url("/v2/mine/x/blobs/uploads/");
    let post = || send(&c, Method::POST, &start_url, &[], None);
    let a = post().await;
    assert_eq!(a.status(), StatusCode::ACCEPTED);
    assert_eq!(post().await.status(), StatusCode::ACCEPTED);
    assert_eq!(
        code_of(post().await).await,
        (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS".into())
    );
    // Over the size cap: 413, the upload dropped.
    let loc = h(&a, "location").to_string();
    let r = send(&c, Method::PATCH, &s.url(&loc), &[], Some(vec![0u8; 1001])).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        send(&c, Method::GET, &s.url(&loc), &[], None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Abandoned uploads expire (swept every second here), freeing their slots.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(post().await.status(), StatusCode::ACCEPTED);
    // A pushed blob is pinned (a store pin, not a key), then its pin expires after the grace
    // period, and gc then collects the blob and deletes the expired pin.
    assert_eq!(push(&c, &s, "mine/x", b"pinned").await, StatusCode::CREATED);
    assert!(keys(&store).is_empty(), "{:?}", keys(&store));
    assert_eq!(
        pins(&store),
        vec![format!("_cairn-serve/pin/mine/x/{}", digest(b"pinned"))]
    );
    let opened = cairn_store::Store::open(&store, cairn_store::StoreOptions::default()).unwrap();
    let blob = cairn_store::Id::of(b"pinned");
    let present = |s: &cairn_store::Store| s.read().unwrap().has_blobs(&[blob]).unwrap().len();
    opened.gc(&cairn_store::GcOptions::default()).unwrap();
    assert_eq!(present(&opened), 1, "gc collected a pinned blob");
    assert_eq!(pins(&store).len(), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(pins(&store).is_empty(), "{:?}", pins(&store));
    let collected = opened.gc(&cairn_store::GcOptions::default()).unwrap();
    assert_eq!(collected.pins_expired, 1, "{collected:?}");
    assert_eq!(present(&opened), 0, "gc kept a blob whose pin expired");
    s.verify_clean();
    s.stop().await;
}
