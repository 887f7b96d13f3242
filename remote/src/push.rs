//! Push: upload what a remote lacks of some keys' closures, then the key records.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use cairn_store::blobs::{Encoding, SMALL_BLOB_MAX, compress_frame};
use cairn_store::{Id, Key, KeyRecord, Progress, ReadSession, Store};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::{Remote, RequestCounts};
use crate::error::{RemoteError, Result};
use crate::ledger::{Known, Ledger, Location};
use crate::pack::{self, ObjectKind, PACK_TARGET, PACKED_MAX, PackBuilder, SealedPack};
use crate::record::{RECORD_FORMAT, RemoteRecord};
use crate::spans::{Span, Spans};
use crate::tombstone::{self, Unit};

/// zstd level for trees and for blobs the local store keeps raw but a remote gets compressed.
const REMOTE_ZSTD_LEVEL: i32 = 3;

/// Packs being built and uploaded at once.
const PACKS_IN_FLIGHT: usize = 3;

/// Rounds of the tombstone check before the records are written (each re-uploads what a gc
/// tombstoned since the last; more than one is needed only if a gc keeps marking meanwhile).
const RECHECKS: usize = 3;

/// Bytes read from a large blob's file per part handed to the uploader.
const UPLOAD_CHUNK: usize = 1024 * 1024;

/// What a push did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PushSummary {
    /// Keys whose records were written.
    pub keys: Vec<String>,
    /// Objects uploaded.
    pub objects_sent: u64,
    /// Bytes of objects uploaded (as stored on the remote).
    pub bytes_sent: u64,
    /// Objects the remote already had.
    pub objects_skipped: u64,
    /// Packs written.
    pub packs: u64,
    /// Large blobs written on their own.
    pub standalone_blobs: u64,
    /// Requests made.
    pub requests: RequestCounts,
    /// Wall-clock seconds.
    pub seconds: f64,
}

struct Obj {
    id: Id,
    kind: ObjectKind,
    size: u64,
    tree: Option<Vec<u8>>,
}

