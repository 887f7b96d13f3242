//! [`Import`]: objects from elsewhere (a remote, an image source, a derivation) committed in one
//! index transaction, with an optional key record bound only if its closure is complete.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{Writer, decode_tree};
use crate::key::{KeyRecord, Root};
use crate::pins::{Pin, PinTarget};
use crate::session::StagedBlob;
use crate::store::Store;
use crate::tree::MAX_DEPTH;
use crate::walk::{self, Closure};

/// Objects, names and optionally a key record to commit together (see
/// [`crate::ImportSession::commit`]).
#[derive(Debug, Default)]
pub struct Import {
    /// Staged blobs to add; those the store already has are dropped.
    pub blobs: Vec<StagedBlob>,
    /// Trees to add: (id, canonical encoding); each is re-hashed before it is recorded.
    pub trees: Vec<(Id, Vec<u8>)>,
    /// Aliases to record: (name, blob). Each blob must be staged here or present.
    pub aliases: Vec<(String, Id)>,
    /// Derived trees to record (see [`Derive`]).
    pub derived: Vec<Derive>,
    /// A record to bind once everything its roots reach is present.
    pub bind: Option<KeyRecord>,
    /// Pins to write (see [`crate::Pin`]); a root target's closure must be present once the
    /// import's rows are in.
    pub pins: Vec<Pin>,
}

/// A tree derived from a blob by some caller-defined process (say, the files an archive blob
/// lists), kept exactly as long as the blob it came from: gc keeps the tree while the source
/// blob is reachable and drops the row with the blob. A cache: whoever derived it can derive it
/// again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derive {
    /// Who derived it and how (a name the caller owns, such as `"app-layer-v1"`).
    pub namespace: String,
    /// The blob it was derived from.
    pub source: Id,
    /// The derived tree (present, or among the import's trees).
    pub tree: Id,
    /// The caller's bytes kept with it.
    pub payload: Vec<u8>,
}

impl Import {
    /// Writes `pin` in the same transaction as the import's objects.
    pub fn pin(&mut self, pin: Pin) -> &mut Self {
        self.pins.push(pin);
        self
    }

    /// Records `name` as another name of blob `blob` (say, a different hash of the same
    /// content); dropped with the blob.
    pub fn alias(&mut self, name: impl Into<String>, blob: Id) -> &mut Self {
        self.aliases.push((name.into(), blob));
        self
    }

    /// Records `tree` as derived from blob `source` in `namespace` (see [`Derive`]).
    pub fn derive(
        &mut self,
        namespace: impl Into<String>,
        source: Id,
        tree: Id,
        payload: Vec<u8>,
    ) -> &mut Self {
        self.derived.push(Derive {
            namespace: namespace.into(),
            source,
            tree,
            payload,
        });
        self
    }
}

impl Store {
    /// See [`crate::ImportSession::commit`]. The caller holds the gc lock (the session) from
    /// before the first object was staged.
    pub(crate) fn commit_import(&self, import: Import) -> Result<Option<KeyRecord>> {
        let Import {
            blobs,
            trees,
            aliases,
            derived,
            bind,
            pins,
        } = import;
        let mut checked = Vec::with_capacity(trees.len());
        for (id, bytes) in trees {
            decode_tree(id, &bytes)?;
            checked.push((id, bytes));
        }
        let staged: Vec<_> = blobs.iter().map(|b| b.0.blob).collect();
        // A record that will not bind must leave no trace, not even unindexed blob files: check
        // it against what the commit would see before anything is renamed into place.
        self.index.dry_run(|w| {
            record_rows(w, staged.iter(), &checked, &aliases, &derived, &pins)?;
            match &bind {
                Some(rec) => check_record(w, rec),
                None => Ok(()),
            }
        })?;
        let ids: Vec<Id> = staged.iter().map(|b| b.id).collect();
        let present = self.has_blobs(&ids)?;
        let mut stored = Vec::new();
        let mut seen = HashSet::new();
        for StagedBlob(p) in blobs {
            if present.contains(&p.blob.id) || !seen.insert(p.blob.id) {
                continue; // dropped: its temp file is deleted
            }
            stored.push(p.persist(&self.blobs)?);
        }
        if !stored.is_empty() {
            self.blobs.sync().map_err(Error::io(self.blobs.root()))?;
        }
        self.index.write(|w| {
            record_rows(w, stored.iter(), &checked, &aliases, &derived, &pins)?;
            let Some(rec) = bind else {
                return Ok(None);
            };
            check_record(w, &rec)?;
            Ok(Some(w.bind(rec)?))
        })
    }
}

/// Records blob and tree rows (where absent), aliases and derived trees; each alias and
/// derivation must name objects present once these rows are in.
fn record_rows<'a>(
    w: &mut Writer,
    blobs: impl Iterator<Item = &'a crate::blobs::StoredBlob>,
    trees: &[(Id, Vec<u8>)],
    aliases: &[(String, Id)],
    derived: &[Derive],
    pins: &[Pin],
) -> Result<()> {
    for s in blobs {
        w.record_blob(s)?;
    }
    for (id, bytes) in trees {
        w.insert_tree(id, bytes)?;
    }
    for (name, blob) in aliases {
        if !w.has_blob(blob)? {
            return Err(Error::UnknownObject(*blob));
        }
        w.put_alias(name, blob)?;
    }
    for d in derived {
        if !w.has_blob(&d.source)? {
            return Err(Error::UnknownObject(d.source));
        }
        check_closure(w, &Root::Tree { id: d.tree })?;
        w.put_derived(&d.namespace, &d.source, &d.tree, &d.payload)?;
    }
    for pin in pins {
        if let PinTarget::Root(root) = &pin.target {
            check_closure(w, root)?;
        }
        w.put_pin(pin)?;
    }
    Ok(())
}

/// Fails unless everything `rec` reaches is present in `w`'s view, its tree is no deeper than
/// a path may be, and its `size` and `files` are those of its root: a record from elsewhere
/// that was re-pointed at another tree (say, one of its own subfolders) is refused rather than
/// bound with figures that describe something else.
pub(crate) fn check_record(w: &Writer, rec: &KeyRecord) -> Result<()> {
    for a in rec.attachments.values() {
        check_closure(
            w,
            &Root::File {
                id: a.id,
                executable: false,
            },
        )?;
    }
    let (size, files) = match rec.root {
        Root::File { id, .. } => (w.blob_size(&id)?.ok_or(Error::UnknownObject(id))?, 1),
        Root::Tree { id } => {
            let c = tree_closure(w, id)?;
            let t = walk::totals(&c, &id)?;
            if t.depth > MAX_DEPTH {
                return Err(Error::TooDeep {
                    root: id,
                    path: String::new(),
                });
            }
            (t.size, t.files)
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

/// The closure of tree `id` in `w`'s view; fails with the first tree or blob it lacks.
fn tree_closure(w: &Writer, id: Id) -> Result<Closure> {
    let c = Closure::collect([id], |t| w.tree(t))?;
    for (blob, _) in &c.blobs {
        if !w.has_blob(blob)? {
            return Err(Error::UnknownObject(*blob));
        }
    }
    Ok(c)
}

/// Fails with the first object `root` reaches that `w`'s view lacks.
pub(crate) fn check_closure(w: &Writer, root: &Root) -> Result<()> {
    match root {
        Root::File { id, .. } => match w.has_blob(id)? {
            true => Ok(()),
            false => Err(Error::UnknownObject(*id)),
        },
        Root::Tree { id } => tree_closure(w, *id).map(drop),
    }
}
