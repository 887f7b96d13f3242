//! The redb index: which blobs and trees are durably present, and what keys are bound to.
//!
//! redb lets one process at a time open a database file for writing. Every command opens the
//! index only for the short transactions it needs (hashing, compression and file I/O happen
//! outside), and an open that finds the file busy retries with backoff until the store's lock
//! timeout. See `docs/architecture.md`, "Locking".

use std::path::PathBuf;
use std::time::Duration;

use redb::{
    Builder, Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};

use crate::error::Error;
use crate::lock::wait_until;

/// Key name → JSON [`crate::KeyRecord`].
pub(crate) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// (key name, sequence number) → JSON [`crate::LogEntry`].
pub(crate) const KEY_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("key_log");
/// Blob id → (content size, stored size, encoding code).
pub(crate) const BLOBS: TableDefinition<&[u8; 32], (u64, u64, u8)> = TableDefinition::new("blobs");
/// Tree id → canonical tree encoding.
pub(crate) const TREES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("trees");
/// Blob id → (pack id, offset of its stored bytes) for blobs kept in a pack file; a blob with
/// no row here has a file of its own.
pub(crate) const PACKED: TableDefinition<&[u8; 32], (u128, u64)> = TableDefinition::new("packed");
/// Store-wide settings, such as the layout version.
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Version of the on-disk layout recorded in `meta` under `layout`. Version 2 added pack files
/// (the `packed` table); a version-1 store has no packs, so it is used as it is and records
/// version 2 with its first write (see `docs/format.md`).
pub const LAYOUT_VERSION: &str = "2";

