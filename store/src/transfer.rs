//! The store's side of moving objects between stores (used by `cairn-remote`): listing a
//! closure, reading blobs in their stored form, and importing verified objects and a key record
//! in one commit.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use redb::ReadableTable;

use crate::blobs::{Encoding, PendingBlob, Placement, SMALL_BLOB_MAX, VerifiedReader};
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

/// (bytes, files) of the tree `id` counted per path as ingest counts them: a regular file or a
/// hardlink counts once, with its content size (a hardlink's target is resolved from `root`).
fn tree_totals(
    id: Id,
    tree: &Tree,
    root: &Tree,
    load: &dyn Fn(Id) -> Result<Tree>,
    memo: &mut HashMap<Id, (u64, u64)>,
) -> Result<(u64, u64)> {
    if let Some(t) = memo.get(&id) {
        return Ok(*t);
    }
    let (mut size, mut files) = (0u64, 0u64);
    for e in &tree.entries {
        match &e.kind {
            EntryKind::File { size: s, .. } => {
                size += s;
                files += 1;
            }
            EntryKind::Hardlink { target } => {
                size += hardlink_size(root, target, load)?;
                files += 1;
            }
            EntryKind::Dir { tree: child } => {
                let t = load(*child)?;
                let (s, f) = tree_totals(*child, &t, root, load, memo)?;
                size += s;
                files += f;
            }
            _ => {}
        }
    }
    memo.insert(id, (size, files));
    Ok((size, files))
}

fn hardlink_size(root: &Tree, target: &[u8], load: &dyn Fn(Id) -> Result<Tree>) -> Result<u64> {
    let segs: Vec<&[u8]> = target.split(|&b| b == b'/').collect();
    let mut cur = root.clone();
    for (i, seg) in segs.iter().enumerate() {
        let e = cur.get(seg).cloned();
        match (e.map(|e| e.kind), i + 1 == segs.len()) {
            (Some(EntryKind::File { size, .. }), true) => return Ok(size),
            (Some(EntryKind::Dir { tree }), false) => cur = load(tree)?,
            _ => break,
        }
    }
    Err(Error::Unsupported {
        path: std::path::PathBuf::from(String::from_utf8_lossy(target).into_owned()),
        reason: "hardlink target is not a regular file of the tree".into(),
    })
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

    /// A small blob (at most [`SMALL_BLOB_MAX`] bytes) in its stored form, verified. `place`
    /// is where the index keeps it (from [`Store::placements`], for callers reading many);
    /// `None` looks it up.
    pub fn read_blob_encoded(
        &self,
        id: &Id,
        size: u64,
        place: Option<Placement>,
    ) -> Result<(Encoding, Vec<u8>)> {
        debug_assert!(size <= SMALL_BLOB_MAX);
        let place = match place {
            Some(p) => Some(p),
            None => self.placement_of(id)?,
        };
        Ok(self.blobs.read_encoded(id, size, place)?)
    }

    /// A reader of any blob's content that checks it against `id` and `size` at the end.
    pub fn open_blob(&self, id: &Id, size: u64) -> Result<VerifiedReader> {
        let place = self.placement_of(id)?;
        Ok(self.blobs.open_verified_hinted(id, Some(size), place)?)
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
                pack: None,
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
        // A record that will not bind must leave no trace, not even unindexed blob files: check
        // it against what the commit would see before anything is renamed into place.
        if let Some(rec) = &bind {
            self.index.dry_run(|txn| {
                self.record_rows(txn, blobs.iter().map(|b| &b.0.blob), &trees)?;
                for root in rec.roots() {
                    self.check_closure_in(txn, &root)?;
                }
                self.check_totals_in(txn, rec)
            })?;
        }
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
            self.record_rows(txn, stored.iter(), &checked)?;
            extra(txn)?;
            let Some(rec) = bind else {
                return Ok(None);
            };
            for root in rec.roots() {
                self.check_closure_in(txn, &root)?;
            }
            self.check_totals_in(txn, &rec)?;
            Ok(Some(self.bind_record(txn, rec)?))
        })
    }

    /// Inserts `blobs` and `trees` rows (trees only where absent).
    fn record_rows<'a>(
        &self,
        txn: &redb::WriteTransaction,
        blobs: impl Iterator<Item = &'a crate::blobs::StoredBlob>,
        trees: &[(Id, Vec<u8>)],
    ) -> Result<()> {
        let mut t = txn.open_table(BLOBS).map_err(self.index.db())?;
        let mut packed = crate::index::packed_for_write(txn).map_err(self.index.db())?;
        for s in blobs {
            crate::index::record_blob(&mut t, &mut packed, s).map_err(self.index.db())?;
        }
        drop(packed);
        let mut t = txn.open_table(TREES).map_err(self.index.db())?;
        for (id, bytes) in trees {
            if t.get(&id.0).map_err(self.index.db())?.is_none() {
                t.insert(&id.0, bytes.as_slice()).map_err(self.index.db())?;
            }
        }
        Ok(())
    }

    /// Fails unless the record's `size` and `files` are those of its root: a record from
    /// elsewhere that was re-pointed at another tree (say, one of its own subfolders) is refused
    /// rather than bound with figures that describe something else.
    fn check_totals_in(&self, txn: &redb::WriteTransaction, rec: &KeyRecord) -> Result<()> {
        let (size, files) = match rec.root {
            Root::File { id, .. } => {
                let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
                let size = blobs
                    .get(&id.0)
                    .map_err(self.index.db())?
                    .ok_or(Error::UnknownObject(id))?
                    .value()
                    .0;
                (size, 1)
            }
            Root::Tree { id } => {
                let trees = txn.open_table(TREES).map_err(self.index.db())?;
                let load = |id: Id| -> Result<Tree> {
                    let bytes = trees
                        .get(&id.0)
                        .map_err(self.index.db())?
                        .ok_or(Error::UnknownObject(id))?;
                    decode_checked(id, bytes.value())
                };
                let root_tree = load(id)?;
                let mut memo: HashMap<Id, (u64, u64)> = HashMap::new();
                tree_totals(id, &root_tree, &root_tree, &load, &mut memo)?
            }
        };
        if (size, files) != (rec.size, rec.files) {
            return Err(Error::RecordMismatch {
                key: rec.key.to_string(),
                reason: format!(
                    "it claims {} files of {} bytes, but its root {} holds {files} files of {size} bytes",
                    rec.files,
                    rec.size,
                    rec.root.id()
                ),
            });
        }
        Ok(())
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
