//! Bad input: every refusal is exit status 1 with one `cairn: error:` line naming what is at
//! fault, and leaves the store as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::common::{
    Env, Stored, assert_one_error_line, names_under, pack_entries, s, sample_tree, write,
};

/// An env whose store already holds `base/k` (the sample tree), so "unchanged" means something.
/// Returns the env, the sample tree's path and its id.
fn seeded() -> (Env, PathBuf, String) {
    let env = Env::new();
    let src = env.path("src");
    sample_tree(&src);
    let id = env.ok(&["put", "base/k", s(&src)]);
    (env, src, id)
}

/// The id of `content` as a single-file root (which is the id of its blob).
fn blob_id(env: &Env, content: &[u8]) -> String {
    let p = env.path("scratch/blob-probe");
    write(&env.path("scratch"), "blob-probe", content);
    let id = env.ok(&["hash", s(&p)]);
    std::fs::remove_file(&p).unwrap();
    id
}

#[test]
fn a_path_that_does_not_exist_is_refused_naming_it() {
    let (env, _src, _) = seeded();
    let missing = env.path("no/such/input");
    let m = s(&missing);
    env.refused(&["put", "new/k", m], &[m]);
    env.refused(&["add", m], &[m]);
    env.refused(&["hash", m], &[m]);
    env.refused(&["put", "new/k", m, "--preserve"], &[m]);
    env.refused(&["put", "new/k", m, "--from-archive"], &[m]);
    // A dangling top-level symlink is as good as a missing path.
    let dangling = env.path("dangling");
    std::os::unix::fs::symlink(&missing, &dangling).unwrap();
    env.refused(&["put", "new/k", s(&dangling)], &[s(&dangling)]);
}

