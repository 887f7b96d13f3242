//! Garbage collection: delete every object no key or pin reaches, after removing the keys a
//! retention policy or the store's size cap evicts.
//!
//! gc holds the gc lock exclusively, so no `put`, `get`, `verify` or other command is running:
//! an object a writer is about to reference can never be deleted, and no key being read is
//! evicted mid-read. Keys are removed in one transaction that re-reads the pins; index rows of
//! objects are removed next, and files after that commit, so a crash in between leaves
//! unindexed files (garbage the next gc removes), never an index row without its file.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::key::Key;
use crate::pins::PinTarget;
use crate::policy::{self, KeyInfo, Reason, Removal, Rule};

use crate::blobs::Source;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{DerivedRow, Reader};
use crate::key::Root;
use crate::lock::LockMode;
use crate::packs::{ENTRY_HEADER_LEN, PackId};
use crate::session::ReadSession;
use crate::store::Store;
use crate::tree::EntryKind;
use crate::walk::{self, Load};

/// What gc deleted (or would delete, on a dry run).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GcReport {
    /// True if nothing was deleted.
    pub dry_run: bool,
    /// Unreachable trees.
    pub trees: u64,
    /// Unreachable blobs recorded in the index.
    pub blobs: u64,
    /// Blob files the index never recorded (left by interrupted writes).
    pub orphan_files: u64,
    /// Leftover temporary files.
    pub temp_files: u64,
    /// Pack files deleted because no blob in them is live (or none was ever recorded).
    pub packs_deleted: u64,
    /// Pack files rewritten with only their live blobs, because less than half of them was live.
    pub packs_rewritten: u64,
    /// Bytes freed on disk (tree bytes counted at their encoded size).
    pub bytes_freed: u64,
    /// Objects still reachable.
    pub kept: u64,
    /// Keys removed (or, on a dry run, that would be) by the policy or the size cap.
    pub removed: Vec<Removal>,
    /// Expired pins deleted.
    pub pins_expired: u64,
    /// Stored bytes (blobs as stored, trees encoded) the keys and pins kept reach.
    pub live_bytes: u64,
    /// The time budget ran out: some garbage files were left for the next run.
    pub incomplete: bool,
    /// Checkout objects deleted: those of deleted blobs, unrecorded ones, leftover temp files,
    /// or all of them with `--checkouts`.
    pub checkouts_deleted: u64,
    /// Their bytes (freed on disk only once no restored folder links to them).
    pub checkout_bytes: u64,
    /// Checkout objects kept.
    pub checkouts_kept: u64,
}

/// What a gc run may remove besides unreachable objects.
#[derive(Clone, Debug, Default)]
pub struct GcOptions {
    /// Count, delete nothing.
    pub dry_run: bool,
    /// Also delete every checkout object (not only those of dead blobs and leftovers).
    pub checkouts: bool,
    /// Retention rules (see [`policy`]); empty: no key is removed by policy.
    pub rules: Vec<Rule>,
    /// Evict least recently used keys while the store holds more than this many stored bytes,
    /// down to [`policy::SIZE_TARGET_PERCENT`] of it.
    pub max_size: Option<u64>,
    /// Evict least recently used keys while the store's filesystem has less free space.
    pub min_free: Option<u64>,
    /// Keys never removed by this run (say, the key the calling `put` just bound).
    pub protect: Vec<Key>,
    /// Stop deleting files (leaving them for the next run) once this much time has passed.
    pub budget: Option<Duration>,
}

impl Store {
    /// Removes the keys `opts` evicts, then deletes (or with `dry_run`, counts) everything no
    /// key or live pin reaches, expired pins, and checkout objects as `opts` says.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let start = Instant::now();
        let dry_run = opts.dry_run;
        let over_budget = || opts.budget.is_some_and(|b| start.elapsed() > b);
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        // Evict.
        let plan = self.index.read(|r| plan_removals(r, opts, self.dir()))?;
        let mut removed: HashSet<String> = HashSet::new();
        if dry_run {
            removed.extend(plan.iter().map(|r| r.key.to_string()));
            report.removed = plan;
        } else if !plan.is_empty() {
            report.removed = self.index.write(|w| {
                let now = crate::records::now();
                let pinned = pinned_keys(&w.pins_under("")?, now);
                let mut out = Vec::new();
                for r in plan {
                    if pinned.contains(r.key.as_str()) {
                        continue; // pinned since the plan was made
                    }
                    if w.unbind(&r.key)?.is_some() {
                        out.push(r);
                    }
                }
                Ok(out)
            })?;
        }
        // Mark.
        let marked = self.index.read(|r| mark(r, &removed))?;
        let Marked {
            dead_trees,
            dead_blobs,
            live_blobs,
            tree_bytes,
            kept,
            dead_derived,
            dead_aliases,
            dead_pins,
            live_bytes,
        } = marked;
        report.pins_expired = dead_pins.len() as u64;
        report.live_bytes = live_bytes;
        report.trees = dead_trees.len() as u64;
        report.blobs = dead_blobs.len() as u64;
        report.kept = kept;
        report.bytes_freed = tree_bytes;

