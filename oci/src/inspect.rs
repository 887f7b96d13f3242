//! `oci inspect`: the index, manifests (with platforms), configs and layers of a stored image.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use cairn_store::{EntryKind, Id, Root, Store};
use serde::Serialize;

use crate::digest::{Alg, OciDigest, Tap};
use crate::error::{OciError, Result};
use crate::walk::{self, Blobs, Role, Visit};

/// A stored image, as `index.json` describes it.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The layout tree.
    pub root: Root,
    /// `index.json`'s own media type, if it declares one.
    #[serde(rename = "mediaType")]
    pub media_type: Option<String>,
    /// `index.json`'s annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its entries, each with what it reaches.
    pub manifests: Vec<Node>,
}

/// One descriptor and what its blob reaches.
#[derive(Debug, Serialize)]
pub struct Node {
    /// What it is to its parent.
    pub role: Role,
    /// Its digest.
    pub digest: String,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// `os/architecture[/variant]`, when the descriptor names a platform.
    pub platform: Option<String>,
    /// The artifact type, when given.
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The descriptor's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// What its blob references (a manifest's config and layers, an index's manifests),
    /// listed at its first occurrence only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

struct StoredBlobs<'a> {
    store: &'a Store,
    root: Root,
    target: String,
    files: HashMap<OciDigest, (u64, Id)>,
}

impl Blobs for StoredBlobs<'_> {
    fn size(&self, digest: &OciDigest) -> Option<u64> {
        self.files.get(digest).map(|f| f.0)
    }

    fn json(&self, digest: &OciDigest) -> Result<Option<Vec<u8>>> {
        let Some((size, _)) = self.files.get(digest) else {
            return Ok(None);
        };
        if *size as usize > crate::MAX_JSON {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.store.cat(&self.root, Some(&digest.path()), &mut out)?;
        let mut tap = Tap::new(&out[..], digest.alg == Alg::Sha512);
        std::io::copy(&mut tap, &mut std::io::sink()).expect("reading memory");
        if tap.digest(digest.alg) != *digest {
            return Err(OciError::Blob {
                src: PathBuf::from(&self.target),
                digest: digest.to_string(),
                reason: format!("stored content hashes to {}", tap.digest(digest.alg)),
            });
        }
        Ok(Some(out))
    }
}

/// Describes the image `target` (a key or id).
pub fn inspect(store: &Store, target: &str) -> Result<Inspection> {
    let root = crate::check_layout(store, target)?;
    let Root::Tree { id } = root else {
        unreachable!("check_layout accepts only trees")
    };
    let top = store.tree(&id)?;
    let mut files = HashMap::new();
    if let Some(EntryKind::Dir { tree }) = top.get(b"blobs").map(|e| &e.kind) {
        for alg_entry in store.tree(tree)?.entries {
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
                    files.insert(d, (*size, *blob));
                }
            }
        }
    }
    let blobs = StoredBlobs {
        store,
        root,
        target: target.to_string(),
        files,
    };
    let mut index_bytes = Vec::new();
    store.cat(&root, Some("index.json"), &mut index_bytes)?;
    let src = PathBuf::from(target);
    let index = walk::parse_index(&index_bytes, &src)?;
    let visits = walk::walk(&index, &blobs, &src)?;
    Ok(Inspection {
        root,
        media_type: index.media_type().as_ref().map(|m| m.to_string()),
        annotations: sorted(index.annotations().as_ref()),
        manifests: nest(visits),
    })
}

fn sorted(a: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    a.map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn node(v: Visit) -> Node {
    let d = v.desc;
    Node {
        role: v.role,
        digest: d.digest().to_string(),
        media_type: d.media_type().to_string(),
        size: d.size(),
        platform: d.platform().as_ref().map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        }),
        artifact_type: d.artifact_type().as_ref().map(|m| m.to_string()),
        annotations: sorted(d.annotations().as_ref()),
        children: Vec::new(),
    }
}

/// Nests depth-first visits into a tree.
fn nest(visits: Vec<Visit>) -> Vec<Node> {
    let mut top: Vec<Node> = Vec::new();
    let mut open: Vec<Node> = Vec::new();
    let close = |open: &mut Vec<Node>, top: &mut Vec<Node>| {
        let n = open.pop().expect("non-empty");
        match open.last_mut() {
            Some(p) => p.children.push(n),
            None => top.push(n),
        }
    };
    for v in visits {
        while open.len() > v.depth {
            close(&mut open, &mut top);
        }
        open.push(node(v));
    }
    while !open.is_empty() {
        close(&mut open, &mut top);
    }
    top
}
