//! What a store takes on disk, by kind (`cairn du`): blob files, pack files, checkout objects
//! (counted apart, with the links restored folders hold to them), the index and temp files.

use std::path::Path;

use serde::Serialize;

use crate::checkout::{self, Listed};
use crate::error::{Error, Result};
use crate::store::Store;

/// Files and bytes of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Files.
    pub files: u64,
    /// Their apparent sizes, added up.
    pub bytes: u64,
}

/// A store's disk use by kind (apparent sizes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreUsage {
    /// Large blobs, a file each (`blobs/`).
    pub blobs: Usage,
    /// Pack files of small blobs (`packs/`).
    pub packs: Usage,
    /// Checkout objects (`checkouts/`): a cache `gc --checkouts` drops.
    pub checkouts: Usage,
    /// Links to checkout objects from outside the store (hardlinked files in restored
    /// folders): an object's bytes are freed only when these are gone too.
    pub checkout_links: u64,
    /// The index (`index.redb`).
    pub index: Usage,
    /// Temp and leftover files (`tmp/`, `.tmp-*`), which gc deletes.
    pub temp: Usage,
}

impl StoreUsage {
    /// Bytes of everything counted.
    pub fn total(&self) -> u64 {
        self.blobs.bytes
            + self.packs.bytes
            + self.checkouts.bytes
            + self.index.bytes
            + self.temp.bytes
    }
}

impl Usage {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

impl Store {
    /// What this store takes on disk, by kind. Reads only the folders (no lock: the figures
    /// are a snapshot, as `du`'s are).
    pub fn usage(&self) -> Result<StoreUsage> {
        let mut u = StoreUsage::default();
        let (blobs, temps) = self
            .blobs
            .list_with_temps()
            .map_err(Error::io(self.blobs.root()))?;
        for (_, _, len) in blobs {
            u.blobs.add(len);
        }
        for t in temps {
            u.temp.add(len_of(&t));
        }
        let (packs, pack_temps) =
            crate::packs::list(self.blobs.packs()).map_err(Error::io(self.blobs.packs()))?;
        for (_, len) in packs {
            u.packs.add(len);
        }
        for t in pack_temps {
            u.temp.add(len_of(&t));
        }
        let root = self.dir().join(checkout::CHECKOUTS_DIR);
        for item in checkout::list(&root).map_err(Error::io(&root))? {
            match item {
                Listed::Object { size, nlink, .. } => {
                    u.checkouts.add(size);
                    u.checkout_links += nlink.saturating_sub(1);
                }
                Listed::Other { size, .. } => u.temp.add(size),
            }
        }
        u.index.add(len_of(&self.dir().join("index.redb")));
        let tmp = self.blobs.tmp();
        for ent in std::fs::read_dir(tmp).map_err(Error::io(tmp))?.flatten() {
            u.temp.add(len_of(&ent.path()));
        }
        Ok(u)
    }
}

fn len_of(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map_or(0, |m| m.len())
}