#[test]
fn a_unix_socket_in_the_tree_is_refused_naming_it() {
    let (env, _src, _) = seeded();
    let tree = env.path("sock-tree");
    sample_tree(&tree);
    std::fs::create_dir_all(tree.join("run")).unwrap();
    let sock = tree.join("run/daemon.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let t = s(&tree);
    let named = s(&sock);
    env.refused(&["put", "new/k", t], &[named]);
    env.refused(&["put", "new/k", t, "--preserve"], &[named]);
    env.refused(&["add", t], &[named]);
    env.refused(&["hash", t], &[named]);
    env.refused(&["hash", "--preserve", t], &[named]);
    // The socket itself as PATH.
    env.refused(&["put", "new/k", named], &[named]);
}

#[test]
fn invalid_keys_are_refused_naming_the_key() {
    let (env, src, id) = seeded();
    let long = "a".repeat(513);
    let id_shaped = format!("blake3:{}", "ab".repeat(32));
    let bad: Vec<&str> = vec![
        "../x",
        "a//b",
        "a b",
        long.as_str(),
        id_shaped.as_str(),
        "",
        "/abs",
        "trailing/",
        "a/./b",
        "a/..",
        "tab\tkey",
        "é",
    ];
    let out = env.path("out");
    let tar = env.path("x.tar");
    let before = env.state();
    for key in &bad {
        // KeyError prints the key with {:?}, so the quoted form is what names it.
        let quoted = format!("{key:?}");
        env.refusal(&["put", key, s(&src)], &[&quoted]);
        env.refusal(&["put", key, s(&src), "--label", "a=b"], &[&quoted]);
        env.refusal(&["log", key], &[&quoted]);
        env.refusal(&["rm", key], &[&quoted]);
        if *key != id_shaped {
            // An id-shaped string is an id for these commands: see the unknown-id test.
            env.refusal(&["get", key, s(&out)], &[&quoted]);
            env.refusal(&["show", key], &[&quoted]);
            env.refusal(&["cat", key, "a/f.txt"], &[&quoted]);
            env.refusal(&["verify", key], &[&quoted]);
            env.refusal(&["export", key, "-o", s(&tar)], &[&quoted]);
        }
        assert!(!out.exists(), "get with key {key:?} created DEST");
        assert!(!tar.exists(), "export with key {key:?} created its output");
    }
    assert_eq!(env.state(), before, "a refused command changed the store");
    // The limits are exact: 512 bytes is a fine key.
    let longest = "b".repeat(512);
    assert_eq!(env.ok(&["put", &longest, s(&src)]), id);
    assert_eq!(
        env.ok(&["ls", &longest]).split('\t').next(),
        Some(&*longest)
    );
}

#[test]
fn unknown_keys_and_ids_are_refused_naming_them() {
    let (env, _src, base_id) = seeded();
    let key = "no/such-key";
    // A well-formed id of content that was never stored.
    let id = blob_id(&env, b"never stored\n");
    let out = env.path("out");
    let tar = env.path("out.tar");
    let before = env.state();
    for target in [key, id.as_str()] {
        env.refusal(&["get", target, s(&out)], &[target]);
        assert!(!out.exists(), "get {target} created DEST");
        env.refusal(&["show", target], &[target]);
        env.refusal(&["show", "-r", target], &[target]);
        env.refusal(&["cat", target], &[target]);
        env.refusal(&["cat", target, "a/f.txt"], &[target]);
        env.refusal(&["export", target, "-o", s(&tar)], &[target]);
        assert!(!tar.exists(), "export {target} created its output");
        env.refusal(&["verify", target], &[target]);
        env.refusal(&["log", target], &[target]);
        env.refusal(&["rm", target], &[target]);
    }
    assert_eq!(env.state(), before, "a refused command changed the store");
    // A key that was bound and removed is unknown again for everything but `log`.
    write(&env.path("other"), "only.txt", b"only in gone/k\n");
    let gone_id = env.ok(&["put", "gone/k", s(&env.path("other"))]);
    env.ok(&["rm", "gone/k"]);
    env.refused(&["get", "gone/k", s(&out)], &["gone/k"]);
    env.refused(&["show", "gone/k"], &["gone/k"]);
    env.refused(&["rm", "gone/k"], &["gone/k"]);
    assert!(!out.exists());
    assert_eq!(env.json(&["log", "gone/k"]).as_array().unwrap().len(), 2);
    // Its root is still reachable by id until gc.
    assert!(env.ok(&["show", &gone_id]).contains("only.txt"));
    assert_ne!(gone_id, base_id);
}

#[test]
fn paths_inside_a_tree_that_are_not_files_are_refused_naming_them() {
    let (env, _src, id) = seeded();
    env.refused(&["cat", "base/k", "a/nope.txt"], &["a/nope.txt", &id]);
    env.refused(&["cat", "base/k", "a/b"], &["a/b"]);
    env.refused(&["cat", "base/k", "a/link"], &["a/link"]);
    env.refused(&["cat", "base/k", "a/f.txt/x"], &["a/f.txt/x"]);
    env.refused(&["cat", "base/k"], &[&id]);
    // A single-file root takes no path.
    let file_id = env.ok(&["put", "file/k", s(&env.path("src/a/f.txt"))]);
    env.refused(&["cat", "file/k", "a/f.txt"], &[&file_id]);
}

#[test]
fn get_into_an_existing_regular_file_is_refused() {
    let (env, _src, _) = seeded();
    let dest = env.path("dest-file");
    std::fs::write(&dest, b"precious\n").unwrap();
    let d = s(&dest);
    env.refused(&["get", "base/k", d], &[d]);
    env.refused(&["get", "base/k", d, "--force"], &[d]);
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious\n");
    // A single-file root does not silently replace an existing file either...
    env.ok(&["put", "file/k", s(&env.path("src/run.sh"))]);
    env.refused(&["get", "file/k", d], &[d]);
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious\n");
    // ...nor an existing folder, even with --force.
    let dir = env.path("dest-dir");
    write(&dir, "keep.txt", b"keep\n");
    env.refused(&["get", "file/k", s(&dir)], &[s(&dir)]);
    env.refused(&["get", "file/k", s(&dir), "--force"], &[s(&dir)]);
    assert_eq!(std::fs::read(dir.join("keep.txt")).unwrap(), b"keep\n");
    // With --force the single file is replaced by the stored one.
    env.ok(&["get", "file/k", d, "--force"]);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"#!/bin/sh\necho hi\n".to_vec()
    );
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn a_non_empty_dest_needs_force_and_force_replaces_its_contents_exactly() {
    let (env, src, id) = seeded();
    let dest = env.path("dest");
    // Old contents: a stray file, a file at a path the tree also has (different bytes), a
    // read-only folder, and a symlink to a folder outside DEST.
    write(&dest, "stray.txt", b"stray\n");
    write(&dest, "a/f.txt", b"old contents\n");
    write(&dest, "ro/inner.txt", b"inner\n");
    std::fs::set_permissions(dest.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let outside = env.path("outside");
    write(&outside, "victim.txt", b"must survive\n");
    std::os::unix::fs::symlink(&outside, dest.join("escape")).unwrap();
    let before = names_under(&dest);
    let d = s(&dest);
    env.refused(&["get", "base/k", d], &[d]);
    assert_eq!(names_under(&dest), before, "refused get touched DEST");
    assert_eq!(
        std::fs::read(dest.join("a/f.txt")).unwrap(),
        b"old contents\n"
    );

    env.ok(&["get", "base/k", d, "--force"]);
    assert_eq!(names_under(&dest), names_under(&src));
    assert_eq!(
        env.ok(&["hash", d]),
        id,
        "DEST is not exactly the stored tree"
    );
    assert_eq!(std::fs::read(dest.join("a/f.txt")).unwrap(), b"hello\n");
    assert_eq!(
        std::fs::read(outside.join("victim.txt")).unwrap(),
        b"must survive\n",
        "--force followed a symlink out of DEST"
    );
    // An empty DEST needs no --force.
    let empty = env.path("empty-dest");
    std::fs::create_dir(&empty).unwrap();
    env.ok(&["get", "base/k", s(&empty)]);
    assert_eq!(env.ok(&["hash", s(&empty)]), id);
}

#[test]
fn other_malformed_arguments_are_refused() {
    let (env, src, _) = seeded();
    let zip = env.path("out.zip");
    env.refused(&["export", "base/k", "-o", s(&zip)], &[s(&zip)]);
    assert!(!zip.exists());
    // A single-file root cannot be exported as an archive.
    let file_id = env.ok(&["put", "file/k", s(&src.join("a/f.txt"))]);
    let tar = env.path("file.tar");
    env.refused(&["export", "file/k", "-o", s(&tar)], &[&file_id]);
    assert!(!tar.exists());
    // Export into a folder that does not exist names the output.
    let nowhere = env.path("no/such/dir/x.tar");
    env.refused(&["export", "base/k", "-o", s(&nowhere)], &["no/such/dir"]);
    env.refused(
        &["put", "new/k", s(&src), "--label", "novalue"],
        &["novalue"],
    );
    env.refused(&["put", "new/k", s(&src), "--label", "=v"], &["=v"]);
    env.refused(&["--lock-timeout=-1", "ls"], &["--lock-timeout"]);
    env.refused(&["--lock-timeout=NaN", "ls"], &["--lock-timeout"]);
}

/// A store holding `k` = a tree with `a/f.txt` ("hello\n", a raw blob) and `a/b/big.txt`
/// (compressible, a zstd blob), both small, so both in the put's pack file. Returns the env and
/// the two blob ids.
fn corruptible() -> (Env, String, String) {
    let (env, src, _) = seeded();
    let small = env.ok(&["hash", s(&src.join("a/f.txt"))]);
    let big = env.ok(&["hash", s(&src.join("a/b/big.txt"))]);
    let (st, bt) = (env.stored(&small), env.stored(&big));
    assert!(st.packed && !st.zstd, "{st:?}");
    assert!(bt.packed && bt.zstd, "{bt:?}");
    assert_eq!(st.path, bt.path, "one put writes one pack");
    (env, small, big)
}

/// The blobs whose pack entries start at or after `st`'s in its pack: cutting the pack there
/// makes all of them unreadable.
fn entries_from(env: &Env, st: &Stored) -> Vec<String> {
    pack_entries(&env.store())
        .into_iter()
        .filter(|e| e.stored.path == st.path && e.stored.offset >= st.offset)
        .map(|e| format!("blake3:{}", e.id))
        .collect()
}

/// Checks every command that reads `bad` (a blob of `base/k`'s `path`) fails naming it and
/// leaves nothing behind; `word` is what the error calls the fault.
fn reads_of_a_bad_blob_fail(env: &Env, bad: &str, path: &str, word: &str) {
    reads_of_bad_blobs_fail(env, bad, &[], path, word)
}

/// [`reads_of_a_bad_blob_fail`] when blobs `also` are bad too: commands that read the whole
/// tree may name any one of them (they read in parallel); reads of `path` must name `bad`.
fn reads_of_bad_blobs_fail(env: &Env, bad: &str, also: &[String], path: &str, word: &str) {
    let names_one = |stderr: &[u8]| {
        let line = String::from_utf8_lossy(stderr).into_owned();
        assert_one_error_line(&line, &[word]);
        assert!(
            line.contains(bad) || also.iter().any(|a| line.contains(a.as_str())),
            "{line} names none of {bad}, {also:?}"
        );
    };
    // get into a DEST it creates: DEST is gone afterwards.
    let dest = env.path("dest-new");
    let out = env.run(&["get", "base/k", s(&dest)]);
    assert_eq!(out.status.code(), Some(1), "get over a {word} blob");
    names_one(&out.stderr);
    assert!(!dest.exists(), "get left {} behind", dest.display());

    // get into an existing empty DEST: it is empty again afterwards.
    let dest = env.path("dest-empty");
    std::fs::create_dir_all(&dest).unwrap();
    let out = env.run(&["get", "base/k", s(&dest)]);
    assert_eq!(out.status.code(), Some(1));
    names_one(&out.stderr);
    assert_eq!(names_under(&dest), Vec::<String>::new(), "get left files");

    // get --force over old contents: the bad file is not left there either.
    write(&dest, path, b"old\n");
    let out = env.run(&["get", "base/k", s(&dest), "--force"]);
    assert_eq!(out.status.code(), Some(1));
    names_one(&out.stderr);
    assert!(!dest.join(path).exists(), "get --force left {path} in DEST");

    // cat prints nothing at all.
    for args in [vec!["cat", "base/k", path], vec!["cat", bad]] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "cat {args:?}");
        assert!(
            out.stdout.is_empty(),
            "cat {args:?} printed {} bytes of a {word} blob",
            out.stdout.len()
        );
        assert_one_error_line(&String::from_utf8_lossy(&out.stderr), &[bad]);
    }

    // export writes no archive and leaves no temporary file beside it.
    let xdir = env.path("exports");
    std::fs::create_dir_all(&xdir).unwrap();
    let tar = xdir.join("k.tar.zst");
    let out = env.run(&["export", "base/k", "-o", s(&tar)]);
    assert_eq!(out.status.code(), Some(1), "export over a {word} blob");
    names_one(&out.stderr);
    assert_eq!(
        names_under(&xdir),
        Vec::<String>::new(),
        "export left files"
    );
}

