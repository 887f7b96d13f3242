//! Picking one image out of a source that holds several: `--image REF` keeps the index
//! entries whose `org.opencontainers.image.ref.name` is REF; a docker-archive of several images
//! (`podman save -m`, `docker save a b`) needs one picked, by `--image` or by a `--name` that
//! is one of its references, since its images share nothing but the file.

use std::path::Path;

use serde_json::Value;

use cairn_store::{ImportSession, Key};

use crate::error::{OciError, Result};
use crate::import::{Layout, SourceKind};
use crate::{REF_NAME, docker};

/// A reference shown for an entry without a ref name: its manifest digest.
fn shown(entry: &Value) -> String {
    match entry["annotations"][REF_NAME].as_str() {
        Some(r) => r.to_string(),
        None => format!(
            "an untagged image ({})",
            entry["digest"].as_str().unwrap_or("?")
        ),
    }
}

/// Narrows `layout`'s `index.json` to the image asked for, if one is (or must be) picked.
pub(crate) fn pick(
    store: &ImportSession,
    layout: &mut Layout,
    kind: SourceKind,
    src: &Path,
    image: Option<&str>,
    name: Option<&Key>,
) -> Result<()> {
    let bad = |reason: String| OciError::Image {
        src: src.to_path_buf(),
        reason,
    };
    let Some(bytes) = layout.index_json.json.as_deref() else {
        return Ok(()); // reported by the caller, with the rest of index.json's checks
    };
    let Ok(mut index) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    let Some(entries) = index["manifests"].as_array().cloned() else {
        return Ok(());
    };
    let mut refs: Vec<String> = entries.iter().map(shown).collect();
    refs.dedup();
    let mut images: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["digest"].as_str())
        .collect();
    images.sort_unstable();
    images.dedup();
    let want = match image {
        Some(r) => r.to_string(),
        None if kind == SourceKind::DockerArchive && images.len() > 1 => match name {
            Some(k) if refs.iter().any(|r| r == k.as_str()) => k.as_str().to_string(),
            _ => {
                return Err(bad(format!(
                    "holds {} images ({}); pick one with --image REF (or a --name that is one \
                     of them)",
                    images.len(),
                    refs.join(", ")
                )));
            }
        },
        None => return Ok(()),
    };
    let kept: Vec<Value> = entries
        .into_iter()
        .filter(|e| e["annotations"][REF_NAME].as_str() == Some(want.as_str()))
        .collect();
    if kept.is_empty() {
        return Err(bad(format!(
            "holds no image named {want:?}; it holds: {}",
            refs.join(", ")
        )));
    }
    index["manifests"] = Value::Array(kept);
    let bytes = serde_json::to_vec(&index).expect("JSON values serialize");
    layout.index_json = docker::stage(store, bytes, "index.json")?;
    Ok(())
}