/// Uploads `keys` (their closures, then their records) to `remote`.
pub async fn push(
    store: &Store,
    remote: &Remote,
    keys: &[Key],
    progress: &dyn Progress,
) -> Result<PushSummary> {
    let start = Instant::now();
    if remote.read_only() {
        return Err(RemoteError::ReadOnly(remote.url().to_string()));
    }
    // Blobs we are about to upload must not be collected meanwhile.
    let session = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.read())
            .await
            .expect("join")?
    };
    remote.check_layout(true).await?;

    // Closures (read and encoded on the blocking pool).
    let (records, objects, closure_of) = {
        let (s, keys) = (session.clone(), keys.to_vec());
        tokio::task::spawn_blocking(move || closures(&s, &keys))
            .await
            .expect("join")?
    };

    // What the remote has, per the ledger, confirmed with one HEAD per pack or blob.
    let ledger = Ledger::new(store, remote.url());
    let all_ids: Vec<Id> = objects.iter().map(|o| o.id).collect();
    let Known {
        locations: mut known,
        mut spans,
    } = ledger.lookup(all_ids).await?;
    // Units a remote gc has tombstoned count as gone: their objects are uploaded again. Listed
    // before the HEADs below, so a unit found present then and not tombstoned now cannot be
    // deleted until a grace period after this listing (see `collect`).
    let checked_at = Instant::now();
    let tombstoned = tombstone::list(remote).await?;
    let salt = !tombstoned.is_empty();
    // One HEAD per pack relied on, and per standalone blob; a GET of the index instead where
    // the ledger does not know where in the pack some object lies (the record's spans need it).
    let mut distinct: HashMap<(bool, Id), Vec<Id>> = HashMap::new();
    for (id, loc) in &known {
        let target = match loc {
            Location::Pack(p) => (true, *p),
            Location::Standalone => (false, *id),
        };
        distinct.entry(target).or_default().push(*id);
    }
    let checks = futures::stream::iter(distinct.into_iter().map(|((is_pack, target), ids)| {
        let need_index = is_pack && ids.iter().any(|id| !spans.contains_key(id));
        async move {
            if need_index {
                return pack_places(remote, target, ids).await;
            }
            let path = if is_pack {
                remote.index_path(&target) // written after its pack: present means both are
            } else {
                remote.blob_path(&target)
            };
            remote.head(&path).await.map(|m| (m.is_some(), ids, None))
        }
    }))
    .buffer_unordered(remote.options().concurrency)
    .collect::<Vec<_>>()
    .await;
    let mut gone = Vec::new();
    known.retain(|id, loc| {
        let unit = match loc {
            Location::Pack(p) => Unit::Pack(*p),
            Location::Standalone => Unit::Blob(*id),
        };
        if tombstoned.contains_key(&unit) {
            gone.push((*id, *loc));
            return false;
        }
        true
    });
    let mut placed = Vec::new();
    for r in checks {
        let (present, ids, found) = r?;
        for id in ids {
            // Absent, or (per the index just read) not where the ledger says.
            let span = found.as_ref().and_then(|f| f.get(&id).copied());
            if !present || (found.is_some() && span.is_none()) {
                if let Some(loc) = known.remove(&id) {
                    gone.push((id, loc));
                }
            } else if let (Some(span), Some(loc)) = (span, known.get(&id)) {
                spans.insert(id, span);
                placed.push((id, *loc, Some(span)));
            }
        }
    }
    if !placed.is_empty() {
        ledger.record(placed).await?;
    }
    if !gone.is_empty() {
        tracing::info!(
            "{} objects the ledger placed on {} are gone; uploading them again",
            gone.len(),
            remote.url()
        );
        ledger.forget(gone).await?;
    }

    let mut summary = PushSummary {
        objects_skipped: known.len() as u64,
        ..PushSummary::default()
    };
    let infos: HashMap<Id, (ObjectKind, u64)> =
        objects.iter().map(|o| (o.id, (o.kind, o.size))).collect();
    let todo: Vec<Obj> = objects
        .into_iter()
        .filter(|o| !known.contains_key(&o.id))
        .collect();
    progress.start("pushing", todo.len() as u64);
    let (mut new_locations, new_spans) = upload(
        &session,
        remote,
        &ledger,
        todo,
        salt,
        progress,
        &mut summary,
    )
    .await?;
    spans.extend(new_spans);
    progress.finish();

    // Right before the records: anything they would name that a remote gc has tombstoned
    // since is uploaded again (into new packs), so no record ever names a unit a gc may
    // delete (see `collect`).
    let mut rounds = 0;
    loop {
        let mut named: HashSet<Unit> = HashSet::new();
        for ids in &closure_of {
            for id in ids {
                match known.get(id).or_else(|| new_locations.get(id)) {
                    Some(Location::Pack(p)) => named.insert(Unit::Pack(*p)),
                    Some(Location::Standalone) => named.insert(Unit::Blob(*id)),
                    None => false,
                };
            }
        }
        let doomed = crate::collect::doomed_units(remote, &named, checked_at).await?;
        if doomed.is_empty() {
            break;
        }
        if rounds == RECHECKS {
            return Err(RemoteError::GcRace {
                remote: remote.url().to_string(),
                units: doomed.len(),
                rounds,
            });
        }
        rounds += 1;
        tracing::info!(
            "{} units this push relies on were tombstoned by a remote gc; uploading their objects again",
            doomed.len()
        );
        let doomed_packs = crate::collect::pack_ids(&doomed);
        let again: Vec<Id> = infos
            .keys()
            .copied()
            .filter(|id| match known.get(id).or_else(|| new_locations.get(id)) {
                Some(Location::Pack(p)) => doomed_packs.contains(p),
                Some(Location::Standalone) => doomed.contains(&Unit::Blob(*id)),
                None => false,
            })
            .collect();
        let gone: Vec<(Id, Location)> = again
            .iter()
            .filter_map(|id| {
                known
                    .remove(id)
                    .or_else(|| new_locations.remove(id))
                    .map(|l| (*id, l))
            })
            .collect();
        ledger.forget(gone).await?;
        let objs = {
            let (s, again, infos) = (session.clone(), again.clone(), infos.clone());
            tokio::task::spawn_blocking(move || objects_again(&s, &again, &infos))
                .await
                .expect("join")?
        };
        let more = upload(
            &session,
            remote,
            &ledger,
            objs,
            true,
            progress,
            &mut summary,
        )
        .await?;
        new_locations.extend(more.0);
        spans.extend(more.1);
    }

    // Records last: a reader never sees a key whose objects are not all there.
    for (rec, ids) in records.into_iter().zip(closure_of) {
        let mut packs = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        let mut used: HashMap<Id, Vec<Span>> = HashMap::new();
        let mut unplaced: HashSet<Id> = HashSet::new();
        for id in ids {
            match known.get(&id).or_else(|| new_locations.get(&id)) {
                Some(Location::Pack(p)) => {
                    packs.insert(*p);
                    match spans.get(&id) {
                        Some(span) => used.entry(*p).or_default().push(*span),
                        None => {
                            unplaced.insert(*p);
                        }
                    }
                }
                Some(Location::Standalone) => {
                    blobs.insert(id);
                }
                None => {
                    return Err(RemoteError::Missing {
                        remote: remote.url().to_string(),
                        key: rec.key.to_string(),
                        object: id.to_string(),
                    });
                }
            }
        }
        let key = rec.key.clone();
        let rr = RemoteRecord {
            format: RECORD_FORMAT,
            record: rec,
            packs: packs.into_iter().collect(),
            blobs: blobs.into_iter().collect(),
            // A pack with an object of unknown place gets no spans: gc then never repacks it
            // (every object is placed above; this only guards the invariant).
            spans: used
                .into_iter()
                .filter(|(p, _)| !unplaced.contains(p))
                .map(|(p, v)| (p, Spans::of(v)))
                .collect(),
        };
        let body = serde_json::to_vec_pretty(&rr).expect("records serialize");
        remote
            .put(&remote.key_path(&key), Bytes::from(body))
            .await?;
        summary.keys.push(key.to_string());
    }
    drop(session);
    summary.requests = remote.counts();
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Uploads `objects`: trees and small blobs in packs (built on a blocking thread, up to
/// [`PACKS_IN_FLIGHT`] at once), large blobs on their own; records each landed one in the
/// ledger. With `salt`, every pack gets a few random bytes, so it never has the name of a pack
/// a remote gc tombstoned.
async fn upload(
    session: &ReadSession,
    remote: &Remote,
    ledger: &Ledger,
    objects: Vec<Obj>,
    salt: bool,
    progress: &dyn Progress,
    summary: &mut PushSummary,
) -> Result<(HashMap<Id, Location>, HashMap<Id, Span>)> {
    let (packed, large): (Vec<Obj>, Vec<Obj>) = objects
        .into_iter()
        .partition(|o| o.kind == ObjectKind::Tree || o.size <= PACKED_MAX);
    // Packs: built on a blocking thread, uploaded concurrently.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<SealedPack>>(1);
    let builder_session = session.clone();
    let builder =
        tokio::task::spawn_blocking(move || build_packs(&builder_session, packed, salt, &tx));
    let mut uploads = FuturesUnordered::new();
    // Each landed pack is recorded in the ledger as it lands (so a push killed later re-sends
    // only the rest), by a task of its own that runs at once: the loop below only polls.
    let mut ledger_writes = FuturesUnordered::new();
    let mut new_locations: HashMap<Id, Location> = HashMap::new();
    let mut spans: HashMap<Id, Span> = HashMap::new();
    let mut landed = |(pack_id, placed, bytes): (Id, Vec<(Id, Span)>, u64)| {
        let located: Vec<(Id, Location, Option<Span>)> = placed
            .iter()
            .map(|(id, span)| (*id, Location::Pack(pack_id), Some(*span)))
            .collect();
        let l = ledger.clone();
        ledger_writes.push(tokio::spawn(async move { l.record(located).await }));
        summary.packs += 1;
        summary.objects_sent += placed.len() as u64;
        summary.bytes_sent += bytes;
        progress.advance(placed.len() as u64);
        for (id, span) in placed {
            new_locations.insert(id, Location::Pack(pack_id));
            spans.insert(id, span);
        }
    };
    loop {
        tokio::select! {
            next = rx.recv(), if uploads.len() < PACKS_IN_FLIGHT => {
                match next {
                    Some(sealed) => uploads.push(upload_pack(remote, sealed?)),
                    None => break,
                }
            }
            Some(done) = uploads.next() => landed(done?),
        }
    }
    while let Some(done) = uploads.next().await {
        landed(done?);
    }
    builder.await.expect("join")?;
    while let Some(written) = ledger_writes.next().await {
        written.expect("ledger task panicked")?;
    }

    // Large blobs, each on its own, streamed in parts.
    let large_results = futures::stream::iter(
        large
            .into_iter()
            .map(|o| upload_large(session, remote, o.id, o.size)),
    )
    .buffer_unordered(remote.options().concurrency.clamp(1, 4))
    .collect::<Vec<_>>()
    .await;
    for r in large_results {
        let (id, bytes) = r?;
        ledger
            .record(vec![(id, Location::Standalone, None)])
            .await?;
        summary.standalone_blobs += 1;
        summary.objects_sent += 1;
        summary.bytes_sent += bytes;
        progress.advance(1);
        new_locations.insert(id, Location::Standalone);
    }
    Ok((new_locations, spans))
}

/// Reads the index of `pack` for the places of `ids` in it: (whether the pack is there, `ids`,
/// the spans of those the index lists). An index that is missing or does not parse counts as
/// an absent pack (its objects are uploaded again), as a failed HEAD would.
async fn pack_places(
    remote: &Remote,
    pack: Id,
    ids: Vec<Id>,
) -> Result<(bool, Vec<Id>, Option<HashMap<Id, Span>>)> {
    let path = remote.index_path(&pack);
    let Some(bytes) = remote.get_opt(&path).await? else {
        return Ok((false, ids, None));
    };
    let entries = match pack::decode_index(&bytes, &pack) {
        Ok((entries, _)) => entries,
        Err(reason) => {
            tracing::warn!("pack index {path}: {reason}; uploading its objects again");
            return Ok((false, ids, None));
        }
    };
    let wanted: HashSet<Id> = ids.iter().copied().collect();
    let found = entries
        .into_iter()
        .filter(|e| wanted.contains(&e.id))
        .map(|e| {
            let span = Span {
                offset: e.offset,
                len: e.len,
            };
            (e.id, span)
        })
        .collect();
    Ok((true, ids, Some(found)))
}

/// The objects `ids` again (trees encoded), to upload a second time.
fn objects_again(
    session: &ReadSession,
    ids: &[Id],
    infos: &HashMap<Id, (ObjectKind, u64)>,
) -> Result<Vec<Obj>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let (kind, size) = infos[id];
        let tree =
            match kind {
                ObjectKind::Tree => Some(session.tree(id)?.encode().map_err(|e| {
                    cairn_store::Error::CorruptTree {
                        id: *id,
                        reason: e.to_string(),
                    }
                })?),
                ObjectKind::Blob => None,
            };
        out.push(Obj {
            id: *id,
            kind,
            size,
            tree,
        });
    }
    Ok(out)
}