        let dead_set: HashSet<Id> = dead_blobs.iter().copied().collect();
        let (files, fanout_temps) = self
            .blobs
            .list_with_temps()
            .map_err(Error::io(self.blobs.root()))?;
        let mut doomed_files = Vec::new();
        for (id, enc, len) in files {
            if !live_blobs.contains(&id) {
                if !dead_set.contains(&id) {
                    report.orphan_files += 1;
                }
                report.bytes_freed += len;
                doomed_files.push((id, enc));
            }
        }
        let temps: Vec<_> = std::fs::read_dir(self.blobs.tmp())
            .map_err(Error::io(self.blobs.tmp()))?
            .filter_map(|e| e.ok())
            .collect();
        let (pack_files, pack_temps) =
            crate::packs::list(self.blobs.packs()).map_err(Error::io(self.blobs.packs()))?;
        report.temp_files = (temps.len() + fanout_temps.len() + pack_temps.len()) as u64;
        self.gc_checkouts(opts, &live_blobs, &mut report)?;
        if dry_run {
            let plan = self.plan_packs(&pack_files, Some(&dead_set))?;
            report.packs_deleted = plan.dead.len() as u64;
            report.packs_rewritten = plan.sparse.len() as u64;
            report.bytes_freed += plan.dead.iter().map(|p| p.1).sum::<u64>();
            report.bytes_freed += plan.sparse.iter().map(|p| p.1 - p.2).sum::<u64>();
            return Ok(report);
        }

