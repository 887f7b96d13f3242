//! Sessions: the gc lock, held for as long as a caller works with what it resolved or staged.
//!
//! A [`ReadSession`] holds the store's gc lock shared (see `lock`), so nothing it resolves can
//! be collected while it is alive: resolve a key, then materialize, export or read what it
//! names. An [`ImportSession`] is a read session that can also stage objects and commit them
//! with a key; gc cannot run between the first staged object and the commit. Like redb's
//! transactions, the session *is* the lock: there is no token to pass around, and no way to
//! reach these operations without holding it. Sessions are cheap to clone (clones share the
//! lock) and `Send`, so async code can move one into a blocking task.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::{TarOptions, TarTree};
use crate::blobs::{
    BlobError, Encoding, PendingBlob, Placement, SMALL_BLOB_MAX, Source, VerifiedReader,
};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ingest::{self, Node};
use crate::key::{Key, KeyRecord, Root};
use crate::lock::GcLock;
use crate::store::Store;
use crate::transfer::Import;
use crate::tree::Tree;
use crate::walk::Closure;

/// A blob written to the store's temp area or current pack, not yet recorded: what an
/// [`ImportSession`] stages and [`Import`] commits. Dropping it deletes what was written (or
/// leaves dead bytes in a pack, which gc reclaims).
#[derive(Debug)]
pub struct StagedBlob(pub(crate) PendingBlob);

impl StagedBlob {
    /// The blob's id (BLAKE3 of its content).
    pub fn id(&self) -> Id {
        self.0.blob.id
    }
    /// Its content size.
    pub fn size(&self) -> u64 {
        self.0.blob.size
    }
}

/// The store with its gc lock held shared: everything resolved through it stays until it is
/// dropped.
#[derive(Clone, Debug)]
pub struct ReadSession {
    pub(crate) store: Store,
    _lock: Arc<GcLock>,
}

/// A [`ReadSession`] that may also stage objects and commit them (see [`Import`]).
#[derive(Clone, Debug)]
pub struct ImportSession {
    read: ReadSession,
}

impl Store {
    /// Starts a read session: takes the gc lock shared (waiting up to the lock timeout while a
    /// gc runs).
    pub fn read(&self) -> Result<ReadSession> {
        Ok(ReadSession {
            store: self.clone(),
            _lock: Arc::new(self.lock(crate::lock::LockMode::Shared)?),
        })
    }

    /// Starts an import session (see [`ImportSession`]).
    pub fn import(&self) -> Result<ImportSession> {
        Ok(ImportSession { read: self.read()? })
    }
}

