//! The object-storage backend: Amazon S3 (and S3-compatible servers), Google Cloud Storage, Azure
//! Blob Storage, or memory, through the `object_store` crate.
//!
//! # Many replicas, no local state
//! Everything, upload sessions included, lives in the bucket, so any replica can continue what
//! another started. A staged upload `<id>` keeps its bytes under `uploads/<id>/`:
//!
//! ```text
//! uploads/<id>/staged        JSON: the multipart upload id, its parts (size, ETag), the tail
//! uploads/<id>/tail-<uuid>   bytes after the last whole part (fewer than one part)
//! uploads/<id>/data          target of the multipart upload; exists once it is completed
//! uploads/<id>/state         the service's own session state (not this module's, see
//!                            [`crate::layout`])
//! ```
//!
//! An append fills parts of exactly `part_size` bytes (5 MiB by default, the smallest part S3
//! accepts) and sends each one with the resumable low-level multipart API ([`MultipartStore`]:
//! the upload id and part ETags are saved in `staged`, so another process can add parts and
//! complete it). What is left over, always less than a part, is written as the tail object and
//! prepended to the next append. A request therefore holds at most one part in memory, never the
//! whole blob. The `staged` object is rewritten only after an append succeeded: bytes of an
//! append whose body failed midway are never referenced, so they are discarded (uploaded parts
//! that are not listed are dropped by the store when the upload is completed).
//!
//! `staged` also remembers the state before the latest append (`prev`), so an append may restart
//! at the length the upload had before its last successful append. That happens when the
//! registry could not record that append (it failed its length check or could not save its own
//! state): the registry retries from its recorded offset, and the backend rewinds.
//!
//! # Commit
//! - Nothing but a tail (a blob smaller than one part): one `PUT` of the bytes at the final key.
//! - Parts: the tail becomes the last part, the multipart upload is completed at
//!   `uploads/<id>/data`, then copied server-side to the final key (`CopyObject` is atomic; S3
//!   copies at most 5 GiB that way). Larger blobs are streamed from `data` into a new multipart
//!   upload at the final key: memory stays bounded by the part size, but every byte is read and
//!   written once more through this process. The blob becomes visible whole, when the copy or
//!   the upload completes.
//!
//! `stage_read` has to complete the multipart upload first (the parts of an open upload cannot be
//! read); a later append re-uploads those bytes into a fresh multipart upload.
//!
//! # Modification times
//! Object stores cannot change an object's modification time, and S3 refuses a copy onto itself
//! that changes nothing (and copies at most 5 GiB at once), so `touch` writes an empty sidecar
//! object at `_touched/<key>`. `head` and `list` report the later of the object's and the
//! sidecar's time. Cost: `head` sends two HEAD requests (concurrently), `list` two listings, and
//! `delete` two deletes.
//!
//! # Limits
//! - At most 10,000 parts per upload: 48.8 GiB with 5 MiB parts ([`ObjectBackend::with_part_size`]
//!   raises it).
//! - A multipart upload abandoned by a crashed process is not aborted by anyone; configure the
//!   bucket's lifecycle rule `AbortIncompleteMultipartUpload`. `stage_delete` aborts the uploads
//!   it knows.
//! - Two replicas appending to the same upload at the same moment are not serialised (the
//!   registry serialises them within one process only): the last writer of `staged` wins. Clients
//!   send the chunks of one upload one after another, so this needs a misbehaving client.

//!
//! # Layout
//! - [`stage`]: the saved state of a staged upload (`staged`) and how it rewinds.
//! - [`multipart`]: the staging machine: appends filling parts, completion, publishing.
//! - [`url`]: opening a store from a storage URL.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

use crate::backend::{Backend, ByteStream, GetObject, ObjectMeta};
use crate::error::{Error, Result};
use crate::layout;

pub mod multipart;
pub mod stage;
pub mod url;

/// The smallest part S3 accepts (except the last), and the default part size.
pub const MIN_PART: usize = 5 * 1024 * 1024;
/// The largest object S3 copies in one request.
pub const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// The most parts a multipart upload may have.
const MAX_PARTS: usize = 10_000;
/// Parallel requests when deleting a folder or streaming a copy.
const CONCURRENCY: usize = 8;

