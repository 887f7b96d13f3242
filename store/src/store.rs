//! [`Store`]: the public face of the library, tying blobs, trees, keys and locks together.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::blobs::{BlobDir, SMALL_BLOB_MAX, StoredBlob, hash_file, hash_file_sized};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BLOBS, Index, KEY_LOG, KEYS, TREES};
use crate::ingest::{self, Built, IngestOptions, Totals};
use crate::key::{Key, KeyRecord, LogAction, LogEntry, Root};
use crate::lock::{GcLock, LockMode};
use crate::progress::Progress;
use crate::statcache::StatCache;
use crate::tree::{EntryKind, Tree};

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

/// The trees reachable from a root, each checked against its id.
#[derive(Debug, Default)]
pub struct Closure {
    /// Every tree, by id.
    pub trees: HashMap<Id, Tree>,
}

impl Store {
    /// Opens the store in `dir`, creating it if needed (there is no init step).
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let blobs = BlobDir::open(
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

    /// Takes the gc lock: shared for readers and writers, exclusive for gc.
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

    /// Ingests `path` without binding a key.
    pub fn add(&self, path: &Path, opts: &IngestOptions, progress: &dyn Progress) -> Result<Added> {
        let _lock = self.lock(LockMode::Shared)?;
        let (built, stored, ingested) = self.ingest_path(path, opts, progress)?;
        let added = self.commit(&built, &stored, None).map(|(added, _)| added)?;
        ingested.save_cache();
        Ok(added)
    }

    /// Ingests `path` and binds `key` to it.
    pub fn put(
        &self,
        key: &Key,
        path: &Path,
        opts: &IngestOptions,
        labels: BTreeMap<String, String>,
        progress: &dyn Progress,
    ) -> Result<(Added, KeyRecord)> {
        let _lock = self.lock(LockMode::Shared)?;
        let (built, stored, ingested) = self.ingest_path(path, opts, progress)?;
        let (added, rec) = self.commit(&built, &stored, Some((key, labels)))?;
        ingested.save_cache();
        Ok((added, rec.expect("key given")))
    }

    /// Ingests a tar archive (plain, gzip or zstd) without binding a key.
    pub fn add_archive(&self, archive: &Path, opts: &IngestOptions) -> Result<Added> {
        let _lock = self.lock(LockMode::Shared)?;
        let (built, stored) = crate::archive::ingest(self, archive, opts)?;
        self.commit(&built, &stored, None).map(|(a, _)| a)
    }

    /// Ingests a tar archive (plain, gzip or zstd) and binds `key` to it.
    pub fn put_archive(
        &self,
        key: &Key,
        archive: &Path,
        opts: &IngestOptions,
        labels: BTreeMap<String, String>,
    ) -> Result<(Added, KeyRecord)> {
        let _lock = self.lock(LockMode::Shared)?;
        let (built, stored) = crate::archive::ingest(self, archive, opts)?;
        let (added, rec) = self.commit(&built, &stored, Some((key, labels)))?;
        Ok((added, rec.expect("key given")))
    }

    /// Scans, hashes, and stores the blobs the index lacks; makes them durable. Files whose
    /// stat matches the stat cache (see `statcache`) are not read; the cache is saved again
    /// after the commit, by [`Ingested::save_cache`].
    fn ingest_path(
        &self,
        path: &Path,
        opts: &IngestOptions,
        progress: &dyn Progress,
    ) -> Result<(Built, Vec<StoredBlob>, Ingested)> {
        let cache = StatCache::load(&self.dir.join("statcache"), path);
        let (node, files) = ingest::scan_files(path, opts, false)?;
        progress.start("hashing", files.len() as u64);
        let mut hashes: Vec<Option<(Id, u64)>> = files
            .par_iter()
            .map(|f| {
                cache
                    .as_ref()
                    .and_then(|c| c.lookup(f.rel(path), &f.stat))
                    .map(|id| (id, f.stat.size))
            })
            .collect();
        let (small, large): (Vec<usize>, Vec<usize>) = (0..files.len())
            .filter(|&i| hashes[i].is_none())
            .partition(|&i| files[i].stat.size <= SMALL_BLOB_MAX);
        progress.advance((files.len() - small.len() - large.len()) as u64);

        // Small files are read once: hashed, checked against the index a batch at a time, and
        // stored from memory when new.
        let mut stored = Vec::new();
        // Ids whose storage is settled: in the index already, or written by this put.
        let mut settled: HashSet<Id> = HashSet::new();
        for batch in batches(&small, |i| files[i].stat.size) {
            let read = batch
                .par_iter()
                .map(|&i| {
                    let f = &files[i];
                    let content = read_small_file(&f.path, f.stat.size)?;
                    progress.advance(1);
                    Ok((i, content.map(|c| (Id::of(&c), c))))
                })
                .collect::<Result<Vec<_>>>()?;
            let ids: Vec<Id> = read
                .iter()
                .filter_map(|(_, c)| c.as_ref().map(|c| c.0))
                .collect();
            let present = self.present_blobs(&ids)?;
            let mut todo = Vec::new();
            // A file without content grew past the small limit since the scan: it is hashed
            // with the large ones.
            for (i, content) in read {
                if let Some((id, c)) = content {
                    hashes[i] = Some((id, c.len() as u64));
                    if present.contains(&id) {
                        settled.insert(id);
                    } else if settled.insert(id) {
                        todo.push((id, c));
                    }
                }
            }
            let batch_stored = todo
                .into_par_iter()
                .map(|(id, c)| Ok(self.blobs.write_content(id, c)?.persist(&self.blobs)?))
                .collect::<Result<Vec<_>>>()?;
            stored.extend(batch_stored);
        }
        let grown: Vec<usize> = small.into_iter().filter(|&i| hashes[i].is_none()).collect();
        let large_hashes = large
            .par_iter()
            .chain(grown.par_iter())
            .map(|&i| {
                let f = &files[i];
                let r = hash_file_sized(&f.path, f.stat.size).map_err(Error::io(&f.path));
                progress.advance(1);
                r.map(|h| (i, h))
            })
            .collect::<Result<Vec<_>>>()?;
        for (i, h) in large_hashes {
            hashes[i] = Some(h);
        }
        progress.finish();
        let hashes: Vec<(Id, u64)> = hashes
            .into_iter()
            .map(|h| h.expect("every file hashed"))
            .collect();
        let built = ingest::build(&node, &hashes, opts.preserve, path)?;

        // Large files (and files the stat cache knew) whose blob the index lacks: stored from
        // the file, hashed again on the way (a file that changed since is an error).
        let mut first_file: HashMap<Id, usize> = HashMap::new();
        for (i, (id, _)) in hashes.iter().enumerate() {
            if !settled.contains(id) {
                first_file.entry(*id).or_insert(i);
            }
        }
        let candidates: Vec<Id> = first_file.keys().copied().collect();
        let present = self.present_blobs(&candidates)?;
        let todo: Vec<(Id, usize)> = first_file
            .into_iter()
            .filter(|(id, _)| !present.contains(id))
            .collect();
        progress.start("storing", todo.len() as u64);
        let rest = todo
            .par_iter()
            .map(|(id, i)| {
                let f = &files[*i];
                let r = self
                    .blobs
                    .write_file_sized(&f.path, *id, f.stat.size)
                    .map_err(Error::from);
                progress.advance(1);
                r
            })
            .collect::<Result<Vec<_>>>()?;
        stored.extend(rest);
        progress.finish();
        if !stored.is_empty() {
            self.blobs.sync().map_err(Error::io(self.blobs.root()))?;
        }
        let ingested = Ingested {
            cache,
            root: path.to_path_buf(),
            files,
            hashes,
        };
        Ok((built, stored, ingested))
    }

    /// Where the index records each of `ids` to be kept (absent ids are left out), read in
    /// one transaction: what readers of many blobs pass as hints.
    pub fn placements(
        &self,
        ids: impl IntoIterator<Item = Id>,
    ) -> Result<HashMap<Id, crate::blobs::Placement>> {
        self.index.read(|txn| {
            let t = txn.open_table(BLOBS).map_err(self.index.db())?;
            let packed = crate::index::packed_for_read(txn).map_err(self.index.db())?;
            let mut out = HashMap::new();
            for id in ids {
                if let Some((_, p)) =
                    crate::index::placement(&t, packed.as_ref(), &id).map_err(self.index.db())?
                {
                    out.insert(id, p);
                }
            }
            Ok(out)
        })
    }

    /// Where the index records blob `id` to be kept.
    pub(crate) fn placement_of(&self, id: &Id) -> Result<Option<crate::blobs::Placement>> {
        Ok(self.placements([*id])?.remove(id))
    }

    /// Which of `ids` the index records as present.
    pub fn present_blobs(&self, ids: &[Id]) -> Result<HashSet<Id>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        self.index.read(|txn| {
            let t = txn.open_table(BLOBS).map_err(self.index.db())?;
            let mut out = HashSet::new();
            for id in ids {
                if t.get(&id.0).map_err(self.index.db())?.is_some() {
                    out.insert(*id);
                }
            }
            Ok(out)
        })
    }

