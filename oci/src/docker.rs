//! `docker save` archives (`manifest.json`, a config per image, layer tars) converted to an OCI
//! image layout on import. The mapping (docs/format.md, "docker save archives"):
//!
//! - each `manifest.json` entry becomes a Docker image manifest, schema 2
//!   (`application/vnd.docker.distribution.manifest.v2+json`), written as compact JSON with keys
//!   in sorted order, so the same archive always gives the same manifest digest;
//! - its config keeps its bytes, with media type `application/vnd.docker.container.image.v1+json`
//!   (they are Docker's config bytes: this is what `docker push` would send for them);
//! - each layer keeps its bytes, as `application/vnd.docker.image.rootfs.diff.tar`, or
//!   `….tar.gzip` when it starts with the gzip magic;
//! - `index.json` lists the manifests in `manifest.json` order, one entry per RepoTag with the
//!   annotation `org.opencontainers.image.ref.name` = the tag as written (one entry without it
//!   for an untagged image), and the platform from the config's `os`/`architecture`/`variant`.
//!
//! Docker archives carry no digests for layers, so cairn checks what they do carry: a config
//! named `<hex>.json` (or `blobs/sha256/<hex>`) must hash to that name, and an uncompressed layer
//! must hash to its `rootfs.diff_ids` entry.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use cairn_store::ImportSession;

