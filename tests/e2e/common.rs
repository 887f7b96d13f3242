//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary folder holding a store, with a way to run `cairn` against it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// A `cairn` command with `--store` set and a clean environment for the variables cairn reads.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.arg("--store").arg(self.store());
        c.env_remove("CAIRN_STORE")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("RUST_LOG");
        // Nothing from the user's own setup: no remotes config (a `get` of an unknown key
        // would try the configured default remote), lock timeout or compression level.
        c.env_remove("CAIRN_CONFIG")
            .env_remove("CAIRN_LOCK_TIMEOUT")
            .env_remove("CAIRN_COMPRESSION_LEVEL")
            .env("XDG_CONFIG_HOME", self.path("xdg-config"));
        c
    }

    /// Runs cairn with `args`; returns the output whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run cairn")
    }

    /// Runs cairn with `args` and expects success; returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 stdout")
            .trim()
            .to_string()
    }

    /// Runs cairn with `args`, expects failure, and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "cairn {args:?} unexpectedly succeeded"
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }
}

/// Writes `content` at `root/rel`, creating parent folders.
pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A small tree with files, an executable, a symlink and an empty folder.
pub fn sample_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    write(root, "a/f.txt", b"hello\n");
    write(root, "a/b/big.txt", &b"0123456789abcdef".repeat(50_000));
    write(root, "run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../run.sh", root.join("a/link")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Helpers for the bad-input, hostile-archive and feature tests.

use std::collections::BTreeMap;

/// Everything a user can observe about a store: its keys, the blob files on disk (by path, with
/// the SHA-256 of their bytes), what the index records, and leftover temporary files.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreState {
    pub keys: serde_json::Value,
    pub blob_files: BTreeMap<String, String>,
    pub indexed_blobs: u64,
    pub indexed_trees: u64,
    pub tmp_files: Vec<String>,
}

impl Env {
    /// Runs cairn with `--json` and `args`, expects success, and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cairn {all:?}: bad JSON {e}: {out}"))
    }

    /// Runs cairn with `args` and returns its exit code (panics if killed by a signal).
    pub fn code(&self, args: &[&str]) -> i32 {
        self.run(args)
            .status
            .code()
            .unwrap_or_else(|| panic!("cairn {args:?} killed by a signal"))
    }

    /// The store's observable state; `verify` must find it clean.
    pub fn state(&self) -> StoreState {
        let keys = self.json(&["ls"]);
        let v = self.json(&["verify"]);
        assert_eq!(v["clean"], true, "store is not clean: {v}");
        let tmp_files = match std::fs::read_dir(self.store().join("tmp")) {
            Ok(rd) => {
                let mut names: Vec<String> = rd
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names
            }
            Err(_) => Vec::new(),
        };
        StoreState {
            keys,
            blob_files: self.object_files(),
            indexed_blobs: v["blobs"].as_u64().expect("blobs count"),
            indexed_trees: v["trees"].as_u64().expect("trees count"),
            tmp_files,
        }
    }

    /// Runs cairn with `args` and expects it to be refused: exit status 1, one `cairn: error:`
    /// line on stderr containing every one of `needles`, nothing on stdout, and the store
    /// exactly as it was (keys, blob files, index, no temp files left, `verify` clean).
    /// Returns the error line.
    pub fn refused(&self, args: &[&str], needles: &[&str]) -> String {
        let before = self.state();
        let line = self.refusal(args, needles);
        let after = self.state();
        assert_eq!(before, after, "cairn {args:?} changed the store");
        line
    }

    /// Like [`Env::refused`] without the store comparison, for callers that compare the
    /// store's state once around a batch of refusals.
    pub fn refusal(&self, args: &[&str], needles: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "cairn {args:?}: want exit 1, got {:?}; stderr: {stderr}",
            out.status
        );
        assert!(
            out.stdout.is_empty(),
            "cairn {args:?} printed on stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_one_error_line(&stderr, needles);
        stderr.trim_end().to_string()
    }

    /// Every file that holds objects: blob files under `blobs/` and pack files under `packs/`
    /// (paths relative to the store, with the SHA-256 of their bytes).
    pub fn object_files(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for top in ["blobs", "packs"] {
            for (rel, digest) in files_under(&self.store().join(top)) {
                out.insert(format!("{top}/{rel}"), digest);
            }
        }
        out
    }

    /// Where blob `id` (`blake3:<hex>`) is stored, which must be exactly one place: its own
    /// file (raw or zstd) or an entry of a pack file, found by reading the packs as
    /// `docs/format.md` describes them (independently of cairn's code).
    pub fn stored(&self, id: &str) -> Stored {
        let mut found = self.stored_all(id);
        assert_eq!(found.len(), 1, "blob {id} is stored in {found:?}");
        found.pop().unwrap()
    }

    /// Every place holding bytes of blob `id`: a blob can have dead copies in packs (written
    /// by an import that found it present only at its commit) besides the one the index uses.
    pub fn stored_all(&self, id: &str) -> Vec<Stored> {
        let hex = id.strip_prefix("blake3:").expect("an id");
        let dir = self.store().join("blobs").join(&hex[..2]);
        let mut found = Vec::new();
        for (name, zstd) in [(hex.to_string(), false), (format!("{hex}.zst"), true)] {
            let p = dir.join(name);
            if let Ok(m) = std::fs::metadata(&p) {
                found.push(Stored {
                    path: p,
                    offset: 0,
                    len: m.len(),
                    zstd,
                    packed: false,
                });
            }
        }
        for e in pack_entries(&self.store()) {
            if e.id == hex {
                found.push(e.stored);
            }
        }
        assert!(!found.is_empty(), "blob {id} is not stored");
        found
    }

    /// The ids of all blobs with stored bytes in the store (files and pack entries).
    pub fn stored_ids(&self) -> std::collections::BTreeSet<String> {
        let mut out: std::collections::BTreeSet<String> = pack_entries(&self.store())
            .into_iter()
            .map(|e| format!("blake3:{}", e.id))
            .collect();
        for rel in files_under(&self.store().join("blobs")).keys() {
            let name = rel.rsplit('/').next().unwrap();
            let hex = name.strip_suffix(".zst").unwrap_or(name);
            if hex.len() == 64 {
                out.insert(format!("blake3:{hex}"));
            }
        }
        out
    }
}