    /// Records durable blobs and trees, and binds the key if one is given, in one transaction.
    pub(crate) fn commit(
        &self,
        built: &Built,
        stored: &[StoredBlob],
        key: Option<(&Key, BTreeMap<String, String>)>,
    ) -> Result<(Added, Option<KeyRecord>)> {
        self.index.write(|txn| {
            let mut new_blobs = 0;
            let mut new_bytes = 0;
            {
                let mut blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
                let mut packed = crate::index::packed_for_write(txn).map_err(self.index.db())?;
                for s in stored {
                    if crate::index::record_blob(&mut blobs, &mut packed, s)
                        .map_err(self.index.db())?
                    {
                        new_blobs += 1;
                        new_bytes += s.stored_size;
                    }
                }
                // Closure before key: every blob the trees name is either already recorded
                // (checked by the caller, and gc cannot run while we hold the gc lock) or in
                // `stored`, recorded just above.
                let mut trees = txn.open_table(TREES).map_err(self.index.db())?;
                for (id, bytes) in &built.trees {
                    if trees.get(&id.0).map_err(self.index.db())?.is_none() {
                        trees
                            .insert(&id.0, bytes.as_slice())
                            .map_err(self.index.db())?;
                    }
                }
                if let Root::File { id, .. } = built.root
                    && blobs.get(&id.0).map_err(self.index.db())?.is_none()
                {
                    return Err(Error::UnknownObject(id));
                }
            }
            let added = Added {
                root: built.root,
                totals: built.totals,
                new_blobs,
                new_bytes,
            };
            let rec = match key {
                Some((key, labels)) => {
                    Some(self.bind(txn, key, built.root, built.totals, labels)?)
                }
                None => None,
            };
            Ok((added, rec))
        })
    }

