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
//! uploads/<id>/state         the registry's own session state (not this module's)
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

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, ByteStream, GetObject, ObjectMeta};
use crate::error::{Error, Result};

/// The smallest part S3 accepts (except the last), and the default part size.
pub const MIN_PART: usize = 5 * 1024 * 1024;
/// The largest object S3 copies in one request.
pub const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// The most parts a multipart upload may have.
const MAX_PARTS: usize = 10_000;
/// Folder of the staged uploads.
const STAGE_ROOT: &str = "uploads";
/// Folder of the modification-time sidecars.
const TOUCH_ROOT: &str = "_touched";
/// Parallel requests when deleting a folder or streaming a copy.
const CONCURRENCY: usize = 8;

/// Retries of failed store requests within a bounded time, so a client waiting on a store that
/// hangs gets a 503 in well under a minute instead of after object_store's default of three
/// minutes. The backoff doubles from 100 ms, so ten retries ride out a store restart of several
/// seconds (the S3 outage test restarts one within a second) before the 20 s bound ends them.
/// Each attempt is further bounded by the `timeout` storage option (30 s by default).
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 10,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    }
}

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

/// One uploaded part of the multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Part {
    size: u64,
    /// The store's id for the part (the ETag on S3).
    id: String,
}

/// Bytes after the last part: the first `len` bytes of object `uploads/<id>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tail {
    name: String,
    len: u64,
}

/// The state before the latest append: the first `parts` parts, then `tail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Snapshot {
    parts: usize,
    tail: Option<Tail>,
}

/// What `uploads/<id>/staged` records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stage {
    /// The open multipart upload at `uploads/<id>/data`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<Tail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<Snapshot>,
    /// Set once the upload is completed: `uploads/<id>/data` holds this many bytes, and `upload`,
    /// `parts`, `tail` and `prev` are empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed: Option<u64>,
}

/// Where an append at some offset starts from.
#[derive(Debug, PartialEq, Eq)]
enum Base {
    /// These parts, then the first bytes of this tail.
    Parts {
        parts: Vec<Part>,
        tail: Option<Tail>,
    },
    /// The first `len` bytes of the completed `data` object.
    Data { len: u64 },
}

fn sum(parts: &[Part]) -> u64 {
    parts.iter().map(|p| p.size).sum()
}

impl Stage {
    fn len(&self) -> u64 {
        match self.completed {
            Some(n) => n,
            None => sum(&self.parts) + self.tail.as_ref().map_or(0, |t| t.len),
        }
    }

    /// The state holding exactly the first `offset` staged bytes.
    fn base_at(&self, id: &str, offset: u64) -> Result<Base> {
        let len = self.len();
        if offset > len {
            return Err(Error::Corrupt(format!(
                "upload {id} holds {len} bytes, its state says {offset}"
            )));
        }
        if self.completed.is_some() {
            return Ok(Base::Data { len: offset });
        }
        let cut = |parts: &[Part], tail: &Option<Tail>| {
            let in_parts = sum(parts);
            let in_tail = tail.as_ref().map_or(0, |t| t.len);
            (in_parts <= offset && offset <= in_parts + in_tail).then(|| Base::Parts {
                parts: parts.to_vec(),
                tail: tail
                    .as_ref()
                    .map(|t| Tail {
                        name: t.name.clone(),
                        len: offset - in_parts,
                    })
                    .filter(|t| t.len > 0),
            })
        };
        if let Some(base) = cut(&self.parts, &self.tail) {
            return Ok(base);
        }
        if let Some(prev) = &self.prev {
            if let Some(base) = cut(&self.parts[..prev.parts.min(self.parts.len())], &prev.tail) {
                return Ok(base);
            }
        }
        Err(Error::Corrupt(format!(
            "upload {id} cannot be rewound from {len} to {offset} bytes"
        )))
    }

