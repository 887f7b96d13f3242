//! `oci import`: a source → checked blobs → a layout tree → one commit that records the blobs,
//! the trees, the digest rows and the key together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cairn_store::{
    Entry, EntryKind, Id, Import, Key, KeyRecord, Meta, Root, StagedBlob, Store, Tree,
};

use crate::digest::{Alg, OciDigest};
use crate::error::{OciError, Result};
use crate::source::{self, Collected};
use crate::walk::{self, Blobs};
use crate::{LABEL_OCI, LABEL_SOURCE, media};

/// What an image was imported from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// An OCI image layout folder.
    Layout,
    /// An OCI image layout as a tar archive (plain, gzip or zstd).
    OciArchive,
    /// A `docker save` archive.
    DockerArchive,
    /// skopeo's `dir:` layout.
    Dir,
}

impl SourceKind {
    /// The value of the `cairn.oci.source` label.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Layout => "layout",
            SourceKind::OciArchive => "oci-archive",
            SourceKind::DockerArchive => "docker-archive",
            SourceKind::Dir => "dir",
        }
    }
}

/// A file of the layout to be, staged in the store.
pub(crate) struct Staged {
    pub size: u64,
    pub id: Id,
    pub head: Vec<u8>,
    pub json: Option<Vec<u8>>,
    pub blob: Option<StagedBlob>,
}

/// An image layout whose files are staged: what the tree is built from.
pub(crate) struct Layout {
    pub oci_layout: Staged,
    pub index_json: Staged,
    pub blobs: BTreeMap<OciDigest, Staged>,
    /// Source files left out (not part of the layout), by path.
    pub dropped: Vec<String>,
}

impl Blobs for Layout {
    fn size(&self, digest: &OciDigest) -> Option<u64> {
        self.blobs.get(digest).map(|s| s.size)
    }
    fn json(&self, digest: &OciDigest) -> Result<Option<Vec<u8>>> {
        Ok(self.blobs.get(digest).and_then(|s| s.json.clone()))
    }
}

/// What an import bound.
#[derive(Debug)]
pub struct Imported {
    /// The new record.
    pub record: KeyRecord,
    /// The kind of source.
    pub source: SourceKind,
    /// Blobs in the stored layout.
    pub blobs: usize,
    /// Indexes and manifests among them.
    pub manifests: usize,
    /// Source files left out: blobs nothing references (by digest) and files outside the
    /// layout (by path).
    pub dropped: Vec<String>,
}

fn from_oci(c: Collected) -> Result<Layout> {
    if let Some(link) = c.aliases.keys().next() {
        return Err(c.entry_err(
            link,
            "a link member in an OCI archive (its files are the layout's, all regular)",
        ));
    }
    let mut members = c.members;
    let src = c.src;
    let take = |members: &mut BTreeMap<String, source::Member>, name: &str| {
        members.remove(name).ok_or_else(|| OciError::Source {
            src: src.clone(),
            entry: None,
            reason: format!("not an OCI image layout: no {name}"),
        })
    };
    let staged = |m: source::Member| Staged {
        size: m.size,
        id: m.id,
        head: m.head,
        json: m.json,
        blob: Some(m.blob),
    };
    let oci_layout = staged(take(&mut members, "oci-layout")?);
    let index_json = staged(take(&mut members, "index.json")?);
    let mut blobs = BTreeMap::new();
    let mut dropped = Vec::new();
    for (path, m) in members {
        if source::blob_path(&path).ok().flatten().is_some() {
            blobs.insert(m.digest.clone(), staged(m));
        } else if path == "manifest.json" || path == "repositories" {
            // Docker ≥ 25 writes these beside the layout for older tools; the layout has it all.
            dropped.push(path);
        } else {
            return Err(OciError::Source {
                src: src.clone(),
                entry: Some(path),
                reason: "not part of an OCI image layout".into(),
            });
        }
    }
    Ok(Layout {
        oci_layout,
        index_json,
        blobs,
        dropped,
    })
}

const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

fn file(name: &str, s: &Staged) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        meta: Meta {
            mode: FILE_MODE,
            ..Meta::default()
        },
        kind: EntryKind::File {
            size: s.size,
            blob: s.id,
        },
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