        // Sweep: index rows first, then files.
        if !dead_trees.is_empty()
            || !dead_blobs.is_empty()
            || !dead_derived.is_empty()
            || !dead_aliases.is_empty()
            || !dead_pins.is_empty()
        {
            self.index.write(|w| {
                let now = crate::records::now();
                for name in &dead_pins {
                    // Only if still expired: a pin renewed meanwhile stays.
                    if w.pin(name)?.is_none_or(|p| !p.live_at(now)) {
                        w.remove_pin(name)?;
                    }
                }
                for row in &dead_derived {
                    w.remove_derived(row)?;
                }
                for name in &dead_aliases {
                    w.remove_alias(name)?;
                }
                for id in &dead_trees {
                    w.remove_tree(id)?;
                }
                for id in &dead_blobs {
                    w.remove_blob(id)?;
                }
                Ok(())
            })?;
        }
        for (id, enc) in doomed_files {
            if over_budget() {
                report.incomplete = true;
                return Ok(report);
            }
            let p = self.blobs.path(&id, enc);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p)(e)),
            }
        }
        for p in pack_temps {
            remove_if_present(&p)?;
        }
        let plan = self.plan_packs(&pack_files, None)?;
        for (pack, len, _) in &plan.dead {
            remove_if_present(&self.blobs.pack_path(*pack))?;
            report.packs_deleted += 1;
            report.bytes_freed += len;
        }
        for (pack, len, _) in &plan.sparse {
            if over_budget() {
                report.incomplete = true;
                return Ok(report);
            }
            if let Some(written) = self.repack(*pack)? {
                report.packs_rewritten += 1;
                report.bytes_freed += len.saturating_sub(written);
            }
        }
        for p in fanout_temps {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p)(e)),
            }
        }
        for t in temps {
            let p = t.path();
            let r = if t.file_type().map(|f| f.is_dir()).unwrap_or(false) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = r
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(Error::io(&p)(e));
            }
        }
        Ok(report)
    }

    /// Deletes the checkout objects of dead blobs, those without a row (left by a restore that
    /// did not finish; never trusted without a re-hash anyway), strays and temp files, or with
    /// `opts.checkouts` all of them: rows first, then files (a crash in between leaves files
    /// without rows, which are re-hashed before use and deleted by the next gc).
    fn gc_checkouts(
        &self,
        opts: &GcOptions,
        live: &HashSet<Id>,
        report: &mut GcReport,
    ) -> Result<()> {
        let root = self.dir().join(crate::checkout::CHECKOUTS_DIR);
        let listed = crate::checkout::list(&root).map_err(Error::io(&root))?;
        let rows = self.index.read(|r| r.all_checkouts())?;
        let recorded: HashSet<(Id, String)> =
            rows.iter().map(|(id, v, _)| (*id, v.clone())).collect();
        let mut doomed_files = Vec::new();
        let mut present = HashSet::new();
        for item in listed {
            match item {
                crate::checkout::Listed::Object {
                    id,
                    variant,
                    path,
                    size,
                    ..
                } => {
                    let key = (id, variant.name());
                    if opts.checkouts || !live.contains(&id) || !recorded.contains(&key) {
                        report.checkouts_deleted += 1;
                        report.checkout_bytes += size;
                        doomed_files.push(path);
                    } else {
                        report.checkouts_kept += 1;
                        present.insert(key);
                    }
                }
                crate::checkout::Listed::Other { path, size } => {
                    report.checkout_bytes += size;
                    doomed_files.push(path);
                }
            }
        }
        if opts.dry_run {
            return Ok(());
        }
        let doomed_rows: Vec<(Id, String)> = rows
            .into_iter()
            .map(|(id, v, _)| (id, v))
            .filter(|k| !present.contains(k))
            .collect();
        if !doomed_rows.is_empty() {
            self.index.write(|w| {
                for (id, variant) in &doomed_rows {
                    w.remove_checkout(id, variant)?;
                }
                Ok(())
            })?;
        }
        for p in doomed_files {
            if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&p).map_err(Error::io(&p))?;
            } else {
                remove_if_present(&p)?;
            }
        }
        Ok(())
    }

    /// Which pack files hold no recorded blob (`dead`) and which hold less than half their size
    /// in recorded blobs (`sparse`): (pack, file size, live bytes). `ignore` lists blobs whose
    /// rows a dry run would have deleted.
    fn plan_packs(
        &self,
        files: &[(PackId, u64)],
        ignore: Option<&HashSet<Id>>,
    ) -> Result<PackPlan> {
        let live = self.index.read(|r| {
            let mut live: HashMap<PackId, u64> = HashMap::new();
            r.each_blob(|id, (_, stored, _), slot| {
                if let Some((pack, _)) = slot
                    && !ignore.is_some_and(|d| d.contains(&id))
                {
                    *live.entry(PackId(pack)).or_default() += ENTRY_HEADER_LEN + stored;
                }
                Ok(())
            })?;
            Ok(live)
        })?;
        let mut plan = PackPlan::default();
        for &(pack, len) in files {
            match live.get(&pack) {
                None => plan.dead.push((pack, len, 0)),
                Some(&l) if worth_rewriting(len, l) => plan.sparse.push((pack, len, l)),
                Some(_) => {}
            }
        }
        Ok(plan)
    }

    /// Copies the recorded blobs of `pack` (each verified) to new packs, points their rows
    /// there and deletes `pack`. Returns the bytes written, or `None` (pack left as it is, with a
    /// warning) if a blob in it no longer matches its id: `verify` reports that one.
    fn repack(&self, pack: PackId) -> Result<Option<u64>> {
        let members = self.index.read(|r| {
            let mut ids = Vec::new();
            r.each_packed(|id, p, _| {
                if p == pack.0 {
                    ids.push(id);
                }
            })?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some((size, place)) = r.placement(&id)? {
                    out.push((id, size, place));
                }
            }
            Ok(out)
        })?;
        let mut moved = Vec::with_capacity(members.len());
        let mut written = 0;
        for (id, size, place) in members {
            let (enc, bytes) = match self.blobs.read_stored(&id, size, Some(place)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("{pack} not rewritten: {e}");
                    return Ok(None);
                }
            };
            let stored = self
                .blobs
                .write(
                    Source::Encoded {
                        id,
                        size,
                        encoding: enc,
                        bytes: &bytes,
                    },
                    None,
                )?
                .persist(&self.blobs)?;
            written += ENTRY_HEADER_LEN + stored.stored_size;
            moved.push((id, place.pack, stored.pack));
        }
        self.blobs.sync().map_err(Error::io(self.blobs.packs()))?;
        self.index.write(|w| {
            for (id, old, new) in &moved {
                if let (Some(old), Some(new)) = (old, new) {
                    w.repoint_packed(id, (old.pack.0, old.offset), (new.pack.0, new.offset))?;
                }
            }
            Ok(())
        })?;
        remove_if_present(&self.blobs.pack_path(pack))?;
        Ok(Some(written))
    }
}

