//! Garbage collection: delete every object no key reaches.
//!
//! gc holds the gc lock exclusively, so no `put`, `get`, `verify` or other command is running:
//! an object a writer is about to reference can never be deleted. It removes index rows first
//! and files after the commit, so a crash in between leaves unindexed files (garbage the next gc
//! removes), never an index row without its file.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

use redb::ReadableTable;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BLOBS, KEYS, TREES};
use crate::key::{KeyRecord, Root};
use crate::lock::LockMode;
use crate::packs::{ENTRY_HEADER_LEN, PackId};
use crate::store::{Store, decode_checked};
use crate::tree::EntryKind;

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
}

impl Store {
    /// Deletes (or with `dry_run`, counts) everything no key reaches.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        // Mark.
        let (dead_trees, dead_blobs, live_blobs, tree_bytes, kept, dead_rows) =
            self.index.read(|txn| {
                let keys = txn.open_table(KEYS).map_err(self.index.db())?;
                let trees = txn.open_table(TREES).map_err(self.index.db())?;
                let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
                let mut live_trees = HashSet::new();
                let mut live_blobs = HashSet::new();
                let mut stack = Vec::new();
                for item in keys.iter().map_err(self.index.db())? {
                    let (k, v) = item.map_err(self.index.db())?;
                    let rec: KeyRecord = serde_json::from_slice(v.value()).map_err(|e| {
                        Error::UnknownKey(format!(
                            "{} (unreadable record: {e}); gc stopped",
                            k.value()
                        ))
                    })?;
                    for root in rec.roots() {
                        match root {
                            Root::Tree { id } => stack.push(id),
                            Root::File { id, .. } => {
                                live_blobs.insert(id);
                            }
                        }
                    }
                }
                // Layer trees (see `layers`) live as long as their layer blob: mark until no row
                // adds a tree (a layer tree's files could, in principle, include another layer).
                let layer_rows = crate::layers::all_rows(txn, self)?;
                let mut used_rows = HashSet::new();
                loop {
                    self.mark(&trees, &mut stack, &mut live_trees, &mut live_blobs)?;
                    let before = used_rows.len();
                    for (layer, tree) in &layer_rows {
                        if live_blobs.contains(layer) && used_rows.insert(*layer) {
                            stack.push(*tree);
                        }
                    }
                    if used_rows.len() == before {
                        break;
                    }
                }
                let dead_rows: Vec<Id> = layer_rows
                    .iter()
                    .map(|(layer, _)| *layer)
                    .filter(|l| !used_rows.contains(l))
                    .collect();
                let mut dead_trees = Vec::new();
                let mut tree_bytes = 0;
                for item in trees.iter().map_err(self.index.db())? {
                    let (k, v) = item.map_err(self.index.db())?;
                    let id = Id(*k.value());
                    if !live_trees.contains(&id) {
                        tree_bytes += v.value().len() as u64;
                        dead_trees.push(id);
                    }
                }
                let mut dead_blobs = Vec::new();
                for item in blobs.iter().map_err(self.index.db())? {
                    let (k, _) = item.map_err(self.index.db())?;
                    let id = Id(*k.value());
                    if !live_blobs.contains(&id) {
                        dead_blobs.push(id);
                    }
                }
                let kept = (live_trees.len() + live_blobs.len()) as u64;
                Ok((
                    dead_trees, dead_blobs, live_blobs, tree_bytes, kept, dead_rows,
                ))
            })?;
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
        if dry_run {
            let plan = self.plan_packs(&pack_files, Some(&dead_set))?;
            report.packs_deleted = plan.dead.len() as u64;
            report.packs_rewritten = plan.sparse.len() as u64;
            report.bytes_freed += plan.dead.iter().map(|p| p.1).sum::<u64>();
            report.bytes_freed += plan.sparse.iter().map(|p| p.1 - p.2).sum::<u64>();
            return Ok(report);
        }

