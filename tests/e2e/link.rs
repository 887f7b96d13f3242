//! `get --link` / `oci extract --link`: restores that clone or hardlink regular files from the
//! store's checkout objects. Linked restores must equal copied ones path by path; a checkout
//! object modified through a hardlink is detected (by the next restore, by `verify`) and never
//! handed out again; a restore killed while it writes an object leaves nothing a later link
//! uses; a DEST on another filesystem is copied with one info line; reflinks are used where the
//! filesystem has them (a loop-mounted XFS image); concurrent linked restores agree.
//!
//! These tests need root (to set owners, mount a tmpfs and an XFS image); CI runs them as root.
//! A test that cannot do what it needs says so on stderr and checks what it can.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Env, Rng, s, write};

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// What a user can observe about one path of a restored folder.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    /// Permission bits (with setuid/setgid/sticky).
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    /// File content, or a symlink's target.
    content: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every path under `dir` (relative, `/`-separated) with what it shows, and the inode of each
/// regular file (to compare hardlink groups).
fn observe(dir: &Path) -> (BTreeMap<String, Seen>, BTreeMap<String, u64>) {
    let mut seen = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let (kind, content) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", Vec::new())
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                ("symlink", t.to_str().unwrap().as_bytes().to_vec())
            } else {
                inodes.insert(rel.clone(), md.ino());
                ("file", std::fs::read(&p).unwrap())
            };
            let xattrs = if ft.is_symlink() {
                BTreeMap::new()
            } else {
                xattrs_of(&p)
            };
            seen.insert(
                rel,
                Seen {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: (md.mtime(), md.mtime_nsec()),
                    content,
                    xattrs,
                },
            );
        }
    }
    (seen, inodes)
}

/// The `user.` xattrs of `p` (via getfattr; none if it is missing).
fn xattrs_of(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(out) = Command::new("getfattr")
        .args(["--absolute-names", "-d", "-e", "hex"])
        .arg(p)
        .output()
    else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// Paths grouped by inode: the hardlink groups of a restored folder (groups of one left out).
fn groups(inodes: &BTreeMap<String, u64>) -> Vec<Vec<String>> {
    let mut by: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, i) in inodes {
        by.entry(*i).or_default().push(p.clone());
    }
    let mut g: Vec<Vec<String>> = by.into_values().filter(|v| v.len() > 1).collect();
    g.sort();
    g
}

fn set_mtime(p: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A root-filesystem-like folder for `put --preserve`: owners (as root), mtimes, an xattr, a
/// setuid file, a hardlink group, two paths sharing content that disagree on mtime, two that
/// agree, executables, a symlink, an empty file and folder, small (packed) and large blobs.
fn preserved_source(root: &Path) {
    let mut rng = Rng::new(14);
    write(root, "bin/tool", &rng.bytes(3 << 20));
    chmod(&root.join("bin/tool"), 0o755);
    write(root, "bin/su", b"#!/bin/sh\nsetuid\n");
    chmod(&root.join("bin/su"), 0o4755);
    write(root, "etc/conf", b"a = 1\n");
    write(root, "etc/same-1", b"shared, agreeing\n");
    write(root, "etc/same-2", b"shared, agreeing\n");
    write(root, "etc/differ-1", b"shared, disagreeing\n");
    write(root, "etc/differ-2", b"shared, disagreeing\n");
    write(root, "lib/big.so", &rng.bytes(2 << 20));
    write(root, "lib/group-a", b"hardlink group\n");
    std::fs::hard_link(root.join("lib/group-a"), root.join("lib/group-b")).unwrap();
    write(root, "data/empty", b"");
    write(root, "data/xattr", b"has an xattr\n");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("../etc/conf", root.join("bin/conf-link")).unwrap();
    for i in 0..200 {
        write(
            root,
            &format!("many/f{i:03}"),
            format!("small file {i}\n").as_bytes(),
        );
    }
    let xattr = Command::new("setfattr")
        .args(["-n", "user.cairn", "-v", "kept"])
        .arg(root.join("data/xattr"))
        .status();
    if !xattr.is_ok_and(|s| s.success()) {
        eprintln!("link: setfattr failed or is missing; the xattr case is not exercised");
    }
    for p in ["etc/same-1", "etc/same-2", "etc/differ-1", "lib/big.so"] {
        set_mtime(&root.join(p), 1_600_000_000);
    }
    set_mtime(&root.join("etc/differ-2"), 1_500_000_000);
    if is_root() {
        std::os::unix::fs::lchown(root.join("etc/conf"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("bin/tool"), Some(0), Some(42)).unwrap();
        std::os::unix::fs::lchown(root.join("bin/conf-link"), Some(7), Some(7)).unwrap();
    }
}

fn get_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    env.json(&all)["stats"].clone()
}

/// `a` and `b` show the same paths with the same content, type, link targets, owners, mtimes
/// and xattrs; modes are equal, or (`read_only_files`) equal but for the write bits of regular
/// files, which hardlinks to read-only checkout objects lack.
fn assert_same(a: &BTreeMap<String, Seen>, b: &BTreeMap<String, Seen>, read_only_files: bool) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "different paths"
    );
    for (p, x) in a {
        let mut y = b[p].clone();
        if read_only_files && y.kind == "file" {
            y.mode |= x.mode & 0o222;
        }
        assert_eq!(x, &y, "{p} differs");
    }
}

