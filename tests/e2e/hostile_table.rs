//! One table of hostile inputs (malicious archives, OCI layouts and archives, a tampered remote),
//! each run through the command that reads it, with the same checks for every case:
//!
//! - refused cases: exit 1, nothing on stdout, one `cairn: error:` line naming the thing at
//!   fault (every needle of the case), no key bound (`ls`, `show`), the store exactly as before
//!   (keys, blob files, index counts, no temp files) and `verify` clean;
//! - accepted cases (inputs that are hostile-looking but valid, and must round-trip): exit 0,
//!   the key bound, `get` into DEST restores what the case says, `verify` clean;
//! - both: nothing created or changed outside DEST and the store (a snapshot of the sentinel
//!   area around DEST and the working folder, of the names under `/`, and of `/etc/evil` and
//!   `/tmp/evil`), the commands running in `work/deep/er` so that a `..` that escaped would land
//!   in a sentinel folder.
//!
//! Cases are grouped (archive, oci, remote, big) into one test each; a group runs every case
//! and reports all failures together.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use crate::common::tarb::{
    BLOCK, dir, entry, file, finish, hardlink, header, pad, pax_path, symlink,
};
use crate::common::{
    Env, Layout, OCI_MANIFEST, StoreState, assert_one_error_line, files_under, gzip, named, noise,
    s, sha256_hex, simple_layout, tar_dir, write, zstd,
};

/// The key every case's command binds (or must not bind).
const KEY: &str = "hostile/k";

/// Builds a case's input in the bed and returns the command's arguments.
type Build = Box<dyn Fn(&Bed) -> Vec<String>>;
/// Checks what `get` restored into DEST.
type Check = Box<dyn Fn(&Path) -> Result<(), String>>;

/// What a case expects.
enum Want {
    /// Refused, the error line naming every one of these.
    Refused(Vec<String>),
    /// Accepted: the key is bound and `get` into DEST gives a folder (or file) this accepts.
    Accepted(Check),
}

struct Case {
    group: &'static str,
    name: &'static str,
    /// Builds the input in the bed and returns the command's arguments.
    build: Build,
    want: Want,
}

/// The place a case runs in: a store holding one key (`base`) so that "unchanged" means
/// something, an input folder `in/` (archives, layouts, the remote), the working folder
/// `work/deep/er`, a sentinel area `work/sentinel` with files, DEST at `work/dest`, and a folder
/// `outside` that absolute names point at.
struct Bed {
    env: Env,
}

impl Bed {
    fn new() -> Bed {
        let env = Env::new();
        std::fs::create_dir_all(env.path("work/deep/er")).unwrap();
        write(&env.path("work/sentinel"), "a.txt", b"sentinel\n");
        write(&env.path("work/sentinel"), "sub/b.txt", b"sentinel b\n");
        std::fs::create_dir_all(env.path("outside")).unwrap();
        write(&env.path("outside"), "keep.txt", b"outside\n");
        let base = env.path("in/base");
        write(&base, "f.txt", b"base\n");
        env.ok(&["put", "base", s(&base)]);
        Bed { env }
    }

    fn input(&self, rel: &str) -> PathBuf {
        self.env.path("in").join(rel)
    }

    /// Writes `bytes` at `in/<name>` and returns its path.
    fn archive(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.input(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        s(&p).to_string()
    }

    fn dest(&self) -> PathBuf {
        self.env.path("work/dest")
    }

    fn outside(&self) -> PathBuf {
        self.env.path("outside")
    }

    /// Everything outside DEST, the store and the inputs that an escape could touch.
    fn sentinel(&self) -> (BTreeMap<String, String>, Vec<String>, [bool; 2]) {
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        let top = self.env.dir.path();
        for e in std::fs::read_dir(top).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name == "store" || name == "in" {
                continue;
            }
            let p = top.join(&name);
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                // DEST itself (`work/dest`) is not walked.
                let subs: Vec<(String, PathBuf)> = if name == "work" {
                    std::fs::read_dir(&p)
                        .unwrap()
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .filter(|n| n != "dest")
                        .map(|n| (format!("work/{n}"), p.join(n)))
                        .collect()
                } else {
                    vec![(name.clone(), p.clone())]
                };
                for (label, sub) in subs {
                    if std::fs::symlink_metadata(&sub).unwrap().is_dir() {
                        for (rel, h) in files_under(&sub) {
                            files.insert(format!("{label}/{rel}"), h);
                        }
                    } else {
                        files.insert(label, sha256_hex(&std::fs::read(&sub).unwrap()));
                    }
                }
                // Empty folders count too.
                files.insert(format!("{name}/"), String::new());
            } else {
                files.insert(name, "file".into());
            }
        }
        for d in [
            "work",
            "work/deep",
            "work/deep/er",
            "work/sentinel",
            "outside",
        ] {
            let names: Vec<String> = std::fs::read_dir(self.env.path(d))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !(d == "work" && n == "dest"))
                .collect();
            files.insert(format!("{d} lists"), format!("{names:?}"));
        }
        let mut root: Vec<String> = std::fs::read_dir("/")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        root.sort();
        (
            files,
            root,
            [
                Path::new("/etc/evil").exists(),
                Path::new("/tmp/evil").exists(),
            ],
        )
    }

    /// Runs cairn in `work/deep/er`.
    fn run(&self, args: &[String]) -> std::process::Output {
        self.env
            .cmd()
            .current_dir(self.env.path("work/deep/er"))
            .args(args)
            .output()
            .expect("run cairn")
    }
}

