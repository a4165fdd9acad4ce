//! Blobs: size, reads, local files, deletion and cross-repository mounts.

use std::ops::Range;

use bytes::Bytes;

use super::Store;
use crate::backend::ByteStream;
use crate::error::{Error, Result};
use crate::layout;
use crate::types::{Digest, RepoName};

impl Store {
    /// Size of a blob the repository may serve (a layer, config, or manifest it holds).
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let linked = self
            .backend
            .exists(&layout::layer_link(repo, digest))
            .await?
            || self
                .backend
                .exists(&layout::manifest_link(repo, digest))
                .await?;
        if !linked {
            return Err(Error::BlobUnknown(digest.clone()));
        }
        match self.backend.head(&layout::blob(digest)).await {
            Ok(m) => Ok(m.size),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(digest.clone())),
            Err(e) => Err(e),
        }
    }

    /// Streams a blob's bytes (all, or `range`, already validated against its size).
    pub async fn blob_read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream> {
        match self.backend.get(&layout::blob(digest), range).await {
            Ok(o) => Ok(o.stream),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(digest.clone())),
            Err(e) => Err(e),
        }
    }

    /// The local file holding a blob, when the backend keeps blobs in files (see
    /// [`Backend::open_file`](crate::Backend::open_file)); `None` otherwise, and the caller reads with [`Self::blob_read`].
    pub async fn blob_file(&self, digest: &Digest) -> Result<Option<std::fs::File>> {
        match self.backend.open_file(&layout::blob(digest)).await {
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(digest.clone())),
            other => other,
        }
    }

    /// Removes a blob from a repository (the bytes stay until garbage collection).
    pub async fn blob_delete(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let link = layout::layer_link(repo, digest);
        if !self.backend.exists(&link).await? {
            return Err(Error::BlobUnknown(digest.clone()));
        }
        let event = crate::outbox::Change::BlobDelete { repo, digest };
        self.evented(event, self.backend.delete(&link)).await
    }

    pub(super) async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.backend
            .put(
                &layout::layer_link(repo, digest),
                Bytes::from(digest.to_string()),
            )
            .await?;
        self.ensure_catalog(repo).await
    }

    /// Cross-repository mount. Returns true when the blob is now in `repo`, false when the client
    /// must upload it.
    pub async fn blob_mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool> {
        let in_from = match from {
            Some(from) => {
                self.backend
                    .exists(&layout::layer_link(from, digest))
                    .await?
            }
            None => false,
        };
        if !in_from && !self.opts.auto_mount {
            return Ok(false);
        }
        let _gc = self.gc_lock.read().await;
        // Refresh the blob so a concurrent garbage collection keeps it (grace period).
        if !self.refresh(&layout::blob(digest)).await? {
            return Ok(false);
        }
        let size = self.backend.head(&layout::blob(digest)).await?.size;
        let event = crate::outbox::Change::BlobPush { repo, digest, size };
        self.evented(event, self.link_blob(repo, digest)).await?;
        Ok(true)
    }
}
