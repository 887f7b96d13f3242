//! `oci extract` and `oci ls`: an image's root filesystem, merged from its layers, written to a
//! folder or listed. Layers are decomposed into the store on first use (in parallel, see
//! `layer`), merged in memory (`merge`), and the result is recorded as an ordinary cairn tree
//! and written by the store's materializer, which creates everything relative to a handle on
//! DEST, never follows a symlink, and checks every file's content against its id.

use std::path::Path;

use cairn_store::ingest::{Content, Node};
use cairn_store::{
    EntryKind, ImportSession, LinkMode, MaterializeOptions, MaterializeStats, Progress, Root, Store,
};
use serde::Serialize;

use crate::error::Result;
use crate::image::StoredImage;
use crate::merge::{self, Merger};
use crate::platform::{self, Chosen, Platform};

/// Default limit on one layer's decompressed size: 32 GiB. A layer that expands past it is
/// refused as a decompression bomb.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 32 << 30;

/// What to extract or list.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// The platform to pick from a multi-platform image; the host's when `None`.
    pub platform: Option<Platform>,
    /// Paths of the merged filesystem to keep (files or subtrees); everything when empty.
    pub paths: Vec<String>,
    /// Largest decompressed size of one layer.
    pub max_layer_bytes: u64,
    /// Threads that decompose layers.
    pub jobs: usize,
    /// How `extract` makes regular files (see [`LinkMode`]).
    pub link: LinkMode,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            platform: None,
            paths: Vec::new(),
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            link: LinkMode::Copy,
        }
    }
}

/// The image a filesystem came from.
#[derive(Clone, Debug, Serialize)]
pub struct Source {
    /// The manifest's digest.
    pub manifest: String,
    /// Its platform.
    pub platform: String,
    /// Its layer digests, lowest first.
    pub layers: Vec<String>,
}

/// What `extract` did.
#[derive(Clone, Debug, Serialize)]
pub struct Extracted {
    /// The image.
    #[serde(flatten)]
    pub source: Source,
    /// Layers decomposed by this run (the others were decomposed before and reused).
    pub layers_unpacked: usize,
    /// The tree written (a cairn tree of the merged filesystem, or of the selected paths).
    pub root: Root,
    /// What was written.
    pub stats: MaterializeStats,
}

/// One entry of a merged filesystem, as `oci ls` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ListEntry {
    /// Path from the root, `/`-separated, without a leading `/` (invalid UTF-8 shown lossily).
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block` or `fifo`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Content size of files and hardlinks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// BLAKE3 id of a file's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Symlink target, or the path a hardlink shares its file with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Device numbers (major, minor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<(u32, u32)>,
}

/// Chooses the manifest, decomposes its layers, and merges them (restricted to `opts.paths`).
fn merged(
    image: &StoredImage,
    opts: &ExtractOptions,
    session: &ImportSession,
    progress: &dyn Progress,
) -> Result<(Chosen, Node, usize)> {
    let want = opts.platform.clone().unwrap_or_else(Platform::host);
    let paths = opts
        .paths
        .iter()
        .map(|p| merge::split_path(p))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|reason| crate::OciError::Image {
            src: image.src(),
            reason,
        })?;
    let chosen = platform::choose(image, &want)?;
    let (layers, unpacked) = crate::layer::decompose_all(
        image,
        &chosen.layers,
        opts.max_layer_bytes,
        opts.jobs,
        session,
        progress,
    )?;
    let mut root = merge::empty_root();
    let mut merger = Merger::new();
    for (n, (lt, lref)) in layers.iter().zip(&chosen.layers).enumerate() {
        let from = crate::layer::origin(image, n, layers.len(), lref);
        let trees = image.session.closure(&[Root::Tree { id: lt.tree }])?;
        merger.apply(&mut root, lt, &trees.trees, &from)?;
    }
    if !paths.is_empty() {
        root = merge::select(&root, &paths, &image.src())?;
    }
    Ok((chosen, root, unpacked))
}

fn source(chosen: &Chosen) -> Source {
    Source {
        manifest: chosen.manifest.to_string(),
        platform: chosen.platform.to_string(),
        layers: chosen.layers.iter().map(|l| l.digest.to_string()).collect(),
    }
}

/// Writes the root filesystem of image `target` (a key or id) into `dest`, which must be absent
/// or empty unless `force` (which first empties it).
pub fn extract(
    store: &Store,
    target: &str,
    dest: &Path,
    force: bool,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<Extracted> {
    // One session from before the key is resolved until DEST is written: no gc can delete what
    // the key names, nor the layer trees this decomposes, in between.
    let session = store.import()?;
    let image = StoredImage::open(session.reader(), target)?;
    let (chosen, node, layers_unpacked) = merged(&image, opts, &session, progress)?;
    let root = session.commit_node(&node, &image.src())?;
    let stats = session.reader().materialize_with(
        &root,
        dest,
        &MaterializeOptions {
            force,
            link: opts.link,
        },
        progress,
    )?;
    Ok(Extracted {
        source: source(&chosen),
        layers_unpacked,
        root,
        stats,
    })
}

/// Lists the merged root filesystem of image `target`, depth first, names in byte order. Layers
/// not yet decomposed are decomposed into the store (nothing is written anywhere else).
pub fn list(
    store: &Store,
    target: &str,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<(Source, Vec<ListEntry>)> {
    let session = store.import()?;
    let image = StoredImage::open(session.reader(), target)?;
    let (chosen, node, _) = merged(&image, opts, &session, progress)?;
    let mut out = Vec::new();
    let mut firsts = std::collections::HashMap::new();
    if let Node::Dir { children, .. } = &node {
        list_dir(children, &mut Vec::new(), &mut firsts, &mut out);
    }
    Ok((source(&chosen), out))
}

fn list_dir(
    children: &[(Vec<u8>, Node)],
    path: &mut Vec<u8>,
    firsts: &mut std::collections::HashMap<u64, String>,
    out: &mut Vec<ListEntry>,
) {
    for (name, node) in children {
        let mark = path.len();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let shown = String::from_utf8_lossy(path).into_owned();
        let meta = match node {
            Node::Dir { meta, .. } | Node::File { meta, .. } | Node::Other { meta, .. } => meta,
        };
        let mut e = ListEntry {
            path: shown.clone(),
            kind: "dir",
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            size: None,
            digest: None,
            target: None,
            device: None,
        };
        match node {
            Node::Dir { children, .. } => {
                out.push(e);
                list_dir(children, path, firsts, out);
            }
            Node::File {
                content,
                link_group,
                ..
            } => {
                let (id, size) = match content {
                    Content::Stored { id, size } => (*id, *size),
                    Content::Path { .. } => unreachable!("merged files are stored"),
                };
                e.kind = "file";
                e.size = Some(size);
                e.digest = Some(id.to_string());
                if let Some(g) = link_group {
                    match firsts.get(g) {
                        Some(first) => {
                            e.kind = "hardlink";
                            e.target = Some(first.clone());
                        }
                        None => {
                            firsts.insert(*g, shown);
                        }
                    }
                }
                out.push(e);
            }
            Node::Other { kind, .. } => {
                e.kind = kind.type_name();
                match kind {
                    EntryKind::Symlink { target } => {
                        e.target = Some(String::from_utf8_lossy(target).into_owned());
                    }
                    EntryKind::CharDevice { major, minor }
                    | EntryKind::BlockDevice { major, minor } => e.device = Some((*major, *minor)),
                    _ => {}
                }
                out.push(e);
            }
        }
        path.truncate(mark);
    }
}
