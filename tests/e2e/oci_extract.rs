//! `cairn oci extract` and `cairn oci ls`: the merged root filesystem of an image, compared
//! path by path with `umoci unpack` of the same layout (images built byte by byte here and with
//! umoci itself); `--path`, `--platform`, reuse of decomposed layers, gc; hostile images, each
//! refused with one line naming the layer and entry, nothing written outside DEST.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::tarb::{Ent, Tar};
use crate::common::{Env, Layout, assert_one_error_line, gzip, named, s, sha256_hex, write, zstd};
use crate::oci::{import, tool};

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A single-platform image (linux/amd64, whatever the host) over `layers`, named `name`.
fn image(dir: PathBuf, name: &str, layers: &[(&str, Vec<u8>)]) -> PathBuf {
    let l = Layout::new(dir);
    let m = l.image("amd64", layers);
    l.index(vec![named(m, name)]);
    l.dir
}

/// The rich three-layer image's layer tars: every entry type, setuid/setgid/sticky, owners,
/// mtimes, an xattr, a hardlink within a layer and one to a lower layer, whiteouts of a file
/// and of a folder holding a hardlink's target, an opaque folder, a folder replaced by a file
/// and the reverse, and parents the tar never names.
fn rich_layers() -> [Vec<u8>; 3] {
    let mut t = Tar::default();
    t.dir("etc", 0o755)
        .owned("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644, 0, 0)
        .owned("etc/shadow", b"root:*:1::::::\n", 0o640, 0, 42)
        .owned("etc/owned", b"mine\n", 0o600, 1000, 1000)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .owned("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o4755, 0, 0)
        .owned("usr/bin/sg", b"setgid\n", 0o2755, 0, 50)
        .hardlink("usr/bin/tool-again", "usr/bin/tool")
        .symlink("usr/bin/sh", "tool")
        .dir("tmp", 0o1777)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/app", 0o750)
        .file("var/lib/app/a", b"a\n")
        .file("var/lib/app/b", b"b\n")
        .dir("opt", 0o755)
        .file("opt/file2dir", b"was a file\n")
        .dir("opt/dir2file", 0o755)
        .file("opt/dir2file/inner", b"inner\n")
        .dir("shared", 0o755)
        .file("shared/lib.so", &b"\x7fELF shared bytes ".repeat(4000))
        .dir("dev", 0o755)
        .put(Ent {
            dev: (1, 3),
            mode: 0o666,
            ..Ent::new("dev/null", tar::EntryType::Char)
        })
        .put(Ent {
            dev: (7, 0),
            mode: 0o660,
            gid: 6,
            ..Ent::new("dev/loop0", tar::EntryType::Block)
        })
        .put(Ent::new("dev/fifo", tar::EntryType::Fifo))
        .xattr("user.note", "kept")
        .file("etc/noted", b"with an xattr\n");
    let l1 = t.finish();
    let mut t = Tar::default();
    t.dir("etc", 0o755)
        .file("etc/.wh.owned", b"")
        .dir("var/lib/app", 0o700)
        .file("var/lib/app/.wh..wh..opq", b"")
        .file("var/lib/app/c", b"c\n")
        .dir("opt", 0o755)
        .dir("opt/file2dir", 0o755)
        .file("opt/file2dir/now", b"now a folder\n")
        .file("opt/dir2file", b"now a file\n")
        .hardlink("opt/link-lower", "usr/bin/tool")
        .file("srv/deep/x", b"parents never named\n");
    let l2 = t.finish();
    let mut t = Tar::default();
    t.dir("usr", 0o755)
        .file("usr/.wh.bin", b"")
        .file("etc/passwd", b"root:x:0:0::/root:/bin/bash\n");
    let l3 = t.finish();
    [l1, l2, l3]
}

/// What a path is, as `oci extract` and `umoci unpack` must agree on it: type, permission
/// bits, owner, size, content hash, link target, mtime (not for symlinks or folders, whose
/// mtimes change as their entries are made), device numbers, user xattrs, and which other
/// paths share its inode.
pub(crate) fn model(root: &Path) -> BTreeMap<String, String> {
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        for e in std::fs::read_dir(&full).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let p = root.join(&rel);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let key = rel.to_string_lossy().into_owned();
            let mut d = format!("mode={:o} owner={}:{}", m.mode() & 0o7777, m.uid(), m.gid());
            if ft.is_dir() {
                d = format!("dir {d}");
                stack.push(rel.clone());
            } else if ft.is_symlink() {
                d = format!("symlink -> {}", std::fs::read_link(&p).unwrap().display());
            } else if ft.is_file() {
                let content = std::fs::read(&p).unwrap();
                d = format!(
                    "file {d} size={} sha256={} mtime={}",
                    content.len(),
                    sha256_hex(&content),
                    m.mtime()
                );
                if m.nlink() > 1 {
                    inodes.entry(m.ino()).or_default().push(key.clone());
                }
            } else if ft.is_char_device() || ft.is_block_device() {
                let kind = if ft.is_char_device() { "char" } else { "block" };
                d = format!("{kind} {d} rdev={:x}", m.rdev());
            } else if ft.is_fifo() {
                d = format!("fifo {d}");
            }
            if !ft.is_symlink() {
                let mut xs: Vec<String> = xattr::list(&p)
                    .unwrap()
                    .filter(|n| n.to_string_lossy().starts_with("user."))
                    .map(|n| {
                        let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                        format!("{}={}", n.to_string_lossy(), String::from_utf8_lossy(&v))
                    })
                    .collect();
                xs.sort();
                if !xs.is_empty() {
                    d.push_str(&format!(" xattrs={}", xs.join(",")));
                }
            }
            out.insert(key, d);
        }
    }
    for mut group in inodes.into_values() {
        group.sort();
        for p in &group {
            let v = out.get_mut(p).unwrap();
            v.push_str(&format!(" links={}", group.join("+")));
        }
    }
    out
}

