//! Pull: fetch key records, then only the objects missing locally, verify every one, and bind
//! each key once its whole closure is present.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use cairn_store::blobs::Encoding;
use cairn_store::walk::{self, Load};
use cairn_store::{
    EntryKind, Id, Import, ImportSession, Key, KeyRecord, Progress, Root, StagedBlob, Store, Tree,
};
use futures::StreamExt;
use serde::Serialize;

use crate::config::TrustPolicy;
use crate::connection::{Remote, RequestCounts};
use crate::error::{RemoteError, Result};
use crate::fetch::{self, Placed};
use crate::ledger::{Ledger, Location};
use crate::pack::{self, ObjectKind};
use crate::record::{RECORD_FORMAT, RemoteRecord};
use crate::spans::Span;

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
    Ok(fetch_record_tagged(remote, key).await?.map(|(rr, _)| rr))
}

/// [`fetch_record`], with the record object's ETag (for a conditional rewrite).
pub(crate) async fn fetch_record_tagged(
    remote: &Remote,
    key: &Key,
) -> Result<Option<(RemoteRecord, Option<String>)>> {
    let path = remote.key_path(key);
    let Some((bytes, tag)) = remote.get_tagged(&path).await? else {
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
    Ok(Some((rr, tag)))
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
    // From before the first object is staged until the commit, no gc may run.
    let session = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.import())
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
    let local_trees = blocking(&session, move |s| s.reader().has_trees(&tree_ids)).await?;
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

    // Walk each closure (on the blocking pool: it decodes every new tree).
    let Needed {
        trees: needed_trees,
        blobs: needed_blobs,
    } = {
        let (s, recs, placed, standalone, url) = (
            session.clone(),
            records.iter().map(|r| r.record.clone()).collect::<Vec<_>>(),
            placed.clone(),
            standalone.clone(),
            remote.url().to_string(),
        );
        tokio::task::spawn_blocking(move || {
            plan(
                &s,
                &recs,
                &local_trees,
                remote_trees,
                &placed,
                &standalone,
                &url,
            )
        })
        .await
        .expect("join")?
    };
    summary.objects_received += needed_trees.len() as u64;

    // Blobs the local store lacks.
    let wanted: Vec<Id> = needed_blobs.keys().copied().collect();
    let present = blocking(&session, move |s| s.reader().has_blobs(&wanted)).await?;
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
    let stager = session.clone();
    let packed = fetch_packed(remote, &in_packs, progress, move |p, stored, _content| {
        Ok((
            stager.stage_encoded(p.entry.id, p.entry.size, p.entry.encoding, stored)?,
            p.entry.len,
        ))
    });
    let large = futures::stream::iter(
        alone
            .into_iter()
            .map(|(id, size)| fetch_standalone(&session, remote, id, size)),
    )
    .buffer_unordered(remote.options().concurrency.clamp(1, 4))
    .collect::<Vec<_>>();
    // Packs and standalone blobs download at the same time: a tree with a few large files
    // otherwise waits for all its small ones first.
    let (staged, large) = futures::join!(packed, large);
    let mut blobs: Vec<StagedBlob> = Vec::new();
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
    let bound = blocking(&session, move |s| {
        let mut bound = Vec::new();
        let mut import = Import {
            blobs,
            trees: needed_trees,
            ..Import::default()
        };
        for rr in records {
            import.bind = Some(rr.record);
            if let Some(r) = s.commit(std::mem::take(&mut import))? {
                bound.push(r);
            }
        }
        Ok(bound)
    })
    .await?;
    drop(session);
    summary.keys = bound;

    // What we learned about the remote's contents.
    Ledger::new(store, remote.url())
        .record(
            placed
                .values()
                .map(|p| {
                    let span = Span {
                        offset: p.entry.offset,
                        len: p.entry.len,
                    };
                    (p.entry.id, Location::Pack(p.pack), Some(span))
                })
                .chain(
                    standalone
                        .iter()
                        .map(|id| (*id, Location::Standalone, None)),
                )
                .collect(),
        )
        .await?;
    crate::usage::touch(remote, keys).await;
    summary.requests = remote.counts();
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// The trees and blobs `records` need that the local store lacks. Local trees are complete
/// (the store only records a tree together with its whole closure); fetched ones are decoded
/// and followed; anything else is missing from what the records name.
fn plan(
    session: &ImportSession,
    records: &[KeyRecord],
    local_trees: &HashSet<Id>,
    mut fetched: HashMap<Id, Vec<u8>>,
    placed: &HashMap<Id, Placed>,
    standalone: &HashSet<Id>,
    url: &str,
) -> Result<Needed> {
    let mut needed_trees: Vec<(Id, Vec<u8>)> = Vec::new();
    let mut taken: HashSet<Id> = HashSet::new();
    let mut needed_blobs: HashMap<Id, u64> = HashMap::new();
    for rec in records {
        let missing = |object: Id| RemoteError::Missing {
            remote: url.to_string(),
            key: rec.key.to_string(),
            object: object.to_string(),
        };
        for a in rec.attachments.values() {
            needed_blobs.insert(a.id, a.size);
        }
        let root = match rec.root {
            Root::File { id, .. } => {
                let size = placed
                    .get(&id)
                    .map(|p| p.entry.size)
                    .or_else(|| standalone.contains(&id).then_some(rec.size))
                    .ok_or_else(|| missing(id))?;
                needed_blobs.insert(id, size);
                continue;
            }
            Root::Tree { id } => id,
        };
        walk::closure(
            [root],
            |id| {
                if local_trees.contains(id) || taken.contains(id) {
                    return Ok(Load::Known);
                }
                match fetched.remove(id) {
                    Some(bytes) => {
                        let tree = Tree::decode(&bytes).map_err(|e| RemoteError::Corrupt {
                            remote: url.to_string(),
                            what: format!("tree {id}"),
                            reason: e.to_string(),
                        })?;
                        taken.insert(*id);
                        needed_trees.push((*id, bytes));
                        Ok(Load::Tree(tree))
                    }
                    None if session.reader().has_trees(&[*id])?.contains(id) => Ok(Load::Known),
                    None => Err(missing(*id)),
                }
            },
            |_, tree| {
                for e in &tree.entries {
                    if let EntryKind::File { size, blob } = e.kind {
                        needed_blobs.insert(blob, size);
                    }
                }
                Ok(())
            },
        )?;
    }
    Ok(Needed {
        trees: needed_trees,
        blobs: needed_blobs,
    })
}

/// What a pull must fetch: trees (id, encoding) and blobs (id, size) the local store lacks.
struct Needed {
    trees: Vec<(Id, Vec<u8>)>,
    blobs: HashMap<Id, u64>,
}

/// Runs `f` with a clone of `session` on the blocking pool (index transactions and file
/// writes never run on the async workers).
async fn blocking<T: Send + 'static>(
    session: &ImportSession,
    f: impl FnOnce(&ImportSession) -> cairn_store::Result<T> + Send + 'static,
) -> Result<T> {
    let s = session.clone();
    Ok(tokio::task::spawn_blocking(move || f(&s))
        .await
        .expect("blocking task panicked")?)
}

