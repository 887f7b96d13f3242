//! skopeo's `dir:` layout (a folder holding `manifest.json`, the image manifest as the registry
//! served it, a `version` file, and every blob as a file named by its sha256 hex digest),
//! converted to an OCI image layout on import: the manifest keeps its bytes (so its digest is
//! the one skopeo and the registry know), the blobs keep theirs, and `index.json` holds one entry
//! for the manifest, with the platform its config names. Every blob file must hash to its name.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use cairn_store::ImportSession;

use crate::digest::{Alg, OciDigest};
use crate::docker::{obj, stage};
use crate::error::{OciError, Result};
use crate::import::{Layout, Staged};
use crate::media;
use crate::source::Collected;

/// The file naming the transport version (`Directory Transport Version: 1.1`).
pub(crate) const VERSION_FILE: &str = "version";
/// What the version file starts with.
const VERSION_PREFIX: &str = "Directory Transport Version: 1.";
/// Largest version file accepted (skopeo's is 33 bytes).
const MAX_VERSION_FILE: u64 = 256;

/// Whether a collected folder is a `dir:` layout.
pub(crate) fn is_dir_layout(c: &Collected) -> bool {
    c.is_dir && c.members.contains_key("manifest.json") && c.members.contains_key(VERSION_FILE)
}

/// Converts a collected `dir:` layout into a layout.
pub(crate) fn convert(store: &ImportSession, mut c: Collected) -> Result<Layout> {
    let missing = |c: &Collected, name: &str| c.entry_err(name, "missing");
    let version = c
        .members
        .remove(VERSION_FILE)
        .ok_or_else(|| missing(&c, VERSION_FILE))?;
    // Only its first bytes are kept while collecting: enough to tell it from another file.
    if version.size > MAX_VERSION_FILE
        || version.head.is_empty()
        || !VERSION_PREFIX.as_bytes().starts_with(&version.head)
    {
        return Err(c.entry_err(
            VERSION_FILE,
            "not a dir: transport version file (\"Directory Transport Version: 1.x\")",
        ));
    }
    let manifest = c
        .members
        .remove("manifest.json")
        .ok_or_else(|| missing(&c, "manifest.json"))?;
    let bytes = manifest
        .json
        .clone()
        .ok_or_else(|| c.entry_err("manifest.json", "not a JSON document"))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| c.entry_err("manifest.json", format!("invalid JSON: {e}")))?;
    let mt = doc["mediaType"]
        .as_str()
        .unwrap_or(media::OCI_MANIFEST)
        .to_string();
    if mt != media::OCI_MANIFEST && mt != media::DOCKER_MANIFEST {
        return Err(c.entry_err(
            "manifest.json",
            format!("media type {mt} (cairn reads a dir: layout of one image manifest)"),
        ));
    }
    let mut blobs: BTreeMap<OciDigest, Staged> = BTreeMap::new();
    let mut dropped = Vec::new();
    for (name, m) in std::mem::take(&mut c.members) {
        let Some(named) = OciDigest::from_parts(Alg::Sha256, &name) else {
            if name.starts_with("signature-") {
                dropped.push(name);
                continue;
            }
            return Err(c.entry_err(&name, "not part of a dir: layout"));
        };
        if m.sha256 != named {
            return Err(OciError::Blob {
                src: c.src.clone(),
                digest: named.to_string(),
                reason: format!("content hashes to {}", m.sha256),
            });
        }
        blobs.insert(
            named,
            Staged {
                size: m.size,
                id: m.id,
                head: m.head,
                json: m.json,
                blob: Some(m.blob),
            },
        );
    }
    let digest = manifest.sha256.clone();
    let mut entry = vec![
        ("digest", json!(digest.to_string())),
        ("mediaType", json!(mt)),
        ("size", json!(manifest.size)),
    ];
    if let Some(p) = config_platform(&doc, &blobs) {
        entry.push(("platform", p));
    }
    blobs.insert(
        digest,
        Staged {
            size: manifest.size,
            id: manifest.id,
            head: manifest.head,
            json: Some(bytes),
            blob: Some(manifest.blob),
        },
    );
    let index = obj(vec![
        ("schemaVersion", json!(2)),
        ("mediaType", json!(media::OCI_INDEX)),
        ("manifests", json!([obj(entry)])),
    ]);
    let index_json = serde_json::to_vec(&index).expect("JSON values serialize");
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

/// The platform of the manifest's config (`os`, `architecture`, `variant`), if it names one.
fn config_platform(manifest: &Value, blobs: &BTreeMap<OciDigest, Staged>) -> Option<Value> {
    let digest = OciDigest::parse(manifest["config"]["digest"].as_str()?).ok()?;
    let config: Value = serde_json::from_slice(blobs.get(&digest)?.json.as_deref()?).ok()?;
    let mut p = Vec::new();
    for k in ["architecture", "os", "variant"] {
        if let Some(v) = config[k].as_str().filter(|v| !v.is_empty()) {
            p.push((k, json!(v)));
        }
    }
    (p.iter().any(|x| x.0 == "os") && p.iter().any(|x| x.0 == "architecture")).then(|| obj(p))
}
