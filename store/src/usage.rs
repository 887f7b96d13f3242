//! Usage tracking: when each key was last read, for least-recently-used eviction and
//! `max-age-unused` policies.
//!
//! A read (`get`, `cat`, `export`, `oci extract`, a key served) calls [`ReadSession::used`],
//! which writes the time only if the recorded one is older than [`USAGE_RESOLUTION`]: a key read
//! a thousand times an hour costs one small write transaction, and the rest one read of one
//! row. A key never read counts as used when it was bound (its record's `created`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::Result;
use crate::key::Key;
use crate::session::ReadSession;
use crate::store::Store;

/// How stale a key's recorded last use may get before a read writes it again.
pub const USAGE_RESOLUTION: Duration = Duration::from_secs(3600);

impl ReadSession {
    /// Records that `key` is being read now (at most once per [`USAGE_RESOLUTION`]; see the
    /// module docs). Returns whether it wrote.
    pub fn used(&self, key: &Key) -> Result<bool> {
        let now = crate::records::now();
        let fresh = |t: Option<u64>| t.is_some_and(|t| t + USAGE_RESOLUTION.as_secs() > now);
        if fresh(self.store.index.read(|r| r.last_used(key.as_str()))?) {
            return Ok(false);
        }
        self.store.index.write(|w| {
            // Another reader may have written it meanwhile; a key unbound meanwhile gets no row.
            if fresh(w.last_used(key.as_str())?) || w.record(key.as_str())?.is_none() {
                return Ok(false);
            }
            w.set_used(key.as_str(), now)?;
            Ok(true)
        })
    }
}

impl Store {
    /// When each key starting with `prefix` was last read, for the keys whose reads were
    /// recorded (see [`ReadSession::used`]). Takes no lock, as [`Store::keys`] does not.
    pub fn last_used(&self, prefix: &str) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .index
            .read(|r| r.usage_under(prefix))?
            .into_iter()
            .collect())
    }
}
