//! Repacking sparse packs, the part of `cairn remote gc` that frees the dead objects of packs
//! some record still names.
//!
//! A pack is deleted only whole, when no record names it; a pack shared by many keys (a push of
//! many keys fills shared packs) would otherwise keep every object until its last key goes. Each
//! record lists the bytes it uses of each pack it names (`spans`), so the live bytes of a pack
//! are the union of its records' spans, known without reading a tree. A pack older than the
//! grace period whose live bytes are below the threshold is repacked:
//! 1. the spans only choose the packs: what is kept is decided from the trees. The records
//!    naming a chosen pack are walked (the indexes of the packs they name read, their trees
//!    fetched and checked against their ids), and an object of the pack is kept if one of them
//!    reaches it or its spans cover it. A record that cannot be walked (a tree missing or
//!    corrupt) leaves every pack it names alone. So a wrong or forged span can make gc copy
//!    too much, never drop what a key needs. The kept objects are fetched and checked against
//!    their ids;
//! 2. they are written, in their stored form, into new packs (salted, so never under a
//!    tombstoned name), each pack before its index;
//! 3. every record naming a repacked pack is rewritten to name the new packs instead, with a
//!    conditional update on the ETag it was read with (a record a push replaced meanwhile is
//!    left alone, and the old pack with it);
//! 4. an old pack no record names any more goes through the ordinary tombstone path: the same
//!    run's mark tombstones it, a sweep at least a grace period later deletes it.
//!
//! A crash between any two steps leaves new packs no record names (young, so marked only after
//! the grace period), or some records re-pointed and others not (both name complete packs); a
//! reader of an old record finds the old pack until a sweep a grace period later.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use cairn_store::{Id, Key};
use futures::StreamExt;

use crate::connection::{Conditional, Remote};
use crate::error::RemoteError;
use crate::error::Result;
use crate::fetch::{self, Placed};
use crate::lease::Lease;
use crate::pack::{self, IndexEntry, ObjectKind, PACK_MAGIC, PACK_TARGET, PackBuilder};
use crate::record::RemoteRecord;
use crate::spans::{Span, Spans};
use cairn_store::walk::{self, Load};
use cairn_store::{EntryKind, Root, Tree};

/// Default threshold: a pack whose live bytes are below this percentage of its objects' bytes
/// is repacked (restic's and kopia's defaults are in the same range).
pub const DEFAULT_REPACK_BELOW: u8 = 50;

/// A key record as remote gc read it.
#[derive(Clone, Debug)]
pub(crate) struct ReadRecord {
    pub(crate) key: Key,
    pub(crate) rr: RemoteRecord,
    /// The record object's time on the store.
    pub(crate) time: i64,
    /// Its ETag when read, for the conditional rewrite.
    pub(crate) etag: Option<String>,
}

/// A pack as listed: bytes of the pack file and its time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ListedPack {
    pub(crate) bytes: u64,
    pub(crate) time: i64,
}

/// A pack found sparse.
#[derive(Clone, Debug)]
pub(crate) struct Sparse {
    pub(crate) pack: Id,
    pub(crate) live: Spans,
    pub(crate) bytes: u64,
}

/// Which live packs are sparse, and how many live packs could not be judged.
pub(crate) struct Plan {
    pub(crate) sparse: Vec<Sparse>,
    /// Live packs named by a record without spans for them (written before cairn wrote spans).
    pub(crate) unjudged: u64,
}

/// The live packs older than `grace` whose live bytes are below `below` percent.
pub(crate) fn plan(
    records: &[ReadRecord],
    packs: &HashMap<Id, ListedPack>,
    now: i64,
    grace: i64,
    below: u8,
) -> Plan {
    let mut live: BTreeMap<Id, Spans> = BTreeMap::new();
    let mut unjudged: BTreeSet<Id> = BTreeSet::new();
    for r in records {
        for p in &r.rr.packs {
            match r.rr.spans.get(p) {
                Some(s) => {
                    let e = live.entry(*p).or_default();
                    *e = e.union(s);
                }
                None => {
                    unjudged.insert(*p);
                }
            }
        }
    }
    let mut sparse = Vec::new();
    for (pack, spans) in live {
        if unjudged.contains(&pack) {
            continue;
        }
        // Packs not listed (or without an index) are not ours to touch; young ones may be
        // half-named by a push still writing its records.
        let Some(l) = packs.get(&pack) else { continue };
        if now - l.time < grace {
            continue;
        }
        let data = l.bytes.saturating_sub(PACK_MAGIC.len() as u64);
        if (spans.bytes() as u128) * 100 < (below as u128) * (data as u128) {
            sparse.push(Sparse {
                pack,
                live: spans,
                bytes: l.bytes,
            });
        }
    }
    Plan {
        sparse,
        unjudged: unjudged.len() as u64,
    }
}

