//! The [`Store`], the registry's storage service: blobs, upload sessions, manifests, tags, referrers and the catalog, over
//! any [`Backend`]. It speaks in validated domain types and byte streams; HTTP lives elsewhere.
//!
//! All state lives in the backend: an upload's received length and hash state are saved after
//! every append, so a restarted process (or another replica) continues it. Writes are ordered so
//! that what a reader can reach is always whole: blob bytes before the link that exposes them,
//! a manifest's link before its tags and referrer entry.
//!
//! # Layout
//! - [`blobs`]: sizes, reads, deletion and cross-repository mounts.
//! - [`uploads`]: upload sessions, chunked and monolithic.
//! - [`manifests`]: reading, pushing and deleting manifests.
//! - [`tags`]: the tag list and the catalog, in pages.
//! - [`referrers`]: manifests that name another as their subject.
//! - `tap`: hashing an upload's bytes on a blocking thread while they are written.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::backend::Backend;
use crate::error::Result;
use crate::layout;
use crate::sparse::SparseRule;
use crate::types::{Digest, RepoName};

pub mod blobs;
pub mod manifests;
pub mod referrers;
pub use referrers::{ReferrersPage, REFERRERS_PAGE_BYTES};
pub mod tags;
mod tap;
pub mod uploads;

/// Behaviour switches of the service.
#[derive(Debug, Clone)]
pub struct Options {
    /// Mount a blob into a repository by digest alone when `from` is absent or lacks it.
    pub auto_mount: bool,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_size: usize,
    /// Which references pushed manifests may leave out, per repository pattern (none by default).
    pub sparse: Vec<SparseRule>,
}

impl Options {
    /// The default [`max_manifest_size`](Self::max_manifest_size): 4 MiB, as in Distribution.
    pub const DEFAULT_MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auto_mount: true,
            max_manifest_size: Self::DEFAULT_MAX_MANIFEST_SIZE,
            sparse: Vec::new(),
        }
    }
}

/// Where an upload session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    /// Session id, used in the upload URL.
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

/// A stored manifest's metadata.
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    /// Its digest.
    pub digest: Digest,
    /// The media type it was pushed with.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a manifest push did.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its `subject`, when it has one (echoed as `OCI-Subject`).
    pub subject: Option<Digest>,
}

/// One page of a sorted listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The names on this page.
    pub items: Vec<String>,
    /// Whether more names follow the last one.
    pub more: bool,
}

/// The registry's storage service: what the HTTP layer and the maintenance tools call. Cheap
/// to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    opts: Options,
    /// Serialises requests on the same upload session within this process.
    upload_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Repositories whose catalog marker is known to exist (only ever grows, so it cannot go stale).
    known_repos: Mutex<HashSet<RepoName>>,
    /// Orders reference-creating writes against garbage collection in this process. Writers hold
    /// it shared from refreshing what they reference until their link is written; the collector
    /// holds it exclusively while it re-checks and deletes one candidate. See [`crate::gc`].
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
    /// Where events are recorded before the changes they describe (None: events are off).
    outbox: Option<Arc<crate::outbox::Outbox>>,
}

impl Store {
    /// A service over `backend`.
    pub fn new(backend: Arc<dyn Backend>, opts: Options) -> Self {
        Store {
            backend,
            opts,
            upload_locks: Mutex::new(HashMap::new()),
            known_repos: Mutex::new(HashSet::new()),
            gc_lock: tokio::sync::RwLock::new(()),
            outbox: None,
        }
    }

    /// Records an event in `outbox` before every push and delete (see [`crate::outbox`]).
    pub fn with_outbox(mut self, outbox: Arc<crate::outbox::Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Makes `change`, with its event recorded first when events are on.
    pub(crate) async fn evented<T>(
        &self,
        event: crate::outbox::Change<'_>,
        change: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(outbox) = &self.outbox else {
            return change.await;
        };
        let id = outbox.record_change(event).await?;
        let res = change.await;
        outbox.settle(id, &res).await;
        res
    }

    /// The backend, for maintenance tools.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Checks that storage answers (readiness).
    pub async fn ping(&self) -> Result<()> {
        self.backend.list_dir(layout::CATALOG).await.map(|_| ())
    }

    async fn ensure_catalog(&self, repo: &RepoName) -> Result<()> {
        if self
            .known_repos
            .lock()
            .expect("lock poisoned")
            .contains(repo)
        {
            return Ok(());
        }
        let key = layout::catalog_marker(repo);
        match self.backend.head(&key).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => self.backend.put(&key, Bytes::new()).await?,
            Err(e) => return Err(e),
        }
        self.known_repos
            .lock()
            .expect("lock poisoned")
            .insert(repo.clone());
        Ok(())
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        // Only the repository's own `_` folders count: `a/b` existing says nothing about `a`.
        Ok(self
            .backend
            .list_dir(&layout::repo(repo))
            .await?
            .iter()
            .any(|n| n.starts_with('_')))
    }

    /// Refreshes `key`; false when it does not exist.
    async fn refresh(&self, key: &str) -> Result<bool> {
        match self.backend.touch(key).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
