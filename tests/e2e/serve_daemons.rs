//! `cairn serve` with the container daemons: Debian's docker.io 20.10 daemon and containerd,
//! each started here as root on private sockets and folders (vfs storage, no iptables, no
//! bridge), plus Debian's `docker-registry` (distribution 2.8) as a pull-through proxy of
//! cairn serve. Each daemon is started once for the test that needs it and stopped after.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Env, s};
use crate::oci::tool;
use crate::serve::{Served, WRITER, app_layout, tokens_file};

/// A daemon process killed (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Daemon {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, cmd: &mut Command, log: PathBuf) -> Daemon {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e} (scripts/serve-deps.sh installs it)"));
        Daemon { child, name, log }
    }

    fn log(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
        )
    }

    /// Waits until `ready` holds, or panics with the daemon's log.
    fn wait(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("{} exited {st} before {what}:\n{}", self.name, self.log());
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("{} not {what} after 60 s:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether we may start daemons (root); if not, the test says why and returns.
fn root_or_say_why(test: &str) -> bool {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if uid.trim() == "0" {
        return true;
    }
    eprintln!(
        "{test}: NOT RUN: starting dockerd/containerd needs root (uid {})",
        uid.trim()
    );
    false
}

/// A short private folder for daemon sockets (unix socket paths are limited to 108 bytes).
fn sock_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cs-{tag}-"))
        .tempdir_in("/tmp")
        .unwrap()
}

fn seed_app(host: &str, env: &Env) -> String {
    let app = app_layout(env.path("app"), "1", "v1");
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("writer:{WRITER}"),
            &format!("oci:{}:1", s(&app.dir)),
            &format!("docker://{host}/app:1"),
        ],
    );
    let v: Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("writer:{WRITER}"),
            &format!("docker://{host}/app:1"),
        ],
    ))
    .unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

#[test]
fn docker_daemon_logs_in_pulls_and_pushes() {
    if !root_or_say_why("docker_daemon_logs_in_pulls_and_pushes") {
        return;
    }
    let env = Env::new();
    let tokens = tokens_file(&env);
    let srv = Served::start(&env, &["--tokens", s(&tokens)]);
    let host = srv.host.clone();
    let digest = seed_app(&host, &env);
    let sd = sock_dir("docker");
    let sock = sd.path().join("docker.sock");
    let data = env.path("docker-data");
    let mut dockerd = Daemon::start(
        "dockerd",
        Command::new("dockerd")
            .args(["--storage-driver=vfs", "--iptables=false", "--bridge=none"])
            .arg("-H")
            .arg(format!("unix://{}", s(&sock)))
            .arg("--data-root")
            .arg(&data)
            .arg("--exec-root")
            .arg(sd.path().join("exec"))
            .arg("--pidfile")
            .arg(sd.path().join("docker.pid")),
        env.path("dockerd.log"),
    );
    let docker = |args: &[&str]| -> std::process::Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", s(&sock)))
            .args(args)
            .env("DOCKER_CONFIG", env.path("docker-config"))
            .output()
            .unwrap()
    };
    dockerd.wait("answering", || docker(&["version"]).status.success());
    let ok = |args: &[&str]| -> String {
        let out = docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A wrong token is refused by login; the right one accepted.
    let bad = docker(&["login", "-u", "ci", "-p", "not-the-token-0123456789", &host]);
    assert!(!bad.status.success(), "login with a wrong token succeeded");
    ok(&["login", "-u", "ci", "-p", WRITER, &host]);
    ok(&["pull", &format!("{host}/app:1")]);
    let inspect: Value =
        serde_json::from_str(&ok(&["image", "inspect", &format!("{host}/app:1")])).unwrap();
    let repo_digests = inspect[0]["RepoDigests"].to_string();
    assert!(
        repo_digests.contains(&digest),
        "{repo_digests} lacks {digest}"
    );
    assert_eq!(inspect[0]["Architecture"], "amd64");
    // docker push: POST + streamed PATCH without Content-Length + PUT.
    ok(&[
        "tag",
        &format!("{host}/app:1"),
        &format!("{host}/dock/copy:1"),
    ]);
    ok(&["push", &format!("{host}/dock/copy:1")]);
    let pushed = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("writer:{WRITER}"),
            &format!("docker://{host}/dock/copy:1"),
        ],
    );
    let pushed: Value = serde_json::from_str(&pushed).unwrap();
    assert_eq!(pushed["Layers"].as_array().unwrap().len(), 2);
    env.assert_verify_clean("after docker");
    drop(dockerd);
    assert!(srv.stop().success());
}