/// The records of `keys` and the objects their closures reach (each once, trees encoded),
/// with each record's object ids.
#[allow(clippy::type_complexity)]
fn closures(
    session: &ReadSession,
    keys: &[Key],
) -> Result<(Vec<KeyRecord>, Vec<Obj>, Vec<Vec<Id>>)> {
    let mut records = Vec::new();
    let mut objects: Vec<Obj> = Vec::new();
    let mut seen = HashSet::new();
    let mut closure_of: Vec<Vec<Id>> = Vec::new();
    for key in keys {
        let rec = session.record(key)?;
        let c = session.record_closure(&rec)?;
        let mut ids = Vec::with_capacity(c.trees.len() + c.blobs.len());
        for id in &c.order {
            ids.push(*id);
            if seen.insert(*id) {
                let bytes = c.trees[id]
                    .encode()
                    .map_err(|e| cairn_store::Error::CorruptTree {
                        id: *id,
                        reason: e.to_string(),
                    })?;
                objects.push(Obj {
                    id: *id,
                    kind: ObjectKind::Tree,
                    size: bytes.len() as u64,
                    tree: Some(bytes),
                });
            }
        }
        for (id, size) in c.blobs {
            ids.push(id);
            if seen.insert(id) {
                objects.push(Obj {
                    id,
                    kind: ObjectKind::Blob,
                    size,
                    tree: None,
                });
            }
        }
        records.push(rec);
        closure_of.push(ids);
    }
    Ok((records, objects, closure_of))
}