/// Runs one case in a fresh bed with the checks every case shares.
fn run_case(case: &Case) {
    let bed = Bed::new();
    let args = (case.build)(&bed);
    let state_before: StoreState = bed.env.state();
    let sentinel_before = bed.sentinel();
    let out = bed.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match &case.want {
        Want::Refused(needles) => {
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} was not refused; stdout {} stderr {stderr}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
            let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
            assert_one_error_line(&stderr, &needles);
            eprintln!("  {}: {}", case.name, stderr.trim_end());
            let state_after = bed.env.state();
            assert_eq!(state_after, state_before, "the store changed");
            let shown = bed.env.run(&["show", KEY]);
            assert_eq!(shown.status.code(), Some(1), "`show {KEY}` found the key");
            assert!(
                String::from_utf8_lossy(&shown.stderr).contains("unknown key"),
                "show {KEY}: {}",
                String::from_utf8_lossy(&shown.stderr)
            );
            assert!(!bed.dest().exists(), "DEST was created");
        }
        Want::Accepted(check) => {
            assert_eq!(out.status.code(), Some(0), "{args:?} was refused: {stderr}");
            eprintln!("  {}: accepted", case.name);
            let keys: Vec<String> = bed.env.key_roots().into_iter().map(|(k, _)| k).collect();
            assert_eq!(keys, ["base", KEY], "keys after the accepted command");
            bed.env.ok(&["show", KEY]);
            bed.env.assert_verify_clean("after the accepted command");
            let dest = bed.dest();
            bed.env.ok(&["get", KEY, s(&dest)]);
            if let Err(e) = check(&dest) {
                panic!("get {KEY} restored the wrong thing: {e}");
            }
        }
    }
    assert_eq!(
        bed.sentinel(),
        sentinel_before,
        "something was created or changed outside DEST and the store"
    );
}

