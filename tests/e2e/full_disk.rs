//! Full disk: `put`, `pull` and `get` on a small tmpfs that fills up fail with one error line
//! naming the cause ("No space left on device"), exit 1, bind nothing, leave no temp files and
//! leave the store verifying clean; once space is freed the same command succeeds.
//!
//! The tests mount their own 16 MiB tmpfs. As root (CI) they mount it directly; otherwise they
//! re-run themselves inside a user and mount namespace (`unshare -Urm`), where mounting a tmpfs
//! is allowed. If neither works, they fail, saying why: they are never skipped silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Env, StoreState, assert_one_error_line, gen_tree, noise, s, tree_diff};

/// Set in the environment of the test binary re-run inside a user namespace.
const IN_USERNS: &str = "CAIRN_TEST_IN_USERNS";

/// The disk-full cause as the OS words it (ENOSPC).
const ENOSPC: &str = "No space left on device";

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("effective uid in /proc/self/status")
}

/// Runs the test `name` (this module's) as root: returns true if the caller is root (or in a
/// namespace where it is) and should run the body; false if the body already ran, and passed,
/// in a user namespace. Panics, with the reason, if the test cannot get a tmpfs at all.
fn as_root(name: &str) -> bool {
    if euid() == 0 {
        return true;
    }
    assert!(
        std::env::var_os(IN_USERNS).is_none(),
        "{name}: not root inside the user namespace"
    );
    let exe = std::env::current_exe().expect("test binary");
    let test = format!("full_disk::{name}");
    let out = Command::new("unshare")
        .args(["-Urm", "--"])
        .arg(&exe)
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_USERNS, "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{name}: needs root or `unshare -Urm` (util-linux) to mount a tmpfs, and running \
                 unshare failed: {e}"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name}: not root, and the run in a user namespace (unshare -Urm) failed ({:?}); \
         this test needs root or unprivileged user namespaces to mount a tmpfs:\n{stdout}\n{stderr}",
        out.status
    );
    eprint!("{stderr}");
    false
}

/// A tmpfs of `mib` MiB mounted at a fresh folder, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {}: {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Free bytes on the filesystem.
    fn free(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "--format=%a %S"])
            .arg(self.dir.path())
            .output()
            .expect("run stat");
        let t = String::from_utf8_lossy(&out.stdout);
        let v: Vec<u64> = t.split_whitespace().map(|x| x.parse().unwrap()).collect();
        v[0] * v[1]
    }

    /// Fills the filesystem with the file `filler` until at most `leave` bytes are free.
    fn fill(&self, leave: u64) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("filler"))
            .unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            let free = self.free();
            if free <= leave {
                break;
            }
            let n = ((free - leave) as usize).min(chunk.len());
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            f.flush().unwrap();
        }
    }

    fn unfill(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A tree too big for what the filled disk leaves: 120 small files and 4 MiB of noise.
fn big_tree(root: &Path, tag: &str) {
    gen_tree(root, tag, 120, &[]);
    std::fs::write(root.join("noise.bin"), noise(4 << 20, 7)).unwrap();
}

/// An env whose store lives on `disk` (its config and sources stay on the normal disk).
fn env_on(disk: &Tmpfs) -> Env {
    let env = Env::new();
    std::fs::create_dir_all(disk.path("store")).unwrap();
    std::os::unix::fs::symlink(disk.path("store"), env.store()).unwrap();
    env
}

/// Runs `args`, expects the disk-full refusal (exit 1, one error line naming the cause and
/// every needle, nothing on stdout) and returns the line.
fn disk_full(env: &Env, args: &[&str], needles: &[&str]) -> String {
    let out = env.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "cairn {args:?} on a full disk: want exit 1, got {:?}; stderr: {stderr}",
        out.status
    );
    assert!(out.stdout.is_empty(), "cairn {args:?} printed on stdout");
    let mut all = vec![ENOSPC];
    all.extend_from_slice(needles);
    assert_one_error_line(&stderr, &all);
    // The cause once, and the file once: no "… at path …" tail repeating it.
    assert!(
        !stderr.contains(" at path "),
        "the path is repeated: {stderr}"
    );
    stderr.trim_end().to_string()
}

/// The state checks shared by every case, made while the disk is still full: the same keys
/// and index (object counts), no temp files, `verify` clean (so no key points at a missing
/// object), every blob file there before still there with the same bytes. A failed command may
/// leave new blob files the index never recorded (parallel writers place finished blobs before
/// the commit, as a killed process would); they must be exactly what the next `gc` reports as
/// orphans and deletes, after which the blob files are as before.
fn assert_unchanged(env: &Env, before: &StoreState, what: &str) {
    let after = env.state();
    assert_eq!(after.keys, before.keys, "{what}: the keys changed");
    assert_eq!(
        (after.indexed_blobs, after.indexed_trees),
        (before.indexed_blobs, before.indexed_trees),
        "{what}: the index changed"
    );
    assert_eq!(
        after.tmp_files,
        Vec::<String>::new(),
        "{what}: temp files left"
    );
    for (f, h) in &before.blob_files {
        assert_eq!(
            after.blob_files.get(f),
            Some(h),
            "{what}: blob file {f} changed"
        );
    }
    let extra = after.blob_files.len() - before.blob_files.len();
    let gc = env.json(&["gc"]);
    let n = |f: &str| gc[f].as_u64().unwrap();
    assert_eq!(
        (
            n("orphan_files") + n("packs_deleted") + n("temp_files"),
            n("blobs"),
            n("trees")
        ),
        (extra as u64, 0, 0),
        "{what}: gc after the failure: {gc}"
    );
    assert_eq!(&env.state(), before, "{what}: the store after gc");
}