/// What repacking did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Old packs no record names any more (all their records re-pointed).
    pub(crate) repacked: Vec<Id>,
    /// New packs written.
    pub(crate) written: Vec<Id>,
    /// Bytes of live objects copied.
    pub(crate) bytes_copied: u64,
    /// Records rewritten.
    pub(crate) records_rewritten: u64,
    /// Packs left alone, with why.
    pub(crate) skipped: Vec<String>,
}

/// Where a live object of an old pack went.
#[derive(Clone, Copy, Debug)]
struct Moved {
    id: Id,
    /// The new pack, by its number in this run until it is sealed.
    new_pack: usize,
    new: Span,
}

/// The live objects of one old pack, fetched and checked.
struct Gathered {
    pack: Id,
    objects: Vec<(IndexEntry, Bytes)>,
}

/// Repacks `sparse` (see the module docs); rewrites the records in `records` that it
/// re-points.
pub(crate) async fn repack(
    remote: &Remote,
    records: &mut [ReadRecord],
    sparse: &[Sparse],
    exclusive: bool,
    lease: &mut Lease,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    // What every record naming a sparse pack reaches, from its trees.
    let chosen: HashSet<Id> = sparse.iter().map(|s| s.pack).collect();
    let affected: Vec<usize> = (0..records.len())
        .filter(|i| records[*i].rr.packs.iter().any(|p| chosen.contains(p)))
        .collect();
    let reached = reach(remote, records, &affected).await?;
    lease.refresh_if_due().await?;
    let mut needed: HashMap<Id, HashSet<Id>> = HashMap::new();
    let mut untouchable: HashSet<Id> = HashSet::new();
    for i in &affected {
        let r = &records[*i];
        match &reached[i] {
            Ok(ids) => {
                for p in r.rr.packs.iter().filter(|p| chosen.contains(p)) {
                    needed.entry(*p).or_default().extend(ids.iter().copied());
                }
            }
            Err(reason) => {
                tracing::warn!("key record {}: {reason}; leaving its packs alone", r.key);
                for p in r.rr.packs.iter().filter(|p| chosen.contains(p)) {
                    if untouchable.insert(*p) {
                        out.skipped
                            .push(format!("pack {p}: key record {}: {reason}", r.key));
                    }
                }
            }
        }
    }
    let mut moved: HashMap<Id, Vec<Moved>> = HashMap::new();
    let mut sealed_ids: Vec<Id> = Vec::new();
    let mut builder = new_builder(0);
    let mut in_builder: Vec<Id> = Vec::new();
    let none = HashSet::new();
    for s in sparse.iter().filter(|s| !untouchable.contains(&s.pack)) {
        let g = match gather(remote, s, needed.get(&s.pack).unwrap_or(&none)).await? {
            Ok(g) => g,
            Err(reason) => {
                tracing::warn!("not repacking pack {}: {reason}", s.pack);
                out.skipped.push(format!("pack {}: {reason}", s.pack));
                continue;
            }
        };
        let number = sealed_ids.len();
        let mut places = Vec::with_capacity(g.objects.len());
        for (e, stored) in &g.objects {
            let new = Span {
                offset: builder.len() as u64,
                len: e.len,
            };
            builder.add(e.id, e.kind, e.encoding, stored, e.size);
            out.bytes_copied += e.len;
            places.push(Moved {
                id: e.id,
                new_pack: number,
                new,
            });
        }
        moved.insert(g.pack, places);
        in_builder.push(g.pack);
        if builder.len() >= PACK_TARGET {
            let full = std::mem::replace(&mut builder, new_builder(sealed_ids.len() + 1));
            sealed_ids.push(upload(remote, full).await?);
            in_builder.clear();
            lease.refresh_if_due().await?;
        }
    }
    if !in_builder.is_empty() {
        sealed_ids.push(upload(remote, builder).await?);
    }
    out.written = sealed_ids.clone();
    if moved.is_empty() {
        return Ok(out);
    }

    // Re-point the records: each names, instead of its repacked packs, the new packs holding
    // what it reaches of them, with spans from its walk.
    let mut still_named: HashSet<Id> = HashSet::new();
    for i in affected {
        let r = &mut records[i];
        if !r.rr.packs.iter().any(|p| moved.contains_key(p)) {
            continue;
        }
        let Ok(reaches) = &reached[&i] else {
            continue; // its packs are untouchable: none of them moved
        };
        let mut rr = r.rr.clone();
        let mut added: BTreeMap<Id, Vec<Span>> = BTreeMap::new();
        for p in r.rr.packs.iter().filter(|p| moved.contains_key(p)) {
            for m in &moved[p] {
                if reaches.contains(&m.id) {
                    added.entry(sealed_ids[m.new_pack]).or_default().push(m.new);
                }
            }
            rr.spans.remove(p);
        }
        rr.packs.retain(|p| !moved.contains_key(p));
        for (p, spans) in added {
            rr.packs.push(p);
            rr.spans.insert(p, Spans::of(spans));
        }
        rr.packs.sort();
        rr.packs.dedup();
        let body = Bytes::from(serde_json::to_vec_pretty(&rr).expect("records serialize"));
        let path = remote.key_path(&r.key);
        let written = if exclusive {
            remote.put(&path, body).await?;
            true
        } else {
            match &r.etag {
                Some(tag) => matches!(
                    remote.put_if(&path, body, Some(tag)).await?,
                    Conditional::Written(_)
                ),
                None => false,
            }
        };
        if written {
            r.rr = rr;
            out.records_rewritten += 1;
        } else {
            // Replaced since it was read (or the store gives no ETag to update it safely): it
            // may name the old packs still, so they stay.
            tracing::info!("key record {}: changed since read; left as it is", r.key);
            still_named.extend(r.rr.packs.iter().copied());
        }
        lease.refresh_if_due().await?;
    }
    out.repacked = moved
        .keys()
        .filter(|p| !still_named.contains(p))
        .copied()
        .collect();
    out.repacked.sort();
    Ok(out)
}

