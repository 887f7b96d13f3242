//! `cairn serve` driven by real clients over loopback: skopeo, podman, buildah (root, vfs
//! storage), and the pushed images used as ordinary keys afterwards (`oci export`, `verify`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Env, Layout, files_under, gzip, named, s, tar_of};
use crate::oci::tool;

/// A running `cairn serve` on a free loopback port; stopped with SIGTERM when dropped.
pub(crate) struct Served {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Its stderr (the log).
    pub log: PathBuf,
}

impl Served {
    /// Starts `cairn -v serve --listen 127.0.0.1:0 ARGS` on `env`'s store.
    pub fn start(env: &Env, args: &[&str]) -> Served {
        let log = env.path(&format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = env
            .cmd()
            .args(["-v", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn cairn serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let host = line
            .trim()
            .rsplit("://")
            .next()
            .filter(|h| h.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| {
                panic!(
                    "cairn serve did not start: {line:?} {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Served { child, host, log }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(40) {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// A multi-platform OCI layout (index of amd64 and arm64 images, gzip layers) named `name`.
pub(crate) fn multi_layout(dir: PathBuf, name: &str, salt: &str) -> Layout {
    let l = Layout::new(dir);
    let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
    let shared = gzip(&tar_of(&[("etc/shared", b"shared by both\n")]));
    let amd = l.image(
        "amd64",
        &[
            (gz, shared.clone()),
            (
                gz,
                gzip(&tar_of(&[(
                    "etc/arch",
                    format!("amd64 {salt}\n").as_bytes(),
                )])),
            ),
        ],
    );
    let arm = l.image(
        "arm64",
        &[
            (gz, shared),
            (
                gz,
                gzip(&tar_of(&[(
                    "etc/arch",
                    format!("arm64 {salt}\n").as_bytes(),
                )])),
            ),
        ],
    );
    let idx = l.json_blob(
        crate::common::OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": crate::common::OCI_INDEX, "manifests": [amd, arm]}),
    );
    l.index(vec![named(idx, name)]);
    l
}

/// A single-platform amd64 image of gzip layers: a large shared base and one of its own.
pub(crate) fn app_layout(dir: PathBuf, name: &str, own: &str) -> Layout {
    let l = Layout::new(dir);
    let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
    // ~3 MB of incompressible-ish content, so the base layer streams (over the in-memory size).
    let mut rng = crate::common::Rng::new(7);
    let mut big = vec![0u8; 3 << 20];
    rng.fill(&mut big);
    let base = gzip(&tar_of(&[("usr/lib/base.bin", &big)]));
    let m = l.image(
        "amd64",
        &[
            (gz, base),
            (gz, gzip(&tar_of(&[("app/own", own.as_bytes())]))),
        ],
    );
    l.index(vec![named(m, name)]);
    l
}

fn skopeo(args: &[&str]) -> String {
    tool("skopeo", args)
}

/// Every blob file of a layout folder: digest → bytes' sha256 (their names).
fn blob_names(dir: &Path) -> Vec<String> {
    files_under(&dir.join("blobs"))
        .into_keys()
        .collect::<Vec<_>>()
}

#[test]
fn skopeo_copies_to_and_from_serve_with_digests_intact() {
    let env = Env::new();
    let tokens = tokens_file(&env);
    let srv = Served::start(&env, &["--tokens", s(&tokens)]);
    let host = &srv.host;
    let creds = format!("writer:{WRITER}");
    let src = multi_layout(env.path("multi"), "1", "a");
    // copy --all of a multi-platform index, from an OCI layout
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:1", s(&src.dir)),
        &format!("docker://{host}/team/multi:1"),
    ]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(src.dir.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"][0]["digest"].as_str().unwrap();
    // inspect --raw gives the index byte for byte; list-tags lists the tag
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{host}/team/multi:1"),
    ]);
    assert_eq!(
        crate::common::sha256_hex(raw.as_bytes()),
        top.trim_start_matches("sha256:")
    );
    let tags: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{host}/team/multi"),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], json!(["1"]));
    // by digest too
    let by_digest = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{host}/team/multi@{top}"),
    ]);
    assert_eq!(by_digest, raw);
    // back into a layout: the same blobs
    let back = env.path("back");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{host}/team/multi:1"),
        &format!("oci:{}:1", s(&back)),
    ]);
    assert_eq!(blob_names(&back), blob_names(&src.dir));

    // a docker-archive (Docker schema 2 after conversion by skopeo) there and back
    let app = app_layout(env.path("app"), "1", "v1");
    let archive = env.path("app.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:1", s(&app.dir)),
        &format!("docker-archive:{}:app:1", s(&archive)),
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("docker-archive:{}", s(&archive)),
        &format!("docker://{host}/app:1"),
    ]);
    let m: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{host}/app:1"),
    ]))
    .unwrap();
    assert_eq!(
        m["mediaType"],
        json!("application/vnd.docker.distribution.manifest.v2+json")
    );
    let out = env.path("app-back.tar");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{host}/app:1"),
        &format!("docker-archive:{}:app:1", s(&out)),
    ]);
    assert!(std::fs::metadata(&out).unwrap().len() > 3 << 20);

    // The pushed images are ordinary keys: listed, verified, exported and re-imported to the
    // same root, extracted.
    let keys: Vec<String> = env.key_roots().into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&"team/multi:1".to_string()), "{keys:?}");
    assert!(keys.contains(&"app:1".to_string()), "{keys:?}");
    env.assert_verify_clean("after skopeo pushes");
    let exported = env.path("exported");
    env.ok(&["oci", "export", "team/multi:1", "--layout", s(&exported)]);
    skopeo(&["inspect", "--raw", &format!("oci:{}:1", s(&exported))]);
    let rootfs = env.path("rootfs");
    env.ok(&["oci", "extract", "app:1", s(&rootfs)]);
    assert_eq!(std::fs::read(rootfs.join("app/own")).unwrap(), b"v1");
    let st = srv.stop();
    assert!(st.success(), "serve exited {st:?}");
}

