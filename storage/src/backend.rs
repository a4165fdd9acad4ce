//! The low-level storage trait every backend implements: a flat key space of immutable or
//! atomically replaced objects, plus a staging area for uploads that grow by appends.
//!
//! Keys are `/`-separated paths of ASCII characters chosen by [`crate::layout`]; backends never
//! see client input that was not validated first.
//!
//! Contracts every backend keeps (and the shared suite in `tests/` checks):
//! - `put` replaces an object atomically: a reader sees the old bytes or the new bytes, never a mix,
//!   also after a crash.
//! - `delete` and `stage_delete` are idempotent: deleting what is absent succeeds.
//! - `list` returns every key under a prefix, sorted by key bytes; `list_dir` returns the sorted,
//!   de-duplicated names of the immediate children (objects and sub-folders) of a folder prefix.
//! - `stage_append` writes after exactly `offset` bytes, discarding any bytes past `offset` that a
//!   failed earlier append left behind; the bytes become durable before it returns when the backend
//!   is configured to sync.
//! - The staging folder `uploads/<id>/` is shared with the service by the contract written in
//!   [`crate::layout`]: the service keeps its session state there through `stage_put_state` and
//!   `stage_get_state`, the backend owns every other name, and `stage_delete` removes both.
//!   Listings never show staging objects.
//! - `stage_commit` makes the staged bytes visible at `key` atomically and removes the stage; if
//!   `key` exists already it is kept (content-addressed keys hold the same bytes) and refreshed so a
//!   garbage collector's grace period starts again.
//! - `stage_adopt` either takes a local file whole as a new stage (by rename, the caller's path
//!   gone) and returns true, or changes nothing and returns false; `scratch_dir`, when a backend
//!   has one, is a local folder that listings, `stage_list` and every other key never show.

use std::fmt::Debug;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::layout;

/// A stream of bytes, as request bodies arrive and responses leave.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// What a backend knows about one object.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written or refreshed (GC grace periods count from here).
    pub modified: SystemTime,
}

/// An object being read.
pub struct GetObject {
    /// Size of the whole object (not of the range).
    pub size: u64,
    /// The requested bytes.
    pub stream: ByteStream,
}

/// A storage backend. Used as `Arc<dyn Backend>`.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// Short name for logs and metrics (`filesystem`, `s3`, ...).
    fn kind(&self) -> &'static str;

    /// Smallest append other than the last that the backend handles efficiently; 0 for none.
    /// Sent to clients as `OCI-Chunk-Min-Length`.
    fn min_chunk(&self) -> u64 {
        0
    }

    /// Metadata of `key`, or `NotFound`.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Whether `key` exists: `head` with `NotFound` as `false`.
    async fn exists(&self, key: &str) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads `key`, whole or the given byte range (already checked against the size by the caller).
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetObject>;

    /// An open local file holding `key`'s bytes, for backends that keep objects in files, so a
    /// server can send them with `sendfile(2)` instead of copying them through memory. `None`
    /// from backends without local files (they serve reads through [`Backend::get`]).
    async fn open_file(&self, key: &str) -> Result<Option<std::fs::File>> {
        let _ = key;
        Ok(None)
    }

    /// Reads a small object whole into memory (links, tags, manifests, upload state).
    async fn get_bytes(&self, key: &str) -> Result<Bytes>;

    /// Atomically creates or replaces `key` with `data`.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Refreshes the modification time of `key` (`NotFound` if absent).
    async fn touch(&self, key: &str) -> Result<()>;

    /// Deletes `key`; succeeds if it is absent.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Every key under `prefix`, recursively, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Sorted names of the immediate children of the folder `prefix` (which ends with `/`).
    async fn list_dir(&self, prefix: &str) -> Result<Vec<String>>;

    /// Appends `data` to the staged upload `id`, which holds `offset` bytes. Returns the new length.
    async fn stage_append(&self, id: &str, offset: u64, data: ByteStream) -> Result<u64>;

    /// Reads the first `len` bytes of staged upload `id`.
    async fn stage_read(&self, id: &str, len: u64) -> Result<ByteStream>;

    /// Publishes the first `len` bytes of staged upload `id` at `key` atomically.
    async fn stage_commit(&self, id: &str, len: u64, key: &str) -> Result<()>;

    /// Atomically creates or replaces the service's state of upload `id` (the [`UPLOAD_STATE`]
    /// object in its staging folder). It needs to be durable only once the upload is committed:
    /// a backend that syncs may write it without syncing, as it does the staged bytes.
    ///
    /// [`UPLOAD_STATE`]: layout::UPLOAD_STATE
    async fn stage_put_state(&self, id: &str, state: Bytes) -> Result<()> {
        self.put(&layout::upload_state(id), state).await
    }

    /// The service's state of upload `id`, as last saved with [`Backend::stage_put_state`], or
    /// `NotFound`.
    async fn stage_get_state(&self, id: &str) -> Result<Bytes> {
        self.get_bytes(&layout::upload_state(id)).await
    }

    /// Removes staged upload `id`: the backend's staged bytes and the service's state saved with
    /// [`Backend::stage_put_state`]. Succeeds if absent.
    async fn stage_delete(&self, id: &str) -> Result<()>;

    /// Staged upload ids with the time each was last appended to.
    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>>;

    /// Takes the local file at `path` as the staged bytes of a new upload `id` (one that has no
    /// stage yet), without copying them: true when the backend keeps staged bytes in local
    /// files and could move the file there (a rename on the same filesystem; the file is gone
    /// from `path`), false when it cannot (another kind of backend, another filesystem): then
    /// nothing changed and the caller stores the bytes another way. The stage is then committed
    /// or deleted like any other ([`Backend::stage_commit`], [`Backend::stage_delete`]); it has
    /// no service state, so until then it is an upload no client can reach, purged with the
    /// others when left behind.
    async fn stage_adopt(&self, id: &str, path: &Path) -> Result<bool> {
        let _ = (id, path);
        Ok(false)
    }

    /// A local folder on the filesystem that holds the staged uploads, for files meant for
    /// [`Backend::stage_adopt`] (a rename within one filesystem, no copy); the caller creates
    /// it when missing. Its name starts with `.`, so no listing, `stage_list` or key ever
    /// reaches into it: it belongs to whoever writes there, and the backend never deletes
    /// anything in it. `None` for backends without local files.
    fn scratch_dir(&self) -> Option<PathBuf> {
        None
    }
}
