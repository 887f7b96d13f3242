//! `cairn remote gc`: garbage collection of a remote, safe while other machines push.
//!
//! One run, under the remote's lease (see `lease`), with every age measured on the object
//! store's clock:
//! 1. list `keys/` and read every record (one GET each); with retention rules, delete the
//!    records they remove first;
//! 2. list `packs/`, `blobs/` and `gc/tombstones/`;
//! 3. sweep: for each tombstone older than the grace period *when the records were listed*: if a
//!    record names its unit, or the unit was rewritten after the tombstone, drop the tombstone
//!    (recovered); otherwise delete the unit (index first, then pack), then the tombstone;
//! 4. repack: packs records name but mostly do not use get their live objects copied into new
//!    packs and their records re-pointed (see `repack`); they are then unreachable;
//! 5. mark: write a tombstone (create-only) for each unit no record names that is older than the
//!    grace period and has none.
//!
//! Why it is safe beside pushes: a push writes its packs before the record that names them, and
//! right before writing its records it lists the tombstones and uploads again whatever they name
//! (into new packs). So a record written without seeing a tombstone was written before the
//! tombstone existed plus the few milliseconds of the record PUT, and a unit is deleted only by
//! a run that listed the records a grace period after its tombstone: such a record is always seen.
//! A crash anywhere leaves tombstones, or units without tombstones, that the next run finishes
//! with; a record is never left naming a deleted unit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_store::policy::{self, KeyInfo, Removal, Rule};
use cairn_store::{Id, Key};
use futures::StreamExt;
use serde::Serialize;

use crate::connection::{Conditional, Remote, RequestCounts};
use crate::error::{RemoteError, Result};
use crate::lease::Lease;
use crate::pull::fetch_record_tagged;
use crate::repack::{self, ListedPack, ReadRecord};
use crate::tombstone::{self, Unit};

/// Default grace period: how old an unreachable unit must be before it is tombstoned, and how
/// old a tombstone before its unit is deleted.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// What `cairn remote gc` may do.
#[derive(Clone, Debug)]
pub struct GcSettings {
    /// Change nothing but the lease; report what would be done.
    pub dry_run: bool,
    /// See [`DEFAULT_GRACE`].
    pub grace: Duration,
    /// The caller promises no other writer: plain puts where conditional ones are missing.
    pub exclusive: bool,
    /// Retention rules to apply to the remote's keys first.
    pub rules: Vec<Rule>,
    /// Repack packs whose live bytes are below this percentage of their objects' bytes
    /// ([`crate::repack::DEFAULT_REPACK_BELOW`]); 0 never repacks.
    pub repack_below: u8,
}

/// What a remote gc did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RemoteGcReport {
    /// The remote's URL.
    pub remote: String,
    /// Nothing was changed (but the lease).
    pub dry_run: bool,
    /// Key records read.
    pub keys: u64,
    /// Keys the retention rules removed.
    pub removed: Vec<Removal>,
    /// Units (packs, standalone blobs) some record names.
    pub live_units: u64,
    /// Units tombstoned by this run.
    pub tombstoned: Vec<String>,
    /// Units deleted by this run.
    pub deleted: Vec<String>,
    /// Tombstoned units found live again (named by a record, or rewritten): kept.
    pub recovered: Vec<String>,
    /// Unreachable units younger than the grace period, or tombstones not yet old enough.
    pub waiting: u64,
    /// Bytes of the deleted units.
    pub bytes_freed: u64,
    /// Sparse packs whose live objects this run copied into new packs, every record naming
    /// them re-pointed (they are then tombstoned like any unreachable pack); in a dry run, the
    /// packs that would be repacked.
    pub repacked: Vec<String>,
    /// New packs written by repacking.
    pub repack_packs_written: Vec<String>,
    /// Bytes of live objects repacking copied (in a dry run, would copy).
    pub repack_bytes_copied: u64,
    /// Bytes the repacked packs hold (freed once they are swept, a grace period later).
    pub repack_bytes_released: u64,
    /// Key records rewritten to name the new packs.
    pub repack_records_rewritten: u64,
    /// Sparse packs left alone, each with why.
    pub repack_skipped: Vec<String>,
    /// Live packs named by a record without spans (pushed by a cairn before 0.x): never
    /// repacked.
    pub packs_without_spans: u64,
    /// Requests of the mark (listings and record reads, tombstones written).
    pub mark_requests: RequestCounts,
    /// All requests.
    pub requests: RequestCounts,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A unit as listed: its time (the newest of its objects') and bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Listed {
    time: i64,
    bytes: u64,
    /// Bytes of the pack file alone (0 for a blob).
    pack_bytes: u64,
    /// A pack's index was listed (a pack without one is never relied on).
    has_index: bool,
}

