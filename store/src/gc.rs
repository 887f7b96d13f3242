//! Garbage collection: delete every object no key reaches.
//!
//! gc holds the gc lock exclusively, so no `put`, `get`, `verify` or other command is running:
//! an object a writer is about to reference can never be deleted. It removes index rows first
//! and files after the commit, so a crash in between leaves unindexed files (garbage the next gc
//! removes), never an index row without its file.

use std::collections::HashSet;
use std::io;

use redb::ReadableTable;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BLOBS, KEYS, TREES};
use crate::key::{KeyRecord, Root};
use crate::lock::LockMode;
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
        report.temp_files = (temps.len() + fanout_temps.len()) as u64;
        if dry_run {
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
                for id in &dead_blobs {
                    blobs.remove(&id.0).map_err(self.index.db())?;
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