/// Storage in an object store (S3, GCS, Azure, memory).
#[derive(Clone)]
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    /// Prepended to every key: empty, or a folder ending with `/`.
    root: String,
    kind: &'static str,
    part_size: usize,
    max_copy: u64,
    /// Whether the store accepts an empty last part. When it does, completing an upload always
    /// sends a last part, which also replaces any part a failed append left at that index
    /// (the in-memory store concatenates every uploaded part, listed or not).
    empty_final_part: bool,
}

impl fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBackend")
            .field("store", &self.store.to_string())
            .field("root", &self.root)
            .field("part_size", &self.part_size)
            .finish()
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// Maps a store error on `key`: `NotFound` stays `NotFound`, the rest is a backend fault.
fn os_err(what: &str, key: &str, e: object_store::Error) -> Error {
    if is_not_found(&e) {
        Error::NotFound(key.to_owned())
    } else {
        Error::backend(format!("object storage: {what} {key}"), e)
    }
}

fn empty_stream() -> ByteStream {
    futures::stream::empty().boxed()
}

impl ObjectBackend {
    /// A backend over `store`, which must also offer the low-level multipart API (every cloud
    /// store and [`InMemory`] do). `kind` names it in logs (`s3`, `gcs`, `azure`, `memory`).
    pub fn new<S: ObjectStore + MultipartStore>(store: Arc<S>, kind: &'static str) -> Self {
        let multipart: Arc<dyn MultipartStore> = store.clone();
        ObjectBackend {
            store,
            multipart,
            root: String::new(),
            kind,
            part_size: MIN_PART,
            max_copy: MAX_COPY,
            empty_final_part: matches!(kind, "s3" | "memory"),
        }
    }

    /// A fresh, empty in-memory store (tests, experiments).
    pub fn memory() -> Self {
        Self::new(Arc::new(InMemory::new()), "memory")
    }

    /// Keeps every key under the folder `prefix` of the bucket.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        let p = prefix.trim_matches('/');
        self.root = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        self
    }

    /// Sets the part size of staged uploads (default and minimum on S3: 5 MiB). Also the
    /// `min_chunk` the registry advertises.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    /// Sets the largest blob published by a server-side copy (default 5 GiB, the S3 limit);
    /// larger ones are streamed.
    pub fn with_max_copy_size(mut self, bytes: u64) -> Self {
        self.max_copy = bytes;
        self
    }

    /// The underlying store (maintenance tools, tests).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key prefix inside the bucket (empty, or ending with `/`).
    pub fn prefix(&self) -> &str {
        &self.root
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.root))
    }

    /// The path to list for a folder key (`None` for the whole store).
    fn folder(&self, dir: &str) -> Option<Path> {
        let p = self.path(dir);
        (!p.as_ref().is_empty()).then_some(p)
    }

    fn key_of<'a>(&self, p: &'a Path) -> Option<&'a str> {
        p.as_ref().strip_prefix(self.root.as_str())
    }

    async fn put_raw(&self, key: &str, data: Bytes) -> Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|e| os_err("put", key, e))
    }

    /// Every object under the folder `dir` (recursively): key, size, time.
    async fn list_raw(&self, dir: &str) -> Result<Vec<(String, u64, SystemTime)>> {
        let folder = self.folder(dir);
        self.store
            .list(folder.as_ref())
            .map_err(|e| os_err("list", dir, e))
            .try_filter_map(|m| {
                let key = self
                    .key_of(&m.location)
                    .map(|k| (k.to_owned(), m.size, SystemTime::from(m.last_modified)));
                futures::future::ready(Ok(key))
            })
            .try_collect()
            .await
    }

    /// The first `len` bytes of `key`, in memory (tails: less than one part).
    async fn read_prefix(&self, key: &str, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let b = self
            .store
            .get_range(&self.path(key), 0..len)
            .await
            .map_err(|e| os_err("read", key, e))?;
        if b.len() as u64 != len {
            return Err(Error::Corrupt(format!(
                "{key}: read {} bytes, expected {len}",
                b.len()
            )));
        }
        Ok(b)
    }

    /// Streams `range` of `key`.
    async fn range_stream(&self, key: &str, range: Range<u64>) -> Result<ByteStream> {
        if range.is_empty() {
            return Ok(empty_stream());
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        let res = self
            .store
            .get_opts(&self.path(key), opts)
            .await
            .map_err(|e| os_err("read", key, e))?;
        Ok(res.into_stream().map_err(io::Error::from).boxed())
    }
}

