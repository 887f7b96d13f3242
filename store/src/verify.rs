//! Verify: re-hash stored objects and check that every key's closure is complete.

use std::collections::{HashMap, HashSet};

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::blobs::{BlobError, copy_verified};
use crate::error::Result;
use crate::id::Id;
use crate::index::{decode_tree, placement_of};
use crate::key::Root;
use crate::progress::Progress;
use crate::session::ReadSession;
use crate::tree::EntryKind;
use crate::walk::{self, Load};

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
    /// `blob`, `tree`, `record` (a key's record) or `checkout` (a checkout object).
    pub object: &'static str,
    /// The object's id (none for a record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    /// The key, for a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
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
    /// Checkout objects re-hashed (those of the blobs checked).
    pub checkouts: u64,
    /// Their bytes.
    pub checkout_bytes: u64,
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

impl ReadSession {
    /// Verifies the whole store (`roots` empty) or what the given roots reach.
    pub fn verify(&self, roots: &[Root], progress: &dyn Progress) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut problems = Vec::new();
        // Snapshot what the index records, in one short transaction.
        let (blob_rows, tree_rows, records) = self.store.index.read(|r| {
            let mut blob_rows = HashMap::new();
            r.each_blob(|id, row, slot| {
                blob_rows.insert(id, (row.0, placement_of(row, slot)));
                Ok(())
            })?;
            let mut tree_rows = HashMap::new();
            r.each_tree(|id, bytes| {
                tree_rows.insert(id, bytes.to_vec());
                Ok(())
            })?;
            Ok((blob_rows, tree_rows, r.all_records()?))
        })?;
        let mut keys = Vec::with_capacity(records.len());
        for (key, rec) in records {
            match rec {
                Ok(rec) => keys.push(rec),
                Err(e) => problems.push(Problem {
                    fault: Fault::Corrupt,
                    object: "record",
                    id: None,
                    key: Some(key),
                    detail: e.to_string(),
                }),
            }
        }

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

        // Trees: those the roots reach (attributed to the first root that reaches them), and
        // for a full verify every other tree too.
        let mut want_blobs: HashMap<Id, (Option<u64>, String)> = HashMap::new();
        let mut starts: Vec<(Id, String)> = Vec::new();
        for (who, root) in &root_list {
            match root {
                Root::Tree { id } => {
                    if !tree_rows.contains_key(id) {
                        problems.push(Problem {
                            fault: Fault::Missing,
                            object: "tree",
                            id: Some(*id),
                            key: None,
                            detail: format!("root of {who} is missing"),
                        });
                    }
                    starts.push((*id, who.clone()));
                }
                Root::File { id, .. } => {
                    if !blob_rows.contains_key(id) {
                        problems.push(Problem {
                            fault: Fault::Missing,
                            object: "blob",
                            id: Some(*id),
                            key: None,
                            detail: format!("root of {who} is missing"),
                        });
                    } else {
                        want_blobs.entry(*id).or_insert((None, who.clone()));
                    }
                }
            }
        }
        if roots.is_empty() {
            let mut all: Vec<Id> = tree_rows.keys().copied().collect();
            all.sort();
            starts.extend(all.into_iter().map(|id| (id, "index".to_string())));
            for (id, (size, _)) in &blob_rows {
                want_blobs
                    .entry(*id)
                    .or_insert((Some(*size), "index".into()));
            }
        }
        let mut visited = HashSet::new();
        let mut corrupt_trees = Vec::new();
        for (start, who) in starts {
            walk::closure(
                [start],
                |id| {
                    if !visited.insert(*id) {
                        return Ok(Load::Known);
                    }
                    let Some(bytes) = tree_rows.get(id) else {
                        return Ok(Load::Known); // reported by whoever referenced it
                    };
                    report.trees += 1;
                    Ok(match decode_tree(*id, bytes) {
                        Ok(t) => Load::Tree(t),
                        Err(e) => {
                            corrupt_trees.push((*id, e.to_string()));
                            Load::Known
                        }
                    })
                },
                |id, tree| {
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
                                        id: Some(*blob),
                                        key: None,
                                        detail: format!("file {name:?} of tree {id} ({who})"),
                                    });
                                }
                            }
                            EntryKind::Dir { tree: child } if !tree_rows.contains_key(child) => {
                                problems.push(Problem {
                                    fault: Fault::Missing,
                                    object: "tree",
                                    id: Some(*child),
                                    key: None,
                                    detail: format!("directory {name:?} of tree {id} ({who})"),
                                });
                            }
                            _ => {}
                        }
                    }
                    Ok::<(), std::convert::Infallible>(())
                },
            )
            .unwrap_or_else(|never| match never {});
        }
        for (id, detail) in corrupt_trees {
            problems.push(Problem {
                fault: Fault::Corrupt,
                object: "tree",
                id: Some(id),
                key: None,
                detail,
            });
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
                        let r = self
                            .store
                            .blobs
                            .open(id, *size, hint)
                            .and_then(|reader| copy_verified(reader, &mut std::io::sink()));
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
                    id: Some(id),
                    key: None,
                    detail: format!("indexed but its file is gone ({who})"),
                }),
                Err(e) => problems.push(Problem {
                    fault: Fault::Corrupt,
                    object: "blob",
                    id: Some(id),
                    key: None,
                    detail: e.to_string(),
                }),
            }
        }
        self.verify_checkouts(&blob_rows, &mut report, &mut problems)?;
        problems.sort_by(|a, b| (&a.id, &a.key, &a.detail).cmp(&(&b.id, &b.key, &b.detail)));
        problems.dedup();
        report.problems = problems;
        Ok(report)
    }
}

impl ReadSession {
    /// Re-hashes the checkout objects of the blobs in `blob_rows` (those verified): a modified
    /// one is reported as a corrupt `checkout` and its row dropped, so the next restore that
    /// needs it hashes it again and replaces it; a row whose file is gone is dropped quietly
    /// (objects are a cache).
    fn verify_checkouts(
        &self,
        blob_rows: &HashMap<Id, (u64, Option<crate::blobs::Placement>)>,
        report: &mut VerifyReport,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        use rayon::prelude::*;
        let root = self.store.dir().join(crate::checkout::CHECKOUTS_DIR);
        let rows: Vec<_> = self
            .store
            .index
            .read(|r| r.all_checkouts())?
            .into_iter()
            .filter_map(|(id, v, row)| blob_rows.get(&id).map(|b| (id, b.0, v, row)))
            .collect();
        let checked: Vec<_> = rows
            .par_iter()
            .map(|(id, size, v, row)| crate::checkout::check_object(&root, id, *size, v, row))
            .collect();
        let mut dropped = Vec::new();
        for ((id, _, v, _), c) in rows.into_iter().zip(checked) {
            match c {
                crate::checkout::Checked::Good(n) => {
                    report.checkouts += 1;
                    report.checkout_bytes += n;
                }
                crate::checkout::Checked::Gone => dropped.push((id, v)),
                crate::checkout::Checked::Bad(detail) => {
                    report.checkouts += 1;
                    problems.push(Problem {
                        fault: Fault::Corrupt,
                        object: "checkout",
                        id: Some(id),
                        key: None,
                        detail: format!(
                            "{detail}; forgotten, so the next restore that needs it replaces it \
                             from the stored copy"
                        ),
                    });
                    dropped.push((id, v));
                }
            }
        }
        if !dropped.is_empty() {
            self.store.index.write(|w| {
                for (id, v) in &dropped {
                    w.remove_checkout(id, v)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}
