//! `--from-archive` with malformed and hostile archives: each is refused with one error line
//! naming the archive (and the entry at fault, when there is one), binds nothing, records
//! nothing in the index, and writes nothing outside the store.
//!
//! The archives are built byte by byte here, since tar libraries refuse to write most of them.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::tarb::{
    BLOCK, dir, file, finish, gnu_long_name, hardlink, header, pad, pax_path, symlink,
};
use crate::common::{Env, assert_one_error_line, gzip, names_under, noise, s, zstd};

/// A well-formed archive with two files and a folder.
fn good_tar() -> Vec<u8> {
    let mut t = Vec::new();
    dir(&mut t, "d/");
    file(&mut t, "d/one.txt", &b"first file\n".repeat(100));
    file(&mut t, "two.bin", &[7u8; 3000]);
    finish(t)
}

/// A test bed: a fresh store, a folder `work/deep/er` the commands run in (so a `..` that
/// escaped would land in `work/deep` or `work`), and a folder `outside` absolute names point at.
struct Bed {
    env: Env,
    cwd: PathBuf,
    outside: PathBuf,
}

impl Bed {
    fn new() -> Bed {
        let env = Env::new();
        let cwd = env.path("work/deep/er");
        std::fs::create_dir_all(&cwd).unwrap();
        let outside = env.path("outside");
        std::fs::create_dir_all(&outside).unwrap();
        // Create the store so that its state can be compared.
        assert_eq!(env.json(&["ls"]), serde_json::json!([]));
        Bed { env, cwd, outside }
    }

    fn write_archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.env.path("in").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn run_in_cwd(&self, args: &[&str]) -> Output {
        self.env
            .cmd()
            .current_dir(&self.cwd)
            .args(args)
            .output()
            .expect("run cairn")
    }

    /// Everything outside the store that an escaping entry could have touched: the test
    /// folder, `outside`, the names under `/`, and whether `/etc/evil` or `/tmp/evil` exist.
    fn outside_view(&self) -> (Vec<String>, Vec<String>, Vec<String>, [bool; 2]) {
        let top: Vec<String> = names_under(self.env.dir.path())
            .into_iter()
            .filter(|n| !n.starts_with("store") && !n.starts_with("in"))
            .collect();
        (
            top,
            names_under(&self.outside),
            root_names(),
            [
                Path::new("/etc/evil").exists(),
                Path::new("/tmp/evil").exists(),
            ],
        )
    }

    /// Ingests `bytes` (named `name`) with put and add, with and without --preserve, and checks
    /// each is refused (exit 1, nothing on stdout, one error line naming the archive and every
    /// one of `needles`), binds nothing, leaves the store exactly as it was (keys, index, blob
    /// files, temp files) and writes nothing outside it.
    fn refuses(&self, name: &str, bytes: &[u8], needles: &[&str]) {
        let archive = self.write_archive(name, bytes);
        let a = s(&archive);
        let state_before = self.env.state();
        let view_before = self.outside_view();
        let mut wanted = vec![a];
        wanted.extend_from_slice(needles);
        for args in [
            vec!["put", "hostile/k", a, "--from-archive"],
            vec!["put", "hostile/k", a, "--from-archive", "--preserve"],
            vec!["add", a, "--from-archive"],
        ] {
            let out = self.run_in_cwd(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name}: {args:?} was not refused; stdout {} stderr {stderr}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(out.stdout.is_empty(), "{name}: {args:?} printed on stdout");
            assert_one_error_line(&stderr, &wanted);
        }
        let state_after = self.env.state();
        assert_eq!(
            state_after.keys,
            serde_json::json!([]),
            "{name}: a key was bound"
        );
        assert_eq!(state_after, state_before, "{name}: the store changed");
        assert_eq!(
            self.outside_view(),
            view_before,
            "{name}: something was written outside the store"
        );
    }
}

