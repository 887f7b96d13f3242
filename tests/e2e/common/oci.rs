//! OCI image layouts built by hand: blobs by digest, manifests, indexes.

use std::path::{Path, PathBuf};

use super::{files_under, gzip, sha256_hex, write, zstd};
use serde_json::{Value, json};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A tar of `files` (path, content), written byte by byte with fixed metadata.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p, *c).unwrap();
    }
    b.into_inner().unwrap()
}

/// A tar of a folder as buildx writes an OCI archive: every file, sorted, relative names.
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let files = files_under(dir);
    let data: Vec<(String, Vec<u8>)> = files
        .keys()
        .map(|p| (p.clone(), std::fs::read(dir.join(p)).unwrap()))
        .collect();
    let refs: Vec<(&str, &[u8])> = data
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    tar_of(&refs)
}

/// An OCI layout being built in a folder.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Layout {
        write(&dir, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        Layout { dir }
    }

    /// Stores a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let hex = sha256_hex(bytes);
        write(&self.dir, &format!("blobs/sha256/{hex}"), bytes);
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    pub fn json_blob(&self, media_type: &str, v: &Value) -> Value {
        self.blob(media_type, &serde_json::to_vec(v).unwrap())
    }

    /// An image manifest over `layers` (media type, bytes) with a config for `arch`.
    pub fn image(&self, arch: &str, layers: &[(&str, Vec<u8>)]) -> Value {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(mt, b)| format!("sha256:{}", sha256_hex(&uncompressed(mt, b))))
            .collect();
        let config = self.json_blob(
            OCI_CONFIG,
            &json!({"architecture": arch, "os": "linux", "config": {},
                    "rootfs": {"type": "layers", "diff_ids": diff_ids}}),
        );
        let layers: Vec<Value> = layers.iter().map(|(mt, b)| self.blob(mt, b)).collect();
        let mut d = self.json_blob(
            OCI_MANIFEST,
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                    "layers": layers}),
        );
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    }

    pub fn index(&self, manifests: Vec<Value>) {
        write(
            &self.dir,
            "index.json",
            &serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                        "manifests": manifests}))
            .unwrap(),
        );
    }
}

/// A layer's tar as its media type says it is compressed (a config's diff_ids hash that, and
/// umoci checks it); the bytes themselves when they do not decompress (hostile layers, whose
/// diff_id nobody gets to check).
fn uncompressed(media_type: &str, b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let ok = if media_type.ends_with("gzip") {
        flate2::read::MultiGzDecoder::new(b)
            .read_to_end(&mut out)
            .is_ok()
    } else if media_type.ends_with("zstd") {
        zstd::stream::read::Decoder::new(b)
            .and_then(|mut d| d.read_to_end(&mut out))
            .is_ok()
    } else {
        false
    };
    if ok { out } else { b.to_vec() }
}

pub fn named(mut d: Value, name: &str) -> Value {
    d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    d
}

/// A single-platform image with a plain, a gzip and a zstd layer, named `name`.
pub fn simple_layout(dir: PathBuf, name: &str, extra: &[u8]) -> Layout {
    let l = Layout::new(dir);
    let t1 = tar_of(&[("etc/hello", b"hello\n"), ("bin/x", extra)]);
    let t2 = tar_of(&[("etc/two", b"two\n")]);
    let t3 = tar_of(&[("etc/three", &b"three\n".repeat(1000))]);
    let m = l.image(
        "amd64",
        &[
            ("application/vnd.oci.image.layer.v1.tar", t1),
            ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&t2)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", zstd(&t3)),
        ],
    );
    l.index(vec![named(m, name)]);
    l
}