/// Where a blob's stored bytes are: a whole blob file, or a range of a pack file.
#[derive(Debug, Clone)]
pub struct Stored {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    /// The stored bytes are a zstd frame.
    pub zstd: bool,
    pub packed: bool,
}

impl Stored {
    /// The stored bytes.
    pub fn read(&self) -> Vec<u8> {
        let all = std::fs::read(&self.path).unwrap();
        all[self.offset as usize..(self.offset + self.len) as usize].to_vec()
    }

    /// Replaces the stored bytes with `bytes`: the whole blob file, or the same number of
    /// bytes in place inside a pack.
    pub fn write(&self, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o644)).unwrap();
        if !self.packed {
            std::fs::write(&self.path, bytes).unwrap();
            return;
        }
        assert_eq!(
            bytes.len() as u64,
            self.len,
            "a pack entry is rewritten in place"
        );
        let mut all = std::fs::read(&self.path).unwrap();
        all[self.offset as usize..(self.offset + self.len) as usize].copy_from_slice(bytes);
        std::fs::write(&self.path, all).unwrap();
    }

    /// Cuts the stored bytes after `keep` bytes: truncates the blob file, or the pack file
    /// (which also cuts off every entry after this one).
    pub fn cut(&self, keep: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap();
        f.set_len(self.offset + keep).unwrap();
    }

    /// The whole file the bytes are in, to put back with [`Stored::restore`].
    pub fn snapshot(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    pub fn restore(&self, file: &[u8]) {
        std::fs::write(&self.path, file).unwrap();
    }
}

/// One entry of a pack file.
pub struct PackEntry {
    pub id: String,
    pub stored: Stored,
}