#[test]
fn containerd_ctr_pulls_and_pushes_over_plain_http() {
    if !root_or_say_why("containerd_ctr_pulls_and_pushes_over_plain_http") {
        return;
    }
    let env = Env::new();
    let tokens = tokens_file(&env);
    let srv = Served::start(&env, &["--tokens", s(&tokens)]);
    let host = srv.host.clone();
    seed_app(&host, &env);
    let sd = sock_dir("ctrd");
    let sock = sd.path().join("containerd.sock");
    let config = env.path("containerd.toml");
    // Only what image pulls and pushes need: no CRI, no snapshotter beyond native.
    std::fs::write(
        &config,
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    )
    .unwrap();
    let mut ctrd = Daemon::start(
        "containerd",
        Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(env.path("ctrd-root"))
            .arg("--state")
            .arg(sd.path().join("state"))
            .arg("--address")
            .arg(&sock),
        env.path("containerd.log"),
    );
    let ctr = |args: &[&str]| -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    ctrd.wait("answering", || ctr(&["version"]).status.success());
    let ok = |args: &[&str]| -> String {
        let out = ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let user = format!("ci:{WRITER}");
    ok(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &user,
        &format!("{host}/app:1"),
    ]);
    let listed = ok(&["images", "ls"]);
    assert!(listed.contains(&format!("{host}/app:1")), "{listed}");
    ok(&[
        "images",
        "tag",
        &format!("{host}/app:1"),
        &format!("{host}/ctr/copy:1"),
    ]);
    ok(&[
        "images",
        "push",
        "--plain-http",
        "--user",
        &user,
        &format!("{host}/ctr/copy:1"),
    ]);
    let pushed = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("writer:{WRITER}"),
            &format!("docker://{host}/ctr/copy:1"),
        ],
    );
    assert!(pushed.contains("\"Digest\""));
    env.assert_verify_clean("after containerd");
    drop(ctrd);
    assert!(srv.stop().success());
}

/// Debian's docker-registry (distribution 2.8) on a free port, with a config written here.
pub(crate) fn start_distribution(env: &Env, tag: &str, extra: &str) -> (Daemon, String) {
    let port = free_port();
    let dir = env.path(&format!("distribution-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            s(&dir.join("data"))
        ),
    )
    .unwrap();
    let mut d = Daemon::start(
        "docker-registry",
        Command::new("docker-registry").arg("serve").arg(&cfg),
        dir.join("log"),
    );
    let host = format!("127.0.0.1:{port}");
    d.wait("listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (d, host)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn distribution_proxies_cairn_serve_for_skopeo() {
    let env = Env::new();
    // distribution's proxy sends its credentials only to Bearer-token registries (it keeps them
    // per token realm), so it reads cairn serve anonymously: the tokens file lets anyone read.
    let tokens = tokens_file(&env);
    let mut text = std::fs::read_to_string(&tokens).unwrap();
    text.push_str("\n[anonymous]\nscopes = [\"**:read\"]\n");
    std::fs::write(&tokens, text).unwrap();
    let srv = Served::start(&env, &["--tokens", s(&tokens)]);
    let digest = seed_app(&srv.host, &env);
    let (proxy, phost) = start_distribution(
        &env,
        "proxy",
        &format!("proxy:\n  remoteurl: http://{}\n", srv.host),
    );
    let out = env.path("through-proxy");
    let copied = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{phost}/app:1"),
            &format!("oci:{}:1", s(&out)),
        ])
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "skopeo through the proxy: {}\nproxy log:\n{}\ncairn serve log:\n{}",
        String::from_utf8_lossy(&copied.stderr),
        proxy.log(),
        srv.log()
    );
    let idx: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"].as_str().unwrap(), digest);
    drop(proxy);
    assert!(srv.stop().success());
    let _: &Path = env.dir.path();
}