/// Fills packs with `objects` in their stored form and sends each when sealed; with `salt`,
/// each pack starts with a small blob of bytes unique to this process and moment.
fn build_packs(
    session: &ReadSession,
    objects: Vec<Obj>,
    salt: bool,
    tx: &tokio::sync::mpsc::Sender<Result<SealedPack>>,
) -> Result<()> {
    let mut serial = 0u64;
    let new_pack = |serial: &mut u64| {
        let mut b = PackBuilder::new();
        if salt {
            *serial += 1;
            b.add_salt(*serial);
        }
        b
    };
    let mut b = new_pack(&mut serial);
    let mut added = 0usize;
    // Trees first, so a puller finds them together at the start of the first packs.
    let mut objects = objects;
    objects.sort_by_key(|o| (o.kind != ObjectKind::Tree, o.id));
    // Where each small blob is kept, in one index read (most are in local packs).
    let places = session.placements(
        objects
            .iter()
            .filter(|o| o.tree.is_none() && o.size <= SMALL_BLOB_MAX)
            .map(|o| o.id),
    )?;
    for o in objects {
        let (encoding, stored) = match &o.tree {
            Some(bytes) => stored_form(o.id, bytes)?,
            None if o.size <= SMALL_BLOB_MAX => {
                session.read_stored(&o.id, o.size, places.get(&o.id).copied())?
            }
            None => {
                let mut content = Vec::with_capacity(o.size as usize);
                let mut r = session.open_blob(&o.id, Some(o.size), None)?;
                if let Err(e) = std::io::Read::read_to_end(&mut r, &mut content) {
                    return Err(r.into_error(e).into());
                }
                stored_form(o.id, &content)?
            }
        };
        b.add(o.id, o.kind, encoding, &stored, o.size);
        added += 1;
        if b.len() >= PACK_TARGET {
            added = 0;
            let sealed = std::mem::replace(&mut b, new_pack(&mut serial)).finish();
            if tx.blocking_send(Ok(sealed)).is_err() {
                return Ok(()); // the uploader failed; its error is reported there
            }
        }
    }
    if added > 0 {
        let _ = tx.blocking_send(Ok(b.finish()));
    }
    Ok(())
}

