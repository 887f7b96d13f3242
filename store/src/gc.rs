//! Garbage collection: delete every object no key reaches.
//!
//! gc holds the gc lock exclusively, so no `put`, `get`, `verify` or other command is running:
//! an object a writer is about to reference can never be deleted. It removes index rows first
//! and files after the commit, so a crash in between leaves unindexed files (garbage the next gc
//! removes), never an index row without its file.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

use serde::Serialize;

use crate::blobs::Source;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{DerivedRow, Reader};
use crate::key::Root;
use crate::lock::LockMode;
use crate::packs::{ENTRY_HEADER_LEN, PackId};
use crate::store::Store;
use crate::tree::EntryKind;
use crate::walk::{self, Load};

/// What gc deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Delete nothing; report what would be deleted.
    pub dry_run: bool,
    /// Also delete every checkout object (not only those of dead blobs and leftovers).
    pub checkouts: bool,
}

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
    /// Checkout objects deleted: those of deleted blobs, unrecorded ones, leftover temp files,
    /// or all of them with `--checkouts`.
    pub checkouts_deleted: u64,
    /// Their bytes (freed on disk only once no restored folder links to them).
    pub checkout_bytes: u64,
    /// Checkout objects kept.
    pub checkouts_kept: u64,
}

impl Store {
    /// Deletes (or with `opts.dry_run`, counts) everything no key reaches, and checkout
    /// objects as `opts` says.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let dry_run = opts.dry_run;
        let _lock = self.lock(LockMode::Exclusive)?;
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        // Mark.
        let marked = self.index.read(mark)?;
        let Marked {
            dead_trees,
            dead_blobs,
            live_blobs,
            tree_bytes,
            kept,
            dead_derived,
            dead_aliases,
        } = marked;
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
        {
            self.index.write(|w| {
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
}

/// Marks everything the keys reach (and the derived trees of live blobs), in one read
/// transaction; everything else is dead.
fn mark(r: &Reader) -> Result<Marked> {
    let mut live_trees = HashSet::new();
    let mut live_blobs = HashSet::new();
    let mut roots = Vec::new();
    for rec in r.records("")? {
        for root in rec.roots() {
            match root {
                Root::Tree { id } => roots.push(id),
                Root::File { id, .. } => {
                    live_blobs.insert(id);
                }
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
    r.each_tree(|id, bytes| {
        if !live_trees.contains(&id) {
            tree_bytes += bytes.len() as u64;
            dead_trees.push(id);
        }
        Ok(())
    })?;
    let mut dead_blobs = Vec::new();
    r.each_blob(|id, _, _| {
        if !live_blobs.contains(&id) {
            dead_blobs.push(id);
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