/// Names directly under `/` (to see that nothing like `/evil` or `/x` appeared).
fn root_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every hostile case: (archive file name, bytes, what the error must name).
fn cases(outside: &Path) -> Vec<(String, Vec<u8>, Vec<String>)> {
    let good = good_tar();
    let body = &good[..good.len() - 2 * BLOCK];
    let mut v: Vec<(String, Vec<u8>, Vec<String>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, needles: &[&str]| {
        v.push((
            name.to_string(),
            bytes,
            needles.iter().map(|n| n.to_string()).collect(),
        ))
    };

    // Truncation.
    add("no-end-marker.tar", body.to_vec(), &["truncated"]);
    // Cut inside a member's data, and inside a header.
    let at = |name: &[u8]| {
        (0..good.len())
            .step_by(BLOCK)
            .find(|&i| good[i..].starts_with(name))
            .expect("entry in the good archive")
    };
    let one = at(b"d/one.txt");
    let two = at(b"two.bin");
    add(
        "mid-data.tar",
        good[..two + BLOCK + 1000].to_vec(),
        &["two.bin", "truncated"],
    );
    add(
        "mid-data-first.tar",
        good[..one + BLOCK + 500].to_vec(),
        &["d/one.txt", "truncated"],
    );
    add("mid-header.tar", good[..two + 100].to_vec(), &[]);
    let gz = gzip(&good);
    add("cut.tar.gz", gz[..gz.len() / 2].to_vec(), &[]);
    add("no-end-marker.tar.gz", gzip(body), &["truncated"]);
    // A gzip stream without its trailer (CRC and length), a zstd frame without its checksum.
    add("no-trailer.tar.gz", gz[..gz.len() - 8].to_vec(), &[]);
    let checked = {
        let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        std::io::copy(&mut &good[..], &mut e).unwrap();
        e.finish().unwrap()
    };
    add(
        "no-trailer.tar.zst",
        checked[..checked.len() - 4].to_vec(),
        &[],
    );
    // A flipped byte inside a member's content that only the gzip CRC or the zstd checksum
    // can catch (stored deflate blocks; incompressible content, which zstd keeps raw).
    let noise = noise(20_000, 0x9E37_79B9_7F4A_7C15);
    let mut t = Vec::new();
    file(&mut t, "noise.bin", &noise);
    let noisy = finish(t);
    let flip = |mut bytes: Vec<u8>| {
        let probe = &noise[10_000..10_032];
        let i = bytes
            .windows(probe.len())
            .position(|w| w == probe)
            .expect("content stored as it is");
        bytes[i + 7] ^= 0x20;
        bytes
    };
    let stored_gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        e.write_all(&noisy).unwrap();
        e.finish().unwrap()
    };
    add("bad-crc.tar.gz", flip(stored_gz), &[]);
    let checked_zst = {
        let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        std::io::copy(&mut &noisy[..], &mut e).unwrap();
        e.finish().unwrap()
    };
    add("bad-checksum.tar.zst", flip(checked_zst), &[]);
    let zs = zstd(&good);
    add("cut.tar.zst", zs[..zs.len() / 2].to_vec(), &[]);
    add("no-end-marker.tar.zst", zstd(body), &["truncated"]);

    // Garbage.
    let mut noise = self::noise(5000, 0x2545_F491_4F6C_DD1D);
    noise[0] = b'G'; // not a gzip or zstd magic
    add("garbage.tar", noise.clone(), &[]);
    add(
        "short-garbage.tar",
        b"this is not a tar file\n".to_vec(),
        &[],
    );
    add("empty.tar", Vec::new(), &[]);
    let mut fake_gz = vec![0x1f, 0x8b];
    fake_gz.extend_from_slice(&noise);
    add("garbage.tar.gz", fake_gz, &[]);
    let mut fake_zst = vec![0x28, 0xb5, 0x2f, 0xfd];
    fake_zst.extend_from_slice(&noise);
    add("garbage.tar.zst", fake_zst, &[]);

    // Names that climb out.
    for (label, name) in [
        ("dotdot", "../evil"),
        ("dotdot-deep", "../../evil"),
        ("dotdot-inner", "a/../../evil"),
        ("dotdot-dot", "./../evil"),
    ] {
        let mut t = Vec::new();
        file(&mut t, name, b"evil\n");
        add(&format!("{label}.tar"), finish(t), &[name, "'..'"]);
    }
    for (label, name) in [
        ("abs-etc", "/etc/evil".to_string()),
        ("abs-root", "/evil".to_string()),
        ("abs-outside", format!("{}/evil", outside.to_str().unwrap())),
    ] {
        let mut t = Vec::new();
        file(&mut t, &name, b"evil\n");
        add(&format!("{label}.tar"), finish(t), &[&name, "absolute"]);
    }
    // The same names after a good entry (so something has been stored by then).
    let mut t = body.to_vec();
    file(&mut t, "../evil", b"evil\n");
    add("dotdot-late.tar", finish(t), &["../evil"]);
    // ... compressed.
    let mut t = Vec::new();
    file(&mut t, "../evil", b"evil\n");
    add("dotdot.tar.gz", gzip(&finish(t.clone())), &["../evil"]);
    add("dotdot.tar.zst", zstd(&finish(t)), &["../evil"]);
    // ... hidden in a ustar prefix field.
    let mut h = header(b"evil", tar::EntryType::Regular, 5, b"");
    {
        let mut hh = tar::Header::from_byte_slice(&h).clone();
        hh.as_ustar_mut().unwrap().prefix[..2].copy_from_slice(b"..");
        hh.set_cksum();
        h = *hh.as_bytes();
    }
    let mut t = h.to_vec();
    t.extend_from_slice(b"evil\n");
    pad(&mut t);
    add("dotdot-prefix.tar", finish(t), &["../evil"]);
    // ... in a pax path record.
    let mut t = Vec::new();
    pax_path(&mut t, "../evil");
    file(&mut t, "harmless", b"evil\n");
    add("dotdot-pax.tar", finish(t), &["../evil"]);
    let mut t = Vec::new();
    pax_path(&mut t, "/etc/evil");
    file(&mut t, "harmless", b"evil\n");
    add("abs-pax.tar", finish(t), &["/etc/evil"]);
    // ... in a GNU long name.
    let long_evil = format!("{}/../../../evil", "d".repeat(120));
    let mut t = Vec::new();
    gnu_long_name(&mut t, &long_evil);
    file(&mut t, "harmless", b"evil\n");
    add("dotdot-gnu-long.tar", finish(t), &["evil", "'..'"]);

    // A symlink to / and then an entry through it.
    let mut t = Vec::new();
    symlink(&mut t, "a", "/");
    file(&mut t, "a/x", b"through the link\n");
    add("symlink-then-file.tar", finish(t), &["a/x"]);
    let mut t = Vec::new();
    symlink(&mut t, "a", "/");
    dir(&mut t, "a/x/");
    add("symlink-then-dir.tar", finish(t), &["a/x"]);
    let mut t = Vec::new();
    symlink(&mut t, "a", outside.to_str().unwrap());
    file(&mut t, "a/evil", b"through the link\n");
    add("symlink-outside-then-file.tar", finish(t), &["a/evil"]);
    let mut t = Vec::new();
    symlink(&mut t, "up", "..");
    file(&mut t, "up/evil", b"through the link\n");
    add("symlink-up-then-file.tar", finish(t), &["up/evil"]);
    // A file entry, then an entry beneath it.
    let mut t = Vec::new();
    file(&mut t, "f", b"a file\n");
    file(&mut t, "f/x", b"under a file\n");
    add("file-then-child.tar", finish(t), &["f/x"]);

    // Hardlinks to outside, or to what is not an earlier regular file.
    for (label, target, why) in [
        ("hardlink-dotdot", "../../etc/passwd", "'..'"),
        ("hardlink-abs", "/etc/passwd", "absolute"),
        ("hardlink-abs-outside", "/tmp/evil", "absolute"),
        ("hardlink-missing", "nowhere", "nowhere"),
    ] {
        let mut t = Vec::new();
        file(&mut t, "real", b"real\n");
        hardlink(&mut t, "h", target);
        add(&format!("{label}.tar"), finish(t), &["\"h\"", why]);
    }
    let mut t = Vec::new();
    hardlink(&mut t, "h", "later");
    file(&mut t, "later", b"later\n");
    add("hardlink-forward.tar", finish(t), &["\"h\"", "later"]);
    let mut t = Vec::new();
    dir(&mut t, "d/");
    hardlink(&mut t, "h", "d");
    add("hardlink-to-dir.tar", finish(t), &["\"h\"", "regular file"]);
    let mut t = Vec::new();
    symlink(&mut t, "s", "real");
    file(&mut t, "real", b"real\n");
    hardlink(&mut t, "h", "s");
    add(
        "hardlink-to-symlink.tar",
        finish(t),
        &["\"h\"", "regular file"],
    );
    let mut t = Vec::new();
    file(&mut t, "real", b"real\n");
    hardlink(&mut t, "h", "real/../../evil");
    add("hardlink-dotdot-inner.tar", finish(t), &["\"h\"", "'..'"]);
    v
}

