//! The store's side of moving objects between stores (used by `cairn-remote`): listing a
//! closure, reading blobs in their stored form, and importing verified objects and a key record
//! in one commit.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use redb::ReadableTable;

use crate::blobs::{Encoding, PendingBlob, SMALL_BLOB_MAX, VerifiedReader};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BLOBS, TREES};
use crate::key::{KeyRecord, Root};
use crate::lock::{GcLock, LockMode};
use crate::store::{Store, decode_checked};
use crate::tree::{EntryKind, Tree};

/// Everything a root reaches: tree encodings (checked against their ids) and blob ids.
#[derive(Debug, Default)]
pub struct ClosureObjects {
    /// (id, canonical encoding) of every tree, parents before children.
    pub trees: Vec<(Id, Vec<u8>)>,
    /// (id, size) of every blob, each once.
    pub blobs: Vec<(Id, u64)>,
}

/// A blob ready to go into the store, already checked against its id by the caller.
#[derive(Debug)]
pub struct ImportBlob(pub PendingBlob);

/// Objects and, optionally, a key record to commit together.
#[derive(Debug, Default)]
pub struct Import {
    /// Blobs (in temp files) to add.
    pub blobs: Vec<ImportBlob>,
    /// Trees to add: (id, canonical encoding); each is re-hashed before it is recorded.
    pub trees: Vec<(Id, Vec<u8>)>,
    /// A record to bind once everything its root reaches is present.
    pub bind: Option<KeyRecord>,
}

impl Store {
    /// Takes the gc lock shared, for a caller (such as a pull) that writes objects over a span
    /// of time and then calls [`Store::import`]: gc cannot run until the lock is dropped.
    pub fn lock_shared(&self) -> Result<GcLock> {
        self.lock(LockMode::Shared)
    }

    /// Lists what `root` reaches.
    pub fn closure_objects(&self, root: &Root) -> Result<ClosureObjects> {
        let mut out = ClosureObjects::default();
        let mut seen_blobs = HashSet::new();
        match root {
            Root::File { id, .. } => {
                let size = self.blob_size(id)?.ok_or(Error::UnknownObject(*id))?;
                out.blobs.push((*id, size));
            }
            Root::Tree { id } => self.index.read(|txn| {
                let trees = txn.open_table(TREES).map_err(self.index.db())?;
                let mut seen = HashSet::new();
                let mut stack = vec![*id];
                while let Some(id) = stack.pop() {
                    if !seen.insert(id) {
                        continue;
                    }
                    let bytes = trees
                        .get(&id.0)
                        .map_err(self.index.db())?
                        .ok_or(Error::UnknownObject(id))?
                        .value()
                        .to_vec();
                    let tree = decode_checked(id, &bytes)?;
                    for e in &tree.entries {
                        match e.kind {
                            EntryKind::Dir { tree } => stack.push(tree),
                            EntryKind::File { size, blob } if seen_blobs.insert(blob) => {
                                out.blobs.push((blob, size));
                            }
                            _ => {}
                        }
                    }
                    out.trees.push((id, bytes));
                }
                Ok(())
            })?,
        }
        Ok(out)
    }

    /// What a record keeps alive: its output's closure and its attachments.
    pub fn record_closure(&self, rec: &KeyRecord) -> Result<ClosureObjects> {
        let mut out = self.closure_objects(&rec.root)?;
        for a in rec.attachments.values() {
            if !out.blobs.iter().any(|(id, _)| *id == a.id) {
                out.blobs.push((a.id, a.size));
            }
        }
        Ok(out)
    }

    /// The recorded size of blob `id`, if the index has it.
    pub fn blob_size(&self, id: &Id) -> Result<Option<u64>> {
        self.index.read(|txn| {
            let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
            Ok(blobs
                .get(&id.0)
                .map_err(self.index.db())?
                .map(|v| v.value().0))
        })
    }

    /// Which of `ids` the index records as trees.
    pub fn present_trees(&self, ids: &[Id]) -> Result<HashSet<Id>> {
        self.index.read(|txn| {
            let trees = txn.open_table(TREES).map_err(self.index.db())?;
            let mut out = HashSet::new();
            for id in ids {
                if trees.get(&id.0).map_err(self.index.db())?.is_some() {
                    out.insert(*id);
                }
            }
            Ok(out)
        })
    }

    /// A small blob (at most [`SMALL_BLOB_MAX`] bytes) in its stored form, verified.
    pub fn read_blob_encoded(&self, id: &Id, size: u64) -> Result<(Encoding, Vec<u8>)> {
        debug_assert!(size <= SMALL_BLOB_MAX);
        Ok(self.blobs.read_encoded(id, size)?)
    }

    /// A reader of any blob's content that checks it against `id` and `size` at the end.
    pub fn open_blob(&self, id: &Id, size: u64) -> Result<VerifiedReader> {
        Ok(self.blobs.open_verified(id, Some(size))?)
    }

    /// Writes a blob whose stored form the caller has checked (see [`Store::import`]).
    pub fn stage_encoded(
        &self,
        id: Id,
        size: u64,
        encoding: Encoding,
        bytes: &[u8],
    ) -> Result<ImportBlob> {
        Ok(ImportBlob(
            self.blobs.write_encoded(id, size, encoding, bytes)?,
        ))
    }

