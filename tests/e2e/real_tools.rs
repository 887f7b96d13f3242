//! Real-world OCI images (issue 11): every form the real tools write (the matrix of `tools`)
//! imports, extracts equal to `umoci unpack` path by path and lists the same paths; cairn's
//! exports are read back by skopeo, umoci, podman and Docker with the original digests; and the
//! four defects found with real tools, each with a test that failed before its fix.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Env, assert_one_error_line, s, sha256_hex, write};
use crate::oci_extract::{model, model_diffs, running_as_root};
use crate::tools::{Form, Matrix, matrix, run};

/// Most differing paths quoted in a failure message per form.
const MAX_DIFFS_SHOWN: usize = 25;

/// Imports `form` into a store of its own, extracts it and lists it; compares both with `want`
/// (umoci's root filesystem of the same image). Returns the number of paths.
fn check_form(form: &Form, want: &BTreeMap<String, String>) -> Result<usize, String> {
    let env = Env::new();
    let mut args = vec!["--json", "oci", "import", s(&form.path)];
    args.extend(form.import_args.iter().map(String::as_str));
    let out = env.run(&args);
    if !out.status.success() {
        return Err(format!(
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let key = v["key"]
        .as_str()
        .ok_or("import printed no key")?
        .to_string();
    let dest = env.path("rootfs");
    let mut args = vec!["oci", "extract", key.as_str(), s(&dest)];
    args.extend(form.extract_args.iter().map(String::as_str));
    let out = env.run(&args);
    if !out.status.success() {
        return Err(format!(
            "extract failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let got = model(&dest);
    let diffs = model_diffs(want, &got);
    if !diffs.is_empty() {
        let n = diffs.len();
        let shown: Vec<String> = diffs.into_iter().take(MAX_DIFFS_SHOWN).collect();
        return Err(format!(
            "extract differs from umoci unpack at {n} paths:\n    {}",
            shown.join("\n    ")
        ));
    }
    let mut args = vec!["oci", "ls", key.as_str()];
    args.extend(form.extract_args.iter().map(String::as_str));
    let ls = env.json(&args);
    let listed: Vec<String> = ls["entries"]
        .as_array()
        .ok_or("ls --json has no entries")?
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect();
    let wanted: Vec<String> = want.keys().cloned().collect();
    let mut sorted = listed.clone();
    sorted.sort();
    if sorted != wanted {
        let extra: Vec<_> = sorted.iter().filter(|p| !want.contains_key(*p)).collect();
        let missing: Vec<_> = wanted.iter().filter(|p| !sorted.contains(p)).collect();
        return Err(format!(
            "oci ls lists other paths: extra {extra:?}, missing {missing:?}"
        ));
    }
    let v = env.json(&["verify"]);
    if v["clean"] != true {
        return Err(format!("verify is not clean: {v}"));
    }
    Ok(got.len())
}

/// Runs an `oci extract` or `oci ls` that must be refused with one line holding `needles`;
/// checks that no key changed and the store verifies clean (the layers that did decompose may
/// stay cached: that is a valid cache of their blobs). Returns the line.
fn extract_refused(env: &Env, args: &[&str], needles: &[&str]) -> String {
    let keys = env.key_roots();
    let line = env.refusal(args, needles);
    assert_eq!(env.key_roots(), keys, "cairn {args:?} changed a key");
    let v = env.json(&["verify"]);
    assert_eq!(v["clean"], true, "store is not clean: {v}");
    line
}

/// Checks every form the tool `tool` wrote; fails listing every form that differs.
fn check_tool(tool: &str) {
    assert!(
        running_as_root(),
        "the real-tools matrix runs as root (CI does)"
    );
    let m = matrix();
    let forms = m.forms.get(tool).cloned().unwrap_or_default();
    assert!(!forms.is_empty(), "the matrix has no {tool} forms");
    let mut failures = Vec::new();
    for f in &forms {
        let want = model(&m.refs[f.image]);
        match check_form(f, &want) {
            Ok(n) => eprintln!("real-tools matrix: ok   {} ({n} paths)", f.name),
            Err(e) => {
                eprintln!("real-tools matrix: FAIL {}: {e}", f.name);
                failures.push(format!("{} ({}): {e}", f.name, f.path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {tool} forms failed:\n{}",
        failures.len(),
        forms.len(),
        failures.join("\n")
    );
}

#[test]
fn matrix_umoci_layout_imports_and_extracts_as_umoci_unpacks_it() {
    check_tool("umoci");
    // The image covers what it claims: the reference holds the results of every step.
    let r = model(&matrix().refs["umoci"]);
    for (path, has) in [
        ("X", "file "),
        ("Y", "dir "),
        ("Y/inner", "file "),
        ("usr/bin/tool", "mode=4755"),
        ("usr/bin/tool", "links="),
        ("etc/hl", "links="),
        ("tmp", "mode=1777"),
        ("srv", "mode=2775"),
        ("dev/null", "char "),
        ("etc/hello", "xattrs=user.note=changed"),
        ("opt/ins.txt", "file "),
        ("var/lib/app/new", "file "),
    ] {
        assert!(
            r.get(path).is_some_and(|d| d.contains(has)),
            "umoci's rootfs: {path} should have {has:?}: {:?}",
            r.get(path)
        );
    }
    for gone in [
        "gone",
        "etc/shadow",
        "usr/lib/libx.so",
        "var/lib/app/old",
        "X/child",
    ] {
        assert!(!r.contains_key(gone), "umoci's rootfs still has {gone}");
    }
    assert!(
        r.keys().any(|k| k.len() > 300),
        "a long path is in the image"
    );
}

/// `path`'s model line without what a linked extraction may change by design: the write bits of
/// regular files (hardlinks to read-only checkout objects) and hardlink groups (paths with the
/// same content and metadata share one object's inode).
fn linked_view(line: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let file = line.starts_with("file ");
    for w in line.split(' ') {
        if w.starts_with("links=") {
            continue;
        }
        match w.strip_prefix("mode=") {
            Some(m) if file => {
                let mode = u32::from_str_radix(m, 8).unwrap();
                words.push(format!("mode={:o}", mode & !0o222));
            }
            _ => words.push(w.to_string()),
        }
    }
    words.join(" ")
}

#[test]
fn matrix_umoci_image_extracts_the_same_with_link() {
    assert!(
        running_as_root(),
        "the real-tools matrix runs as root (CI does)"
    );
    let m = matrix();
    let form = m
        .forms
        .get("umoci")
        .and_then(|f| f.first())
        .expect("the matrix has a umoci form");
    let env = Env::new();
    let mut args = vec!["--json", "oci", "import", s(&form.path)];
    args.extend(form.import_args.iter().map(String::as_str));
    let imported: Value = serde_json::from_str(&env.ok(&args)).unwrap();
    let key = imported["key"]
        .as_str()
        .expect("import prints its key")
        .to_string();
    // Twice: the first extraction makes the checkout objects, the second only links to them.
    for round in 0..2 {
        let dest = env.path(&format!("linked-{round}"));
        let mut args = vec!["oci", "extract", key.as_str(), s(&dest), "--link=hardlink"];
        args.extend(form.extract_args.iter().map(String::as_str));
        let out = env.json(&args);
        assert!(out["stats"]["linked"].as_u64().unwrap() > 0, "{out}");
        let view = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.into_iter().map(|(k, v)| (k, linked_view(&v))).collect()
        };
        let want = view(model(&m.refs[form.image]));
        let diffs = model_diffs(&want, &view(model(&dest)));
        assert!(
            diffs.is_empty(),
            "round {round}: a linked extraction of umoci's image differs from umoci unpack:\n{}",
            diffs.join("\n")
        );
    }
    env.assert_verify_clean("after linked extractions of umoci's image");
}

#[test]
fn matrix_buildah_forms_import_and_extract_as_umoci_unpacks_them() {
    check_tool("buildah");
}

#[test]
fn matrix_podman_forms_import_and_extract_as_umoci_unpacks_them() {
    check_tool("podman");
}

#[test]
fn matrix_skopeo_conversions_import_and_extract_as_umoci_unpacks_them() {
    check_tool("skopeo");
}

#[test]
fn matrix_multi_platform_index_extracts_the_asked_platform() {
    check_tool("multi");
    // The arm64 image of the same index is there too.
    let m = matrix();
    let env = Env::new();
    env.json(&["oci", "import", s(&m.dir.join("multi")), "--name", "multi"]);
    let ls = env.json(&["oci", "ls", "multi", "--platform", "linux/arm64"]);
    let paths: Vec<&str> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(paths, ["hello"], "{ls}");
}

#[test]
fn matrix_docker_save_output_imports_and_extracts_as_umoci_unpacks_it() {
    check_tool("docker");
}

/// The manifest digest skopeo sees at `reference`.
fn skopeo_digest(reference: &str) -> String {
    let v: Value = serde_json::from_str(&run("skopeo", &["inspect", reference]).unwrap()).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

/// The image id (config digest) of what `podman load` or `docker load` reports loading.
fn loaded_id(m: &Matrix, docker: bool, archive: &Path) -> String {
    let out = if docker {
        m.docker(&["load", "-i", s(archive)])
    } else {
        m.podman(&["load", "-i", s(archive)])
    }
    .unwrap();
    let name = out
        .lines()
        .rev()
        .find_map(|l| l.split_once(": ").map(|(_, n)| n.trim().to_string()))
        .unwrap_or_else(|| panic!("load printed no image: {out}"));
    let name = name.split(',').next().unwrap().to_string();
    let args = ["image", "inspect", "--format", "{{.Id}}", name.as_str()];
    let id = if docker {
        m.docker(&args)
    } else {
        m.podman(&args)
    }
    .unwrap();
    let id = id.trim();
    if id.starts_with("sha256:") {
        id.to_string()
    } else {
        format!("sha256:{id}")
    }
}

#[test]
fn exports_are_read_back_by_skopeo_umoci_podman_and_docker_with_the_same_digests() {
    assert!(
        running_as_root(),
        "the real-tools matrix runs as root (CI does)"
    );
    let m = matrix();
    let env = Env::new();
    let (layout, tag) = &m.layouts["buildah"];
    let original = format!("oci:{}:{tag}", s(layout));
    env.json(&["oci", "import", s(layout), "--name", "bo"]);
    let insp = env.json(&["oci", "inspect", "bo"]);
    let manifest_digest = skopeo_digest(&original);
    let config_digest = {
        let raw = run("skopeo", &["inspect", "--raw", &original]).unwrap();
        let v: Value = serde_json::from_str(&raw).unwrap();
        v["config"]["digest"].as_str().unwrap().to_string()
    };
    assert!(insp.to_string().contains(&manifest_digest), "{insp}");

    // --layout: skopeo inspects and copies it with the same digest; umoci unpacks it to the
    // same root filesystem.
    let out = env.path("layout");
    env.ok(&["oci", "export", "bo", "--layout", s(&out)]);
    let exported = format!("oci:{}:{tag}", s(&out));
    assert_eq!(skopeo_digest(&exported), manifest_digest);
    let copy = env.path("skopeo-copy");
    run(
        "skopeo",
        &["copy", "-q", &exported, &format!("oci:{}:c", s(&copy))],
    )
    .unwrap();
    assert_eq!(
        skopeo_digest(&format!("oci:{}:c", s(&copy))),
        manifest_digest
    );
    let bundle = env.path("bundle");
    let umoci_ref = format!("{}:{tag}", s(&out));
    run("umoci", &["unpack", "--image", &umoci_ref, s(&bundle)]).unwrap();
    let diffs = model_diffs(&model(&m.refs["buildah"]), &model(&bundle.join("rootfs")));
    assert!(diffs.is_empty(), "umoci unpack of the export: {diffs:?}");

    // --archive: skopeo reads and copies it; podman loads it as the same image.
    let archive = env.path("bo.tar");
    env.ok(&["oci", "export", "bo", "--archive", s(&archive)]);
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}", s(&archive))),
        manifest_digest
    );
    let copy2 = env.path("skopeo-copy-2");
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci-archive:{}", s(&archive)),
            &format!("oci:{}:c", s(&copy2)),
        ],
    )
    .unwrap();
    assert_eq!(
        skopeo_digest(&format!("oci:{}:c", s(&copy2))),
        manifest_digest
    );
    assert_eq!(loaded_id(m, false, &archive), config_digest);

    // --docker-archive: deterministic; docker, podman and skopeo read it with the image's
    // config digest and diff_ids.
    let da = env.path("bo-docker.tar");
    let v = env.json(&[
        "oci",
        "export",
        "bo",
        "--docker-archive",
        s(&da),
        "--tag",
        "localhost/cairn-bo:1",
    ]);
    assert_eq!(v["config"], config_digest.as_str());
    let again = env.path("bo-docker-2.tar");
    env.ok(&[
        "oci",
        "export",
        "bo",
        "--docker-archive",
        s(&again),
        "--tag",
        "localhost/cairn-bo:1",
    ]);
    assert_eq!(std::fs::read(&da).unwrap(), std::fs::read(&again).unwrap());
    let names = tar_names(&da);
    assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    assert!(names.contains(&"repositories".to_string()), "{names:?}");
    assert_eq!(loaded_id(m, true, &da), config_digest, "docker load");
    assert_eq!(loaded_id(m, false, &da), config_digest, "podman load");
    let sk: Value = serde_json::from_str(
        &run(
            "skopeo",
            &["inspect", &format!("docker-archive:{}", s(&da))],
        )
        .unwrap(),
    )
    .unwrap();
    let cfg_raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--config",
            &format!("docker-archive:{}", s(&da)),
        ],
    )
    .unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(cfg_raw.as_bytes())),
        config_digest
    );
    let cfg: Value = serde_json::from_str(&cfg_raw).unwrap();
    assert_eq!(sk["Layers"], cfg["rootfs"]["diff_ids"], "{sk}");
    // What docker loaded from it, saved again, imports and extracts as the original.
    let resaved = env.path("resaved.tar");
    m.docker(&["save", "-o", s(&resaved), "localhost/cairn-bo:1"])
        .unwrap();
    env.json(&["oci", "import", s(&resaved), "--name", "resaved"]);
    let dest = env.path("resaved-rootfs");
    env.ok(&["oci", "extract", "resaved", s(&dest)]);
    let diffs = model_diffs(&model(&m.refs["buildah"]), &model(&dest));
    assert!(diffs.is_empty(), "docker round trip: {diffs:?}");
}

fn tar_names(file: &Path) -> Vec<String> {
    let mut ar = tar::Archive::new(std::fs::File::open(file).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A tar's members: name, type, link target, data.
type Members = Vec<(String, tar::EntryType, String, Vec<u8>)>;

fn read_tar(file: &Path) -> Members {
    let mut ar = tar::Archive::new(std::fs::File::open(file).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let t = e.header().entry_type();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, t, link, data)
        })
        .collect()
}

fn write_tar(file: &Path, members: &Members) {
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    for (name, t, link, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*t);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if t.is_symlink() || t.is_hard_link() {
            b.append_link(&mut h, name, link).unwrap();
        } else {
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
    }
    b.finish().unwrap();
}

/// A small umoci image in `dir` with tag `t`, made by `steps` of repack.
fn umoci_image(dir: &Path, steps: &[&str]) -> String {
    let ls = s(dir).to_string();
    let img = format!("{ls}:t");
    run("umoci", &["init", "--layout", &ls]).unwrap();
    run("umoci", &["new", "--image", &img]).unwrap();
    let bundle = dir.with_extension("bundle");
    for step in steps {
        let _ = std::fs::remove_dir_all(&bundle);
        run("umoci", &["unpack", "--image", &img, s(&bundle)]).unwrap();
        let st = std::process::Command::new("sh")
            .arg("-ec")
            .arg(step)
            .current_dir(bundle.join("rootfs"))
            .status()
            .unwrap();
        assert!(st.success(), "{step}");
        run("umoci", &["repack", "--image", &img, s(&bundle)]).unwrap();
    }
    let _ = std::fs::remove_dir_all(&bundle);
    img
}

/// Imports the OCI layout of `img` (`DIR:TAG`) as `key`, extracts it, and asserts the result
/// equals `umoci unpack` of it. Returns the extraction.
fn extracts_as_umoci(env: &Env, img: &str, key: &str) -> PathBuf {
    let (dir, _) = img.rsplit_once(':').unwrap();
    env.json(&["oci", "import", dir, "--name", key]);
    let dest = env.path(&format!("{key}-rootfs"));
    env.ok(&["oci", "extract", key, s(&dest)]);
    let bundle = env.path(&format!("{key}-umoci"));
    run("umoci", &["unpack", "--image", img, s(&bundle)]).unwrap();
    let diffs = model_diffs(&model(&bundle.join("rootfs")), &model(&dest));
    assert!(
        diffs.is_empty(),
        "{key}: cairn differs from umoci: {diffs:?}"
    );
    dest
}

/// The last layer blob of the single image in OCI layout `dir`.
fn last_layer(dir: &Path) -> PathBuf {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| dir.join("blobs/sha256").join(&d[7..]);
    let m: Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layers = m["layers"].as_array().unwrap();
    blob(layers.last().unwrap()["digest"].as_str().unwrap())
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn defect_2_umoci_repack_of_a_folder_replaced_by_a_file_extracts() {
    assert!(
        running_as_root(),
        "umoci unpack applies owners only as root"
    );
    let env = Env::new();
    let dir = env.path("img");
    let img = umoci_image(
        &dir,
        &[
            "mkdir -p X/sub && echo c > X/child && echo d > X/sub/d && echo f > F",
            "rm -rf X && echo 'a file now' > X",
        ],
    );
    // The layer is what the issue describes: the file X, then whiteouts below it.
    let layer = gunzip(&std::fs::read(last_layer(&dir)).unwrap());
    let mut ar = tar::Archive::new(layer.as_slice());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    let file_at = names.iter().position(|n| n.trim_start_matches("./") == "X");
    let wh_at = names.iter().position(|n| n.contains("X/.wh."));
    assert!(
        file_at.is_some() && wh_at.is_some() && file_at < wh_at,
        "umoci's layer: {names:?}"
    );
    let dest = extracts_as_umoci(&env, &img, "dir2file");
    assert_eq!(std::fs::read(dest.join("X")).unwrap(), b"a file now\n");
}

/// A layer tar (uncompressed) of `entries`: (name, type, link target, data).
fn layer_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, t, link, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*t);
        h.set_mode(if t.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if t.is_symlink() {
            b.append_link(&mut h, name, link).unwrap();
        } else {
            b.append_data(&mut h, name, *data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

/// Adds `layer` (uncompressed) on top of the umoci image `img` with `umoci raw add-layer`.
fn add_layer(env: &Env, img: &str, name: &str, layer: &[u8]) {
    let f = env.path(name);
    std::fs::write(&f, layer).unwrap();
    run("umoci", &["raw", "add-layer", "--image", img, s(&f)]).unwrap();
}

#[test]
fn defect_2_a_whiteout_below_a_file_symlink_or_nothing_is_a_no_op() {
    assert!(
        running_as_root(),
        "umoci unpack applies owners only as root"
    );
    let env = Env::new();
    let dir = env.path("img");
    let img = umoci_image(
        &dir,
        &["echo f > X && mkdir -p usr/bin && echo t > usr/bin/tool && ln -s usr S"],
    );
    use tar::EntryType::{Regular, Symlink};
    // Whiteouts whose parent is a file (X), absent (Y), or a file of this very layer (Z).
    add_layer(
        &env,
        &img,
        "wh.tar",
        &layer_tar(&[
            ("X/.wh.child", Regular, "", b""),
            ("Y/.wh.z", Regular, "", b""),
            ("Z", Regular, "", b"z\n"),
            ("Z/.wh.gone", Regular, "", b""),
        ]),
    );
    let dest = extracts_as_umoci(&env, &img, "wh");
    assert_eq!(std::fs::read(dest.join("X")).unwrap(), b"f\n");
    assert!(!dest.join("Y").exists());
    // Below a symlink: cairn deletes nothing through it. (umoci 0.4.7 resolves `S/bin` to
    // `usr/bin` and deletes that, so this case is checked on its own, against the model.)
    let env2 = Env::new();
    let dir2 = env2.path("img");
    let img2 = umoci_image(
        &dir2,
        &["mkdir -p usr/bin && echo t > usr/bin/tool && ln -s usr S"],
    );
    add_layer(
        &env2,
        &img2,
        "wh.tar",
        &layer_tar(&[
            ("S/.wh.bin", Regular, "", b""),
            ("L", Symlink, "usr", b""),
            ("L/.wh.bin", Regular, "", b""),
        ]),
    );
    let (d2, _) = img2.rsplit_once(':').unwrap();
    env2.json(&["oci", "import", d2, "--name", "sym"]);
    let dest = env2.path("out");
    env2.ok(&["oci", "extract", "sym", s(&dest)]);
    assert_eq!(std::fs::read(dest.join("usr/bin/tool")).unwrap(), b"t\n");
    assert_eq!(
        std::fs::read_link(dest.join("S")).unwrap(),
        Path::new("usr")
    );
    assert_eq!(
        std::fs::read_link(dest.join("L")).unwrap(),
        Path::new("usr")
    );
}

#[test]
fn defect_3_umoci_insert_layers_end_after_their_data_and_extract() {
    assert!(
        running_as_root(),
        "umoci unpack applies owners only as root"
    );
    let env = Env::new();
    let dir = env.path("img");
    let img = umoci_image(&dir, &["mkdir -p opt && echo base > opt/base"]);
    write(&env.path("src"), "ins.txt", b"inserted\n");
    run(
        "umoci",
        &[
            "insert",
            "--image",
            &img,
            s(&env.path("src/ins.txt")),
            "/opt/ins.txt",
        ],
    )
    .unwrap();
    let layer = gunzip(&std::fs::read(last_layer(&dir)).unwrap());
    assert_ne!(
        layer.len() % 512,
        0,
        "umoci insert's layer ends inside a block (it did when this test was written)"
    );
    let dest = extracts_as_umoci(&env, &img, "insert");
    assert_eq!(
        std::fs::read(dest.join("opt/ins.txt")).unwrap(),
        b"inserted\n"
    );
}

#[test]
fn defect_3_a_layer_may_end_at_a_member_boundary_but_not_inside_a_member() {
    assert!(
        running_as_root(),
        "umoci unpack applies owners only as root"
    );
    use tar::EntryType::Regular;
    let data = vec![b'x'; 1000];
    let full = layer_tar(&[("a", Regular, "", b"first\n"), ("b", Regular, "", &data)]);
    let b_data = 512 + 512 + 512; // a's header and block, b's header
    let cases: [(&str, usize, Option<&str>); 5] = [
        ("no end-of-archive blocks", b_data + 1024, None),
        ("no padding either", b_data + 1000, None),
        ("cut inside the padding", b_data + 1010, None),
        ("cut inside b's data", b_data + 700, Some("\"b\"")),
        ("cut inside b's header", 512 + 512 + 300, Some("\"b\"")),
    ];
    for (what, len, refused) in cases {
        let env = Env::new();
        let dir = env.path("img");
        let img = umoci_image(&dir, &["echo base > base"]);
        add_layer(&env, &img, "l.tar", &full[..len]);
        let (d, _) = img.rsplit_once(':').unwrap();
        env.json(&["oci", "import", d, "--name", "cut"]);
        let dest = env.path("out");
        match refused {
            None => {
                env.ok(&["oci", "extract", "cut", s(&dest)]);
                assert_eq!(std::fs::read(dest.join("b")).unwrap(), data, "{what}");
            }
            Some(needle) => {
                let err = extract_refused(
                    &env,
                    &["oci", "extract", "cut", s(&dest)],
                    &[needle, "layer 2 of 2"],
                );
                assert!(!dest.exists(), "{what}: DEST was written");
                eprintln!("{what}: {err}");
            }
        }
    }
}

#[test]
fn defect_1_skopeo_docker_archives_with_symlinked_layers_import() {
    assert!(
        running_as_root(),
        "umoci unpack applies owners only as root"
    );
    let env = Env::new();
    let dir = env.path("img");
    let img = umoci_image(
        &dir,
        &["mkdir -p etc && echo one > etc/one", "echo two > etc/two"],
    );
    let archive = env.path("skopeo.tar");
    run(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{img}"),
            &format!("docker-archive:{}:localhost/sk:1", s(&archive)),
        ],
    )
    .unwrap();
    let members = read_tar(&archive);
    assert!(
        members.iter().any(|m| m.1 == tar::EntryType::Symlink),
        "skopeo wrote no symlink member (it did when this test was written)"
    );
    let v = env.json(&["oci", "import", s(&archive)]);
    assert_eq!(v["key"], "localhost/sk:1");
    let dest = env.path("out");
    env.ok(&["oci", "extract", "localhost/sk:1", s(&dest)]);
    let bundle = env.path("bundle");
    run("umoci", &["unpack", "--image", &img, s(&bundle)]).unwrap();
    let diffs = model_diffs(&model(&bundle.join("rootfs")), &model(&dest));
    assert!(diffs.is_empty(), "{diffs:?}");

    // The same archive where manifest.json names link members that lead outside the archive,
    // or to a member it lacks: refused, naming the member, binding nothing.
    let manifest: Value =
        serde_json::from_slice(&members.iter().find(|m| m.0 == "manifest.json").unwrap().3)
            .unwrap();
    let first_layer = manifest[0]["Layers"][0].as_str().unwrap().to_string();
    for (target, needle) in [
        ("../../etc/passwd", "outside the archive"),
        ("/etc/passwd", "outside the archive"),
        ("missing.tar", "not a file of the archive"),
        ("./sub/../../x.tar", "outside the archive"),
    ] {
        // skopeo's own link members (`<id>/layer.tar`, which manifest.json does not name) go:
        // one of them may link to the replaced member, and the error would name it instead.
        let mut bad: Members = members
            .iter()
            .filter(|m| m.0 != first_layer && m.1 != tar::EntryType::Symlink)
            .cloned()
            .collect();
        bad.push((
            first_layer.clone(),
            tar::EntryType::Symlink,
            target.into(),
            Vec::new(),
        ));
        let f = env.path("bad.tar");
        write_tar(&f, &bad);
        let line = env.refused(&["oci", "import", s(&f)], &[&first_layer, needle]);
        eprintln!("{line}");
    }
}

/// Rewrites the config of the single image in layout `dir` with `edit`, and the manifest and
/// index to match.
fn edit_config(dir: &Path, edit: &dyn Fn(&mut Value)) {
    let blob = |d: &str| dir.join("blobs/sha256").join(&d[7..]);
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut m: Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let mut cfg: Value = serde_json::from_slice(
        &std::fs::read(blob(m["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    edit(&mut cfg);
    let (d, n) = put(&serde_json::to_vec(&cfg).unwrap());
    m["config"]["digest"] = d.into();
    m["config"]["size"] = n.into();
    let (d, n) = put(&serde_json::to_vec(&m).unwrap());
    index["manifests"][0]["digest"] = d.into();
    index["manifests"][0]["size"] = n.into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn defect_4_a_layer_that_does_not_match_its_diff_id_is_refused_at_first_decomposition() {
    let env = Env::new();
    let good = env.path("good");
    umoci_image(&good, &["echo one > one", "echo two > two"]);
    let wrong = format!("sha256:{}", "e".repeat(64));
    // The same layers, with a wrong diff_id for the second.
    let bad = env.path("bad");
    run("cp", &["-a", s(&good), s(&bad)]).unwrap();
    edit_config(&bad, &|c| c["rootfs"]["diff_ids"][1] = wrong.clone().into());
    let computed = sha256_hex(&gunzip(&std::fs::read(last_layer(&good)).unwrap()));
    // Too few diff_ids.
    let short = env.path("short");
    run("cp", &["-a", s(&good), s(&short)]).unwrap();
    edit_config(&short, &|c| {
        c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
    });
    env.json(&["oci", "import", s(&bad), "--name", "bad"]);
    env.json(&["oci", "import", s(&short), "--name", "short"]);
    let dest = env.path("out");
    let line = extract_refused(
        &env,
        &["oci", "extract", "bad", s(&dest)],
        &[
            "layer 2 of 2",
            &wrong,
            &format!("sha256:{computed}"),
            "diff_id",
        ],
    );
    eprintln!("{line}");
    assert!(!dest.exists(), "DEST was written");
    extract_refused(&env, &["oci", "ls", "bad"], &["layer 2 of 2", &wrong]);
    extract_refused(
        &env,
        &["oci", "extract", "short", s(&dest)],
        &["1 rootfs.diff_ids", "2 layers"],
    );
    assert!(!dest.exists(), "DEST was written");
    // Once the layer was decomposed under its right diff_id, an image naming the same layer
    // blob with a wrong one is refused from the recorded digest.
    env.json(&["oci", "import", s(&good), "--name", "good"]);
    env.ok(&["oci", "extract", "good", s(&env.path("good-out"))]);
    let line = extract_refused(
        &env,
        &["oci", "extract", "bad", s(&dest)],
        &["layer 2 of 2", &wrong, &format!("sha256:{computed}")],
    );
    eprintln!("{line}");
    assert!(!dest.exists(), "DEST was written");
}

#[test]
fn a_file_that_is_no_image_form_is_refused_as_such() {
    let env = Env::new();
    write(&env.path("d"), "notes.txt", b"hello\n");
    for (src, needle) in [
        (PathBuf::from("/etc/passwd"), "not a tar archive"),
        (env.path("d"), "no index.json"),
    ] {
        env.refused(
            &["oci", "import", s(&src)],
            &[
                s(&src),
                "not an OCI image layout, OCI archive, docker-archive or dir: layout",
                needle,
            ],
        );
    }
    let empty = env.path("empty.tar");
    std::fs::write(&empty, b"").unwrap();
    env.refused(&["oci", "import", s(&empty)], &["not an OCI image layout"]);
}

#[test]
fn a_header_only_entry_with_a_size_field_is_refused_in_sources_and_layers() {
    // A symlink header claiming 512 bytes, followed by a block that is a header to readers that
    // honour POSIX (no data follows a symlink), data to the tar crate.
    let hidden = layer_tar(&[("hidden", tar::EntryType::Regular, "", b"smuggled\n")]);
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_path("link").unwrap();
    h.set_link_name("target").unwrap();
    h.set_mode(0o777);
    h.set_size(512);
    h.set_cksum();
    let mut bytes = h.as_bytes().to_vec();
    bytes.extend_from_slice(&hidden[..512]);
    bytes.extend_from_slice(&[0u8; 1024]);
    // As an image source.
    let env = Env::new();
    std::fs::write(env.path("src.tar"), &bytes).unwrap();
    env.refused(
        &["oci", "import", s(&env.path("src.tar"))],
        &["\"link\"", "size field says 512 bytes"],
    );
    // As a layer (the layer is added with its digest and diff_id by umoci).
    if !running_as_root() {
        return;
    }
    let dir = env.path("img");
    let img = umoci_image(&dir, &["echo base > base"]);
    add_layer(&env, &img, "l.tar", &bytes);
    let (d, _) = img.rsplit_once(':').unwrap();
    env.json(&["oci", "import", d, "--name", "h"]);
    let dest = env.path("out");
    extract_refused(
        &env,
        &["oci", "extract", "h", s(&dest)],
        &["layer 2 of 2", "\"link\"", "size field says 512 bytes"],
    );
    assert!(!dest.exists());
}

#[test]
fn multi_image_docker_archives_need_one_picked() {
    assert!(
        running_as_root(),
        "the real-tools matrix runs as root (CI does)"
    );
    let m = matrix();
    let env = Env::new();
    let multi = m.dir.join("p-multi.tar");
    let line = env.refused(
        &["oci", "import", s(&multi)],
        &["2 images", "localhost/bo:1", "localhost/bd:1", "--image"],
    );
    eprintln!("{line}");
    env.refused(
        &["oci", "import", s(&multi), "--name", "other"],
        &["localhost/bo:1", "localhost/bd:1"],
    );
    env.refused(
        &["oci", "import", s(&multi), "--image", "localhost/nope:1"],
        &["no image named \"localhost/nope:1\"", "localhost/bo:1"],
    );
    let v = env.json(&["oci", "import", s(&multi), "--image", "localhost/bd:1"]);
    assert_eq!(v["key"], "localhost/bd:1");
    let insp = env.json(&["oci", "inspect", "localhost/bd:1"]);
    assert_eq!(
        insp["manifests"].as_array().map(Vec::len),
        Some(1),
        "{insp}"
    );
    assert_one_error_line(
        &env.fails(&["oci", "import", s(&multi), "--image", "localhost/none:2"]),
        &["localhost/none:2"],
    );
}