use crate::digest::{OciDigest, sha256_of};
use crate::error::{OciError, Result};
use crate::import::{Layout, Staged};
use crate::source::{Collected, normalize};
use crate::{REF_NAME, media};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An object with keys inserted in sorted order (so the output is sorted whether or not
/// serde_json preserves insertion order).
pub(crate) fn obj(mut pairs: Vec<(&str, Value)>) -> Value {
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

pub(crate) fn stage(store: &ImportSession, bytes: Vec<u8>, what: &str) -> Result<Staged> {
    let blob = store.stage_stream(Cursor::new(&bytes), bytes.len() as u64, None, what)?;
    Ok(Staged {
        size: bytes.len() as u64,
        id: blob.id(),
        head: Vec::new(),
        json: Some(bytes),
        blob: Some(blob),
    })
}

type Taken = (OciDigest, u64, Vec<u8>, Option<Vec<u8>>);

/// Moves the member at `raw` into `blobs` (once); returns its digest, size, head and JSON.
fn take(
    c: &mut Collected,
    blobs: &mut BTreeMap<OciDigest, Staged>,
    moved: &mut HashMap<String, OciDigest>,
    raw: &str,
) -> Result<Taken> {
    let path = normalize(raw.as_bytes()).map_err(|r| c.entry_err(raw, r))?;
    // A link member stands for the member it resolves to (checked when collected).
    let path = c.aliases.get(&path).cloned().unwrap_or(path);
    if let Some(d) = moved.get(&path) {
        let s = &blobs[d];
        return Ok((d.clone(), s.size, s.head.clone(), s.json.clone()));
    }
    let m = c.members.remove(&path).ok_or_else(|| {
        c.entry_err(
            "manifest.json",
            format!("names {raw:?}, which the archive lacks"),
        )
    })?;
    let out = (m.sha256.clone(), m.size, m.head.clone(), m.json.clone());
    moved.insert(path, m.sha256.clone());
    blobs.entry(m.sha256.clone()).or_insert(Staged {
        size: m.size,
        id: m.id,
        head: m.head,
        json: m.json,
        blob: Some(m.blob),
    });
    Ok(out)
}

/// Converts a collected docker archive into a layout.
pub(crate) fn convert(store: &ImportSession, mut c: Collected) -> Result<Layout> {
    let manifest_json = c
        .members
        .get("manifest.json")
        .and_then(|m| m.json.clone())
        .ok_or_else(|| c.entry_err("manifest.json", "not a JSON document"))?;
    let entries: Vec<SaveEntry> = serde_json::from_slice(&manifest_json)
        .map_err(|e| c.entry_err("manifest.json", format!("invalid docker manifest: {e}")))?;
    if entries.is_empty() {
        return Err(c.entry_err("manifest.json", "lists no image"));
    }
    let mut blobs: BTreeMap<OciDigest, Staged> = BTreeMap::new();
    let mut moved: HashMap<String, OciDigest> = HashMap::new();
    let mut index_entries = Vec::new();
    for e in &entries {
        let (cfg_digest, cfg_size, _, cfg_json) = take(&mut c, &mut blobs, &mut moved, &e.config)?;
        let name = e.config.rsplit('/').next().unwrap_or_default();
        let named = name.strip_suffix(".json").unwrap_or(name);
        let named = named.strip_prefix("sha256:").unwrap_or(named);
        if let Some(d) = OciDigest::from_parts(crate::Alg::Sha256, named)
            && d != cfg_digest
        {
            return Err(OciError::Blob {
                src: c.src.clone(),
                digest: d.to_string(),
                reason: format!("config {:?} hashes to {cfg_digest}", e.config),
            });
        }
        let config: Value = cfg_json
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
            .ok()
            .flatten()
            .ok_or_else(|| {
                c.entry_err(&e.config, "the image config is not a valid JSON document")
            })?;
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut layers = Vec::new();
        for (i, raw) in e.layers.iter().enumerate() {
            let (digest, size, head, _) = take(&mut c, &mut blobs, &mut moved, raw)?;
            let mt = if head.starts_with(&[0x1f, 0x8b]) {
                media::DOCKER_LAYER_GZIP
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                return Err(c.entry_err(
                    raw,
                    "zstd layers have no docker-save media type; save the image as OCI",
                ));
            } else {
                if diff_ids.len() == e.layers.len() && diff_ids[i] != digest.to_string() {
                    return Err(OciError::Blob {
                        src: c.src.clone(),
                        digest: digest.to_string(),
                        reason: format!(
                            "layer {raw:?} does not match the config's diff_id {}",
                            diff_ids[i]
                        ),
                    });
                }
                media::DOCKER_LAYER
            };
            layers.push(obj(vec![
                ("digest", json!(digest.to_string())),
                ("mediaType", json!(mt)),
                ("size", json!(size)),
            ]));
        }
        let manifest = obj(vec![
            ("schemaVersion", json!(2)),
            ("mediaType", json!(media::DOCKER_MANIFEST)),
            (
                "config",
                obj(vec![
                    ("digest", json!(cfg_digest.to_string())),
                    ("mediaType", json!(media::DOCKER_CONFIG)),
                    ("size", json!(cfg_size)),
                ]),
            ),
            ("layers", Value::Array(layers)),
        ]);
        let bytes = serde_json::to_vec(&manifest).expect("JSON values serialize");
        let digest = sha256_of(&bytes);
        let size = bytes.len() as u64;
        if !blobs.contains_key(&digest) {
            blobs.insert(digest.clone(), stage(store, bytes, "generated manifest")?);
        }
        let mut platform = Vec::new();
        for (k, field) in [
            ("architecture", "architecture"),
            ("os", "os"),
            ("variant", "variant"),
        ] {
            if let Some(v) = config[field].as_str().filter(|v| !v.is_empty()) {
                platform.push((k, json!(v)));
            }
        }
        let has_platform =
            platform.iter().any(|p| p.0 == "os") && platform.iter().any(|p| p.0 == "architecture");
        let tags: Vec<Option<&String>> = match &e.repo_tags {
            Some(t) if !t.is_empty() => t.iter().map(Some).collect(),
            _ => vec![None],
        };
        for tag in tags {
            let mut d = vec![
                ("digest", json!(digest.to_string())),
                ("mediaType", json!(media::DOCKER_MANIFEST)),
                ("size", json!(size)),
            ];
            if has_platform {
                d.push(("platform", obj(platform.clone())));
            }
            if let Some(t) = tag {
                d.push(("annotations", obj(vec![(REF_NAME, json!(t))])));
            }
            index_entries.push(obj(d));
        }
    }
    let index = obj(vec![
        ("schemaVersion", json!(2)),
        ("mediaType", json!(media::OCI_INDEX)),
        ("manifests", Value::Array(index_entries)),
    ]);
    let index_json = serde_json::to_vec(&index).expect("JSON values serialize");
    let dropped = c.members.keys().cloned().collect();
    Ok(Layout {
        oci_layout: stage(
            store,
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            "oci-layout",
        )?,
        index_json: stage(store, index_json, "index.json")?,
        blobs,
        dropped,
    })
}
