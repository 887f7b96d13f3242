//! The process side: a temporary store and the `cairn` binary run against it, and how a
//! command's outcome is checked (one error line, nothing changed).

use std::collections::BTreeMap;
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

/// `path` as a `&str` (test paths are always UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
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