fn check(label: &str) {
    let bed = Bed::new();
    let all = cases(&bed.outside);
    let mut matched = 0;
    for (name, bytes, needles) in &all {
        if name.starts_with(label) {
            matched += 1;
            let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
            bed.refuses(name, bytes, &needles);
        }
    }
    assert!(matched > 0, "no case starts with {label}");
}

#[test]
fn truncated_archives_are_refused() {
    for label in ["no-end-marker", "mid-data", "mid-header", "cut."] {
        check(label);
    }
}

#[test]
fn compressed_archives_cut_inside_their_trailer_are_refused() {
    check("no-trailer.tar.gz");
    check("no-trailer.tar.zst");
}

#[test]
fn a_gzip_archive_failing_its_crc_is_refused() {
    check("bad-crc.tar.gz");
}

#[test]
fn a_zstd_archive_failing_its_checksum_is_refused() {
    check("bad-checksum.tar.zst");
}

#[test]
fn garbage_is_refused() {
    for label in ["garbage.", "short-garbage", "empty.tar"] {
        check(label);
    }
}

#[test]
fn entries_named_with_dotdot_are_refused() {
    check("dotdot");
}

#[test]
fn absolute_entry_names_are_refused() {
    check("abs-");
}

#[test]
fn entries_through_a_symlink_are_refused() {
    check("symlink-");
    check("file-then-child");
}