    fn bind(
        &self,
        txn: &WriteTransaction,
        key: &Key,
        root: Root,
        totals: Totals,
        labels: BTreeMap<String, String>,
    ) -> Result<KeyRecord> {
        let rec = KeyRecord {
            key: key.clone(),
            root,
            created: now(),
            size: totals.size,
            files: totals.files,
            labels,
            attachments: BTreeMap::new(),
            signatures: Vec::new(),
        };
        self.bind_record(txn, rec)
    }

    /// Writes `rec` as its key's record and logs the change. The caller has made sure that
    /// everything the root reaches is recorded in this transaction or before it.
    pub(crate) fn bind_record(&self, txn: &WriteTransaction, rec: KeyRecord) -> Result<KeyRecord> {
        let key = &rec.key;
        let mut keys = txn.open_table(KEYS).map_err(self.index.db())?;
        let previous = keys
            .get(key.as_str())
            .map_err(self.index.db())?
            .map(|v| serde_json::from_slice::<KeyRecord>(v.value()).map(|r| r.root))
            .transpose()
            .map_err(|e| corrupt_record(key.as_str(), e))?;
        let json = serde_json::to_vec(&rec).expect("records serialize");
        keys.insert(key.as_str(), json.as_slice())
            .map_err(self.index.db())?;
        drop(keys);
        self.append_log(
            txn,
            key,
            LogEntry {
                time: now(),
                action: if previous.is_some() {
                    LogAction::Rebind
                } else {
                    LogAction::Bind
                },
                root: Some(rec.root),
                previous,
            },
        )?;
        Ok(rec)
    }

    fn append_log(&self, txn: &WriteTransaction, key: &Key, entry: LogEntry) -> Result<()> {
        let mut log = txn.open_table(KEY_LOG).map_err(self.index.db())?;
        let next = log
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
            .map_err(self.index.db())?
            .next_back()
            .transpose()
            .map_err(self.index.db())?
            .map_or(0, |(k, _)| k.value().1 + 1);
        let json = serde_json::to_vec(&entry).expect("log entries serialize");
        log.insert((key.as_str(), next), json.as_slice())
            .map_err(self.index.db())?;
        Ok(())
    }