/// The keys of live pins.
fn pinned_keys(pins: &[crate::Pin], now: u64) -> HashSet<String> {
    pins.iter()
        .filter(|p| p.live_at(now))
        .filter_map(|p| match &p.target {
            PinTarget::Key(k) => Some(k.to_string()),
            PinTarget::Root(_) => None,
        })
        .collect()
}

/// The keys `opts` removes: the retention rules' choices, then, if the store is over its size
/// cap (or its filesystem short of free space), the least recently used keys beyond what fits
/// in [`policy::SIZE_TARGET_PERCENT`] of the cap, counting each object once (what keys share
/// is kept by whichever is kept). Pinned and protected keys are never chosen.
fn plan_removals(r: &Reader, opts: &GcOptions, dir: &Path) -> Result<Vec<Removal>> {
    if opts.rules.is_empty() && opts.max_size.is_none() && opts.min_free.is_none() {
        return Ok(Vec::new());
    }
    let now = crate::records::now();
    let mut pinned = pinned_keys(&r.pins_under("")?, now);
    pinned.extend(opts.protect.iter().map(|k| k.to_string()));
    let usage: HashMap<String, u64> = r.usage_under("")?.into_iter().collect();
    let records = r.records("")?;
    let infos: Vec<KeyInfo> = records
        .iter()
        .map(|rec| KeyInfo {
            key: rec.key.clone(),
            created: rec.created,
            last_used: usage
                .get(rec.key.as_str())
                .copied()
                .unwrap_or(rec.created)
                .max(rec.created),
            size: rec.size,
            pinned: pinned.contains(rec.key.as_str()),
        })
        .collect();
    let mut out = policy::apply(&opts.rules, &infos, now);
    let gone: HashSet<String> = out.iter().map(|r| r.key.to_string()).collect();
    let Some(target) = size_target(r, opts, dir)? else {
        return Ok(out);
    };
    // Keep order: pins first, then the newest key of each prefix, then the rest, most
    // recently used first; if pins and newest keys alone do not fit, plain recency (the final
    // tier).
    let mut left: Vec<(&KeyInfo, &crate::KeyRecord)> = infos
        .iter()
        .zip(&records)
        .filter(|(k, _)| !gone.contains(k.key.as_str()))
        .collect();
    let newest: HashSet<String> = {
        let mut by_prefix: HashMap<&str, &KeyInfo> = HashMap::new();
        for (k, _) in &left {
            let p = policy::prefix_of(k.key.as_str());
            match by_prefix.get(p) {
                Some(n) if (n.created, n.key.as_str()) >= (k.created, k.key.as_str()) => {}
                _ => {
                    by_prefix.insert(p, k);
                }
            }
        }
        by_prefix.values().map(|k| k.key.to_string()).collect()
    };
    let recency = |k: &KeyInfo| std::cmp::Reverse((k.last_used, k.created, k.key.clone()));
    let extra_roots: Vec<crate::Root> = r
        .pins_under("")?
        .into_iter()
        .filter(|p| p.live_at(now))
        .filter_map(|p| match p.target {
            PinTarget::Root(root) => Some(root),
            PinTarget::Key(_) => None,
        })
        .collect();
    for final_tier in [false, true] {
        left.sort_by_key(|(k, _)| {
            let tier = if k.pinned {
                0
            } else if !final_tier && newest.contains(k.key.as_str()) {
                1
            } else {
                2
            };
            (tier, recency(k))
        });
        let mut sizer = Sizer::new(r);
        for root in &extra_roots {
            sizer.add(&[*root])?;
        }
        let mut keep = 0;
        let mut fits = true;
        for (k, rec) in &left {
            let total = sizer.add(&rec.roots())?;
            if k.pinned || total <= target {
                keep += 1;
                continue;
            }
            fits = final_tier || !newest.contains(k.key.as_str());
            break;
        }
        if !fits {
            continue; // pins and newest keys alone exceed the target: the final tier
        }
        for (k, _) in &left[keep..] {
            out.push(Removal {
                key: k.key.clone(),
                reason: Reason::StoreSize,
                size: k.size,
            });
        }
        break;
    }
    Ok(out)
}