/// The tokens file of the tests that log in: a writer for everything, a reader of `app`.
pub(crate) const WRITER: &str = "writer-token-0123456789abcdef";
pub(crate) const READER: &str = "reader-token-0123456789abcdef";

pub(crate) fn tokens_file(env: &Env) -> PathBuf {
    let p = env.path("tokens.toml");
    std::fs::write(
        &p,
        format!(
            "[[token]]\nname = \"writer\"\nsecret = \"{WRITER}\"\nscopes = [\"**:read,write,delete\"]\n\n\
             [[token]]\nname = \"reader\"\nsecret = \"{READER}\"\nscopes = [\"app:read\"]\n"
        ),
    )
    .unwrap();
    p
}

/// A container tool with its own storage under `env` (root, vfs: no daemon, no overlay).
fn storage_args(env: &Env, tool: &str) -> Vec<String> {
    vec![
        "--root".into(),
        s(&env.path(&format!("{tool}-root"))).into(),
        "--runroot".into(),
        s(&env.path(&format!("{tool}-run"))).into(),
        "--storage-driver".into(),
        "vfs".into(),
    ]
}

fn run_tool(prog: &str, pre: &[String], args: &[&str]) -> String {
    let mut all: Vec<&str> = pre.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    tool(prog, &all)
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn podman_and_buildah_pull_push_and_share_layers_with_a_token() {
    let env = Env::new();
    let tokens = tokens_file(&env);
    let srv = Served::start(&env, &["--tokens", s(&tokens)]);
    let host = srv.host.clone();
    let app = app_layout(env.path("app"), "1", "v1");
    let creds = format!("writer:{WRITER}");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:1", s(&app.dir)),
        &format!("docker://{host}/app:1"),
    ]);
    let auth = env.path("auth.json");
    let podman = {
        let mut a = storage_args(&env, "podman");
        a.extend(["--events-backend".into(), "file".into()]);
        a
    };
    // podman login with the reader's token: pulling works, pushing is denied.
    run_tool(
        "podman",
        &podman,
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            s(&auth),
            "-u",
            "anyone",
            "-p",
            READER,
            &host,
        ],
    );
    run_tool(
        "podman",
        &podman,
        &[
            "pull",
            "--tls-verify=false",
            "--authfile",
            s(&auth),
            &format!("{host}/app:1"),
        ],
    );
    let digest = run_tool(
        "podman",
        &podman,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &format!("{host}/app:1"),
        ],
    );
    let pushed: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{host}/app:1"),
    ]))
    .unwrap();
    assert_eq!(digest.trim(), pushed["Digest"].as_str().unwrap());
    let denied = Command::new("podman")
        .args(&podman)
        .args([
            "push",
            "--tls-verify=false",
            "--authfile",
            s(&auth),
            &format!("{host}/app:1"),
            &format!("docker://{host}/app:denied"),
        ])
        .output()
        .unwrap();
    assert!(!denied.status.success(), "the reader's token pushed");
    // The writer logs in and pushes the pulled image under a new repository: the layers are
    // mounted from app (podman knows they came from there), not sent again.
    run_tool(
        "podman",
        &podman,
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            s(&auth),
            "-u",
            "ci",
            "-p",
            WRITER,
            &host,
        ],
    );
    let received_before = count(&srv.log(), "received blob");
    run_tool(
        "podman",
        &podman,
        &[
            "push",
            "--tls-verify=false",
            "--authfile",
            s(&auth),
            &format!("{host}/app:1"),
            &format!("docker://{host}/copy:1"),
        ],
    );
    let log = srv.log();
    assert!(count(&log, "mounted blob") >= 2, "no mounts in:\n{log}");

    // buildah: a second image on top of app:1 (one new layer), pushed to app:2; only the new
    // layer and the new config are uploaded.
    let buildah = storage_args(&env, "buildah");
    let ctr = run_tool(
        "buildah",
        &buildah,
        &[
            "from",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("{host}/app:1"),
        ],
    );
    let ctr = ctr.trim().lines().last().unwrap().to_string();
    let extra = env.path("extra.txt");
    std::fs::write(&extra, b"added by buildah\n").unwrap();
    run_tool(
        "buildah",
        &buildah,
        &["copy", &ctr, s(&extra), "/app/extra.txt"],
    );
    run_tool("buildah", &buildah, &["commit", &ctr, "second"]);
    let before = count(&srv.log(), "received blob");
    run_tool(
        "buildah",
        &buildah,
        &[
            "push",
            "--tls-verify=false",
            "--creds",
            &creds,
            "second",
            &format!("docker://{host}/app:2"),
        ],
    );
    let log = srv.log();
    let new = count(&log, "received blob") - before;
    assert!(
        (1..=2).contains(&new),
        "buildah sent {new} blobs (want the new layer and config only):\n{log}"
    );
    assert!(
        received_before >= 3,
        "the seed push sent {received_before} blobs"
    );
    // podman pulls the buildah image back.
    run_tool(
        "podman",
        &podman,
        &[
            "pull",
            "--tls-verify=false",
            "--authfile",
            s(&auth),
            &format!("{host}/app:2"),
        ],
    );
    env.assert_verify_clean("after podman and buildah");
    let rootfs = env.path("rootfs2");
    env.ok(&["oci", "extract", "app:2", s(&rootfs)]);
    assert_eq!(
        std::fs::read(rootfs.join("app/extra.txt")).unwrap(),
        b"added by buildah\n"
    );
    assert!(srv.stop().success());
}

