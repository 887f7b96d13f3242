//! # cairn-store
//!
//! The local content-addressed store behind `cairn`: file contents as BLAKE3-addressed blobs
//! (zstd-compressed where that pays), directories as canonical Merkle [`Tree`]s, and keys (an
//! action cache) bound to roots, all indexed in redb. The store verifies every object it reads,
//! makes objects durable before the index records them, and binds a key only once everything it
//! reaches is present.
//!
//! ```no_run
//! use cairn_store::{Input, Key, NoProgress, Store, StoreOptions, IngestOptions};
//! # fn main() -> Result<(), cairn_store::Error> {
//! let store = Store::open("/tmp/store".as_ref(), StoreOptions::default())?;
//! let key = Key::new("app/linux-amd64@3f2a")?;
//! store.put(&key, Input::Path("target/release".as_ref()), &IngestOptions::default(),
//!           Default::default(), &NoProgress)?;
//! // A read session holds the gc lock: what it resolves stays until it is dropped.
//! let session = store.read()?;
//! let root = session.resolve("app/linux-amd64@3f2a")?;
//! session.materialize(&root, "/tmp/restored".as_ref(), false, &NoProgress)?;
//! # Ok(()) }
//! ```
//!
//! The byte formats are documented in `docs/format.md`; the locking scheme and the module map
//! in `docs/architecture.md`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod archive;
pub mod blobs;
mod cat;
mod checkout;
mod disk_usage;
mod error;
mod export;
mod gc;
mod id;
mod index;
pub mod ingest;
mod key;
mod link;
pub mod lock;
mod materialize;
pub mod packs;
mod pins;
pub mod policy;
mod progress;
mod put;
mod records;
mod session;
pub mod sign;
mod statcache;
mod store;
pub mod stream;
mod transfer;
pub mod tree;
mod usage;
mod verify;
pub mod walk;

pub use archive::{TarOptions, TarTree};
pub use disk_usage::{StoreUsage, Usage};
pub use error::{Error, Result};
pub use export::ArchiveFormat;
pub use gc::{GcOptions, GcReport, StoreSize};
pub use id::{ID_PREFIX, Id, IdParseError};
pub use index::LAYOUT_VERSION;
pub use ingest::{IngestOptions, Totals};
pub use key::{
    Attachment, AttachmentName, AttachmentNameError, Key, KeyError, KeyRecord, LogAction, LogEntry,
    MAX_ATTACHMENT_NAME_LEN, MAX_KEY_LEN, Root,
};
pub use link::LinkMode;
pub use materialize::{MaterializeOptions, MaterializeStats, check_dest_dir};
pub use pins::{Pin, PinTarget, TEMP_PIN_PREFIX, TEMP_PIN_TTL, TempPin};
pub use progress::{NoProgress, Progress};
pub use session::{ImportSession, ReadSession, StagedBlob};
pub use sign::{PublicKey, SecretKey, SignError, Signature};
pub use store::{
    Added, DEFAULT_COMPRESSION_LEVEL, DEFAULT_LOCK_TIMEOUT, Input, Store, StoreOptions,
};
pub use transfer::{Derive, Import};
pub use tree::{Entry, EntryKind, Meta, Tree};
pub use usage::USAGE_RESOLUTION;
pub use verify::{Fault, Problem, VerifyReport};
pub use walk::Closure;