/// One answer, as the oracle test compares it.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// The headers compared, lowercased names; `Location` reduced to its repository path (and
    /// an upload's id to `<id>`: each server makes its own).
    headers: Vec<(String, String)>,
}

/// Sends a request with curl; returns the compared answer and the raw `Location`, if any.
fn exchange(method: &str, url: &str, headers: &[&str], body: Option<&Path>) -> (Answer, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-D", "-"]);
    if method == "HEAD" {
        c.arg("-I");
    } else {
        c.args(["-X", method]);
    }
    c.arg(url);
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.arg("--data-binary").arg(format!("@{}", s(b)));
    }
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let ok = status == 200 || status == 206;
    let mut headers = Vec::new();
    let mut location = String::new();
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_string();
        match k.as_str() {
            "docker-content-digest"
            | "content-range"
            | "range"
            | "docker-distribution-api-version" => headers.push((k, v)),
            // Lengths of content (blobs, manifests), not of JSON error bodies or lists, whose
            // wording and whitespace differ.
            "content-length" if ok && !url.contains("/tags/list") => headers.push((k, v)),
            "content-type" if url.contains("/manifests/") && ok => headers.push((k, v)),
            "location" => {
                location = v.clone();
                let path = v.split_once("/v2/").map_or(v.as_str(), |(_, p)| p);
                let path = path.split('?').next().unwrap_or(path);
                let shape = match path.split_once("/blobs/uploads/") {
                    Some((repo, _)) => format!("{repo}/blobs/uploads/<id>"),
                    None => path.to_string(),
                };
                headers.push((k, shape));
            }
            _ => {}
        }
    }
    headers.sort();
    (Answer { status, headers }, location)
}