/// The remote-sync scenario against `http://` served by `cairn serve`: another cairn adds the
/// server as a remote and gets keys through it (a tree with small files, >8 MiB blobs, a
/// symlink, an executable and an empty folder), sees a rebind and a removal, cannot push; and
/// a second server with `--remote` pulls what it lacks from a `file://` bucket once.
#[test]
fn team_cache_serves_keys_to_other_cairns_and_falls_back_to_a_remote() {
    use crate::common::{gen_tree, model_diff, tree_model};
    let a = Env::new();
    let src = a.path("src");
    gen_tree(&src, "one", 300, &[9 << 20, 100_000]);
    a.ok(&["put", "app/linux@1", s(&src)]);
    let srv = Served::start(&a, &[]);
    let url = format!("http://{}/cache", srv.host);

    let b = Env::new();
    b.ok(&["remote", "add", "team", &url]);
    let out = b.path("out");
    b.ok(&["get", "app/linux@1", s(&out), "--remote", "team"]);
    if let Some(d) = model_diff(&tree_model("one", 300, &[9 << 20, 100_000]), &out) {
        panic!("restored through the team cache: {d}");
    }
    b.assert_verify_clean("after get --remote team");
    // The server's store rebinds the key: the next pull sees the new root.
    let src2 = a.path("src2");
    gen_tree(&src2, "two", 300, &[9 << 20, 100_000]);
    a.ok(&["put", "app/linux@1", s(&src2)]);
    b.ok(&["pull", "team", "app/linux@1"]);
    let out2 = b.path("out2");
    b.ok(&["get", "app/linux@1", s(&out2), "--offline"]);
    assert!(model_diff(&tree_model("two", 300, &[9 << 20, 100_000]), &out2).is_none());
    // A removed key is gone from the cache too; the cache is read-only.
    a.ok(&["rm", "app/linux@1"]);
    let c = Env::new();
    let err = c.fails(&["pull", &url, "app/linux@1"]);
    assert!(err.contains("app/linux@1"), "{err}");
    b.fails(&["push", "team", "app/linux@1"]);
    let log = srv.log();
    assert!(log.contains("team cache: pushed app/linux@1"), "{log}");
    drop(srv);

    // --remote: a second server in front of a file:// bucket that holds an image and a key.
    let bucket = a.path("bucket");
    let img = app_layout(a.path("img"), "1", "from the bucket");
    a.ok(&["oci", "import", s(&img.dir), "--name", "app:1"]);
    a.ok(&["put", "k/tree", s(&src)]);
    a.ok(&["push", &format!("file://{}", s(&bucket)), "app:1", "k/tree"]);
    let front = Env::new();
    front.ok(&["remote", "add", "bucket", &format!("file://{}", s(&bucket))]);
    let srv2 = Served::start(&front, &["--remote", "bucket"]);
    let host2 = srv2.host.clone();
    // Pulls of the same image from several clients at once: one pull from the bucket.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let host2 = host2.clone();
            let dest = a.path(&format!("concurrent-{i}"));
            std::thread::spawn(move || {
                tool(
                    "skopeo",
                    &[
                        "copy",
                        "--src-tls-verify=false",
                        &format!("docker://{host2}/app:1"),
                        &format!("oci:{}:1", s(&dest)),
                    ],
                )
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let log = srv2.log();
    assert_eq!(count(&log, "pulled app:1 from"), 1, "{log}");
    let d = Env::new();
    d.ok(&["remote", "add", "front", &format!("http://{host2}/cache")]);
    let out3 = d.path("out3");
    d.ok(&["get", "k/tree", s(&out3), "--remote", "front"]);
    assert!(model_diff(&tree_model("one", 300, &[9 << 20, 100_000]), &out3).is_none());
    front.assert_verify_clean("front after fallback pulls");
    assert!(srv2.stop().success());
}

/// Status and body of a GET with curl.
fn curl_get(url: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[nl + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(nl);
    (code, body)
}

/// A corrupt blob is a 500 and a log line, never wrong bytes; over HTTPS (rustls) clients
/// work; SIGTERM lets an answer in flight finish.
#[test]
fn corrupt_blobs_are_refused_tls_works_and_sigterm_drains() {
    let env = Env::new();
    let app = app_layout(env.path("app"), "1", "v1");
    env.ok(&["oci", "import", s(&app.dir), "--name", "app:1"]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(app.dir.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let m: Value = serde_json::from_slice(
        &std::fs::read(
            app.dir
                .join("blobs/sha256")
                .join(m.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let layer_file = app
        .dir
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let good = std::fs::read(&layer_file).unwrap();

    // HTTPS with a self-signed certificate for 127.0.0.1.
    let (cert, key) = (env.path("cert.pem"), env.path("key.pem"));
    tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            s(&key),
            "-out",
            s(&cert),
        ],
    );
    let srv = Served::start(&env, &["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    let url = format!("https://{}/v2/app/blobs/{layer}", srv.host);
    let (code, body) = curl_get(&url, &["--cacert", s(&cert)]);
    assert_eq!(code, 200);
    assert!(body == good, "the layer came back different");
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/app:1", srv.host),
    ]);
    assert!(raw.contains("layers"));
    let (code, _) = curl_get(&format!("http://{}/v2/", srv.host), &[]);
    assert_ne!(code, 200, "plain HTTP answered on the TLS port");

    // SIGTERM while a slow client is downloading: the download completes.
    let slow = {
        let url = url.clone();
        let cert = cert.clone();
        std::thread::spawn(move || curl_get(&url, &["--cacert", s(&cert), "--limit-rate", "2M"]))
    };
    std::thread::sleep(Duration::from_millis(500));
    let st = srv.stop();
    assert!(st.success(), "serve exited {st:?}");
    let (code, body) = slow.join().unwrap();
    assert_eq!(code, 200);
    assert!(body == good, "the answer in flight was cut");

    // A flipped byte in the stored layer: 500 and a log line naming the blob.
    let id = env.ok(&["hash", s(&layer_file)]);
    let stored = env.stored(&id);
    let mut bad = stored.read();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    stored.write(&bad);
    let srv = Served::start(&env, &[]);
    let (code, body) = curl_get(&format!("http://{}/v2/app/blobs/{layer}", srv.host), &[]);
    assert_eq!(code, 500);
    assert!(
        body.len() < 1000,
        "{} bytes answered for a corrupt blob",
        body.len()
    );
    let (code, _) = curl_get(
        &format!("http://{}/v2/app/blobs/{layer}", srv.host),
        &["-H", "Range: bytes=0-99"],
    );
    assert_eq!(code, 500);
    let log = srv.log();
    assert!(log.contains(&layer) && log.contains("integrity"), "{log}");
    assert!(srv.stop().success());
}