/// Runs `verify` (whole store, by key, by id) and checks the exit code and that stdout names
/// `bad`.
fn verify_reports(env: &Env, want_code: i32, bad: &[&str], fault: &str) {
    let root = env.ok(&["show", "--json", "base/k"]);
    let root: serde_json::Value = serde_json::from_str(&root).unwrap();
    let root_id = root["root"]["id"].as_str().unwrap().to_string();
    for args in [
        vec!["verify"],
        vec!["verify", "base/k"],
        vec!["verify", root_id.as_str()],
    ] {
        let out = env.run(&args);
        assert_eq!(
            out.status.code(),
            Some(want_code),
            "{args:?}: stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        for id in bad {
            assert!(stdout.contains(id), "{args:?} does not name {id}: {stdout}");
        }
    }
    let out = env.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(want_code));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], false);
    for id in bad {
        assert!(
            v["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == *id && p["fault"] == fault && p["object"] == "blob"),
            "verify --json does not report {id} as {fault}: {v}"
        );
    }
}

#[test]
fn a_corrupt_blob_is_caught_by_get_cat_export_and_verify() {
    let (env, small, _big) = corruptible();
    let st = env.stored(&small);
    assert_eq!(st.read(), b"hello\n");
    st.write(b"HELLO\n");
    reads_of_a_bad_blob_fail(&env, &small, "a/f.txt", "corrupt");
    verify_reports(&env, 8, &[&small], "corrupt");
    // The damage is local: the other file of the same pack still reads.
    let out = env.run(&["cat", "base/k", "a/b/big.txt"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"0123456789abcdef".repeat(50_000));
    // Restoring the bytes heals the store.
    st.write(b"hello\n");
    assert_eq!(env.code(&["verify"]), 0);
}

#[test]
fn truncated_blobs_are_caught_like_corrupt_ones() {
    let (env, small, big) = corruptible();
    // A pack cut inside a raw blob's entry: it, and every entry after it, reads as corrupt.
    let st = env.stored(&small);
    let good = st.snapshot();
    let cut = entries_from(&env, &st);
    st.cut(3);
    reads_of_bad_blobs_fail(&env, &small, &cut, "a/f.txt", "corrupt");
    let cut_refs: Vec<&str> = cut.iter().map(|c| c.as_str()).collect();
    verify_reports(&env, 8, &cut_refs, "corrupt");
    st.restore(&good);
    assert_eq!(env.code(&["verify"]), 0);
    // A zstd blob cut in half.
    let bt = env.stored(&big);
    let cut = entries_from(&env, &bt);
    bt.cut(bt.len / 2);
    reads_of_bad_blobs_fail(&env, &big, &cut, "a/b/big.txt", "corrupt");
    verify_reports(&env, 8, &[&big], "corrupt");
    bt.restore(&good);
    assert_eq!(env.code(&["verify"]), 0);
    // A zstd blob whose frame is intact but decodes to other bytes of the same length.
    let other = (1..=19)
        .flat_map(|level| {
            [
                "0123456789ABCDEF",
                "0123456789abcdeF",
                "0123456789abcdeX",
                "X123456789abcdef",
            ]
            .map(|p| zstd::bulk::compress(&p.as_bytes().repeat(50_000), level).unwrap())
        })
        .find(|f| f.len() as u64 == bt.len)
        .expect("a frame of other content with the same length");
    bt.write(&other);
    reads_of_a_bad_blob_fail(&env, &big, "a/b/big.txt", "corrupt");
    verify_reports(&env, 8, &[&big], "corrupt");
    bt.restore(&good);
    assert_eq!(env.code(&["verify"]), 0);
}

#[test]
fn a_large_blob_file_that_is_cut_or_corrupt_is_caught() {
    // Blobs over 1 MiB keep a file of their own (raw when incompressible, else zstd).
    let env = Env::new();
    let src = env.path("src");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write(&src, "a/noise.bin", &noise);
    write(&src, "a/text.txt", &b"line of text\n".repeat(200_000));
    env.ok(&["put", "base/k", s(&src)]);
    for (path, zstd) in [("a/noise.bin", false), ("a/text.txt", true)] {
        let id = env.ok(&["hash", s(&src.join(path))]);
        let st = env.stored(&id);
        assert!(!st.packed && st.zstd == zstd, "{path}: {st:?}");
        let good = st.snapshot();
        st.cut(st.len / 2);
        reads_of_a_bad_blob_fail(&env, &id, path, "corrupt");
        verify_reports(&env, 8, &[&id], "corrupt");
        let mut flipped = good.clone();
        flipped[good.len() / 3] ^= 0x10;
        st.restore(&flipped);
        reads_of_a_bad_blob_fail(&env, &id, path, "corrupt");
        verify_reports(&env, 8, &[&id], "corrupt");
        st.restore(&good);
        assert_eq!(env.code(&["verify"]), 0);
    }
}

#[test]
fn a_deleted_pack_or_blob_file_is_reported_missing() {
    let (env, small, big) = corruptible();
    // A second put writes its own pack; corrupt a blob there.
    let other = env.path("other");
    write(&other, "x.txt", b"in another pack\n");
    env.ok(&["put", "other/k", s(&other)]);
    let other_id = env.ok(&["hash", s(&other.join("x.txt"))]);
    let ot = env.stored(&other_id);
    assert_ne!(ot.path, env.stored(&small).path);
    // Deleting the first pack loses every blob in it.
    std::fs::remove_file(env.stored(&small).path).unwrap();
    reads_of_bad_blobs_fail(
        &env,
        &small,
        std::slice::from_ref(&big),
        "a/f.txt",
        "missing",
    );
    verify_reports(&env, 16, &[&small, &big], "missing");
    // Missing and corrupt together set both bits.
    ot.write(b"IN ANOTHER PACK\n");
    let out = env.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(16 | 8));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (id, fault) in [
        (&small, "missing"),
        (&big, "missing"),
        (&other_id, "corrupt"),
    ] {
        assert!(
            v["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == id.as_str() && p["fault"] == fault),
            "verify does not report {id} as {fault}: {v}"
        );
    }
}

#[test]
fn a_store_path_that_is_not_a_folder_is_refused_naming_it() {
    let env = Env::new();
    let src = env.path("src");
    sample_tree(&src);
    // The env's --store path is a regular file.
    let file = env.store();
    std::fs::write(&file, b"a file\n").unwrap();
    let f = s(&file);
    env.refusal(&["ls"], &[f]);
    env.refusal(&["put", "k", s(&src)], &[f]);
    env.refusal(&["get", "k", s(&env.path("out"))], &[f]);
    env.refusal(&["gc"], &[f]);
    // verify's "could not run" is exit status 1, not one of its report bits.
    env.refusal(&["verify"], &[f]);
    assert_eq!(std::fs::read(&file).unwrap(), b"a file\n");
    assert!(!env.path("out").exists());
}

#[test]
fn an_archive_path_that_is_a_folder_is_refused_naming_it() {
    let (env, src, _) = seeded();
    env.refused(&["put", "new/k", s(&src), "--from-archive"], &[s(&src)]);
    env.refused(&["add", s(&src), "--from-archive"], &[s(&src)]);
}

/// The error line says what went wrong once: the cause is not repeated after itself.
#[test]
fn error_lines_do_not_repeat_their_cause() {
    let (env, _src, _) = seeded();
    let missing = env.path("missing");
    let line = env.refused(&["put", "new/k", s(&missing)], &[s(&missing)]);
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "the cause is repeated: {line}"
    );
    // An I/O error while materializing: DEST's parent is a regular file.
    let blocker = env.path("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let dest = blocker.join("dest");
    let line = env.refused(&["get", "base/k", s(&dest)], &["blocker"]);
    assert_eq!(
        line.matches("Not a directory").count(),
        1,
        "the cause is repeated: {line}"
    );
}

/// A folder nested more than 1,024 levels deep is refused as archive ingest refuses such paths
/// (the walks over a tree recurse once per level); exactly 1,024 is stored and restored.
#[test]
fn a_folder_nested_too_deep_is_refused_and_the_limit_itself_round_trips() {
    let env = Env::new();
    let nested = |name: &str, dirs: usize| {
        let root = env.path(name);
        let deepest = root.join(vec!["d"; dirs].join("/"));
        std::fs::create_dir_all(&deepest).unwrap();
        std::fs::write(deepest.join("f"), b"at the bottom\n").unwrap();
        root
    };
    // 1,024 folders and the file inside: a path of 1,025 segments.
    let too_deep = nested("too-deep", 1024);
    env.refused(
        &["put", "deep/k", s(&too_deep)],
        &["nested more than 1024 folders deep", "too-deep/d/d/d"],
    );
    // 1,023 folders and the file: 1,024 segments, the most an archive may hold too.
    let at_limit = nested("at-limit", 1023);
    let id = env.ok(&["put", "deep/k", s(&at_limit)]);
    let out = env.path("out");
    env.ok(&["get", "deep/k", s(&out)]);
    assert_eq!(env.ok(&["hash", s(&out)]), id);
    let tar = env.path("deep.tar");
    env.ok(&["export", "deep/k", "-o", s(&tar)]);
    assert_eq!(
        env.ok(&["put", "deep/again", s(&tar), "--from-archive"]),
        id
    );
}
