//! The put pipeline: a folder or file on disk into blobs and trees, reading each small file
//! once and skipping files the stat cache vouches for (see `docs/architecture.md`, "put").

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::blobs::{SMALL_BLOB_MAX, Source, StoredBlob, hash_file_sized};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ingest::{self, Built, IngestOptions};
use crate::progress::Progress;
use crate::statcache::StatCache;
use crate::store::Store;

/// Scans, hashes, and stores the blobs the index lacks; makes them durable. Files whose
/// stat matches the stat cache (see `statcache`) are not read; the cache is saved again
/// after the commit, by [`Ingested::save_cache`].
pub(crate) fn ingest_path(
    store: &Store,
    path: &Path,
    opts: &IngestOptions,
    progress: &dyn Progress,
) -> Result<(Built, Vec<StoredBlob>, Ingested)> {
    let cache = StatCache::load(&store.dir().join("statcache"), path);
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
        let present = store.has_blobs(&ids)?;
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
            .map(|(id, content)| {
                Ok(store
                    .blobs
                    .write(Source::Content { id, content }, None)?
                    .persist(&store.blobs)?)
            })
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
    let present = store.has_blobs(&candidates)?;
    let todo: Vec<(Id, usize)> = first_file
        .into_iter()
        .filter(|(id, _)| !present.contains(id))
        .collect();
    progress.start("storing", todo.len() as u64);
    let rest = todo
        .par_iter()
        .map(|(id, i)| {
            let f = &files[*i];
            let r = store
                .blobs
                .write(
                    Source::File {
                        path: &f.path,
                        expect: *id,
                        len: f.stat.size,
                    },
                    None,
                )
                .and_then(|p| p.persist(&store.blobs))
                .map_err(Error::from);
            progress.advance(1);
            r
        })
        .collect::<Result<Vec<_>>>()?;
    stored.extend(rest);
    progress.finish();
    if !stored.is_empty() {
        store.blobs.sync().map_err(Error::io(store.blobs.root()))?;
    }
    let ingested = Ingested {
        cache,
        root: path.to_path_buf(),
        files,
        hashes,
    };
    Ok((built, stored, ingested))
}

/// What an ingest hashed, for updating the stat cache once the commit has succeeded.
pub(crate) struct Ingested {
    cache: Option<StatCache>,
    root: PathBuf,
    files: Vec<crate::ingest::ScannedFile>,
    hashes: Vec<(Id, u64)>,
}

impl Ingested {
    /// Replaces the stat cache of the ingested root with what this ingest saw (settled files
    /// only). An entry is written only for a file whose content hashed to the id (or matched an
    /// earlier entry) in this ingest.
    pub(crate) fn save_cache(self) {
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
