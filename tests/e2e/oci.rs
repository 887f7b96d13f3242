//! `cairn oci`: import from layout folders, OCI archives (plain, gzip, zstd) and docker-save
//! archives built byte by byte here or with umoci; byte-identical and deterministic export
//! checked with skopeo and umoci; hostile inputs refused with one line, binding nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{
    Env, Layout, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, files_under, gzip, named, s, sha256_hex,
    simple_layout, tar_dir, tar_of, write, zstd,
};

/// Runs an external tool and expects success; returns stdout.
pub(crate) fn tool(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog} (install it: apt-get install {prog}): {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A multi-platform image as buildx writes it: index.json → nested index of two platform
/// manifests, an attestation manifest (in-toto layer) and an artifact referring to the amd64
/// manifest with a custom media type, plus a raw blob of an unknown media type.
pub(crate) fn rich_layout(dir: PathBuf, name: &str) -> Layout {
    let l = Layout::new(dir);
    let amd = l.image(
        "amd64",
        &[
            (
                "application/vnd.oci.image.layer.v1.tar",
                tar_of(&[("a", b"amd64\n")]),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                gzip(&tar_of(&[("b", b"more\n")])),
            ),
        ],
    );
    let arm = l.image(
        "arm64",
        &[(
            "application/vnd.oci.image.layer.v1.tar+zstd",
            zstd(&tar_of(&[("a", b"arm64\n")])),
        )],
    );
    let statement = l.blob(
        "application/vnd.in-toto+json",
        br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2"}"#,
    );
    let mut att_cfg = l.json_blob(OCI_CONFIG, &json!({"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}));
    att_cfg["annotations"] = json!({});
    let mut att = l.json_blob(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": att_cfg,
                "layers": [statement]}),
    );
    att["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    att["annotations"] = json!({"vnd.docker.reference.type": "attestation-manifest",
                                "vnd.docker.reference.digest": amd["digest"]});
    let empty = l.blob("application/vnd.oci.empty.v1+json", b"{}");
    let sbom = l.blob(
        "application/vnd.example.sbom.v1+json",
        br#"{"packages":[]}"#,
    );
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": amd["digest"], "size": amd["size"]});
    let mut artifact = l.json_blob(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.sbom", "config": empty,
                "layers": [sbom], "subject": subject,
                "annotations": {"com.example.note": "unknown fields are kept"},
                "x-unknown-field": 1}),
    );
    artifact["artifactType"] = json!("application/vnd.example.sbom");
    let custom = l.blob("application/vnd.example.custom", b"\x00\x01 any bytes");
    let nested = l.json_blob(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [amd, arm, att, artifact, custom]}),
    );
    l.index(vec![named(nested, name)]);
    l
}

/// The umoci-built image: two layers made by unpacking, adding files, repacking.
pub(crate) fn umoci_layout(env: &Env) -> PathBuf {
    let l = env.path("umoci");
    let ls = s(&l).to_string();
    tool("umoci", &["init", "--layout", &ls]);
    tool("umoci", &["new", "--image", &format!("{ls}:app")]);
    let b = env.path("bundle");
    for (i, file) in ["one", "two"].iter().enumerate() {
        let _ = std::fs::remove_dir_all(&b);
        tool(
            "umoci",
            &[
                "unpack",
                "--rootless",
                "--image",
                &format!("{ls}:app"),
                s(&b),
            ],
        );
        write(
            &b.join("rootfs"),
            &format!("opt/{file}"),
            format!("layer {i}\n").as_bytes(),
        );
        tool("umoci", &["repack", "--image", &format!("{ls}:app"), s(&b)]);
    }
    tool("umoci", &["gc", "--layout", &ls]);
    l
}

pub(crate) fn import(env: &Env, src: &Path, name: Option<&str>) -> Value {
    let mut args = vec!["oci", "import", s(src)];
    if let Some(n) = name {
        args.extend(["--name", n]);
    }
    env.json(&args)
}

pub(crate) fn root_of(v: &Value) -> String {
    v["root"]["id"].as_str().unwrap().to_string()
}

