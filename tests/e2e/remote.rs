//! Remote sync end to end, against real local servers: moto (S3), Azurite (Azure),
//! fake-gcs-server (GCS, pull only: it does not serve object_store's writes), `file://` and
//! read-only `http://` remotes, and a fault-injecting proxy in front of moto
//! (`scripts/faulty_proxy.py`).
//!
//! The servers come from `scripts/services.sh start`; their addresses from the env file it writes
//! (`source $(scripts/services.sh env)`). `scripts/test.sh` does both and sets
//! `CAIRN_REQUIRE_SERVICES=1`, under which a missing variable fails the test. Without it (a plain
//! `cargo test`), tests that need a server print `SKIPPED: …` and pass; `file://` and `http://`
//! tests always run.
//!
//! Objects are put on, read from and tampered with on the servers without cairn, through signed
//! REST calls (`scripts/check_services.py`'s helpers, run by `python3`). Every test works under
//! its own prefix, so tests run in parallel and re-runs against long-lived servers never meet
//! old objects. The shared proxy's fault configuration is global: tests using it take
//! [`SHARED_PROXY`]; Azure tests start a private proxy in front of Azurite.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Env, StoreState, assert_one_error_line, s, sha256_hex};

// ---------------------------------------------------------------------------------------------
// Services and backends.

/// Folder of `services.sh`, `check_services.py` and `faulty_proxy.py`.
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts");