        // Sweep: index rows first, then files.
        if !dead_trees.is_empty() || !dead_blobs.is_empty() || !dead_rows.is_empty() {
            self.index.write(|txn| {
                crate::layers::remove_rows(txn, self, &dead_rows)?;
                let mut trees = txn.open_table(TREES).map_err(self.index.db())?;
                for id in &dead_trees {
                    trees.remove(&id.0).map_err(self.index.db())?;
                }
                let mut blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
                let mut packed = crate::index::packed_for_write(txn).map_err(self.index.db())?;
                for id in &dead_blobs {
                    blobs.remove(&id.0).map_err(self.index.db())?;
                    packed.remove(&id.0).map_err(self.index.db())?;
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

    /// Which pack files hold no recorded blob (`dead`) and which hold less than half their size
    /// in recorded blobs (`sparse`): (pack, file size, live bytes). `ignore` lists blobs whose
    /// rows a dry run would have deleted.
    fn plan_packs(
        &self,
        files: &[(PackId, u64)],
        ignore: Option<&HashSet<Id>>,
    ) -> Result<PackPlan> {
        let live = self.index.read(|txn| {
            let mut live: HashMap<PackId, u64> = HashMap::new();
            let Some(packed) = crate::index::packed_for_read(txn).map_err(self.index.db())? else {
                return Ok(live);
            };
            let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
            for item in packed.iter().map_err(self.index.db())? {
                let (k, v) = item.map_err(self.index.db())?;
                let id = Id(*k.value());
                if ignore.is_some_and(|d| d.contains(&id)) {
                    continue;
                }
                let stored = blobs
                    .get(&id.0)
                    .map_err(self.index.db())?
                    .map_or(0, |r| r.value().1);
                *live.entry(PackId(v.value().0)).or_default() += ENTRY_HEADER_LEN + stored;
            }
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
        let members = self.index.read(|txn| {
            let mut out = Vec::new();
            let Some(packed) = crate::index::packed_for_read(txn).map_err(self.index.db())? else {
                return Ok(out);
            };
            let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
            for item in packed.iter().map_err(self.index.db())? {
                let (k, v) = item.map_err(self.index.db())?;
                if v.value().0 != pack.0 {
                    continue;
                }
                let id = Id(*k.value());
                if let Some((size, place)) =
                    crate::index::placement(&blobs, Some(&packed), &id).map_err(self.index.db())?
                {
                    out.push((id, size, place));
                }
            }
            Ok(out)
        })?;
        let mut moved = Vec::with_capacity(members.len());
        let mut written = 0;
        for (id, size, place) in members {
            let (enc, bytes) = match self.blobs.read_encoded(&id, size, Some(place)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("{pack} not rewritten: {e}");
                    return Ok(None);
                }
            };
            let stored = self
                .blobs
                .write_encoded(id, size, enc, &bytes)?
                .persist(&self.blobs)?;
            written += ENTRY_HEADER_LEN + stored.stored_size;
            moved.push((id, place.pack, stored.pack));
        }
        self.blobs.sync().map_err(Error::io(self.blobs.packs()))?;
        self.index.write(|txn| {
            let mut packed = crate::index::packed_for_write(txn).map_err(self.index.db())?;
            for (id, old, new) in &moved {
                let (Some(old), Some(new)) = (old, new) else {
                    continue;
                };
                let still = packed
                    .get(&id.0)
                    .map_err(self.index.db())?
                    .is_some_and(|v| v.value() == (old.pack.0, old.offset));
                if still {
                    packed
                        .insert(&id.0, (new.pack.0, new.offset))
                        .map_err(self.index.db())?;
                }
            }
            Ok(())
        })?;
        remove_if_present(&self.blobs.pack_path(pack))?;
        Ok(Some(written))
    }

    /// Marks everything reachable from the trees on `stack`.
    fn mark(
        &self,
        trees: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
        stack: &mut Vec<Id>,
        live_trees: &mut HashSet<Id>,
        live_blobs: &mut HashSet<Id>,
    ) -> Result<()> {
        while let Some(id) = stack.pop() {
            if !live_trees.insert(id) {
                continue;
            }
            // A tree we cannot read could hide references: refuse to guess.
            let Some(bytes) = trees.get(&id.0).map_err(self.index.db())? else {
                continue;
            };
            let tree = decode_checked(id, bytes.value())?;
            for e in tree.entries {
                match e.kind {
                    EntryKind::Dir { tree } => stack.push(tree),
                    EntryKind::File { blob, .. } => {
                        live_blobs.insert(blob);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
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