/// `umoci unpack` of `layout`'s image `tag` (as root, so owners and devices are real); returns
/// the rootfs.
fn umoci_unpack(env: &Env, layout: &Path, tag: &str, name: &str) -> PathBuf {
    let bundle = env.path(name);
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{tag}", s(layout)),
            s(&bundle),
        ],
    );
    bundle.join("rootfs")
}

fn assert_same_model(want: &BTreeMap<String, String>, got: &BTreeMap<String, String>, what: &str) {
    let diffs = model_diffs(want, got);
    assert!(
        diffs.is_empty(),
        "{what} differs from umoci:\n{}",
        diffs.join("\n")
    );
}

/// Every path where `got` (cairn's) differs from `want` (umoci's), one line each.
pub(crate) fn model_diffs(
    want: &BTreeMap<String, String>,
    got: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            Some(g) if g == v => {}
            Some(g) => diffs.push(format!("{k}: cairn {g} / umoci {v}")),
            None => diffs.push(format!("{k}: missing (umoci: {v})")),
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            diffs.push(format!("{k}: extra ({g})"));
        }
    }
    diffs
}

/// Whether this process runs as root (`/proc/self` belongs to the process's effective user).
pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn extract_matches_umoci_unpack_on_a_byte_built_image() {
    assert!(
        running_as_root(),
        "this test compares owners and device nodes with umoci unpack, which needs root (CI runs as root)"
    );
    let env = Env::new();
    let [l1, l2, l3] = rich_layers();
    // umoci 0.4.7 reads gzip and plain layers; zstd is checked below by root equality.
    let dir = image(
        env.path("rich"),
        "rich",
        &[
            (LAYER_GZ, gzip(&l1)),
            (LAYER, l2.clone()),
            (LAYER_GZ, gzip(&l3)),
        ],
    );
    import(&env, &dir, None);
    let v = env.json(&["oci", "extract", "rich", s(&env.path("out"))]);
    assert_eq!(v["layers_unpacked"], 3);
    assert_eq!(v["platform"], "linux/amd64");
    let want = model(&umoci_unpack(&env, &dir, "rich", "bundle"));
    let got = model(&env.path("out"));
    assert_same_model(&want, &got, "extract of the byte-built image");
    // Spot checks that the comparison covers what it claims.
    assert!(!got.contains_key("etc/owned"), "whiteout applied");
    assert!(!got.contains_key("usr/bin"), "folder whiteout applied");
    assert!(
        got["opt/link-lower"].contains("mode=4755"),
        "{}",
        got["opt/link-lower"]
    );
    assert!(
        !got.contains_key("var/lib/app/a"),
        "opaque folder hides lower entries"
    );
    assert!(got["var/lib/app"].starts_with("dir mode=700"));
    assert!(got["opt/dir2file"].starts_with("file"));
    assert!(got["opt/file2dir"].starts_with("dir"));
    assert!(got["tmp"].starts_with("dir mode=1777"));
    assert!(got["dev/null"].starts_with("char mode=666"));
    assert!(got["etc/noted"].contains("xattrs=user.note=kept"));
    assert!(got["etc/shadow"].contains("owner=0:42"));

    // The same layers compressed otherwise merge to the same tree.
    let zdir = image(
        env.path("rich-zst"),
        "rich-zst",
        &[(LAYER_ZST, zstd(&l1)), (LAYER_GZ, gzip(&l2)), (LAYER, l3)],
    );
    import(&env, &zdir, None);
    let z = env.json(&["oci", "extract", "rich-zst", s(&env.path("out-zst"))]);
    assert_eq!(z["root"], v["root"]);
    assert_same_model(
        &want,
        &model(&env.path("out-zst")),
        "extract of the zstd variant",
    );
    env.ok(&["verify"]);
}

