//! Features: deterministic export, `--preserve`, SOURCE_DATE_EPOCH, the key log and listings,
//! single-file roots, gc, completions.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::common::{
    Env, assert_one_error_line, names_under, noise, s, sample_tree, sha256_hex, write,
};

/// A path of more than 100 bytes (the ustar name field) and a symlink target of more than 100.
const LONG_DIR: &str = "long/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
const LONG_FILE: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff.txt";

fn long_target() -> String {
    format!("../{}", "t".repeat(150))
}

/// The sample tree plus a long path and a long symlink target.
fn export_tree(root: &Path) {
    sample_tree(root);
    let long = format!("{LONG_DIR}/{LONG_FILE}");
    assert!(long.len() > 100);
    write(root, &long, b"deep down\n");
    std::os::unix::fs::symlink(long_target(), root.join("long/link")).unwrap();
}

fn set_mtime(p: &Path, secs: u64, nanos: u32) {
    let t = UNIX_EPOCH + Duration::new(secs, nanos);
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn export_is_deterministic_and_round_trips() {
    let one = Env::new();
    let two = Env::new();
    let src1 = one.path("src");
    let src2 = two.path("elsewhere/src");
    export_tree(&src1);
    export_tree(&src2);
    // The second copy differs in everything normalization drops.
    for p in [&src2.join("a/f.txt"), &src2.join("a/b/big.txt")] {
        set_mtime(p, 1_234_567_890, 5);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o664)).unwrap();
    }
    let id = one.ok(&["put", "app", s(&src1)]);
    assert_eq!(two.ok(&["put", "other/name", s(&src2)]), id);

    let long = format!("{LONG_DIR}/{LONG_FILE}");
    let expected: Vec<String> = [
        "a/",
        "a/b/",
        "a/b/big.txt",
        "a/f.txt",
        "a/link",
        "empty/",
        "long/",
        &format!("{LONG_DIR}/"),
        &long,
        "long/link",
        "run.sh",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();

    let mut digests = BTreeMap::new();
    for ext in ["tar", "tar.gz", "tar.zst"] {
        let a = one.path(&format!("x/one.{ext}"));
        let b = two.path(&format!("y/two.{ext}"));
        std::fs::create_dir_all(a.parent().unwrap()).unwrap();
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        one.ok(&["export", "app", "-o", s(&a)]);
        two.ok(&["export", &id, "-o", s(&b)]);
        let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(
            sha256_hex(&ba),
            sha256_hex(&bb),
            "{ext} exports of the same tree differ"
        );
        digests.insert(ext, sha256_hex(&ba));
        // GNU tar reads it and lists exactly the expected entries, in order.
        let flag = match ext {
            "tar" => None,
            "tar.gz" => Some("-z"),
            _ => Some("--zstd"),
        };
        let mut tar = std::process::Command::new("tar");
        tar.arg("-tf").arg(&a);
        if let Some(f) = flag {
            tar.arg(f);
        }
        let listing = tar.output().expect("GNU tar is installed");
        assert!(
            listing.status.success(),
            "tar -t {ext}: {}",
            String::from_utf8_lossy(&listing.stderr)
        );
        let names: Vec<String> = String::from_utf8(listing.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(names, expected, "tar -t of the {ext} export");

        // Importing the export binds the same root id, in both stores.
        assert_eq!(
            one.ok(&["put", &format!("imported/{ext}"), s(&a), "--from-archive"]),
            id,
            "{ext} import changed the id"
        );
        assert_eq!(two.ok(&["add", s(&b), "--from-archive"]), id);

        // GNU tar extracts it to the same tree.
        let x = one.path(&format!("gnu-{ext}"));
        std::fs::create_dir_all(&x).unwrap();
        let mut tar = std::process::Command::new("tar");
        tar.arg("-xf").arg(&a).arg("-C").arg(&x);
        if let Some(f) = flag {
            tar.arg(f);
        }
        assert!(tar.status().unwrap().success());
        assert_eq!(
            one.ok(&["hash", s(&x)]),
            id,
            "GNU tar extracted another tree"
        );
    }
    // Exporting again later (the clock has moved on) gives the same bytes again.
    std::thread::sleep(Duration::from_millis(1100));
    for ext in ["tar", "tar.gz", "tar.zst"] {
        let again = one.path(&format!("x/again.{ext}"));
        one.ok(&["export", "app", "-o", s(&again)]);
        assert_eq!(
            sha256_hex(&std::fs::read(&again).unwrap()),
            digests[ext],
            "{ext} export is not stable"
        );
    }
    // Only the outputs are left: no temporary file beside them.
    assert_eq!(
        names_under(&one.path("x")),
        [
            "again.tar",
            "again.tar.gz",
            "again.tar.zst",
            "one.tar",
            "one.tar.gz",
            "one.tar.zst"
        ]
    );
    // The three formats are different files.
    assert_eq!(
        digests
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );

    // The long path and long target survive export -> import -> get.
    let out = one.path("out");
    one.ok(&["get", "imported/tar.zst", s(&out)]);
    assert_eq!(std::fs::read(out.join(&long)).unwrap(), b"deep down\n");
    assert_eq!(
        std::fs::read_link(out.join("long/link")).unwrap(),
        Path::new(&long_target())
    );
    assert_eq!(names_under(&out), names_under(&src1));
    assert_eq!(one.ok(&["hash", s(&out)]), id);
}

/// Whether the current process is root (a file it creates is owned by uid 0).
fn running_as_root(probe_dir: &Path) -> bool {
    let p = probe_dir.join(".whoami");
    std::fs::write(&p, b"").unwrap();
    let uid = std::fs::metadata(&p).unwrap().uid();
    std::fs::remove_file(&p).unwrap();
    uid == 0
}

#[test]
fn preserve_keeps_special_modes_nanosecond_mtimes_owner_xattrs_and_hardlinks() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, "suid", b"#!/bin/sh\n");
    write(&src, "sgid", b"#!/bin/sh\necho g\n");
    write(&src, "owned.txt", b"owned\n");
    write(&src, "xattr.txt", b"with an xattr\n");
    write(&src, "ns.txt", b"nanoseconds\n");
    write(&src, "h1", b"one inode, two names\n");
    std::fs::create_dir_all(src.join("sticky")).unwrap();
    std::fs::create_dir_all(src.join("sgid-dir/sub")).unwrap();
    std::fs::hard_link(src.join("h1"), src.join("sgid-dir/sub/h2")).unwrap();

    let root = running_as_root(env.dir.path());
    if root {
        std::os::unix::fs::chown(src.join("owned.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(src.join("sgid-dir"), Some(1234), Some(5678)).unwrap();
    } else {
        eprintln!("not running as root: owner preservation is not checked");
    }
    // Modes after chown (which clears setuid/setgid).
    for (p, m) in [
        ("suid", 0o4755),
        ("sgid", 0o2711),
        ("sticky", 0o1777),
        ("sgid-dir", 0o2750),
        ("owned.txt", 0o640),
    ] {
        std::fs::set_permissions(src.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        assert_eq!(mode(&src.join(p)), m, "could not set up {p}");
    }
    let xattr_ok = match xattr::set(src.join("xattr.txt"), "user.cairn.test", b"value\x00\xff") {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "the temp dir's filesystem refuses user xattrs ({e}): xattr preservation is not \
                 checked"
            );
            false
        }
    };
    set_mtime(&src.join("ns.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&src.join("suid"), 1_500_000_000, 999_999_999);
    // Last, so that writing the children does not change it.
    let d = std::fs::File::open(src.join("sgid-dir/sub")).unwrap();
    let t = UNIX_EPOCH + Duration::new(1_400_000_000, 42);
    d.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();

    let preserved = env.ok(&["put", "p", s(&src), "--preserve"]);
    let normalized = env.ok(&["put", "n", s(&src)]);
    assert_ne!(preserved, normalized);
    assert_eq!(env.ok(&["hash", "--preserve", s(&src)]), preserved);

    let out = env.path("out");
    env.ok(&["get", "p", s(&out)]);
    for (p, m) in [
        ("suid", 0o4755),
        ("sgid", 0o2711),
        ("sticky", 0o1777),
        ("sgid-dir", 0o2750),
        ("owned.txt", 0o640),
    ] {
        assert_eq!(
            mode(&out.join(p)),
            m,
            "mode of {p}: {:o}",
            mode(&out.join(p))
        );
    }
    let md = |p: &str| std::fs::symlink_metadata(out.join(p)).unwrap();
    assert_eq!(
        (md("ns.txt").mtime(), md("ns.txt").mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
    assert_eq!(
        (md("suid").mtime(), md("suid").mtime_nsec()),
        (1_500_000_000, 999_999_999)
    );
    assert_eq!(
        (md("sgid-dir/sub").mtime(), md("sgid-dir/sub").mtime_nsec()),
        (1_400_000_000, 42)
    );
    if root {
        assert_eq!((md("owned.txt").uid(), md("owned.txt").gid()), (1234, 5678));
        assert_eq!((md("sgid-dir").uid(), md("sgid-dir").gid()), (1234, 5678));
        assert_eq!((md("suid").uid(), md("suid").gid()), (0, 0));
    }
    if xattr_ok {
        assert_eq!(
            xattr::get(out.join("xattr.txt"), "user.cairn.test").unwrap(),
            Some(b"value\x00\xff".to_vec())
        );
    }
    assert_eq!(
        md("h1").ino(),
        md("sgid-dir/sub/h2").ino(),
        "hardlink pair split"
    );
    assert_eq!(md("h1").nlink(), 2);
    assert_eq!(
        std::fs::read(out.join("sgid-dir/sub/h2")).unwrap(),
        b"one inode, two names\n"
    );
    // The restored tree is exactly what was stored.
    assert_eq!(env.ok(&["hash", "--preserve", s(&out)]), preserved);

    // The normalized copy has none of it.
    let norm = env.path("norm");
    env.ok(&["get", "n", s(&norm)]);
    let nmd = |p: &str| std::fs::symlink_metadata(norm.join(p)).unwrap();
    for (p, m) in [
        ("suid", 0o755),
        ("sgid", 0o755),
        ("sticky", 0o755),
        ("sgid-dir", 0o755),
        ("owned.txt", 0o644),
        ("ns.txt", 0o644),
    ] {
        assert_eq!(mode(&norm.join(p)), m, "normalized mode of {p}");
        assert_eq!(
            (nmd(p).mtime(), nmd(p).mtime_nsec()),
            (0, 0),
            "mtime of {p}"
        );
        if root {
            assert_eq!((nmd(p).uid(), nmd(p).gid()), (0, 0), "owner of {p}");
        }
    }
    if xattr_ok {
        assert_eq!(
            xattr::get(norm.join("xattr.txt"), "user.cairn.test").unwrap(),
            None
        );
    }
    assert_eq!(env.ok(&["hash", s(&norm)]), normalized);

    // The export carries the special bits and the owner.
    let tar = env.path("p.tar");
    env.ok(&["export", "p", "-o", s(&tar)]);
    let listing = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&tar)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwsr-xr-x") && l.ends_with(" suid")),
        "setuid bit missing from the export:\n{listing}"
    );
    if root {
        assert!(
            listing
                .lines()
                .any(|l| l.contains("1234/5678") && l.ends_with(" owned.txt")),
            "owner missing from the export:\n{listing}"
        );
    }
}

#[test]
fn without_preserve_metadata_differences_do_not_change_the_id() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    for root in [&a, &b] {
        write(root, "f.txt", b"same\n");
        write(root, "bin/tool", b"#!/bin/sh\n");
        write(root, "d/g.txt", b"nested\n");
        std::os::unix::fs::symlink("../f.txt", root.join("d/link")).unwrap();
    }
    // a: the usual 022 umask.
    std::fs::set_permissions(a.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // b: group-writable files, a 077 umask on others, other owners, other mtimes, an xattr.
    for (p, m) in [
        ("f.txt", 0o664),
        ("bin/tool", 0o700),
        ("d/g.txt", 0o600),
        ("d", 0o700),
        ("bin", 0o775),
    ] {
        std::fs::set_permissions(b.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
    if running_as_root(env.dir.path()) {
        for p in ["f.txt", "bin/tool", "d", "d/link"] {
            std::os::unix::fs::lchown(b.join(p), Some(1234), Some(5678)).unwrap();
        }
    } else {
        eprintln!("not running as root: owners are not varied");
    }
    let _ = xattr::set(b.join("f.txt"), "user.note", b"ignored");
    for p in ["f.txt", "bin/tool", "d/g.txt"] {
        set_mtime(&b.join(p), 987_654_321, 123);
    }
    let id = env.ok(&["hash", s(&a)]);
    assert_eq!(env.ok(&["hash", s(&b)]), id);
    assert_eq!(env.ok(&["put", "a", s(&a)]), id);
    assert_eq!(env.ok(&["put", "b", s(&b)]), id);
    // ...but they do under --preserve,
    assert_ne!(
        env.ok(&["hash", "--preserve", s(&a)]),
        env.ok(&["hash", "--preserve", s(&b)])
    );
    // and the owner-exec bit is content, not metadata.
    std::fs::set_permissions(b.join("f.txt"), std::fs::Permissions::from_mode(0o764)).unwrap();
    assert_ne!(env.ok(&["hash", s(&b)]), id);
}

#[test]
fn source_date_epoch_sets_the_mtime_of_restored_files() {
    let env = Env::new();
    let src = env.path("src");
    sample_tree(&src);
    let plain = env.ok(&["put", "plain", s(&src)]);
    let put = env
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["put", "dated", s(&src)])
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let dated = String::from_utf8(put.stdout).unwrap().trim().to_string();
    assert_ne!(plain, dated);
    let hashed = env
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["hash", s(&src)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(hashed.stdout).unwrap().trim(), dated);

    for (key, want) in [("dated", 1_700_000_000), ("plain", 0)] {
        let out = env.path(key);
        env.ok(&["get", key, s(&out)]);
        for p in [
            "a",
            "a/b",
            "a/f.txt",
            "a/b/big.txt",
            "run.sh",
            "empty",
            "a/link",
        ] {
            let md = std::fs::symlink_metadata(out.join(p)).unwrap();
            assert_eq!(
                (md.mtime(), md.mtime_nsec()),
                (want, 0),
                "{key}: mtime of {p}"
            );
        }
    }
    // An archive import takes it too.
    let tar = env.path("plain.tar");
    env.ok(&["export", "plain", "-o", s(&tar)]);
    let imported = env
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["put", "imported", s(&tar), "--from-archive"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(imported.stdout).unwrap().trim(), dated);
}

#[test]
fn log_ls_show_and_cat_report_what_was_done() {
    let env = Env::new();
    let src = env.path("src");
    sample_tree(&src);
    let other = env.path("other");
    write(&other, "x.txt", b"x\n");

    let id1 = env.ok(&[
        "put",
        "app/v1",
        s(&src),
        "--label",
        "team=build",
        "--label",
        "ci=yes",
    ]);
    let id2 = env.ok(&["put", "app/v1", s(&other)]);
    env.ok(&["rm", "app/v1"]);
    let log = env.json(&["log", "app/v1"]);
    let log = log.as_array().unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["bind", "rebind", "remove"]);
    assert_eq!(log[0]["root"]["id"], id1.as_str());
    assert_eq!(log[0]["previous"], Value::Null);
    assert_eq!(log[1]["root"]["id"], id2.as_str());
    assert_eq!(log[1]["previous"]["id"], id1.as_str());
    assert_eq!(log[2]["root"], Value::Null);
    assert_eq!(log[2]["previous"]["id"], id2.as_str());
    let times: Vec<u64> = log.iter().map(|e| e["time"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let text = env.ok(&["log", "app/v1"]);
    assert_eq!(text.lines().count(), 3, "{text}");

    // ls filters by prefix.
    env.ok(&[
        "put",
        "app/v2",
        s(&src),
        "--label",
        "team=build",
        "--label",
        "ci=yes",
    ]);
    env.ok(&["put", "app/v3", s(&other)]);
    env.ok(&["put", "lib/x", s(&other)]);
    env.ok(&["put", "apple", s(&other)]);
    let keys = |prefix: Option<&str>| -> Vec<String> {
        let mut args = vec!["ls"];
        args.extend(prefix);
        env.json(&args)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(keys(None), ["app/v2", "app/v3", "apple", "lib/x"]);
    assert_eq!(keys(Some("app/")), ["app/v2", "app/v3"]);
    assert_eq!(keys(Some("app")), ["app/v2", "app/v3", "apple"]);
    assert_eq!(keys(Some("lib/")), ["lib/x"]);
    assert_eq!(keys(Some("zzz")), Vec::<String>::new());
    let plain = env.ok(&["ls", "app/"]);
    assert_eq!(plain.lines().count(), 2);
    assert!(
        plain
            .lines()
            .next()
            .unwrap()
            .starts_with(&format!("app/v2\t{id1}\t"))
    );

    // show --json has the record.
    let rec = env.json(&["show", "app/v2"]);
    assert_eq!(rec["key"], "app/v2");
    assert_eq!(rec["root"], json!({"kind": "tree", "id": id1}));
    assert_eq!(rec["size"], 6 + 16 * 50_000 + 18);
    assert_eq!(rec["files"], 3);
    assert_eq!(rec["labels"], json!({"team": "build", "ci": "yes"}));
    assert!(rec["created"].as_u64().unwrap() > 1_600_000_000);
    let text = env.ok(&["show", "app/v2"]);
    for want in ["app/v2", &id1, "team=build", "ci=yes"] {
        assert!(text.contains(want), "show lacks {want}: {text}");
    }

    // show -r lists every path; show of an id lists the top level.
    let all = [
        "a",
        "a/b",
        "a/b/big.txt",
        "a/f.txt",
        "a/link",
        "empty",
        "run.sh",
    ];
    let paths = |args: &[&str]| -> Vec<String> {
        env.json(args)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(paths(&["show", "-r", "app/v2"]), all);
    assert_eq!(paths(&["show", "-r", &id1]), all);
    assert_eq!(paths(&["show", &id1]), ["a", "empty", "run.sh"]);
    let listing = env.ok(&["show", "-r", "app/v2"]);
    assert_eq!(listing.lines().count(), all.len());
    for (line, p) in listing.lines().zip(all) {
        assert!(
            line.ends_with(&format!(" {p}")) || line.contains(&format!(" {p} -> ")),
            "{line:?} does not list {p}"
        );
    }
    let rows = env.json(&["show", "-r", "app/v2"]);
    let link = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "a/link")
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "../run.sh");
    let run = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "run.sh")
        .unwrap();
    assert_eq!(run["mode"], "0755");
    assert_eq!(run["size"], 18);

    // cat prints exact bytes.
    let out = env.run(&["cat", "app/v2", "a/f.txt"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello\n");
    let out = env.run(&["cat", &id1, "a/b/big.txt"]);
    assert_eq!(out.stdout, b"0123456789abcdef".repeat(50_000));
    let out = env.run(&["cat", "app/v2", "./a//f.txt"]);
    assert_eq!(out.stdout, b"hello\n");
}

#[test]
fn single_file_roots_keep_their_executable_bit() {
    let env = Env::new();
    let src = env.path("src");
    sample_tree(&src);
    let exe = env.ok(&["put", "tool", s(&src.join("run.sh"))]);
    let txt = env.ok(&["put", "note", s(&src.join("a/f.txt"))]);
    assert_eq!(env.ok(&["hash", s(&src.join("run.sh"))]), exe);
    assert_eq!(
        env.json(&["show", "tool"])["root"],
        json!({"kind": "file", "id": exe, "executable": true})
    );
    assert_eq!(
        env.json(&["show", "note"])["root"],
        json!({"kind": "file", "id": txt, "executable": false})
    );
    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    env.ok(&["get", "tool", s(&out.join("run"))]);
    env.ok(&["get", "note", s(&out.join("note.txt"))]);
    assert_eq!(
        std::fs::read(out.join("run")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&out.join("run")), 0o755);
    assert_eq!(mode(&out.join("note.txt")), 0o644);
    assert_eq!(std::fs::read(out.join("note.txt")).unwrap(), b"hello\n");
    // It runs.
    let ran = std::process::Command::new(out.join("run"))
        .output()
        .unwrap();
    assert_eq!(ran.stdout, b"hi\n");
    // cat of a file root, by key and by id.
    assert_eq!(env.run(&["cat", "note"]).stdout, b"hello\n");
    assert_eq!(env.run(&["cat", &txt]).stdout, b"hello\n");
    assert_eq!(env.run(&["cat", "tool"]).stdout, b"#!/bin/sh\necho hi\n");
    // The same content under another name and key is the same root and no new blob.
    let before = env.object_files();
    write(&env.path("copy"), "renamed.md", b"hello\n");
    assert_eq!(
        env.ok(&["put", "note2", s(&env.path("copy/renamed.md"))]),
        txt
    );
    assert_eq!(env.object_files(), before);
    let show = env.json(&["show", "note"]);
    assert_eq!(show["files"], 1);
    assert_eq!(show["size"], 6);
}

#[test]
fn gc_deletes_what_no_key_reaches_and_nothing_else() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    let shared = b"shared content, compressible ".repeat(4000);
    write(&a, "shared.txt", &shared);
    write(&a, "only-a.txt", b"only in a\n");
    write(&a, "sub/deep-a.txt", b"deep in a\n");
    write(&b, "shared.txt", &shared);
    write(&b, "only-b.txt", b"only in b\n");
    let id_a = env.ok(&["put", "ka", s(&a)]);
    let id_b = env.ok(&["put", "kb", s(&b)]);
    let blob = |p: &Path| env.ok(&["hash", s(p)]);
    let (only_a, deep_a, only_b, shared_id) = (
        blob(&a.join("only-a.txt")),
        blob(&a.join("sub/deep-a.txt")),
        blob(&b.join("only-b.txt")),
        blob(&a.join("shared.txt")),
    );
    let all = env.stored_ids();
    for id in [&only_a, &deep_a, &only_b, &shared_id] {
        assert!(all.contains(id.as_str()), "{id} not stored");
    }
    // Nothing is garbage yet.
    let r = env.json(&["gc", "--dry-run"]);
    assert_eq!(
        (r["trees"].as_u64(), r["blobs"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );

    env.ok(&["rm", "ka"]);
    let before = env.object_files();
    let r = env.json(&["gc", "--dry-run"]);
    assert_eq!(r["dry_run"], true);
    // ka's root tree and its sub tree; its two own blobs.
    assert_eq!(
        (r["trees"].as_u64(), r["blobs"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    assert!(r["bytes_freed"].as_u64().unwrap() > 0);
    // ka's pack is small and now partly dead: it would be rewritten.
    assert_eq!(r["packs_rewritten"], 1, "{r}");
    assert_eq!(env.object_files(), before, "--dry-run deleted files");
    assert!(
        env.ok(&["show", &id_a]).contains("only-a.txt"),
        "--dry-run deleted a tree"
    );

    let r = env.json(&["gc"]);
    assert_eq!(r["dry_run"], false);
    assert_eq!(
        (r["trees"].as_u64(), r["blobs"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    assert_eq!(r["packs_rewritten"], 1, "{r}");
    // ka's own blobs are gone from disk; everything kb needs is still there.
    let mut expected = all.clone();
    expected.remove(only_a.as_str());
    expected.remove(deep_a.as_str());
    assert_eq!(env.stored_ids(), expected);
    // ka's trees are gone from the index too.
    let err = env.fails(&["show", &id_a]);
    assert!(err.contains(&id_a), "{err}");
    env.fails(&["cat", &only_a]);

    // kb still works in full.
    assert_eq!(env.code(&["verify"]), 0);
    let out = env.path("out");
    env.ok(&["get", "kb", s(&out)]);
    assert_eq!(env.ok(&["hash", s(&out)]), id_b);
    assert_eq!(std::fs::read(out.join("shared.txt")).unwrap(), shared);
    // A second gc finds nothing, and rewrites nothing.
    let files = env.object_files();
    let r = env.json(&["gc"]);
    assert_eq!(
        (
            r["trees"].as_u64(),
            r["blobs"].as_u64(),
            r["packs_rewritten"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(env.object_files(), files);
    // Putting ka again brings it back.
    assert_eq!(env.ok(&["put", "ka", s(&a)]), id_a);
    assert_eq!(env.stored_ids(), all);
    assert_eq!(env.code(&["verify"]), 0);
}

#[test]
fn completions_print_a_script() {
    let env = Env::new();
    let bash = env.ok(&["completions", "bash"]);
    assert!(bash.contains("cairn"), "{bash}");
    assert!(bash.contains("complete "), "not a bash completion script");
    for sub in ["put", "get", "export", "verify", "gc"] {
        assert!(bash.contains(sub), "bash completions lack {sub}");
    }
    for shell in ["zsh", "fish"] {
        assert!(env.ok(&["completions", shell]).contains("cairn"), "{shell}");
    }
    // No store is needed (or created) for completions.
    assert!(!env.store().exists());
    let err = env.fails(&["completions", "cmd.exe"]);
    assert!(err.contains("cmd.exe"), "{err}");
}

#[test]
fn hash_touches_no_store_and_add_binds_no_key() {
    let env = Env::new();
    let src = env.path("src");
    sample_tree(&src);
    let id = env.ok(&["hash", s(&src)]);
    assert!(!env.store().exists(), "hash created the store");
    let added = env.json(&["add", s(&src)]);
    assert_eq!(added["root"]["id"], id.as_str());
    assert_eq!(added["key"], Value::Null);
    assert_eq!(added["files"], 3);
    assert!(added["new_blobs"].as_u64().unwrap() >= 3);
    assert_eq!(env.json(&["ls"]), json!([]));
    // The added tree is there by id...
    let out = env.path("out");
    env.ok(&["get", &id, s(&out)]);
    assert_eq!(env.ok(&["hash", s(&out)]), id);
    // ...adding it again stores nothing new...
    assert_eq!(env.json(&["add", s(&src)])["new_blobs"], 0);
    // ...and, bound to no key, it is garbage.
    let r = env.json(&["gc"]);
    assert!(r["trees"].as_u64().unwrap() >= 3, "{r}");
    assert_eq!(env.object_files(), BTreeMap::new());
    env.fails(&["show", &id]);
}

/// format.md: importing the export of a preserved tree gives back its id when its mtimes are
/// whole seconds (tar headers carry no more).
#[test]
fn a_preserved_tree_round_trips_through_export_and_import() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, "suid", b"#!/bin/sh\n");
    write(&src, "d/hl", b"linked\n");
    std::fs::hard_link(src.join("d/hl"), src.join("f")).unwrap();
    std::fs::create_dir_all(src.join("sticky")).unwrap();
    std::os::unix::fs::symlink("x".repeat(300), src.join("longlink")).unwrap();
    write(&src, &"n".repeat(250), b"long name\n");
    let root = running_as_root(env.dir.path());
    if root {
        // Past the 7 octal digits of a plain tar header.
        std::os::unix::fs::chown(src.join("d/hl"), Some(3_000_000), Some(3_000_001)).unwrap();
    } else {
        eprintln!("not running as root: large owner ids are not checked");
    }
    std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(src.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let xattr_ok = xattr::set(src.join("d/hl"), "user.k", b"v").is_ok();
    if !xattr_ok {
        eprintln!("the temp dir's filesystem refuses user xattrs: not checked");
    }
    for p in ["suid", "d/hl", &"n".repeat(250)] {
        set_mtime(&src.join(p), 1_000_000 + 7, 0);
    }
    for p in ["sticky", "d"] {
        let f = std::fs::File::open(src.join(p)).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(2_000_000);
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }
    // std cannot set a symlink's own mtime; coreutils can.
    let touched = std::process::Command::new("touch")
        .args(["-h", "-d", "@3000000"])
        .arg(src.join("longlink"))
        .status();
    if !matches!(touched, Ok(st) if st.success()) {
        eprintln!("`touch -h` failed ({touched:?}): the long symlink is left out");
        std::fs::remove_file(src.join("longlink")).unwrap();
    }
    let id = env.ok(&["put", "p", s(&src), "--preserve"]);
    for ext in ["tar", "tar.gz", "tar.zst"] {
        let a = env.path(&format!("p.{ext}"));
        env.ok(&["export", "p", "-o", s(&a)]);
        assert_eq!(
            env.ok(&[
                "put",
                &format!("back/{ext}"),
                s(&a),
                "--from-archive",
                "--preserve"
            ]),
            id,
            "{ext}: the preserved tree did not round-trip"
        );
    }
    let out = env.path("out");
    env.ok(&["get", "back/tar.zst", s(&out)]);
    let md = |p: &str| std::fs::symlink_metadata(out.join(p)).unwrap();
    assert_eq!(md("f").ino(), md("d/hl").ino());
    assert_eq!(mode(&out.join("suid")), 0o4755);
    if out.join("longlink").symlink_metadata().is_ok() {
        assert_eq!(md("longlink").mtime(), 3_000_000);
        assert_eq!(
            std::fs::read_link(out.join("longlink")).unwrap(),
            Path::new(&"x".repeat(300))
        );
    }
    if root {
        assert_eq!((md("f").uid(), md("f").gid()), (3_000_000, 3_000_001));
    }
    if xattr_ok {
        assert_eq!(
            xattr::get(out.join("f"), "user.k").unwrap(),
            Some(b"v".to_vec())
        );
    }
}

#[test]
fn a_reader_that_leaves_early_ends_cairn_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let src = env.path("src");
    write(&src, "big.bin", &noise(2 << 20, 9));
    for i in 0..3000 {
        write(&src, &format!("many/{i:05}.txt"), b"x");
    }
    env.ok(&["put", "k", s(&src)]);
    for args in [
        // Far larger than a pipe buffer: writes hit the closed pipe whenever it closes.
        vec!["completions", "bash"],
        vec!["cat", "k", "big.bin"],
        vec!["show", "-r", "k"],
        vec!["--json", "show", "-r", "k"],
    ] {
        let mut child = env
            .cmd()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), None, "{args:?}: a signal ended cairn");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn get_refuses_a_non_empty_dest_before_pulling() {
    let env = Env::new();
    write(&env.path("dest"), "keep", b"mine");
    // The remote does not even exist: the DEST check comes first.
    let remote = format!("file://{}", env.path("no-such-remote").display());
    let e = env.fails(&["get", "app@1", s(&env.path("dest")), "--remote", &remote]);
    assert_one_error_line(&e, &["dest", "not empty"]);
    assert_eq!(std::fs::read(env.path("dest/keep")).unwrap(), b"mine");
}

/// Importing an archive most of whose content is stored writes only the new members: members
/// already in the index are never appended to a pack (where they would stay as dead bytes
/// beside the new ones until gc).
#[test]
fn re_importing_an_archive_writes_only_new_members() {
    let env = Env::new();
    let mut many: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| {
            let body = format!("file {i}\n").repeat(i + 1).into_bytes();
            (format!("d{}/f{i}.txt", i % 7), body)
        })
        .collect();
    let archive = |name: &str, many: &[(String, Vec<u8>)]| {
        let files: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        let p = env.path(name);
        std::fs::write(&p, crate::common::gzip(&crate::common::tar_of(&files))).unwrap();
        p
    };
    let a = archive("a.tar.gz", &many);
    env.ok(&["put", "a/1", s(&a), "--from-archive"]);
    let entries = || crate::common::pack_entries(&env.store()).len();
    assert_eq!(entries(), 200);
    // The same archive again: nothing is written at all.
    let before = env.object_files();
    env.ok(&["put", "a/2", s(&a), "--from-archive"]);
    assert_eq!(env.object_files(), before);
    // With one new member: one new pack entry, for it alone.
    many.push(("new.txt".into(), b"a new member\n".to_vec()));
    let b = archive("b.tar.gz", &many);
    let added = env.json(&["put", "a/3", s(&b), "--from-archive"]);
    assert_eq!(added["new_blobs"], 1, "{added}");
    assert_eq!(entries(), 201, "members already stored were written again");
    assert_eq!(env.code(&["verify"]), 0);
}