/// Imports the image at `src` (a layout folder, an OCI archive, a docker-save archive or a
/// skopeo `dir:` layout) and binds `name`, or the index's single
/// `org.opencontainers.image.ref.name`, to its layout tree. With `image`, only the index entries
/// of that ref name are kept (a docker-archive of several images needs one picked, by `image` or
/// by a `name` that is one of its references). Nothing is bound unless every blob matches its
/// digest and every descriptor's size.
pub fn import(
    store: &Store,
    src: &Path,
    name: Option<&Key>,
    image: Option<&str>,
) -> Result<Imported> {
    let session = store.import()?;
    let c = source::collect(&session, src)?;
    let (kind, mut layout) = if c.members.contains_key("index.json") {
        let kind = if c.is_dir {
            SourceKind::Layout
        } else {
            SourceKind::OciArchive
        };
        (kind, from_oci(c)?)
    } else if crate::dirlayout::is_dir_layout(&c) {
        (SourceKind::Dir, crate::dirlayout::convert(&session, c)?)
    } else if !c.is_dir && c.members.contains_key("manifest.json") {
        (
            SourceKind::DockerArchive,
            crate::docker::convert(&session, c)?,
        )
    } else {
        return Err(source::not_an_image(
            src,
            "no index.json, nor a docker-save manifest.json",
        ));
    };
    let layout_err = |entry: &str, reason: String| OciError::Source {
        src: src.to_path_buf(),
        entry: Some(entry.into()),
        reason,
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OciLayoutFile {
        image_layout_version: String,
    }
    let v: OciLayoutFile = layout
        .oci_layout
        .json
        .as_deref()
        .ok_or_else(|| layout_err("oci-layout", "not a JSON document".into()))
        .and_then(|b| {
            serde_json::from_slice(b).map_err(|e| layout_err("oci-layout", format!("invalid: {e}")))
        })?;
    if v.image_layout_version != "1.0.0" {
        return Err(layout_err(
            "oci-layout",
            format!("unknown imageLayoutVersion {:?}", v.image_layout_version),
        ));
    }
    crate::pick::pick(&session, &mut layout, kind, src, image, name)?;
    let index_bytes = layout
        .index_json
        .json
        .as_deref()
        .ok_or_else(|| layout_err("index.json", "not a JSON document".into()))?;
    let index = walk::parse_index(index_bytes, src)?;
    let visits = walk::walk(&index, &layout, src)?;

    let key = match name {
        Some(k) => k.clone(),
        None => {
            let names = walk::ref_names(&index);
            match names.as_slice() {
                [one] => Key::new(one).map_err(|e| OciError::Image {
                    src: src.to_path_buf(),
                    reason: format!(
                        "the image's ref name {one:?} is not a valid key ({e}); give --name"
                    ),
                })?,
                [] => {
                    return Err(OciError::Image {
                        src: src.to_path_buf(),
                        reason: "index.json names no image (no org.opencontainers.image.ref.name \
                                 annotation); give --name"
                            .into(),
                    });
                }
                many => {
                    return Err(OciError::Image {
                        src: src.to_path_buf(),
                        reason: format!(
                            "index.json names {} images ({}); give --name",
                            many.len(),
                            many.join(", ")
                        ),
                    });
                }
            }
        }
    };

    let reachable: BTreeSet<OciDigest> = visits
        .iter()
        .map(|v| OciDigest::parse(v.desc.digest().as_ref()).expect("checked by the walk"))
        .collect();
    let manifests = visits
        .iter()
        .filter(|v| {
            v.expanded
                && [
                    media::OCI_INDEX,
                    media::OCI_MANIFEST,
                    media::OCI_ARTIFACT,
                    media::DOCKER_LIST,
                    media::DOCKER_MANIFEST,
                ]
                .contains(&v.desc.media_type().to_string().as_str())
        })
        .count();
    let all = std::mem::take(&mut layout.blobs);
    let mut kept = BTreeMap::new();
    for (d, s) in all {
        if reachable.contains(&d) {
            kept.insert(d, s);
        } else {
            layout.dropped.push(d.to_string()); // its temp file goes with it
        }
    }

    // The tree: oci-layout, index.json, blobs/<alg>/<hex>; modes 0644/0755, owner 0, mtime 0,
    // so the root depends on the layout's bytes alone.
    let mut trees = Vec::new();
    let mut size = layout.oci_layout.size + layout.index_json.size;
    let mut algs = Vec::new();
    for alg in [Alg::Sha256, Alg::Sha512] {
        let entries: Vec<Entry> = kept
            .iter()
            .filter(|(d, _)| d.alg == alg)
            .map(|(d, s)| file(&d.hex, s))
            .collect();
        if !entries.is_empty() {
            algs.push(dir(alg.name(), &mut trees, entries));
        }
    }
    let blobs_dir = dir("blobs", &mut trees, algs);
    let root_entries = vec![
        blobs_dir,
        file("index.json", &layout.index_json),
        file("oci-layout", &layout.oci_layout),
    ];
    let (root_id, root_bytes) = Tree {
        entries: root_entries,
    }
    .encode_with_id()
    .expect("layout names are valid entry names");
    trees.push((root_id, root_bytes));

    let mut import = Import::default();
    let files = kept.len() as u64 + 2;
    for (d, s) in kept.iter_mut() {
        size += s.size;
        // Recorded as an alias of its blob (dropped with it), so the image's blobs can be
        // found by OCI digest without opening a layout.
        import.alias(d.to_string(), s.id);
        import.blobs.extend(s.blob.take());
    }
    import.blobs.extend(layout.oci_layout.blob.take());
    import.blobs.extend(layout.index_json.blob.take());
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_OCI.to_string(), "1".to_string());
    labels.insert(LABEL_SOURCE.to_string(), kind.name().to_string());
    let record = KeyRecord {
        key,
        root: Root::Tree { id: root_id },
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        size,
        files,
        labels,
        attachments: BTreeMap::new(),
        signatures: Vec::new(),
    };
    import.trees = trees;
    import.bind = Some(record);
    let record = session.commit(import)?.expect("a record was given");
    Ok(Imported {
        record,
        source: kind,
        blobs: kept.len(),
        manifests,
        dropped: layout.dropped,
    })
}