#[test]
fn extract_matches_umoci_unpack_on_an_image_umoci_built() {
    assert!(
        running_as_root(),
        "needs root, as umoci unpack of owners and devices does"
    );
    let env = Env::new();
    let layout = env.path("layout");
    let ls = s(&layout).to_string();
    let img = format!("{ls}:app");
    tool("umoci", &["init", "--layout", &ls]);
    tool("umoci", &["new", "--image", &img]);
    let b = env.path("work");
    let rootfs = b.join("rootfs");
    let step = |f: &dyn Fn(&Path)| {
        let _ = std::fs::remove_dir_all(&b);
        tool("umoci", &["unpack", "--image", &img, s(&b)]);
        f(&rootfs);
        tool("umoci", &["repack", "--image", &img, s(&b)]);
    };
    let sh = |cmd: &str| {
        let st = std::process::Command::new("sh")
            .arg("-ec")
            .arg(cmd)
            .current_dir(&rootfs)
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    step(&|_| {
        sh(
            "mkdir -p etc usr/bin var/cache/app gone/deep && echo hi > etc/hello \
            && printf 'x%.0s' $(seq 1 5000) > usr/bin/tool && chmod 4755 usr/bin/tool \
            && ln usr/bin/tool usr/bin/tool2 && ln -s ../etc/hello usr/link \
            && echo g > gone/deep/f && mknod dev0 c 1 3 && mkfifo fifo \
            && chown 1000:1000 etc/hello && echo c > var/cache/app/c1 && echo d > var/cache/app/c2 \
            && setfattr -n user.k -v v etc/hello 2>/dev/null || true",
        );
    });
    step(&|_| {
        sh(
            "rm -rf gone var/cache/app/c1 && rm etc/hello && mkdir etc/hello \
            && echo changed > usr/bin/tool && ln usr/bin/tool2 etc/hl && touch -d @1500000000 etc/hl",
        );
    });
    step(&|_| {
        sh(
            "rm -rf etc/hello && echo back > etc/hello && chmod 0600 etc/hello && rm usr/link \
            && mkdir usr/link",
        );
    });
    tool("umoci", &["gc", "--layout", &ls]);
    import(&env, &layout, Some("app"));
    env.ok(&["oci", "extract", "app", s(&env.path("out"))]);
    let want = model(&umoci_unpack(&env, &layout, "app", "bundle"));
    assert_same_model(
        &want,
        &model(&env.path("out")),
        "extract of the umoci-built image",
    );
    assert!(want.contains_key("etc/hl") && !want.contains_key("gone"));
}

#[test]
fn paths_ls_platforms_and_reuse_of_decomposed_layers() {
    let env = Env::new();
    let [l1, l2, l3] = rich_layers();
    let l = Layout::new(env.path("multi"));
    let amd = l.image(
        "amd64",
        &[(LAYER_GZ, gzip(&l1)), (LAYER_ZST, zstd(&l2)), (LAYER, l3)],
    );
    let mut t = Tar::default();
    t.file("arch", b"arm64\n");
    let arm = l.image("arm64", &[(LAYER, t.finish())]);
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    l.index(vec![named(
        {
            l.json_blob(
                crate::common::OCI_INDEX,
                &json!({"schemaVersion": 2, "mediaType": crate::common::OCI_INDEX,
                        "manifests": [amd, arm]}),
            )
        },
        "multi",
    )]);
    import(&env, &l.dir, None);

    // ls before any extract decomposes the layers; extract then reuses them.
    let listed = env.json(&["oci", "ls", "multi", "--platform", "linux/amd64"]);
    let entries = listed["entries"].as_array().unwrap();
    let by_path: BTreeMap<&str, &Value> = entries
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e))
        .collect();
    assert_eq!(by_path["etc/passwd"]["type"], "file");
    assert_eq!(by_path["etc/passwd"]["size"], 28);
    assert_eq!(by_path["etc/shadow"]["gid"], 42);
    assert_eq!(by_path["opt/link-lower"]["mode"], 0o4755);
    assert_eq!(by_path["dev/null"]["device"], json!([1, 3]));
    assert_eq!(by_path["srv"]["type"], "dir");
    assert!(!by_path.contains_key("usr/bin/tool"));
    let first = env.json(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("all")),
        "--platform",
        "linux/amd64",
    ]);
    assert_eq!(first["layers_unpacked"], 0, "ls decomposed them already");
    assert_eq!(
        crate::common::files_under(&env.path("all")).len(),
        entries.iter().filter(|e| e["type"] != "dir").count()
    );

    // --path: a file and a subtree, with their parent folders only.
    env.ok(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("some")),
        "--platform",
        "linux/amd64",
        "--path",
        "/etc/passwd",
        "--path",
        "opt/file2dir",
    ]);
    let some: Vec<String> = crate::common::names_under(&env.path("some"));
    assert_eq!(
        some,
        [
            "etc",
            "etc/passwd",
            "opt",
            "opt/file2dir",
            "opt/file2dir/now"
        ],
        "{some:?}"
    );
    assert_eq!(
        std::fs::read(env.path("some/etc/passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/bash\n"
    );
    let e = env.fails(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("x1")),
        "--platform",
        "linux/amd64",
        "--path",
        "nope/x",
    ]);
    assert_one_error_line(&e, &["nope/x", "no such path"]);
    let e = env.fails(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("x2")),
        "--platform",
        "linux/amd64",
        "--path",
        "etc/passwd/x",
    ]);
    assert_one_error_line(&e, &["etc/passwd", "not a folder"]);
    let e = env.fails(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("x3")),
        "--path",
        "../etc",
    ]);
    assert_one_error_line(&e, &["'..'"]);
    assert!(!env.path("x1").exists() && !env.path("x2").exists() && !env.path("x3").exists());

    // Platforms: the host's by default; an explicit one; a missing one lists what there is.
    if host_arch == "amd64" || host_arch == "arm64" {
        let d = env.json(&["oci", "extract", "multi", s(&env.path("host"))]);
        assert_eq!(d["platform"], format!("linux/{host_arch}"));
    }
    let arm_out = env.json(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("arm")),
        "--platform",
        "linux/arm64/v8",
    ]);
    assert_eq!(arm_out["platform"], "linux/arm64");
    assert_eq!(std::fs::read(env.path("arm/arch")).unwrap(), b"arm64\n");
    let e = env.fails(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("no")),
        "--platform",
        "linux/s390x",
    ]);
    assert_one_error_line(&e, &["linux/s390x", "linux/amd64, linux/arm64"]);
    // A malformed platform is a usage error (clap's, with its usage hint), exit 2.
    let out = env.run(&["oci", "ls", "multi", "--platform", "linux"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid platform \"linux\""));

    // A second extract decomposes nothing and writes the same tree.
    let again = env.json(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("again")),
        "--platform",
        "linux/amd64",
    ]);
    assert_eq!(again["layers_unpacked"], 0);
    assert_eq!(again["root"], first["root"]);
    // DEST must be empty unless --force.
    let e = env.fails(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("again")),
        "--platform",
        "linux/amd64",
    ]);
    assert_one_error_line(&e, &["again"]);
    env.ok(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("again")),
        "--platform",
        "linux/amd64",
        "--force",
    ]);

    // gc keeps decomposed layers while the image is kept, and drops them with it.
    env.ok(&["gc"]);
    let kept = env.json(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("after-gc")),
        "--platform",
        "linux/amd64",
    ]);
    assert_eq!(kept["layers_unpacked"], 0);
    env.ok(&["verify"]);
    env.ok(&["rm", "multi"]);
    env.ok(&["gc"]);
    assert!(env.object_files().is_empty(), "gc left blobs or packs");
    import(&env, &l.dir, None);
    let fresh = env.json(&[
        "oci",
        "extract",
        "multi",
        s(&env.path("fresh")),
        "--platform",
        "linux/amd64",
    ]);
    assert_eq!(fresh["layers_unpacked"], 3);
    assert_eq!(fresh["root"], first["root"]);
    env.ok(&["verify"]);
}

