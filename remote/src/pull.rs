//! Pull: fetch key records, then only the objects missing locally, verify every one, and bind
//! each key once its whole closure is present.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Instant;

use cairn_store::blobs::Encoding;
use cairn_store::{EntryKind, Id, Import, ImportBlob, Key, KeyRecord, Progress, Root, Store, Tree};
use futures::StreamExt;
use serde::Serialize;

use crate::config::TrustPolicy;
use crate::connection::{Remote, RequestCounts};
use crate::error::{RemoteError, Result};
use crate::ledger::{Ledger, Location};
use crate::pack::{self, IndexEntry, ObjectKind};
use crate::record::{RECORD_FORMAT, RemoteRecord};

/// Neighbouring objects of one pack are fetched in one ranged GET when the gap between them is
/// at most this many bytes (fewer requests for a little more transfer).
pub const COALESCE_GAP: u64 = 1024 * 1024;
/// A coalesced range never exceeds this many bytes. It bounds memory: each request in flight
/// holds its range and the objects decoded from it (at 32 MiB, `get --remote` of a 1 GB tree
/// peaked at 194 MB RSS: docs/benchmarks.md, R2).
pub const MAX_RANGE: u64 = 16 * 1024 * 1024;

/// What a pull did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PullSummary {
    /// The records bound, in the order asked.
    pub keys: Vec<KeyRecord>,
    /// Objects fetched and verified.
    pub objects_received: u64,
    /// Bytes of those objects as stored on the remote.
    pub bytes_received: u64,
    /// Objects the local store already had.
    pub objects_skipped: u64,
    /// Requests made.
    pub requests: RequestCounts,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Fetches `key`'s record from `remote`, or `None` if the remote has no such key.
pub async fn fetch_record(remote: &Remote, key: &Key) -> Result<Option<RemoteRecord>> {
    let path = remote.key_path(key);
    let Some(bytes) = remote.get_opt(&path).await? else {
        return Ok(None);
    };
    let rr: RemoteRecord = serde_json::from_slice(&bytes)
        .map_err(|e| remote.corrupt(format!("key record {path}"), e.to_string()))?;
    if rr.format != RECORD_FORMAT {
        return Err(remote.corrupt(
            format!("key record {path}"),
            format!("unknown format {}", rr.format),
        ));
    }
    if rr.record.key != *key {
        return Err(remote.corrupt(
            format!("key record {path}"),
            format!("it names key {}", rr.record.key),
        ));
    }
    Ok(Some(rr))
}

/// Where a needed object is and what it is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placed {
    pub(crate) pack: Id,
    pub(crate) entry: IndexEntry,
}