#[async_trait]
impl Backend for ObjectBackend {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn min_chunk(&self) -> u64 {
        self.part_size as u64
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let (path, side_path) = (self.path(key), self.path(&layout::touched(key)));
        let (obj, side) = futures::join!(self.store.head(&path), self.store.head(&side_path));
        let obj = obj.map_err(|e| os_err("head", key, e))?;
        let mut modified = SystemTime::from(obj.last_modified);
        match side {
            Ok(s) => modified = modified.max(SystemTime::from(s.last_modified)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(os_err("head", &layout::touched(key), e)),
        }
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: obj.size,
            modified,
        })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetObject> {
        let path = self.path(key);
        match range {
            Some(r) if r.is_empty() => {
                let m = self
                    .store
                    .head(&path)
                    .await
                    .map_err(|e| os_err("head", key, e))?;
                Ok(GetObject {
                    size: m.size,
                    stream: empty_stream(),
                })
            }
            range => {
                let opts = GetOptions {
                    range: range.map(GetRange::Bounded),
                    ..Default::default()
                };
                let res = self
                    .store
                    .get_opts(&path, opts)
                    .await
                    .map_err(|e| os_err("get", key, e))?;
                Ok(GetObject {
                    size: res.meta.size,
                    stream: res.into_stream().map_err(io::Error::from).boxed(),
                })
            }
        }
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let res = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| os_err("get", key, e))?;
        res.bytes().await.map_err(|e| os_err("read", key, e))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_raw(key, data).await
    }

    async fn touch(&self, key: &str) -> Result<()> {
        self.store
            .head(&self.path(key))
            .await
            .map_err(|e| os_err("head", key, e))?;
        self.put_raw(&layout::touched(key), Bytes::new()).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let (path, side_path) = (self.path(key), self.path(&layout::touched(key)));
        let (a, b) = futures::join!(self.store.delete(&path), self.store.delete(&side_path));
        for (k, r) in [(key.to_owned(), a), (layout::touched(key), b)] {
            match r {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(os_err("delete", &k, e)),
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let touch_dir = layout::touched(dir);
        let touch_dir = touch_dir.trim_end_matches('/');
        let (objects, touched) = futures::join!(self.list_raw(dir), self.list_raw(touch_dir));
        let touched: BTreeMap<String, SystemTime> = touched?
            .into_iter()
            .filter_map(|(k, _, t)| k.strip_prefix(layout::TOUCHED).map(|k| (k.to_owned(), t)))
            .collect();
        let hidden = |k: &str| layout::is_staging(k) || k.starts_with(layout::TOUCHED);
        let mut metas: Vec<ObjectMeta> = objects?
            .into_iter()
            .filter(|(k, _, _)| k.starts_with(prefix) && !hidden(k))
            .map(|(key, size, modified)| {
                let modified = touched.get(&key).map_or(modified, |t| modified.max(*t));
                ObjectMeta {
                    key,
                    size,
                    modified,
                }
            })
            .collect();
        metas.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(metas)
    }

    async fn list_dir(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = prefix.trim_end_matches('/');
        let folder = self.folder(dir);
        let res = self
            .store
            .list_with_delimiter(folder.as_ref())
            .await
            .map_err(|e| os_err("list", prefix, e))?;
        let mut names: Vec<String> = res
            .objects
            .iter()
            .map(|m| &m.location)
            .chain(res.common_prefixes.iter())
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| !(dir.is_empty() && n == layout::TOUCHED.trim_end_matches('/')))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn stage_append(&self, id: &str, offset: u64, data: ByteStream) -> Result<u64> {
        self.append_staged(id, offset, data).await
    }

    async fn stage_read(&self, id: &str, len: u64) -> Result<ByteStream> {
        self.read_staged(id, len).await
    }

    async fn stage_commit(&self, id: &str, len: u64, key: &str) -> Result<()> {
        self.commit_staged(id, len, key).await
    }

    async fn stage_delete(&self, id: &str) -> Result<()> {
        self.delete_staged(id).await
    }

    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>> {
        self.list_staged().await
    }
}
