//! [`Store`]: the public face of the library. It opens a store, starts sessions (see
//! `session`), ingests inputs (see `put`) and manages key records (see `records`); everything
//! that reads what a key names goes through a [`crate::ReadSession`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rayon::prelude::*;

use crate::blobs::{BlobDir, Placement, StoredBlob, hash_file};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::ingest::{self, Built, IngestOptions, Totals};
use crate::key::{Key, KeyRecord, Root};
use crate::lock::{GcLock, LockMode};
use crate::progress::Progress;

/// Default zstd level for stored blobs.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// Default time to wait for the index or the gc lock before giving up.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings for opening a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long to wait for another process's lock before failing.
    pub lock_timeout: Duration,
    /// zstd level for newly stored blobs.
    pub compression_level: i32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
        }
    }
}

/// What to ingest.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// A file or a folder, walked as it is on disk.
    Path(&'a Path),
    /// A tar archive (plain, gzip or zstd, detected by its first bytes), read entry by entry.
    Archive(&'a Path),
}

/// What an ingest stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    /// The root of what was ingested.
    pub root: Root,
    /// Content totals.
    pub totals: Totals,
    /// Blobs that were not in the store before.
    pub new_blobs: u64,
    /// Their bytes on disk.
    pub new_bytes: u64,
}

/// A local content-addressed store in one folder.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    pub(crate) blobs: BlobDir,
    pub(crate) index: Index,
    locks: PathBuf,
    opts: StoreOptions,
}

impl Store {
    /// Opens the store in `dir`, creating it if needed (there is no init step).
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let blobs = BlobDir::at(
            dir.join("blobs"),
            dir.join("packs"),
            dir.join("tmp"),
            opts.compression_level,
        )
        .map_err(Error::io(dir))?;
        let index = Index::new(dir.join("index.redb"), opts.lock_timeout);
        let store = Store {
            dir: dir.to_path_buf(),
            blobs,
            index,
            locks: dir.join("locks"),
            opts,
        };
        if !store.locks.join("gc").exists() {
            store.index.init()?;
            GcLock::acquire(&store.locks, LockMode::Shared, store.opts.lock_timeout)?;
        }
        Ok(store)
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long this store waits for another process's lock.
    pub fn lock_timeout(&self) -> Duration {
        self.opts.lock_timeout
    }

    /// Takes the gc lock: shared for sessions, exclusive for gc.
    pub(crate) fn lock(&self, mode: LockMode) -> Result<GcLock> {
        GcLock::acquire(&self.locks, mode, self.opts.lock_timeout)
    }

    /// The id `add` would give `path`, touching no store.
    pub fn hash(path: &Path, opts: &IngestOptions) -> Result<Built> {
        let (node, files) = ingest::scan(path, opts)?;
        let hashes = files
            .par_iter()
            .map(|p| hash_file(p).map_err(Error::io(p)))
            .collect::<Result<Vec<_>>>()?;
        ingest::build(&node, &hashes, opts.preserve, path)
    }

    /// Ingests `input` without binding a key.
    pub fn add(
        &self,
        input: Input<'_>,
        opts: &IngestOptions,
        progress: &dyn Progress,
    ) -> Result<Added> {
        self.ingest(input, opts, None, progress).map(|(a, _)| a)
    }

    /// Ingests `input` and binds `key` to it, with `labels`.
    pub fn put(
        &self,
        key: &Key,
        input: Input<'_>,
        opts: &IngestOptions,
        labels: BTreeMap<String, String>,
        progress: &dyn Progress,
    ) -> Result<(Added, KeyRecord)> {
        let (added, rec) = self.ingest(input, opts, Some((key, labels)), progress)?;
        Ok((added, rec.expect("a key was given")))
    }

    fn ingest(
        &self,
        input: Input<'_>,
        opts: &IngestOptions,
        key: Option<(&Key, BTreeMap<String, String>)>,
        progress: &dyn Progress,
    ) -> Result<(Added, Option<KeyRecord>)> {
        let _session = self.import()?;
        match input {
            Input::Path(path) => {
                let (built, stored, ingested) =
                    crate::put::ingest_path(self, path, opts, progress)?;
                let out = self.commit(&built, &stored, key)?;
                ingested.save_cache();
                Ok(out)
            }
            Input::Archive(path) => {
                let (built, stored) = crate::archive::ingest(self, path, opts)?;
                self.commit(&built, &stored, key)
            }
        }
    }

    /// Where the index records each of `ids` to be kept (absent ids are left out), in one
    /// read transaction.
    pub(crate) fn placements(
        &self,
        ids: impl IntoIterator<Item = Id>,
    ) -> Result<HashMap<Id, Placement>> {
        self.index.read(|r| {
            let mut out = HashMap::new();
            for id in ids {
                if let Some((_, p)) = r.placement(&id)? {
                    out.insert(id, p);
                }
            }
            Ok(out)
        })
    }

    /// Where the index records blob `id` to be kept.
    pub(crate) fn placement(&self, id: &Id) -> Result<Option<Placement>> {
        Ok(self.index.read(|r| r.placement(id))?.map(|(_, p)| p))
    }

    /// Which of `ids` the index records as present.
    pub(crate) fn has_blobs(&self, ids: &[Id]) -> Result<HashSet<Id>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        self.index.read(|r| {
            let mut out = HashSet::new();
            for id in ids {
                if r.has_blob(id)? {
                    out.insert(*id);
                }
            }
            Ok(out)
        })
    }

    /// Records durable blobs and trees, and binds the key if one is given, in one transaction.
    /// The caller holds the gc lock, and every blob the trees name is either recorded already
    /// (checked by the caller; gc cannot run meanwhile) or in `stored`.
    pub(crate) fn commit(
        &self,
        built: &Built,
        stored: &[StoredBlob],
        key: Option<(&Key, BTreeMap<String, String>)>,
    ) -> Result<(Added, Option<KeyRecord>)> {
        self.index.write(|w| {
            let mut new_blobs = 0;
            let mut new_bytes = 0;
            for s in stored {
                if w.record_blob(s)? {
                    new_blobs += 1;
                    new_bytes += s.stored_size;
                }
            }
            for (id, bytes) in &built.trees {
                w.insert_tree(id, bytes)?;
            }
            if let Root::File { id, .. } = built.root
                && !w.has_blob(&id)?
            {
                return Err(Error::UnknownObject(id));
            }
            let added = Added {
                root: built.root,
                totals: built.totals,
                new_blobs,
                new_bytes,
            };
            let rec = match key {
                Some((key, labels)) => Some(w.bind(KeyRecord {
                    key: key.clone(),
                    root: built.root,
                    created: crate::records::now(),
                    size: built.totals.size,
                    files: built.totals.files,
                    labels,
                    attachments: BTreeMap::new(),
                    signatures: Vec::new(),
                })?),
                None => None,
            };
            Ok((added, rec))
        })
    }
}
