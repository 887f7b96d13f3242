//! # cairn-remote
//!
//! Sync between a local [`cairn_store::Store`] and a remote object store (S3, GCS, Azure,
//! `file://`, read-only `http(s)://`) through the `object_store` crate.
//!
//! A remote holds packs of small objects with their indexes, large blobs on their own, and one
//! record per key naming where its closure lives (layout in `docs/format.md`). Push uploads what
//! the remote lacks and writes key records last; pull reads records, fetches only what the local
//! store lacks, checks every object against its id, and binds a key only when its closure is
//! complete. Neither ever lists the bucket.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod audit;
pub mod config;
mod connection;
mod credentials;
mod error;
mod fetch;
mod get;
mod ledger;
pub mod pack;
mod pull;
mod push;
mod record;

pub use audit::{AuditReport, KeyAudit, SignatureAudit, audit};
pub use config::{Config, RemoteConfig, TrustPolicy};
pub use connection::{LAYOUT_FILE, LAYOUT_VERSION, Remote, RequestCounts, TransferOptions};
pub use error::{RemoteError, Result};
pub use fetch::{COALESCE_GAP, MAX_RANGE};
pub use get::{Fallback, OpenRemotes, Resolved, get, resolve_or_pull};
pub use ledger::{Ledger, Location};
pub use pull::{PullSummary, fetch_record, pull};
pub use push::{PushSummary, push};
pub use record::{RECORD_FORMAT, RemoteRecord};