    /// Writes a blob from a stream of its content; fails unless it hashes to `id` and is `size`
    /// bytes long, so nothing unverified is staged.
    pub fn stage_stream(
        &self,
        id: Id,
        size: u64,
        reader: impl Read,
        origin: &str,
    ) -> Result<ImportBlob> {
        let pending = self
            .blobs
            .write_stream(reader, size, std::path::Path::new(origin))?;
        if pending.blob.id != id || pending.blob.size != size {
            return Err(crate::blobs::BlobError::Corrupt {
                id,
                reason: format!(
                    "{origin}: content of {} bytes hashes to {}",
                    pending.blob.size, pending.blob.id
                ),
            }
            .into());
        }
        Ok(ImportBlob(pending))
    }

    /// The file holding blob `id` and its encoding (unverified: callers check what they read).
    pub fn blob_file(&self, id: &Id) -> Result<(std::path::PathBuf, Encoding)> {
        let (_, enc, path) = self.blobs.locate(id)?;
        Ok((path, enc))
    }

    /// A new temp file in the store's temp folder (same filesystem as the blobs).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("incoming-")
            .tempfile_in(self.blobs.tmp())
            .map_err(Error::io(self.blobs.tmp()))
    }

    /// Stages a temp file (from [`Store::temp_file`]) holding blob `id` in the stored form
    /// `encoding`, which the caller has checked against `id` and `size`.
    pub fn stage_file(
        &self,
        id: Id,
        size: u64,
        encoding: Encoding,
        file: tempfile::TempPath,
    ) -> Result<ImportBlob> {
        let stored_size = std::fs::metadata(&file).map_err(Error::io(&file))?.len();
        Ok(ImportBlob(PendingBlob::adopt(
            crate::blobs::StoredBlob {
                id,
                size,
                stored_size,
                encoding,
            },
            file,
        )))
    }

    /// Commits staged blobs, trees and optionally a key record. Blobs the store already has are
    /// dropped (never rewritten); the rest are renamed into place and made durable before the
    /// index transaction. The record is bound only if everything its root reaches is present
    /// afterwards; otherwise nothing of the transaction is committed and the error names the
    /// first missing object. The caller must hold the gc lock (`_held`) from before the first
    /// object was staged.
    pub fn import(&self, import: Import, held: &GcLock) -> Result<Option<KeyRecord>> {
        self.import_with(import, held, |_| Ok(()))
    }

    /// [`Store::import`], running `extra` in the same write transaction before the record is
    /// bound (for rows of other tables that must commit together with the objects).
    pub(crate) fn import_with(
        &self,
        import: Import,
        _held: &GcLock,
        extra: impl FnOnce(&redb::WriteTransaction) -> Result<()>,
    ) -> Result<Option<KeyRecord>> {
        let Import { blobs, trees, bind } = import;
        let ids: Vec<Id> = blobs.iter().map(|b| b.0.blob.id).collect();
        let present = self.present_blobs(&ids)?;
        let mut stored = Vec::new();
        let mut staged: HashMap<Id, ()> = HashMap::new();
        for ImportBlob(p) in blobs {
            if present.contains(&p.blob.id) || staged.insert(p.blob.id, ()).is_some() {
                continue; // dropped: its temp file is deleted
            }
            stored.push(p.persist(&self.blobs)?);
        }
        if !stored.is_empty() {
            self.blobs.sync().map_err(Error::io(self.blobs.root()))?;
        }
        let mut checked = Vec::with_capacity(trees.len());
        for (id, bytes) in trees {
            decode_checked(id, &bytes)?;
            checked.push((id, bytes));
        }
        self.index.write(|txn| {
            {
                let mut t = txn.open_table(BLOBS).map_err(self.index.db())?;
                for s in &stored {
                    t.insert(&s.id.0, (s.size, s.stored_size, s.encoding.code()))
                        .map_err(self.index.db())?;
                }
                let mut t = txn.open_table(TREES).map_err(self.index.db())?;
                for (id, bytes) in &checked {
                    if t.get(&id.0).map_err(self.index.db())?.is_none() {
                        t.insert(&id.0, bytes.as_slice()).map_err(self.index.db())?;
                    }
                }
            }
            extra(txn)?;
            let Some(rec) = bind else {
                return Ok(None);
            };
            for root in rec.roots() {
                self.check_closure_in(txn, &root)?;
            }
            Ok(Some(self.bind_record(txn, rec)?))
        })
    }

    /// Fails with the first object `root` reaches that the (uncommitted) index lacks.
    fn check_closure_in(&self, txn: &redb::WriteTransaction, root: &Root) -> Result<()> {
        let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
        let trees = txn.open_table(TREES).map_err(self.index.db())?;
        let mut stack = match root {
            Root::File { id, .. } => {
                return match blobs.get(&id.0).map_err(self.index.db())? {
                    Some(_) => Ok(()),
                    None => Err(Error::UnknownObject(*id)),
                };
            }
            Root::Tree { id } => vec![*id],
        };
        let mut seen = HashSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let tree: Tree = {
                let bytes = trees
                    .get(&id.0)
                    .map_err(self.index.db())?
                    .ok_or(Error::UnknownObject(id))?;
                decode_checked(id, bytes.value())?
            };
            for e in tree.entries {
                match e.kind {
                    EntryKind::Dir { tree } => stack.push(tree),
                    EntryKind::File { blob, .. }
                        if blobs.get(&blob.0).map_err(self.index.db())?.is_none() =>
                    {
                        return Err(Error::UnknownObject(blob));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