/// Fetches `objects` (grouped by pack, coalesced ranges, requests in parallel), checks each
/// against its id, and hands its stored bytes and content to `take` (on a blocking thread).
async fn fetch_packed<T: Send + 'static>(
    remote: &Remote,
    objects: &[Placed],
    progress: &dyn Progress,
    take: impl Fn(Placed, &[u8], Vec<u8>) -> Result<T> + Send + Sync + Clone + 'static,
) -> Result<Vec<(Placed, T)>> {
    let url = remote.url().to_string();
    let mut ranges = fetch::ranges(remote, objects);
    let mut all = Vec::new();
    while let Some(range) = ranges.next().await {
        let take = take.clone();
        let url = url.clone();
        let batch = tokio::task::spawn_blocking(move || {
            let fetch::FetchedRange { job, path, bytes } = range;
            let bytes = bytes?;
            let mut out = Vec::with_capacity(job.members.len());
            for p in &job.members {
                let (stored, content) =
                    job.object(&bytes, p)
                        .map_err(|reason| RemoteError::Corrupt {
                            remote: url.clone(),
                            what: format!("object {} in {path}", p.entry.id),
                            reason,
                        })?;
                out.push((*p, take(*p, stored, content)?));
            }
            Ok::<_, RemoteError>(out)
        })
        .await
        .expect("join")?;
        progress.advance(batch.len() as u64);
        all.extend(batch);
    }
    Ok(all)
}

/// Downloads a standalone blob (a zstd stream) to a temp file, checking it as it arrives, and
/// stages it.
async fn fetch_standalone(
    session: &ImportSession,
    remote: &Remote,
    id: Id,
    size: u64,
) -> Result<(StagedBlob, u64)> {
    let s = session.clone();
    let tmp = tokio::task::spawn_blocking(move || s.reader().temp_file())
        .await
        .expect("join")?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(cairn_store::Error::io(tmp.path()))?;
    let keep = (file, tmp.path().to_path_buf());
    match fetch::standalone(remote, id, size, Some(keep)).await? {
        Ok(n) => {
            let staged = blocking(session, move |s| {
                s.stage_file(id, size, Encoding::Zstd, tmp.into_temp_path())
            })
            .await?;
            Ok((staged, n))
        }
        Err(reason) => {
            Err(remote.corrupt(format!("blob {id} at {}", remote.blob_path(&id)), reason))
        }
    }
}
