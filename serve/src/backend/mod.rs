//! The server's one door into the store: every call into `cairn-store`, `cairn-oci` and
//! `cairn-remote` is made by the [`StoreBackend`] in this module, behind the small [`Backend`]
//! trait the HTTP layer uses. Porting the server to another store API means rewriting this
//! module only.
//!
//! All methods block (they read files and the index), so the HTTP layer calls them on tokio's
//! blocking pool.

mod layout;
mod store;
mod team;

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use cairn_oci::OciDigest;

use crate::manifest::Descriptor;
use crate::names::{Reference, Repo};

pub use store::{StoreBackend, StoreBackendOptions};

/// Why a backend call failed. The variants the client caused name the digest or name at fault;
/// the others carry the store's message (logged, answered as a 500).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No such blob in the repository.
    #[error("blob {0} is unknown")]
    BlobUnknown(String),
    /// No such manifest in the repository.
    #[error("manifest {0} is unknown")]
    ManifestUnknown(String),
    /// A pushed manifest references something the repository lacks.
    #[error("manifest references {0}, which the repository lacks")]
    ManifestBlobUnknown(String),
    /// A pushed manifest is malformed.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    /// Content does not hash to the digest it was pushed under.
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    /// A name the store cannot hold.
    #[error("invalid name: {0}")]
    NameInvalid(String),
    /// Stored content failed its check: never served.
    #[error("corrupt content: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The fallback remote failed.
    #[error("remote: {0}")]
    Remote(String),
}

impl From<cairn_store::Error> for BackendError {
    fn from(e: cairn_store::Error) -> BackendError {
        match e {
            cairn_store::Error::Blob(b @ cairn_store::blobs::BlobError::Corrupt { .. }) => {
                BackendError::Corrupt(b.to_string())
            }
            other => BackendError::Store(other.to_string()),
        }
    }
}

impl From<cairn_oci::OciError> for BackendError {
    fn from(e: cairn_oci::OciError) -> BackendError {
        BackendError::Store(e.to_string())
    }
}

/// Result of backend calls.
pub type Result<T> = std::result::Result<T, BackendError>;

/// A manifest found by tag or digest: its exact stored bytes.
#[derive(Clone, Debug)]
pub struct ManifestHit {
    /// Its sha256 digest.
    pub digest: OciDigest,
    /// The media type it is served with.
    pub media_type: String,
    /// The bytes as pushed or imported.
    pub bytes: bytes::Bytes,
}

/// A blob of a repository: enough to answer HEAD and to open it.
#[derive(Clone, Debug)]
pub struct BlobInfo {
    /// Its OCI digest.
    pub digest: OciDigest,
    /// Its size.
    pub size: u64,
    /// The store blob holding it.
    pub(crate) id: cairn_store::Id,
}

/// An upload the HTTP layer has received completely and checked against its digest.
#[derive(Debug)]
pub struct CompletedUpload {
    /// The file holding the content (in [`Backend::uploads_dir`]); the backend takes it.
    pub file: tempfile::TempPath,
    /// Its sha256 digest (checked).
    pub digest: OciDigest,
    /// Its BLAKE3 hash (the store id), computed as it arrived.
    pub blake3: [u8; 32],
    /// Its size.
    pub size: u64,
    /// Its first bytes (for the compressed-or-not decision).
    pub head: Vec<u8>,
}

/// What a manifest push did.
#[derive(Clone, Debug)]
pub struct PutManifest {
    /// The manifest's digest.
    pub digest: OciDigest,
    /// Its `subject`, if any (answered as `OCI-Subject`).
    pub subject: Option<String>,
    /// The key bound.
    pub key: String,
}

/// A file of the team cache (the store's remote layout).
#[derive(Debug)]
pub struct CacheFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its length.
    pub len: u64,
}

/// The operations the HTTP layer needs.
pub trait Backend: Send + Sync + 'static {
    /// The manifest `reference` of `repo`.
    fn manifest(&self, repo: &Repo, reference: &Reference) -> Result<ManifestHit>;
    /// A blob of `repo` (manifests are blobs too).
    fn blob(&self, repo: &Repo, digest: &OciDigest) -> Result<BlobInfo>;
    /// A reader of the blob's content that fails, at the latest on its last read, unless the
    /// content hashes to the store id (and so to the digest it was recorded under); and
    /// whether the blob's file was checked whole since it last changed (see
    /// [`Backend::verify_blob`]).
    fn open_blob(&self, blob: &BlobInfo) -> Result<(Box<dyn Read + Send>, bool)>;
    /// Reads the whole blob and checks it, remembering the file's identity and times, so that
    /// later answers can start streaming at once (a corrupt blob is then refused before its
    /// first byte is sent).
    fn verify_blob(&self, blob: &BlobInfo) -> Result<()>;
    /// The tags of `repo`, sorted; `None` if the repository is unknown.
    fn tags(&self, repo: &Repo) -> Result<Option<Vec<String>>>;
    /// Every repository with at least one image, sorted.
    fn repositories(&self) -> Result<Vec<String>>;
    /// Manifests of `repo` whose `subject` is `digest`, as descriptors.
    fn referrers(&self, repo: &Repo, digest: &OciDigest) -> Result<Vec<Descriptor>>;
    /// Stores a completed upload as a blob of `repo`, pinned through the gc grace period.
    fn commit_upload(&self, repo: &Repo, upload: CompletedUpload) -> Result<()>;
    /// Links blob `digest` of `from` into `repo`, if `from` has it; false if not.
    fn mount(&self, repo: &Repo, from: &Repo, digest: &OciDigest) -> Result<bool>;
    /// Stores a manifest and binds its key, if everything it references is in `repo`.
    fn put_manifest(
        &self,
        repo: &Repo,
        reference: &Reference,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<PutManifest>;
    /// Removes a tag, or a manifest by digest and every tag naming it. Returns the keys removed
    /// (empty: nothing matched).
    fn delete_manifest(&self, repo: &Repo, reference: &Reference) -> Result<Vec<String>>;
    /// Called by the sweeper with the pin grace period: pins made from now on last that long
    /// (they expire by themselves); returns how many pins it removed.
    fn expire_pins(&self, grace: Duration) -> Result<usize>;
    /// The folder uploads are written to (on the store's filesystem).
    fn uploads_dir(&self) -> PathBuf;
    /// The team-cache file at `path` (relative to the remote layout's root), made current
    /// first if it is a key record.
    fn cache_file(&self, path: &str) -> Result<Option<CacheFile>>;
}
