//! The storage error vocabulary. Variants are semantic (what went wrong for the caller), and
//! backend faults keep their `source` so the log shows the real cause.

use crate::types::{Digest, ParseError};

/// Result alias for storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a storage operation can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A low-level object key was not found. The registry layer turns this into the fitting
    /// domain error (`BlobUnknown`, `ManifestUnknown`, ...).
    #[error("object not found: {0}")]
    NotFound(String),
    /// A client-supplied string was invalid.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The blob is not known in this repository.
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    /// The upload session does not exist (never did, finished, cancelled or purged).
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    /// A chunk did not start where the upload ends. `offset` is the number of bytes received.
    #[error("chunk starts at {start}, but the upload holds {offset} bytes")]
    RangeInvalid {
        /// Where the client said the chunk starts.
        start: u64,
        /// Bytes the session already holds.
        offset: u64,
    },
    /// The upload's content is inconsistent with what the client declared (length mismatch).
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    /// The content's digest differs from the one the client gave.
    #[error("digest mismatch: expected {expected}, computed {actual}")]
    DigestMismatch {
        /// What the client said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The manifest is not acceptable (bad JSON, unsupported type, inconsistent fields).
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// The manifest is larger than the configured limit.
    #[error("manifest of {size} bytes exceeds the limit of {limit} bytes")]
    ManifestTooLarge {
        /// Size received (at least).
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The manifest references a blob or manifest missing from the repository.
    #[error("manifest references {0}, which is unknown to this repository")]
    ManifestBlobUnknown(Digest),
    /// No manifest for that tag or digest in the repository.
    #[error("manifest unknown to registry: {0}")]
    ManifestUnknown(String),
    /// The repository does not exist.
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    /// The operation is valid but not supported here.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Stored data is damaged (an upload's bytes shorter than its recorded length, unreadable state).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The client's body stream failed (disconnect, timeout). Nothing was recorded.
    #[error("request body failed: {0}")]
    Body(#[source] std::io::Error),
    /// The backend failed; the operation may be retried.
    #[error("storage backend failure: {context}")]
    Backend {
        /// What was being done.
        context: String,
        /// The underlying fault.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps a backend fault with context.
    pub fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            context: context.into(),
            source: source.into(),
        }
    }

    /// True when the error means "not there" at the object level.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}
