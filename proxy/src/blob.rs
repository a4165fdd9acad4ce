//! Blobs through the cache: from storage when stored, else from the one fill of the blob in
//! progress in this process, read as it arrives.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http::header;
use storage::{ByteStream, Digest};

use crate::{fill, Proxy, ProxyError, Result, Route};

/// Where the bytes of a requested blob come from.
pub enum BlobSource {
    /// Stored: serve it from storage under [`Route::local`].
    Stored,
    /// Being filled: the blob's size, and its bytes as they arrive.
    Filling {
        /// The blob's size.
        size: u64,
        /// The fill, to read any range of.
        fill: Spooled,
    },
}

/// A fill in progress: read through its spool file, or, for the client that took the fill's
/// channel of upstream chunks, from those chunks themselves.
pub struct Spooled(
    Arc<fill::Fill>,
    Option<tokio::sync::mpsc::Receiver<fill::FeedChunk>>,
);

impl Spooled {
    /// The bytes `range` of the blob as the fill receives them: nothing waits for the whole
    /// fill, memory stays bounded (a read buffer, or the fill's bounded channel), and the blob's
    /// last byte follows the digest check.
    pub fn stream(self, range: std::ops::Range<u64>, size: u64) -> ByteStream {
        fill::stream(self.0, self.1, range, size)
    }
}

impl Proxy {
    /// Size of a blob for `HEAD`: from storage, else from the upstream (without filling).
    pub async fn blob_size(&self, route: &Route, digest: &Digest) -> Result<Option<u64>> {
        let up = &route.upstream;
        if let Ok(size) = self.registry.blob_size(&route.local, digest).await {
            up.metrics.hits.fetch_add(1, Relaxed);
            return Ok(Some(size));
        }
        let res = up
            .head(&route.remote, &format!("blobs/{digest}"), &[], true)
            .await
            .map(|h| {
                h.get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
            });
        if let Err(e) = &res {
            self.count_error(route, e);
        }
        res
    }

    /// The bytes of a blob: [`BlobSource::Stored`] when storage has it under `route.local` (also
    /// after waiting for a fill to finish when the upstream sent no size), else the fill in
    /// progress, to be read as it arrives. Waits for the upstream's headers at most the
    /// first-byte time.
    pub async fn blob(&self, route: &Route, digest: &Digest) -> Result<BlobSource> {
        let up = &route.upstream;
        if self.registry.blob_size(&route.local, digest).await.is_ok() {
            up.metrics.hits.fetch_add(1, Relaxed);
            self.touch(route, digest);
            return Ok(BlobSource::Stored);
        }
        let job = fill::FillJob {
            registry: self.registry.clone(),
            upstream: up.clone(),
            remote: route.remote.clone(),
            local: route.local.clone(),
            digest: digest.clone(),
            spool: self.spool.clone(),
        };
        let f = self
            .fills
            .join_or_start(job)
            .map_err(|e| ProxyError::from(storage::Error::backend("proxy spool folder", e)))?;
        // The fill itself gives up after the first-byte time; this bounds a wait for a permit.
        let limit = up.config.first_byte() * 2;
        let state = match tokio::time::timeout(limit, fill::wait_started(&f)).await {
            Ok(s) => s,
            Err(_) => {
                return Err(ProxyError::Timeout {
                    upstream: up.name().to_owned(),
                    secs: limit.as_secs(),
                })
            }
        };
        // The first client here gets the upstream's chunks as they arrive (dropped, so that the
        // fill stops feeding, when it is not served from the fill).
        let feed = f.take_feed();
        if let Some(e) = state.failed {
            return Err(e);
        }
        if state.cached {
            up.metrics.hits.fetch_add(1, Relaxed);
            self.touch(route, digest);
            return Ok(BlobSource::Stored);
        }
        up.metrics.misses.fetch_add(1, Relaxed);
        self.touch(route, digest);
        match state.size {
            Some(size) => Ok(BlobSource::Filling {
                size,
                fill: Spooled(f, feed),
            }),
            _ => {
                drop(feed);
                fill::wait_done(&f).await?;
                Ok(BlobSource::Stored)
            }
        }
    }
}