impl ReadSession {
    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Resolves a key name or an id to a root. Ids are `blake3:<hex>` (a tree, else a blob the
    /// index records); anything else is a key, which must be bound.
    pub fn resolve(&self, spec: &str) -> Result<Root> {
        if let Ok(id) = spec.parse::<Id>() {
            return self.store.index.read(|r| {
                if r.has_tree(&id)? {
                    Ok(Root::Tree { id })
                } else if r.has_blob(&id)? {
                    Ok(Root::File {
                        id,
                        executable: false,
                    })
                } else {
                    Err(Error::UnknownObject(id))
                }
            });
        }
        Ok(self.record(&Key::new(spec)?)?.root)
    }

    /// The record bound to `key`.
    pub fn record(&self, key: &Key) -> Result<KeyRecord> {
        self.store.record(key)
    }

    /// The tree `id`, checked against its id.
    pub fn tree(&self, id: &Id) -> Result<Tree> {
        self.store.index.read(|r| r.tree(id))
    }

    /// Everything `roots` reach, each tree checked against its id, in one read transaction. A
    /// file root's blob is listed with its recorded size.
    pub fn closure(&self, roots: &[Root]) -> Result<Closure> {
        self.store.index.read(|r| {
            let trees = roots.iter().filter_map(|root| match root {
                Root::Tree { id } => Some(*id),
                Root::File { .. } => None,
            });
            let mut c = Closure::collect(trees, |id| r.tree(id))?;
            for root in roots {
                if let Root::File { id, .. } = root
                    && !c.blobs.iter().any(|(b, _)| b == id)
                {
                    let size = r.blob_size(id)?.ok_or(Error::UnknownObject(*id))?;
                    c.blobs.push((*id, size));
                }
            }
            Ok(c)
        })
    }

    /// What a record keeps alive: its output and its attachments.
    pub fn record_closure(&self, rec: &KeyRecord) -> Result<Closure> {
        self.closure(&rec.roots())
    }

    /// Which of `ids` the index records as trees.
    pub fn has_trees(&self, ids: &[Id]) -> Result<HashSet<Id>> {
        self.store.index.read(|r| {
            let mut out = HashSet::new();
            for id in ids {
                if r.has_tree(id)? {
                    out.insert(*id);
                }
            }
            Ok(out)
        })
    }

    /// Which of `ids` the index records as blobs.
    pub fn has_blobs(&self, ids: &[Id]) -> Result<HashSet<Id>> {
        self.store.has_blobs(ids)
    }

    /// Where the index records each of `ids` to be kept (absent ids are left out), read in one
    /// transaction: what readers of many blobs pass to [`ReadSession::open_blob`].
    pub fn placements(&self, ids: impl IntoIterator<Item = Id>) -> Result<HashMap<Id, Placement>> {
        self.store.placements(ids)
    }

    /// A reader of blob `id`'s content that checks it against `id` (and `size`, if given) at
    /// the end. `place` is where the index keeps it (from [`ReadSession::placements`]); `None`
    /// looks it up.
    pub fn open_blob(
        &self,
        id: &Id,
        size: Option<u64>,
        place: Option<Placement>,
    ) -> Result<VerifiedReader> {
        let place = match place {
            Some(p) => Some(p),
            None => self.store.placement(id)?,
        };
        Ok(self.store.blobs.open(id, size, place)?)
    }

    /// A small blob (at most [`SMALL_BLOB_MAX`] bytes) in its stored form, checked against its
    /// id and size (so a zstd-stored blob can be shipped without recompressing it).
    pub fn read_stored(
        &self,
        id: &Id,
        size: u64,
        place: Option<Placement>,
    ) -> Result<(Encoding, Vec<u8>)> {
        if size > SMALL_BLOB_MAX {
            return Err(BlobError::Corrupt {
                id: *id,
                reason: format!("{size} bytes is not a small blob"),
            }
            .into());
        }
        let place = match place {
            Some(p) => Some(p),
            None => self.store.placement(id)?,
        };
        Ok(self.store.blobs.read_stored(id, size, place)?)
    }

    /// The file holding a large blob `id` and its encoding, for a caller that streams the
    /// stored bytes as they are. Unverified: the caller checks what it reads (or has just read
    /// the blob through [`ReadSession::open_blob`]).
    pub fn blob_file(&self, id: &Id) -> Result<(PathBuf, Encoding)> {
        let (_, enc, path) = self.store.blobs.locate(id)?;
        Ok((path, enc))
    }

    /// A new temp file in the store's temp folder (on the blobs' filesystem; gc deletes any
    /// left behind), say for a large blob's stored form being downloaded before
    /// [`ImportSession::stage_file`] adopts it.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let tmp = self.store.blobs.tmp();
        tempfile::Builder::new()
            .prefix("incoming-")
            .tempfile_in(tmp)
            .map_err(Error::io(tmp))
    }

    /// The tree derived from blob `source` in `namespace` (see [`Import::derive`]) and its
    /// payload, if one was recorded and both are still present.
    pub fn derived(&self, namespace: &str, source: &Id) -> Result<Option<(Id, Vec<u8>)>> {
        self.store.index.read(|r| r.derived(namespace, source))
    }

    /// The blob an alias names (see [`Import::alias`]), if the blob is still present.
    pub fn alias(&self, name: &str) -> Result<Option<Id>> {
        self.store.index.read(|r| r.alias(name))
    }
}

impl ImportSession {
    /// The read side of this session.
    pub fn reader(&self) -> &ReadSession {
        &self.read
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.read.store
    }