/// Pulls `keys` from `remote` into `store` and binds them.
pub async fn pull(
    store: &Store,
    remote: &Remote,
    keys: &[Key],
    trust: &TrustPolicy,
    progress: &dyn Progress,
) -> Result<PullSummary> {
    let start = Instant::now();
    if remote.write_only() {
        return Err(RemoteError::Url {
            url: remote.url().to_string(),
            reason: "remote is write-only; cairn does not read from it".into(),
        });
    }
    let lock = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.lock_shared())
            .await
            .expect("join")?
    };

    // Records.
    let mut records = Vec::new();
    for key in keys {
        match fetch_record(remote, key).await? {
            Some(rr) => {
                // Before any object is fetched: who bound this key?
                if trust.required {
                    cairn_store::sign::check_trusted(&rr.record, &trust.trusted).map_err(|e| {
                        RemoteError::Untrusted {
                            remote: remote.url().to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                }
                records.push(rr)
            }
            None => {
                return Err(RemoteError::NoSuchKey {
                    remote: remote.url().to_string(),
                    key: key.to_string(),
                });
            }
        }
    }

    // Pack indexes named by the records.
    let packs: HashSet<Id> = records
        .iter()
        .flat_map(|r| r.packs.iter().copied())
        .collect();
    let standalone: HashSet<Id> = records
        .iter()
        .flat_map(|r| r.blobs.iter().copied())
        .collect();
    let indexes = futures::stream::iter(packs.iter().map(|p| async move {
        let path = remote.index_path(p);
        let bytes = remote.get(&path).await?;
        let (entries, _len) = pack::decode_index(&bytes, p)
            .map_err(|reason| remote.corrupt(format!("pack index {path}"), reason))?;
        Ok::<_, RemoteError>((*p, entries))
    }))
    .buffer_unordered(remote.options().concurrency)
    .collect::<Vec<_>>()
    .await;
    let mut placed: HashMap<Id, Placed> = HashMap::new();
    for r in indexes {
        let (pack, entries) = r?;
        for entry in entries {
            placed.entry(entry.id).or_insert(Placed { pack, entry });
        }
    }

    // Trees the local store lacks, all fetched in one round (they sit together in the packs).
    let tree_ids: Vec<Id> = placed
        .values()
        .filter(|p| p.entry.kind == ObjectKind::Tree)
        .map(|p| p.entry.id)
        .collect();
    let local_trees = store.present_trees(&tree_ids)?;
    let fetch_trees: Vec<Placed> = placed
        .values()
        .filter(|p| p.entry.kind == ObjectKind::Tree && !local_trees.contains(&p.entry.id))
        .copied()
        .collect();
    let mut summary = PullSummary::default();
    let fetched = fetch_packed(
        remote,
        &fetch_trees,
        &cairn_store::NoProgress,
        |_, _, content| Ok(content),
    )
    .await?;
    let mut remote_trees: HashMap<Id, Vec<u8>> = HashMap::new();
    for (p, content) in fetched {
        summary.bytes_received += p.entry.len;
        remote_trees.insert(p.entry.id, content);
    }

    // Walk each closure: local trees are complete (the store only records a tree together with
    // its whole closure); remote ones are decoded and followed.
    let mut needed_trees: Vec<(Id, Vec<u8>)> = Vec::new();
    let mut needed_blobs: HashMap<Id, u64> = HashMap::new();
    let mut visited = HashSet::new();
    for rr in &records {
        let missing = |object: Id| RemoteError::Missing {
            remote: remote.url().to_string(),
            key: rr.record.key.to_string(),
            object: object.to_string(),
        };
        for a in rr.record.attachments.values() {
            needed_blobs.insert(a.id, a.size);
        }
        let mut stack = match rr.record.root {
            Root::File { id, .. } => {
                let size = placed
                    .get(&id)
                    .map(|p| p.entry.size)
                    .or_else(|| standalone.contains(&id).then_some(rr.record.size))
                    .ok_or_else(|| missing(id))?;
                needed_blobs.insert(id, size);
                continue;
            }
            Root::Tree { id } => vec![id],
        };
        while let Some(id) = stack.pop() {
            if !visited.insert(id) || local_trees.contains(&id) {
                continue;
            }
            let bytes = match remote_trees.get(&id) {
                Some(b) => b.clone(),
                None if store.present_trees(&[id])?.contains(&id) => continue,
                None => return Err(missing(id)),
            };
            let tree = Tree::decode(&bytes)
                .map_err(|e| remote.corrupt(format!("tree {id}"), e.to_string()))?;
            for e in &tree.entries {
                match e.kind {
                    EntryKind::Dir { tree } => stack.push(tree),
                    EntryKind::File { size, blob } => {
                        needed_blobs.insert(blob, size);
                    }
                    _ => {}
                }
            }
            needed_trees.push((id, bytes));
        }
    }
    summary.objects_received += needed_trees.len() as u64;

    // Blobs the local store lacks.
    let wanted: Vec<Id> = needed_blobs.keys().copied().collect();
    let present = store.present_blobs(&wanted)?;
    summary.objects_skipped = present.len() as u64;
    let mut in_packs = Vec::new();
    let mut alone = Vec::new();
    for (id, size) in &needed_blobs {
        if present.contains(id) {
            continue;
        }
        match placed.get(id) {
            Some(p) if p.entry.kind == ObjectKind::Blob && p.entry.size == *size => {
                in_packs.push(*p)
            }
            _ if standalone.contains(id) => alone.push((*id, *size)),
            _ => {
                let key = records
                    .iter()
                    .map(|r| r.record.key.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(RemoteError::Missing {
                    remote: remote.url().to_string(),
                    key,
                    object: id.to_string(),
                });
            }
        }
    }
    progress.start("pulling", (in_packs.len() + alone.len()) as u64);
    let stage_store = store.clone();
    let packed = fetch_packed(remote, &in_packs, progress, move |p, stored, _content| {
        Ok((
            stage_store.stage_encoded(p.entry.id, p.entry.size, p.entry.encoding, stored)?,
            p.entry.len,
        ))
    });
    let large = futures::stream::iter(
        alone
            .into_iter()
            .map(|(id, size)| fetch_standalone(store, remote, id, size)),
    )
    .buffer_unordered(remote.options().concurrency.clamp(1, 4))
    .collect::<Vec<_>>();
    // Packs and standalone blobs download at the same time: a tree with a few large files
    // otherwise waits for all its small ones first.
    let (staged, large) = futures::join!(packed, large);
    let mut blobs: Vec<ImportBlob> = Vec::new();
    for (_, (b, stored_len)) in staged? {
        summary.bytes_received += stored_len;
        summary.objects_received += 1;
        blobs.push(b);
    }
    for r in large {
        let (b, n) = r?;
        summary.bytes_received += n;
        summary.objects_received += 1;
        progress.advance(1);
        blobs.push(b);
    }
    progress.finish();

    // One commit: objects, then each record once its closure checks out.
    let s = store.clone();
    let bound = tokio::task::spawn_blocking(move || -> Result<Vec<KeyRecord>> {
        let mut bound = Vec::new();
        let mut import = Import {
            blobs,
            trees: needed_trees,
            bind: None,
        };
        for rr in records {
            import.bind = Some(rr.record);
            if let Some(r) = s.import(std::mem::take(&mut import), &lock)? {
                bound.push(r);
            }
        }
        drop(lock);
        Ok(bound)
    })
    .await
    .expect("join")?;
    summary.keys = bound;

    // What we learned about the remote's contents.
    let ledger = Ledger::new(
        store.dir(),
        remote.url(),
        std::time::Duration::from_secs(120),
    );
    ledger.record(
        placed
            .values()
            .map(|p| (p.entry.id, Location::Pack(p.pack)))
            .chain(standalone.iter().map(|id| (*id, Location::Standalone))),
    )?;
    summary.requests = remote.counts();
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// The ranged GETs that fetch `objects`: (pack, start, end, members), coalesced per pack.
pub(crate) fn range_jobs(objects: &[Placed]) -> Vec<(Id, u64, u64, Vec<Placed>)> {
    let mut by_pack: HashMap<Id, Vec<Placed>> = HashMap::new();
    for p in objects {
        by_pack.entry(p.pack).or_default().push(*p);
    }
    by_pack
        .into_iter()
        .flat_map(|(pack, members)| {
            ranges_of(members)
                .into_iter()
                .map(move |(s, e, m)| (pack, s, e, m))
        })
        .collect()
}

/// Coalesced ranges of one pack: (start, end, members).
fn ranges_of(mut members: Vec<Placed>) -> Vec<(u64, u64, Vec<Placed>)> {
    members.sort_by_key(|p| p.entry.offset);
    let mut out: Vec<(u64, u64, Vec<Placed>)> = Vec::new();
    for p in members {
        let (s, e) = (p.entry.offset, p.entry.offset + p.entry.len);
        match out.last_mut() {
            Some((rs, re, m)) if s <= *re + COALESCE_GAP && e - *rs <= MAX_RANGE => {
                *re = (*re).max(e);
                m.push(p);
            }
            _ => out.push((s, e, vec![p])),
        }
    }
    out
}

/// Fetches `objects` (grouped by pack, coalesced ranges, requests in parallel), checks each
/// against its id, and hands its stored bytes and content to `take` (on a blocking thread).
async fn fetch_packed<T: Send + 'static>(
    remote: &Remote,
    objects: &[Placed],
    progress: &dyn Progress,
    take: impl Fn(Placed, &[u8], Vec<u8>) -> Result<T> + Send + Sync + Clone + 'static,
) -> Result<Vec<(Placed, T)>> {
    let jobs = range_jobs(objects);
    let mut results = futures::stream::iter(jobs.into_iter().map(|(pack, s, e, members)| {
        let take = take.clone();
        let url = remote.url().to_string();
        async move {
            let path = remote.pack_path(&pack);
            let bytes = remote.get_range(&path, s..e).await?;
            let path_s = path.to_string();
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(members.len());
                for p in members {
                    let a = (p.entry.offset - s) as usize;
                    let stored = &bytes[a..a + p.entry.len as usize];
                    let content = pack::decode_object(&p.entry, stored).map_err(|reason| {
                        RemoteError::Corrupt {
                            remote: url.clone(),
                            what: format!("object {} in {path_s}", p.entry.id),
                            reason,
                        }
                    })?;
                    out.push((p, take(p, stored, content)?));
                }
                Ok::<_, RemoteError>(out)
            })
            .await
            .expect("join")
        }
    }))
    .buffer_unordered(remote.options().concurrency);
    let mut all = Vec::new();
    while let Some(r) = results.next().await {
        let batch = r?;
        progress.advance(batch.len() as u64);
        all.extend(batch);
    }
    Ok(all)
}

/// Downloads a standalone blob (a zstd stream) to a temp file, checks it, and stages it.
async fn fetch_standalone(
    store: &Store,
    remote: &Remote,
    id: Id,
    size: u64,
) -> Result<(ImportBlob, u64)> {
    let path = remote.blob_path(&id);
    let got = remote.get_stream(&path).await?;
    let tmp = store.temp_file()?;
    let mut file = tmp
        .as_file()
        .try_clone()
        .map_err(cairn_store::Error::io(tmp.path()))?;
    let mut stream = got.into_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(remote.request_err(&path))?;
        n += chunk.len() as u64;
        file.write_all(&chunk)
            .map_err(cairn_store::Error::io(tmp.path()))?;
    }
    remote.add_bytes_down(n);
    let s = store.clone();
    let url = remote.url().to_string();
    let what = format!("blob {id} at {path}");
    tokio::task::spawn_blocking(move || {
        let corrupt = |reason: String| RemoteError::Corrupt {
            remote: url.clone(),
            what: what.clone(),
            reason,
        };
        let f = std::fs::File::open(tmp.path()).map_err(cairn_store::Error::io(tmp.path()))?;
        let mut dec = zstd::Decoder::new(f).map_err(|e| corrupt(e.to_string()))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let k = std::io::Read::read(&mut dec, &mut buf).map_err(|e| corrupt(e.to_string()))?;
            if k == 0 {
                break;
            }
            total += k as u64;
            if total > size {
                return Err(corrupt(format!("longer than its {size} bytes")));
            }
            hasher.update(&buf[..k]);
        }
        if total != size {
            return Err(corrupt(format!("{total} bytes where {size} were recorded")));
        }
        let got = Id::from_hash(hasher.finalize());
        if got != id {
            return Err(corrupt(format!("content hashes to {got}")));
        }
        Ok((
            s.stage_file(id, size, Encoding::Zstd, tmp.into_temp_path())?,
            n,
        ))
    })
    .await
    .expect("join")
}