/// Runs every case of `group`; reports all failures at once.
fn run_group(group: &str) {
    let all = cases();
    let mut failures = Vec::new();
    let mut ran = 0;
    let start = Instant::now();
    for case in all.iter().filter(|c| c.group == group) {
        ran += 1;
        let t = Instant::now();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| run_case(case)));
        eprintln!("{group}/{}: {:?}", case.name, t.elapsed());
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{group}/{}: {msg}", case.name));
        }
    }
    assert!(ran > 0, "no case in group {group}");
    eprintln!("{group}: {ran} cases in {:?}", start.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_table_archives() {
    run_group("archive");
}

#[test]
fn hostile_table_oci() {
    run_group("oci");
}

#[test]
fn hostile_table_tampered_remote() {
    run_group("remote");
}

#[test]
fn hostile_table_big_inputs() {
    run_group("big");
}

// ---------------------------------------------------------------------------------------------
// The table.

fn refused(needles: &[&str]) -> Want {
    Want::Refused(needles.iter().map(|n| n.to_string()).collect())
}

/// `put hostile/k ARCHIVE --from-archive` of `bytes`.
fn put_archive(name: &'static str, bytes: impl Fn() -> Vec<u8> + 'static) -> Build {
    Box::new(move |bed| {
        let a = bed.archive(name, &bytes());
        vec!["put".into(), KEY.into(), a, "--from-archive".into()]
    })
}

/// `oci import SRC --name hostile/k` of a layout folder `build` makes.
fn import_layout(build: impl Fn(&Bed, &Layout) + 'static) -> Build {
    Box::new(move |bed| {
        let l = simple_layout(bed.input("layout"), "img", b"x");
        build(bed, &l);
        vec![
            "oci".into(),
            "import".into(),
            s(&l.dir).into(),
            "--name".into(),
            KEY.into(),
        ]
    })
}

/// `oci import ARCHIVE --name hostile/k` of the archive `build` makes from a good layout.
fn import_archive(name: &'static str, build: impl Fn(&Bed, &Layout) -> Vec<u8> + 'static) -> Build {
    Box::new(move |bed| {
        let l = simple_layout(bed.input("layout"), "img", b"x");
        let bytes = build(bed, &l);
        let a = bed.archive(name, &bytes);
        vec![
            "oci".into(),
            "import".into(),
            a,
            "--name".into(),
            KEY.into(),
        ]
    })
}

/// The manifest of a simple layout: its digest and JSON.
fn manifest_of(l: &Layout) -> (String, Value) {
    let idx: Value =
        serde_json::from_slice(&std::fs::read(l.dir.join("index.json")).unwrap()).unwrap();
    let d = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let m =
        serde_json::from_slice(&std::fs::read(l.dir.join("blobs/sha256").join(&d[7..])).unwrap())
            .unwrap();
    (d, m)
}

/// Replaces the manifest of a simple layout by `m` (and the index entry by its descriptor).
fn set_manifest(l: &Layout, old: &str, m: &Value) {
    std::fs::remove_file(l.dir.join("blobs/sha256").join(&old[7..])).unwrap();
    let d = l.json_blob(OCI_MANIFEST, m);
    l.index(vec![named(d, "img")]);
}

fn layer_digest(l: &Layout, i: usize) -> String {
    manifest_of(l).1["layers"][i]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A tar of the layout folder with `extra` (raw tar entries) before the end marker.
fn layout_tar_with(l: &Layout, extra: &[u8]) -> Vec<u8> {
    let mut t = tar_dir(&l.dir);
    t.truncate(t.len() - 2 * BLOCK);
    // tar-rs pads archives to 10 KiB records: drop the zero blocks it added too.
    while t.len() >= BLOCK && t[t.len() - BLOCK..].iter().all(|&b| b == 0) {
        t.truncate(t.len() - BLOCK);
    }
    t.extend_from_slice(extra);
    finish(t)
}

fn one_file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    file(&mut t, name, data);
    t
}

/// The metadata (and content, for a file) of `rel` under `dest`, reached one component at a
/// time through `/proc/self/fd`, so that paths longer than PATH_MAX work.
fn deep(dest: &Path, rel: &[u8]) -> std::io::Result<(std::fs::Metadata, Option<Vec<u8>>)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let mut dir = std::fs::File::open(dest)?;
    let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    let (last, parents) = parts.split_last().unwrap();
    let at = |dir: &std::fs::File, name: &[u8]| {
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name);
        PathBuf::from(std::ffi::OsStr::from_bytes(&p))
    };
    for part in parents {
        dir = std::fs::File::open(at(&dir, part))?;
    }
    let p = at(&dir, last);
    let md = std::fs::symlink_metadata(&p)?;
    let content = if md.is_file() {
        Some(std::fs::read(&p)?)
    } else {
        None
    };
    Ok((md, content))
}