/// Files and folders (with their content) in and around `dir`, to prove nothing changed outside
/// DEST.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walk(dir) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        let v = if m.is_file() {
            sha256_hex(&std::fs::read(&e).unwrap())
        } else {
            format!("{:?} {:o}", m.file_type(), m.mode())
        };
        out.insert(e.to_string_lossy().into_owned(), v);
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

#[test]
fn hostile_images_are_refused_naming_layer_and_entry_and_write_nothing_outside() {
    let env = Env::new();
    // A sandbox: DEST is sandbox/dest; sandbox/outside holds a sentinel the cases aim at.
    let sandbox = env.path("sandbox");
    write(&sandbox, "outside/etc/passwd", b"sentinel\n");
    write(&sandbox, "outside/x", b"sentinel\n");
    let outside = sandbox.join("outside");
    let up = "../outside";
    let tar = |f: &dyn Fn(&mut Tar)| {
        let mut t = Tar::default();
        f(&mut t);
        t.finish()
    };
    let mut bomb = Tar::default();
    bomb.file("zeros", &vec![0u8; 4 << 20]);
    let bomb = gzip(&bomb.finish());
    let good = tar(&|t| {
        t.file("ok", b"fine\n");
    });
    let mut truncated_gz = gzip(&good);
    truncated_gz.truncate(truncated_gz.len() - 6);
    // Cut inside the member's data (at 700, inside its padding, the layer is complete: a
    // writer may stop there, as `umoci insert` does; see real_tools.rs, defect 3).
    let mut truncated_tar = good.clone();
    truncated_tar.truncate(512 + 3);
    // (name, layers, extra flags, words the error must contain)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<(&str, Vec<u8>)>, Vec<&str>, Vec<String>)> = vec![
        (
            "dotdot",
            vec![(
                LAYER,
                tar(&|t| {
                    t.file(&format!("../{up}/x"), b"evil");
                }),
            )],
            vec![],
            vec!["layer 1 of 1".into(), "'..'".into()],
        ),
        (
            "absolute",
            vec![(
                LAYER,
                tar(&|t| {
                    t.file("/etc/x", b"evil");
                }),
            )],
            vec![],
            vec!["layer 1 of 1".into(), "/etc/x".into(), "absolute".into()],
        ),
        (
            "symlink-then-entry",
            vec![(
                LAYER,
                tar(&|t| {
                    t.symlink("a", "/").file("a/x", b"evil");
                }),
            )],
            vec![],
            vec![
                "layer 1 of 1".into(),
                "a/x".into(),
                "not a directory".into(),
            ],
        ),
        (
            "hardlink-outside",
            vec![(
                LAYER,
                tar(&|t| {
                    t.hardlink("h", &format!("../{up}/etc/passwd"));
                }),
            )],
            vec![],
            vec!["layer 1 of 1".into(), "\"h\"".into(), "'..'".into()],
        ),
        (
            "hardlink-absolute",
            vec![(
                LAYER,
                tar(&|t| {
                    t.hardlink("h", "/etc/passwd");
                }),
            )],
            vec![],
            vec!["layer 1 of 1".into(), "absolute".into()],
        ),
        (
            "hardlink-missing",
            vec![(
                LAYER,
                tar(&|t| {
                    t.hardlink("h", "later").file("zz", b"z");
                }),
            )],
            vec![],
            vec!["layer 1 of 1".into(), "\"h\"".into(), "\"later\"".into()],
        ),
        (
            "hardlink-through-symlink",
            vec![
                (
                    LAYER,
                    tar(&|t| {
                        t.dir("d", 0o755).file("d/f", b"f").symlink("s", "d");
                    }),
                ),
                (
                    LAYER,
                    tar(&|t| {
                        t.hardlink("h", "s/f");
                    }),
                ),
            ],
            vec![],
            vec!["layer 2 of 2".into(), "\"h\"".into(), "symlinks".into()],
        ),
        (
            "whiteout-dotdot",
            vec![
                (
                    LAYER,
                    tar(&|t| {
                        t.dir("d", 0o755).file("d/f", b"f");
                    }),
                ),
                (
                    LAYER,
                    tar(&|t| {
                        t.dir("d", 0o755).file("d/.wh...", b"");
                    }),
                ),
            ],
            vec![],
            vec!["layer 2 of 2".into(), "d/.wh...".into(), "whiteout".into()],
        ),
        (
            "truncated-gzip",
            vec![(LAYER_GZ, truncated_gz)],
            vec![],
            vec!["layer 1 of 1".into(), "truncated".into()],
        ),
        (
            "truncated-tar",
            vec![(LAYER, truncated_tar)],
            vec![],
            vec!["layer 1 of 1".into(), "truncated".into()],
        ),
        (
            "bomb",
            vec![(LAYER_GZ, bomb)],
            vec!["--max-layer-size", "1M"],
            vec!["layer 1 of 1".into(), "limit of 1048576 bytes".into()],
        ),
        (
            "not-a-layer",
            vec![("application/vnd.example.thing", good.clone())],
            vec![],
            vec![
                "layer 1 of 1".into(),
                "application/vnd.example.thing".into(),
            ],
        ),
    ];
    for (name, layers, flags, words) in cases {
        let dir = image(env.path(&format!("img-{name}")), name, &layers);
        import(&env, &dir, None);
        let before = snapshot(&outside);
        let dest = sandbox.join("dest");
        let mut args = vec!["oci", "extract", name, s(&dest)];
        args.extend(flags.iter().copied());
        let e = env.fails(&args);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        assert_one_error_line(&e, &words);
        assert_eq!(
            snapshot(&outside),
            before,
            "{name}: changed something outside DEST"
        );
        assert!(
            !dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(),
            "{name}: left files in DEST"
        );
        let _ = std::fs::remove_dir_all(&dest);
        env.ok(&["verify"]);
    }

    // A symlink to outside in one layer and an entry below it in the next: the folder replaces
    // the symlink (as overlayfs would show it), so the write lands inside DEST.
    let dir = image(
        env.path("img-cross"),
        "cross",
        &[
            (
                LAYER,
                tar(&|t| {
                    t.symlink("a", "/").symlink("b", "../..").symlink("c", up);
                }),
            ),
            (
                LAYER,
                tar(&|t| {
                    t.file("a/x", b"in")
                        .file("b/x", b"in")
                        .dir("c", 0o755)
                        .file("c/x", b"in");
                }),
            ),
        ],
    );
    import(&env, &dir, None);
    let before = snapshot(&outside);
    let dest = sandbox.join("dest");
    env.ok(&["oci", "extract", "cross", s(&dest)]);
    assert_eq!(snapshot(&outside), before);
    for p in ["a/x", "b/x", "c/x"] {
        assert_eq!(std::fs::read(dest.join(p)).unwrap(), b"in", "{p}");
    }
    std::fs::remove_dir_all(&dest).unwrap();

    // A layer blob changed in the store after import: refused as corrupt, nothing written.
    let dir = image(env.path("img-good"), "good", &[(LAYER, good.clone())]);
    import(&env, &dir, None);
    std::fs::write(env.path("good.tar"), &good).unwrap();
    let id = env.ok(&["hash", s(&env.path("good.tar"))]);
    // Every copy (the layer was imported before, so a pack may hold a dead copy too).
    for st in env.stored_all(&id) {
        let mut bytes = st.read();
        if st.zstd {
            // A frame of other content of the same length, so the frame decodes and only the
            // hash can tell.
            bytes = same_length_frame(&good, bytes.len());
        } else {
            bytes[600] ^= 1;
        }
        st.write(&bytes);
    }
    let id = id.strip_prefix("blake3:").unwrap().to_string();
    let e = env.fails(&["oci", "extract", "good", s(&dest)]);
    assert_one_error_line(&e, &["layer 1 of 1", &id[..16]]);
    assert!(!dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none());
}

/// A zstd frame of exactly `len` bytes whose content differs from `content` in one byte (tries
/// each byte position near the start and each level until the frame has that length).
fn same_length_frame(content: &[u8], len: usize) -> Vec<u8> {
    for pos in [600, 601, 700, 1000, 1500] {
        for level in 1..=19 {
            let mut b = content.to_vec();
            b[pos] ^= 1;
            let f = ::zstd::encode_all(&b[..], level).unwrap();
            if f.len() == len {
                return f;
            }
        }
    }
    panic!("no frame of {len} bytes found");
}
