//! Pins: temporary roots. A pin keeps a root's closure (or a key and what it is bound to) through
//! `gc`, and a pinned key through eviction (size caps, retention policies), until the pin
//! expires or is removed, as Nix's temporary roots do for running builds.
//!
//! Pins are rows of the index (`pins`), so every process sees them and a pin can be written in
//! the same transaction as the objects it keeps (see [`crate::Import::pin`]). A pin always has
//! an expiry: a process killed before it removes its pin leaves it only until then, and `gc`
//! deletes expired pins. Reading needs no pin: a read session holds the gc lock, and gc and
//! eviction both run under it exclusively, so nothing a running reader resolved goes away
//! under it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::{Key, Root};
use crate::session::ReadSession;
use crate::store::Store;

/// How long a [`TempPin`] lasts if its process dies without removing it.
pub const TEMP_PIN_TTL: Duration = Duration::from_secs(3600);

/// Prefix of the names [`Store::temp_pin`] gives its pins.
pub const TEMP_PIN_PREFIX: &str = "cairn-tmp/";

/// What a pin keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinTarget {
    /// A key: its binding is never evicted, and whatever it is bound to is kept.
    Key(Key),
    /// A root and its closure (which must be present when the pin is written).
    Root(Root),
}

/// A pin: a named temporary root with an expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Its name: the rules of a key (the caller's namespace, say `serve/app/sha256:…`).
    pub name: Key,
    /// What it keeps.
    pub target: PinTarget,
    /// When it stops counting, seconds since the Unix epoch.
    pub expires: u64,
}

impl Pin {
    /// A pin called `name` on `target` that lasts `ttl` from now.
    pub fn new(name: Key, target: PinTarget, ttl: Duration) -> Pin {
        Pin {
            name,
            target,
            expires: crate::records::now().saturating_add(ttl.as_secs()),
        }
    }

    /// Whether it still counts at `now`.
    pub fn live_at(&self, now: u64) -> bool {
        self.expires > now
    }
}

/// A pin removed when dropped (best effort: a failure to remove it leaves it until it
/// expires): what a running command holds on the key it writes.
#[derive(Debug)]
pub struct TempPin {
    store: Store,
    name: Key,
}

impl TempPin {
    /// The pin's name.
    pub fn name(&self) -> &Key {
        &self.name
    }
}

impl Drop for TempPin {
    fn drop(&mut self) {
        if let Err(e) = self.store.unpin(&self.name) {
            tracing::debug!("pin {}: not removed ({e}); it expires by itself", self.name);
        }
    }
}

impl Store {
    /// Writes `pin` (replacing a pin of the same name). A root target's closure must be
    /// present.
    pub fn pin(&self, pin: &Pin) -> Result<()> {
        self.index.write(|w| {
            if let PinTarget::Root(root) = &pin.target {
                crate::transfer::check_closure(w, root)?;
            }
            w.put_pin(pin)
        })
    }

    /// Removes the pin called `name`; returns whether there was one.
    pub fn unpin(&self, name: &Key) -> Result<bool> {
        Ok(self.index.write(|w| w.remove_pin(name.as_str()))?.is_some())
    }

    /// Pins `key` under a name of this process's own for [`TEMP_PIN_TTL`], until the returned
    /// guard drops.
    pub fn temp_pin(&self, key: &Key) -> Result<TempPin> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = Key::new(&format!(
            "{TEMP_PIN_PREFIX}{}-{nanos}/{key}",
            std::process::id()
        ))
        .or_else(|_| Key::new(&format!("{TEMP_PIN_PREFIX}{}-{nanos}", std::process::id())))
        .map_err(Error::from)?;
        self.pin(&Pin::new(
            name.clone(),
            PinTarget::Key(key.clone()),
            TEMP_PIN_TTL,
        ))?;
        Ok(TempPin {
            store: self.clone(),
            name,
        })
    }
}

impl ReadSession {
    /// The pins whose names start with `prefix` and that have not expired, in name order.
    pub fn pins(&self, prefix: &str) -> Result<Vec<Pin>> {
        let now = crate::records::now();
        Ok(self
            .store
            .index
            .read(|r| r.pins_under(prefix))?
            .into_iter()
            .filter(|p| p.live_at(now))
            .collect())
    }
}