/// The stored bytes the store should keep at most, if it is over its cap or short of free
/// space; `None` if neither.
fn size_target(r: &Reader, opts: &GcOptions, dir: &Path) -> Result<Option<u64>> {
    let total = stored_bytes(r)?;
    let mut target = None;
    if let Some(cap) = opts.max_size
        && total > cap
    {
        target = Some(policy::share(cap, policy::SIZE_TARGET_PERCENT));
    }
    if let Some(min_free) = opts.min_free {
        let free = free_bytes(dir)?;
        if free < min_free {
            // Free the shortfall and a tenth of `min_free` more, for the same reason a cap
            // is enforced below itself.
            let need = min_free - free + min_free / 10;
            let t = total.saturating_sub(need);
            target = Some(target.map_or(t, |x: u64| x.min(t)));
        }
    }
    Ok(target)
}

/// The bytes the index records: blobs as stored (with their pack entry headers) and trees.
fn stored_bytes(r: &Reader) -> Result<u64> {
    let mut total = 0u64;
    r.each_blob(|_, (_, stored, _), slot| {
        total += stored + if slot.is_some() { ENTRY_HEADER_LEN } else { 0 };
        Ok(())
    })?;
    r.each_tree(|_, bytes| {
        total += bytes.len() as u64;
        Ok(())
    })?;
    Ok(total)
}

/// Free bytes (for unprivileged users) on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(dir).map_err(|e| Error::io(dir)(e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// How big a store is, and how much room its filesystem has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StoreSize {
    /// Bytes the index records: blobs as stored, trees encoded.
    pub stored: u64,
    /// Free bytes on the store's filesystem.
    pub free: u64,
}

impl ReadSession {
    /// The store's size (one read of the `blobs` and `trees` tables) and free space.
    pub fn size(&self) -> Result<StoreSize> {
        Ok(StoreSize {
            stored: self.store.index.read(stored_bytes)?,
            free: free_bytes(self.store.dir())?,
        })
    }
}

/// Adds up the stored bytes of closures, each object once.
struct Sizer<'r> {
    r: &'r Reader,
    trees: HashSet<Id>,
    blobs: HashSet<Id>,
    total: u64,
}

impl<'r> Sizer<'r> {
    fn new(r: &'r Reader) -> Self {
        Sizer {
            r,
            trees: HashSet::new(),
            blobs: HashSet::new(),
            total: 0,
        }
    }

    fn blob(&mut self, id: Id) -> Result<()> {
        if self.blobs.insert(id)
            && let Some((_, p)) = self.r.placement(&id)?
        {
            self.total += p.stored_size
                + if p.pack.is_some() {
                    ENTRY_HEADER_LEN
                } else {
                    0
                };
        }
        Ok(())
    }

    /// Adds what `roots` reach and was not counted yet; returns the running total.
    fn add(&mut self, roots: &[Root]) -> Result<u64> {
        let mut trees = Vec::new();
        for root in roots {
            match root {
                Root::Tree { id } => trees.push(*id),
                Root::File { id, .. } => self.blob(*id)?,
            }
        }
        let mut blobs = Vec::new();
        let (r, seen) = (self.r, &mut self.trees);
        let mut bytes = 0u64;
        walk::closure(
            trees,
            |id| {
                if !seen.insert(*id) {
                    return Ok(Load::Known);
                }
                Ok(match r.tree_opt(id)? {
                    Some(t) => {
                        bytes += t.encode().map_or(0, |b| b.len() as u64);
                        Load::Tree(t)
                    }
                    None => Load::Known,
                })
            },
            |_, tree| {
                for e in &tree.entries {
                    if let EntryKind::File { blob, .. } = e.kind {
                        blobs.push(blob);
                    }
                }
                Ok::<(), Error>(())
            },
        )?;
        self.total += bytes;
        for b in blobs {
            self.blob(b)?;
        }
        Ok(self.total)
    }
}

/// What gc's mark found.
struct Marked {
    dead_trees: Vec<Id>,
    dead_blobs: Vec<Id>,
    live_blobs: HashSet<Id>,
    /// Encoded bytes of the dead trees.
    tree_bytes: u64,
    /// Live objects.
    kept: u64,
    dead_derived: Vec<DerivedRow>,
    dead_aliases: Vec<String>,
    /// Expired pins.
    dead_pins: Vec<String>,
    /// Stored bytes of what is live.
    live_bytes: u64,
}

