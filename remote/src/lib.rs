//! # cairn-remote
//!
//! Sync between a local [`cairn_store::Store`] and a remote object store (S3, GCS, Azure,
//! `file://`, read-only `http(s)://`) through the `object_store` crate.
//!
//! A remote holds packs of small objects with their indexes, large blobs on their own, and one
//! record per key naming where its closure lives (layout in `docs/format.md`). Push uploads what
//! the remote lacks and writes key records last; pull reads records, fetches only what the local
//! store lacks, checks every object against its id, and binds a key only when its closure is
//! complete. Neither ever lists the bucket (a push lists only `gc/tombstones/`, empty but while
//! a remote gc's grace period runs). `cairn remote gc` (`collect`) does list it, to delete what
//! no record reaches, in two phases safe beside pushes.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod audit;
mod collect;
pub mod config;
mod connection;
mod credentials;
mod error;
mod fetch;
mod get;
mod lease;
mod ledger;
pub mod pack;
mod pull;
mod push;
mod record;
mod remove;
mod repack;
pub mod spans;
mod tombstone;
mod usage;

pub use audit::{AuditReport, KeyAudit, SignatureAudit, audit};
pub use collect::{DEFAULT_GRACE, GcSettings, RemoteGcReport, remote_gc};
pub use config::{Config, RemoteConfig, TrustPolicy};
pub use connection::{
    Conditional, FILE_LOCK, LAYOUT_FILE, LAYOUT_VERSION, LIST_PAGE, Remote, RequestCounts,
    TransferOptions,
};
pub use error::{RemoteError, Result};
pub use fetch::{COALESCE_GAP, MAX_RANGE};
pub use get::{Fallback, OpenRemotes, Resolved, get, newest_remote, resolve_or_pull};
pub use lease::{LEASE, LEASE_REFRESH, LEASE_STALE, MAX_SKEW};
pub use ledger::{Ledger, Location};
pub use pull::{PullSummary, fetch_record, pull};
pub use push::{PushSummary, push};
pub use record::{RECORD_FORMAT, RemoteRecord};
pub use remove::remove_keys;
pub use repack::DEFAULT_REPACK_BELOW;
pub use tombstone::{TOMBSTONES, Unit};
pub use usage::REMOTE_USAGE_RESOLUTION;