#[test]
fn linked_restores_equal_copied_ones() {
    let env = Env::new();
    let src = env.path("src");
    preserved_source(&src);
    env.ok(&["put", "--preserve", "rootfs", s(&src)]);
    crate::common::sample_tree(&env.path("plain"));
    env.ok(&["put", "plain", s(&env.path("plain"))]);

    for key in ["rootfs", "plain"] {
        let copy = env.path(&format!("{key}-copy"));
        let st = get_json(&env, &[key, s(&copy)]);
        assert_eq!(st["linked"], 0);
        assert_eq!(st["copied"], st["files"].as_u64().unwrap() - hardlinks(key));
        let (want, want_inodes) = observe(&copy);

        for mode in ["hardlink", "auto"] {
            for round in 0..2 {
                let dest = env.path(&format!("{key}-{mode}-{round}"));
                let st = get_json(&env, &[key, s(&dest), &format!("--link={mode}")]);
                let (got, got_inodes) = observe(&dest);
                // ext4 (this machine's disk) has no reflinks: auto hardlinks.
                assert_eq!(st["cloned"], 0, "{key} {mode}: {st}");
                assert_same(&want, &got, true);
                assert!(st["linked"].as_u64().unwrap() > 0, "{key} {mode}: {st}");
                if round == 1 {
                    assert_eq!(st["checkouts_made"], 0, "{key} {mode}: objects made again");
                }
                // Hardlink groups stay groups.
                for g in groups(&want_inodes) {
                    let i = got_inodes[&g[0]];
                    assert!(g.iter().all(|p| got_inodes[p] == i), "group {g:?} split");
                }
                if key == "rootfs" {
                    // Paths sharing content with different mtimes, the xattr file and the
                    // setuid file are copied (their own inodes); agreeing ones share one.
                    let own = |p: &str| {
                        std::fs::metadata(dest.join(p)).unwrap().nlink() == 1
                            && got_inodes[p] != got_inodes["etc/same-1"]
                    };
                    assert!(own("etc/differ-1") && own("etc/differ-2"), "{mode}");
                    assert!(own("bin/su"), "{mode}");
                    if !want["data/xattr"].xattrs.is_empty() {
                        assert!(own("data/xattr"), "{mode}");
                    }
                    assert_eq!(got_inodes["etc/same-1"], got_inodes["etc/same-2"]);
                    let xattr = u64::from(!want["data/xattr"].xattrs.is_empty());
                    assert_eq!(st["copied"], 3 + xattr, "{mode}: {st}");
                }
            }
        }
    }
    // The objects are the store's, read-only, and verify re-hashes them.
    let v = env.json(&["verify"]);
    assert_eq!(v["clean"], true, "{v}");
    assert!(v["checkouts"].as_u64().unwrap() > 0, "{v}");
}