/// The same raw request sequence to distribution 2.8 and to cairn serve: statuses and the
/// headers clients rely on (digest, length, type, range, location) must agree. Left out, where
/// cairn follows distribution-spec v1.1 and distribution 2.8 does not: a monolithic
/// `POST ?digest=` with the body (cairn completes it, 201; distribution starts a session, 202),
/// a chunk whose `Content-Range` does not continue the upload (cairn 416; distribution appends
/// it), and a manifest fetched under `/blobs/` (cairn 200; distribution 404). The conformance
/// tests (serve/tests/conformance.rs) pin cairn's side of those.
#[test]
fn distribution_and_cairn_serve_answer_the_same_requests_alike() {
    let env = Env::new();
    let tokens = tokens_file(&env);
    let srv = Served::start(&env, &["--tokens", s(&tokens)]);
    let (dist, dhost) = start_distribution(&env, "oracle", "");
    let bearer = format!("Authorization: Bearer {WRITER}");
    let file = |name: &str, bytes: &[u8]| {
        let p = env.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let sha = |b: &[u8]| format!("sha256:{}", crate::common::sha256_hex(b));
    let layer: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let (lf, cf, mf) = (
        file("layer", &layer),
        file("config", config),
        file("manifest", &manifest),
    );
    let chunk1 = file("chunk1", &layer[..30_000]);
    let chunk2 = file("chunk2", &layer[30_000..]);
    let missing = sha(b"missing");
    let (ld, cd, md) = (sha(&layer), sha(config), sha(&manifest));
    let dm = "Accept: application/vnd.docker.distribution.manifest.v2+json";
    let ct_m = "Content-Type: application/vnd.docker.distribution.manifest.v2+json";
    let octet = "Content-Type: application/octet-stream";

    // Each step: method, path (`UPLOAD` stands for the Location of the upload in progress),
    // headers, body.
    type Step<'a> = (&'a str, String, Vec<&'a str>, Option<&'a Path>);
    let steps: Vec<Step> = vec![
        ("GET", "/v2/".into(), vec![], None),
        ("GET", "/v2/o/app/manifests/none".into(), vec![dm], None),
        ("HEAD", format!("/v2/o/app/blobs/{missing}"), vec![], None),
        ("GET", format!("/v2/o/app/blobs/{missing}"), vec![], None),
        ("POST", "/v2/o/app/blobs/uploads/".into(), vec![], None),
        ("PUT", format!("UPLOAD?digest={cd}"), vec![octet], Some(&cf)),
        ("POST", "/v2/o/app/blobs/uploads/".into(), vec![], None),
        (
            "PATCH",
            "UPLOAD".into(),
            vec![octet, "Content-Range: 0-29999"],
            Some(&chunk1),
        ),
        ("GET", "UPLOAD".into(), vec![], None),
        ("PATCH", "UPLOAD".into(), vec![octet], Some(&chunk2)),
        ("PUT", format!("UPLOAD?digest={missing}"), vec![], None),
        ("POST", "/v2/o/app/blobs/uploads/".into(), vec![], None),
        ("PATCH", "UPLOAD".into(), vec![octet], Some(&lf)),
        ("PUT", format!("UPLOAD?digest={ld}"), vec![], None),
        ("HEAD", format!("/v2/o/app/blobs/{ld}"), vec![], None),
        ("GET", format!("/v2/o/app/blobs/{ld}"), vec![], None),
        (
            "GET",
            format!("/v2/o/app/blobs/{ld}"),
            vec!["Range: bytes=0-99"],
            None,
        ),
        (
            "GET",
            format!("/v2/o/app/blobs/{ld}"),
            vec!["Range: bytes=100-"],
            None,
        ),
        (
            "GET",
            format!("/v2/o/app/blobs/{ld}"),
            vec!["Range: bytes=-10"],
            None,
        ),
        ("PUT", "/v2/o/app/manifests/1".into(), vec![ct_m], Some(&mf)),
        ("HEAD", "/v2/o/app/manifests/1".into(), vec![dm], None),
        ("GET", "/v2/o/app/manifests/1".into(), vec![dm], None),
        ("GET", format!("/v2/o/app/manifests/{md}"), vec![dm], None),
        ("GET", "/v2/o/app/tags/list".into(), vec![], None),
        (
            "POST",
            format!("/v2/o/other/blobs/uploads/?mount={ld}&from=o/app"),
            vec![],
            None,
        ),
        ("HEAD", format!("/v2/o/other/blobs/{ld}"), vec![], None),
        (
            "POST",
            format!("/v2/o/third/blobs/uploads/?mount={missing}&from=o/app"),
            vec![],
            None,
        ),
        ("DELETE", "UPLOAD".into(), vec![], None),
        ("GET", "UPLOAD".into(), vec![], None),
        ("DELETE", format!("/v2/o/app/manifests/{md}"), vec![], None),
        ("GET", "/v2/o/app/manifests/1".into(), vec![dm], None),
    ];
    let drive = |host: &str, auth: Option<&str>| -> Vec<Answer> {
        let mut upload = String::new();
        let mut out = Vec::new();
        for (method, path, headers, body) in &steps {
            let url = match path.strip_prefix("UPLOAD") {
                // distribution's Locations carry a `_state` query of their own.
                Some(rest) if upload.contains('?') => {
                    format!("{upload}{}", rest.replacen('?', "&", 1))
                }
                Some(rest) => format!("{upload}{rest}"),
                None => format!("http://{host}{path}"),
            };
            let mut hs: Vec<&str> = headers.clone();
            hs.extend(auth);
            let (a, loc) = exchange(method, &url, &hs, *body);
            if (a.status == 202 || a.status == 204) && loc.contains("/blobs/uploads/") {
                upload = if loc.starts_with("http") {
                    loc
                } else {
                    format!("http://{host}{loc}")
                };
            }
            out.push(a);
        }
        out
    };
    let theirs = drive(&dhost, None);
    let ours = drive(&srv.host, Some(&bearer));
    let mut diffs = Vec::new();
    for (i, ((t, o), step)) in theirs.iter().zip(&ours).zip(&steps).enumerate() {
        if t != o {
            diffs.push(format!(
                "step {i} {} {}:\n  distribution {t:?}\n  cairn        {o:?}",
                step.0, step.1
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    drop(dist);
    assert!(srv.stop().success());
}
