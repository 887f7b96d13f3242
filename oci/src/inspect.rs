//! `oci inspect`: the index, manifests (with platforms), configs and layers of a stored image.

use std::collections::{BTreeMap, HashMap};

use cairn_store::{Root, Store};
use serde::Serialize;

use crate::error::Result;
use crate::image::StoredImage;
use crate::walk::{Role, Visit};

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

/// Describes the image `target` (a key or id).
pub fn inspect(store: &Store, target: &str) -> Result<Inspection> {
    let session = store.read()?;
    let blobs = StoredImage::open(&session, target)?;
    let root = blobs.root;
    let (index, visits) = blobs.walk()?;
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