/// Object `id`'s `content` as it is stored on a remote: zstd if it pays, else raw.
fn stored_form(id: Id, content: &[u8]) -> Result<(Encoding, Vec<u8>)> {
    let c = compress_frame(content, REMOTE_ZSTD_LEVEL)
        .map_err(|source| RemoteError::Compress { object: id, source })?;
    Ok(if c.len() < content.len() {
        (Encoding::Zstd, c)
    } else {
        (Encoding::Raw, content.to_vec())
    })
}

/// PUT the pack, then its index. Returns its id, members (with their spans) and size.
pub(crate) async fn upload_pack(
    remote: &Remote,
    sealed: SealedPack,
) -> Result<(Id, Vec<(Id, Span)>, u64)> {
    let idx = pack::encode_index(&sealed);
    let len = sealed.bytes.len() as u64;
    remote
        .put(&remote.pack_path(&sealed.id), sealed.bytes.clone())
        .await?;
    remote
        .put(&remote.index_path(&sealed.id), Bytes::from(idx))
        .await?;
    Ok((
        sealed.id,
        sealed
            .entries
            .iter()
            .map(|e| {
                let span = Span {
                    offset: e.offset,
                    len: e.len,
                };
                (e.id, span)
            })
            .collect(),
        len,
    ))
}

/// Streams one large blob to `blobs/<id>.zst` as a zstd stream, in parts. The local copy is
/// verified first; a raw local copy is compressed into a temp file on the way.
async fn upload_large(
    session: &ReadSession,
    remote: &Remote,
    id: Id,
    size: u64,
) -> Result<(Id, u64)> {
    let s = session.clone();
    let (path, _tmp) = tokio::task::spawn_blocking(move || -> Result<_> {
        let r = s.open_blob(&id, Some(size), None)?;
        cairn_store::blobs::copy_verified(r, &mut std::io::sink())?;
        let (path, enc) = s.blob_file(&id)?;
        if enc == Encoding::Zstd {
            return Ok((path, None));
        }
        let tmp = s.temp_file()?;
        let mut enc = zstd::Encoder::new(tmp.as_file(), REMOTE_ZSTD_LEVEL)
            .map_err(cairn_store::Error::io(tmp.path()))?;
        let r = s.open_blob(&id, Some(size), None)?;
        cairn_store::blobs::copy_verified(r, &mut enc)?;
        enc.finish().map_err(cairn_store::Error::io(tmp.path()))?;
        let p = tmp.path().to_path_buf();
        Ok((p, Some(tmp)))
    })
    .await
    .expect("join")?;
    let dest = remote.blob_path(&id);
    let mut w = remote.writer(&dest)?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| RemoteError::from(cairn_store::Error::io(&path)(e)))?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; UPLOAD_CHUNK];
    let upload = async {
        loop {
            // A failed read is the local file's; a failed put is the remote's.
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| RemoteError::from(cairn_store::Error::io(&path)(e)))?;
            if n == 0 {
                break;
            }
            w.put(Bytes::copy_from_slice(&buf[..n]))
                .await
                .map_err(remote.request_err(&dest))?;
            sent += n as u64;
        }
        w.shutdown().await.map_err(|source| RemoteError::Upload {
            remote: remote.url().to_string(),
            path: dest.to_string(),
            source,
        })
    };
    if let Err(e) = upload.await {
        // Leave no multipart upload half done on the remote (best effort: the error stands).
        let _ = w.abort().await;
        return Err(e);
    }
    // One request for a small upload; create + parts + complete for a multipart one.
    let parts = sent.div_ceil(pack::MULTIPART_PART as u64);
    remote.count_upload(if parts <= 1 { 1 } else { parts + 2 }, sent);
    Ok((id, sent))
}