fn new_builder(serial: usize) -> PackBuilder {
    let mut b = PackBuilder::new();
    b.add_salt(serial as u64);
    b
}

/// PUT a new pack, then its index (as a push does); returns its id.
async fn upload(remote: &Remote, b: PackBuilder) -> Result<Id> {
    Ok(crate::push::upload_pack(remote, b.finish()).await?.0)
}

/// Reads the index of a sparse pack and fetches its live objects (those `needed`, and those
/// the spans cover), each checked against its id. The inner error says why the pack is left
/// alone: an index that is missing or does not parse, an object that fails its check.
async fn gather(
    remote: &Remote,
    s: &Sparse,
    needed: &HashSet<Id>,
) -> Result<std::result::Result<Gathered, String>> {
    let path = remote.index_path(&s.pack);
    let Some(bytes) = remote.get_opt(&path).await? else {
        return Ok(Err("its index is gone".into()));
    };
    let (entries, _) = match pack::decode_index(&bytes, &s.pack) {
        Ok(x) => x,
        Err(reason) => return Ok(Err(format!("index {path}: {reason}"))),
    };
    let mut live = Vec::new();
    let mut outside = 0usize;
    for e in entries {
        let span = Span {
            offset: e.offset,
            len: e.len,
        };
        let spanned = s.live.contains(span);
        if needed.contains(&e.id) || spanned {
            outside += usize::from(!spanned);
            live.push(Placed {
                pack: s.pack,
                entry: e,
            });
        }
    }
    if outside > 0 {
        // Kept all the same: the trees, not the spans, say what is live.
        tracing::warn!(
            "pack {}: {outside} objects the records reach lie outside their spans",
            s.pack
        );
    }
    let mut objects = Vec::with_capacity(live.len());
    let mut ranges = fetch::ranges(remote, &live);
    while let Some(range) = ranges.next().await {
        let bytes = range.bytes?;
        for p in &range.job.members {
            if let Err(reason) = range.job.object(&bytes, p) {
                return Ok(Err(format!(
                    "object {} in {}: {reason}",
                    p.entry.id, range.path
                )));
            }
            let at = (p.entry.offset - range.job.start) as usize;
            objects.push((p.entry, bytes.slice(at..at + p.entry.len as usize)));
        }
    }
    // Trees first, as a push writes them (a reader finds them together).
    objects.sort_by_key(|(e, _)| (e.kind != ObjectKind::Tree, e.id));
    Ok(Ok(Gathered {
        pack: s.pack,
        objects,
    }))
}

