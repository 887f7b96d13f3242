//! A Rust port of the OCI distribution-spec conformance matrix (its named cases: ping,
//! get-missing, every upload style including chunked out of order, mount and mount-missing,
//! cancel, bad digests, empty blobs, ranges, manifests by digest and tag with GET and HEAD,
//! invalid digests, tag pagination, referrers, deletes), run against the real server over
//! loopback HTTP, in read-write and read-only modes, with the store checked by `verify` after.

mod common;

use common::{Server, code_of, digest, h, send};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Monolithic push of `blob` to `repo`.
async fn push_blob(c: &Client, s: &Server, repo: &str, blob: &[u8]) -> String {
    let d = digest(blob);
    let r = send(
        c,
        Method::POST,
        &s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")),
        &[("content-type", "application/octet-stream")],
        Some(blob.to_vec()),
    )
    .await;
    let status = r.status();
    let dh = h(&r, "docker-content-digest").to_string();
    let text = r.text().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{repo} {d}: {text}");
    assert_eq!(dh, d);
    d
}

/// An image manifest (OCI) of one config and the layers.
fn image(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": LAYER, "digest": digest(l), "size": l.len()})).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).unwrap()
}

async fn put_manifest(
    c: &Client,
    s: &Server,
    repo: &str,
    reference: &str,
    m: &[u8],
    ct: &str,
) -> reqwest::Response {
    send(
        c,
        Method::PUT,
        &s.url(&format!("/v2/{repo}/manifests/{reference}")),
        &[("content-type", ct)],
        Some(m.to_vec()),
    )
    .await
}

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

