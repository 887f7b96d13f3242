//! Image layers decomposed into trees: the `oci_layers` table maps the blob id of a container
//! image layer (a tar, as stored: compressed or not) to a tree holding the files that layer's
//! tar stream lists, with their content stored as ordinary blobs.
//!
//! The tree is a cache derived from the layer blob, made on a layer's first extraction so that
//! later extractions, listings and `--path` reads never decompress the layer again, and so that
//! files shared by many layers or images are stored once. A layer tree keeps the layer's own
//! view: whiteout files (`.wh.NAME`, `.wh..wh..opq`) are ordinary entries, and a hardlink's
//! target is a path that may be in a lower layer; merging layers (in `cairn-oci`) interprets
//! both. Folders the tar never named (made only to hold an entry below them) are listed in the
//! row, since merging must not let them override a lower layer's folder.
//!
//! gc keeps a layer tree exactly as long as its layer blob is reachable from a key, and drops the
//! row with the blob. Rows are written in their own transaction after the tree and blobs they
//! name have committed, so a crash leaves at worst unreferenced trees (garbage), never a row
//! naming an absent tree.

use std::io::Read;
use std::path::Path;

use redb::{ReadableTable, TableDefinition, TableError};

use crate::archive::{self, LayerRules};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::TREES;
use crate::ingest::{self, IngestOptions, Node};
use crate::key::Root;
use crate::lock::GcLock;
use crate::store::Store;

/// Layer blob id → encoded [`LayerTree`] (format in `docs/format.md`).
pub(crate) const OCI_LAYERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("oci_layers");

/// zstd level of a decomposed layer's files: the cache is written on an image's first
/// extraction, on its critical path, and read back at once, so speed matters more than size.
pub const LAYER_COMPRESSION_LEVEL: i32 = 1;

/// Version byte that starts every `oci_layers` row. Version 1 rows (no uncompressed digest)
/// read as a cache miss: the layer is decomposed again, and its digest checked then.
const ROW_VERSION: u8 = 2;
/// Bytes of a row before its implicit-folder paths: version, tree id, uncompressed sha256.
const ROW_HEAD: usize = 1 + 32 + 32;

/// A layer's decomposed form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerTree {
    /// The tree of the layer's entries.
    pub tree: Id,
    /// The sha256 of the layer's uncompressed tar stream (its OCI `diff_id`), as checked while
    /// it was decomposed: a later image naming the same layer blob is checked against it.
    pub uncompressed_sha256: [u8; 32],
    /// Folders no entry of the layer named, as `/`-joined paths from the layer's root (the empty
    /// path is the root itself), sorted.
    pub implicit: Vec<Vec<u8>>,
}

impl LayerTree {
    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(ROW_HEAD + self.implicit.iter().map(|p| p.len() + 1).sum::<usize>());
        out.push(ROW_VERSION);
        out.extend_from_slice(&self.tree.0);
        out.extend_from_slice(&self.uncompressed_sha256);
        for p in &self.implicit {
            out.extend_from_slice(p);
            out.push(0);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<LayerTree> {
        if bytes.len() < ROW_HEAD || bytes[0] != ROW_VERSION {
            return None;
        }
        let tree = Id(bytes[1..33].try_into().ok()?);
        let uncompressed_sha256 = bytes[33..ROW_HEAD].try_into().ok()?;
        let rest = &bytes[ROW_HEAD..];
        if !rest.is_empty() && rest.last() != Some(&0) {
            return None;
        }
        let implicit = if rest.is_empty() {
            Vec::new()
        } else {
            rest[..rest.len() - 1]
                .split(|&b| b == 0)
                .map(<[u8]>::to_vec)
                .collect()
        };
        Some(LayerTree {
            tree,
            uncompressed_sha256,
            implicit,
        })
    }
}

/// Reads the row for `layer`, if there is one whose tree the index still holds.
pub(crate) fn read_row(
    txn: &redb::ReadTransaction,
    store: &Store,
    layer: &Id,
) -> Result<Option<LayerTree>> {
    let t = match txn.open_table(OCI_LAYERS) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(store.index.db()(e)),
    };
    let Some(v) = t.get(&layer.0).map_err(store.index.db())? else {
        return Ok(None);
    };
    let Some(row) = LayerTree::decode(v.value()) else {
        // An unreadable row is a cache miss: the layer is decomposed again and the row replaced.
        return Ok(None);
    };
    let trees = txn.open_table(TREES).map_err(store.index.db())?;
    Ok(trees
        .get(&row.tree.0)
        .map_err(store.index.db())?
        .map(|_| row))
}

/// Every row as (layer blob, tree); unreadable rows name no tree (gc drops them).
pub(crate) fn all_rows(txn: &redb::ReadTransaction, store: &Store) -> Result<Vec<(Id, Id)>> {
    let t = match txn.open_table(OCI_LAYERS) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(store.index.db()(e)),
    };
    let mut out = Vec::new();
    for item in t.iter().map_err(store.index.db())? {
        let (k, v) = item.map_err(store.index.db())?;
        let layer = Id(*k.value());
        // An unreadable row keeps nothing alive; listing it with its own id as the tree makes
        // gc drop it unless that blob is live, which is harmless.
        let tree = LayerTree::decode(v.value()).map_or(layer, |r| r.tree);
        out.push((layer, tree));
    }
    Ok(out)
}