/// Every entry of every pack file in `store`, parsed as `docs/format.md` ("Pack files")
/// describes them: a 16-byte magic, then entries of id (32 bytes), encoding (1: 0 raw, 1 zstd),
/// content size (u64 LE), stored size (u64 LE) and the stored bytes.
pub fn pack_entries(store: &Path) -> Vec<PackEntry> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(store.join("packs")) else {
        return out;
    };
    for ent in rd {
        let path = ent.unwrap().path();
        if path.extension().is_none_or(|e| e != "pack") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            &bytes[..16],
            b"cairn-pack\n\0\0\0\0\x01",
            "{}",
            path.display()
        );
        let mut pos = 16usize;
        while pos + 49 <= bytes.len() {
            let id = hex::encode(&bytes[pos..pos + 32]);
            let enc = bytes[pos + 32];
            let stored = u64::from_le_bytes(bytes[pos + 41..pos + 49].try_into().unwrap());
            let offset = (pos + 49) as u64;
            assert!(enc <= 1, "{}: bad encoding at {pos}", path.display());
            assert!(
                offset + stored <= bytes.len() as u64,
                "{}: cut entry",
                path.display()
            );
            out.push(PackEntry {
                id,
                stored: Stored {
                    path: path.clone(),
                    offset,
                    len: stored,
                    zstd: enc == 1,
                    packed: true,
                },
            });
            pos = (offset + stored) as usize;
        }
    }
    out
}

/// Asserts that `stderr` is exactly one line, starting `cairn: error:`, containing each needle.
pub fn assert_one_error_line(stderr: &str, needles: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line on stderr, got: {stderr:?}");
    assert!(
        lines[0].starts_with("cairn: error: "),
        "stderr does not start with `cairn: error: `: {stderr:?}"
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "stderr does not name {n:?}: {stderr:?}"
        );
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every regular file under `dir` (recursively), by `/`-separated relative path, with the
/// SHA-256 of its bytes. A missing `dir` gives an empty map.
pub fn files_under(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for ent in rd {
            let p = ent.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                let digest = if md.is_file() {
                    sha256_hex(&std::fs::read(&p).unwrap())
                } else {
                    format!("non-regular {:?}", md.file_type())
                };
                out.insert(rel, digest);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every name under `dir` (recursively, symlinks not followed), `/`-separated and sorted.
pub fn names_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for ent in rd {
            let p = ent.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `path` as a `&str` (test paths are always UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------------------------------
// Helpers for the concurrency and crash tests.

/// A small deterministic PRNG (xorshift64*), so that a failing randomized run can be replayed
/// from the seed it printed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The seed of a randomized test: `CAIRN_TEST_SEED` if set, else taken from the clock. It is
/// printed (shown when the test fails) so that the run can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("CAIRN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (CAIRN_TEST_SEED={seed} replays it)");
    seed
}

/// One entry of a [`TreeModel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// Content and whether it is executable.
    File(Vec<u8>, bool),
    Symlink(String),
}

/// A tree held in memory: `/`-separated relative path -> entry, parents before children.
pub type TreeModel = std::collections::BTreeMap<String, Node>;

/// The tree [`gen_tree`] writes: `small` small files spread over folders, an executable, a
/// symlink, an empty folder, and one file of `n` bytes per entry of `big` (pseudo-random, so
/// incompressible, for even entries; compressible text for odd ones). Every eighth small file
/// and the big files depend on `tag`; the other small files are the same for every tag, so
/// trees made with different tags share most of their blobs (and differ in the same paths).
pub fn tree_model(tag: &str, small: usize, big: &[usize]) -> TreeModel {
    const DIRS: usize = 40;
    let mut m = TreeModel::new();
    for d in 0..DIRS.min(small.max(1)) {
        m.insert(format!("d{d:02}"), Node::Dir);
    }
    for i in 0..small {
        let line = if i % 8 == 0 {
            format!("{tag} file {i}\n")
        } else {
            format!("file {i}\n")
        };
        m.insert(
            format!("d{:02}/f{i}.txt", i % DIRS),
            Node::File(line.repeat(i % 7 + 1).into_bytes(), false),
        );
    }
    m.insert("bin".into(), Node::Dir);
    m.insert(
        "bin/run.sh".into(),
        Node::File(format!("#!/bin/sh\necho {tag}\n").into_bytes(), true),
    );
    m.insert("d00/link".into(), Node::Symlink("../bin/run.sh".into()));
    m.insert("empty".into(), Node::Dir);
    let mut rng = Rng::new(tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    }));
    for (j, &n) in big.iter().enumerate() {
        let mut data = vec![0u8; n];
        if j % 2 == 0 {
            rng.fill(&mut data);
        } else {
            let text = format!("{tag} line of compressible text {j}\n").repeat(n / 30 + 1);
            data.copy_from_slice(&text.as_bytes()[..n]);
        }
        m.insert(format!("big{j}.bin"), Node::File(data, false));
    }
    m
}

fn write_node(root: &Path, rel: &str, node: &Node) {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(rel);
    match node {
        Node::Dir => std::fs::create_dir_all(&p).unwrap(),
        Node::File(data, exec) => {
            std::fs::write(&p, data).unwrap();
            let mode = if *exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Symlink(target) => {
            let _ = std::fs::remove_file(&p);
            std::os::unix::fs::symlink(target, &p).unwrap();
        }
    }
}

/// Writes `model` under `root`.
pub fn write_model(root: &Path, model: &TreeModel) {
    std::fs::create_dir_all(root).unwrap();
    for (rel, node) in model {
        write_node(root, rel, node);
    }
}

/// Turns the tree `old` written under `root` into `new` (same paths, as [`tree_model`] makes
/// for different tags), rewriting only the entries that differ.
pub fn rewrite_model(root: &Path, old: &TreeModel, new: &TreeModel) {
    assert!(old.keys().eq(new.keys()), "models with different paths");
    for (rel, node) in new {
        if old.get(rel) != Some(node) {
            write_node(root, rel, node);
        }
    }
}

/// Writes [`tree_model`]`(tag, small, big)` under `root`.
pub fn gen_tree(root: &Path, tag: &str, small: usize, big: &[usize]) {
    write_model(root, &tree_model(tag, small, big));
}

/// The first difference between `model` and the folder `actual`, or `None` if it holds exactly
/// the model's entries, contents, executable bits and symlink targets.
pub fn model_diff(model: &TreeModel, actual: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = TreeModel::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = actual.join(&rel);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return Some(format!("{}: {e}", dir.display())),
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let node = if md.file_type().is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap();
                Node::Symlink(t.into_os_string().into_string().unwrap())
            } else if md.is_dir() {
                stack.push(sub.clone());
                Node::Dir
            } else {
                let data = std::fs::read(e.path()).unwrap();
                Node::File(data, md.permissions().mode() & 0o100 != 0)
            };
            found.insert(sub, node);
        }
    }
    if found.keys().ne(model.keys()) {
        let extra: Vec<_> = found.keys().filter(|k| !model.contains_key(*k)).collect();
        let missing: Vec<_> = model.keys().filter(|k| !found.contains_key(*k)).collect();
        return Some(format!(
            "{}: missing {missing:?}, unexpected {extra:?}",
            actual.display()
        ));
    }
    for (rel, want) in model {
        let got = &found[rel];
        if got != want {
            let show = |n: &Node| match n {
                Node::File(d, x) => format!("file of {} bytes (executable: {x})", d.len()),
                other => format!("{other:?}"),
            };
            return Some(format!(
                "{}/{rel}: {}, want {}",
                actual.display(),
                show(got),
                show(want)
            ));
        }
    }
    None
}