#[test]
fn layout_folders_round_trip_byte_for_byte_and_tools_accept_them() {
    let env = Env::new();
    let sources = [
        (umoci_layout(&env), "app"),
        (
            simple_layout(env.path("simple"), "simple", b"x").dir,
            "simple",
        ),
        (rich_layout(env.path("rich"), "rich").dir, "rich"),
    ];
    for (src, name) in &sources {
        let v = import(&env, src, None);
        assert_eq!(v["key"], *name);
        assert_eq!(v["source"], "layout");
        assert_eq!(v["dropped"], json!([]), "{name}: nothing may be dropped");
        let rec = env.json(&["show", name]);
        assert_eq!(rec["labels"]["cairn.oci"], "1");
        assert_eq!(rec["labels"]["cairn.oci.source"], "layout");
        let out = env.path(&format!("out-{name}"));
        env.ok(&["oci", "export", name, "--layout", s(&out)]);
        assert_eq!(
            files_under(&out),
            files_under(src),
            "{name}: export differs"
        );
        // `cairn get` restores the same layout.
        let got = env.path(&format!("get-{name}"));
        env.ok(&["get", name, s(&got)]);
        assert_eq!(files_under(&got), files_under(src));
        let r = format!("oci:{}:{name}", s(&out));
        let insp: Value = serde_json::from_str(&tool("skopeo", &["inspect", &r])).unwrap();
        assert_eq!(insp["Os"], "linux", "{name}: {insp}");
        let copy = env.path(&format!("copy-{name}"));
        tool("skopeo", &["copy", &r, &format!("oci:{}:{name}", s(&copy))]);
    }
    // umoci reads and unpacks the exported umoci image.
    let out = env.path("out-app");
    let stat = tool("umoci", &["stat", "--image", &format!("{}:app", s(&out))]);
    assert!(stat.contains("LAYER"), "{stat}");
    let bundle = env.path("unpacked");
    tool(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:app", s(&out)),
            s(&bundle),
        ],
    );
    assert_eq!(
        std::fs::read(bundle.join("rootfs/opt/two")).unwrap(),
        b"layer 1\n"
    );
    // skopeo reads the multi-platform index as stored (--all copies would also try to read
    // the raw custom-type entry as a manifest, which skopeo does not support).
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:rich", s(&env.path("out-rich"))),
        ],
    );
    let nested: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(nested["manifests"].as_array().unwrap().len(), 5);
}

#[test]
fn archives_plain_gzip_zstd_bind_the_same_root_as_the_folder() {
    let env = Env::new();
    let l = rich_layout(env.path("rich"), "rich");
    let plain = tar_dir(&l.dir);
    std::fs::write(env.path("rich.tar"), &plain).unwrap();
    std::fs::write(env.path("rich.tar.gz"), gzip(&plain)).unwrap();
    std::fs::write(env.path("rich.tar.zst"), zstd(&plain)).unwrap();
    let want = root_of(&import(&env, &l.dir, Some("from-dir")));
    for (i, f) in ["rich.tar", "rich.tar.gz", "rich.tar.zst"]
        .iter()
        .enumerate()
    {
        let v = import(&env, &env.path(f), Some(&format!("k{i}")));
        assert_eq!(v["source"], "oci-archive");
        assert_eq!(root_of(&v), want, "{f}");
    }
    // Without --name, the index's single ref name is the key.
    assert_eq!(import(&env, &env.path("rich.tar.zst"), None)["key"], "rich");
}

#[test]
fn archive_export_is_deterministic_and_reimports_to_the_same_root() {
    let a = Env::new();
    let b = Env::new();
    let l = simple_layout(a.path("img"), "img", b"det");
    let k = root_of(&import(&a, &l.dir, None));
    assert_eq!(root_of(&import(&b, &l.dir, None)), k);
    let mut sums = Vec::new();
    for (env, f) in [(&a, "1.tar"), (&a, "2.tar"), (&b, "3.tar")] {
        env.ok(&["oci", "export", "img", "--archive", s(&a.path(f))]);
        sums.push(sha256_hex(&std::fs::read(a.path(f)).unwrap()));
    }
    assert!(sums.iter().all(|x| *x == sums[0]), "{sums:?}");
    let back = Env::new();
    assert_eq!(root_of(&import(&back, &a.path("1.tar"), Some("again"))), k);
    // Compressed exports reimport to the same root too.
    a.ok(&["oci", "export", "img", "--archive", s(&a.path("x.tar.zst"))]);
    assert_eq!(root_of(&import(&back, &a.path("x.tar.zst"), Some("z"))), k);
    // The archive is a valid OCI archive for skopeo.
    tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}:img", s(&a.path("1.tar"))),
        ],
    );
}

