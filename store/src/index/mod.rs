//! The redb index: which blobs and trees are durably present, what keys are bound to, and the
//! trees and aliases callers derive from blobs. The only module that opens tables.
//!
//! redb lets one process at a time open a database file for writing. Every command opens the
//! index only for the short transactions it needs (hashing, compression and file I/O happen
//! outside), and an open that finds the file busy retries with backoff until the store's lock
//! timeout. See `docs/architecture.md`, "Locking".
//!
//! A transaction is used through a typed [`Reader`] or [`Writer`], whose methods speak in ids,
//! trees and records rather than rows; redb's errors convert into [`Error::Index`] with `?`, and
//! the index file's path is filled in once, where the transaction ends.

mod reader;
mod tables;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, TableHandle};

use crate::error::Error;
use crate::lock::wait_until;

pub(crate) use reader::{DerivedRow, Reader, decode_tree, placement_of};
pub(crate) use tables::CheckoutRow;
pub(crate) use writer::Writer;

/// Version of the on-disk layout recorded in `meta` under `layout`. Version 2 added pack files
/// (the `packed` table); version 3 replaced tables tied to one kind of content with the generic
/// `derived` and `aliases` tables; version 4 added `usage` (when each key was last read),
/// `pins` (temporary roots) and `checkouts` (checkout objects) (see `docs/format.md`).
pub const LAYOUT_VERSION: &str = "4";

/// Layout versions this binary upgrades to [`LAYOUT_VERSION`] on its first write: the tables
/// they lack are created, tables the current layout does not define are dropped (they held
/// caches that are rebuilt on demand), and the new version is recorded.
const UPGRADABLE_LAYOUTS: &[&str] = &["1", "2", "3"];

/// redb's page cache for one short-lived command.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The index file of a store.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    path: PathBuf,
    timeout: Duration,
}

impl Index {
    pub(crate) fn new(path: PathBuf, timeout: Duration) -> Index {
        Index { path, timeout }
    }

    /// Names this index file in an error from inside a transaction (see [`Error::Index`]).
    fn locate(&self, e: Error) -> Error {
        match e {
            Error::Index { path, source } if path.as_os_str().is_empty() => Error::Index {
                path: self.path.clone(),
                source,
            },
            Error::Layout { path, found } if path.as_os_str().is_empty() => Error::Layout {
                path: self.path.clone(),
                found,
            },
            other => other,
        }
    }

    fn open(&self) -> Result<Database, Error> {
        let mut db = None;
        wait_until(
            self.timeout,
            "the index",
            &self.path,
            || match Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&self.path)
            {
                Ok(d) => {
                    db = Some(d);
                    Ok(true)
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => Ok(false),
                Err(e) => Err(self.locate(e.into())),
            },
        )?;
        Ok(db.expect("set on success"))
    }

    /// Runs `f` in a read transaction.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Reader) -> Result<T, Error>) -> Result<T, Error> {
        let run = || {
            let db = self.open()?;
            let txn = db.begin_read()?;
            f(&Reader::new(&txn)?)
        };
        run().map_err(|e| self.locate(e))
    }

    /// Runs `f` in a write transaction and commits it durably if `f` succeeds.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let run = || {
            let db = self.open()?;
            let txn = db.begin_write()?;
            let out = {
                let mut w = Writer::new(&txn)?;
                f(&mut w)?
            };
            txn.commit()?;
            Ok(out)
        };
        run().map_err(|e| self.locate(e))
    }

    /// Runs `f` in a write transaction that is always rolled back: for checking what a commit
    /// would find, without committing anything.
    pub(crate) fn dry_run<T>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let run = || {
            let db = self.open()?;
            let txn = db.begin_write()?;
            let out = {
                let mut w = Writer::new(&txn)?;
                f(&mut w)
            };
            txn.abort()?;
            out
        };
        run().map_err(|e| self.locate(e))
    }

    /// Creates the index if there is none, atomically: redb writes a new file's header before
    /// its magic number, so a process killed while creating `index.redb` in place would leave a
    /// file no later open accepts. The new index is built under a private name and linked into
    /// place only when complete (`link` refuses to replace a file another process published
    /// first). Then the tables and the layout version are checked.
    pub(crate) fn init(&self) -> Result<(), Error> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let private = || dir.join(format!(".index.redb.new-{}", std::process::id()));
        if !self.path.exists() {
            let tmp = private();
            let _ = std::fs::remove_file(&tmp);
            Index::new(tmp.clone(), self.timeout).write(|_| Ok(()))?;
            match std::fs::hard_link(&tmp, &self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&self.path)(e)),
            }
            let _ = std::fs::remove_file(&tmp);
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io(dir))?;
        }
        match self.write(|_| Ok(())) {
            // init runs only while the store's creation is unfinished (no lock files yet), so
            // nothing was ever committed to an index redb cannot read as a database: one left
            // by a version that created it in place and was killed. Replace it.
            Err(Error::Index { source, .. }) if source.to_string().contains("magic number") => {
                let tmp = private();
                let _ = std::fs::remove_file(&tmp);
                Index::new(tmp.clone(), self.timeout).write(|_| Ok(()))?;
                std::fs::rename(&tmp, &self.path).map_err(Error::io(&self.path))?;
                tracing::warn!(
                    "{}: replaced an index whose creation never finished",
                    self.path.display()
                );
                self.write(|_| Ok(()))
            }
            other => other,
        }
    }
}

/// Checks the layout version at the start of a write transaction: creates the tables and
/// records [`LAYOUT_VERSION`] in a new index, upgrades an older layout, and refuses an unknown
/// one (a newer cairn's store).
fn check_layout(txn: &redb::WriteTransaction) -> Result<(), Error> {
    let existing = {
        let meta = txn.open_table(tables::META)?;
        meta.get("layout")?.map(|v| v.value().to_string())
    };
    match existing.as_deref() {
        Some(LAYOUT_VERSION) => return Ok(()),
        None => {}
        Some(v) if UPGRADABLE_LAYOUTS.contains(&v) => {
            let stale: Vec<redb::UntypedTableHandle> = txn
                .list_tables()?
                .filter(|t| !tables::ALL.contains(&t.name()))
                .collect();
            for table in stale {
                txn.delete_table(table)?;
            }
        }
        Some(v) => {
            return Err(Error::Layout {
                path: PathBuf::new(),
                found: v.to_string(),
            });
        }
    }
    txn.open_table(tables::KEYS)?;
    txn.open_table(tables::KEY_LOG)?;
    txn.open_table(tables::BLOBS)?;
    txn.open_table(tables::TREES)?;
    txn.open_table(tables::PACKED)?;
    txn.open_table(tables::DERIVED)?;
    txn.open_table(tables::ALIASES)?;
    txn.open_table(tables::USAGE)?;
    txn.open_table(tables::PINS)?;
    txn.open_table(tables::CHECKOUTS)?;
    txn.open_table(tables::META)?
        .insert("layout", LAYOUT_VERSION)?;
    Ok(())
}