/// A put of a tree that does not fit, at several amounts of free space (so it runs out in a
/// blob, in a tree, or in the index commit): each fails naming the cause and changes nothing;
/// after the filler is removed, the same put succeeds and restores exactly.
#[test]
fn put_on_a_full_disk_fails_cleanly_and_succeeds_once_space_is_freed() {
    if !as_root("put_on_a_full_disk_fails_cleanly_and_succeeds_once_space_is_freed") {
        return;
    }
    let disk = Tmpfs::new(16);
    let env = env_on(&disk);
    let base = env.path("src/base");
    gen_tree(&base, "base", 30, &[20_000]);
    env.ok(&["put", "base", s(&base)]);
    let src = env.path("src/big");
    big_tree(&src, "big");
    let archive = env.path("big.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .args(["-cf", s(&archive), "."])
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar: {:?}", out);

    for leave in [0u64, 16 << 10, 256 << 10, 1 << 20, 3 << 20] {
        disk.fill(leave);
        let before = env.state();
        let what = format!("put with {} bytes free", disk.free());
        let line = disk_full(&env, &["put", "big", s(&src)], &[]);
        eprintln!("{what}: {line}");
        assert_unchanged(&env, &before, &what);
        let line = disk_full(&env, &["put", "big", s(&archive), "--from-archive"], &[]);
        eprintln!("{what} (archive): {line}");
        assert_unchanged(&env, &before, &format!("{what} (archive)"));
        disk.unfill();
        env.assert_verify_clean(&format!("{what}: after freeing the disk"));
    }

    env.ok(&["put", "big", s(&src)]);
    env.assert_verify_clean("after the put that fits");
    let dest = env.path("out");
    env.ok(&["get", "big", s(&dest)]);
    assert!(
        tree_diff(&src, &dest).is_none(),
        "{:?}",
        tree_diff(&src, &dest)
    );
    let dest = env.path("out-base");
    env.ok(&["get", "base", s(&dest)]);
    assert!(tree_diff(&base, &dest).is_none());
}

/// A pull into a store on a full disk fails naming the cause, binds nothing and leaves the
/// store verifying clean; after the filler is removed the pull succeeds.
#[test]
fn pull_into_a_full_disk_fails_cleanly_and_succeeds_once_space_is_freed() {
    if !as_root("pull_into_a_full_disk_fails_cleanly_and_succeeds_once_space_is_freed") {
        return;
    }
    let origin = Env::new();
    let src = origin.path("src");
    big_tree(&src, "pulled");
    origin.ok(&["put", "k", s(&src)]);
    let remote = format!("file://{}", origin.path("remote").display());
    origin.ok(&["push", &remote, "k"]);

    let disk = Tmpfs::new(16);
    let env = env_on(&disk);
    let base = env.path("src/base");
    gen_tree(&base, "base", 30, &[20_000]);
    env.ok(&["put", "base", s(&base)]);
    for leave in [0u64, 256 << 10, 2 << 20] {
        disk.fill(leave);
        let before = env.state();
        let what = format!("pull with {} bytes free", disk.free());
        let line = disk_full(&env, &["pull", &remote, "k"], &[]);
        eprintln!("{what}: {line}");
        assert_unchanged(&env, &before, &what);
        disk.unfill();
    }
    env.ok(&["pull", &remote, "k"]);
    env.assert_verify_clean("after the pull that fits");
    let dest = env.path("out");
    env.ok(&["get", "k", s(&dest)]);
    assert!(
        tree_diff(&src, &dest).is_none(),
        "{:?}",
        tree_diff(&src, &dest)
    );
}

/// A get into a DEST on a full disk fails naming the cause and leaves no DEST behind (and
/// nothing else on that disk); the store is untouched. With room, the same get succeeds.
#[test]
fn get_into_a_full_disk_fails_cleanly_and_leaves_no_dest() {
    if !as_root("get_into_a_full_disk_fails_cleanly_and_leaves_no_dest") {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    big_tree(&src, "got");
    env.ok(&["put", "k", s(&src)]);
    let disk = Tmpfs::new(16);
    let dest = disk.path("dest");
    for leave in [0u64, 256 << 10, 2 << 20] {
        disk.fill(leave);
        let before = env.state();
        let what = format!("get with {} bytes free", disk.free());
        let line = disk_full(&env, &["get", "k", s(&dest)], &[]);
        eprintln!("{what}: {line}");
        assert_unchanged(&env, &before, &what);
        let left: Vec<String> = std::fs::read_dir(disk.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["filler"], "{what}: the failed get left {left:?}");
        disk.unfill();
    }
    env.ok(&["get", "k", s(&dest)]);
    assert!(
        tree_diff(&src, &dest).is_none(),
        "{:?}",
        tree_diff(&src, &dest)
    );
}