#[test]
fn shared_blobs_are_stored_once() {
    let env = Env::new();
    let one = simple_layout(env.path("one"), "one", b"same");
    let two = simple_layout(env.path("two"), "two", b"same");
    // Same layers and config, different index: everything but index.json is shared.
    let first = env.json(&["verify"])["blobs"].as_u64().unwrap();
    import(&env, &one.dir, None);
    let after_one = env.json(&["verify"])["blobs"].as_u64().unwrap();
    import(&env, &two.dir, None);
    let after_two = env.json(&["verify"])["blobs"].as_u64().unwrap();
    assert_eq!(after_two - after_one, 1, "only index.json is new ({first})");
}

#[test]
fn docker_save_archives_are_converted_to_layouts() {
    let env = Env::new();
    let layer1 = tar_of(&[("etc/os-release", b"ID=test\n")]);
    let layer2_raw = tar_of(&[("app/run", b"#!/bin/sh\n")]);
    let layer2 = gzip(&layer2_raw);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app/run"]},
        "rootfs": {"type": "layers", "diff_ids": [
            format!("sha256:{}", sha256_hex(&layer1)),
            format!("sha256:{}", sha256_hex(&layer2_raw))]},
        "history": [{"created_by": "test"}]}))
    .unwrap();
    let cfg_name = format!("{}.json", sha256_hex(&config));
    let (id1, id2) = ("a".repeat(64), "b".repeat(64));
    let manifest = serde_json::to_vec(&json!([{
        "Config": cfg_name, "RepoTags": ["docker-app:1"],
        "Layers": [format!("{id1}/layer.tar"), format!("{id2}/layer.tar")]}]))
    .unwrap();
    let repositories = serde_json::to_vec(&json!({"docker-app": {"1": id2}})).unwrap();
    let build = |config_bytes: &[u8]| {
        tar_of(&[
            (&format!("{id1}/VERSION"), b"1.0"),
            (&format!("{id1}/json"), b"{}"),
            (&format!("{id1}/layer.tar"), &layer1),
            (&format!("{id2}/VERSION"), b"1.0"),
            (&format!("{id2}/json"), b"{}"),
            (&format!("{id2}/layer.tar"), &layer2),
            (&cfg_name, config_bytes),
            ("manifest.json", &manifest),
            ("repositories", &repositories),
        ])
    };
    std::fs::write(env.path("save.tar"), build(&config)).unwrap();
    let v = import(&env, &env.path("save.tar"), None);
    assert_eq!(v["key"], "docker-app:1");
    assert_eq!(v["source"], "docker-archive");
    let out = env.path("out");
    env.ok(&["oci", "export", "docker-app:1", "--layout", s(&out)]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let desc = &index["manifests"][0];
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        "docker-app:1"
    );
    assert_eq!(
        desc["platform"],
        json!({"architecture": "amd64", "os": "linux"})
    );
    let mpath = out
        .join("blobs/sha256")
        .join(&desc["digest"].as_str().unwrap()[7..]);
    let mbytes = std::fs::read(mpath).unwrap();
    let m: Value = serde_json::from_slice(&mbytes).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        m["config"]["digest"],
        format!("sha256:{}", sha256_hex(&config))
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    assert_eq!(
        m["layers"][1]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        m["layers"][1]["digest"],
        format!("sha256:{}", sha256_hex(&layer2))
    );
    // Compact JSON with sorted keys: serde_json's own output of the parsed value.
    assert_eq!(mbytes, serde_json::to_vec(&m).unwrap());
    assert_eq!(
        std::fs::read(out.join("blobs/sha256").join(sha256_hex(&layer1))).unwrap(),
        layer1
    );
    // Deterministic: a second store makes the same root.
    let other = Env::new();
    assert_eq!(
        root_of(&import(&other, &env.path("save.tar"), None)),
        root_of(&v)
    );
    let insp = env.json(&["oci", "inspect", "docker-app:1"]);
    assert_eq!(insp["manifests"][0]["platform"], "linux/amd64");
    tool("skopeo", &["inspect", &format!("oci:{}", s(&out))]);

    // A config whose bytes do not hash to its name is refused.
    let mut bad = config.clone();
    bad.extend_from_slice(b" ");
    std::fs::write(env.path("bad.tar"), build(&bad)).unwrap();
    env.refused(
        &["oci", "import", s(&env.path("bad.tar"))],
        &[&format!("sha256:{}", sha256_hex(&config))],
    );
}

