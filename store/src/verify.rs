//! Verify: re-hash stored objects and check that every key's closure is complete.

use std::collections::{HashMap, HashSet};

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::ReadableTable;
use serde::Serialize;

use crate::blobs::BlobError;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BLOBS, KEYS, TREES};
use crate::key::{KeyRecord, Root};
use crate::lock::{GcLock, LockMode};
use crate::progress::Progress;
use crate::store::{Store, decode_checked};
use crate::tree::{EntryKind, Tree};

/// What kind of fault an object has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Present, but its bytes do not hash to its id (or do not decode).
    Corrupt,
    /// Referenced, but absent.
    Missing,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Corrupt or missing.
    pub fault: Fault,
    /// `blob`, `tree` or `key`.
    pub object: &'static str,
    /// The object's id (for a key, its root id).
    pub id: Id,
    /// Human-readable detail, naming the referrer where there is one.
    pub detail: String,
}

/// The outcome of a verify.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub blobs: u64,
    /// Bytes of blob content re-hashed.
    pub bytes: u64,
    /// Trees re-hashed.
    pub trees: u64,
    /// Keys whose roots were checked.
    pub keys: u64,
    /// Everything wrong, sorted by id.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True if nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
    /// True if some object is corrupt.
    pub fn any_corrupt(&self) -> bool {
        self.problems.iter().any(|p| p.fault == Fault::Corrupt)
    }
    /// True if some object is missing.
    pub fn any_missing(&self) -> bool {
        self.problems.iter().any(|p| p.fault == Fault::Missing)
    }
}

impl Store {
    /// Verifies the whole store (`roots` empty) or what the given roots reach.
    pub fn verify(&self, roots: &[Root], progress: &dyn Progress) -> Result<VerifyReport> {
        let lock = self.lock(LockMode::Shared)?;
        self.verify_locked(roots, progress, &lock)
    }