/// Marks everything the keys (but `removed`, which a dry run pretends are gone) and live pins
/// reach, and the derived trees of live blobs, in one read transaction; everything else is
/// dead.
fn mark(r: &Reader, removed: &HashSet<String>) -> Result<Marked> {
    let mut live_trees = HashSet::new();
    let mut live_blobs = HashSet::new();
    let mut roots = Vec::new();
    let now = crate::records::now();
    let mut pinned_roots = Vec::new();
    let mut dead_pins = Vec::new();
    for pin in r.pins_under("")? {
        if !pin.live_at(now) {
            dead_pins.push(pin.name.to_string());
            continue;
        }
        match pin.target {
            PinTarget::Root(root) => pinned_roots.push(root),
            PinTarget::Key(k) => {
                if !removed.contains(k.as_str())
                    && let Ok(Some(rec)) = r.record(k.as_str())
                {
                    pinned_roots.extend(rec.roots());
                }
            }
        }
    }
    let records = r
        .records("")?
        .into_iter()
        .filter(|rec| !removed.contains(rec.key.as_str()));
    for root in records.flat_map(|rec| rec.roots()).chain(pinned_roots) {
        match root {
            Root::Tree { id } => roots.push(id),
            Root::File { id, .. } => {
                live_blobs.insert(id);
            }
        }
    }
    // Derived trees live as long as their source blob: mark until no row adds a tree (a derived
    // tree's files could, in principle, be the source of another).
    let derived = r.all_derived()?;
    let mut used = vec![false; derived.len()];
    loop {
        walk::closure(
            roots.drain(..),
            |id| {
                if !live_trees.insert(*id) {
                    return Ok(Load::Known);
                }
                // A tree the index lacks is a hole `verify` reports; what it would reach is
                // unknown, and nothing else references it.
                Ok(match r.tree_opt(id)? {
                    Some(t) => Load::Tree(t),
                    None => Load::Known,
                })
            },
            |_, tree| {
                for e in &tree.entries {
                    if let EntryKind::File { blob, .. } = e.kind {
                        live_blobs.insert(blob);
                    }
                }
                Ok::<(), Error>(())
            },
        )?;
        for (row, used) in derived.iter().zip(used.iter_mut()) {
            if !*used && live_blobs.contains(&row.source) {
                *used = true;
                roots.push(row.tree);
            }
        }
        if roots.is_empty() {
            break;
        }
    }
    let dead_derived = derived
        .into_iter()
        .zip(used)
        .filter_map(|(row, used)| (!used).then_some(row))
        .collect();
    let mut dead_trees = Vec::new();
    let mut tree_bytes = 0;
    let mut live_bytes = 0;
    r.each_tree(|id, bytes| {
        if !live_trees.contains(&id) {
            tree_bytes += bytes.len() as u64;
            dead_trees.push(id);
        } else {
            live_bytes += bytes.len() as u64;
        }
        Ok(())
    })?;
    let mut dead_blobs = Vec::new();
    r.each_blob(|id, (_, stored, _), slot| {
        if !live_blobs.contains(&id) {
            dead_blobs.push(id);
        } else {
            live_bytes += stored + if slot.is_some() { ENTRY_HEADER_LEN } else { 0 };
        }
        Ok(())
    })?;
    let dead_aliases = r
        .all_aliases()?
        .into_iter()
        .filter_map(|(name, blob)| (!live_blobs.contains(&blob)).then_some(name))
        .collect();
    Ok(Marked {
        kept: (live_trees.len() + live_blobs.len()) as u64,
        dead_trees,
        dead_blobs,
        live_blobs,
        tree_bytes,
        dead_derived,
        dead_aliases,
        dead_pins,
        live_bytes,
    })
}

/// Packs up to this size are rewritten as soon as any of their bytes is dead: copying a few
/// MiB is cheap, and small stores then get every byte back. Larger packs wait until less than
/// half of them is live, so a gc never rewrites much more than it frees.
pub const REPACK_ANY_DEAD_BELOW: u64 = 4 * 1024 * 1024;

/// Whether a pack of `len` bytes holding `live` bytes of recorded entries should be rewritten.
fn worth_rewriting(len: u64, live: u64) -> bool {
    let dead = len.saturating_sub(crate::packs::PACK_MAGIC.len() as u64 + live);
    dead > 0 && (len <= REPACK_ANY_DEAD_BELOW || live.saturating_mul(2) < len)
}

/// Pack files gc deletes or rewrites: (pack, file size, live bytes).
#[derive(Default)]
struct PackPlan {
    dead: Vec<(PackId, u64, u64)>,
    sparse: Vec<(PackId, u64, u64)>,
}

fn remove_if_present(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p)(e)),
    }
}
