//! Image layouts in the store, read and written: a stored image is a tree that is exactly an OCI
//! image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), the shape `cairn oci import`
//! writes, so a pushed image is an ordinary image key for `oci extract`, `oci export`, `push`,
//! `pull` and `gc`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use cairn_oci::{Alg, OciDigest};
use cairn_store::{Entry, EntryKind, Id, Meta, ReadSession, Root, Tree};

use super::{BackendError, Result};
use crate::manifest::{Descriptor, MAX_MANIFEST_BYTES};

/// Mode of layout files and folders, as `cairn oci import` writes them (owner 0, mtime 0), so
/// a layout's root depends on its bytes alone.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// The `oci-layout` file every layout holds.
pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// What a layout tree holds: every blob by digest, and the entries of its `index.json`.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    /// digest → (size, blob id).
    pub blobs: HashMap<OciDigest, (u64, Id)>,
    /// `index.json`'s `manifests`.
    pub entries: Vec<Descriptor>,
}

#[derive(serde::Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Reads a whole blob (at most `limit` bytes), verified against its id.
pub(crate) fn read_blob(store: &ReadSession, id: &Id, size: u64, limit: usize) -> Result<Vec<u8>> {
    if size > limit as u64 {
        return Err(BackendError::Store(format!(
            "blob {id} is {size} bytes, over the {limit}-byte limit for documents"
        )));
    }
    let mut out = Vec::with_capacity(size as usize);
    store
        .open_blob(id, Some(size), None)?
        .read_to_end(&mut out)
        .map_err(|e| BackendError::Corrupt(format!("blob {id}: {e}")))?;
    Ok(out)
}

/// Reads the layout tree `root`, or `None` if it is not a layout.
pub(crate) fn read(store: &ReadSession, root: &Root) -> Result<Option<Layout>> {
    let Root::Tree { id } = root else {
        return Ok(None);
    };
    let top = store.tree(id)?;
    let (Some(EntryKind::File { size, blob }), Some(EntryKind::Dir { tree: blobs_tree })) = (
        top.get(b"index.json").map(|e| &e.kind),
        top.get(b"blobs").map(|e| &e.kind),
    ) else {
        return Ok(None);
    };
    let index = read_blob(store, blob, *size, MAX_MANIFEST_BYTES)?;
    let Ok(index) = serde_json::from_slice::<IndexJson>(&index) else {
        return Ok(None);
    };
    let mut blobs = HashMap::new();
    for alg_entry in store.tree(blobs_tree)?.entries {
        let (EntryKind::Dir { tree }, Some(alg)) = (
            &alg_entry.kind,
            std::str::from_utf8(&alg_entry.name)
                .ok()
                .and_then(Alg::from_name),
        ) else {
            continue;
        };
        for f in store.tree(tree)?.entries {
            if let (EntryKind::File { size, blob }, Some(d)) = (
                &f.kind,
                std::str::from_utf8(&f.name)
                    .ok()
                    .and_then(|h| OciDigest::from_parts(alg, h)),
            ) {
                blobs.insert(d, (*size, *blob));
            }
        }
    }
    Ok(Some(Layout {
        blobs,
        entries: index.manifests,
    }))
}

/// A layout to write: its trees, root and totals.
pub(crate) struct NewLayout {
    pub root: Id,
    pub trees: Vec<(Id, Vec<u8>)>,
    /// Bytes of regular-file content, as the key record counts them.
    pub size: u64,
    /// Regular files.
    pub files: u64,
}

fn file(name: &str, size: u64, blob: Id) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        meta: Meta {
            mode: FILE_MODE,
            ..Meta::default()
        },
        kind: EntryKind::File { size, blob },
    }
}

fn dir(name: &str, trees: &mut Vec<(Id, Vec<u8>)>, entries: Vec<Entry>) -> Entry {
    let (id, bytes) = Tree { entries }
        .encode_with_id()
        .expect("layout names are valid entry names");
    trees.push((id, bytes));
    Entry {
        name: name.as_bytes().to_vec(),
        meta: Meta {
            mode: DIR_MODE,
            ..Meta::default()
        },
        kind: EntryKind::Dir { tree: id },
    }
}

/// The trees of a layout holding `blobs` (digest → size, id), `index.json` and `oci-layout`.
pub(crate) fn build(
    blobs: &BTreeMap<OciDigest, (u64, Id)>,
    index_json: (u64, Id),
    oci_layout: (u64, Id),
) -> NewLayout {
    let mut trees = Vec::new();
    let mut algs = Vec::new();
    for alg in [Alg::Sha256, Alg::Sha512] {
        let entries: Vec<Entry> = blobs
            .iter()
            .filter(|(d, _)| d.alg == alg)
            .map(|(d, (size, id))| file(&d.hex, *size, *id))
            .collect();
        if !entries.is_empty() {
            algs.push(dir(alg.name(), &mut trees, entries));
        }
    }
    let blobs_dir = dir("blobs", &mut trees, algs);
    let (root, bytes) = Tree {
        entries: vec![
            blobs_dir,
            file("index.json", index_json.0, index_json.1),
            file("oci-layout", oci_layout.0, oci_layout.1),
        ],
    }
    .encode_with_id()
    .expect("layout names are valid entry names");
    trees.push((root, bytes));
    NewLayout {
        root,
        trees,
        size: blobs.values().map(|(s, _)| s).sum::<u64>() + index_json.0 + oci_layout.0,
        files: blobs.len() as u64 + 2,
    }
}

/// `index.json` for one manifest: compact, keys in a fixed order, the tag (if any) as the
/// `org.opencontainers.image.ref.name` annotation, as `skopeo copy … oci:DIR:TAG` writes it.
pub(crate) fn index_json(desc: &Descriptor, tag: Option<&str>) -> Vec<u8> {
    let mut d = serde_json::Map::new();
    if let Some(t) = tag {
        d.insert(
            "annotations".into(),
            serde_json::json!({ cairn_oci::REF_NAME: t }),
        );
    }
    if let Some(a) = &desc.artifact_type {
        d.insert("artifactType".into(), a.clone().into());
    }
    d.insert("digest".into(), desc.digest.clone().into());
    d.insert("mediaType".into(), desc.media_type.clone().into());
    d.insert("size".into(), desc.size.into());
    let v = serde_json::json!({
        "manifests": [serde_json::Value::Object(d)],
        "mediaType": cairn_oci::media::OCI_INDEX,
        "schemaVersion": 2,
    });
    serde_json::to_vec(&v).expect("json values serialize")
}