/// The first difference between the tree (or file) `expected` and `actual`: names, types, file
/// contents, executable bits and symlink targets. `None` if they match.
pub fn tree_diff(expected: &Path, actual: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    fn cmp(e: &Path, a: &Path) -> Result<(), String> {
        let me = std::fs::symlink_metadata(e).map_err(|x| format!("{}: {x}", e.display()))?;
        let ma = std::fs::symlink_metadata(a).map_err(|x| format!("{}: {x}", a.display()))?;
        let (te, ta) = (me.file_type(), ma.file_type());
        if te.is_symlink() || ta.is_symlink() {
            let le = std::fs::read_link(e).ok();
            let la = std::fs::read_link(a).ok();
            if le != la {
                return Err(format!("{}: symlink {la:?}, want {le:?}", a.display()));
            }
        } else if te.is_dir() {
            if !ta.is_dir() {
                return Err(format!("{}: not a directory", a.display()));
            }
            let names = |d: &Path| -> Result<Vec<std::ffi::OsString>, String> {
                let mut v: Vec<_> = std::fs::read_dir(d)
                    .map_err(|x| format!("{}: {x}", d.display()))?
                    .map(|x| x.unwrap().file_name())
                    .collect();
                v.sort();
                Ok(v)
            };
            let (ne, na) = (names(e)?, names(a)?);
            if ne != na {
                return Err(format!("{}: holds {na:?}, want {ne:?}", a.display()));
            }
            for n in ne {
                cmp(&e.join(&n), &a.join(&n))?;
            }
        } else if te.is_file() {
            if !ta.is_file() {
                return Err(format!("{}: not a regular file", a.display()));
            }
            let xe = me.permissions().mode() & 0o100 != 0;
            let xa = ma.permissions().mode() & 0o100 != 0;
            if xe != xa {
                return Err(format!("{}: executable {xa}, want {xe}", a.display()));
            }
            let ce = std::fs::read(e).map_err(|x| format!("{}: {x}", e.display()))?;
            let ca = std::fs::read(a).map_err(|x| format!("{}: {x}", a.display()))?;
            if ce != ca {
                return Err(format!(
                    "{}: {} bytes differ from the {} expected",
                    a.display(),
                    ca.len(),
                    ce.len()
                ));
            }
        } else if te != ta {
            return Err(format!("{}: type {ta:?}, want {te:?}", a.display()));
        }
        Ok(())
    }
    cmp(expected, actual).err()
}