fn minus(a: RequestCounts, b: RequestCounts) -> RequestCounts {
    RequestCounts {
        gets: a.gets - b.gets,
        puts: a.puts - b.puts,
        heads: a.heads - b.heads,
        lists: a.lists - b.lists,
        deletes: a.deletes - b.deletes,
        bytes_up: a.bytes_up - b.bytes_up,
        bytes_down: a.bytes_down - b.bytes_down,
    }
}

/// Reads every key record of `remote`, with its time on the store and ETag.
async fn read_records(remote: &Remote) -> Result<Vec<ReadRecord>> {
    let listed = remote.list("keys/").await?;
    let keys: Vec<(Key, i64)> = listed
        .iter()
        .filter_map(|m| {
            let rel = remote.relative(&m.location);
            let name = rel.strip_prefix("keys/")?.strip_suffix(".key")?;
            Some((Key::new(name).ok()?, m.last_modified.timestamp()))
        })
        .collect();
    let fetched = futures::stream::iter(keys.into_iter().map(|(k, t)| async move {
        let r = fetch_record_tagged(remote, &k).await;
        (k, t, r)
    }))
    .buffer_unordered(remote.options().concurrency)
    .collect::<Vec<_>>()
    .await;
    let mut out = Vec::new();
    for (k, t, r) in fetched {
        // A record that cannot be read might name anything: collecting around it could delete
        // what it needs, so gc stops (naming it) rather than guess.
        // None: deleted since the listing.
        if let Some((rr, etag)) = r? {
            out.push(ReadRecord {
                key: k,
                rr,
                time: t,
                etag,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Collects garbage on `remote` (see the module docs).
pub async fn remote_gc(remote: &Remote, settings: &GcSettings) -> Result<RemoteGcReport> {
    let start = Instant::now();
    if remote.read_only() {
        return Err(RemoteError::ReadOnly(remote.url().to_string()));
    }
    let base = remote.counts();
    let mut lease = Lease::take(remote, settings.exclusive).await?;
    let out = collect(remote, settings, &mut lease, base).await;
    let released = lease.release().await;
    let mut report = out?;
    released?;
    report.requests = minus(remote.counts(), base);
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

async fn collect(
    remote: &Remote,
    settings: &GcSettings,
    lease: &mut Lease,
    base: RequestCounts,
) -> Result<RemoteGcReport> {
    let grace = settings.grace.as_secs() as i64;
    let mut report = RemoteGcReport {
        remote: remote.url().to_string(),
        dry_run: settings.dry_run,
        ..RemoteGcReport::default()
    };
    // Pushes learn the shortest grace period from these markers (see `doomed_units`); written
    // before anything is marked with this one.
    if !settings.dry_run {
        let marker = format!("{}{grace}", tombstone::GRACE_MARKER);
        if remote.head(&remote.path(&marker)).await?.is_none() {
            remote.put(&remote.path(&marker), Bytes::new()).await?;
        }
    }
    // 1. Records (the time they were listed bounds what a sweep may delete).
    let listed_at = lease.clock.now();
    let mut records = read_records(remote).await?;
    report.keys = records.len() as u64;
    lease.refresh_if_due().await?;
    if !settings.rules.is_empty() {
        let usage: HashMap<String, i64> = remote
            .list("usage/")
            .await?
            .into_iter()
            .filter_map(|m| {
                let rel = remote.relative(&m.location);
                let name = rel.strip_prefix("usage/")?.strip_suffix(".used")?;
                Some((name.to_string(), m.last_modified.timestamp()))
            })
            .collect();
        let infos: Vec<KeyInfo> = records
            .iter()
            .map(
                |ReadRecord {
                     key: k,
                     rr,
                     time: t,
                     ..
                 }| {
                    let created = rr.record.created;
                    let used = usage.get(k.as_str()).copied().unwrap_or(*t).max(*t);
                    KeyInfo {
                        key: k.clone(),
                        created,
                        last_used: (used.max(0) as u64).max(created),
                        size: rr.record.size,
                        pinned: false,
                    }
                },
            )
            .collect();
        let removals = policy::apply(&settings.rules, &infos, lease.clock.now().max(0) as u64);
        let gone: HashSet<Key> = removals.iter().map(|r| r.key.clone()).collect();
        if !settings.dry_run {
            for r in &removals {
                remote.delete(&remote.key_path(&r.key)).await?;
                remote.delete(&remote.usage_path(&r.key)).await?;
                lease.refresh_if_due().await?;
            }
        }
        records.retain(|r| !gone.contains(&r.key));
        report.removed = removals;
    }
    let mut live: HashSet<Unit> = HashSet::new();
    for r in &records {
        live.extend(r.rr.packs.iter().map(|p| Unit::Pack(*p)));
        live.extend(r.rr.blobs.iter().map(|b| Unit::Blob(*b)));
    }
    report.live_units = live.len() as u64;

    // 2. Units and tombstones.
    let mut units: HashMap<Unit, Listed> = HashMap::new();
    for top in ["packs/", "blobs/"] {
        for m in remote.list(top).await? {
            let rel = remote.relative(&m.location);
            let Some(unit) = Unit::of_object(rel) else {
                continue;
            };
            let l = units.entry(unit).or_default();
            l.time = l.time.max(m.last_modified.timestamp());
            l.bytes += m.size;
            l.has_index |= rel.ends_with(".idx");
            if rel.ends_with(".pack") {
                l.pack_bytes = m.size;
            }
        }
    }
    let tombstones = tombstone::list(remote).await?;
    lease.refresh_if_due().await?;

    // 3. Sweep.
    for (unit, marked) in tombstones.iter().collect::<BTreeMap<_, _>>() {
        let t = remote.path(&unit.tombstone());
        let listed = units.get(unit).copied();
        let rewritten = listed.is_some_and(|l| l.time >= *marked);
        if live.contains(unit) || rewritten {
            report.recovered.push(unit.to_string());
            if !settings.dry_run {
                remote.delete(&t).await?;
            }
            continue;
        }
        if listed_at - marked < grace {
            report.waiting += 1;
            continue;
        }
        if let Some(l) = listed {
            if !settings.dry_run {
                // Rewritten since the listing (a push that saw no tombstone in time)? Then it
                // is live again; checked right before the delete.
                let now = remote.head(&unit.stamp_path(remote)).await?;
                if now.is_some_and(|m| m.last_modified.timestamp() >= *marked) {
                    report.recovered.push(unit.to_string());
                    remote.delete(&t).await?;
                    continue;
                }
                for p in unit.paths(remote) {
                    remote.delete(&p).await?;
                }
            }
            report.bytes_freed += l.bytes;
            report.deleted.push(unit.to_string());
        }
        if !settings.dry_run {
            remote.delete(&t).await?;
        }
        lease.refresh_if_due().await?;
    }

    // 4. Repack sparse packs; the old ones, once no record names them, are marked below.
    if settings.repack_below > 0 {
        let packs: HashMap<Id, ListedPack> = units
            .iter()
            .filter_map(|(u, l)| match u {
                Unit::Pack(id) if l.has_index && l.pack_bytes > 0 => Some((
                    *id,
                    ListedPack {
                        bytes: l.pack_bytes,
                        time: l.time,
                    },
                )),
                _ => None,
            })
            .collect();
        let plan = repack::plan(
            &records,
            &packs,
            lease.clock.now(),
            grace,
            settings.repack_below,
        );
        report.packs_without_spans = plan.unjudged;
        if settings.dry_run {
            for s in &plan.sparse {
                report.repacked.push(Unit::Pack(s.pack).to_string());
                report.repack_bytes_copied += s.live.bytes();
                report.repack_bytes_released += s.bytes;
            }
        } else if !plan.sparse.is_empty() {
            let out = repack::repack(
                remote,
                &mut records,
                &plan.sparse,
                settings.exclusive,
                lease,
            )
            .await?;
            for p in &out.repacked {
                live.remove(&Unit::Pack(*p));
                report.repacked.push(Unit::Pack(*p).to_string());
                report.repack_bytes_released += packs[p].bytes;
            }
            live.extend(out.written.iter().map(|p| Unit::Pack(*p)));
            report.repack_packs_written = out
                .written
                .iter()
                .map(|p| Unit::Pack(*p).to_string())
                .collect();
            report.repack_bytes_copied = out.bytes_copied;
            report.repack_records_rewritten = out.records_rewritten;
            report.repack_skipped = out.skipped;
        }
    }

    // 5. Mark.
    let now = lease.clock.now();
    for (unit, l) in units.iter().collect::<BTreeMap<_, _>>() {
        if live.contains(unit) || tombstones.contains_key(unit) {
            continue;
        }
        if now - l.time < grace {
            report.waiting += 1;
            continue;
        }
        report.tombstoned.push(unit.to_string());
        if settings.dry_run {
            continue;
        }
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({"unit": unit.to_string()})).expect("json"),
        );
        let path = remote.path(&unit.tombstone());
        if settings.exclusive {
            remote.put(&path, body).await?;
        } else if remote.put_if(&path, body, None).await? == Conditional::Conflict {
            tracing::debug!("{unit}: already tombstoned");
        }
        lease.refresh_if_due().await?;
    }
    report.mark_requests = minus(remote.counts(), base);
    Ok(report)
}

/// The units of `named` a push must not rely on: packs with a tombstone, standalone blobs
/// whose tombstone is newer than the blob, and, once the push has run for half the shortest
/// grace period any gc used on the remote since `checked_at` (its first look at the
/// tombstones), any unit that is gone. A push calls this right before writing its records.
///
/// Why that is enough: a unit is deleted only a grace period after its tombstone was written,
/// and only if the records listed then do not name it. A push that saw no tombstone of a unit
/// when it started, and none now, either relied on the unit before its tombstone existed and
/// binds within half a grace period (so the sweep's listing sees the record), or has run
/// longer and checks the unit is still there.
pub(crate) async fn doomed_units(
    remote: &Remote,
    named: &HashSet<Unit>,
    checked_at: Instant,
) -> Result<HashSet<Unit>> {
    let state = tombstone::scan(remote).await?;
    let long = state
        .min_grace
        .is_some_and(|g| checked_at.elapsed().as_secs().saturating_mul(2) >= g);
    let mut out = HashSet::new();
    let mut heads = Vec::new();
    for unit in named {
        match (unit, state.tombstones.get(unit)) {
            (Unit::Pack(_), Some(_)) => {
                out.insert(*unit);
            }
            (Unit::Blob(_), Some(marked)) => heads.push((*unit, Some(*marked))),
            (_, None) if long => heads.push((*unit, None)),
            (_, None) => {}
        }
    }
    let checked = futures::stream::iter(heads.into_iter().map(|(unit, marked)| async move {
        let doomed = match marked {
            Some(marked) => remote
                .head(&unit.stamp_path(remote))
                .await?
                .is_none_or(|m| m.last_modified.timestamp() < marked),
            // Every object of the unit (an index written after its pack was swept would
            // otherwise vouch for a missing pack).
            None => {
                let mut gone = false;
                for p in unit.paths(remote) {
                    gone |= remote.head(&p).await?.is_none();
                }
                gone
            }
        };
        Ok::<_, RemoteError>((unit, doomed))
    }))
    .buffer_unordered(remote.options().concurrency)
    .collect::<Vec<_>>()
    .await;
    for r in checked {
        let (unit, doomed) = r?;
        if doomed {
            out.insert(unit);
        }
    }
    Ok(out)
}

/// The ids of a set of units' packs, for callers that only care about packs.
pub(crate) fn pack_ids(units: &HashSet<Unit>) -> HashSet<Id> {
    units
        .iter()
        .filter_map(|u| match u {
            Unit::Pack(id) => Some(*id),
            Unit::Blob(_) => None,
        })
        .collect()
}
