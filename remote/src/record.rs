//! Key records on a remote: `keys/<key>.key`, JSON.

use cairn_store::{Id, KeyRecord};
use serde::{Deserialize, Serialize};

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
}