/// Pushes the standard test image to `repo:tag`; returns (manifest bytes, layer).
async fn seed(c: &Client, s: &Server, repo: &str, tag: &str) -> (Vec<u8>, Vec<u8>) {
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    push_blob(c, s, repo, CONFIG).await;
    push_blob(c, s, repo, &layer).await;
    let m = image(CONFIG, &[&layer]);
    let r = put_manifest(c, s, repo, tag, &m, OCI_MANIFEST).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(h(&r, "docker-content-digest"), digest(&m));
    (m, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_read_write() {
    let dir = tempfile::tempdir().unwrap();
    // Without a tokens file the server is read-only for everyone: the writer gets a token.
    let tokens = "[[token]]\nname = \"w\"\nsecret = \"conformance-0123456789\"\nscopes = [\"**:read,write,delete\"]\n";
    let s = Server::start(&dir.path().join("store"), false, Some(tokens)).await;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        "authorization",
        "Bearer conformance-0123456789".parse().unwrap(),
    );
    let c = Client::builder().default_headers(auth).build().unwrap();

    // ping
    let r = send(&c, Method::GET, &s.url("/v2/"), &[], None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h(&r, "docker-distribution-api-version"), "registry/2.0");

    // get-missing
    let missing = digest(b"nothing");
    let r = send(&c, Method::GET, &s.url("/v2/a/manifests/nope"), &[], None).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!("/v2/a/blobs/{missing}")),
        &[],
        None,
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into())
    );
    let r = send(
        &c,
        Method::HEAD,
        &s.url(&format!("/v2/a/blobs/{missing}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send(&c, Method::GET, &s.url("/v2/a/tags/list"), &[], None).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into())
    );

    // push: monolithic, then the manifest by tag
    let (m, layer) = seed(&c, &s, "a/app", "v1").await;
    let md = digest(&m);

    // manifests by tag and digest, GET and HEAD
    for reference in ["v1", md.as_str()] {
        let url = s.url(&format!("/v2/a/app/manifests/{reference}"));
        let r = send(&c, Method::HEAD, &url, &[("accept", OCI_MANIFEST)], None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(h(&r, "content-length"), m.len().to_string());
        assert_eq!(h(&r, "docker-content-digest"), md);
        assert_eq!(h(&r, "content-type"), OCI_MANIFEST);
        let r = send(&c, Method::GET, &url, &[("accept", OCI_MANIFEST)], None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(h(&r, "etag"), format!("\"{md}\""));
        assert_eq!(r.bytes().await.unwrap().to_vec(), m);
    }
    // Accept: a comma list and repeated headers; a list without the type → 404.
    let url = s.url("/v2/a/app/manifests/v1");
    let r = send(
        &c,
        Method::GET,
        &url,
        &[(
            "accept",
            &format!("{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.9"),
        )],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(
        &c,
        Method::GET,
        &url,
        &[("accept", DOCKER_MANIFEST), ("accept", OCI_MANIFEST)],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(&c, Method::GET, &url, &[("accept", DOCKER_MANIFEST)], None).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    let r = send(
        &c,
        Method::GET,
        &url,
        &[("if-none-match", &format!("\"{md}\""))],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // Manifests are blobs too.
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!("/v2/a/app/blobs/{md}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), m);

    // blobs and ranges
    let ld = digest(&layer);
    let burl = s.url(&format!("/v2/a/app/blobs/{ld}"));
    let r = send(&c, Method::HEAD, &burl, &[], None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h(&r, "content-length"), layer.len().to_string());
    assert_eq!(h(&r, "docker-content-digest"), ld);
    let r = send(&c, Method::GET, &burl, &[], None).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer);
    let n = layer.len();
    for (range, lo, hi) in [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, n - 1),
        ("bytes=-10", n - 10, n - 1),
        (&format!("bytes=5-{}", n + 50)[..], 5, n - 1),
    ] {
        let r = send(&c, Method::GET, &burl, &[("range", range)], None).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(h(&r, "content-range"), format!("bytes {lo}-{hi}/{n}"));
        assert_eq!(r.bytes().await.unwrap().to_vec(), layer[lo..=hi].to_vec());
    }
    let r = send(
        &c,
        Method::GET,
        &burl,
        &[("range", &format!("bytes={n}-"))],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h(&r, "content-range"), format!("bytes */{n}"));

    // invalid digests
    let r = send(
        &c,
        Method::GET,
        &s.url("/v2/a/app/blobs/sha256:xyz"),
        &[],
        None,
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let r = send(
        &c,
        Method::GET,
        &s.url("/v2/a/app/manifests/sha256:12"),
        &[],
        None,
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );

    // POST then PUT with the body
    let blob2 = b"post then put".to_vec();
    let r = send(
        &c,
        Method::POST,
        &s.url("/v2/a/app/blobs/uploads/"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = h(&r, "location").to_string();
    assert!(loc.starts_with("/v2/a/app/blobs/uploads/"));
    assert_eq!(h(&r, "range"), "0-0");
    let r = send(
        &c,
        Method::PUT,
        &s.url(&format!("{loc}?digest={}", digest(&blob2))),
        &[],
        Some(blob2.clone()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // POST then a streamed PATCH without Content-Length (as docker does), then PUT
    let blob3: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let r = send(
        &c,
        Method::POST,
        &s.url("/v2/a/app/blobs/uploads/"),
        &[],
        None,
    )
    .await;
    let loc = h(&r, "location").to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        blob3.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .patch(s.url(&loc))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(h(&r, "range"), format!("0-{}", blob3.len() - 1));
    let r = send(
        &c,
        Method::PUT,
        &s.url(&format!("{loc}?digest={}", digest(&blob3))),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!("/v2/a/app/blobs/{}", digest(&blob3))),
        &[],
        None,
    )
    .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), blob3);

    // chunked PATCH with Content-Range; an out-of-order chunk is 416; status GET
    let blob4: Vec<u8> = (0..10_000u32).map(|i| (i % 97) as u8).collect();
    let r = send(
        &c,
        Method::POST,
        &s.url("/v2/a/app/blobs/uploads/"),
        &[],
        None,
    )
    .await;
    let loc = h(&r, "location").to_string();
    let patch = |lo: usize, hi: usize| {
        let (c, url, body) = (c.clone(), s.url(&loc), blob4[lo..hi].to_vec());
        async move {
            c.patch(url)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{lo}-{}", hi - 1))
                .header("content-length", (hi - lo).to_string())
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = patch(0, 4000).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(h(&r, "range"), "0-3999");
    let r = patch(6000, 10_000).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = send(&c, Method::GET, &s.url(&loc), &[], None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(h(&r, "range"), "0-3999");
    assert!(patch(4000, 10_000).await.status() == StatusCode::ACCEPTED);
    // A wrong digest fails the upload and drops it.
    let r = send(
        &c,
        Method::PUT,
        &s.url(&format!("{loc}?digest={}", digest(b"other"))),
        &[],
        None,
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let r = send(&c, Method::GET, &s.url(&loc), &[], None).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into())
    );
    let r = send(
        &c,
        Method::HEAD,
        &s.url(&format!("/v2/a/app/blobs/{}", digest(b"other"))),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // monolithic with a bad digest
    let r = send(
        &c,
        Method::POST,
        &s.url(&format!("/v2/a/app/blobs/uploads/?digest={}", digest(b"x"))),
        &[],
        Some(b"y".to_vec()),
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );

    // empty blob
    let ed = push_blob(&c, &s, "a/app", b"").await;
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!("/v2/a/app/blobs/{ed}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h(&r, "content-length"), "0");

    // cancel
    let r = send(
        &c,
        Method::POST,
        &s.url("/v2/a/app/blobs/uploads/"),
        &[],
        None,
    )
    .await;
    let loc = h(&r, "location").to_string();
    let r = send(&c, Method::DELETE, &s.url(&loc), &[], None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = send(&c, Method::GET, &s.url(&loc), &[], None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // mount and mount-missing
    let r = send(
        &c,
        Method::POST,
        &s.url(&format!("/v2/b/blobs/uploads/?mount={ld}&from=a/app")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(h(&r, "location"), format!("/v2/b/blobs/{ld}"));
    let r = send(
        &c,
        Method::HEAD,
        &s.url(&format!("/v2/b/blobs/{ld}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(
        &c,
        Method::POST,
        &s.url(&format!("/v2/b/blobs/uploads/?mount={missing}&from=a/app")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(h(&r, "location").starts_with("/v2/b/blobs/uploads/"));

    // a manifest naming a blob the repository lacks
    let stranger = image(CONFIG, &[b"never pushed"]);
    let r = put_manifest(&c, &s, "a/app", "bad", &stranger, OCI_MANIFEST).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    // b has the layer (mounted) but not the config.
    let r = put_manifest(&c, &s, "b", "x", &m, OCI_MANIFEST).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let r = put_manifest(&c, &s, "a/app", "bad", b"{not json", OCI_MANIFEST).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into())
    );

    // by digest, and a digest that does not match
    let m2 = image(CONFIG, &[&layer, &blob2]);
    let r = put_manifest(&c, &s, "a/app", &digest(&m2), &m2, OCI_MANIFEST).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = put_manifest(&c, &s, "a/app", &digest(b"zz"), &m2, OCI_MANIFEST).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );

    // an index of both manifests, and tag pagination
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": md, "size": m.len(), "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": digest(&m2), "size": m2.len(), "platform": {"os": "linux", "architecture": "arm64"}},
    ]})).unwrap();
    for t in ["t3", "t1", "t2"] {
        assert_eq!(
            put_manifest(&c, &s, "a/app", t, &idx, OCI_INDEX)
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let r = send(&c, Method::GET, &s.url("/v2/a/app/tags/list"), &[], None).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"name": "a/app", "tags": ["t1", "t2", "t3", "v1"]})
    );
    let r = send(
        &c,
        Method::GET,
        &s.url("/v2/a/app/tags/list?n=2"),
        &[],
        None,
    )
    .await;
    assert_eq!(
        h(&r, "link"),
        "</v2/a/app/tags/list?n=2&last=t2>; rel=\"next\""
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["t1", "t2"]));
    let r = send(
        &c,
        Method::GET,
        &s.url("/v2/a/app/tags/list?n=2&last=t2"),
        &[],
        None,
    )
    .await;
    assert_eq!(h(&r, "link"), "");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["t3", "v1"]));

    // referrers: an artifact whose subject is the image
    let empty = b"{}";
    push_blob(&c, &s, "a/app", empty).await;
    let sbom = br#"{"packages":[]}"#;
    push_blob(&c, &s, "a/app", sbom).await;
    let art = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(empty), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.sbom.v1+json", "digest": digest(sbom), "size": sbom.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": md, "size": m.len()},
        "annotations": {"org.example": "yes"}})).unwrap();
    let r = put_manifest(&c, &s, "a/app", &digest(&art), &art, OCI_MANIFEST).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(h(&r, "oci-subject"), md);
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!("/v2/a/app/referrers/{md}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h(&r, "content-type"), OCI_INDEX);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], json!(digest(&art)));
    assert_eq!(
        v["manifests"][0]["artifactType"],
        json!("application/vnd.example.sbom")
    );
    assert_eq!(
        v["manifests"][0]["annotations"]["org.example"],
        json!("yes")
    );
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!(
            "/v2/a/app/referrers/{md}?artifactType=application/vnd.other"
        )),
        &[],
        None,
    )
    .await;
    assert_eq!(h(&r, "oci-filters-applied"), "artifactType");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!("/v2/a/app/referrers/{missing}")),
        &[],
        None,
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));

    // manifests up to 4 MiB are accepted; larger ones are refused
    let mut big: Value = serde_json::from_slice(&m).unwrap();
    big["annotations"] = json!({"pad": ""});
    let overhead = serde_json::to_vec(&big).unwrap().len();
    big["annotations"] = json!({"pad": "x".repeat(4 * 1024 * 1024 - overhead)});
    let big = serde_json::to_vec(&big).unwrap();
    assert_eq!(big.len(), 4 * 1024 * 1024);
    assert!(big.len() <= 4 * 1024 * 1024 && big.len() > 4 * 1024 * 1024 - 1024);
    assert_eq!(
        put_manifest(&c, &s, "a/app", "big", &big, OCI_MANIFEST)
            .await
            .status(),
        StatusCode::CREATED
    );
    let mut huge = big.clone();
    huge.splice(1..1, b" ".repeat(2048));
    let r = put_manifest(&c, &s, "a/app", "huge", &huge, OCI_MANIFEST).await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into())
    );

    // deletes: a tag, then a manifest by digest with every tag naming it
    let r = send(
        &c,
        Method::DELETE,
        &s.url("/v2/a/app/manifests/t1"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = send(&c, Method::GET, &s.url("/v2/a/app/manifests/t1"), &[], None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send(
        &c,
        Method::DELETE,
        &s.url(&format!("/v2/a/app/manifests/{}", digest(&idx))),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = send(&c, Method::GET, &s.url("/v2/a/app/tags/list"), &[], None).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["big", "v1"]));
    let r = send(
        &c,
        Method::DELETE,
        &s.url("/v2/a/app/manifests/t1"),
        &[],
        None,
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    let r = send(
        &c,
        Method::DELETE,
        &s.url(&format!("/v2/a/app/blobs/{ld}")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    // health and metrics
    let r = send(&c, Method::GET, &s.url("/health"), &[], None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = send(&c, Method::GET, &s.url("/metrics"), &[], None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("cairn_serve_requests_total{route=\"blob\",method=\"GET\",status=\"206\"}")
    );
    assert!(
        text.contains(
            "cairn_serve_errors_total{route=\"manifest\",code=\"MANIFEST_BLOB_UNKNOWN\"} 2"
        )
    );
    s.verify_clean();

    // read-only mode on the same store: pulls work, every write is refused
    let store_dir = s.store_dir.clone();
    s.stop().await;
    let ro = Server::start(&store_dir, true, None).await;
    let c = Client::new();
    let r = send(
        &c,
        Method::GET,
        &ro.url("/v2/a/app/manifests/v1"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), m);
    let r = send(
        &c,
        Method::GET,
        &ro.url(&format!("/v2/a/app/blobs/{ld}")),
        &[("range", "bytes=0-9")],
        None,
    )
    .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), layer[..10].to_vec());
    for (m, p) in [
        (Method::POST, "/v2/a/app/blobs/uploads/".to_string()),
        (
            Method::POST,
            format!("/v2/a/app/blobs/uploads/?digest={}", digest(b"q")),
        ),
        (Method::PUT, "/v2/a/app/manifests/new".to_string()),
        (Method::DELETE, "/v2/a/app/manifests/v1".to_string()),
    ] {
        let r = send(&c, m.clone(), &ro.url(&p), &[], Some(b"q".to_vec())).await;
        assert_eq!(
            code_of(r).await,
            (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED".into()),
            "{m} {p}"
        );
    }
    ro.verify_clean();
    ro.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = r#"
[[token]]
name = "writer"
secret = "writer-secret-0123456789"
scopes = ["team/*:read,write"]

[[token]]
name = "reader"
secret = "reader-secret-0123456789"
scopes = ["team/app:read"]
"#;
    let s = Server::start(&dir.path().join("store"), false, Some(tokens)).await;
    let c = Client::new();
    let r = send(&c, Method::GET, &s.url("/v2/"), &[], None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h(&r, "www-authenticate"), "Basic realm=\"cairn\"");
    let r = send(
        &c,
        Method::GET,
        &s.url("/v2/"),
        &[("authorization", "Bearer reader-secret-0123456789")],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(
        &c,
        Method::GET,
        &s.url("/v2/"),
        &[("authorization", "Bearer wrong-secret-0123456789")],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A writer without a token.
    let r = send(
        &c,
        Method::POST,
        &s.url("/v2/team/app/blobs/uploads/"),
        &[],
        None,
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
    );
    // The reader may not write; the writer may (Basic, any user name).
    let r = send(
        &c,
        Method::POST,
        &s.url("/v2/team/app/blobs/uploads/"),
        &[("authorization", "Bearer reader-secret-0123456789")],
        None,
    )
    .await;
    assert_eq!(code_of(r).await, (StatusCode::FORBIDDEN, "DENIED".into()));
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:writer-secret-0123456789")
    );
    let blob = b"team blob";
    let r = send(
        &c,
        Method::POST,
        &s.url(&format!(
            "/v2/team/app/blobs/uploads/?digest={}",
            digest(blob)
        )),
        &[("authorization", &basic)],
        Some(blob.to_vec()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Mounting from a repository the caller may not read is a plain upload (202), not a link.
    let r = send(&c, Method::POST, &s.url("/v2/team/other/blobs/uploads/?mount=sha256:0000000000000000000000000000000000000000000000000000000000000000&from=secret"), &[("authorization", &basic)], None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!("/v2/team/app/blobs/{}", digest(blob))),
        &[("authorization", "Bearer reader-secret-0123456789")],
        None,
    )
    .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), blob);
    let r = send(
        &c,
        Method::GET,
        &s.url(&format!("/v2/team/other/blobs/{}", digest(blob))),
        &[("authorization", "Bearer reader-secret-0123456789")],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    s.verify_clean();
    s.stop().await;
}