/// Deletes the rows of `layers` (gc, for layer blobs it deletes).
pub(crate) fn remove_rows(
    txn: &redb::WriteTransaction,
    store: &Store,
    layers: &[Id],
) -> Result<()> {
    if layers.is_empty() {
        return Ok(());
    }
    let mut t = txn.open_table(OCI_LAYERS).map_err(store.index.db())?;
    for l in layers {
        t.remove(&l.0).map_err(store.index.db())?;
    }
    Ok(())
}

impl Store {
    /// The decomposed form of the layer blob `layer`, if it was made before.
    pub fn layer_tree(&self, layer: &Id) -> Result<Option<LayerTree>> {
        self.index.read(|txn| read_row(txn, self, layer))
    }

    /// Decomposes a layer: reads the tar stream `tar` (already decompressed, at most
    /// `max_bytes` of it), stores its files' contents as blobs and its folders as trees, and
    /// records the result for the layer blob `layer`, with `uncompressed_sha256`, the digest
    /// the caller checks the stream against (a mismatch must make `tar` fail, at the latest
    /// when it ends, so that nothing is recorded). `origin` names the layer in errors. The
    /// caller holds the gc lock (shared) from before it read the layer until it is done with the
    /// tree.
    pub fn decompose_layer(
        &self,
        layer: &Id,
        tar: impl Read,
        uncompressed_sha256: [u8; 32],
        origin: &Path,
        max_bytes: u64,
        _held: &GcLock,
    ) -> Result<LayerTree> {
        let opts = IngestOptions {
            preserve: true,
            epoch: 0,
        };
        let rules = LayerRules {
            max_bytes,
            level: LAYER_COMPRESSION_LEVEL,
        };
        let parsed = archive::ingest_reader(self, Box::new(tar), origin, &opts, Some(&rules))?;
        let Root::Tree { id } = parsed.built.root else {
            unreachable!("a tar stream always builds a folder");
        };
        self.commit(&parsed.built, &parsed.stored, None)?;
        let row = LayerTree {
            tree: id,
            uncompressed_sha256,
            implicit: parsed.implicit,
        };
        self.index.write(|txn| {
            let mut t = txn.open_table(OCI_LAYERS).map_err(self.index.db())?;
            t.insert(&layer.0, row.encode().as_slice())
                .map_err(self.index.db())?;
            Ok(())
        })?;
        Ok(row)
    }

    /// Builds the trees of `node`, whose files must all be [`ingest::Content::Stored`] in this
    /// store already, records them, and returns the root. For a caller that assembles a tree
    /// from stored objects (merged image layers), holding the gc lock so those objects stay.
    pub fn commit_node(&self, node: &Node, origin: &Path, _held: &GcLock) -> Result<Root> {
        let built = ingest::build(node, &[], true, origin)?;
        let mut blobs = Vec::new();
        collect_blobs(node, &mut blobs).map_err(|reason| Error::Unsupported {
            path: origin.to_path_buf(),
            reason,
        })?;
        blobs.sort();
        blobs.dedup();
        let present = self.present_blobs(&blobs)?;
        if let Some(missing) = blobs.iter().find(|b| !present.contains(b)) {
            return Err(Error::UnknownObject(*missing));
        }
        self.commit(&built, &[], None)?;
        Ok(built.root)
    }
}

fn collect_blobs(node: &Node, out: &mut Vec<Id>) -> std::result::Result<(), String> {
    match node {
        Node::File {
            content: ingest::Content::Stored { id, .. },
            ..
        } => out.push(*id),
        Node::File { .. } => return Err("a file whose content is not stored".into()),
        Node::Other { .. } => {}
        Node::Dir { children, .. } => {
            for (_, c) in children {
                collect_blobs(c, out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_reject_garbage() {
        let row = LayerTree {
            tree: Id::of(b"t"),
            uncompressed_sha256: [7; 32],
            implicit: vec![Vec::new(), b"a/b".to_vec(), b"c".to_vec()],
        };
        assert_eq!(LayerTree::decode(&row.encode()), Some(row));
        let empty = LayerTree {
            tree: Id::of(b"t"),
            uncompressed_sha256: [0; 32],
            implicit: Vec::new(),
        };
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&Id::of(b"t").0);
        assert_eq!(
            LayerTree::decode(&v1),
            None,
            "version 1 rows are a cache miss"
        );
        assert_eq!(LayerTree::decode(&empty.encode()), Some(empty.clone()));
        let mut bad = empty.encode();
        bad[0] = 9;
        assert_eq!(LayerTree::decode(&bad), None);
        let mut unterminated = empty.encode();
        unterminated.push(b'x');
        assert_eq!(LayerTree::decode(&unterminated), None);
    }
}
