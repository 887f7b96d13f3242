//! The store's umbrella error. Every variant names the path, key or object at fault, so the CLI
//! can print it as one line.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::blobs::BlobError;
use crate::id::Id;
use crate::key::{AttachmentNameError, KeyError};
use crate::tree::TreeFormatError;

/// Anything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Reading or writing a blob failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The redb index failed.
    #[error("index {}: {source}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// The index was written by an unknown layout version.
    #[error("index {}: unknown store layout version {found}", path.display())]
    Layout {
        /// The index file.
        path: PathBuf,
        /// The version it records.
        found: String,
    },
    /// A lock could not be taken in time.
    #[error("timed out after {:.1}s waiting for {what} ({}); raise --lock-timeout or retry", waited.as_secs_f64(), path.display())]
    LockTimeout {
        /// Which lock.
        what: String,
        /// Its file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A key that breaks the naming rules.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An attachment name that breaks the naming rules.
    #[error(transparent)]
    AttachmentName(#[from] AttachmentNameError),
    /// No such key in the store.
    #[error("unknown key {0}")]
    UnknownKey(String),
    /// A key whose record the index holds but cannot read: reported as such, never taken for
    /// an absent key (which a `get --remote` would pull over).
    #[error("key {key}: its record in the index is corrupt: {reason}")]
    CorruptRecord {
        /// The key.
        key: String,
        /// What is wrong with the record.
        reason: String,
    },
    /// A record that changed while the caller was working from an earlier copy of it.
    #[error("key {key}: its record changed meanwhile ({what}); try again")]
    RecordChanged {
        /// The key.
        key: String,
        /// What the caller was doing.
        what: &'static str,
    },
    /// No such object in the store.
    #[error("object {0} is not in the store")]
    UnknownObject(Id),
    /// A tree in the index that fails its hash or its format checks.
    #[error("tree {id} is corrupt: {reason}")]
    CorruptTree {
        /// The tree.
        id: Id,
        /// What is wrong.
        reason: String,
    },
    /// A tree that could not be encoded (bad names from the input).
    #[error("{}: {source}", path.display())]
    Encode {
        /// Where the bad tree came from.
        path: PathBuf,
        /// The rule broken.
        source: TreeFormatError,
    },
    /// An input file or folder cairn refuses (a socket, an unreadable name, ...).
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The input path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A malformed archive, or an entry in it cairn refuses.
    #[error("{}{}: {reason}", archive.display(), entry.as_ref().map(|e| format!(" (entry {e:?})")).unwrap_or_default())]
    Archive {
        /// The archive file.
        archive: PathBuf,
        /// The entry at fault, when there is one.
        entry: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A destination cairn refuses to write to.
    #[error("{}: {reason}", path.display())]
    Destination {
        /// The destination.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key record whose figures do not describe its root.
    #[error("key {key}: record does not match its root: {reason}")]
    RecordMismatch {
        /// The key.
        key: String,
        /// What differs.
        reason: String,
    },
    /// A hardlink in a tree whose target is not a regular file of that tree.
    #[error("tree {root}: hardlink target {target:?} is not a regular file of the tree")]
    HardlinkTarget {
        /// The tree the target path starts from.
        root: Id,
        /// The target path.
        target: String,
    },
    /// A tree nested deeper than any path on disk may be (see `tree::MAX_DEPTH`).
    #[error("tree {root}{}: nested more than {} folders deep", if path.is_empty() { String::new() } else { format!(" at {path:?}") }, crate::tree::MAX_DEPTH)]
    TooDeep {
        /// The root of the walk.
        root: Id,
        /// The first path found too deep (empty where the depth was computed, not walked).
        path: String,
    },
    /// A path inside a tree that does not exist or is not what was asked for.
    #[error("{path:?} in {root}: {reason}")]
    TreePath {
        /// The path asked for.
        path: String,
        /// The tree searched.
        root: Id,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// An adapter for `map_err` that attaches `path` to an I/O error.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// redb's errors convert with `?` inside index code; [`crate::index::Index`] fills in the
/// index file's path (left empty here) where the transaction ends.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Index {
                    path: PathBuf::new(),
                    source: Box::new(e.into()),
                }
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
