//! A stored image: its layout tree, the blobs under `blobs/<alg>/<hex>` by OCI digest, and its
//! JSON documents read back verified (blake3 by the store, then the OCI digest here).

use std::collections::HashMap;
use std::path::PathBuf;

use cairn_store::{EntryKind, Id, ReadSession, Root};

use crate::digest::{Alg, OciDigest, Tap};
use crate::error::{OciError, Result};
use crate::walk::{self, Blobs, Visit};

/// An image in the store, opened by key or id.
pub(crate) struct StoredImage<'a> {
    /// The session the image was resolved in (it keeps the image's objects from gc).
    pub session: &'a ReadSession,
    /// The layout tree.
    pub root: Root,
    /// The key or id given, for errors.
    pub target: String,
    /// Every blob of the layout: digest → (size, blob id).
    files: HashMap<OciDigest, (u64, Id)>,
}

impl<'a> StoredImage<'a> {
    /// Opens `target` (a key or id), which must name an OCI layout tree.
    pub fn open(session: &'a ReadSession, target: &str) -> Result<StoredImage<'a>> {
        let store = session;
        let root = crate::export::check_layout(session, target)?;
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
        Ok(StoredImage {
            session,
            root,
            target: target.to_string(),
            files,
        })
    }

    /// The target as a path, for the `src` of errors.
    pub fn src(&self) -> PathBuf {
        PathBuf::from(&self.target)
    }

    /// The (size, blob id) of the blob with this digest.
    pub fn blob(&self, digest: &OciDigest) -> Option<(u64, Id)> {
        self.files.get(digest).copied()
    }

    /// Parses `index.json` and walks everything it reaches.
    pub fn walk(&self) -> Result<(oci_spec::image::ImageIndex, Vec<Visit>)> {
        let mut index_bytes = Vec::new();
        self.session
            .cat(&self.root, Some("index.json"), &mut index_bytes)?;
        let src = self.src();
        let index = walk::parse_index(&index_bytes, &src)?;
        let visits = walk::walk(&index, self, &src)?;
        Ok((index, visits))
    }
}

impl Blobs for StoredImage<'_> {
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
        self.session
            .cat(&self.root, Some(&digest.path()), &mut out)?;
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
