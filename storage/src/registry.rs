//! The registry service: blobs, upload sessions, manifests, tags, referrers and the catalog, over
//! any [`Backend`]. It speaks in validated domain types and byte streams; HTTP lives elsewhere.
//!
//! All state lives in the backend: an upload's received length and hash state are saved after
//! every append, so a restarted process (or another replica) continues it. Writes are ordered so
//! that what a reader can reach is always whole: blob bytes before the link that exposes them,
//! a manifest's link before its tags and referrer entry.

use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, ByteStream};
use crate::error::{Error, Result};
use crate::hash::{digest_of, Hasher};
use crate::layout;
use crate::manifest::{self, Descriptor};
use crate::types::{Algorithm, Digest, Reference, RepoName, Tag};

/// Behaviour switches of the service.
#[derive(Debug, Clone)]
pub struct Options {
    /// Mount a blob into a repository by digest alone when `from` is absent or lacks it.
    pub auto_mount: bool,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auto_mount: true,
            max_manifest_size: 4 * 1024 * 1024,
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

/// The saved state of an upload session (`uploads/<id>/state`).
#[derive(Debug, Serialize, Deserialize)]
struct UploadState {
    repo: String,
    offset: u64,
    algorithm: String,
    hash_state: String,
    created: u64,
}

/// A repository's link to a manifest revision.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestLink {
    media_type: String,
    size: u64,
}

/// Bytes handed to the hashing thread at once.
const HASH_BATCH: usize = 256 * 1024;

/// The registry service. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Registry {
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

fn upload_id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn paginate(mut names: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    if let Some(last) = last {
        names.retain(|t| t.as_str() > last);
    }
    match n {
        Some(n) if names.len() > n => {
            names.truncate(n);
            Page {
                items: names,
                more: n > 0,
            }
        }
        _ => Page {
            items: names,
            more: false,
        },
    }
}

