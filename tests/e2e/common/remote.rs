//! The remote-sync test harness: the local servers' addresses (`scripts/services.sh`), one
//! backend per kind of remote (with tools to read and tamper with its objects without cairn),
//! a store with its own remotes configuration ([`Site`]), test trees, and the fault-injecting
//! proxy.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Env, StoreState, assert_one_error_line, noise, s, sha256_hex, write};

// ---------------------------------------------------------------------------------------------
// Services and backends.

/// Folder of `services.sh`, `check_services.py` and `faulty_proxy.py`.
pub(crate) const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts");

/// The variables `scripts/services.sh start` writes that these tests read.
pub(crate) const SERVICE_VARS: [&str; 10] = [
    "CAIRN_TEST_S3_ENDPOINT",
    "CAIRN_TEST_S3_BUCKET",
    "CAIRN_TEST_S3_PROXY_ENDPOINT",
    "CAIRN_TEST_S3_PROXY_CONTROL",
    "CAIRN_TEST_AZURE_ENDPOINT",
    "CAIRN_TEST_AZURE_CONTAINER",
    "CAIRN_TEST_AZURE_ACCESS_KEY",
    "CAIRN_TEST_GCS_ENDPOINT",
    "CAIRN_TEST_GCS_BUCKET",
    "CAIRN_TEST_GCS_SERVICE_ACCOUNT",
];

pub(crate) fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// True if the servers' variables are all set. If not: panics under `CAIRN_REQUIRE_SERVICES`,
/// else prints why `test` is skipped.
pub(crate) fn services_available(test: &str) -> bool {
    let missing: Vec<&str> = SERVICE_VARS
        .iter()
        .copied()
        .filter(|v| var(v).is_empty())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let required = std::env::var("CAIRN_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!(
            "{test}: CAIRN_REQUIRE_SERVICES is set but {missing:?} are not: start the servers \
             (scripts/services.sh start) and source $(scripts/services.sh env), or run \
             scripts/test.sh"
        );
    }
    eprintln!(
        "SKIPPED: {test}: needs the local S3/Azure/GCS servers ({} unset); run scripts/test.sh",
        missing.join(", ")
    );
    false
}

/// Where a remote lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    S3,
    Azure,
    /// Pull only: objects are uploaded through fake-gcs-server's JSON API.
    Gcs,
}

/// One remote under a prefix of its own, with cairn-less access to its objects.
pub(crate) struct Backend {
    pub(crate) kind: Kind,
    /// Object name prefix in the bucket (S3, GCS) or container (Azure), no trailing `/`.
    pub(crate) prefix: String,
    /// The folder of a `file://` remote.
    root: Option<tempfile::TempDir>,
}