/// Hardlink entries of the test trees (counted in `files`, never copied nor linked).
fn hardlinks(key: &str) -> u64 {
    if key == "rootfs" { 1 } else { 0 }
}

/// The checkout object files of the store (temp files left out), sorted.
fn checkout_objects(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(store.join("checkouts")) else {
        return out;
    };
    for fan in rd {
        for e in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            let p = e.unwrap().path();
            if !p.file_name().unwrap().to_str().unwrap().starts_with('.') {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_modified_hardlinked_file_is_detected_and_never_linked_again() {
    let env = Env::new();
    let src = env.path("src");
    let good = Rng::new(7).bytes(2 << 20);
    write(&src, "big", &good);
    env.ok(&["put", "k", s(&src)]);
    let d1 = env.path("d1");
    get_json(&env, &["k", s(&d1), "--link=hardlink"]);
    assert_eq!(checkout_objects(&env.store()).len(), 1);

    // Root ignores the mode: a write in place through the hardlink changes the object.
    let f = d1.join("big");
    let mut bad = good.clone();
    bad[1000] ^= 0xff;
    std::fs::write(&f, &bad).unwrap();
    // (a) The next restore sees the changed mtime and replaces the object from the stored copy.
    let d2 = env.path("d2");
    let st = get_json(&env, &["k", s(&d2), "--link=hardlink"]);
    assert_eq!(st["checkouts_made"], 1, "{st}");
    assert_eq!(std::fs::read(d2.join("big")).unwrap(), good);
    assert_ne!(
        std::fs::metadata(&f).unwrap().ino(),
        std::fs::metadata(d2.join("big")).unwrap().ino()
    );
    env.assert_verify_clean("after the replacement");

    // (b) A sneakier write keeps size and mtime: only verify's re-hash sees it.
    let f2 = d2.join("big");
    let before = std::fs::metadata(&f2).unwrap();
    std::fs::write(&f2, &bad).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f2)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(
            std::time::UNIX_EPOCH
                + std::time::Duration::new(before.mtime() as u64, before.mtime_nsec() as u32),
        ))
        .unwrap();
    let out = env.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(8), "verify must exit 8 (corrupt)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probs = v["problems"].as_array().unwrap();
    assert_eq!(probs.len(), 1, "{v}");
    assert_eq!(probs[0]["object"], "checkout", "{v}");
    assert_eq!(probs[0]["fault"], "corrupt", "{v}");
    // verify forgot it, so the next restore hashes it, finds it wrong and replaces it.
    let d3 = env.path("d3");
    let st = get_json(&env, &["k", s(&d3), "--link=hardlink"]);
    assert_eq!(st["checkouts_made"], 1, "{st}");
    assert_eq!(std::fs::read(d3.join("big")).unwrap(), good);
    env.assert_verify_clean("after the second replacement");
}

#[test]
fn an_unrecorded_object_is_hashed_before_it_is_linked() {
    // A crash after an object was renamed into place but before its row was written leaves an
    // object without a row: such a file is used only once it hashes right. Here one of the
    // right size, mode and mtime holds the wrong bytes.
    let env = Env::new();
    let src = env.path("src");
    let good = Rng::new(8).bytes(1 << 20 | 77);
    write(&src, "f", &good);
    env.ok(&["put", "k", s(&src)]);
    get_json(&env, &["k", s(&env.path("d0")), "--link=hardlink"]);
    let objs = checkout_objects(&env.store());
    assert_eq!(objs.len(), 1);
    let obj = &objs[0];
    let md = std::fs::metadata(obj).unwrap();
    env.ok(&["gc", "--checkouts"]);
    assert!(checkout_objects(&env.store()).is_empty());
    // A file at the object's name, as a crash could leave it, but with other bytes.
    let mut bad = good.clone();
    bad[5] ^= 1;
    std::fs::create_dir_all(obj.parent().unwrap()).unwrap();
    std::fs::write(obj, &bad).unwrap();
    chmod(obj, md.mode() & 0o7777);
    set_mtime(obj, md.mtime());
    let d = env.path("d1");
    let st = get_json(&env, &["k", s(&d), "--link=hardlink"]);
    assert_eq!(st["checkouts_made"], 1, "{st}");
    assert_eq!(std::fs::read(d.join("f")).unwrap(), good);
    env.assert_verify_clean("after");
}

#[test]
fn kill_during_checkout_object_creation_leaves_nothing_a_later_link_uses() {
    let env = Env::new();
    let src = env.path("src");
    let content = Rng::new(9).bytes(256 << 20);
    write(&src, "huge", &content);
    env.ok(&["put", "k", s(&src)]);
    let mut landed = 0;
    for attempt in 0..8 {
        let dest = env.path(&format!("killed-{attempt}"));
        let mut child = env.spawn(&["get", "k", s(&dest), "--link=hardlink"]);
        // Wait until the object's temp file has some, not all, of its bytes, then kill.
        let mut mid = false;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if partial_temp(&env.store(), content.len() as u64) {
                child.kill().unwrap();
                mid = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let status = child.wait().unwrap();
        if mid && status.code().is_none() {
            landed += 1;
            // Nothing at the object's name; the temp file is left for gc.
            assert!(checkout_objects(&env.store()).is_empty());
            let dest = env.path(&format!("after-{attempt}"));
            let st = get_json(&env, &["k", s(&dest), "--link=hardlink"]);
            assert_eq!(st["linked"], 1, "{st}");
            assert_eq!(std::fs::read(dest.join("huge")).unwrap(), content);
            env.assert_verify_clean("after the kill");
            env.ok(&["gc"]);
            assert!(!partial_temp(&env.store(), u64::MAX), "gc left a temp file");
            if landed >= 2 {
                break;
            }
        }
        // Start over: no object, so the next attempt writes it again.
        env.ok(&["gc", "--checkouts"]);
    }
    eprintln!("link: {landed} kill(s) landed while an object was being written");
    assert!(
        landed > 0,
        "no kill landed while an object was being written"
    );
}

/// Whether `checkouts/` holds a temp file with more than 0 and fewer than `size` bytes.
fn partial_temp(store: &Path, size: u64) -> bool {
    let Ok(rd) = std::fs::read_dir(store.join("checkouts")) else {
        return false;
    };
    for fan in rd.flatten() {
        let Ok(rd) = std::fs::read_dir(fan.path()) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-")
                && e.metadata().is_ok_and(|m| m.len() > 0 && m.len() < size)
            {
                return true;
            }
        }
    }
    false
}

/// Mounts a filesystem (`mount ARGS… DIR`) at a fresh folder; unmounted on drop.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(args: &[&str]) -> Result<Mounted, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(args)
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mounted { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_dest_on_another_filesystem_is_copied_with_one_info_line() {
    if !is_root() {
        eprintln!("link: not root, so no tmpfs can be mounted: the EXDEV test is not run");
        return;
    }
    let env = Env::new();
    crate::common::sample_tree(&env.path("src"));
    env.ok(&["put", "k", s(&env.path("src"))]);
    let tmpfs = Mounted::new(&["-t", "tmpfs", "-o", "size=64m", "tmpfs"]).expect("a tmpfs");
    let copy = env.path("copy");
    env.ok(&["get", "k", s(&copy)]);
    for mode in ["auto", "hardlink", "reflink"] {
        let dest = tmpfs.path().join(mode);
        let out = env.run(&[
            "-v",
            "--json",
            "get",
            "k",
            s(&dest),
            &format!("--link={mode}"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let st = &v["stats"];
        assert_eq!(st["linked"], 0, "{mode}: {st}");
        assert_eq!(st["cloned"], 0, "{mode}: {st}");
        assert_eq!(st["copied"], st["files"], "{mode}: {st}");
        let lines = stderr
            .lines()
            .filter(|l| l.contains("another filesystem"))
            .count();
        assert_eq!(lines, 1, "{mode}: {stderr}");
        assert_same(&observe(&copy).0, &observe(&dest).0, false);
    }
}

#[test]
fn reflinks_on_a_filesystem_that_has_them() {
    let env = Env::new();
    let src = env.path("src");
    crate::common::sample_tree(&src);
    write(&src, "big", &Rng::new(3).bytes(3 << 20));
    // On this (ext4) disk --link=reflink is refused, never silently a copy.
    env.ok(&["put", "k", s(&src)]);
    let err = env.fails(&["get", "k", s(&env.path("no")), "--link=reflink"]);
    assert!(err.contains("reflink"), "{err}");
    assert!(!env.path("no").exists(), "a refused restore left DEST");

    let xfs = match xfs_mount(&env) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("link: reflink path NOT tested: {why}");
            return;
        }
    };
    let env = Env {
        dir: tempfile::tempdir_in(xfs.path()).unwrap(),
    };
    env.ok(&["put", "k", s(&src)]);
    let copy = env.path("copy");
    env.ok(&["get", "k", s(&copy)]);
    for mode in ["auto", "reflink"] {
        let dest = env.path(mode);
        let st = get_json(&env, &["k", s(&dest), &format!("--link={mode}")]);
        assert_eq!(st["cloned"], 4, "{mode}: {st}");
        assert_eq!(st["linked"], 0, "{mode}: {st}");
        // A clone is a private copy: modes exactly as copied, its own inode, safe to modify.
        assert_same(&observe(&copy).0, &observe(&dest).0, false);
        assert_eq!(std::fs::metadata(dest.join("big")).unwrap().nlink(), 1);
        std::fs::write(dest.join("big"), b"changed").unwrap();
    }
    env.assert_verify_clean("after writing into clones");
    eprintln!("link: reflink path tested on a loop-mounted XFS image");
    drop(env);
}

/// A loop-mounted XFS image (mkfs.xfs from xfsprogs, reflink on by default) in the test's
/// folder, or why there cannot be one.
fn xfs_mount(env: &Env) -> Result<Mounted, String> {
    if !is_root() {
        return Err("not root (loop mounts need it)".into());
    }
    let img = env.path("xfs.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(320 << 20))
        .map_err(|e| e.to_string())?;
    let mkfs = Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&img)
        .output()
        .map_err(|e| format!("mkfs.xfs (xfsprogs, see scripts/deps.sh): {e}"))?;
    if !mkfs.status.success() {
        return Err(format!(
            "mkfs.xfs: {}",
            String::from_utf8_lossy(&mkfs.stderr).trim()
        ));
    }
    Mounted::new(&["-o", "loop", s(&img)])
}

#[test]
fn eight_concurrent_linked_gets_of_one_key_agree() {
    let env = Env::new();
    let src = env.path("src");
    crate::common::sample_tree(&src);
    let mut rng = Rng::new(11);
    for i in 0..300 {
        write(&src, &format!("d{}/f{i}", i % 7), &rng.bytes(100 + i * 37));
    }
    write(&src, "large", &rng.bytes(5 << 20));
    env.ok(&["put", "k", s(&src)]);
    let copy = env.path("copy");
    env.ok(&["get", "k", s(&copy)]);
    let (want, _) = observe(&copy);
    let kids: Vec<_> = (0..8)
        .map(|i| {
            let dest = env.path(&format!("d{i}"));
            (dest.clone(), env.spawn(&["get", "k", s(&dest), "--link"]))
        })
        .collect();
    for (dest, kid) in kids {
        let out = kid.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            dest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(&want, &observe(&dest).0, true);
    }
    // One object per (blob, variant): the 5 MiB file's content is stored once more, not 8 times.
    let du = env.json(&["du"]);
    let objs = checkout_objects(&env.store());
    assert_eq!(du["checkouts"]["files"], objs.len() as u64, "{du}");
    env.assert_verify_clean("after 8 concurrent gets");
    // No stray temp files: all were published or cleaned.
    let again = get_json(&env, &["k", s(&env.path("again")), "--link"]);
    assert_eq!(again["checkouts_made"], 0, "{again}");
}

#[test]
fn gc_verify_and_du_count_checkout_objects_apart() {
    let env = Env::new();
    let src = env.path("src");
    crate::common::sample_tree(&src);
    env.ok(&["put", "k", s(&src)]);
    let du0 = env.json(&["du"]);
    assert_eq!(du0["checkouts"]["files"], 0, "{du0}");
    let dest = env.path("d");
    let st = get_json(&env, &["k", s(&dest), "--link"]);
    let n = st["checkouts_made"].as_u64().unwrap();
    assert!(n >= 3, "{st}");
    let du = env.json(&["du"]);
    assert_eq!(du["checkouts"]["files"], n, "{du}");
    assert!(du["checkout_links"].as_u64().unwrap() >= n, "{du}");
    let v = env.json(&["verify"]);
    assert_eq!(v["checkouts"], n, "{v}");
    // A plain gc keeps the objects of live blobs.
    let gc = env.json(&["gc"]);
    assert_eq!(gc["checkouts_deleted"], 0, "{gc}");
    assert_eq!(gc["checkouts_kept"], n, "{gc}");
    // gc --checkouts drops them all; the restored folder keeps its files.
    let gc = env.json(&["gc", "--checkouts", "--dry-run"]);
    assert_eq!(gc["checkouts_deleted"], n, "{gc}");
    assert_eq!(checkout_objects(&env.store()).len() as u64, n);
    let gc = env.json(&["gc", "--checkouts"]);
    assert_eq!(gc["checkouts_deleted"], n, "{gc}");
    assert!(checkout_objects(&env.store()).is_empty());
    assert_eq!(std::fs::read(dest.join("a/f.txt")).unwrap(), b"hello\n");
    env.assert_verify_clean("after gc --checkouts");
    // The next linked restore makes them again; a removed key's objects go with its blobs.
    let st = get_json(&env, &["k", s(&env.path("d2")), "--link"]);
    assert_eq!(st["checkouts_made"], n, "{st}");
    env.ok(&["rm", "k"]);
    let gc = env.json(&["gc"]);
    assert_eq!(gc["checkouts_deleted"], n, "{gc}");
    assert!(checkout_objects(&env.store()).is_empty());
}

#[test]
fn oci_extract_link_equals_its_copy() {
    let env = Env::new();
    let l = crate::common::simple_layout(env.path("layout"), "img", &Rng::new(5).bytes(2 << 20));
    env.ok(&["oci", "import", s(&l.dir), "--name", "img"]);
    let copy = env.path("copy");
    env.ok(&["oci", "extract", "img", s(&copy)]);
    let dest = env.path("linked");
    let out = env.json(&["oci", "extract", "img", s(&dest), "--link"]);
    assert!(out["stats"]["linked"].as_u64().unwrap() > 0, "{out}");
    assert_same(&observe(&copy).0, &observe(&dest).0, true);
}

#[test]
fn the_config_sets_the_default_link_mode() {
    let env = Env::new();
    crate::common::sample_tree(&env.path("src"));
    env.ok(&["put", "k", s(&env.path("src"))]);
    let cfg = env.path("xdg-config/cairn");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.toml"), "link = \"hardlink\"\n").unwrap();
    let st = get_json(&env, &["k", s(&env.path("d1"))]);
    assert!(st["linked"].as_u64().unwrap() > 0, "{st}");
    let st = get_json(&env, &["k", s(&env.path("d2")), "--link=copy"]);
    assert_eq!(st["linked"], 0, "{st}");
    assert_eq!(st["copied"], st["files"], "{st}");
}