    /// Names of the tail objects this state still needs.
    fn tails(&self) -> HashSet<&str> {
        let prev = self.prev.as_ref().and_then(|p| p.tail.as_ref());
        self.tail
            .iter()
            .chain(prev)
            .map(|t| t.name.as_str())
            .collect()
    }
}

fn stage_dir(id: &str) -> String {
    format!("{STAGE_ROOT}/{id}/")
}

fn staged_key(id: &str) -> String {
    format!("{STAGE_ROOT}/{id}/staged")
}

fn data_key(id: &str) -> String {
    format!("{STAGE_ROOT}/{id}/data")
}

fn tail_key(id: &str, name: &str) -> String {
    format!("{STAGE_ROOT}/{id}/{name}")
}

fn touch_key(key: &str) -> String {
    format!("{TOUCH_ROOT}/{key}")
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

/// Splits `scheme://authority/path` into its parts.
fn split_url(url: &str) -> Result<(&str, &str, &str)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::Unsupported(format!("storage URL without a scheme: {url}")))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((scheme, authority, path.trim_matches('/')))
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

    /// Opens the store a URL names: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` or `memory://`. Credentials and settings come from the usual
    /// environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), then from `options`, whose keys
    /// are `object_store` configuration keys with or without the provider prefix, for example
    /// `endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`,
    /// `virtual_hosted_style_request` (S3), `service_account` (GCS), `account_name`,
    /// `access_key` (Azure).
    pub fn from_url<K, V>(url: &str, options: impl IntoIterator<Item = (K, V)>) -> Result<Self>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let (scheme, authority, prefix) = split_url(url)?;
        let base = format!("{scheme}://{authority}");
        let bad = |e: object_store::Error| Error::backend(format!("object storage {url}"), e);
        let backend = match scheme {
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env()
                    .with_url(base)
                    .with_retry(retry_config());
                for (k, v) in options {
                    let key: AmazonS3ConfigKey =
                        k.as_ref().to_ascii_lowercase().parse().map_err(bad)?;
                    b = b.with_config(key, v);
                }
                Self::new(Arc::new(b.build().map_err(bad)?), "s3")
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_url(base)
                    .with_retry(retry_config());
                for (k, v) in options {
                    let key: GoogleConfigKey =
                        k.as_ref().to_ascii_lowercase().parse().map_err(bad)?;
                    b = b.with_config(key, v);
                }
                Self::new(Arc::new(b.build().map_err(bad)?), "gcs")
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_url(base)
                    .with_retry(retry_config());
                for (k, v) in options {
                    let key: AzureConfigKey =
                        k.as_ref().to_ascii_lowercase().parse().map_err(bad)?;
                    b = b.with_config(key, v);
                }
                Self::new(Arc::new(b.build().map_err(bad)?), "azure")
            }
            "memory" => Self::memory(),
            other => {
                return Err(Error::Unsupported(format!(
                    "storage URL scheme {other}:// (use s3, gs, az or memory)"
                )))
            }
        };
        Ok(backend.with_prefix(prefix))
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

    async fn load_stage(&self, id: &str) -> Result<Option<Stage>> {
        let key = staged_key(id);
        match self.get_bytes(&key).await {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("{key}: {e}"))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn save_stage(&self, id: &str, stage: &Stage) -> Result<()> {
        let raw = serde_json::to_vec(stage).expect("stage serialises");
        self.put_raw(&staged_key(id), Bytes::from(raw)).await
    }

    /// Deletes tail objects of `old` that `new` no longer needs (best effort: `stage_delete`
    /// removes whatever is left).
    async fn drop_tails(&self, id: &str, old: &Stage, new: &Stage) {
        let keep = new.tails();
        for name in old.tails() {
            if !keep.contains(name) {
                if let Err(e) = self.store.delete(&self.path(&tail_key(id, name))).await {
                    tracing::debug!(error = %e, upload = id, "could not delete an old tail");
                }
            }
        }
    }

    /// Completes the multipart upload of `stage` into `uploads/<id>/data` (the tail becomes the
    /// last part) and records it. Returns the size of `data`.
    async fn complete(&self, id: &str, stage: &Stage) -> Result<u64> {
        if let Some(n) = stage.completed {
            return Ok(n);
        }
        let total = stage.len();
        let data = self.path(&data_key(id));
        let upload = stage
            .upload
            .as_ref()
            .ok_or_else(|| Error::Corrupt(format!("upload {id} has parts but no upload id")))?;
        let mut ids: Vec<PartId> = stage
            .parts
            .iter()
            .map(|p| PartId {
                content_id: p.id.clone(),
            })
            .collect();
        let tail = match &stage.tail {
            Some(t) => self.read_prefix(&tail_key(id, &t.name), t.len).await?,
            None => Bytes::new(),
        };
        if !tail.is_empty() || self.empty_final_part {
            let pid = self
                .multipart
                .put_part(&data, upload, ids.len(), PutPayload::from(tail))
                .await
                .map_err(|e| os_err("upload last part of", &data_key(id), e))?;
            ids.push(pid);
        }
        if let Err(e) = self.multipart.complete_multipart(&data, upload, ids).await {
            // A retry after a crash between completing and recording: the object is there.
            match self.store.head(&data).await {
                Ok(m) if m.size == total => {}
                _ => return Err(os_err("complete", &data_key(id), e)),
            }
        }
        let size = self
            .store
            .head(&data)
            .await
            .map_err(|e| os_err("head", &data_key(id), e))?
            .size;
        if size != total {
            return Err(Error::Corrupt(format!(
                "upload {id}: completed object holds {size} bytes, expected {total}"
            )));
        }
        let done = Stage {
            completed: Some(total),
            ..Stage::default()
        };
        self.save_stage(id, &done).await?;
        self.drop_tails(id, stage, &done).await;
        Ok(total)
    }

    /// Publishes the first `len` of the `size` bytes of `uploads/<id>/data` at `key`.
    async fn publish(&self, id: &str, size: u64, len: u64, key: &str) -> Result<()> {
        let src = self.path(&data_key(id));
        let dst = self.path(key);
        if len == size && len <= self.max_copy {
            return self
                .store
                .copy(&src, &dst)
                .await
                .map_err(|e| os_err("copy to", key, e));
        }
        let mut body = self.range_stream(&data_key(id), 0..len).await?;
        let upload = self
            .store
            .put_multipart(&dst)
            .await
            .map_err(|e| os_err("start upload of", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let res: Result<()> =
            async {
                while let Some(chunk) = body.try_next().await.map_err(|e| {
                    Error::backend(format!("object storage: read {}", data_key(id)), e)
                })? {
                    w.wait_for_capacity(CONCURRENCY)
                        .await
                        .map_err(|e| os_err("upload", key, e))?;
                    w.put(chunk);
                }
                Ok(())
            }
            .await;
        match res {
            Ok(()) => w
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| os_err("complete upload of", key, e)),
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }
}

/// Fills parts of exactly `part_size` bytes and uploads each one as it fills.
struct Appender<'a> {
    be: &'a ObjectBackend,
    id: &'a str,
    data: Path,
    upload: Option<String>,
    /// Whether this append created `upload` (to abort it when the append fails).
    created: bool,
    parts: Vec<Part>,
    buf: BytesMut,
}

impl Appender<'_> {
    async fn push(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() {
            let room = self.be.part_size - self.buf.len();
            let take = room.min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.buf.len() == self.be.part_size {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.parts.len() + 1 >= MAX_PARTS {
            return Err(Error::Unsupported(format!(
                "uploads larger than {} bytes (parts of {} bytes)",
                (MAX_PARTS - 1) * self.be.part_size,
                self.be.part_size
            )));
        }
        let part = self.buf.split().freeze();
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let u = self
                    .be
                    .multipart
                    .create_multipart(&self.data)
                    .await
                    .map_err(|e| os_err("start upload of", &data_key(self.id), e))?;
                self.created = true;
                self.upload = Some(u.clone());
                u
            }
        };
        let size = part.len() as u64;
        let pid = self
            .be
            .multipart
            .put_part(
                &self.data,
                &upload,
                self.parts.len(),
                PutPayload::from(part),
            )
            .await
            .map_err(|e| os_err("upload part of", &data_key(self.id), e))?;
        self.parts.push(Part {
            size,
            id: pid.content_id,
        });
        Ok(())
    }

    /// Aborts the multipart upload this append created, after a failure.
    async fn abandon(&self) {
        if let (true, Some(u)) = (self.created, &self.upload) {
            let _ = self.be.multipart.abort_multipart(&self.data, u).await;
        }
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
        let (path, side_path) = (self.path(key), self.path(&touch_key(key)));
        let (obj, side) = futures::join!(self.store.head(&path), self.store.head(&side_path));
        let obj = obj.map_err(|e| os_err("head", key, e))?;
        let mut modified = SystemTime::from(obj.last_modified);
        match side {
            Ok(s) => modified = modified.max(SystemTime::from(s.last_modified)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(os_err("head", &touch_key(key), e)),
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
        self.put_raw(&touch_key(key), Bytes::new()).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let (path, side_path) = (self.path(key), self.path(&touch_key(key)));
        let (a, b) = futures::join!(self.store.delete(&path), self.store.delete(&side_path));
        for (k, r) in [(key.to_owned(), a), (touch_key(key), b)] {
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
        let touch_dir = if dir.is_empty() {
            TOUCH_ROOT.to_owned()
        } else {
            touch_key(dir)
        };
        let (objects, touched) = futures::join!(self.list_raw(dir), self.list_raw(&touch_dir));
        let touched: BTreeMap<String, SystemTime> = touched?
            .into_iter()
            .filter_map(|(k, _, t)| {
                k.strip_prefix(TOUCH_ROOT)
                    .and_then(|k| k.strip_prefix('/'))
                    .map(|k| (k.to_owned(), t))
            })
            .collect();
        let hidden = |k: &str| {
            k.strip_prefix(STAGE_ROOT)
                .or_else(|| k.strip_prefix(TOUCH_ROOT))
                .is_some_and(|rest| rest.starts_with('/'))
        };
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
            .filter(|n| !(dir.is_empty() && n == TOUCH_ROOT))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn stage_append(&self, id: &str, offset: u64, mut data: ByteStream) -> Result<u64> {
        let old = self.load_stage(id).await?.unwrap_or_default();
        let base = old.base_at(id, offset)?;
        let mut app = Appender {
            be: self,
            id,
            data: self.path(&data_key(id)),
            upload: None,
            created: false,
            parts: Vec::new(),
            buf: BytesMut::new(),
        };
        let mut prev = None;
        let mut prefix = None;
        match base {
            Base::Parts { parts, tail } => {
                app.upload = old.upload.clone();
                app.parts = parts;
                if let Some(t) = &tail {
                    let bytes = self.read_prefix(&tail_key(id, &t.name), t.len).await?;
                    app.buf.extend_from_slice(&bytes);
                }
                prev = Some(Snapshot {
                    parts: app.parts.len(),
                    tail,
                });
            }
            // The parts were completed into `data` (by `stage_read`): upload them again.
            Base::Data { len } => prefix = Some(self.range_stream(&data_key(id), 0..len).await?),
        }
        let res: Result<u64> = async {
            if let Some(mut s) = prefix {
                while let Some(chunk) = s.try_next().await.map_err(|e| {
                    Error::backend(format!("object storage: read {}", data_key(id)), e)
                })? {
                    app.push(chunk).await?;
                }
            }
            let mut received = 0u64;
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(Error::Body)?;
                received += chunk.len() as u64;
                app.push(chunk).await?;
            }
            Ok(received)
        }
        .await;
        let received = match res {
            Ok(n) => n,
            Err(e) => {
                app.abandon().await;
                return Err(e);
            }
        };
        if received == 0 && offset == old.len() && old.completed.is_none() {
            return Ok(offset);
        }
        let tail = if app.buf.is_empty() {
            None
        } else {
            let name = format!("tail-{}", uuid::Uuid::new_v4().simple());
            let len = app.buf.len() as u64;
            if let Err(e) = self
                .put_raw(&tail_key(id, &name), app.buf.split().freeze())
                .await
            {
                app.abandon().await;
                return Err(e);
            }
            Some(Tail { name, len })
        };
        let new = Stage {
            upload: app.upload.clone(),
            parts: std::mem::take(&mut app.parts),
            tail,
            prev,
            completed: None,
        };
        if let Err(e) = self.save_stage(id, &new).await {
            app.abandon().await;
            return Err(e);
        }
        self.drop_tails(id, &old, &new).await;
        Ok(offset + received)
    }

    async fn stage_read(&self, id: &str, len: u64) -> Result<ByteStream> {
        let Some(stage) = self.load_stage(id).await? else {
            return if len == 0 {
                Ok(empty_stream())
            } else {
                Err(Error::NotFound(stage_dir(id)))
            };
        };
        if len > stage.len() {
            return Err(Error::Corrupt(format!(
                "upload {id} holds {} bytes, expected {len}",
                stage.len()
            )));
        }
        if stage.completed.is_none() && stage.parts.is_empty() {
            let Some(t) = &stage.tail else {
                return Ok(empty_stream());
            };
            return self.range_stream(&tail_key(id, &t.name), 0..len).await;
        }
        self.complete(id, &stage).await?;
        self.range_stream(&data_key(id), 0..len).await
    }

    async fn stage_commit(&self, id: &str, len: u64, key: &str) -> Result<()> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => {
                // Content-addressed: the same bytes are there already. Refresh them for the GC.
                self.touch(key).await?;
                return self.stage_delete(id).await;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(os_err("head", key, e)),
        }
        match self.load_stage(id).await? {
            None if len == 0 => self.put_raw(key, Bytes::new()).await?,
            None => {
                return Err(Error::Corrupt(format!(
                    "upload {id} has no staged bytes, expected {len}"
                )))
            }
            Some(stage) => {
                let have = stage.len();
                if len > have {
                    return Err(Error::Corrupt(format!(
                        "upload {id} holds {have} bytes, expected {len}"
                    )));
                }
                if stage.completed.is_none() && stage.parts.is_empty() {
                    let bytes = match &stage.tail {
                        Some(t) => self.read_prefix(&tail_key(id, &t.name), len).await?,
                        None => Bytes::new(),
                    };
                    self.put_raw(key, bytes).await?;
                } else {
                    let size = self.complete(id, &stage).await?;
                    self.publish(id, size, len, key).await?;
                }
            }
        }
        self.stage_delete(id).await
    }

    async fn stage_delete(&self, id: &str) -> Result<()> {
        match self.load_stage(id).await {
            Ok(Some(Stage {
                upload: Some(u),
                completed: None,
                ..
            })) => {
                if let Err(e) = self
                    .multipart
                    .abort_multipart(&self.path(&data_key(id)), &u)
                    .await
                {
                    tracing::debug!(error = %e, upload = id, "could not abort a multipart upload");
                }
            }
            Ok(_) => {}
            // Unreadable state must not keep the upload from being removed.
            Err(Error::Corrupt(_)) => {}
            Err(e) => return Err(e),
        }
        let dir = stage_dir(id);
        let keys: Vec<String> = self
            .list_raw(dir.trim_end_matches('/'))
            .await?
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        futures::stream::iter(keys)
            .map(|k| async move {
                match self.store.delete(&self.path(&k)).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(os_err("delete", &k, e)),
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>> {
        let mut ids: BTreeMap<String, SystemTime> = BTreeMap::new();
        for (key, _, modified) in self.list_raw(STAGE_ROOT).await? {
            let Some((id, _)) = key
                .strip_prefix(STAGE_ROOT)
                .and_then(|k| k.strip_prefix('/'))
                .and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let t = ids.entry(id.to_owned()).or_insert(SystemTime::UNIX_EPOCH);
            *t = (*t).max(modified);
        }
        Ok(ids.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(size: u64) -> Part {
        Part {
            size,
            id: String::new(),
        }
    }

    fn tail(name: &str, len: u64) -> Option<Tail> {
        Some(Tail {
            name: name.into(),
            len,
        })
    }

    #[test]
    fn rewinds_within_the_tail_or_to_the_previous_state() {
        let s = Stage {
            upload: Some("u".into()),
            parts: vec![part(10), part(10), part(10)],
            tail: tail("t2", 4),
            prev: Some(Snapshot {
                parts: 1,
                tail: tail("t1", 7),
            }),
            completed: None,
        };
        assert_eq!(s.len(), 34);
        // At the end, and inside the tail.
        assert_eq!(
            s.base_at("x", 34).unwrap(),
            Base::Parts {
                parts: s.parts.clone(),
                tail: tail("t2", 4)
            }
        );
        assert_eq!(
            s.base_at("x", 31).unwrap(),
            Base::Parts {
                parts: s.parts.clone(),
                tail: tail("t2", 1)
            }
        );
        assert_eq!(
            s.base_at("x", 30).unwrap(),
            Base::Parts {
                parts: s.parts.clone(),
                tail: None
            }
        );
        // Back to the state before the last append, or inside its tail.
        assert_eq!(
            s.base_at("x", 17).unwrap(),
            Base::Parts {
                parts: vec![part(10)],
                tail: tail("t1", 7)
            }
        );
        assert_eq!(
            s.base_at("x", 12).unwrap(),
            Base::Parts {
                parts: vec![part(10)],
                tail: tail("t1", 2)
            }
        );
        // Neither: inside a part that is no longer a prefix of any recorded state.
        assert!(matches!(s.base_at("x", 25), Err(Error::Corrupt(_))));
        assert!(matches!(s.base_at("x", 5), Err(Error::Corrupt(_))));
        // Past the end.
        assert!(matches!(s.base_at("x", 35), Err(Error::Corrupt(_))));
        assert_eq!(s.tails(), HashSet::from(["t1", "t2"]));
    }

    #[test]
    fn completed_state_serves_any_prefix() {
        let s = Stage {
            completed: Some(100),
            ..Stage::default()
        };
        assert_eq!(s.base_at("x", 40).unwrap(), Base::Data { len: 40 });
        assert!(s.base_at("x", 101).is_err());
        let raw = serde_json::to_string(&s).unwrap();
        assert_eq!(raw, r#"{"completed":100}"#);
        assert_eq!(serde_json::from_str::<Stage>(&raw).unwrap(), s);
        assert_eq!(
            Stage::default().base_at("x", 0).unwrap(),
            Base::Parts {
                parts: vec![],
                tail: None
            }
        );
    }

    #[test]
    fn url_parts() {
        assert_eq!(split_url("s3://b/p/q/").unwrap(), ("s3", "b", "p/q"));
        assert_eq!(split_url("memory://").unwrap(), ("memory", "", ""));
        assert!(split_url("bucket").is_err());
        assert!(matches!(
            ObjectBackend::from_url("ftp://x", Vec::<(String, String)>::new()),
            Err(Error::Unsupported(_))
        ));
        let b = ObjectBackend::from_url("memory:///a/b/", Vec::<(String, String)>::new()).unwrap();
        assert_eq!(b.prefix(), "a/b/");
        assert_eq!(b.kind(), "memory");
        assert_eq!(b.min_chunk(), MIN_PART as u64);
    }
}
