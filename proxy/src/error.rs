//! What can go wrong between a client, the cache and an upstream.

use std::sync::Arc;

/// An error of the pull-through cache. Cheap to clone: a failed fill hands the same error to
/// every client that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// The upstream does not have the manifest or blob (404).
    #[error("{what} is not in upstream {upstream}")]
    NotFound {
        /// The upstream's name.
        upstream: String,
        /// What was asked for (`library/alpine:3.20`, a digest).
        what: String,
        /// True for a blob, false for a manifest.
        blob: bool,
    },
    /// The upstream sent no response headers within the configured time.
    #[error("upstream {upstream} did not answer within {secs} s")]
    Timeout {
        /// The upstream's name.
        upstream: String,
        /// The configured limit.
        secs: u64,
    },
    /// The upstream could not be reached, or answered 429 or 5xx.
    #[error("upstream {upstream} is unavailable: {msg}")]
    Unavailable {
        /// The upstream's name.
        upstream: String,
        /// What happened.
        msg: String,
    },
    /// The upstream refused this registry's credentials, or asks for credentials it lacks.
    #[error("upstream {upstream} refused access: {msg}")]
    Denied {
        /// The upstream's name.
        upstream: String,
        /// What the upstream said.
        msg: String,
    },
    /// The upstream's bytes do not hash to the digest they were asked for (or announced).
    #[error("upstream {upstream} sent content with digest {actual}, expected {expected}; nothing was cached")]
    DigestMismatch {
        /// The upstream's name.
        upstream: String,
        /// The digest asked for or announced.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// The upstream sent something that is not a usable manifest or blob response.
    #[error("upstream {upstream} sent an invalid response: {msg}")]
    Invalid {
        /// The upstream's name.
        upstream: String,
        /// What is wrong with it.
        msg: String,
    },
    /// Storage failed while the cache read or wrote.
    #[error("cache storage: {0}")]
    Storage(Arc<storage::Error>),
}

impl From<storage::Error> for ProxyError {
    fn from(e: storage::Error) -> Self {
        ProxyError::Storage(Arc::new(e))
    }
}

impl ProxyError {
    /// Whether a cached tag may be served instead (the upstream is down or overloaded, not
    /// saying "no").
    pub fn upstream_down(&self) -> bool {
        matches!(
            self,
            ProxyError::Timeout { .. } | ProxyError::Unavailable { .. }
        )
    }
}

/// Result of the cache's operations.
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;