    /// Stores the file at `path` and attaches it to `key` as `name` (replacing an attachment of
    /// that name). Signatures on the record no longer cover it, so they are dropped; the new
    /// record is returned with the number of signatures dropped.
    pub fn attach(&self, key: &Key, name: &str, path: &Path) -> Result<(KeyRecord, usize)> {
        crate::key::check_attachment_name(name).map_err(|reason| Error::Unsupported {
            path: path.to_path_buf(),
            reason,
        })?;
        let _lock = self.lock(LockMode::Shared)?;
        let opts = IngestOptions::default();
        let (built, stored, _) = self.ingest_path(path, &opts, &crate::progress::NoProgress)?;
        let Root::File { id, .. } = built.root else {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                reason: "an attachment must be a regular file".into(),
            });
        };
        self.commit(&built, &stored, None)?;
        self.index.write(|txn| {
            let mut rec = self
                .record_in_txn(txn, key.as_str())?
                .ok_or_else(|| Error::UnknownKey(key.to_string()))?;
            rec.attachments.insert(
                name.to_string(),
                crate::key::Attachment {
                    id,
                    size: built.totals.size,
                },
            );
            let dropped = std::mem::take(&mut rec.signatures).len();
            self.write_record(txn, &rec)?;
            Ok((rec, dropped))
        })
    }

    /// Adds `sig` to `key`'s record, provided the record is still `signed` (apart from its
    /// signatures): a record rebound meanwhile is never given a signature meant for another.
    /// A signature by the same key name replaces the old one.
    pub fn add_signature(
        &self,
        signed: &KeyRecord,
        sig: crate::sign::Signature,
    ) -> Result<KeyRecord> {
        self.index.write(|txn| {
            let key = signed.key.as_str();
            let mut rec = self
                .record_in_txn(txn, key)?
                .ok_or_else(|| Error::UnknownKey(key.to_string()))?;
            let mut a = rec.clone();
            a.signatures.clear();
            let mut b = signed.clone();
            b.signatures.clear();
            if a != b {
                return Err(Error::UnknownKey(format!(
                    "{key} (its record changed while it was being signed; sign again)"
                )));
            }
            rec.signatures.retain(|s| s.key != sig.key);
            rec.signatures.push(sig);
            rec.signatures.sort();
            self.write_record(txn, &rec)?;
            Ok(rec)
        })
    }

    fn record_in_txn(&self, txn: &WriteTransaction, key: &str) -> Result<Option<KeyRecord>> {
        let keys = txn.open_table(KEYS).map_err(self.index.db())?;
        keys.get(key)
            .map_err(self.index.db())?
            .map(|v| serde_json::from_slice(v.value()).map_err(|e| corrupt_record(key, e)))
            .transpose()
    }

    fn write_record(&self, txn: &WriteTransaction, rec: &KeyRecord) -> Result<()> {
        let mut keys = txn.open_table(KEYS).map_err(self.index.db())?;
        let json = serde_json::to_vec(rec).expect("records serialize");
        keys.insert(rec.key.as_str(), json.as_slice())
            .map_err(self.index.db())?;
        Ok(())
    }

    /// The record of `key`.
    pub fn record(&self, key: &Key) -> Result<KeyRecord> {
        self.index
            .read(|txn| self.record_in(txn, key.as_str()))?
            .ok_or_else(|| Error::UnknownKey(key.to_string()))
    }

    fn record_in(&self, txn: &ReadTransaction, key: &str) -> Result<Option<KeyRecord>> {
        let keys = txn.open_table(KEYS).map_err(self.index.db())?;
        keys.get(key)
            .map_err(self.index.db())?
            .map(|v| serde_json::from_slice(v.value()).map_err(|e| corrupt_record(key, e)))
            .transpose()
    }

    /// Every key whose name starts with `prefix`, in name order.
    pub fn keys(&self, prefix: &str) -> Result<Vec<KeyRecord>> {
        self.index.read(|txn| {
            let keys = txn.open_table(KEYS).map_err(self.index.db())?;
            let mut out = Vec::new();
            for item in keys.range(prefix..).map_err(self.index.db())? {
                let (k, v) = item.map_err(self.index.db())?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.push(
                    serde_json::from_slice(v.value()).map_err(|e| corrupt_record(k.value(), e))?,
                );
            }
            Ok(out)
        })
    }

    /// The history of `key`, oldest first.
    pub fn log(&self, key: &Key) -> Result<Vec<LogEntry>> {
        let out: Vec<LogEntry> = self.index.read(|txn| {
            let log = txn.open_table(KEY_LOG).map_err(self.index.db())?;
            let mut out = Vec::new();
            for item in log
                .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                .map_err(self.index.db())?
            {
                let (_, v) = item.map_err(self.index.db())?;
                out.push(
                    serde_json::from_slice(v.value())
                        .map_err(|e| corrupt_record(key.as_str(), e))?,
                );
            }
            Ok(out)
        })?;
        if out.is_empty() {
            return Err(Error::UnknownKey(key.to_string()));
        }
        Ok(out)
    }

    /// Unbinds `key` (its objects stay until `gc`). Returns the record it had.
    pub fn remove_key(&self, key: &Key) -> Result<KeyRecord> {
        self.index.write(|txn| {
            let rec = {
                let mut keys = txn.open_table(KEYS).map_err(self.index.db())?;
                let old = keys.remove(key.as_str()).map_err(self.index.db())?;
                match old {
                    Some(v) => serde_json::from_slice::<KeyRecord>(v.value())
                        .map_err(|e| corrupt_record(key.as_str(), e))?,
                    None => return Err(Error::UnknownKey(key.to_string())),
                }
            };
            self.append_log(
                txn,
                key,
                LogEntry {
                    time: now(),
                    action: LogAction::Remove,
                    root: None,
                    previous: Some(rec.root),
                },
            )?;
            Ok(rec)
        })
    }

    /// Resolves a key name or an id to a root. Ids are `blake3:<hex>`; anything else is a key.
    pub fn resolve(&self, spec: &str) -> Result<Root> {
        if let Ok(id) = spec.parse::<Id>() {
            return self.index.read(|txn| {
                let trees = txn.open_table(TREES).map_err(self.index.db())?;
                if trees.get(&id.0).map_err(self.index.db())?.is_some() {
                    return Ok(Root::Tree { id });
                }
                let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
                if blobs.get(&id.0).map_err(self.index.db())?.is_some() {
                    return Ok(Root::File {
                        id,
                        executable: false,
                    });
                }
                Err(Error::UnknownObject(id))
            });
        }
        let key = Key::new(spec)?;
        Ok(self.record(&key)?.root)
    }

    /// Loads every tree reachable from `root`, checking each against its id.
    pub fn closure(&self, root: &Root) -> Result<Closure> {
        let mut closure = Closure::default();
        let Root::Tree { id } = root else {
            return Ok(closure);
        };
        self.index.read(|txn| {
            let trees = txn.open_table(TREES).map_err(self.index.db())?;
            let mut stack = vec![*id];
            while let Some(id) = stack.pop() {
                if closure.trees.contains_key(&id) {
                    continue;
                }
                let bytes = trees
                    .get(&id.0)
                    .map_err(self.index.db())?
                    .ok_or(Error::UnknownObject(id))?;
                let tree = decode_checked(id, bytes.value())?;
                for e in &tree.entries {
                    if let EntryKind::Dir { tree } = e.kind {
                        stack.push(tree);
                    }
                }
                closure.trees.insert(id, tree);
            }
            Ok(())
        })?;
        Ok(closure)
    }

    /// The tree `id`, checked against its id.
    pub fn tree(&self, id: &Id) -> Result<Tree> {
        self.index.read(|txn| {
            let trees = txn.open_table(TREES).map_err(self.index.db())?;
            let bytes = trees
                .get(&id.0)
                .map_err(self.index.db())?
                .ok_or(Error::UnknownObject(*id))?;
            decode_checked(*id, bytes.value())
        })
    }

    /// Writes the content of a file to `out`, verified. `path` selects a file inside a tree
    /// root (following no symlinks); a file root takes no path. The blob is checked in full
    /// before the first byte is written, so a corrupt blob produces no output.
    pub fn cat(
        &self,
        root: &Root,
        path: Option<&str>,
        out: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let lock = self.lock(LockMode::Shared)?;
        self.cat_locked(root, path, out, &lock)
    }

    /// As [`Store::cat`], for a caller that already holds the gc lock.
    pub fn cat_locked(
        &self,
        root: &Root,
        path: Option<&str>,
        out: &mut dyn std::io::Write,
        _held: &GcLock,
    ) -> Result<u64> {
        let (id, size) = match (root, path) {
            (Root::File { id, .. }, None) => (*id, None),
            (Root::File { id, .. }, Some(p)) => {
                return Err(Error::TreePath {
                    path: p.to_string(),
                    root: *id,
                    reason: "the root is a single file, not a tree".into(),
                });
            }
            (Root::Tree { id }, None) => {
                return Err(Error::TreePath {
                    path: String::new(),
                    root: *id,
                    reason: "the root is a tree: give the path of a file inside it".into(),
                });
            }
            (Root::Tree { id }, Some(p)) => {
                let (blob, size) = self.find_file(*id, p)?;
                (blob, Some(size))
            }
        };
        let hint = self.placement_of(&id)?;
        self.blobs
            .read_verified_hinted(&id, size, hint, &mut std::io::sink())?;
        Ok(self.blobs.read_verified_hinted(&id, size, hint, out)?)
    }

    fn find_file(&self, root: Id, path: &str) -> Result<(Id, u64)> {
        let fail = |reason: &str| Error::TreePath {
            path: path.to_string(),
            root,
            reason: reason.to_string(),
        };
        let mut tree = self.tree(&root)?;
        let segs: Vec<&str> = path
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        if segs.is_empty() {
            return Err(fail("empty path"));
        }
        for (i, seg) in segs.iter().enumerate() {
            let entry = tree
                .get(seg.as_bytes())
                .ok_or_else(|| fail("no such entry"))?;
            let last = i + 1 == segs.len();
            match (&entry.kind, last) {
                (EntryKind::Dir { tree: t }, false) => {
                    let t = *t;
                    tree = self.tree(&t)?;
                }
                (EntryKind::File { size, blob }, true) => return Ok((*blob, *size)),
                (EntryKind::Hardlink { target }, true) => {
                    let target = String::from_utf8_lossy(target).into_owned();
                    return self.find_file(root, &target);
                }
                (_, false) => return Err(fail(&format!("{seg:?} is not a directory"))),
                (k, true) => return Err(fail(&format!("is a {}, not a file", k.type_name()))),
            }
        }
        unreachable!("loop returns on the last segment")
    }
}

