//! Walking an image from `index.json`: every descriptor must name a present blob of the right
//! size (digests were checked when the blobs streamed in, or are checked on read); indexes and
//! manifests are parsed (strictly, with unknown fields and annotations allowed) and their
//! descriptors followed, whatever the artifact and layer media types.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::OciDigest;
use crate::error::{OciError, Result};
use crate::media;

/// What a descriptor is to the document that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An entry of an index.
    Manifest,
    /// A manifest's config.
    Config,
    /// A manifest's layer.
    Layer,
    /// An artifact manifest's blob.
    Blob,
    /// The manifest an index or manifest refers to (`subject`, the referrers relation).
    Subject,
}

/// One descriptor met in the walk, in depth-first order.
#[derive(Clone, Debug)]
pub(crate) struct Visit {
    pub depth: usize,
    pub role: Role,
    pub desc: Descriptor,
    /// Whether this visit parsed the blob and walked its children (the first visit does).
    pub expanded: bool,
}

/// Where the walk finds blobs.
pub(crate) trait Blobs {
    /// The size of the blob with this digest, if present.
    fn size(&self, digest: &OciDigest) -> Option<u64>;
    /// Its content, if it may be a JSON document of at most [`crate::MAX_JSON`] bytes.
    fn json(&self, digest: &OciDigest) -> Result<Option<Vec<u8>>>;
}

/// An artifact manifest (not in oci-spec): its blobs and subject.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    #[serde(default)]
    blobs: Vec<Descriptor>,
    subject: Option<Descriptor>,
}

/// The `mediaType` a document declares about itself, if any.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SelfType {
    media_type: Option<String>,
}

/// Parses `index.json`.
pub(crate) fn parse_index(bytes: &[u8], src: &Path) -> Result<ImageIndex> {
    let bad = |reason: String| OciError::Source {
        src: src.to_path_buf(),
        entry: Some("index.json".into()),
        reason,
    };
    let index: ImageIndex =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid image index: {e}")))?;
    if index.schema_version() != 2 {
        return Err(bad(format!(
            "schemaVersion {} (want 2)",
            index.schema_version()
        )));
    }
    Ok(index)
}

/// Walks everything `index` reaches. Returns the visits in depth-first order.
pub(crate) fn walk(index: &ImageIndex, blobs: &dyn Blobs, src: &Path) -> Result<Vec<Visit>> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, Role, Descriptor, String)> = Vec::new();
    let top = "index.json".to_string();
    push_children(
        &mut stack,
        0,
        index.manifests(),
        Role::Manifest,
        index.subject().as_ref(),
        &top,
    );
    let mut expanded: HashSet<OciDigest> = HashSet::new();
    while let Some((depth, role, desc, parent)) = stack.pop() {
        let raw = desc.digest().to_string();
        let blob_err = |reason: String| OciError::Blob {
            src: src.to_path_buf(),
            digest: raw.clone(),
            reason,
        };
        let digest = OciDigest::parse(&raw).map_err(|r| blob_err(format!("in {parent}: {r}")))?;
        let size = blobs
            .size(&digest)
            .ok_or_else(|| blob_err(format!("referenced by {parent} but missing")))?;
        if size != desc.size() {
            return Err(blob_err(format!(
                "is {size} bytes but the descriptor in {parent} says {}",
                desc.size()
            )));
        }
        let mt = desc.media_type().to_string();
        let first = expanded.insert(digest.clone());
        out.push(Visit {
            depth,
            role,
            desc: desc.clone(),
            expanded: first,
        });
        if !first {
            continue;
        }
        let kind = if mt == media::OCI_INDEX || mt == media::DOCKER_LIST {
            "image index"
        } else if mt == media::OCI_MANIFEST || mt == media::DOCKER_MANIFEST {
            "image manifest"
        } else if mt == media::OCI_ARTIFACT {
            "artifact manifest"
        } else if media::DOCKER_SCHEMA1.contains(&mt.as_str()) {
            return Err(blob_err(
                "docker schema 1 manifests are not supported".into(),
            ));
        } else {
            continue; // a leaf: config, layer, or any other artifact content
        };
        let bytes = blobs.json(&digest)?.ok_or_else(|| {
            blob_err(format!(
                "{kind} is not a JSON document of at most {} bytes",
                crate::MAX_JSON
            ))
        })?;
        let invalid = |e: serde_json::Error| blob_err(format!("invalid {kind}: {e}"));
        let declared: SelfType = serde_json::from_slice(&bytes).map_err(invalid)?;
        if let Some(d) = declared.media_type
            && d != mt
        {
            return Err(blob_err(format!(
                "declares mediaType {d} but the descriptor in {parent} says {mt}"
            )));
        }
        let here = raw.clone();
        match kind {
            "image index" => {
                let idx: ImageIndex = serde_json::from_slice(&bytes).map_err(invalid)?;
                push_children(
                    &mut stack,
                    depth + 1,
                    idx.manifests(),
                    Role::Manifest,
                    idx.subject().as_ref(),
                    &here,
                );
            }
            "image manifest" => {
                let m: ImageManifest = serde_json::from_slice(&bytes).map_err(invalid)?;
                let mut children = vec![(Role::Config, m.config().clone())];
                children.extend(m.layers().iter().map(|l| (Role::Layer, l.clone())));
                if let Some(s) = m.subject() {
                    children.push((Role::Subject, s.clone()));
                }
                for (role, d) in children.into_iter().rev() {
                    stack.push((depth + 1, role, d, here.clone()));
                }
            }
            _ => {
                let a: ArtifactManifest = serde_json::from_slice(&bytes).map_err(invalid)?;
                push_children(
                    &mut stack,
                    depth + 1,
                    &a.blobs,
                    Role::Blob,
                    a.subject.as_ref(),
                    &here,
                );
            }
        }
    }
    Ok(out)
}

/// Pushes `descs` (and a subject) so that they pop in document order.
fn push_children(
    stack: &mut Vec<(usize, Role, Descriptor, String)>,
    depth: usize,
    descs: &[Descriptor],
    role: Role,
    subject: Option<&Descriptor>,
    parent: &str,
) {
    if let Some(s) = subject {
        stack.push((depth, Role::Subject, s.clone(), parent.to_string()));
    }
    for d in descs.iter().rev() {
        stack.push((depth, role, d.clone(), parent.to_string()));
    }
}

/// The distinct `org.opencontainers.image.ref.name` values of an index's entries.
pub(crate) fn ref_names(index: &ImageIndex) -> Vec<String> {
    let mut names: BTreeMap<String, ()> = BTreeMap::new();
    for d in index.manifests() {
        if let Some(n) = d
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crate::REF_NAME))
        {
            names.insert(n.clone(), ());
        }
    }
    names.into_keys().collect()
}
