//! The local record of what a remote holds: object id → where on the remote (a pack, or a
//! standalone blob). Filled by push (after each upload) and by pull (from the indexes it reads),
//! so push never has to list the bucket. Kept in `STORE/remotes/<hash of URL>.redb`, opened per
//! transaction like the store's index. It is a cache: push re-checks the packs it relies on with
//! one HEAD each, and forgets packs that are gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_store::Id;
use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};

use crate::error::{RemoteError, Result};

/// Object id → location: tag byte (1 pack, 2 standalone blob) then the pack or blob id.
const OBJECTS: TableDefinition<&[u8; 32], &[u8; 33]> = TableDefinition::new("objects");

/// Where an object lives on a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Inside the pack with this id.
    Pack(Id),
    /// Stored on its own under `blobs/`.
    Standalone,
}

impl Location {
    fn encode(self, id: &Id) -> [u8; 33] {
        let mut out = [0u8; 33];
        match self {
            Location::Pack(p) => {
                out[0] = 1;
                out[1..].copy_from_slice(&p.0);
            }
            Location::Standalone => {
                out[0] = 2;
                out[1..].copy_from_slice(&id.0);
            }
        }
        out
    }
    fn decode(b: &[u8; 33]) -> Option<Location> {
        match b[0] {
            1 => Some(Location::Pack(Id(b[1..].try_into().ok()?))),
            2 => Some(Location::Standalone),
            _ => None,
        }
    }
}

/// The ledger of one remote in one store.
#[derive(Clone, Debug)]
pub struct Ledger {
    path: PathBuf,
    timeout: Duration,
}

impl Ledger {
    /// The ledger of `remote_url` in the store folder `store_dir`.
    pub fn new(store_dir: &Path, remote_url: &str, timeout: Duration) -> Ledger {
        let h = Id::of(remote_url.trim_end_matches('/').as_bytes()).to_hex();
        Ledger {
            path: store_dir.join("remotes").join(format!("{}.redb", &h[..32])),
            timeout,
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
        let start = Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            match Database::builder()
                .set_cache_size(16 * 1024 * 1024)
                .create(&self.path)
            {
                Ok(db) => return Ok(db),
                Err(DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < self.timeout => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(self.err(format!(
                        "timed out after {:.1}s waiting for another cairn process",
                        start.elapsed().as_secs_f64()
                    )));
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// Where the remote holds each of `ids`, for those the ledger knows.
    pub fn lookup(&self, ids: &[Id]) -> Result<HashMap<Id, Location>> {
        let db = self.open()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let t = match txn.open_table(OBJECTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = HashMap::new();
        for id in ids {
            if let Some(v) = t.get(&id.0).map_err(|e| self.err(e))?
                && let Some(loc) = Location::decode(v.value())
            {
                out.insert(*id, loc);
            }
        }
        Ok(out)
    }

    /// Records that the remote holds these objects at these locations.
    pub fn record(&self, items: impl IntoIterator<Item = (Id, Location)>) -> Result<()> {
        let db = self.open()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(OBJECTS).map_err(|e| self.err(e))?;
            for (id, loc) in items {
                t.insert(&id.0, &loc.encode(&id)).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Forgets every object recorded at one of `gone`.
    pub fn forget(&self, gone: &[(Id, Location)]) -> Result<()> {
        let db = self.open()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(OBJECTS).map_err(|e| self.err(e))?;
            for (id, _) in gone {
                t.remove(&id.0).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}