    /// As [`Store::verify`], for a caller that already holds the gc lock.
    pub fn verify_locked(
        &self,
        roots: &[Root],
        progress: &dyn Progress,
        _held: &GcLock,
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut problems = Vec::new();
        // Snapshot what the index records, in one short transaction.
        let (blob_rows, tree_rows, keys) = self.index.read(|txn| {
            let blobs = txn.open_table(BLOBS).map_err(self.index.db())?;
            let packed = crate::index::packed_for_read(txn).map_err(self.index.db())?;
            let mut blob_rows = HashMap::new();
            for item in blobs.iter().map_err(self.index.db())? {
                let (k, v) = item.map_err(self.index.db())?;
                let id = Id(*k.value());
                let row = v.value();
                let place = crate::index::placement_of_row(row, packed.as_ref(), &id)
                    .map_err(self.index.db())?
                    .map(|(_, p)| p);
                blob_rows.insert(id, (row.0, place));
            }
            let trees = txn.open_table(TREES).map_err(self.index.db())?;
            let mut tree_rows = HashMap::new();
            for item in trees.iter().map_err(self.index.db())? {
                let (k, v) = item.map_err(self.index.db())?;
                tree_rows.insert(Id(*k.value()), v.value().to_vec());
            }
            let keys_t = txn.open_table(KEYS).map_err(self.index.db())?;
            let mut keys = Vec::new();
            for item in keys_t.iter().map_err(self.index.db())? {
                let (k, v) = item.map_err(self.index.db())?;
                match serde_json::from_slice::<KeyRecord>(v.value()) {
                    Ok(r) => keys.push(r),
                    Err(e) => {
                        return Err(Error::UnknownKey(format!(
                            "{} (unreadable record: {e})",
                            k.value()
                        )));
                    }
                }
            }
            Ok((blob_rows, tree_rows, keys))
        })?;

        let root_list: Vec<(String, Root)> = if roots.is_empty() {
            keys.iter()
                .map(|r| (format!("key {}", r.key), r.root))
                .collect()
        } else {
            roots
                .iter()
                .map(|r| (format!("root {}", r.id()), *r))
                .collect()
        };
        report.keys = if roots.is_empty() {
            keys.len() as u64
        } else {
            0
        };

        // Trees: all of them for a full verify, else those reachable from the roots.
        let mut decoded: HashMap<Id, Tree> = HashMap::new();
        let mut want_blobs: HashMap<Id, (Option<u64>, String)> = HashMap::new();
        let mut stack: Vec<(Id, String)> = Vec::new();
        if roots.is_empty() {
            stack.extend(tree_rows.keys().map(|id| (*id, "index".to_string())));
            for (id, (size, _)) in &blob_rows {
                want_blobs.insert(*id, (Some(*size), "index".into()));
            }
        }
        for (who, root) in &root_list {
            match root {
                Root::Tree { id } => {
                    if !tree_rows.contains_key(id) {
                        problems.push(Problem {
                            fault: Fault::Missing,
                            object: "tree",
                            id: *id,
                            detail: format!("root of {who} is missing"),
                        });
                    }
                    stack.push((*id, who.clone()));
                }
                Root::File { id, .. } => {
                    if !blob_rows.contains_key(id) {
                        problems.push(Problem {
                            fault: Fault::Missing,
                            object: "blob",
                            id: *id,
                            detail: format!("root of {who} is missing"),
                        });
                    } else {
                        want_blobs.entry(*id).or_insert((None, who.clone()));
                    }
                }
            }
        }
        let mut visited = HashSet::new();
        while let Some((id, who)) = stack.pop() {
            if !visited.insert(id) {
                continue;
            }
            let Some(bytes) = tree_rows.get(&id) else {
                continue; // reported by whoever referenced it
            };
            report.trees += 1;
            let tree = match decode_checked(id, bytes) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(Problem {
                        fault: Fault::Corrupt,
                        object: "tree",
                        id,
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            for e in &tree.entries {
                let name = String::from_utf8_lossy(&e.name);
                match &e.kind {
                    EntryKind::File { size, blob } => {
                        if blob_rows.contains_key(blob) {
                            want_blobs
                                .entry(*blob)
                                .or_insert((Some(*size), who.clone()));
                        } else {
                            problems.push(Problem {
                                fault: Fault::Missing,
                                object: "blob",
                                id: *blob,
                                detail: format!("file {name:?} of tree {id} ({who})"),
                            });
                        }
                    }
                    EntryKind::Dir { tree: child } => {
                        if !tree_rows.contains_key(child) {
                            problems.push(Problem {
                                fault: Fault::Missing,
                                object: "tree",
                                id: *child,
                                detail: format!("directory {name:?} of tree {id} ({who})"),
                            });
                        }
                        stack.push((*child, who.clone()));
                    }
                    _ => {}
                }
            }
            decoded.insert(id, tree);
        }

        // Blobs: re-hash each in parallel.
        let mut todo: Vec<(Id, Option<u64>, String)> = want_blobs
            .into_iter()
            .map(|(id, (s, who))| (id, s, who))
            .collect();
        // Largest first, so the biggest blobs (each read on one thread) do not end the run on
        // one core; then by id, for a stable order.
        todo.sort_by_key(|t| (std::cmp::Reverse(t.1.unwrap_or(u64::MAX)), t.0));
        progress.start("verifying", todo.len() as u64);
        // Each pool thread takes the next blob in that order (a parallel iterator would split
        // the list in halves and start the second thread in the middle).
        let next = AtomicUsize::new(0);
        let done = Mutex::new(Vec::with_capacity(todo.len()));
        rayon::scope(|scope| {
            for _ in 0..rayon::current_num_threads() {
                scope.spawn(|_| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((id, size, _)) = todo.get(i) else {
                            break;
                        };
                        let hint = blob_rows.get(id).and_then(|r| r.1);
                        let r =
                            self.blobs
                                .read_verified_hinted(id, *size, hint, &mut std::io::sink());
                        progress.advance(1);
                        done.lock().expect("not poisoned").push((i, r));
                    }
                });
            }
        });
        let mut done = done.into_inner().expect("not poisoned");
        done.sort_by_key(|d| d.0);
        let results: Vec<(Result<u64, BlobError>, Id, String)> = done
            .into_iter()
            .map(|(i, r)| (r, todo[i].0, todo[i].2.clone()))
            .collect();
        progress.finish();
        for (r, id, who) in results {
            report.blobs += 1;
            match r {
                Ok(n) => report.bytes += n,
                Err(BlobError::Missing(_)) => problems.push(Problem {
                    fault: Fault::Missing,
                    object: "blob",
                    id,
                    detail: format!("indexed but its file is gone ({who})"),
                }),
                Err(e) => problems.push(Problem {
                    fault: Fault::Corrupt,
                    object: "blob",
                    id,
                    detail: e.to_string(),
                }),
            }
        }
        problems.sort_by(|a, b| a.id.cmp(&b.id).then(a.detail.cmp(&b.detail)));
        problems.dedup();
        report.problems = problems;
        Ok(report)
    }
}