#[test]
fn hostile_inputs_are_refused_with_one_line_and_bind_nothing() {
    let env = Env::new();
    let fresh = |tag: &str| simple_layout(env.path(tag), "img", tag.as_bytes());
    let manifest_of = |l: &Layout| -> (String, Value) {
        let idx: Value =
            serde_json::from_slice(&std::fs::read(l.dir.join("index.json")).unwrap()).unwrap();
        let d = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
        let m = serde_json::from_slice(
            &std::fs::read(l.dir.join("blobs/sha256").join(&d[7..])).unwrap(),
        )
        .unwrap();
        (d, m)
    };
    let layer_of = |l: &Layout, i: usize| -> String {
        manifest_of(l).1["layers"][i]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // A blob whose bytes do not match its digest.
    let l = fresh("corrupt");
    let d = layer_of(&l, 1);
    std::fs::write(l.dir.join("blobs/sha256").join(&d[7..]), b"not the layer").unwrap();
    env.refused(&["oci", "import", s(&l.dir)], &[&d, "hashes to"]);
    // The same inside an archive.
    std::fs::write(env.path("corrupt.tar"), tar_dir(&l.dir)).unwrap();
    env.refused(&["oci", "import", s(&env.path("corrupt.tar"))], &[&d]);

    // A descriptor whose size lies.
    let l = fresh("size");
    let (md, mut m) = manifest_of(&l);
    let d = m["layers"][0]["digest"].as_str().unwrap().to_string();
    m["layers"][0]["size"] = json!(m["layers"][0]["size"].as_u64().unwrap() + 1);
    std::fs::remove_file(l.dir.join("blobs/sha256").join(&md[7..])).unwrap();
    let nd = l.json_blob(OCI_MANIFEST, &m);
    l.index(vec![named(nd, "img")]);
    env.refused(&["oci", "import", s(&l.dir)], &[&d, "says"]);

    // A manifest naming a missing blob.
    let l = fresh("missing");
    let d = layer_of(&l, 2);
    std::fs::remove_file(l.dir.join("blobs/sha256").join(&d[7..])).unwrap();
    env.refused(&["oci", "import", s(&l.dir)], &[&d, "missing"]);

    // Invalid JSON in index.json.
    let l = fresh("badindex");
    write(
        &l.dir,
        "index.json",
        b"{\"schemaVersion\":2,\"manifests\":[",
    );
    env.refused(&["oci", "import", s(&l.dir)], &["index.json", "invalid"]);

    // Invalid JSON in a manifest (whose digest is right).
    let l = fresh("badmanifest");
    let d = l.blob(OCI_MANIFEST, b"{\"schemaVersion\":2,\"config\":");
    let digest = d["digest"].as_str().unwrap().to_string();
    l.index(vec![named(d, "img")]);
    env.refused(
        &["oci", "import", s(&l.dir)],
        &[&digest, "invalid image manifest"],
    );

    // A truncated archive.
    let l = fresh("trunc");
    let t = tar_dir(&l.dir);
    std::fs::write(env.path("trunc.tar"), &t[..t.len() / 2]).unwrap();
    env.refused(
        &["oci", "import", s(&env.path("trunc.tar"))],
        &["trunc.tar", "truncated"],
    );
    std::fs::write(env.path("trunc.tar.gz"), &gzip(&t)[..200]).unwrap();
    env.refusal(
        &["oci", "import", s(&env.path("trunc.tar.gz"))],
        &["trunc.tar.gz"],
    );

    // Archive entries outside the layout.
    let l = fresh("escape");
    let mut t = tar_dir(&l.dir);
    t.truncate(t.len() - 1024); // drop the end-of-archive marker, append more entries
    let mut b = tar::Builder::new(t);
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    // tar-rs refuses to write `..` names itself: write the name into the header by hand.
    h.as_old_mut().name[..4].copy_from_slice(b"../x");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    std::fs::write(env.path("escape.tar"), b.into_inner().unwrap()).unwrap();
    env.refused(
        &["oci", "import", s(&env.path("escape.tar"))],
        &["../x", "'..'"],
    );
    let mut t = tar_dir(&l.dir);
    t.truncate(t.len() - 1024);
    let mut b = tar::Builder::new(t);
    h.as_old_mut().name = [0; 100];
    h.as_old_mut().name[..11].copy_from_slice(b"/etc/passwd");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    std::fs::write(env.path("abs.tar"), b.into_inner().unwrap()).unwrap();
    env.refused(
        &["oci", "import", s(&env.path("abs.tar"))],
        &["/etc/passwd", "absolute"],
    );
    // A stray file in a layout folder.
    let l = fresh("stray");
    write(&l.dir, "notes.txt", b"hi");
    env.refused(&["oci", "import", s(&l.dir)], &["notes.txt"]);
    // Two names in the index and no --name.
    let l = fresh("twonames");
    let (md, _) = manifest_of(&l);
    let size = std::fs::metadata(l.dir.join("blobs/sha256").join(&md[7..]))
        .unwrap()
        .len();
    let d = json!({"mediaType": OCI_MANIFEST, "digest": md, "size": size});
    l.index(vec![named(d.clone(), "a"), named(d, "b")]);
    env.refused(&["oci", "import", s(&l.dir)], &["--name", "2 images"]);
    assert_eq!(env.json(&["ls"]), json!([]));
}

#[test]
fn seed_scenario_buildx_archive_survives_moving_the_store() {
    let env = Env::new();
    let l = rich_layout(env.path("layout"), "app");
    std::fs::write(env.path("image.tar"), tar_dir(&l.dir)).unwrap();
    let root = root_of(&import(&env, &env.path("image.tar"), None));
    // Extract a subtree straight from the stored blobs: no daemon, no unpacked layout.
    let sub = |dest: &Path| {
        (
            std::fs::read(dest.join("b")).unwrap(),
            crate::common::names_under(dest),
        )
    };
    env.ok(&[
        "oci",
        "extract",
        "app",
        s(&env.path("sub")),
        "--platform",
        "linux/amd64",
        "--path",
        "b",
    ]);
    assert_eq!(
        sub(&env.path("sub")),
        (b"more\n".to_vec(), vec!["b".to_string()])
    );
    let moved = env.path("moved-store");
    std::fs::rename(env.store(), &moved).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--store")
            .arg(&moved)
            .args(args)
            .env_remove("CAIRN_STORE")
            .env_remove("CAIRN_CONFIG")
            .env("XDG_CONFIG_HOME", env.path("xdg-config"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["oci", "export", "app", "--layout", s(&env.path("exported"))]);
    assert_eq!(files_under(&env.path("exported")), files_under(&l.dir));
    run(&["get", "app", s(&env.path("got"))]);
    assert_eq!(files_under(&env.path("got")), files_under(&l.dir));
    run(&[
        "oci",
        "export",
        "app",
        "--archive",
        s(&env.path("again.tar")),
    ]);
    assert!(run(&["oci", "inspect", "app"]).contains(&root));
    run(&[
        "oci",
        "extract",
        "app",
        s(&env.path("sub-moved")),
        "--platform",
        "linux/amd64",
        "--path",
        "b",
    ]);
    assert_eq!(sub(&env.path("sub-moved")), sub(&env.path("sub")));
}

#[test]
fn inspect_shows_platforms_attestations_and_artifacts() {
    let env = Env::new();
    let l = rich_layout(env.path("rich"), "rich");
    import(&env, &l.dir, None);
    let v = env.json(&["oci", "inspect", "rich"]);
    let nested = &v["manifests"][0];
    assert_eq!(nested["mediaType"], OCI_INDEX);
    let kids = nested["children"].as_array().unwrap();
    assert_eq!(kids.len(), 5);
    assert_eq!(kids[0]["platform"], "linux/amd64");
    assert_eq!(kids[1]["platform"], "linux/arm64");
    assert_eq!(kids[0]["children"][0]["role"], "config");
    assert_eq!(kids[0]["children"][1]["role"], "layer");
    assert_eq!(
        kids[2]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        kids[2]["children"][1]["mediaType"],
        "application/vnd.in-toto+json"
    );
    assert_eq!(kids[3]["artifactType"], "application/vnd.example.sbom");
    assert_eq!(kids[3]["children"][2]["role"], "subject");
    assert_eq!(kids[4]["mediaType"], "application/vnd.example.custom");
    let text = env.ok(&["oci", "inspect", "rich"]);
    assert!(text.contains("platform=linux/arm64"), "{text}");
    // A key that is not an image is refused.
    std::fs::create_dir_all(env.path("plain")).unwrap();
    write(&env.path("plain"), "f", b"x");
    env.ok(&["put", "plain", s(&env.path("plain"))]);
    env.refusal(
        &["oci", "inspect", "plain"],
        &["plain", "not an OCI image layout"],
    );
}