/// What an ingest hashed, for updating the stat cache once the commit has succeeded.
struct Ingested {
    cache: Option<StatCache>,
    root: PathBuf,
    files: Vec<crate::ingest::ScannedFile>,
    hashes: Vec<(Id, u64)>,
}

impl Ingested {
    /// Replaces the stat cache of the ingested root with what this ingest saw (settled files
    /// only). An entry is written only for a file whose content hashed to the id (or matched an
    /// earlier entry) in this ingest.
    fn save_cache(self) {
        let Some(cache) = &self.cache else { return };
        cache.save(
            self.files
                .iter()
                .zip(&self.hashes)
                .filter(|(f, (_, size))| f.stat.size == *size)
                .map(|(f, (id, _))| (f.rel(&self.root), f.stat, *id)),
        );
    }
}

/// Decodes tree bytes from the index after checking they hash to `id`.
pub(crate) fn decode_checked(id: Id, bytes: &[u8]) -> Result<Tree> {
    let got = Id::of(bytes);
    if got != id {
        return Err(Error::CorruptTree {
            id,
            reason: format!("encoding hashes to {got}"),
        });
    }
    Tree::decode(bytes).map_err(|e| Error::CorruptTree {
        id,
        reason: e.to_string(),
    })
}

fn corrupt_record(key: &str, e: serde_json::Error) -> Error {
    Error::UnknownKey(format!("{key} (its record is unreadable: {e})"))
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Small files read at once by [`Store::put`]'s ingest: their contents are held in memory
/// until they are hashed, checked against the index and stored.
const READ_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// At most this many files per batch (one index lookup each; a batch is one read transaction).
const READ_BATCH_FILES: usize = 8192;

/// Splits `jobs` into runs of at most [`READ_BATCH_FILES`] files and about
/// [`READ_BATCH_BYTES`] bytes, by the sizes `size` gives.
fn batches(jobs: &[usize], size: impl Fn(usize) -> u64) -> Vec<&[usize]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (n, &i) in jobs.iter().enumerate() {
        if n > start && (bytes + size(i) > READ_BATCH_BYTES || n - start >= READ_BATCH_FILES) {
            out.push(&jobs[start..n]);
            start = n;
            bytes = 0;
        }
        bytes += size(i);
    }
    if start < jobs.len() {
        out.push(&jobs[start..]);
    }
    out
}

/// Reads a file the scan found to be small. `None` if it has grown past
/// [`SMALL_BLOB_MAX`] since (the caller streams it instead).
fn read_small_file(path: &Path, size: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut buf = Vec::with_capacity(size as usize + 1);
    file.take(SMALL_BLOB_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(Error::io(path))?;
    Ok((buf.len() as u64 <= SMALL_BLOB_MAX).then_some(buf))
}
