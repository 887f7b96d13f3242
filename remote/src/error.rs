//! Errors of remote operations; each names the remote and the object, key or path at fault.

/// Anything a remote operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A URL or option cairn cannot turn into an object store.
    #[error("remote {url}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A request to the object store failed (after its retries).
    #[error("remote {remote}: {path}: {source}")]
    Request {
        /// The remote's URL.
        remote: String,
        /// The object path.
        path: String,
        /// object_store's error.
        source: object_store::Error,
    },
    /// The remote has no record for the key.
    #[error("remote {remote}: key {key} is not on the remote")]
    NoSuchKey {
        /// The remote's URL.
        remote: String,
        /// The key.
        key: String,
    },
    /// A key neither the local store nor any remote tried has.
    #[error("unknown key {key} (not in the local store, nor on any remote tried{})", if tried.is_empty() { String::new() } else { format!(": {}", tried.join(", ")) })]
    NotFound {
        /// The key.
        key: String,
        /// The remotes tried, in order.
        tried: Vec<String>,
    },
    /// Bytes from the remote that do not match what they claim to be.
    #[error("remote {remote}: {what} is corrupt: {reason}")]
    Corrupt {
        /// The remote's URL.
        remote: String,
        /// The object or file (with its remote path).
        what: String,
        /// What was found.
        reason: String,
    },
    /// A key record that needs an object none of its packs holds.
    #[error("remote {remote}: key {key} needs {object}, which nothing its record names holds")]
    Missing {
        /// The remote's URL.
        remote: String,
        /// The key.
        key: String,
        /// The object.
        object: String,
    },
    /// A record refused by the trust policy.
    #[error("remote {remote}: {reason}")]
    Untrusted {
        /// The remote's URL.
        remote: String,
        /// Which key, and the signers found.
        reason: String,
    },
    /// A write to a remote configured read-only.
    #[error("remote {0} is read-only")]
    ReadOnly(String),
    /// The remote holds a layout this version does not know.
    #[error("remote {remote}: unknown layout {found} (this cairn writes layout 1)")]
    Layout {
        /// The remote's URL.
        remote: String,
        /// What `cairn-remote.json` says.
        found: String,
    },
    /// Compressing an object for the remote failed (a local failure, not the remote's).
    #[error("compressing {object} for the remote: {source}")]
    Compress {
        /// The object.
        object: cairn_store::Id,
        /// zstd's error.
        source: std::io::Error,
    },
    /// Finishing a streamed (multipart) upload failed.
    #[error("remote {remote}: {path}: upload failed: {source}")]
    Upload {
        /// The remote's URL.
        remote: String,
        /// The object path.
        path: String,
        /// The error object_store's writer reported.
        source: std::io::Error,
    },
    /// The object store found no credentials to sign requests with.
    #[error("remote {remote}: no credentials found (looked in {looked}); {detail}")]
    NoCredentials {
        /// The remote's URL.
        remote: String,
        /// Where credentials were looked for, in order.
        looked: &'static str,
        /// The last lookup's failure, as the object store reported it.
        detail: String,
    },
    /// The object store cannot put conditionally (create-only, or only-if-unchanged).
    #[error(
        "remote {0}: the object store does not support conditional puts, which remote gc needs to \
         run safely beside other writers; pass --exclusive if no other cairn writes to it meanwhile"
    )]
    NoConditionalPuts(String),
    /// Another gc holds the remote's lease.
    #[error(
        "remote {remote}: another gc is running ({owner}, lease refreshed {age} s ago); try later"
    )]
    GcBusy {
        /// The remote's URL.
        remote: String,
        /// Who holds the lease.
        owner: String,
        /// Seconds since it was last refreshed, by the object store's clock.
        age: i64,
    },
    /// This gc's lease was taken over (it was stale) while it ran.
    #[error(
        "remote {0}: this gc lost its lease to another (it was not refreshed in time); stopped"
    )]
    LeaseLost(String),
    /// The local clock and the object store's disagree too much for time-based decisions.
    #[error(
        "remote {remote}: this machine's clock differs from the object store's by {skew} s \
         (more than {max} s); refusing to collect garbage"
    )]
    ClockSkew {
        /// The remote's URL.
        remote: String,
        /// The difference, in seconds.
        skew: i64,
        /// The most allowed.
        max: i64,
    },
    /// A remote gc kept tombstoning what this push relies on, round after round.
    #[error(
        "remote {remote}: a remote gc tombstoned {units} packs or blobs this push relies on, \
         again after {rounds} re-uploads; no key was bound, push again"
    )]
    GcRace {
        /// The remote's URL.
        remote: String,
        /// Units still tombstoned.
        units: usize,
        /// Re-upload rounds made.
        rounds: usize,
    },
    /// The local store failed.
    #[error(transparent)]
    Local(#[from] cairn_store::Error),
    /// The local record of what was pushed failed.
    #[error("ledger {path}: {reason}")]
    Ledger {
        /// Its file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The configuration file is unreadable or invalid.
    #[error("config {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<cairn_store::blobs::BlobError> for RemoteError {
    fn from(e: cairn_store::blobs::BlobError) -> RemoteError {
        RemoteError::Local(e.into())
    }
}

/// Results of remote operations.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;
