//! OCI digest addressing: the `oci_digests` table maps an OCI content digest (`sha256:<hex>` or
//! `sha512:<hex>`) to the blob id holding that content. Rows are written by
//! [`Store::import_oci`] in the same transaction as the blobs they name and the key they serve.
//!
//! A row is a fact about content (those bytes have that digest), so it never becomes wrong; it
//! can only outlive its blob when `gc` deletes the blob. [`Store::blob_for_digest`] therefore
//! answers only for blobs the index still records.

use std::io::Read;

use redb::{ReadableTable, TableDefinition, TableError};

use crate::error::Result;
use crate::id::Id;
use crate::index::BLOBS;
use crate::key::KeyRecord;
use crate::lock::GcLock;
use crate::store::Store;
use crate::transfer::{Import, ImportBlob};

/// OCI digest string → blob id.
pub(crate) const OCI_DIGESTS: TableDefinition<&str, &[u8; 32]> =
    TableDefinition::new("oci_digests");

impl Store {
    /// Writes whatever `reader` yields to a temp file as a blob, whatever it hashes to (the id
    /// is in the returned blob), for a caller that checks the content by other means (an OCI
    /// digest) while it streams. `size_hint` only picks the strategy; `origin` names the source
    /// in errors.
    pub fn stage_content(
        &self,
        reader: impl Read,
        size_hint: u64,
        origin: &str,
    ) -> Result<ImportBlob> {
        let pending = self
            .blobs
            .write_stream(reader, size_hint, std::path::Path::new(origin))?;
        Ok(ImportBlob(pending))
    }

    /// [`Store::import`] that also records `digests` (OCI digest, blob id) in the same
    /// transaction. Each blob named must be in `import` or already recorded; otherwise nothing
    /// is committed.
    pub fn import_oci(
        &self,
        import: Import,
        digests: &[(String, Id)],
        held: &GcLock,
    ) -> Result<Option<KeyRecord>> {
        self.import_with(import, held, |txn| {
            let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
            let mut t = txn.open_table(OCI_DIGESTS).map_err(self.index.db())?;
            for (digest, id) in digests {
                if blobs.get(&id.0).map_err(self.index.db())?.is_none() {
                    return Err(crate::Error::UnknownObject(*id));
                }
                t.insert(digest.as_str(), &id.0).map_err(self.index.db())?;
            }
            Ok(())
        })
    }

    /// The blob holding the content with OCI digest `digest`, if an OCI import recorded it and
    /// the blob is still in the store.
    pub fn blob_for_digest(&self, digest: &str) -> Result<Option<Id>> {
        self.index.read(|txn| {
            let t = match txn.open_table(OCI_DIGESTS) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(self.index.db()(e)),
            };
            let Some(id) = t.get(digest).map_err(self.index.db())? else {
                return Ok(None);
            };
            let id = Id(*id.value());
            let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
            Ok(blobs.get(&id.0).map_err(self.index.db())?.map(|_| id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Key, KeyRecord, Root, StoreOptions, Tree};

    #[test]
    fn digests_commit_with_the_key_and_answer_only_for_present_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.blob_for_digest("sha256:00").unwrap(), None);
        let lock = store.lock_shared().unwrap();
        let blob = store.stage_content(&b"hello"[..], 5, "mem").unwrap();
        let id = blob.0.blob.id;
        assert_eq!(id, Id::of(b"hello"));
        let tree = Tree {
            entries: vec![crate::Entry {
                name: b"f".to_vec(),
                meta: crate::Meta {
                    mode: 0o644,
                    ..Default::default()
                },
                kind: crate::EntryKind::File { size: 5, blob: id },
            }],
        };
        let (tid, bytes) = tree.encode_with_id().unwrap();
        let rec = KeyRecord {
            key: Key::new("img").unwrap(),
            root: Root::Tree { id: tid },
            created: 0,
            size: 5,
            files: 1,
            labels: Default::default(),
            attachments: Default::default(),
            signatures: Vec::new(),
        };
        let digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        // A digest naming a blob that is neither staged nor present: nothing commits.
        let bad = Import {
            blobs: Vec::new(),
            trees: vec![(tid, bytes.clone())],
            bind: Some(rec.clone()),
        };
        assert!(
            store
                .import_oci(bad, &[(digest.into(), Id::of(b"x"))], &lock)
                .is_err()
        );
        assert!(store.keys("").unwrap().is_empty());
        let ok = Import {
            blobs: vec![blob],
            trees: vec![(tid, bytes)],
            bind: Some(rec),
        };
        store
            .import_oci(ok, &[(digest.into(), id)], &lock)
            .unwrap()
            .unwrap();
        assert_eq!(store.blob_for_digest(digest).unwrap(), Some(id));
        assert_eq!(store.blob_for_digest("sha256:ff").unwrap(), None);
        drop(lock);
        store.remove_key(&Key::new("img").unwrap()).unwrap();
        store.gc(false).unwrap();
        assert_eq!(store.blob_for_digest(digest).unwrap(), None);
    }
}