/// Layout versions this binary upgrades to [`LAYOUT_VERSION`] by recording the new version.
const UPGRADABLE_LAYOUTS: &[&str] = &["1"];

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

    fn err(&self) -> impl Fn(redb::Error) -> Error + '_ {
        |source| Error::Index {
            path: self.path.clone(),
            source: Box::new(source),
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
                Err(e) => Err(self.err()(e.into())),
            },
        )?;
        Ok(db.expect("set on success"))
    }

    /// Runs `f` in a read transaction.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let db = self.open()?;
        let txn = db.begin_read().map_err(|e| self.err()(e.into()))?;
        f(&txn)
    }

    /// Runs `f` in a write transaction and commits it durably if `f` succeeds.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let db = self.open()?;
        let txn = db.begin_write().map_err(|e| self.err()(e.into()))?;
        let out = f(&txn)?;
        txn.commit().map_err(|e| self.err()(e.into()))?;
        Ok(out)
    }

    /// Runs `f` in a write transaction that is always rolled back: for checking what a commit
    /// would find, without committing anything.
    pub(crate) fn dry_run<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let db = self.open()?;
        let txn = db.begin_write().map_err(|e| self.err()(e.into()))?;
        let out = f(&txn);
        txn.abort().map_err(|e| self.err()(e.into()))?;
        out
    }

    /// Creates the index if there is none, atomically: redb writes a new file's header before
    /// its magic number, so a process killed while creating `index.redb` in place would leave a
    /// file no later open accepts. The new index is built under a private name and linked into
    /// place only when complete (`link` refuses to replace a file another process published
    /// first). Then the tables and the layout version are checked.
    pub(crate) fn init(&self) -> Result<(), Error> {
        if !self.path.exists() {
            let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
            let tmp = dir.join(format!(".index.redb.new-{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            Index::new(tmp.clone(), self.timeout).create_tables()?;
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
        match self.create_tables() {
            // init runs only while the store's creation is unfinished (no lock files yet), so
            // nothing was ever committed to an index redb cannot read as a database: one left
            // by a version that created it in place and was killed. Replace it.
            Err(Error::Index { source, .. }) if source.to_string().contains("magic number") => {
                let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
                let tmp = dir.join(format!(".index.redb.new-{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                Index::new(tmp.clone(), self.timeout).create_tables()?;
                std::fs::rename(&tmp, &self.path).map_err(Error::io(&self.path))?;
                tracing::warn!(
                    "{}: replaced an index whose creation never finished",
                    self.path.display()
                );
                self.create_tables()
            }
            other => other,
        }
    }

    fn create_tables(&self) -> Result<(), Error> {
        self.write(|txn| {
            let e = self.err();
            txn.open_table(KEYS).map_err(|x| e(x.into()))?;
            txn.open_table(KEY_LOG).map_err(|x| e(x.into()))?;
            txn.open_table(BLOBS).map_err(|x| e(x.into()))?;
            txn.open_table(TREES).map_err(|x| e(x.into()))?;
            txn.open_table(PACKED).map_err(|x| e(x.into()))?;
            let mut meta = txn.open_table(META).map_err(|x| e(x.into()))?;
            let existing = meta
                .get("layout")
                .map_err(|x| e(x.into()))?
                .map(|v| v.value().to_string());
            match existing {
                None => {
                    meta.insert("layout", LAYOUT_VERSION)
                        .map_err(|x| e(x.into()))?;
                }
                Some(v) if v == LAYOUT_VERSION => {}
                Some(v) if UPGRADABLE_LAYOUTS.contains(&v.as_str()) => {
                    meta.insert("layout", LAYOUT_VERSION)
                        .map_err(|x| e(x.into()))?;
                }
                Some(v) => {
                    return Err(Error::Layout {
                        path: self.path.clone(),
                        found: v,
                    });
                }
            }
            Ok(())
        })
    }

    /// Wraps any redb error for this index.
    pub(crate) fn db<E: Into<redb::Error>>(&self) -> impl Fn(E) -> Error + '_ {
        |e| Error::Index {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }
}

/// Records a durable blob in the `blobs` table (and `packed`, for a packed blob) unless the
/// index has it already: a present blob's row, and the copy it points to, are never replaced.
/// Returns whether the row is new.
pub(crate) fn record_blob(
    blobs: &mut redb::Table<'_, &'static [u8; 32], (u64, u64, u8)>,
    packed: &mut redb::Table<'_, &'static [u8; 32], (u128, u64)>,
    s: &crate::blobs::StoredBlob,
) -> Result<bool, redb::Error> {
    if blobs.get(&s.id.0)?.is_some() {
        return Ok(false);
    }
    blobs.insert(&s.id.0, (s.size, s.stored_size, s.encoding.code()))?;
    if let Some(slot) = s.pack {
        packed.insert(&s.id.0, (slot.pack.0, slot.offset))?;
    }
    Ok(true)
}

/// Where the index says blob `id` is kept, if it has the blob: its content size and placement.
pub(crate) fn placement(
    blobs: &impl ReadableTable<&'static [u8; 32], (u64, u64, u8)>,
    packed: Option<&impl ReadableTable<&'static [u8; 32], (u128, u64)>>,
    id: &crate::Id,
) -> Result<Option<(u64, crate::blobs::Placement)>, redb::Error> {
    match blobs.get(&id.0)? {
        Some(row) => placement_of_row(row.value(), packed, id),
        None => Ok(None),
    }
}

/// [`placement`] for a `blobs` row already read (`None` for an unknown encoding code).
pub(crate) fn placement_of_row(
    (size, stored_size, code): (u64, u64, u8),
    packed: Option<&impl ReadableTable<&'static [u8; 32], (u128, u64)>>,
    id: &crate::Id,
) -> Result<Option<(u64, crate::blobs::Placement)>, redb::Error> {
    let Some(encoding) = crate::blobs::Encoding::from_code(code) else {
        return Ok(None);
    };
    let pack = match packed {
        Some(t) => t.get(&id.0)?.map(|v| {
            let (pack, offset) = v.value();
            crate::packs::PackSlot {
                pack: crate::packs::PackId(pack),
                offset,
            }
        }),
        None => None,
    };
    Ok(Some((
        size,
        crate::blobs::Placement {
            encoding,
            stored_size,
            pack,
        },
    )))
}

/// The `packed` table for writing, created if the store predates it; the first write of a
/// version-1 store records the current layout, so older binaries stop reading it.
pub(crate) fn packed_for_write(
    txn: &WriteTransaction,
) -> Result<redb::Table<'_, &'static [u8; 32], (u128, u64)>, redb::Error> {
    let mut meta = txn.open_table(META)?;
    let old = meta.get("layout")?.map(|v| v.value().to_string());
    if old
        .as_deref()
        .is_some_and(|v| UPGRADABLE_LAYOUTS.contains(&v))
    {
        meta.insert("layout", LAYOUT_VERSION)?;
    }
    drop(meta);
    Ok(txn.open_table(PACKED)?)
}

/// The `packed` table, read-only.
pub(crate) type PackedTable = redb::ReadOnlyTable<&'static [u8; 32], (u128, u64)>;

/// The `packed` table for reading, or `None` in a store that predates packs.
pub(crate) fn packed_for_read(txn: &ReadTransaction) -> Result<Option<PackedTable>, redb::Error> {
    match txn.open_table(PACKED) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
