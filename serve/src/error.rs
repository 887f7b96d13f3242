//! Registry errors: the distribution-spec error codes, each with its HTTP status, rendered as
//! `{"errors":[{"code":…,"message":…,"detail":…}]}`.

use http::StatusCode;

/// A distribution-spec error code (spec, "Error Codes"), plus the few this server adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Blob unknown to the registry (404).
    BlobUnknown,
    /// Blob upload invalid (400; 416 for a chunk out of order).
    BlobUploadInvalid,
    /// Blob upload unknown to the registry (404).
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content, or is malformed (400).
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to the registry (400).
    ManifestBlobUnknown,
    /// Manifest invalid (400).
    ManifestInvalid,
    /// Manifest unknown to the registry (404).
    ManifestUnknown,
    /// Invalid repository name (400).
    NameInvalid,
    /// Repository name not known to the registry (404).
    NameUnknown,
    /// Provided length did not match content length (400).
    SizeInvalid,
    /// Authentication required (401).
    Unauthorized,
    /// Requested access to the resource is denied (403).
    Denied,
    /// The operation is unsupported (405: read-only server, deletes without scope).
    Unsupported,
    /// Too many requests (429: the concurrent-upload cap).
    TooManyRequests,
    /// A request the server could not handle because of its own fault (500; not a spec code,
    /// distribution uses `UNKNOWN`).
    Unknown,
    /// Invalid tag (400; distribution's `TAG_INVALID`).
    TagInvalid,
    /// Range not satisfiable (416).
    RangeInvalid,
    /// Request entity too large (413: manifests and uploads over their limits).
    TooLarge,
}

impl Code {
    /// The code's text in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unknown => "UNKNOWN",
            Code::TagInvalid => "TAG_INVALID",
            Code::RangeInvalid => "BLOB_UPLOAD_INVALID",
            Code::TooLarge => "SIZE_INVALID",
        }
    }

    /// The HTTP status that goes with it.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid
            | Code::TagInvalid => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Code::BlobUnknown => "blob unknown to registry",
            Code::BlobUploadInvalid => "blob upload invalid",
            Code::BlobUploadUnknown => "blob upload unknown to registry",
            Code::DigestInvalid => "provided digest did not match uploaded content",
            Code::ManifestBlobUnknown => {
                "manifest references a manifest or blob unknown to registry"
            }
            Code::ManifestInvalid => "manifest invalid",
            Code::ManifestUnknown => "manifest unknown",
            Code::NameInvalid => "invalid repository name",
            Code::NameUnknown => "repository name not known to registry",
            Code::SizeInvalid => "provided length did not match content length",
            Code::Unauthorized => "authentication required",
            Code::Denied => "requested access to the resource is denied",
            Code::Unsupported => "the operation is unsupported",
            Code::TooManyRequests => "too many requests",
            Code::Unknown => "internal server error",
            Code::TagInvalid => "manifest tag did not match URI",
            Code::RangeInvalid => "requested range not satisfiable",
            Code::TooLarge => "request entity too large",
        }
    }
}

/// An error answered to a client: a code and a detail naming what was at fault (a digest, a
/// repository, a header). Internal causes are logged, not sent.
#[derive(Debug, thiserror::Error)]
#[error("{} ({}): {detail}", .code.as_str(), .code.status().as_u16())]
pub struct ApiError {
    /// The spec code.
    pub code: Code,
    /// What was at fault.
    pub detail: String,
}

impl ApiError {
    /// An error with a detail.
    pub fn new(code: Code, detail: impl Into<String>) -> ApiError {
        ApiError {
            code,
            detail: detail.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let v = serde_json::json!({"errors": [{
            "code": self.code.as_str(),
            "message": self.code.message(),
            "detail": self.detail,
        }]});
        serde_json::to_vec(&v).expect("json values serialize")
    }
}

impl From<crate::backend::BackendError> for ApiError {
    fn from(e: crate::backend::BackendError) -> ApiError {
        use crate::backend::BackendError as B;
        match e {
            B::BlobUnknown(d) => ApiError::new(Code::BlobUnknown, d),
            B::ManifestUnknown(d) => ApiError::new(Code::ManifestUnknown, d),
            B::ManifestBlobUnknown(d) => ApiError::new(Code::ManifestBlobUnknown, d),
            B::ManifestInvalid(d) => ApiError::new(Code::ManifestInvalid, d),
            B::DigestMismatch(d) => ApiError::new(Code::DigestInvalid, d),
            B::NameInvalid(d) => ApiError::new(Code::NameInvalid, d),
            B::Corrupt(d) | B::Store(d) | B::Remote(d) => ApiError::new(Code::Unknown, d),
        }
    }
}