impl Registry {
    /// A service over `backend`.
    pub fn new(backend: Arc<dyn Backend>, opts: Options) -> Self {
        Registry {
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
    async fn evented<T>(
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

    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.upload_locks.lock().expect("lock poisoned");
        if map.len() > 4096 {
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(id.to_owned()).or_default().clone()
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

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.backend.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
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

    // ---- blobs ----

    /// Size of a blob the repository may serve (a layer, config, or manifest it holds).
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let linked = self.exists(&layout::layer_link(repo, digest)).await?
            || self.exists(&layout::manifest_link(repo, digest)).await?;
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
    /// [`Backend::open_file`]); `None` otherwise, and the caller reads with [`Self::blob_read`].
    pub async fn blob_file(&self, digest: &Digest) -> Result<Option<std::fs::File>> {
        match self.backend.open_file(&layout::blob(digest)).await {
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(digest.clone())),
            other => other,
        }
    }

    /// Removes a blob from a repository (the bytes stay until garbage collection).
    pub async fn blob_delete(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let link = layout::layer_link(repo, digest);
        if !self.exists(&link).await? {
            return Err(Error::BlobUnknown(digest.clone()));
        }
        let event = crate::outbox::Change::BlobDelete { repo, digest };
        self.evented(event, self.backend.delete(&link)).await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
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
            Some(from) => self.exists(&layout::layer_link(from, digest)).await?,
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

    // ---- uploads ----

    async fn load_upload(&self, repo: &RepoName, id: &str) -> Result<UploadState> {
        if !upload_id_ok(id) {
            return Err(Error::UploadUnknown);
        }
        let raw = match self.backend.get_bytes(&layout::upload_state(id)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(Error::UploadUnknown),
            Err(e) => return Err(e),
        };
        let state: UploadState = serde_json::from_slice(&raw)
            .map_err(|e| Error::Corrupt(format!("upload {id} state: {e}")))?;
        if state.repo != repo.as_str() {
            return Err(Error::UploadUnknown);
        }
        Ok(state)
    }

    async fn save_upload(&self, id: &str, state: &UploadState) -> Result<()> {
        let raw = serde_json::to_vec(state).expect("state serialises");
        self.backend
            .put(&layout::upload_state(id), Bytes::from(raw))
            .await
    }

    /// Opens an upload session whose bytes will be hashed with `alg`.
    pub async fn upload_start(&self, repo: &RepoName, alg: Algorithm) -> Result<UploadStatus> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let state = UploadState {
            repo: repo.to_string(),
            offset: 0,
            algorithm: alg.to_string(),
            hash_state: base64::engine::general_purpose::STANDARD.encode(Hasher::new(alg).save()),
            created: now_secs(),
        };
        self.save_upload(&id, &state).await?;
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Where an upload session stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        let state = self.load_upload(repo, id).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: state.offset,
        })
    }

    /// Appends `data` at `offset` of staged upload `id`, hashing it into `hasher`. `start` is the
    /// client's claimed start (checked), `len` its declared length (enforced).
    async fn append(
        &self,
        id: &str,
        offset: u64,
        hasher: Hasher,
        start: Option<u64>,
        len: Option<u64>,
        data: ByteStream,
    ) -> Result<(u64, Hasher)> {
        if let Some(start) = start {
            if start != offset {
                return Err(Error::RangeInvalid { start, offset });
            }
        }
        // Hash on a blocking thread while the backend writes: chunks are reference-counted, so
        // handing them over copies nothing, and hashing overlaps receiving and writing. Chunks go
        // over in batches of about HASH_BATCH bytes, so the hand-off costs little per byte.
        let (htx, mut hrx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(4);
        let hashing = tokio::task::spawn_blocking(move || {
            let mut h = hasher;
            while let Some(batch) = hrx.blocking_recv() {
                for b in &batch {
                    h.update(b);
                }
            }
            h
        });
        let count = Arc::new(AtomicU64::new(0));
        let pending: Arc<Mutex<(Vec<Bytes>, usize)>> = Arc::default();
        let (seen, queued, tx) = (count.clone(), pending.clone(), htx.clone());
        let tapped = data
            .then(move |r| {
                let (seen, queued, tx) = (seen.clone(), queued.clone(), tx.clone());
                async move {
                    let chunk = r?;
                    let n =
                        seen.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
                    if len.is_some_and(|l| n > l) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "body longer than its declared length",
                        ));
                    }
                    let full = {
                        let mut q = queued.lock().expect("hash batch");
                        q.1 += chunk.len();
                        q.0.push(chunk.clone());
                        (q.1 >= HASH_BATCH).then(|| {
                            q.1 = 0;
                            std::mem::take(&mut q.0)
                        })
                    };
                    if let Some(batch) = full {
                        tx.send(batch)
                            .await
                            .map_err(|_| io::Error::other("hashing stopped"))?;
                    }
                    Ok(chunk)
                }
            })
            .boxed();
        // The backend drops the stream, and with it the sender, when it returns.
        let res = match self.backend.stage_append(id, offset, tapped).await {
            // The staged bytes fell short of the saved state (a power cut before the commit's
            // sync): the session cannot continue, so the client starts the upload again.
            Err(Error::Corrupt(why)) => {
                tracing::warn!(upload = id, %why, "dropping an upload whose bytes were lost");
                let _ = self.backend.stage_delete(id).await;
                Err(Error::UploadUnknown)
            }
            other => other,
        };
        let rest = std::mem::take(&mut pending.lock().expect("hash batch").0);
        if !rest.is_empty() {
            let _ = htx.send(rest).await;
        }
        drop(htx);
        let hasher = hashing
            .await
            .map_err(|e| Error::backend("hashing task", e))?;
        let count = count.load(Ordering::Relaxed);
        let over = len.is_some_and(|l| count != l);
        match res {
            Err(Error::Body(_)) if over => Err(Error::SizeInvalid(format!(
                "body is longer than the declared {} bytes",
                len.unwrap_or(0)
            ))),
            Err(e) => Err(e),
            Ok(_) if over => Err(Error::SizeInvalid(format!(
                "received {count} bytes, declared {}",
                len.unwrap_or(0)
            ))),
            Ok(new_len) => Ok((new_len, hasher)),
        }
    }

    /// Appends a chunk to a session. `start` comes from `Content-Range` (None: append at the end),
    /// `len` from the chunk's declared length.
    pub async fn upload_append(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        len: Option<u64>,
        data: ByteStream,
    ) -> Result<UploadStatus> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let mut state = self.load_upload(repo, id).await?;
        let hasher = self.restore_hasher(&state)?;
        let (offset, hasher) = self
            .append(id, state.offset, hasher, start, len, data)
            .await?;
        state.offset = offset;
        state.hash_state = base64::engine::general_purpose::STANDARD.encode(hasher.save());
        self.save_upload(id, &state).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset,
        })
    }

    fn restore_hasher(&self, state: &UploadState) -> Result<Hasher> {
        let alg: Algorithm = state.algorithm.parse()?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&state.hash_state)
            .map_err(|e| Error::Corrupt(format!("upload hash state: {e}")))?;
        Hasher::restore(alg, &raw)
    }

    /// Closes a session: appends the optional final chunk, verifies the whole blob against
    /// `digest`, and publishes it in `repo`. On a mismatch nothing is stored and the session ends.
    pub async fn upload_finish(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        len: Option<u64>,
        data: Option<ByteStream>,
    ) -> Result<u64> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let state = self.load_upload(repo, id).await?;
        let mut hasher = self.restore_hasher(&state)?;
        let mut offset = state.offset;
        if let Some(data) = data {
            (offset, hasher) = self.append(id, offset, hasher, start, len, data).await?;
        }
        self.verify_and_commit(repo, id, digest, offset, hasher)
            .await?;
        Ok(offset)
    }

    async fn verify_and_commit(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        len: u64,
        hasher: Hasher,
    ) -> Result<()> {
        let actual = if hasher.algorithm() == digest.algorithm() {
            hasher.finish()
        } else {
            // The client chose another algorithm than the session's: hash the staged bytes again.
            let mut h = Hasher::new(digest.algorithm());
            let mut s = self.backend.stage_read(id, len).await?;
            while let Some(chunk) = s
                .try_next()
                .await
                .map_err(|e| Error::backend("re-read upload", e))?
            {
                h.update(&chunk);
            }
            h.finish()
        };
        if &actual != digest {
            self.backend.stage_delete(id).await?;
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let _gc = self.gc_lock.read().await;
        let event = crate::outbox::Change::BlobPush {
            repo,
            digest,
            size: len,
        };
        self.evented(event, async {
            self.backend
                .stage_commit(id, len, &layout::blob(digest))
                .await?;
            self.link_blob(repo, digest).await
        })
        .await
    }

    /// A monolithic upload: the whole blob in one body, verified against `digest`.
    pub async fn blob_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        len: Option<u64>,
        data: ByteStream,
    ) -> Result<u64> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let res = async {
            let (offset, hasher) = self
                .append(&id, 0, Hasher::new(digest.algorithm()), None, len, data)
                .await?;
            self.verify_and_commit(repo, &id, digest, offset, hasher)
                .await?;
            Ok(offset)
        }
        .await;
        if res.is_err() {
            let _ = self.backend.stage_delete(&id).await;
        }
        res
    }

    /// Cancels a session and drops its bytes.
    pub async fn upload_cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        self.load_upload(repo, id).await?;
        self.backend.stage_delete(id).await
    }

    /// Removes upload sessions untouched for longer than `age`. Returns how many.
    pub async fn purge_uploads(&self, age: Duration) -> Result<usize> {
        let cutoff = SystemTime::now() - age;
        let mut n = 0;
        for (id, modified) in self.backend.stage_list().await? {
            if modified < cutoff {
                self.backend.stage_delete(&id).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    // ---- manifests ----

    async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => match self.backend.get_bytes(&layout::tag(repo, t)).await {
                Ok(raw) => std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| Error::Corrupt(format!("tag {repo}:{t}"))),
                Err(e) if e.is_not_found() => Err(Error::ManifestUnknown(t.to_string())),
                Err(e) => Err(e),
            },
        }
    }

    async fn manifest_link(&self, repo: &RepoName, digest: &Digest) -> Result<ManifestInfo> {
        let raw = match self
            .backend
            .get_bytes(&layout::manifest_link(repo, digest))
            .await
        {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Err(Error::ManifestUnknown(digest.to_string())),
            Err(e) => return Err(e),
        };
        let link: ManifestLink = serde_json::from_slice(&raw)
            .map_err(|e| Error::Corrupt(format!("manifest link {repo}@{digest}: {e}")))?;
        Ok(ManifestInfo {
            digest: digest.clone(),
            media_type: link.media_type,
            size: link.size,
        })
    }

    /// Metadata of a manifest by tag or digest (for HEAD).
    pub async fn manifest_info(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestInfo> {
        let digest = self.resolve(repo, reference).await?;
        self.manifest_link(repo, &digest).await
    }

    /// A manifest's metadata and exact bytes.
    pub async fn manifest_get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(ManifestInfo, Bytes)> {
        let info = self.manifest_info(repo, reference).await?;
        let bytes = match self.backend.get_bytes(&layout::blob(&info.digest)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(Error::ManifestUnknown(info.digest.to_string()))
            }
            Err(e) => return Err(e),
        };
        Ok((info, bytes))
    }

    /// Refreshes `key`; false when it does not exist.
    async fn refresh(&self, key: &str) -> Result<bool> {
        match self.backend.touch(key).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Checks that a manifest's reference is in the repository by refreshing its link and its
    /// bytes: the refreshed times keep a concurrent garbage collection from removing them (the
    /// caller holds `gc_lock` shared).
    async fn ref_hold(&self, repo: &RepoName, r: &manifest::Ref) -> Result<bool> {
        let (first, second) = if r.from_index {
            (
                layout::manifest_link(repo, &r.digest),
                layout::layer_link(repo, &r.digest),
            )
        } else {
            (
                layout::layer_link(repo, &r.digest),
                layout::manifest_link(repo, &r.digest),
            )
        };
        let linked = self.refresh(&first).await? || self.refresh(&second).await?;
        Ok(linked && self.refresh(&layout::blob(&r.digest)).await?)
    }

    /// Stores a manifest under `reference` (and the extra `tags`), after checking that everything
    /// it references is in the repository.
    pub async fn manifest_put(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        tags: &[Tag],
    ) -> Result<PushedManifest> {
        if body.len() > self.opts.max_manifest_size {
            return Err(Error::ManifestTooLarge {
                size: body.len(),
                limit: self.opts.max_manifest_size,
            });
        }
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = digest_of(d.algorithm(), &body);
                if &actual != d {
                    return Err(Error::DigestMismatch {
                        expected: d.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => digest_of(Algorithm::Sha256, &body),
        };
        let parsed = manifest::parse(&body, content_type)?;
        let _gc = self.gc_lock.read().await;
        let checks = futures::future::try_join_all(
            parsed
                .refs
                .iter()
                .map(|r| async move { Ok::<_, Error>((r, self.ref_hold(repo, r).await?)) }),
        )
        .await?;
        if let Some((missing, _)) = checks.into_iter().find(|(_, ok)| !ok) {
            return Err(Error::ManifestBlobUnknown(missing.digest.clone()));
        }

        let mut all_tags: Vec<&Tag> = tags.iter().collect();
        if let Reference::Tag(t) = reference {
            all_tags.push(t);
        }
        let event = crate::outbox::Change::ManifestPush {
            repo,
            digest: &digest,
            media_type: &parsed.media_type,
            size: body.len() as u64,
            tags: &all_tags,
        };
        self.evented(event, async {
            let blob_key = layout::blob(&digest);
            if !self.refresh(&blob_key).await? {
                self.backend.put(&blob_key, body.clone()).await?;
            }
            let link = ManifestLink {
                media_type: parsed.media_type.clone(),
                size: body.len() as u64,
            };
            self.backend
                .put(
                    &layout::manifest_link(repo, &digest),
                    Bytes::from(serde_json::to_vec(&link).expect("link serialises")),
                )
                .await?;
            if let Some(subject) = &parsed.subject {
                let desc = Descriptor {
                    media_type: parsed.media_type.clone(),
                    digest: digest.clone(),
                    size: body.len() as u64,
                    artifact_type: parsed.artifact_type.clone(),
                    annotations: parsed.annotations.clone(),
                };
                self.backend
                    .put(
                        &layout::referrer(repo, subject, &digest),
                        Bytes::from(serde_json::to_vec(&desc).expect("descriptor serialises")),
                    )
                    .await?;
            }
            for t in &all_tags {
                self.backend
                    .put(&layout::tag(repo, t), Bytes::from(digest.to_string()))
                    .await?;
            }
            self.ensure_catalog(repo).await
        })
        .await?;
        Ok(PushedManifest {
            digest,
            subject: parsed.subject,
        })
    }

    /// Deletes a tag (untag), or a manifest by digest together with its tags and referrer entry.
    pub async fn manifest_delete(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        match reference {
            Reference::Tag(t) => {
                let key = layout::tag(repo, t);
                if !self.exists(&key).await? {
                    return Err(Error::ManifestUnknown(t.to_string()));
                }
                let event = crate::outbox::Change::TagDelete { repo, tag: t };
                self.evented(event, self.backend.delete(&key)).await
            }
            Reference::Digest(d) => {
                let (_, bytes) = self.manifest_get(repo, reference).await?;
                let event = crate::outbox::Change::ManifestDelete { repo, digest: d };
                self.evented(event, async {
                    let target = d.to_string();
                    let tags_dir = layout::tags_dir(repo);
                    for name in self.backend.list_dir(&tags_dir).await? {
                        let key = format!("{tags_dir}{name}");
                        match self.backend.get_bytes(&key).await {
                            Ok(v) if v.as_ref() == target.as_bytes() => {
                                self.backend.delete(&key).await?
                            }
                            Ok(_) => {}
                            Err(e) if e.is_not_found() => {}
                            Err(e) => return Err(e),
                        }
                    }
                    if let Ok(parsed) = manifest::parse(&bytes, None) {
                        if let Some(subject) = parsed.subject {
                            self.backend
                                .delete(&layout::referrer(repo, &subject, d))
                                .await?;
                        }
                    }
                    self.backend.delete(&layout::manifest_link(repo, d)).await
                })
                .await
            }
        }
    }

    // ---- discovery ----

    /// A page of the repository's tags in lexical order, after `last`, at most `n`.
    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let names = self.backend.list_dir(&layout::tags_dir(repo)).await?;
        if names.is_empty() && !self.repo_exists(repo).await? {
            return Err(Error::NameUnknown(repo.to_string()));
        }
        Ok(paginate(names, n, last))
    }

    /// A page of repository names in lexical order.
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let mut names: Vec<String> = self
            .backend
            .list(layout::CATALOG)
            .await?
            .into_iter()
            .filter_map(|m| {
                m.key
                    .strip_prefix(layout::CATALOG)
                    .and_then(|k| k.strip_suffix(layout::CATALOG_MARKER))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        Ok(paginate(names, n, last))
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`, optionally only those of
    /// `artifact_type`, ordered by digest.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let dir = layout::referrers_dir(repo, subject);
        let names = self.backend.list_dir(&dir).await?;
        let descs = futures::stream::iter(names)
            .map(|name| {
                let key = format!("{dir}{name}");
                async move {
                    match self.backend.get_bytes(&key).await {
                        Ok(raw) => serde_json::from_slice::<Descriptor>(&raw)
                            .map(Some)
                            .map_err(|e| Error::Corrupt(format!("referrer {key}: {e}"))),
                        Err(e) if e.is_not_found() => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(descs
            .into_iter()
            .flatten()
            .filter(|d| artifact_type.is_none() || d.artifact_type.as_deref() == artifact_type)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = names(&["a", "b", "c"]);
        assert_eq!(paginate(all.clone(), None, None).items, all);
        let p = paginate(all.clone(), Some(2), None);
        assert_eq!((p.items, p.more), (names(&["a", "b"]), true));
        let p = paginate(all.clone(), Some(2), Some("b"));
        assert_eq!((p.items, p.more), (names(&["c"]), false));
        let p = paginate(all.clone(), Some(0), None);
        assert_eq!((p.items, p.more), (vec![], false));
        let p = paginate(all.clone(), Some(3), None);
        assert!(!p.more);
        assert!(upload_id_ok("abc-DEF_1"));
        assert!(!upload_id_ok("../x"));
        assert!(!upload_id_ok(""));
    }
}

#[cfg(test)]
mod upload_tests {
    use super::*;
    use crate::fs::FsBackend;

    fn body(data: &'static [u8]) -> ByteStream {
        futures::stream::iter(vec![Ok(Bytes::from_static(data))]).boxed()
    }

    #[tokio::test]
    async fn an_upload_whose_bytes_were_lost_is_unknown_not_broken() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(
            Arc::new(FsBackend::new(dir.path(), true).unwrap()),
            Options::default(),
        );
        let repo: RepoName = "r".parse().unwrap();
        let s = reg.upload_start(&repo, Algorithm::Sha256).await.unwrap();
        reg.upload_append(&repo, &s.id, Some(0), Some(6), body(b"hello "))
            .await
            .unwrap();
        // What a power cut before the commit's sync can leave: state ahead of the bytes.
        std::fs::write(dir.path().join(format!("uploads/{}/data", s.id)), b"he").unwrap();
        let e = reg
            .upload_append(&repo, &s.id, Some(6), Some(5), body(b"world"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::UploadUnknown), "{e:?}");
        assert!(matches!(
            reg.upload_status(&repo, &s.id).await,
            Err(Error::UploadUnknown)
        ));
    }
}