/// A folder DEST holding `want` (relative path → content; `None` for a folder).
fn holds(want: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Check {
    Box::new(move |dest| {
        for (rel, content) in &want {
            let shown = String::from_utf8_lossy(rel);
            let (md, got) = deep(dest, rel).map_err(|e| format!("{shown}: {e}"))?;
            match content {
                None if md.is_dir() => {}
                Some(c) if got.as_ref() == Some(c) => {}
                _ => return Err(format!("{shown}: wrong type or content")),
            }
        }
        Ok(())
    })
}

/// A tampered-remote case: a publisher store pushes `keys` (built by `publish`) to a file://
/// remote under `in/remote`, `tamper` changes the remote, and the bed's store pulls `pull`.
fn tampered(
    publish: impl Fn(&Bed, &Env, &Path) + 'static,
    tamper: impl Fn(&Bed, &Path) + 'static,
    pull: &'static str,
) -> Build {
    Box::new(move |bed| {
        let remote = bed.input("remote");
        let publisher = Env::new();
        publish(bed, &publisher, &remote);
        tamper(bed, &remote);
        vec![
            "pull".into(),
            format!("file://{}", remote.display()),
            pull.into(),
        ]
    })
}

/// The remote record of `key` (JSON).
fn record(remote: &Path, key: &str) -> Value {
    serde_json::from_slice(&std::fs::read(remote.join(format!("keys/{key}.key"))).unwrap()).unwrap()
}

fn set_record(remote: &Path, key: &str, v: &Value) {
    std::fs::write(
        remote.join(format!("keys/{key}.key")),
        serde_json::to_vec_pretty(v).unwrap(),
    )
    .unwrap();
}

/// Publishes `k` (with a standalone blob: one 9 MiB incompressible file, over the packing
/// limit) and `k2` (another tree, pushed on its own so it gets a pack of its own); signed by `signer` if given, whose public key line is written to `in/<signer>.pub`.
fn publish_two(signer: Option<&'static str>) -> impl Fn(&Bed, &Env, &Path) + 'static {
    move |bed, p, remote| {
        let a = p.path("src/a");
        write(&a, "small.txt", b"small\n");
        std::fs::write(a.join("noise.bin"), noise(9 << 20, 5)).unwrap();
        let b = p.path("src/b");
        write(&b, "other.txt", b"other tree\n");
        write(&b, "more/x.txt", &b"more\n".repeat(100));
        let mut sign = Vec::new();
        if let Some(name) = signer {
            let keys = p.path("keys");
            p.ok(&["key", "generate", name, "--dir", s(&keys)]);
            let secret = keys.join(format!("{name}.secret"));
            let line = p.ok(&["key", "show", s(&secret)]);
            std::fs::write(bed.input(&format!("{name}.pub")), line).unwrap();
            sign = vec!["--sign".to_string(), s(&secret).to_string()];
        }
        let signed = |args: &[&str]| {
            let mut all: Vec<&str> = args.to_vec();
            all.extend(sign.iter().map(String::as_str));
            p.ok(&all);
        };
        signed(&["put", KEY, s(&a)]);
        signed(&["put", "other/k2", s(&b)]);
        let url = format!("file://{}", remote.display());
        p.ok(&["push", &url, KEY]);
        p.ok(&["push", &url, "other/k2"]);
    }
}

/// Makes the bed's store require signatures by the keys whose public lines are in `in/`.
fn trust(bed: &Bed, names: &[&str]) {
    let lines: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(bed.input(&format!("{n}.pub"))).unwrap())
        .map(|l| format!("{:?}", l.trim()))
        .collect();
    write(
        &bed.env.path("xdg-config"),
        "cairn/config.toml",
        format!(
            "trusted-keys = [{}]\nrequire-signatures = true\n",
            lines.join(", ")
        )
        .as_bytes(),
    );
}

fn hex_of(id: &Value) -> String {
    id.as_str()
        .and_then(|s| s.strip_prefix("blake3:"))
        .expect("an id")
        .to_string()
}

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = Vec::new();
    let mut add = |group: &'static str, name: &'static str, build: Build, want: Want| {
        v.push(Case {
            group,
            name,
            build,
            want,
        })
    };

    // ---- Archives (`put --from-archive`).
    add(
        "archive",
        "path traversal by ..",
        put_archive("dotdot.tar", || finish(one_file("../../evil", b"evil\n"))),
        refused(&["../../evil", "'..'"]),
    );
    add(
        "archive",
        "path traversal by .. inside a path",
        put_archive("dotdot-inner.tar", || {
            finish(one_file("a/b/../../../evil", b"evil\n"))
        }),
        refused(&["a/b/../../../evil", "'..'"]),
    );
    add(
        "archive",
        "path traversal in a pax path",
        put_archive("dotdot-pax.tar", || {
            let mut t = Vec::new();
            pax_path(&mut t, "../evil");
            file(&mut t, "harmless", b"evil\n");
            finish(t)
        }),
        refused(&["../evil"]),
    );
    add(
        "archive",
        "absolute name",
        put_archive("abs.tar", || finish(one_file("/tmp/evil", b"evil\n"))),
        refused(&["/tmp/evil", "absolute"]),
    );
    add(
        "archive",
        "symlink escape: a link to / then a file through it",
        put_archive("symlink-escape.tar", || {
            let mut t = Vec::new();
            symlink(&mut t, "a", "/tmp");
            file(&mut t, "a/evil", b"through the link\n");
            finish(t)
        }),
        refused(&["a/evil"]),
    );
    add(
        "archive",
        "symlink escape: a link to .. then a folder through it",
        put_archive("symlink-up.tar", || {
            let mut t = Vec::new();
            symlink(&mut t, "up", "../..");
            dir(&mut t, "up/evil/");
            finish(t)
        }),
        refused(&["up/evil"]),
    );
    add(
        "archive",
        "hardlink escape to an absolute path",
        put_archive("hardlink-abs.tar", || {
            let mut t = Vec::new();
            file(&mut t, "real", b"real\n");
            hardlink(&mut t, "h", "/etc/passwd");
            finish(t)
        }),
        refused(&["\"h\"", "absolute"]),
    );
    add(
        "archive",
        "hardlink escape by ..",
        put_archive("hardlink-dotdot.tar", || {
            let mut t = Vec::new();
            file(&mut t, "real", b"real\n");
            hardlink(&mut t, "h", "../../etc/passwd");
            finish(t)
        }),
        refused(&["\"h\"", "'..'"]),
    );
    // A symlink pointing out of the tree is data, not an escape: stored and restored as a
    // symlink, never followed.
    add(
        "archive",
        "symlinks pointing outside, alone (accepted: restored as links, not followed)",
        put_archive("symlink-alone.tar", || {
            let mut t = Vec::new();
            symlink(&mut t, "passwd", "/etc/passwd");
            symlink(&mut t, "up", "../../../outside/keep.txt");
            finish(t)
        }),
        Want::Accepted(Box::new(|dest| {
            for (name, target) in [
                ("passwd", "/etc/passwd"),
                ("up", "../../../outside/keep.txt"),
            ] {
                let t = std::fs::read_link(dest.join(name)).map_err(|e| format!("{name}: {e}"))?;
                if t != Path::new(target) {
                    return Err(format!("{name} -> {t:?}"));
                }
            }
            Ok(())
        })),
    );
    add(
        "archive",
        "size that lies: header claims more than the data",
        put_archive("size-long.tar", || {
            let mut t = header(b"liar", tar::EntryType::Regular, 1 << 20, b"").to_vec();
            t.extend_from_slice(&[b'x'; 1000]);
            pad(&mut t);
            finish(t)
        }),
        refused(&["liar", "truncated"]),
    );
    add(
        "archive",
        "size that lies: header claims less than the data",
        put_archive("size-short.tar", || {
            let mut t = header(b"liar", tar::EntryType::Regular, 10, b"").to_vec();
            t.extend_from_slice(&[b'x'; 3000]);
            pad(&mut t);
            finish(t)
        }),
        refused(&["size-short.tar"]),
    );
    add(
        "archive",
        "truncated stream: plain tar cut inside a file",
        put_archive("cut.tar", || {
            let t = finish(one_file("f", &[7u8; 5000]));
            t[..BLOCK + 2000].to_vec()
        }),
        refused(&["\"f\"", "truncated"]),
    );
    add(
        "archive",
        "truncated stream: gzip cut in half",
        put_archive("cut.tar.gz", || {
            let g = gzip(&finish(one_file("f", &noise(20_000, 1))));
            g[..g.len() / 2].to_vec()
        }),
        refused(&["cut.tar.gz"]),
    );
    add(
        "archive",
        "truncated stream: zstd cut in half",
        put_archive("cut.tar.zst", || {
            let z = zstd(&finish(one_file("f", &noise(20_000, 2))));
            z[..z.len() / 2].to_vec()
        }),
        refused(&["cut.tar.zst"]),
    );
    add(
        "archive",
        "decompression bomb whose header lies: claims 8 GiB, inflates to 64 MiB of zeros",
        put_archive("bomb-liar.tar.gz", || {
            let mut t = header(b"bomb", tar::EntryType::Regular, 8 << 30, b"").to_vec();
            t.resize(t.len() + (64 << 20), 0);
            gzip(&t)
        }),
        refused(&["bomb", "truncated"]),
    );
    add(
        "archive",
        "decompression bomb: 64 MiB of zeros in a 64 KiB gzip (accepted: streamed, stored small)",
        put_archive("bomb.tar.gz", || {
            gzip(&finish(one_file("zeros", &vec![0u8; 64 << 20])))
        }),
        Want::Accepted(Box::new(|dest| {
            let md = std::fs::metadata(dest.join("zeros")).map_err(|e| e.to_string())?;
            if md.len() != 64 << 20 {
                return Err(format!("zeros: {} bytes", md.len()));
            }
            let store = dest.parent().unwrap().parent().unwrap().join("store/blobs");
            let on_disk: u64 = files_under(&store)
                .keys()
                .map(|k| std::fs::metadata(store.join(k)).unwrap().len())
                .sum();
            if on_disk > 4 << 20 {
                return Err(format!("the store holds {on_disk} bytes of blobs"));
            }
            Ok(())
        })),
    );
    add(
        "archive",
        "a 4 KiB file name (refused: longer than a file name may be)",
        put_archive("long-name.tar", || {
            let mut t = Vec::new();
            pax_path(&mut t, &"n".repeat(4096));
            file(&mut t, "harmless", b"long\n");
            finish(t)
        }),
        refused(&["long-name.tar", "4096"]),
    );
    add(
        "archive",
        "a 4 KiB path of 255-byte names (accepted, round-trips)",
        put_archive("long-path.tar", || {
            let seg = "p".repeat(255);
            let path = vec![seg; 16].join("/");
            let mut t = Vec::new();
            pax_path(&mut t, &path);
            file(&mut t, "harmless", b"deep and long\n");
            finish(t)
        }),
        Want::Accepted({
            let seg = "p".repeat(255);
            holds(vec![(
                vec![seg; 16].join("/").into_bytes(),
                Some(b"deep and long\n".to_vec()),
            )])
        }),
    );
    add(
        "archive",
        "invalid UTF-8 names (accepted: names are bytes, and round-trip)",
        put_archive("utf8.tar", || {
            let mut t = Vec::new();
            t.extend_from_slice(&header(b"bad\xff\xfename", tar::EntryType::Regular, 4, b""));
            t.extend_from_slice(b"odd\n");
            pad(&mut t);
            t.extend_from_slice(&header(b"dir\xc3(/", tar::EntryType::Directory, 0, b""));
            finish(t)
        }),
        Want::Accepted(holds(vec![
            (b"bad\xff\xfename".to_vec(), Some(b"odd\n".to_vec())),
            (b"dir\xc3(".to_vec(), None),
        ])),
    );
    add(
        "archive",
        "a name with a NUL in a pax path",
        put_archive("nul.tar", || {
            let mut t = Vec::new();
            pax_path(&mut t, "a\0b");
            file(&mut t, "harmless", b"nul\n");
            finish(t)
        }),
        refused(&["nul.tar"]),
    );

    // ---- OCI layouts and archives (`oci import`).
    add(
        "oci",
        "digest that lies: a blob whose bytes are not its name",
        import_layout(|_, l| {
            let d = layer_digest(l, 1);
            std::fs::write(l.dir.join("blobs/sha256").join(&d[7..]), b"not the layer").unwrap();
        }),
        Want::Refused(vec!["hashes to".into()]),
    );
    add(
        "oci",
        "size that lies: a descriptor one byte too long",
        import_layout(|_, l| {
            let (md, mut m) = manifest_of(l);
            m["layers"][0]["size"] = json!(m["layers"][0]["size"].as_u64().unwrap() + 1);
            set_manifest(l, &md, &m);
        }),
        refused(&["says"]),
    );
    add(
        "oci",
        "manifest naming a missing blob",
        import_layout(|_, l| {
            let d = layer_digest(l, 2);
            std::fs::remove_file(l.dir.join("blobs/sha256").join(&d[7..])).unwrap();
        }),
        refused(&["missing"]),
    );
    add(
        "oci",
        "invalid JSON in index.json",
        import_layout(|_, l| {
            write(
                &l.dir,
                "index.json",
                b"{\"schemaVersion\":2,\"manifests\":[",
            )
        }),
        refused(&["index.json", "invalid"]),
    );
    add(
        "oci",
        "invalid JSON in a manifest whose digest is right",
        import_layout(|_, l| {
            let d = l.blob(OCI_MANIFEST, b"{\"schemaVersion\":2,\"config\":");
            l.index(vec![named(d, "img")]);
        }),
        refused(&["invalid image manifest"]),
    );
    add(
        "oci",
        "index.json with an unknown field nested 100,000 arrays deep (accepted: unknown \
         fields are allowed and skipped without recursing; exported byte for byte)",
        import_layout(|_, l| {
            // In an unknown field, which the parser skips, nesting and all.
            let mut j = r#"{"schemaVersion":2,"manifests":[],"x":"#.to_string();
            j.push_str(&"[".repeat(100_000));
            j.push_str(&"]".repeat(100_000));
            j.push('}');
            write(&l.dir, "index.json", j.as_bytes());
        }),
        Want::Accepted(Box::new(|dest| {
            let got = std::fs::read(dest.join("index.json")).map_err(|e| e.to_string())?;
            let mut want = r#"{"schemaVersion":2,"manifests":[],"x":"#.to_string();
            want.push_str(&"[".repeat(100_000));
            want.push_str(&"]".repeat(100_000));
            want.push('}');
            if got != want.as_bytes() {
                return Err("index.json is not the imported bytes".into());
            }
            Ok(())
        })),
    );
    add(
        "oci",
        "decompression bomb: a 64 MiB index.json in a small zstd archive",
        import_archive("bomb.tar.zst", |_, l| {
            let mut big = b"{\"schemaVersion\":2,\"manifests\":[]".to_vec();
            big.resize(64 << 20, b' ');
            big.push(b'}');
            write(&l.dir, "index.json", &big);
            zstd(&tar_dir(&l.dir))
        }),
        refused(&["index.json"]),
    );
    add(
        "oci",
        "a blob in the layout folder that is a symlink out of it",
        import_layout(|bed, l| {
            let d = layer_digest(l, 0);
            let p = l.dir.join("blobs/sha256").join(&d[7..]);
            std::fs::remove_file(&p).unwrap();
            std::os::unix::fs::symlink(bed.outside().join("keep.txt"), &p).unwrap();
        }),
        refused(&["symlinks are refused"]),
    );
    add(
        "oci",
        "archive entry climbing out by ..",
        import_archive("dotdot.tar", |_, l| {
            layout_tar_with(l, &one_file("../evil", b"x"))
        }),
        refused(&["../evil", "'..'"]),
    );
    add(
        "oci",
        "archive entry with an absolute name",
        import_archive("abs.tar", |_, l| {
            layout_tar_with(l, &one_file("/tmp/evil", b"x"))
        }),
        refused(&["/tmp/evil", "absolute"]),
    );
    add(
        "oci",
        "archive with a symlink entry",
        import_archive("symlink.tar", |_, l| {
            let mut t = Vec::new();
            symlink(&mut t, "blobs/sha256/evil", "/etc/passwd");
            layout_tar_with(l, &t)
        }),
        refused(&["blobs/sha256/evil"]),
    );
    add(
        "oci",
        "archive with a hardlink entry",
        import_archive("hardlink.tar", |_, l| {
            let mut t = Vec::new();
            entry(&mut t, "extra", tar::EntryType::Link, "/etc/passwd", b"");
            layout_tar_with(l, &t)
        }),
        refused(&["extra"]),
    );
    add(
        "oci",
        "truncated archive",
        import_archive("trunc.tar", |_, l| {
            let t = tar_dir(&l.dir);
            t[..t.len() / 2].to_vec()
        }),
        refused(&["trunc.tar", "truncated"]),
    );
    add(
        "oci",
        "docker-save manifest.json naming a layer the archive lacks",
        import_archive("docker.tar", |_, _| {
            let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
            let cfg_name = format!("{}.json", sha256_hex(config));
            let manifest = format!(
                r#"[{{"Config":"{cfg_name}","RepoTags":["img:1"],"Layers":["abc/layer.tar"]}}]"#
            );
            let mut t = Vec::new();
            file(&mut t, "manifest.json", manifest.as_bytes());
            file(&mut t, &cfg_name, config);
            finish(t)
        }),
        refused(&["abc/layer.tar", "lacks"]),
    );
    add(
        "oci",
        "docker-save manifest.json that is not JSON",
        import_archive("docker-bad.tar", |_, _| {
            finish(one_file("manifest.json", b"[{\"Config\":"))
        }),
        refused(&["manifest.json", "invalid"]),
    );

    // ---- A tampered remote (`pull`).
    add(
        "remote",
        "an object replaced by other bytes",
        tampered(
            publish_two(None),
            |_, remote| {
                let rec = record(remote, KEY);
                let blob = hex_of(&rec["blobs"][0]);
                let p = remote.join(format!("blobs/{}/{blob}.zst", &blob[..2]));
                let len = std::fs::metadata(&p).unwrap().len() as usize;
                // Another valid zstd frame, of other content, of about the same length.
                std::fs::write(&p, zstd::encode_all(&noise(len, 99)[..], 1).unwrap()).unwrap();
            },
            KEY,
        ),
        refused(&["corrupt", ".zst"]),
    );
    add(
        "remote",
        "a pack replaced by another key's pack",
        tampered(
            publish_two(None),
            |_, remote| {
                let a = hex_of(&record(remote, KEY)["packs"][0]);
                let b = hex_of(&record(remote, "other/k2")["packs"][0]);
                if a != b {
                    let pa = remote.join(format!("packs/{}/{a}.pack", &a[..2]));
                    let pb = remote.join(format!("packs/{}/{b}.pack", &b[..2]));
                    std::fs::copy(pb, pa).unwrap();
                } else {
                    panic!("both keys share one pack");
                }
            },
            KEY,
        ),
        refused(&["corrupt", ".pack"]),
    );
    add(
        "remote",
        "a key record re-pointed at another key's root",
        tampered(
            publish_two(None),
            |_, remote| {
                let other = record(remote, "other/k2");
                let mut rec = record(remote, KEY);
                rec["record"]["root"] = other["record"]["root"].clone();
                rec["packs"] = other["packs"].clone();
                rec["blobs"] = other["blobs"].clone();
                set_record(remote, KEY, &rec);
            },
            KEY,
        ),
        refused(&[KEY, "record does not match its root"]),
    );
    add(
        "remote",
        "a signed record re-pointed at another key's root, sizes fixed up",
        tampered(
            publish_two(Some("ci")),
            |bed, remote| {
                trust(bed, &["ci"]);
                let other = record(remote, "other/k2");
                let mut rec = record(remote, KEY);
                for f in ["root", "size", "files"] {
                    rec["record"][f] = other["record"][f].clone();
                }
                rec["packs"] = other["packs"].clone();
                rec["blobs"] = other["blobs"].clone();
                set_record(remote, KEY, &rec);
            },
            KEY,
        ),
        refused(&[KEY, "no valid signature by a trusted key", "ci (invalid)"]),
    );
    add(
        "remote",
        "a signed record whose two attachments are forged into one (same fingerprint lines)",
        tampered(
            |bed, p, remote| {
                let a = p.path("src/a");
                write(&a, "out.txt", b"output\n");
                let keys = p.path("keys");
                p.ok(&["key", "generate", "ci", "--dir", s(&keys)]);
                let secret = keys.join("ci.secret");
                let line = p.ok(&["key", "show", s(&secret)]);
                std::fs::write(bed.input("ci.pub"), line).unwrap();
                let files = p.path("attached");
                write(&files, "x", b"1");
                write(&files, "y", b"22");
                p.ok(&["put", KEY, s(&a)]);
                p.ok(&["attach", KEY, "a", s(&files.join("x"))]);
                p.ok(&[
                    "attach",
                    KEY,
                    "b",
                    s(&files.join("y")),
                    "--sign",
                    s(&secret),
                ]);
                p.ok(&["push", &format!("file://{}", remote.display()), KEY]);
            },
            |bed, remote| {
                trust(bed, &["ci"]);
                // {a: (X,1), b: (Y,2)} becomes the one attachment "a=X:1\nattachment.b" ->
                // (Y,2): printed unescaped, both give the fingerprint lines
                // "attachment.a=X:1" and "attachment.b=Y:2".
                let mut rec = record(remote, KEY);
                let atts = rec["record"]["attachments"].clone();
                let x = atts["a"]["id"].as_str().unwrap().to_string();
                let forged_name = format!("a={x}:1\nattachment.b");
                rec["record"]["attachments"] = serde_json::json!({ forged_name: atts["b"] });
                set_record(remote, KEY, &rec);
            },
            KEY,
        ),
        refused(&[KEY, "is corrupt", "invalid attachment name"]),
    );
    add(
        "remote",
        "a record signed by an untrusted key",
        tampered(
            publish_two(Some("evil")),
            |bed, _| {
                let p = Env::new();
                let keys = p.path("keys");
                p.ok(&["key", "generate", "ci", "--dir", s(&keys)]);
                let line = p.ok(&["key", "show", s(&keys.join("ci.pub"))]);
                std::fs::write(bed.input("ci.pub"), line).unwrap();
                trust(bed, &["ci"]);
            },
            KEY,
        ),
        refused(&[
            KEY,
            "no valid signature by a trusted key",
            "evil (not trusted)",
        ]),
    );
    add(
        "remote",
        "an unsigned record when signatures are required",
        tampered(
            publish_two(None),
            |bed, _| {
                let p = Env::new();
                let keys = p.path("keys");
                p.ok(&["key", "generate", "ci", "--dir", s(&keys)]);
                let line = p.ok(&["key", "show", s(&keys.join("ci.pub"))]);
                std::fs::write(bed.input("ci.pub"), line).unwrap();
                trust(bed, &["ci"]);
            },
            KEY,
        ),
        refused(&[KEY, "no valid signature by a trusted key", "found: none"]),
    );

    // ---- Big inputs.
    add(
        "big",
        "a 100,000-entry directory (accepted, round-trips)",
        put_archive("wide.tar.gz", || {
            let mut t = Vec::new();
            dir(&mut t, "wide/");
            for i in 0..100_000 {
                t.extend_from_slice(&header(
                    format!("wide/{i:06}").as_bytes(),
                    tar::EntryType::Regular,
                    0,
                    b"",
                ));
            }
            gzip(&finish(t))
        }),
        Want::Accepted(Box::new(|dest| {
            let n = std::fs::read_dir(dest.join("wide"))
                .map_err(|e| e.to_string())?
                .count();
            if n != 100_000 {
                return Err(format!("wide holds {n} entries"));
            }
            let md = std::fs::metadata(dest.join("wide/099999")).map_err(|e| e.to_string())?;
            if !md.is_file() || md.len() != 0 {
                return Err("wide/099999 is not an empty file".into());
            }
            Ok(())
        })),
    );
    add(
        "big",
        "folders nested 1,024 deep, the most allowed (accepted, round-trips)",
        put_archive("deep.tar", || {
            let path = vec!["d"; 1023].join("/");
            let mut t = Vec::new();
            pax_path(&mut t, &format!("{path}/leaf"));
            file(&mut t, "harmless", b"leaf\n");
            finish(t)
        }),
        Want::Accepted({
            let mut path = vec!["d"; 1023].join("/");
            path.push_str("/leaf");
            holds(vec![(path.into_bytes(), Some(b"leaf\n".to_vec()))])
        }),
    );
    add(
        "big",
        "folders nested 100,000 deep (refused: deeper than 1,024; it overflowed the stack)",
        put_archive("deeper.tar.gz", || {
            let path = vec!["d"; 100_000].join("/");
            let mut t = Vec::new();
            pax_path(&mut t, &format!("{path}/leaf"));
            file(&mut t, "harmless", b"leaf\n");
            gzip(&finish(t))
        }),
        refused(&["deeper.tar.gz", "nested more than 1024 folders deep"]),
    );
    v
}
