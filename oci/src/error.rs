//! Errors of OCI operations. Each names the source and the blob digest or archive entry at
//! fault, in one line.

use std::path::PathBuf;

/// Anything an OCI operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A malformed source, or an entry of it cairn refuses.
    #[error("{}{}: {reason}", src.display(), entry.as_ref().map(|e| format!(" (entry {e:?})")).unwrap_or_default())]
    Source {
        /// The source folder or archive.
        src: PathBuf,
        /// The entry at fault, if one.
        entry: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A blob that is missing, does not match its digest or size, or does not parse.
    #[error("{}: blob {digest}: {reason}", src.display())]
    Blob {
        /// The source (or the stored image).
        src: PathBuf,
        /// The blob's digest.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// A valid image that cannot be imported as asked (no name, an unusable name).
    #[error("{}: {reason}", src.display())]
    Image {
        /// The source.
        src: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A stored tree that is not an OCI image layout.
    #[error("{target}: not an OCI image layout: {reason}")]
    NotALayout {
        /// The key or id given.
        target: String,
        /// What is missing.
        reason: String,
    },
}

impl OciError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> OciError + '_ {
        move |source| OciError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Results of OCI operations.
pub type Result<T, E = OciError> = std::result::Result<T, E>;