impl Backend {
    /// A fresh remote for `test`, or `None` if the servers it needs are not there (see
    /// [`services_available`]).
    pub(crate) fn new(kind: Kind, test: &str) -> Option<Backend> {
        if kind != Kind::File && !services_available(test) {
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Some(Backend {
            kind,
            prefix: format!("e2e-remote/{test}-{}-{nanos}", std::process::id()),
            root: (kind == Kind::File).then(|| tempfile::tempdir().expect("tempdir")),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        self.root.as_ref().expect("a file:// remote").path()
    }

    pub(crate) fn url(&self) -> String {
        match self.kind {
            Kind::File => format!("file://{}", self.dir().display()),
            Kind::S3 => format!("s3://{}/{}", var("CAIRN_TEST_S3_BUCKET"), self.prefix),
            Kind::Azure => format!("az://{}/{}", var("CAIRN_TEST_AZURE_CONTAINER"), self.prefix),
            Kind::Gcs => format!("gs://{}/{}", var("CAIRN_TEST_GCS_BUCKET"), self.prefix),
        }
    }

    /// The server's endpoint (S3, Azure).
    pub(crate) fn endpoint(&self) -> String {
        match self.kind {
            Kind::S3 => var("CAIRN_TEST_S3_ENDPOINT"),
            Kind::Azure => var("CAIRN_TEST_AZURE_ENDPOINT"),
            _ => String::new(),
        }
    }

    /// `--option` values for reaching it at `endpoint` (S3, Azure: the server or a proxy).
    pub(crate) fn options_via(&self, endpoint: &str) -> Vec<String> {
        match self.kind {
            Kind::File => vec![],
            Kind::S3 => vec![
                format!("aws_endpoint={endpoint}"),
                "aws_allow_http=true".into(),
            ],
            Kind::Azure => vec![
                "azure_storage_account_name=devstoreaccount1".into(),
                format!(
                    "azure_storage_account_key={}",
                    var("CAIRN_TEST_AZURE_ACCESS_KEY")
                ),
                format!("azure_storage_endpoint={endpoint}"),
                "azure_allow_http=true".into(),
            ],
            Kind::Gcs => vec![
                format!(
                    "google_service_account={}",
                    var("CAIRN_TEST_GCS_SERVICE_ACCOUNT")
                ),
                "allow_http=true".into(),
            ],
        }
    }

    pub(crate) fn options(&self) -> Vec<String> {
        self.options_via(&self.endpoint())
    }

    pub(crate) fn tool_kind(&self) -> &'static str {
        match self.kind {
            Kind::S3 => "s3",
            Kind::Azure => "azure",
            Kind::Gcs => "gcs",
            Kind::File => unreachable!("file:// remotes are read directly"),
        }
    }

    pub(crate) fn name(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    /// The object at `rel` (relative to the remote's root), read without cairn.
    pub(crate) fn read(&self, rel: &str) -> Option<Vec<u8>> {
        if self.kind == Kind::File {
            return match std::fs::read(self.dir().join(rel)) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("{rel}: {e}"),
            };
        }
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let out = objtool(&["get", self.tool_kind(), &self.name(rel), s(tmp.path())]);
        match out.status.code() {
            Some(0) => Some(std::fs::read(tmp.path()).unwrap()),
            Some(3) => None,
            _ => panic!("reading {rel} from {}: {}", self.url(), text(&out.stderr)),
        }
    }

    /// Replaces (or creates) the object at `rel`, without cairn.
    pub(crate) fn write(&self, rel: &str, bytes: &[u8]) {
        if self.kind == Kind::File {
            let p = self.dir().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
            return;
        }
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), bytes).unwrap();
        let out = objtool(&["put", self.tool_kind(), &self.name(rel), s(tmp.path())]);
        assert!(
            out.status.success(),
            "writing {rel} to {}: {}",
            self.url(),
            text(&out.stderr)
        );
    }