/// The variables `scripts/services.sh start` writes that these tests read.
const SERVICE_VARS: [&str; 10] = [
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

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// True if the servers' variables are all set. If not: panics under `CAIRN_REQUIRE_SERVICES`,
/// else prints why `test` is skipped.
fn services_available(test: &str) -> bool {
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
enum Kind {
    File,
    S3,
    Azure,
    /// Pull only: objects are uploaded through fake-gcs-server's JSON API.
    Gcs,
}

/// One remote under a prefix of its own, with cairn-less access to its objects.
struct Backend {
    kind: Kind,
    /// Object name prefix in the bucket (S3, GCS) or container (Azure), no trailing `/`.
    prefix: String,
    /// The folder of a `file://` remote.
    root: Option<tempfile::TempDir>,
}

impl Backend {
    /// A fresh remote for `test`, or `None` if the servers it needs are not there (see
    /// [`services_available`]).
    fn new(kind: Kind, test: &str) -> Option<Backend> {
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

    fn dir(&self) -> &Path {
        self.root.as_ref().expect("a file:// remote").path()
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::File => format!("file://{}", self.dir().display()),
            Kind::S3 => format!("s3://{}/{}", var("CAIRN_TEST_S3_BUCKET"), self.prefix),
            Kind::Azure => format!("az://{}/{}", var("CAIRN_TEST_AZURE_CONTAINER"), self.prefix),
            Kind::Gcs => format!("gs://{}/{}", var("CAIRN_TEST_GCS_BUCKET"), self.prefix),
        }
    }

    /// The server's endpoint (S3, Azure).
    fn endpoint(&self) -> String {
        match self.kind {
            Kind::S3 => var("CAIRN_TEST_S3_ENDPOINT"),
            Kind::Azure => var("CAIRN_TEST_AZURE_ENDPOINT"),
            _ => String::new(),
        }
    }

    /// `--option` values for reaching it at `endpoint` (S3, Azure: the server or a proxy).
    fn options_via(&self, endpoint: &str) -> Vec<String> {
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

    fn options(&self) -> Vec<String> {
        self.options_via(&self.endpoint())
    }

    fn tool_kind(&self) -> &'static str {
        match self.kind {
            Kind::S3 => "s3",
            Kind::Azure => "azure",
            Kind::Gcs => "gcs",
            Kind::File => unreachable!("file:// remotes are read directly"),
        }
    }

    fn name(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    /// The object at `rel` (relative to the remote's root), read without cairn.
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
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
    fn write(&self, rel: &str, bytes: &[u8]) {
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
    fn list(&self, rel: &str) -> Vec<String> {
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
    fn publish(&self, site: &Site, remote: &str, keys: &[&str]) -> Value {
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
const OBJTOOL: &str = r#"
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

def put_file(name, path):
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
    put_file(sys.argv[4], sys.argv[5])
elif op == "list":
    for n in names(sys.argv[4]):
        print(n)
elif op == "upload-dir":
    root, prefix = sys.argv[4], sys.argv[5]
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            put_file(prefix + "/" + os.path.relpath(p, root), p)
else:
    die(f"unknown op {op}")
"#;

/// Relative paths of the regular files under `dir` (none if it does not exist).
fn file_names(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
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

fn objtool(args: &[&str]) -> Output {
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// A store with its own remotes configuration.

/// A cairn store (`Env`) with its own configuration file and the credentials the servers take.
struct Site {
    env: Env,
}

impl Site {
    fn new() -> Site {
        Site { env: Env::new() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
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

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run cairn")
    }

    /// Runs cairn, expects success, returns trimmed stdout.
    fn ok(&self, args: &[&str]) -> String {
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
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cairn {all:?}: bad JSON {e}: {out}"))
    }

    /// Runs cairn, expects exit status 1 and one `cairn: error:` line on stderr naming every
    /// needle; returns that line.
    fn fails(&self, args: &[&str], needles: &[&str]) -> String {
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

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn")
    }

    /// `remote add NAME <b's URL> <b's options> EXTRA…`
    fn add(&self, name: &str, b: &Backend, extra: &[&str]) {
        self.add_via(name, b, &b.options(), extra);
    }

    fn add_via(&self, name: &str, b: &Backend, options: &[String], extra: &[&str]) {
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
    fn state(&self) -> StoreState {
        self.env.state()
    }

    fn assert_verify_clean(&self, context: &str) {
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

    fn keys(&self) -> Vec<String> {
        self.json(&["ls"])
            .as_array()
            .expect("ls --json is an array")
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    }

    /// Materializes `key` into a new folder and returns it.
    fn get(&self, key: &str, dest: &str) -> PathBuf {
        let d = self.env.path(dest);
        self.ok(&["get", key, s(&d)]);
        d
    }

    /// SHA-256 of `cairn export KEY` as a tar.
    fn export_sha(&self, key: &str) -> String {
        let f = self
            .env
            .path(&format!("export-{}.tar", key.replace('/', "_")));
        self.ok(&["export", key, "-o", s(&f)]);
        sha256_hex(&std::fs::read(&f).unwrap())
    }
}

fn num(v: &Value, field: &str) -> u64 {
    v.pointer(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {field} in {v}"))
}

// ---------------------------------------------------------------------------------------------
// Trees.

/// xorshift64*: deterministic pseudo-random bytes.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Prng {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn put_file(root: &Path, rel: &str, content: &[u8]) {
    crate::common::write(root, rel, content);
}

/// `n` distinct small text files over `dirs` folders: `dNN/fI.txt`.
fn small_files(root: &Path, tag: &str, n: usize, dirs: usize) {
    for i in 0..n {
        let line = format!("{tag} file {i}\n");
        put_file(
            root,
            &format!("d{:02}/f{i}.txt", i % dirs),
            line.repeat(i % 5 + 1).as_bytes(),
        );
    }
}

/// An executable, symlinks (relative, dangling, absolute) and empty folders.
fn special_entries(root: &Path) {
    put_file(root, "bin/run.sh", b"#!/bin/sh\necho hi\n");
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
fn incompressible_files(root: &Path, seed: u64, count: usize, size: usize) {
    let pool = Prng::new(seed).bytes(size + 8 * 1024 * 1024);
    for i in 0..count {
        let off = (i * 1_048_573) % (pool.len() - size);
        let mut data = format!("{seed}-{i}\n").into_bytes();
        data.extend_from_slice(&pool[off..off + size - data.len()]);
        put_file(root, &format!("big/{i:02}.bin"), &data);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ent {
    Dir,
    File { len: u64, sha: String, exec: bool },
    Link(PathBuf),
}

/// Every entry under `root` (not following symlinks), by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, Ent> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Ent>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ent = if md.file_type().is_symlink() {
                Ent::Link(std::fs::read_link(&p).unwrap())
            } else if md.is_dir() {
                walk(base, &p, out);
                Ent::Dir
            } else {
                Ent::File {
                    len: md.len(),
                    sha: sha256_hex(&std::fs::read(&p).unwrap()),
                    exec: md.permissions().mode() & 0o100 != 0,
                }
            };
            out.insert(rel, ent);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Panics unless `restored` holds exactly `src`'s entries, contents, exec bits and symlinks.
fn assert_same_tree(src: &Path, restored: &Path, context: &str) {
    let (a, b) = (snapshot(src), snapshot(restored));
    if a == b {
        return;
    }
    for (k, v) in &a {
        match b.get(k) {
            None => panic!("{context}: {k} missing from {}", restored.display()),
            Some(w) if w != v => panic!("{context}: {k}: restored {w:?}, source {v:?}"),
            _ => {}
        }
    }
    let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    panic!(
        "{context}: unexpected entries in {}: {extra:?}",
        restored.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Fault injection.

/// The shared proxy (in front of moto) has one global fault configuration.
static SHARED_PROXY: Mutex<()> = Mutex::new(());

/// A child process killed when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fault-injecting proxy in front of a backend's server: the shared one for S3 (held
/// exclusively), a private `faulty_proxy.py` for Azure. Faults are cleared when dropped.
struct Faults {
    /// Endpoint to give cairn instead of the server's.
    endpoint: String,
    control: String,
    _proxy: Option<ChildGuard>,
    _lock: Option<MutexGuard<'static, ()>>,
}

impl Faults {
    fn new(b: &Backend) -> Faults {
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

    fn call(&self, method: &str, body: Option<&Value>) -> Value {
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
    fn set(&self, cfg: Value) {
        self.call("POST", Some(&cfg));
    }

    fn clear(&self) {
        self.call("DELETE", None);
    }

    fn counters(&self) -> Value {
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
fn path_regex(b: &Backend, rest: &str) -> String {
    format!("/{}/{rest}", b.prefix)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

macro_rules! on {
    ($scenario:ident: $($name:ident => $kind:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $scenario(Kind::$kind, stringify!($name));
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// 1. Round trip.

on!(round_trip:
    round_trip_file => File,
    round_trip_s3 => S3,
    round_trip_azure => Azure,
    round_trip_gcs => Gcs,
);

/// A tree of a few hundred files, a >8 MiB file (stored on its own), symlinks, an executable
/// and empty folders goes to the remote and into a second store, which restores it exactly.
fn round_trip(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, c) = (Site::new(), Site::new());
    let src = a.env.path("src");
    small_files(&src, "rt", 300, 20);
    special_entries(&src);
    put_file(
        &src,
        "large.bin",
        &Prng::new(7).bytes(9 * 1024 * 1024 + 4321),
    );
    put_file(&src, "text.txt", &b"compressible text\n".repeat(20_000));
    let root = a.ok(&["put", "app/linux@1", s(&src)]);
    if kind != Kind::Gcs {
        a.add("r", &b, &[]);
    }
    let pushed = b.publish(&a, "r", &["app/linux@1"]);
    assert_eq!(pushed["keys"], json!(["app/linux@1"]), "{pushed}");
    assert!(
        num(&pushed, "/standalone_blobs") >= 1,
        "the 9 MiB file goes alone: {pushed}"
    );
    assert!(num(&pushed, "/packs") >= 1, "{pushed}");
    assert!(
        b.read("keys/app/linux@1.key").is_some(),
        "no key record on {}",
        b.url()
    );

    c.add("r", &b, &[]);
    let pulled = c.json(&["pull", "r", "app/linux@1"]);
    assert_eq!(pulled["keys"][0]["key"], "app/linux@1", "{pulled}");
    assert_eq!(pulled["keys"][0]["root"]["id"], root.as_str(), "{pulled}");
    assert_eq!(
        num(&pulled, "/objects_received"),
        num(&pushed, "/objects_sent"),
        "pull {pulled} vs push {pushed}"
    );
    let out = c.get("app/linux@1", "out");
    assert_same_tree(&src, &out, &format!("{test}: get after pull"));
    assert_eq!(
        a.export_sha("app/linux@1"),
        c.export_sha("app/linux@1"),
        "{test}: exports differ between the pushing and the pulling store"
    );
    c.assert_verify_clean(test);
}

// ---------------------------------------------------------------------------------------------
// 2. Two stores, one remote.

on!(shared_remote:
    shared_remote_file => File,
    shared_remote_s3 => S3,
    shared_remote_azure => Azure,
);

/// Store A pushes k1, store B pushes k2 (most content shared); each pulls the other's key,
/// fetching only what it lacks.
fn shared_remote(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, z) = (Site::new(), Site::new());
    let (src1, src2) = (a.env.path("src1"), z.env.path("src2"));
    for src in [&src1, &src2] {
        small_files(src, "shared", 200, 10);
        put_file(src, "shared.bin", &Prng::new(11).bytes(3 * 1024 * 1024));
    }
    small_files(&src1.join("own"), "one", 50, 5);
    small_files(&src2.join("own"), "two", 50, 5);
    a.ok(&["put", "k1", s(&src1)]);
    z.ok(&["put", "k2", s(&src2)]);
    a.add("r", &b, &[]);
    z.add("r", &b, &[]);
    a.json(&["push", "r", "k1"]);
    z.json(&["push", "r", "k2"]);

    let p = a.json(&["pull", "r", "k2"]);
    assert!(
        num(&p, "/objects_skipped") > 0,
        "A already has k2's shared files: {p}"
    );
    let q = z.json(&["pull", "r", "k1"]);
    assert!(
        num(&q, "/objects_skipped") > 0,
        "B already has k1's shared files: {q}"
    );
    for site in [&a, &z] {
        assert_eq!(site.keys(), ["k1", "k2"]);
        site.assert_verify_clean(test);
    }
    assert_same_tree(&src2, &a.get("k2", "out2"), &format!("{test}: k2 in A"));
    assert_same_tree(&src1, &z.get("k1", "out1"), &format!("{test}: k1 in B"));
}

// ---------------------------------------------------------------------------------------------
// 3. Request counts.

/// 10,000 small files, pushed to a `file://`, an S3 and an Azure remote (one tree and one `put`
/// for all three: they are the slow part): each push makes at most 50 PUTs, each pull into an
/// empty store at most 50 GETs (and the store then verifies clean), and a second push of the same
/// key uploads nothing.
#[test]
fn request_counts_of_10000_files_on_file_s3_and_azure() {
    let test = "request_counts";
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "many", 10_000, 100);
    a.ok(&["put", "many", s(&src)]);
    for kind in [Kind::File, Kind::S3, Kind::Azure] {
        let Some(b) = Backend::new(kind, &format!("{test}_{kind:?}")) else {
            continue;
        };
        let what = format!("{test}: {kind:?}");
        let remote = format!("{kind:?}");
        a.add(&remote, &b, &[]);
        let first = a.json(&["push", &remote, "many"]);
        // 10,000 blobs + 100 folders + the root.
        assert_eq!(num(&first, "/objects_sent"), 10_101, "{what}: {first}");
        assert!(
            num(&first, "/requests/puts") <= 50,
            "{what}: push of 10,000 files: {first}"
        );

        let c = Site::new();
        c.add("r", &b, &[]);
        let pulled = c.json(&["pull", "r", "many"]);
        assert_eq!(
            num(&pulled, "/objects_received"),
            10_101,
            "{what}: {pulled}"
        );
        assert!(
            num(&pulled, "/requests/gets") <= 50,
            "{what}: pull of 10,000 files: {pulled}"
        );
        c.assert_verify_clean(&what);

        let again = a.json(&["push", &remote, "many"]);
        assert_eq!(
            num(&again, "/objects_sent"),
            0,
            "{what}: second push: {again}"
        );
        assert_eq!(
            num(&again, "/bytes_sent"),
            0,
            "{what}: second push: {again}"
        );
        assert_eq!(
            num(&again, "/objects_skipped"),
            10_101,
            "{what}: second push: {again}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Small change, small upload.

on!(small_change:
    small_change_file => File,
    small_change_s3 => S3,
    small_change_azure => Azure,
);

/// After 1% of 1000 files (4 KiB each) change, pushing the new version sends at most 3% of the
/// bytes the first push sent; the new version pulls into an empty store that verifies clean.
fn small_change(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, c) = (Site::new(), Site::new());
    let src = a.env.path("src");
    let mut rng = Prng::new(41);
    for i in 0..1000 {
        put_file(&src, &format!("d{:02}/f{i}.bin", i % 20), &rng.bytes(4096));
    }
    a.ok(&["put", "v1", s(&src)]);
    a.add("r", &b, &[]);
    let first = a.json(&["push", "r", "v1"]);
    for i in (0..1000).step_by(100) {
        put_file(&src, &format!("d{:02}/f{i}.bin", i % 20), &rng.bytes(4096));
    }
    a.ok(&["put", "v2", s(&src)]);
    let second = a.json(&["push", "r", "v2"]);
    let (b1, b2) = (num(&first, "/bytes_sent"), num(&second, "/bytes_sent"));
    assert!(
        b2 * 100 <= b1 * 3,
        "{test}: re-push after changing 10 of 1000 files sent {b2} bytes, more than 3% of the \
         first push's {b1}: {second}"
    );
    c.add("r", &b, &[]);
    c.json(&["pull", "r", "v2"]);
    c.assert_verify_clean(test);
}

// ---------------------------------------------------------------------------------------------
// 5. Interrupted push.

on!(interrupted_push:
    interrupted_push_file => File,
    interrupted_push_s3 => S3,
    interrupted_push_azure => Azure,
);

/// `push` SIGKILLed after some packs are up: the key is not on the remote; pushing again
/// completes, uploading only what is missing; the key then pulls and restores.
fn interrupted_push(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    // 2 MiB incompressible files: 8 per 16 MiB pack. Through a proxy that stalls every pack
    // upload by 2 s, 4 packs take two rounds (3 packs go up at once); a file:// push is not
    // slowed, so it gets more packs.
    let files = if kind == Kind::File { 56 } else { 28 };
    incompressible_files(&src, 5, files, 2 * 1024 * 1024);
    small_files(&src, "int", 100, 4);
    a.ok(&["put", "big", s(&src)]);
    a.add("r", &b, &[]);
    let faults = (kind != Kind::File).then(|| Faults::new(&b));
    match &faults {
        Some(f) => {
            f.set(json!({
                "methods": ["PUT"],
                "path_regex": path_regex(&b, r"packs/.*\.pack$"),
                "stall_prob": 1.0,
                "stall_seconds": 2.0,
            }));
            a.add_via("slow", &b, &b.options_via(&f.endpoint), &[]);
        }
        None => a.add("slow", &b, &[]),
    }

    let mut child = a.spawn(&["push", "slow", "big"]);
    let start = Instant::now();
    let (want_idx, margin, poll) = if kind == Kind::File {
        (2, Duration::from_millis(20), Duration::from_millis(2))
    } else {
        (1, Duration::from_millis(700), Duration::from_millis(50))
    };
    loop {
        let idx = b
            .list("packs")
            .iter()
            .filter(|n| n.ends_with(".idx"))
            .count();
        if idx >= want_idx {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{test}: push ended ({st:?}) before {want_idx} pack(s) were up: {}",
                text(&out.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{test}: no pack after 60 s"
        );
        std::thread::sleep(poll);
    }
    std::thread::sleep(margin);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{test}: push finished before the kill ({:?}): {}",
        out.status,
        text(&out.stderr)
    );
    drop(faults);
    let packs_up = b
        .list("packs")
        .iter()
        .filter(|n| n.ends_with(".idx"))
        .count();
    assert!(
        packs_up >= 1,
        "{test}: no pack on the remote after the kill"
    );

    // Not readable: no record, and pull says so.
    assert_eq!(
        b.read("keys/big.key"),
        None,
        "{test}: key record written by a killed push"
    );
    let c = Site::new();
    c.add("r", &b, &[]);
    let before = c.state();
    c.fails(&["pull", "r", "big"], &["big", "not on the remote"]);
    assert_eq!(c.state(), before, "{test}: failed pull changed the store");

    // Resumed.
    let again = a.json(&["push", "r", "big"]);
    assert_eq!(again["keys"], json!(["big"]), "{again}");
    let total = files as u64 * 2 * 1024 * 1024;
    assert!(
        num(&again, "/objects_skipped") > 0 && num(&again, "/bytes_sent") < total,
        "{test}: the push resumed after {packs_up} pack(s) were up re-sent everything: {again}"
    );
    c.json(&["pull", "r", "big"]);
    assert_same_tree(&src, &c.get("big", "out"), test);
    c.assert_verify_clean(test);
}

// ---------------------------------------------------------------------------------------------
// 6. Corrupt remote objects.

on!(corrupt_objects:
    corrupt_objects_file => File,
    corrupt_objects_s3 => S3,
    corrupt_objects_azure => Azure,
    corrupt_objects_gcs => Gcs,
);

/// One entry of a pack index.
struct IdxEntry {
    id: String,
    kind: u8,
    offset: usize,
    len: usize,
}

/// Parses a pack index (`docs/format.md`): zstd of magic, pack id, pack length, count, entries.
fn parse_index(bytes: &[u8]) -> Vec<IdxEntry> {
    let raw = zstd::decode_all(bytes).expect("index is zstd");
    assert_eq!(&raw[..10], b"cairn-idx\x01", "index magic");
    let count = u32::from_le_bytes(raw[50..54].try_into().unwrap()) as usize;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let u = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap()) as usize;
    (0..count)
        .map(|i| {
            let e = &raw[54 + i * 58..54 + (i + 1) * 58];
            IdxEntry {
                id: format!("blake3:{}", hex(&e[..32])),
                kind: e[32],
                offset: u(&e[34..42]),
                len: u(&e[42..50]),
            }
        })
        .collect()
}

fn hex_of(id: &Value) -> String {
    id.as_str()
        .and_then(|s| s.strip_prefix("blake3:"))
        .expect("an id")
        .to_string()
}

/// Flipped and truncated packs and standalone blobs, a record naming a pack that does not
/// exist, and records whose root was changed: pull fails naming what is wrong, exit 1, and
/// nothing enters the pulling store.
fn corrupt_objects(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "corrupt", 60, 6);
    put_file(&src, "large.bin", &Prng::new(3).bytes(9 * 1024 * 1024));
    a.ok(&["put", "k", s(&src)]);
    if kind != Kind::Gcs {
        a.add("r", &b, &[]);
    }
    b.publish(&a, "r", &["k"]);

    let rec_bytes = b.read("keys/k.key").expect("key record");
    let rec: Value = serde_json::from_slice(&rec_bytes).unwrap();
    let pack = hex_of(&rec["packs"][0]);
    let blob = hex_of(&rec["blobs"][0]);
    let pack_rel = format!("packs/{}/{pack}.pack", &pack[..2]);
    let idx_rel = format!("packs/{}/{pack}.idx", &pack[..2]);
    let blob_rel = format!("blobs/{}/{blob}.zst", &blob[..2]);
    let pack_bytes = b.read(&pack_rel).expect("pack");
    let blob_bytes = b.read(&blob_rel).expect("standalone blob");
    let entries = parse_index(&b.read(&idx_rel).expect("pack index"));
    let victim = entries
        .iter()
        .find(|e| e.kind == 1)
        .expect("a blob in the pack");

    let attempt = |what: &str, needles: &[&str]| refused_pull(&b, "k", what, needles, test);

    // A byte flipped inside one packed blob.
    let mut bad = pack_bytes.clone();
    bad[victim.offset + victim.len / 2] ^= 0x55;
    b.write(&pack_rel, &bad);
    attempt("flipped pack byte", &[&victim.id, "corrupt"]);

    // The pack cut in half.
    b.write(&pack_rel, &pack_bytes[..pack_bytes.len() / 2]);
    attempt("truncated pack", &[&pack, "corrupt"]);
    b.write(&pack_rel, &pack_bytes);

    // A byte flipped in the standalone blob.
    let mut bad = blob_bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    b.write(&blob_rel, &bad);
    attempt("flipped blob byte", &[&format!("blake3:{blob}"), "corrupt"]);

    // The standalone blob cut short.
    b.write(&blob_rel, &blob_bytes[..blob_bytes.len() / 3]);
    attempt("truncated blob", &[&format!("blake3:{blob}"), "corrupt"]);
    b.write(&blob_rel, &blob_bytes);

    // A record naming a pack that does not exist.
    let ghost = "ab".repeat(32);
    let mut r = rec.clone();
    r["packs"][0] = json!(format!("blake3:{ghost}"));
    b.write("keys/k.key", &serde_json::to_vec_pretty(&r).unwrap());
    attempt("record naming a missing pack", &[&ghost]);

    // A record whose root is an id the remote does not hold.
    let other = format!("blake3:{}", "cd".repeat(32));
    let mut r = rec.clone();
    r["record"]["root"]["id"] = json!(other);
    b.write("keys/k.key", &serde_json::to_vec_pretty(&r).unwrap());
    attempt("record with an unknown root", &[&other]);

    // Restored, it pulls.
    b.write("keys/k.key", &rec_bytes);
    let c = Site::new();
    c.add("r", &b, &[]);
    c.json(&["pull", "r", "k"]);
    assert_same_tree(&src, &c.get("k", "out"), test);
    c.assert_verify_clean(test);
}

/// Pulls `key` from `b` into a fresh store: it must fail (exit 1, one error line naming every
/// needle) and leave the store as it was, with no key bound.
fn refused_pull(b: &Backend, key: &str, what: &str, needles: &[&str], test: &str) {
    let c = Site::new();
    c.add("r", b, &[]);
    let before = c.state();
    let line = c.fails(&["pull", "r", key], needles);
    eprintln!("{test}: {what}: {line}");
    assert_eq!(
        c.state(),
        before,
        "{test}: {what}: the failed pull changed the store"
    );
    assert!(c.keys().is_empty(), "{test}: {what}: a key was bound");
}

on!(swapped_root:
    swapped_root_file => File,
    swapped_root_s3 => S3,
    swapped_root_azure => Azure,
);

/// A key record whose root was changed to another tree the remote does hold (one of the key's
/// own folders): every object checks out, but the record's size and file count are not that
/// tree's. The pull must fail naming the root, and bind nothing.
fn swapped_root(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "swap", 60, 6);
    a.ok(&["put", "k", s(&src)]);
    a.add("r", &b, &[]);
    a.json(&["push", "r", "k"]);
    let mut rec: Value = serde_json::from_slice(&b.read("keys/k.key").unwrap()).unwrap();
    let pack = hex_of(&rec["packs"][0]);
    let entries = parse_index(&b.read(&format!("packs/{}/{pack}.idx", &pack[..2])).unwrap());
    let folder = entries
        .iter()
        .find(|e| e.kind == 2 && e.id != rec["record"]["root"]["id"])
        .expect("a folder's tree in the pack");
    rec["record"]["root"]["id"] = json!(folder.id);
    b.write("keys/k.key", &serde_json::to_vec_pretty(&rec).unwrap());
    refused_pull(
        &b,
        "k",
        "record with a folder's tree as root",
        &[&folder.id],
        test,
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Concurrent pushes.

on!(concurrent_push:
    concurrent_push_file => File,
    concurrent_push_s3 => S3,
    concurrent_push_azure => Azure,
);

/// Two processes push overlapping content to one remote at once: both succeed, and both keys
/// pull, verify and restore.
fn concurrent_push(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, z, c) = (Site::new(), Site::new(), Site::new());
    let (src1, src2) = (a.env.path("src1"), z.env.path("src2"));
    for src in [&src1, &src2] {
        small_files(src, "both", 200, 10);
        incompressible_files(src, 21, 6, 2 * 1024 * 1024);
    }
    small_files(&src1.join("own"), "one", 100, 4);
    small_files(&src2.join("own"), "two", 100, 4);
    incompressible_files(&src2.join("own"), 22, 1, 9 * 1024 * 1024);
    a.ok(&["put", "one", s(&src1)]);
    z.ok(&["put", "two", s(&src2)]);
    a.add("r", &b, &[]);
    z.add("r", &b, &[]);
    let p1 = a.spawn(&["push", "r", "one"]);
    let p2 = z.spawn(&["push", "r", "two"]);
    for (p, k) in [(p1, "one"), (p2, "two")] {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{test}: concurrent push of {k} failed ({:?}): {}",
            out.status,
            text(&out.stderr)
        );
    }
    c.add("r", &b, &[]);
    c.json(&["pull", "r", "one", "two"]);
    c.assert_verify_clean(test);
    assert_same_tree(&src1, &c.get("one", "out1"), test);
    assert_same_tree(&src2, &c.get("two", "out2"), test);
}

// ---------------------------------------------------------------------------------------------
// 8. Faults.

/// One transient fault pattern through the proxy (`cfg`, restricted to the backend's objects;
/// a `path_regex` in it applies to paths relative to the remote's root): push and pull still finish, the proxy's `counter` shows the
/// faults were injected, and the pulled key verifies and restores exactly.
fn transient_fault(kind: Kind, test: &str, mut cfg: Value, counter: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "faults", 150, 10);
    incompressible_files(&src, 31, 2, 3 * 1024 * 1024);
    put_file(&src, "large.bin", &Prng::new(32).bytes(9 * 1024 * 1024));
    a.ok(&["put", "k", s(&src)]);
    let only = cfg["path_regex"].as_str().unwrap_or("").to_string();
    cfg["path_regex"] = json!(path_regex(&b, &only));
    let f = Faults::new(&b);
    f.set(cfg.clone());
    a.add_via("r", &b, &b.options_via(&f.endpoint), &[]);
    let pushed = a.json(&["push", "r", "k"]);
    assert_eq!(pushed["keys"], json!(["k"]), "{test}: {pushed}");
    let after_push = f.counters();

    f.set(cfg);
    let c = Site::new();
    c.add_via("r", &b, &b.options_via(&f.endpoint), &[]);
    let pulled = c.json(&["pull", "r", "k"]);
    let after_pull = f.counters();
    drop(f);
    eprintln!("{test}: faults during push {after_push}, during pull {after_pull}");
    let field = format!("/{counter}");
    assert!(
        num(&after_push, &field) + num(&after_pull, &field) > 0,
        "{test}: no fault was injected: {after_push} {after_pull}"
    );
    assert_eq!(pulled["keys"][0]["key"], "k", "{pulled}");
    c.assert_verify_clean(test);
    assert_same_tree(&src, &c.get("k", "out"), test);
}

/// Defines `fn $scenario(kind, test)` running [`transient_fault`] with `$cfg`, and its tests.
macro_rules! fault {
    ($scenario:ident, $cfg:expr, $counter:literal: $($name:ident => $kind:ident),+ $(,)?) => {
        fn $scenario(kind: Kind, test: &str) {
            transient_fault(kind, test, $cfg, $counter);
        }
        on!($scenario: $($name => $kind),+);
    };
}

// 503 on the first requests, then on some.
fault!(fault_503_first, json!({"seed": 1, "error_first": 4}), "errors":
    fault_503_first_s3 => S3, fault_503_first_azure => Azure);
fault!(fault_503_some, json!({"seed": 2, "error_first": 1, "error_prob": 0.2}), "errors":
    fault_503_some_s3 => S3, fault_503_some_azure => Azure);
// Connection resets before the request reaches the server.
fault!(
    fault_reset_before,
    json!({"seed": 3, "reset_first": 1, "reset_prob": 0.2, "reset_when": "before"}),
    "resets":
    fault_reset_before_s3 => S3, fault_reset_before_azure => Azure
);
// Resets after the server acted (the response is lost).
fault!(
    fault_reset_after,
    json!({"seed": 4, "reset_first": 1, "reset_prob": 0.2, "reset_when": "after"}),
    "resets":
    fault_reset_after_s3 => S3, fault_reset_after_azure => Azure
);
// Resets half way through a response body, on any request (the first one is push's GET of the
// layout file, answered 404 on a new remote).
fault!(
    fault_reset_mid_body,
    json!({"seed": 5, "reset_first": 1, "reset_prob": 0.2, "reset_when": "mid_body"}),
    "resets":
    fault_reset_mid_body_s3 => S3, fault_reset_mid_body_azure => Azure
);
// Resets half way through a response body, on pack and blob requests only.
fault!(
    fault_reset_mid_object,
    json!({"seed": 6, "reset_first": 1, "reset_prob": 0.3, "reset_when": "mid_body",
           "path_regex": "(packs|blobs)/"}),
    "resets":
    fault_reset_mid_object_s3 => S3, fault_reset_mid_object_azure => Azure
);
// Stalls (shorter than the request timeout) before forwarding, and half way through a response.
fault!(
    fault_stall,
    json!({"seed": 7, "stall_first": 1, "stall_prob": 0.5, "stall_seconds": 1.0}),
    "stalls":
    fault_stall_s3 => S3, fault_stall_azure => Azure
);
fault!(
    fault_stall_mid_body,
    json!({"seed": 8, "stall_first": 1, "stall_prob": 0.5, "stall_seconds": 1.0,
           "stall_when": "mid_body"}),
    "stalls":
    fault_stall_mid_body_s3 => S3, fault_stall_mid_body_azure => Azure
);

on!(permanent_faults:
    permanent_faults_s3 => S3,
    permanent_faults_azure => Azure,
);

/// Faults on every request and `--retries 2`: push fails with one clear error in bounded time,
/// writes no key record and leaves the local store as it was; pull fails and binds nothing.
fn permanent_faults(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "perm", 200, 10);
    incompressible_files(&src, 51, 3, 2 * 1024 * 1024);
    put_file(&src, "large.bin", &Prng::new(52).bytes(9 * 1024 * 1024));
    a.ok(&["put", "k", s(&src)]);
    let f = Faults::new(&b);
    a.add_via("r", &b, &b.options_via(&f.endpoint), &[]);
    let cases = [
        ("503 on everything", json!({"error_prob": 1.0}), "503"),
        (
            "503 on objects and records",
            json!({"error_prob": 1.0, "path_regex": path_regex(&b, "(packs|blobs|keys)/")}),
            "503",
        ),
        (
            "resets on objects and records",
            json!({"reset_prob": 1.0, "path_regex": path_regex(&b, "(packs|blobs|keys)/")}),
            "",
        ),
    ];
    for (what, mut cfg, needle) in cases {
        if cfg.get("path_regex").is_none() {
            cfg["path_regex"] = json!(path_regex(&b, ""));
        }
        f.set(cfg);
        let before = a.state();
        let t = Instant::now();
        let line = a.fails(&["--retries", "2", "push", "r", "k"], &[&b.prefix, needle]);
        let took = t.elapsed();
        eprintln!("{test}: {what}: push failed in {took:?}: {line}");
        assert!(
            took < Duration::from_secs(30),
            "{test}: {what}: push took {took:?}"
        );
        assert_eq!(
            a.state(),
            before,
            "{test}: {what}: the failed push changed the store"
        );
        assert_eq!(
            b.read("keys/k.key"),
            None,
            "{test}: {what}: a key record was written"
        );
    }

    // Pull: the key is on the remote, every request to it fails.
    f.clear();
    a.json(&["push", "r", "k"]);
    for (what, cfg) in [
        ("503 on everything", json!({"error_prob": 1.0})),
        (
            "resets on packs and blobs",
            json!({"reset_prob": 1.0, "path_regex": path_regex(&b, "(packs|blobs)/")}),
        ),
    ] {
        let mut cfg = cfg;
        if cfg.get("path_regex").is_none() {
            cfg["path_regex"] = json!(path_regex(&b, ""));
        }
        f.set(cfg);
        let c = Site::new();
        c.add_via("r", &b, &b.options_via(&f.endpoint), &[]);
        let before = c.state();
        let t = Instant::now();
        let line = c.fails(&["--retries", "2", "pull", "r", "k"], &[&b.prefix]);
        let took = t.elapsed();
        eprintln!("{test}: pull, {what}: failed in {took:?}: {line}");
        assert!(
            took < Duration::from_secs(30),
            "{test}: pull, {what}: took {took:?}"
        );
        assert_eq!(
            c.state(),
            before,
            "{test}: pull, {what}: the failed pull changed the store"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. get --remote, and remote failures as cache misses.

on!(get_from_remote:
    get_from_remote_file => File,
    get_from_remote_s3 => S3,
    get_from_remote_azure => Azure,
    get_from_remote_gcs => Gcs,
);

/// `get --remote` on a cold store pulls and restores; a key on no remote is one error line.
fn get_from_remote(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let (a, c) = (Site::new(), Site::new());
    let src = a.env.path("src");
    small_files(&src, "cold", 120, 6);
    special_entries(&src);
    put_file(&src, "large.bin", &Prng::new(61).bytes(9 * 1024 * 1024 + 1));
    a.ok(&["put", "cold", s(&src)]);
    if kind != Kind::Gcs {
        a.add("r", &b, &[]);
    }
    b.publish(&a, "r", &["cold"]);

    c.add("r", &b, &[]);
    let out = c.env.path("out");
    c.ok(&["get", "cold", s(&out), "--remote", "r"]);
    assert_same_tree(&src, &out, test);
    assert_eq!(c.keys(), ["cold"]);
    c.assert_verify_clean(test);

    let nowhere = c.env.path("nowhere");
    c.fails(
        &["get", "absent", s(&nowhere), "--remote", "r"],
        &["unknown key absent"],
    );
    assert!(
        !nowhere.exists(),
        "{test}: a failed get created its destination"
    );
}

on!(unreachable_remote:
    unreachable_remote_file => File,
    unreachable_remote_s3 => S3,
    unreachable_remote_azure => Azure,
);

/// A remote that cannot be reached: with `--no-fail-on-cache-error`, `put --push` succeeds with a
/// warning and `get` reports a miss (with a warning), not a remote error; without it, both are
/// remote errors.
fn unreachable_remote(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    // A file:// remote under a regular file can never be created.
    let blocker = a.env.path("blocker");
    std::fs::write(&blocker, b"a file").unwrap();
    let dead_url = match kind {
        Kind::File => format!("file://{}/remote", blocker.display()),
        _ => b.url(),
    };
    let dead_endpoint = match kind {
        Kind::S3 => format!("http://127.0.0.1:{}", closed_port()),
        Kind::Azure => format!("http://127.0.0.1:{}/devstoreaccount1", closed_port()),
        _ => String::new(),
    };
    let dead: &str = if kind == Kind::File {
        &dead_url
    } else {
        a.add_via("dead", &b, &b.options_via(&dead_endpoint), &[]);
        "dead"
    };
    let src = a.env.path("src");
    small_files(&src, "dead", 20, 2);

    let out = a.run(&[
        "--no-fail-on-cache-error",
        "put",
        "k",
        s(&src),
        "--push",
        dead,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{test}: put --push: {stderr}");
    assert!(
        text(&out.stdout).trim().starts_with("blake3:"),
        "{test}: put prints the id"
    );
    assert!(
        stderr.contains("WARN") && stderr.contains("remote failed"),
        "{test}: put --push to an unreachable remote gave no warning: {stderr:?}"
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("cairn: error:")),
        "{test}: {stderr:?}"
    );
    assert_eq!(a.keys(), ["k"]);
    a.fails(
        &["push", dead, "k"],
        &[&dead_url_or_prefix(kind, &dead_url, &b)],
    );

    let c = Site::new();
    if kind != Kind::File {
        c.add_via("dead", &b, &b.options_via(&dead_endpoint), &[]);
    }
    let dest = c.env.path("out");
    let out = c.run(&[
        "--no-fail-on-cache-error",
        "get",
        "k",
        s(&dest),
        "--remote",
        dead,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{test}: get: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 2 && lines[..lines.len() - 1].iter().all(|l| l.contains("WARN")),
        "{test}: get with --no-fail-on-cache-error: want warnings then one error: {stderr:?}"
    );
    assert!(
        lines[lines.len() - 1].starts_with("cairn: error: unknown key k "),
        "{test}: get with --no-fail-on-cache-error: want a miss, got: {stderr:?}"
    );
    assert!(!dest.exists());
    // Without the flag, the remote's failure is the error.
    c.fails(
        &["get", "k", s(&dest), "--remote", dead],
        &[&dead_url_or_prefix(kind, &dead_url, &b)],
    );
    assert!(c.keys().is_empty());
}

fn dead_url_or_prefix(kind: Kind, dead_url: &str, b: &Backend) -> String {
    if kind == Kind::File {
        dead_url.to_string()
    } else {
        b.url()
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Read-only remotes.

on!(read_only_remote:
    read_only_remote_file => File,
    read_only_remote_s3 => S3,
    read_only_remote_azure => Azure,
);

/// A remote added `--read-only` refuses push and is left untouched, but pulls.
fn read_only_remote(kind: Kind, test: &str) {
    let Some(b) = Backend::new(kind, test) else {
        return;
    };
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "ro", 30, 3);
    a.ok(&["put", "k", s(&src)]);
    a.add("ro", &b, &["--read-only"]);
    a.fails(&["push", "ro", "k"], &["read-only", &b.url()]);
    a.fails(&["push", "ro", "--all"], &["read-only"]);
    let out = a.run(&["put", "k2", s(&src), "--push", "ro"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{test}: put --push to a read-only remote"
    );
    assert!(
        b.list("").is_empty(),
        "{test}: wrote to a read-only remote: {:?}",
        b.list("")
    );

    a.add("rw", &b, &[]);
    a.json(&["push", "rw", "k"]);
    let c = Site::new();
    c.add("ro", &b, &["--read-only"]);
    c.json(&["pull", "ro", "k"]);
    assert_same_tree(&src, &c.get("k", "out"), test);
}

/// Serves `dir` over HTTP on a free loopback port with `python3 SCRIPT… PORT-ARGS`; returns the
/// server (killed on drop) and its port, read from its first line of output.
fn serve(args: &[&str]) -> (ChildGuard, u16) {
    let mut child = Command::new("python3")
        .arg("-u")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (ChildGuard(child), port)
}

/// `http.server` with single-range `Range: bytes=A-B` support (206 + Content-Range).
const RANGE_SERVER: &str = r#"
import http.server, os, re, sys
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def send_head(self):
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("Range") or "").strip())
        path = self.translate_path(self.path)
        if not m or not os.path.isfile(path):
            self.remaining = None
            return super().send_head()
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size:
            f.close()
            self.send_error(416)
            return None
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Last-Modified", self.date_time_string(int(os.fstat(f.fileno()).st_mtime)))
        self.end_headers()
        self.remaining = end - start + 1
        return f
    def copyfile(self, src, dst):
        if self.remaining is None:
            return super().copyfile(src, dst)
        while self.remaining > 0:
            b = src.read(min(self.remaining, 65536))
            if not b:
                break
            dst.write(b)
            self.remaining -= len(b)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: H(*a, directory=sys.argv[1]))
print(f"Serving HTTP on 127.0.0.1 port {srv.server_address[1]}", flush=True)
srv.serve_forever()
"#;

/// An `http://` remote is read-only; pulling from it needs a server that answers range requests.
/// Python's `http.server` does not (it answers 200 with the whole file): the pull fails, naming
/// the pack and the missing range support, and binds nothing. A server that does serve ranges
/// works.
#[test]
fn http_remote_is_read_only_and_needs_range_requests() {
    let test = "http_remote";
    let a = Site::new();
    let src = a.env.path("src");
    small_files(&src, "http", 80, 4);
    special_entries(&src);
    put_file(&src, "large.bin", &Prng::new(71).bytes(9 * 1024 * 1024 + 5));
    a.ok(&["put", "k", s(&src)]);
    let served = a.env.path("www");
    let cache = served.join("pub/cache");
    let pushed = a.json(&["push", &format!("file://{}", cache.display()), "k"]);
    assert_eq!(pushed["keys"], json!(["k"]));
    let files_before = crate::common::files_under(&served);

    // python3 -m http.server: no Range support.
    {
        let (_srv, port) = serve(&[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "0",
            "--directory",
            s(&served),
        ]);
        let url = format!("http://127.0.0.1:{port}/pub/cache/");
        let c = Site::new();
        let before = c.state();
        let line = c.fails(&["pull", &url, "k"], &["packs/", ".pack", "Range"]);
        eprintln!("{test}: python -m http.server: {line}");
        assert_eq!(c.state(), before, "{test}: failed pull changed the store");
        a.fails(&["push", &url, "k"], &["read-only"]);
    }

    // A server with Range support.
    let (_srv, port) = serve(&["-c", RANGE_SERVER, s(&served)]);
    let url = format!("http://127.0.0.1:{port}/pub/cache/");
    let c = Site::new();
    let pulled = c.json(&["pull", &url, "k"]);
    assert_eq!(pulled["keys"][0]["key"], "k", "{pulled}");
    assert_same_tree(&src, &c.get("k", "out"), test);
    c.assert_verify_clean(test);
    a.fails(&["push", &url, "k"], &["read-only"]);
    c.ok(&["remote", "add", "web", &url]);
    c.fails(&["push", "web", "k"], &["read-only"]);
    assert_eq!(
        crate::common::files_under(&served),
        files_before,
        "{test}: the served folder changed"
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials.

/// An S3 remote with no credentials anywhere says so, naming where cairn looked, instead of
/// reporting the failed instance-metadata request it fell back to; credentials in the shared
/// credentials file (a profile) are found and used.
#[test]
fn an_s3_remote_without_credentials_says_where_it_looked() {
    let Some(b) = Backend::new(Kind::S3, "no_credentials") else {
        return;
    };
    let site = Site::new();
    site.add("s3", &b, &[]);
    let src = site.env.path("src");
    small_files(&src, "creds", 5, 1);
    site.ok(&["put", "k", s(&src)]);
    let home = site.env.path("home");
    std::fs::create_dir_all(&home).unwrap();
    // No credentials in the environment, no ~/.aws, and an instance metadata service that
    // refuses connections (the real one is unreachable here, and slow to time out).
    let without = |extra: &[(&str, String)]| {
        let mut c = site.cmd(&["--retries", "0", "push", "s3", "k"]);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env("HOME", &home)
            .env(
                "AWS_METADATA_ENDPOINT",
                format!("http://127.0.0.1:{}", closed_port()),
            );
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().expect("run cairn")
    };
    let out = without(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_one_error_line(
        &stderr,
        &[
            "no credentials found",
            "AWS_ACCESS_KEY_ID",
            "~/.aws/credentials",
            "instance metadata",
            &b.url(),
        ],
    );
    // A profile in the shared credentials file is used.
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n\
         [ci]\naws_access_key_id = test\naws_secret_access_key = test\n",
    )
    .unwrap();
    let out = without(&[("AWS_PROFILE", "ci".into())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A profile the file lacks is an error that names it.
    let out = without(&[("AWS_PROFILE", "missing".into())]);
    assert_one_error_line(&text(&out.stderr), &["AWS_PROFILE=missing", "credentials"]);
}