    /// Writes whatever `reader` yields as a staged blob. With `expect`, the content must hash
    /// to that id and have that size (else nothing is staged); without, it is whatever it
    /// hashes to, for a caller that checks it by other means (another digest) as it streams.
    /// `size_hint` only picks the strategy; `origin` names the source in errors.
    pub fn stage_stream(
        &self,
        reader: impl Read,
        size_hint: u64,
        expect: Option<(Id, u64)>,
        origin: &str,
    ) -> Result<StagedBlob> {
        let pending = self.store().blobs.write(
            Source::Stream {
                reader: Box::new(reader),
                size_hint,
                origin: Path::new(origin),
            },
            None,
        )?;
        if let Some((id, size)) = expect
            && (pending.blob.id != id || pending.blob.size != size)
        {
            return Err(BlobError::Corrupt {
                id,
                reason: format!(
                    "{origin}: content of {} bytes hashes to {}",
                    pending.blob.size, pending.blob.id
                ),
            }
            .into());
        }
        Ok(StagedBlob(pending))
    }

    /// Stages a blob in a stored form the caller has checked against `id` and `size` (say, a
    /// zstd frame it decompressed and hashed).
    pub fn stage_encoded(
        &self,
        id: Id,
        size: u64,
        encoding: Encoding,
        bytes: &[u8],
    ) -> Result<StagedBlob> {
        Ok(StagedBlob(self.store().blobs.write(
            Source::Encoded {
                id,
                size,
                encoding,
                bytes,
            },
            None,
        )?))
    }

    /// Stages a temp file from [`ReadSession::temp_file`] holding blob `id` in the stored
    /// form `encoding`, which the caller has checked against `id` and `size`.
    pub fn stage_file(
        &self,
        id: Id,
        size: u64,
        encoding: Encoding,
        file: tempfile::TempPath,
    ) -> Result<StagedBlob> {
        let stored_size = std::fs::metadata(&file).map_err(Error::io(&file))?.len();
        Ok(StagedBlob(PendingBlob::adopt(
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

    /// Reads the tar stream `tar` (already decompressed) into blobs and trees by the rules of
    /// `opts`, and commits them (no key: the caller records what it derived, or builds on it).
    /// `origin` names the stream in errors.
    pub fn ingest_tar(&self, tar: impl Read, origin: &Path, opts: &TarOptions) -> Result<TarTree> {
        let parsed = crate::archive::ingest_reader(self.store(), Box::new(tar), origin, opts)?;
        let Root::Tree { id } = parsed.built.root else {
            unreachable!("a tar stream always builds a folder");
        };
        self.store().commit(&parsed.built, &parsed.stored, None)?;
        Ok(TarTree {
            tree: id,
            implicit: parsed.implicit,
        })
    }

    /// Builds and records the trees of `node`, whose files must all be
    /// [`ingest::Content::Stored`] in this store already, and returns the root: for a caller
    /// that assembles a tree from stored objects (say, several trees merged in memory).
    pub fn commit_node(&self, node: &Node, origin: &Path) -> Result<Root> {
        let built = ingest::build(node, &[], true, origin)?;
        let mut blobs = Vec::new();
        node.stored_blobs(&mut blobs)
            .map_err(|reason| Error::Unsupported {
                path: origin.to_path_buf(),
                reason,
            })?;
        blobs.sort();
        blobs.dedup();
        let present = self.store().has_blobs(&blobs)?;
        if let Some(missing) = blobs.iter().find(|b| !present.contains(b)) {
            return Err(Error::UnknownObject(*missing));
        }
        self.store().commit(&built, &[], None)?;
        Ok(built.root)
    }

    /// Commits what `import` holds (see [`Import`]): the blobs the store lacks are put in
    /// place and made durable, then one index transaction records them with the trees, aliases
    /// and derived trees, and binds the record once everything it reaches is present.
    pub fn commit(&self, import: Import) -> Result<Option<KeyRecord>> {
        self.store().commit_import(import)
    }
}
