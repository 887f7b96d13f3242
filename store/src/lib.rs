//! # cairn-store
//!
//! The local content-addressed store behind `cairn`: file contents as BLAKE3-addressed blobs
//! (zstd-compressed where that pays), directories as canonical Merkle [`Tree`]s, and keys (an
//! action cache) bound to roots, all indexed in redb. The store verifies every object it reads,
//! makes objects durable before the index records them, and binds a key only once everything it
//! reaches is present.
//!
//! ```no_run
//! use cairn_store::{Key, NoProgress, Store, StoreOptions, IngestOptions};
//! # fn main() -> Result<(), cairn_store::Error> {
//! let store = Store::open("/tmp/store".as_ref(), StoreOptions::default())?;
//! let key = Key::new("app/linux-amd64@3f2a")?;
//! let (_, record) = store.put(&key, "target/release".as_ref(), &IngestOptions::default(),
//!                             Default::default(), &NoProgress)?;
//! store.materialize(&record.root, "/tmp/restored".as_ref(), false, &NoProgress)?;
//! # Ok(()) }
//! ```
//!
//! The byte formats are documented in `docs/format.md`; the locking scheme in
//! `docs/architecture.md`.

#![warn(missing_docs)]

mod archive;
pub mod blobs;
mod error;
mod export;
mod gc;
mod id;
mod index;
pub mod ingest;
mod key;
mod layers;
mod lock;
mod materialize;
mod oci_index;
pub mod packs;
mod progress;
pub mod sign;
mod statcache;
mod store;
pub mod stream;
mod transfer;
pub mod tree;
mod verify;

pub use error::{Error, Result};
pub use export::ArchiveFormat;
pub use gc::GcReport;
pub use id::{ID_PREFIX, Id, IdParseError};
pub use index::LAYOUT_VERSION;
pub use ingest::{IngestOptions, Totals};
pub use key::{
    Attachment, Key, KeyError, KeyRecord, LogAction, LogEntry, MAX_KEY_LEN, Root,
    check_attachment_name,
};
pub use layers::LayerTree;
pub use lock::GcLock;
pub use materialize::{MaterializeStats, check_dest_dir};
pub use progress::{NoProgress, Progress};
pub use sign::{PublicKey, SecretKey, SignError, Signature};
pub use store::{
    Added, Closure, DEFAULT_COMPRESSION_LEVEL, DEFAULT_LOCK_TIMEOUT, Store, StoreOptions,
};
pub use transfer::{ClosureObjects, Import, ImportBlob};
pub use tree::{Entry, EntryKind, Meta, Tree};
pub use verify::{Fault, Problem, VerifyReport};
