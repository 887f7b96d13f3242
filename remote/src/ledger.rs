//! The local record of what a remote holds: object id → where on the remote (a pack, or a
//! standalone blob). Filled by push (after each upload) and by pull (from the indexes it reads),
//! so push never has to list the bucket. Kept in `STORE/remotes/<hash of URL>.redb`, opened per
//! transaction like the store's index. It is a cache: push re-checks the packs it relies on with
//! one HEAD each, and forgets packs that are gone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use cairn_store::lock::wait_until;
use cairn_store::{Id, Store};
use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};

use crate::error::{RemoteError, Result};
use crate::spans::Span;

/// What the ledger knows of some objects: where each is, and for packed ones whose place in
/// their pack it learned, that place.
#[derive(Debug, Default)]
pub struct Known {
    /// Object id → location.
    pub locations: HashMap<Id, Location>,
    /// Object id → its span in the pack of its location.
    pub spans: HashMap<Id, Span>,
}

/// Object id → where it is: tag byte (1 pack, 2 standalone blob, 3 pack, place unknown), the
/// pack or blob id, then (tag 1) the object's offset and stored length in the pack, u64 LE. A
/// push needs the place to write the record's spans.
const PLACES: TableDefinition<&[u8; 32], &[u8; 49]> = TableDefinition::new("places");
/// The table of ledgers from before spans: object id → tag byte (1 pack, 2 standalone blob) and
/// the pack or blob id. Read where `PLACES` has no row (a location without a place); never
/// written; rows are removed when their objects are forgotten.
const OLD_OBJECTS: TableDefinition<&[u8; 32], &[u8; 33]> = TableDefinition::new("objects");

/// Where an object lives on a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Inside the pack with this id.
    Pack(Id),
    /// Stored on its own under `blobs/`.
    Standalone,
}

fn encode_place(id: &Id, loc: Location, span: Option<Span>) -> [u8; 49] {
    let mut out = [0u8; 49];
    match (loc, span) {
        (Location::Pack(p), Some(span)) => {
            out[0] = 1;
            out[1..33].copy_from_slice(&p.0);
            out[33..41].copy_from_slice(&span.offset.to_le_bytes());
            out[41..].copy_from_slice(&span.len.to_le_bytes());
        }
        (Location::Pack(p), None) => {
            out[0] = 3;
            out[1..33].copy_from_slice(&p.0);
        }
        (Location::Standalone, _) => {
            out[0] = 2;
            out[1..33].copy_from_slice(&id.0);
        }
    }
    out
}

fn decode_place(b: &[u8; 49]) -> Option<(Location, Option<Span>)> {
    let id = Id(b[1..33].try_into().ok()?);
    let num = |at: usize| Some(u64::from_le_bytes(b[at..at + 8].try_into().ok()?));
    match b[0] {
        1 => Some((
            Location::Pack(id),
            Some(Span {
                offset: num(33)?,
                len: num(41)?,
            }),
        )),
        2 => Some((Location::Standalone, None)),
        3 => Some((Location::Pack(id), None)),
        _ => None,
    }
}

fn decode_old(b: &[u8; 33]) -> Option<Location> {
    match b[0] {
        1 => Some(Location::Pack(Id(b[1..].try_into().ok()?))),
        2 => Some(Location::Standalone),
        _ => None,
    }
}

/// The ledger of one remote in one store. Its methods are async: each runs its (blocking,
/// committing) redb transaction on the blocking pool, never on the async workers.
#[derive(Clone, Debug)]
pub struct Ledger {
    path: PathBuf,
    timeout: Duration,
}

impl Ledger {
    /// The ledger of `remote_url` in `store`; waits for another process's hold on it up to the
    /// store's lock timeout.
    pub fn new(store: &Store, remote_url: &str) -> Ledger {
        let h = Id::of(remote_url.trim_end_matches('/').as_bytes()).to_hex();
        Ledger {
            path: store
                .dir()
                .join("remotes")
                .join(format!("{}.redb", &h[..32])),
            timeout: store.lock_timeout(),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Ledger {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }

    fn open(&self) -> Result<Database> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        }
        let mut opened = None;
        wait_until(
            self.timeout,
            "the remote ledger",
            &self.path,
            || match Database::builder()
                .set_cache_size(16 * 1024 * 1024)
                .create(&self.path)
            {
                Err(DatabaseError::DatabaseAlreadyOpen) => Ok(false),
                other => {
                    opened = Some(other);
                    Ok(true)
                }
            },
        )?;
        opened.expect("set on success").map_err(|e| self.err(e))
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Ledger) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .expect("ledger task panicked")
    }

    /// Where the remote holds each of `ids`, for those the ledger knows.
    pub async fn lookup(&self, ids: Vec<Id>) -> Result<Known> {
        self.blocking(move |l| l.lookup_now(&ids)).await
    }

    fn lookup_now(&self, ids: &[Id]) -> Result<Known> {
        let db = self.open()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let places = match txn.open_table(PLACES) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.err(e)),
        };
        let old = match txn.open_table(OLD_OBJECTS) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Known::default();
        for id in ids {
            let mut found = None;
            if let Some(t) = &places
                && let Some(v) = t.get(&id.0).map_err(|e| self.err(e))?
            {
                found = decode_place(v.value());
            }
            if found.is_none()
                && let Some(t) = &old
                && let Some(v) = t.get(&id.0).map_err(|e| self.err(e))?
            {
                found = decode_old(v.value()).map(|loc| (loc, None));
            }
            if let Some((loc, span)) = found {
                out.locations.insert(*id, loc);
                if let Some(span) = span {
                    out.spans.insert(*id, span);
                }
            }
        }
        Ok(out)
    }

    /// Records that the remote holds these objects at these locations (and, for packed objects
    /// where known, at these spans of their packs).
    pub async fn record(&self, items: Vec<(Id, Location, Option<Span>)>) -> Result<()> {
        self.blocking(move |l| {
            let db = l.open()?;
            let txn = db.begin_write().map_err(|e| l.err(e))?;
            {
                let mut t = txn.open_table(PLACES).map_err(|e| l.err(e))?;
                for (id, loc, span) in items {
                    t.insert(&id.0, &encode_place(&id, loc, span))
                        .map_err(|e| l.err(e))?;
                }
            }
            txn.commit().map_err(|e| l.err(e))
        })
        .await
    }

    /// Forgets every object recorded at one of `gone`.
    pub async fn forget(&self, gone: Vec<(Id, Location)>) -> Result<()> {
        self.blocking(move |l| {
            let db = l.open()?;
            let txn = db.begin_write().map_err(|e| l.err(e))?;
            {
                let mut t = txn.open_table(PLACES).map_err(|e| l.err(e))?;
                let mut old = txn.open_table(OLD_OBJECTS).map_err(|e| l.err(e))?;
                for (id, _) in gone {
                    t.remove(&id.0).map_err(|e| l.err(e))?;
                    old.remove(&id.0).map_err(|e| l.err(e))?;
                }
            }
            txn.commit().map_err(|e| l.err(e))
        })
        .await
    }
}