    /// Names (relative to the remote's root) of every object under `rel`, sorted.
    pub(crate) fn list(&self, rel: &str) -> Vec<String> {
        let mut names = if self.kind == Kind::File {
            file_names(&self.dir().join(rel))
                .into_iter()
                .map(|n| {
                    if rel.is_empty() {
                        n
                    } else {
                        format!("{rel}/{n}")
                    }
                })
                .collect()
        } else {
            let prefix = if rel.is_empty() {
                format!("{}/", self.prefix)
            } else {
                format!("{}/{rel}", self.prefix)
            };
            let out = objtool(&["list", self.tool_kind(), &prefix]);
            assert!(
                out.status.success(),
                "listing {prefix} on {}: {}",
                self.url(),
                text(&out.stderr)
            );
            text(&out.stdout)
                .lines()
                .map(|l| {
                    l.strip_prefix(&format!("{}/", self.prefix))
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        names.sort();
        names
    }

    /// Pushes `keys` from `site`'s remote `remote` and returns the `--json` summary. For GCS
    /// (whose writes fake-gcs-server does not serve), pushes to a `file://` remote instead and
    /// uploads its files one by one through the JSON API: the layout is the same everywhere.
    pub(crate) fn publish(&self, site: &Site, remote: &str, keys: &[&str]) -> Value {
        if self.kind != Kind::Gcs {
            let mut args = vec!["push", remote];
            args.extend_from_slice(keys);
            return site.json(&args);
        }
        let staging = site.env.path("gcs-staging");
        let url = format!("file://{}", staging.display());
        let mut args = vec!["push", url.as_str()];
        args.extend_from_slice(keys);
        let summary = site.json(&args);
        let out = objtool(&["upload-dir", "gcs", s(&staging), &self.prefix]);
        assert!(
            out.status.success(),
            "uploading {} to fake-gcs-server: {}",
            staging.display(),
            text(&out.stderr)
        );
        summary
    }
}

/// Signed REST access to the servers' objects, with `scripts/check_services.py`'s helpers.
///   get KIND NAME OUTFILE      exit 0 (written), 3 (no such object)
///   put KIND NAME INFILE
///   list KIND PREFIX           one name per line
///   upload-dir KIND DIR PREFIX every file under DIR, as PREFIX/<relative path>
pub(crate) const OBJTOOL: &str = r#"
import html, json, os, re, sys, urllib.parse
sys.path.insert(0, sys.argv[1])
import check_services as cs
op, kind = sys.argv[2], sys.argv[3]
e = os.environ

def die(msg):
    sys.stderr.write(msg + "\n")
    sys.exit(1)

if kind == "s3":
    base = e["CAIRN_TEST_S3_ENDPOINT"] + "/" + e["CAIRN_TEST_S3_BUCKET"]
    def get(n):
        return cs.s3("GET", base + "/" + urllib.parse.quote(n, safe="/-_.~"))
    def put(n, d):
        return cs.s3("PUT", base + "/" + urllib.parse.quote(n, safe="/-_.~"), d)
    def names(prefix):
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            st, _, b = cs.s3("GET", base + "?" + urllib.parse.urlencode(q))
            if st != 200:
                die(f"s3 list {prefix}: HTTP {st} {b[:300]!r}")
            t = b.decode()
            out += [html.unescape(k) for k in re.findall(r"<Key>(.*?)</Key>", t)]
            m = re.search(r"<NextContinuationToken>(.*?)</NextContinuationToken>", t)
            if not m:
                return out
            token = html.unescape(m.group(1))
elif kind == "azure":
    ep, c = e["CAIRN_TEST_AZURE_ENDPOINT"], e["CAIRN_TEST_AZURE_CONTAINER"]
    def get(n):
        return cs.az_request("GET", ep, f"/{c}/{n}")
    def put(n, d):
        return cs.az_request("PUT", ep, f"/{c}/{n}", body=d,
                             headers={"x-ms-blob-type": "BlockBlob",
                                      "Content-Type": "application/octet-stream"})
    def names(prefix):
        out, marker = [], None
        while True:
            q = {"restype": "container", "comp": "list", "prefix": prefix}
            if marker:
                q["marker"] = marker
            st, _, b = cs.az_request("GET", ep, f"/{c}", q)
            if st != 200:
                die(f"azure list {prefix}: HTTP {st} {b[:300]!r}")
            t = b.decode()
            out += [html.unescape(k) for k in re.findall(r"<Name>(.*?)</Name>", t)]
            m = re.search(r"<NextMarker>(.+?)</NextMarker>", t)
            if not m:
                return out
            marker = html.unescape(m.group(1))
elif kind == "gcs":
    ep, bk = e["CAIRN_TEST_GCS_ENDPOINT"], e["CAIRN_TEST_GCS_BUCKET"]
    def get(n):
        return cs.fetch("GET", f"{ep}/storage/v1/b/{bk}/o/{urllib.parse.quote(n, safe='')}?alt=media")
    def put(n, d):
        q = urllib.parse.urlencode({"uploadType": "media", "name": n})
        return cs.fetch("POST", f"{ep}/upload/storage/v1/b/{bk}/o?{q}", d,
                        {"Content-Type": "application/octet-stream"})
    def names(prefix):
        out, token = [], None
        while True:
            q = {"prefix": prefix}
            if token:
                q["pageToken"] = token
            st, _, b = cs.fetch("GET", f"{ep}/storage/v1/b/{bk}/o?" + urllib.parse.urlencode(q))
            if st != 200:
                die(f"gcs list {prefix}: HTTP {st} {b[:300]!r}")
            j = json.loads(b)
            out += [i["name"] for i in j.get("items", [])]
            token = j.get("nextPageToken")
            if not token:
                return out
else:
    die(f"unknown kind {kind}")

def write(name, path):
    st, _, b = put(name, open(path, "rb").read())
    if st not in (200, 201):
        die(f"{kind} put {name}: HTTP {st} {b[:300]!r}")

if op == "get":
    st, _, b = get(sys.argv[4])
    if st == 404:
        sys.exit(3)
    if st != 200:
        die(f"{kind} get {sys.argv[4]}: HTTP {st} {b[:300]!r}")
    open(sys.argv[5], "wb").write(b)
elif op == "put":
    write(sys.argv[4], sys.argv[5])
elif op == "list":
    for n in names(sys.argv[4]):
        print(n)
elif op == "upload-dir":
    root, prefix = sys.argv[4], sys.argv[5]
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            write(prefix + "/" + os.path.relpath(p, root), p)
else:
    die(f"unknown op {op}")
"#;

/// Relative paths of the regular files under `dir` (none if it does not exist).
pub(crate) fn file_names(dir: &Path) -> Vec<String> {
    pub(crate) fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(base, &p, out),
                Ok(t) if t.is_file() => {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned())
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

pub(crate) fn objtool(args: &[&str]) -> Output {
    Command::new("python3")
        .arg("-c")
        .arg(OBJTOOL)
        .arg(SCRIPTS)
        .args(args)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .expect("run python3")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// A store with its own remotes configuration.

/// A cairn store (`Env`) with its own configuration file and the credentials the servers take.
pub(crate) struct Site {
    pub(crate) env: Env,
}

impl Site {
    pub(crate) fn new() -> Site {
        Site { env: Env::new() }
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.env.cmd();
        c.arg("--config")
            .arg(self.env.path("config.toml"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env_remove("CAIRN_CONFIG")
            .env_remove("CAIRN_RETRIES")
            .env_remove("CAIRN_CONCURRENCY")
            .env_remove("CAIRN_LOCK_TIMEOUT");
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run cairn")
    }

    /// Runs cairn, expects success, returns trimmed stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed ({:?}): {}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    }

    /// Runs cairn with `--json`, expects success, parses stdout.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cairn {all:?}: bad JSON {e}: {out}"))
    }

    /// Runs cairn, expects exit status 1 and one `cairn: error:` line on stderr naming every
    /// needle; returns that line.
    pub(crate) fn fails(&self, args: &[&str], needles: &[&str]) -> String {
        let out = self.run(args);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "cairn {args:?}: want exit 1, got {:?}; stderr: {stderr}",
            out.status
        );
        assert_one_error_line(&stderr, needles);
        stderr.trim_end().to_string()
    }

    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn")
    }

    /// `remote add NAME <b's URL> <b's options> EXTRA…`
    pub(crate) fn add(&self, name: &str, b: &Backend, extra: &[&str]) {
        self.add_via(name, b, &b.options(), extra);
    }

    pub(crate) fn add_via(&self, name: &str, b: &Backend, options: &[String], extra: &[&str]) {
        let url = b.url();
        let mut args = vec!["remote", "add", name, url.as_str()];
        for o in options {
            args.push("--option");
            args.push(o);
        }
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// Keys, blob files, index counts and temp files; `verify` must find the store clean.
    pub(crate) fn state(&self) -> StoreState {
        self.env.state()
    }

    pub(crate) fn assert_verify_clean(&self, context: &str) {
        let out = self.env.run(&["--json", "verify"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{context}: verify: {} {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("verify --json");
        assert_eq!(v["clean"], true, "{context}: verify: {v}");
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        self.json(&["ls"])
            .as_array()
            .expect("ls --json is an array")
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    }

    /// Materializes `key` into a new folder and returns it.
    pub(crate) fn get(&self, key: &str, dest: &str) -> PathBuf {
        let d = self.env.path(dest);
        self.ok(&["get", key, s(&d)]);
        d
    }

    /// SHA-256 of `cairn export KEY` as a tar.
    pub(crate) fn export_sha(&self, key: &str) -> String {
        let f = self
            .env
            .path(&format!("export-{}.tar", key.replace('/', "_")));
        self.ok(&["export", key, "-o", s(&f)]);
        sha256_hex(&std::fs::read(&f).unwrap())
    }
}

pub(crate) fn num(v: &Value, field: &str) -> u64 {
    v.pointer(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {field} in {v}"))
}

// ---------------------------------------------------------------------------------------------
// Trees.

/// `n` distinct small text files over `dirs` folders: `dNN/fI.txt`.
pub(crate) fn small_files(root: &Path, tag: &str, n: usize, dirs: usize) {
    for i in 0..n {
        let line = format!("{tag} file {i}\n");
        write(
            root,
            &format!("d{:02}/f{i}.txt", i % dirs),
            line.repeat(i % 5 + 1).as_bytes(),
        );
    }
}

/// An executable, symlinks (relative, dangling, absolute) and empty folders.
pub(crate) fn special_entries(root: &Path) {
    write(root, "bin/run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        root.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../bin/run.sh", root.join("bin/link")).unwrap();
    std::os::unix::fs::symlink("no/such/file", root.join("bin/dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("bin/absolute")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("nested/empty/too")).unwrap();
}

/// `count` incompressible files of `size` bytes, `big/NN.bin`, cut from one random buffer with
/// a distinct header each (cheap to make, and each blob stays incompressible).
pub(crate) fn incompressible_files(root: &Path, seed: u64, count: usize, size: usize) {
    let pool = noise(size + 8 * 1024 * 1024, seed);
    for i in 0..count {
        let off = (i * 1_048_573) % (pool.len() - size);
        let mut data = format!("{seed}-{i}\n").into_bytes();
        data.extend_from_slice(&pool[off..off + size - data.len()]);
        write(root, &format!("big/{i:02}.bin"), &data);
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection.

/// The shared proxy (in front of moto) has one global fault configuration.
pub(crate) static SHARED_PROXY: Mutex<()> = Mutex::new(());

/// A child process killed when dropped.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fault-injecting proxy in front of a backend's server: the shared one for S3 (held
/// exclusively), a private `faulty_proxy.py` for Azure. Faults are cleared when dropped.
pub(crate) struct Faults {
    /// Endpoint to give cairn instead of the server's.
    pub(crate) endpoint: String,
    control: String,
    _proxy: Option<ChildGuard>,
    _lock: Option<MutexGuard<'static, ()>>,
}

impl Faults {
    pub(crate) fn new(b: &Backend) -> Faults {
        match b.kind {
            Kind::S3 => {
                let lock = SHARED_PROXY.lock().unwrap_or_else(|e| e.into_inner());
                let f = Faults {
                    endpoint: var("CAIRN_TEST_S3_PROXY_ENDPOINT"),
                    control: var("CAIRN_TEST_S3_PROXY_CONTROL"),
                    _proxy: None,
                    _lock: Some(lock),
                };
                f.clear();
                f
            }
            Kind::Azure => {
                // http://127.0.0.1:PORT/devstoreaccount1 -> upstream origin + account path
                let ep = var("CAIRN_TEST_AZURE_ENDPOINT");
                let (origin, account) = ep[7..]
                    .split_once('/')
                    .map(|(host, path)| (format!("http://{host}"), format!("/{path}")))
                    .expect("azure endpoint with an account path");
                let dir = tempfile::tempdir().unwrap();
                let port_file = dir.path().join("port");
                let child = Command::new("python3")
                    .arg("-u")
                    .arg(format!("{SCRIPTS}/faulty_proxy.py"))
                    .args(["--upstream", &origin, "--listen-port", "0", "--port-file"])
                    .arg(&port_file)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start faulty_proxy.py");
                let mut guard = ChildGuard(child);
                let deadline = Instant::now() + Duration::from_secs(30);
                let port = loop {
                    if let Ok(p) = std::fs::read_to_string(&port_file)
                        && !p.trim().is_empty()
                    {
                        break p.trim().to_string();
                    }
                    assert!(
                        guard.0.try_wait().unwrap().is_none(),
                        "faulty_proxy.py exited during startup"
                    );
                    assert!(Instant::now() < deadline, "faulty_proxy.py did not start");
                    std::thread::sleep(Duration::from_millis(50));
                };
                Faults {
                    endpoint: format!("http://127.0.0.1:{port}{account}"),
                    control: format!("http://127.0.0.1:{port}/__faults"),
                    _proxy: Some(guard),
                    _lock: None,
                }
            }
            k => panic!("no fault proxy for {k:?}"),
        }
    }

    pub(crate) fn call(&self, method: &str, body: Option<&Value>) -> Value {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "-f",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-X",
            method,
        ]);
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        let out = c.arg(&self.control).output().expect("run curl");
        assert!(
            out.status.success(),
            "{method} {}: {}",
            self.control,
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("proxy control answers JSON")
    }

    /// Replaces the fault configuration (and zeroes the counters).
    pub(crate) fn set(&self, cfg: Value) {
        self.call("POST", Some(&cfg));
    }

    pub(crate) fn clear(&self) {
        self.call("DELETE", None);
    }

    pub(crate) fn counters(&self) -> Value {
        self.call("GET", None)["counters"].clone()
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        let _ = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "10", "-X", "DELETE"])
            .arg(&self.control)
            .output();
    }
}

/// A regex matching the request paths of `b`'s objects only.
pub(crate) fn path_regex(b: &Backend, rest: &str) -> String {
    format!("/{}/{rest}", b.prefix)
}

/// A loopback port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
