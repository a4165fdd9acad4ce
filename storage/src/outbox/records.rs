//! The stored event record, the change a writer describes before making it, and the verdict a
//! deliverer gets on a pending record.

use serde::{Deserialize, Serialize};

use crate::types::{Digest, RepoName, Tag};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A manifest or blob was pushed (or mounted), or a tag set.
    Push,
    /// A manifest, tag or blob was deleted.
    Delete,
}

impl Action {
    /// The name Distribution uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// What kind of object the event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A manifest (with or without a tag).
    Manifest,
    /// A layer or config blob.
    Blob,
    /// A tag only (tag delete).
    Tag,
}

/// The request that caused an event, as the HTTP layer saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RequestInfo {
    /// Request id.
    pub id: String,
    /// Client address.
    pub addr: String,
    /// `Host` the client asked for.
    pub host: String,
    /// HTTP method.
    pub method: String,
    /// `User-Agent`.
    pub useragent: String,
    /// Authenticated identity, when access control knows one.
    pub actor: String,
}

tokio::task_local! {
    /// The request being served, set by the HTTP layer around each request so events carry it
    /// without widening every storage call.
    pub static REQUEST: RequestInfo;
}

/// One stored event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventRecord {
    /// Stable id (also the key under `outbox/events/`).
    pub id: String,
    /// Milliseconds since the Unix epoch when it was recorded.
    pub time_ms: u64,
    /// What happened.
    pub action: Action,
    /// To what kind of object.
    pub kind: Kind,
    /// Repository name.
    pub repository: String,
    /// Digest of the manifest or blob (absent for a tag delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Media type (manifests: as pushed; blobs: `application/octet-stream`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Tags set by a push, or the tag deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The request, when recorded inside one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestInfo>,
    /// Which process recorded it.
    #[serde(default)]
    pub instance: String,
}

/// What to do with a pending record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its change is visible (or was superseded by a later recorded change): deliver it.
    Deliver,
    /// Its change is not visible yet and a request may still be completing it: ask again later.
    Wait,
    /// Its change never happened (failed or crashed request): drop it without delivering.
    Void,
}

/// A change about to be made, as the registry service describes it to the outbox.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A manifest push, with the tags it sets.
    ManifestPush {
        /// Repository.
        repo: &'a RepoName,
        /// Manifest digest.
        digest: &'a Digest,
        /// Media type it was pushed with.
        media_type: &'a str,
        /// Size in bytes.
        size: u64,
        /// Tags it sets.
        tags: &'a [&'a Tag],
    },
    /// A blob upload or mount into a repository.
    BlobPush {
        /// Repository.
        repo: &'a RepoName,
        /// Blob digest.
        digest: &'a Digest,
        /// Size in bytes.
        size: u64,
    },
    /// A manifest delete by digest.
    ManifestDelete {
        /// Repository.
        repo: &'a RepoName,
        /// Manifest digest.
        digest: &'a Digest,
    },
    /// A tag delete.
    TagDelete {
        /// Repository.
        repo: &'a RepoName,
        /// The tag.
        tag: &'a Tag,
    },
    /// A blob delete from a repository.
    BlobDelete {
        /// Repository.
        repo: &'a RepoName,
        /// Blob digest.
        digest: &'a Digest,
    },
}