/// The objects each of `records[i]` (`i` in `which`) reaches, from its trees: the packs the
/// records name are indexed and their trees fetched (each checked against its id) once for
/// all. A record whose walk finds a tree missing or corrupt gets why instead.
#[allow(clippy::type_complexity)]
async fn reach(
    remote: &Remote,
    records: &[ReadRecord],
    which: &[usize],
) -> Result<HashMap<usize, std::result::Result<HashSet<Id>, String>>> {
    let packs: BTreeSet<Id> = which
        .iter()
        .flat_map(|i| records[*i].rr.packs.iter().copied())
        .collect();
    let indexes = futures::stream::iter(packs.into_iter().map(|p| async move {
        let path = remote.index_path(&p);
        let got = remote.get_opt(&path).await?;
        Ok::<_, RemoteError>((p, got.map(|b| pack::decode_index(&b, &p))))
    }))
    .buffer_unordered(remote.options().concurrency)
    .collect::<Vec<_>>()
    .await;
    let mut trees_at: Vec<Placed> = Vec::new();
    let mut unreadable: HashMap<Id, String> = HashMap::new();
    let mut seen: HashSet<Id> = HashSet::new();
    for r in indexes {
        let (p, got) = r?;
        match got {
            None => {
                unreadable.insert(p, "its index is gone".into());
            }
            Some(Err(reason)) => {
                unreadable.insert(p, format!("its index: {reason}"));
            }
            Some(Ok((entries, _))) => {
                for entry in entries {
                    if entry.kind == ObjectKind::Tree && seen.insert(entry.id) {
                        trees_at.push(Placed { pack: p, entry });
                    }
                }
            }
        }
    }
    let mut trees: HashMap<Id, Tree> = HashMap::new();
    let mut bad: HashMap<Id, String> = HashMap::new();
    let mut ranges = fetch::ranges(remote, &trees_at);
    while let Some(range) = ranges.next().await {
        let bytes = range.bytes?;
        for p in &range.job.members {
            let decoded = range
                .job
                .object(&bytes, p)
                .and_then(|(_, content)| Tree::decode(&content).map_err(|e| e.to_string()));
            match decoded {
                Ok(t) => {
                    trees.insert(p.entry.id, t);
                }
                Err(reason) => {
                    let why = format!("tree {} in {}: {reason}", p.entry.id, range.path);
                    bad.insert(p.entry.id, why);
                }
            }
        }
    }
    let mut out = HashMap::new();
    for i in which {
        out.insert(*i, reached_by(&records[*i].rr, &trees, &bad, &unreadable));
    }
    Ok(out)
}

/// The objects `rr` reaches, walking `trees`; or why it cannot be walked.
fn reached_by(
    rr: &RemoteRecord,
    trees: &HashMap<Id, Tree>,
    bad: &HashMap<Id, String>,
    unreadable: &HashMap<Id, String>,
) -> std::result::Result<HashSet<Id>, String> {
    if let Some((p, why)) = rr
        .packs
        .iter()
        .find_map(|p| unreadable.get(p).map(|w| (p, w)))
    {
        return Err(format!("pack {p}: {why}"));
    }
    let mut ids: HashSet<Id> = rr.record.attachments.values().map(|a| a.id).collect();
    let roots = match rr.record.root {
        Root::Tree { id } => vec![id],
        Root::File { id, .. } => {
            ids.insert(id);
            vec![]
        }
    };
    walk::closure(
        roots,
        |id| match trees.get(id) {
            Some(t) => Ok(Load::Tree(t.clone())),
            None => Err(bad
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("tree {id} is in none of its packs"))),
        },
        |id, tree| {
            ids.insert(*id);
            for e in &tree.entries {
                if let EntryKind::File { blob, .. } = e.kind {
                    ids.insert(blob);
                }
            }
            Ok(())
        },
    )?;
    Ok(ids)
}
