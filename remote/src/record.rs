//! Key records on a remote: `keys/<key>.key`, JSON.

use std::collections::BTreeMap;

use cairn_store::{Id, KeyRecord};
use serde::{Deserialize, Serialize};

use crate::spans::Spans;

/// Version of the remote key record format.
pub const RECORD_FORMAT: u32 = 1;

/// A key's record as a remote keeps it: the local record plus where its closure lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecord {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The key's record.
    pub record: KeyRecord,
    /// Packs holding the closure's trees and small blobs.
    pub packs: Vec<Id>,
    /// Large blobs of the closure stored on their own under `blobs/`.
    pub blobs: Vec<Id>,
    /// Per pack of `packs`, the bytes of it the closure uses (see `spans`). Records written
    /// before cairn wrote spans have none: remote gc then never repacks the packs they name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spans: BTreeMap<Id, Spans>,
}

impl RemoteRecord {
    /// True if the record says which bytes of each pack it names it uses.
    pub fn spans_cover_packs(&self) -> bool {
        self.packs.iter().all(|p| self.spans.contains_key(p))
    }
}