/// Panics unless `actual` is an exact copy of `expected` (see [`tree_diff`]).
pub fn assert_same_tree(expected: &Path, actual: &Path, context: &str) {
    if let Some(d) = tree_diff(expected, actual) {
        panic!("{context}: restored tree differs from its source: {d}");
    }
}

impl Env {
    /// `ls --json` as (key, root id) pairs, in key order.
    pub fn key_roots(&self) -> Vec<(String, String)> {
        let out = self.ok(&["--json", "ls"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ls --json");
        v.as_array()
            .expect("ls --json gives an array")
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().expect("key").to_string(),
                    r["root"]["id"].as_str().expect("root id").to_string(),
                )
            })
            .collect()
    }

    /// Runs `verify` on the whole store and panics unless it exits 0 and reports it clean.
    pub fn assert_verify_clean(&self, context: &str) {
        let out = self.run(&["--json", "verify"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.code() == Some(0),
            "{context}: verify exited {:?}: {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("verify --json");
        assert_eq!(v["clean"], true, "{context}: verify: {v}");
    }

    /// `cairn ARGS`, started with stdin and stdout closed and stderr captured.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cairn")
    }
}

// ---------------------------------------------------------------------------------------------
// Builders of hostile inputs: tar archives byte by byte, compression, OCI layouts.

/// Tar archives written byte by byte, since tar libraries refuse to write most hostile ones.
pub mod tarb {
    pub const BLOCK: usize = 512;

    /// A ustar header with `name` (and `link`) written straight into their fields, so that names a
    /// tar library would refuse (`..`, absolute) can be built. Sizes and modes as given.
    pub fn header(name: &[u8], kind: tar::EntryType, size: usize, link: &[u8]) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size as u64);
        h.set_entry_type(kind);
        {
            let old = h.as_old_mut();
            assert!(name.len() <= old.name.len(), "name too long for the field");
            old.name[..name.len()].copy_from_slice(name);
            assert!(
                link.len() <= old.linkname.len(),
                "link too long for the field"
            );
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        *h.as_bytes()
    }

    /// Appends one entry (header, data, padding).
    pub fn entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
        out.extend_from_slice(&header(name.as_bytes(), kind, data.len(), link.as_bytes()));
        out.extend_from_slice(data);
        pad(out);
    }

    pub fn pad(out: &mut Vec<u8>) {
        let rem = out.len() % BLOCK;
        if rem != 0 {
            out.resize(out.len() + BLOCK - rem, 0);
        }
    }

    pub fn file(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        entry(out, name, tar::EntryType::Regular, "", data);
    }

    pub fn dir(out: &mut Vec<u8>, name: &str) {
        entry(out, name, tar::EntryType::Directory, "", b"");
    }

    pub fn symlink(out: &mut Vec<u8>, name: &str, target: &str) {
        entry(out, name, tar::EntryType::Symlink, target, b"");
    }

    pub fn hardlink(out: &mut Vec<u8>, name: &str, target: &str) {
        entry(out, name, tar::EntryType::Link, target, b"");
    }

    /// A pax extended header setting `path` for the next entry.
    pub fn pax_path(out: &mut Vec<u8>, path: &str) {
        let body = format!(" path={path}\n");
        // The record's length counts its own digits.
        let mut len = body.len() + 1;
        while format!("{len}").len() + body.len() != len {
            len += 1;
        }
        let record = format!("{len}{body}");
        entry(
            out,
            "PaxHeaders/x",
            tar::EntryType::XHeader,
            "",
            record.as_bytes(),
        );
    }

    /// A GNU long-name entry setting the name of the next entry.
    pub fn gnu_long_name(out: &mut Vec<u8>, name: &str) {
        let mut h = tar::Header::new_gnu();
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&data);
        pad(out);
    }

    /// The end-of-archive marker.
    pub fn finish(mut out: Vec<u8>) -> Vec<u8> {
        out.extend_from_slice(&[0u8; 2 * BLOCK]);
        out
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// `n` pseudo-random bytes (xorshift).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

use serde_json::{Value, json};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A tar of `files` (path, content), written byte by byte with fixed metadata.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p, *c).unwrap();
    }
    b.into_inner().unwrap()
}