#[test]
fn hardlinks_out_of_the_archive_or_forward_are_refused() {
    check("hardlink-");
}

/// The well-formed archive the hostile ones are cut from is accepted, in every compression,
/// with the same root id.
#[test]
fn the_good_archive_is_accepted_in_every_compression() {
    let bed = Bed::new();
    let good = good_tar();
    let mut ids = Vec::new();
    for (name, bytes) in [
        ("good.tar", good.clone()),
        ("good.tar.gz", gzip(&good)),
        ("good.tar.zst", zstd(&good)),
        // The name does not matter: compression is detected by content.
        ("good.bin", zstd(&good)),
    ] {
        let a = bed.write_archive(name, &bytes);
        ids.push(
            bed.env
                .ok(&["put", &format!("good/{name}"), s(&a), "--from-archive"]),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let out = bed.env.path("out");
    bed.env.ok(&["get", "good/good.tar", s(&out)]);
    assert_eq!(
        names_under(&out),
        ["d", "d/one.txt", "two.bin"].map(String::from)
    );
    assert_eq!(
        std::fs::read(out.join("d/one.txt")).unwrap(),
        b"first file\n".repeat(100)
    );
    // A symlink to / on its own is just a symlink, stored and restored as one.
    let mut t = Vec::new();
    symlink(&mut t, "a", "/");
    symlink(&mut t, "up", "../..");
    let a = bed.write_archive("links.tar", &finish(t));
    bed.env.ok(&["put", "links", s(&a), "--from-archive"]);
    let out = bed.env.path("links-out");
    bed.env.ok(&["get", "links", s(&out)]);
    assert_eq!(std::fs::read_link(out.join("a")).unwrap(), Path::new("/"));
    assert_eq!(
        std::fs::read_link(out.join("up")).unwrap(),
        Path::new("../..")
    );
    assert_eq!(names_under(&out), ["a", "up"].map(String::from));
}