/// A tar of a folder as buildx writes an OCI archive: every file, sorted, relative names.
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let files = files_under(dir);
    let data: Vec<(String, Vec<u8>)> = files
        .keys()
        .map(|p| (p.clone(), std::fs::read(dir.join(p)).unwrap()))
        .collect();
    let refs: Vec<(&str, &[u8])> = data
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    tar_of(&refs)
}

/// An OCI layout being built in a folder.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Layout {
        write(&dir, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        Layout { dir }
    }

    /// Stores a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let hex = sha256_hex(bytes);
        write(&self.dir, &format!("blobs/sha256/{hex}"), bytes);
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    pub fn json_blob(&self, media_type: &str, v: &Value) -> Value {
        self.blob(media_type, &serde_json::to_vec(v).unwrap())
    }

    /// An image manifest over `layers` (media type, bytes) with a config for `arch`.
    pub fn image(&self, arch: &str, layers: &[(&str, Vec<u8>)]) -> Value {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(mt, b)| format!("sha256:{}", sha256_hex(&uncompressed(mt, b))))
            .collect();
        let config = self.json_blob(
            OCI_CONFIG,
            &json!({"architecture": arch, "os": "linux", "config": {},
                    "rootfs": {"type": "layers", "diff_ids": diff_ids}}),
        );
        let layers: Vec<Value> = layers.iter().map(|(mt, b)| self.blob(mt, b)).collect();
        let mut d = self.json_blob(
            OCI_MANIFEST,
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                    "layers": layers}),
        );
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    }

    pub fn index(&self, manifests: Vec<Value>) {
        write(
            &self.dir,
            "index.json",
            &serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                        "manifests": manifests}))
            .unwrap(),
        );
    }
}

/// A layer's tar as its media type says it is compressed (a config's diff_ids hash that, and
/// umoci checks it); the bytes themselves when they do not decompress (hostile layers, whose
/// diff_id nobody gets to check).
fn uncompressed(media_type: &str, b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let ok = if media_type.ends_with("gzip") {
        flate2::read::MultiGzDecoder::new(b)
            .read_to_end(&mut out)
            .is_ok()
    } else if media_type.ends_with("zstd") {
        zstd::stream::read::Decoder::new(b)
            .and_then(|mut d| d.read_to_end(&mut out))
            .is_ok()
    } else {
        false
    };
    if ok { out } else { b.to_vec() }
}

pub fn named(mut d: Value, name: &str) -> Value {
    d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    d
}

/// A single-platform image with a plain, a gzip and a zstd layer, named `name`.
pub fn simple_layout(dir: PathBuf, name: &str, extra: &[u8]) -> Layout {
    let l = Layout::new(dir);
    let t1 = tar_of(&[("etc/hello", b"hello\n"), ("bin/x", extra)]);
    let t2 = tar_of(&[("etc/two", b"two\n")]);
    let t3 = tar_of(&[("etc/three", &b"three\n".repeat(1000))]);
    let m = l.image(
        "amd64",
        &[
            ("application/vnd.oci.image.layer.v1.tar", t1),
            ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&t2)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", zstd(&t3)),
        ],
    );
    l.index(vec![named(m, name)]);
    l
}
