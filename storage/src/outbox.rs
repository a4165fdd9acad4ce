//! The event outbox: registry events (push, delete) kept in the storage backend until every
//! notification endpoint has taken them, so they survive restarts and are seen by every replica
//! that shares the storage.
//!
//! # Keys
//! ```text
//! outbox/events/<id>              one event record (JSON), written before the change it describes
//! outbox/done/<endpoint>/<id>     endpoint <endpoint> answered 2xx for event <id>
//! outbox/leases/<name>            which process delivers for endpoint <name> (JSON, with expiry)
//! ```
//!
//! # Never lost, never false
//! A writer stores the record with one `put` *before* the first write that makes its change
//! visible (the manifest link, the layer link, the tag), and removes it again if the change then
//! fails. A crash between the two leaves a record whose change never happened. So a deliverer
//! first asks [`Outbox::verdict`]: the record is delivered when its change is visible in storage
//! (the manifest link exists for a push, the tag is gone for a tag delete, ...) or when a later
//! record about the same repository and object exists (the object was pushed and then deleted
//! again, or the tag moved on); a record that is neither and is older than [`SETTLE`] describes
//! a change that never completed and is dropped ("void"). A record younger than that may belong
//! to a request still running, and waits.
//!
//! Ids sort by creation time (milliseconds, then a per-process sequence, then a per-process
//! random instance id), so listing `outbox/events/` gives the delivery order.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::Result;
use crate::layout;
use crate::types::{Digest, RepoName, Tag};

/// How long a record whose change is not visible may belong to a request still in flight.
pub const SETTLE: Duration = Duration::from_secs(30);

const EVENTS: &str = "outbox/events/";
const DONE: &str = "outbox/done/";
const LEASES: &str = "outbox/leases/";

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
pub struct RequestInfo {
    /// Request id.
    #[serde(default)]
    pub id: String,
    /// Client address.
    #[serde(default)]
    pub addr: String,
    /// `Host` the client asked for.
    #[serde(default)]
    pub host: String,
    /// HTTP method.
    #[serde(default)]
    pub method: String,
    /// `User-Agent`.
    #[serde(default)]
    pub useragent: String,
    /// Authenticated identity, when access control knows one.
    #[serde(default)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Media type (manifests: as pushed; blobs: `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Tags set by a push, or the tag deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The request, when recorded inside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// A lease held in storage.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    holder: String,
    expires_ms: u64,
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

/// The outbox over a backend. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Outbox {
    backend: Arc<dyn Backend>,
    instance: String,
    seq: AtomicU64,
    notify: tokio::sync::Notify,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An endpoint name made safe for a key (same name, same key).
pub fn endpoint_key(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        s.push('_');
    }
    s
}

impl Outbox {
    /// An outbox over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Outbox {
            backend,
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            seq: AtomicU64::new(0),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// This process's instance id (part of every event id it records).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Wakes when this process records an event (other replicas' events are found by polling).
    pub async fn recorded(&self) {
        self.notify.notified().await
    }

    fn new_id(&self) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        format!("{:015}-{seq:06}-{}", now_ms(), self.instance)
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        action: Action,
        kind: Kind,
        repo: &RepoName,
        digest: Option<&Digest>,
        media_type: Option<&str>,
        size: Option<u64>,
        tags: Vec<String>,
    ) -> Result<String> {
        let id = self.new_id();
        let rec = EventRecord {
            id: id.clone(),
            time_ms: now_ms(),
            action,
            kind,
            repository: repo.to_string(),
            digest: digest.map(|d| d.to_string()),
            media_type: media_type.map(str::to_owned),
            size,
            tags,
            request: REQUEST.try_with(|r| r.clone()).ok(),
            instance: self.instance.clone(),
        };
        let raw = serde_json::to_vec(&rec).expect("record serialises");
        self.backend
            .put(&format!("{EVENTS}{id}"), Bytes::from(raw))
            .await?;
        Ok(id)
    }

    /// Records a manifest push (with the tags it sets) before it is made visible.
    pub async fn manifest_pushed(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        size: u64,
        tags: &[&Tag],
    ) -> Result<String> {
        let tags = tags.iter().map(|t| t.to_string()).collect();
        self.record(
            Action::Push,
            Kind::Manifest,
            repo,
            Some(digest),
            Some(media_type),
            Some(size),
            tags,
        )
        .await
    }

    /// Records a blob push or mount into `repo` before its layer link is written.
    pub async fn blob_pushed(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<String> {
        self.record(
            Action::Push,
            Kind::Blob,
            repo,
            Some(digest),
            Some("application/octet-stream"),
            Some(size),
            Vec::new(),
        )
        .await
    }

    /// Records the delete of a manifest by digest before it happens.
    pub async fn manifest_deleted(&self, repo: &RepoName, digest: &Digest) -> Result<String> {
        self.record(
            Action::Delete,
            Kind::Manifest,
            repo,
            Some(digest),
            None,
            None,
            Vec::new(),
        )
        .await
    }

    /// Records the delete of a tag before it happens.
    pub async fn tag_deleted(&self, repo: &RepoName, tag: &Tag) -> Result<String> {
        self.record(
            Action::Delete,
            Kind::Tag,
            repo,
            None,
            None,
            None,
            vec![tag.to_string()],
        )
        .await
    }

    /// Records the delete of a blob from a repository before it happens.
    pub async fn blob_deleted(&self, repo: &RepoName, digest: &Digest) -> Result<String> {
        self.record(
            Action::Delete,
            Kind::Blob,
            repo,
            Some(digest),
            None,
            None,
            Vec::new(),
        )
        .await
    }

    /// Records `change` (one small `put`) before it is made; returns the event id.
    pub async fn record_change(&self, change: Change<'_>) -> Result<String> {
        match change {
            Change::ManifestPush {
                repo,
                digest,
                media_type,
                size,
                tags,
            } => {
                self.manifest_pushed(repo, digest, media_type, size, tags)
                    .await
            }
            Change::BlobPush { repo, digest, size } => self.blob_pushed(repo, digest, size).await,
            Change::ManifestDelete { repo, digest } => self.manifest_deleted(repo, digest).await,
            Change::TagDelete { repo, tag } => self.tag_deleted(repo, tag).await,
            Change::BlobDelete { repo, digest } => self.blob_deleted(repo, digest).await,
        }
    }

    /// After the change an event was recorded for: on success wakes the local deliverers; on
    /// failure removes the record (best effort: a record left behind is found void later).
    pub async fn settle<T>(&self, id: String, res: &Result<T>) {
        match res {
            Ok(_) => self.notify.notify_waiters(),
            Err(_) => {
                if let Err(e) = self.backend.delete(&format!("{EVENTS}{id}")).await {
                    tracing::warn!(event = %id, error = %e, "could not remove the event of a failed change; it will be found void");
                }
            }
        }
    }

    /// Ids of every stored event, oldest first.
    pub async fn pending(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .backend
            .list_dir(EVENTS)
            .await?
            .into_iter()
            .filter(|n| id_ok(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Milliseconds since the epoch at which event `id` was recorded (from its id).
    pub fn id_time_ms(id: &str) -> Option<u64> {
        id.split('-').next()?.parse().ok()
    }

    /// One stored event, `None` when it is gone (or unreadable: logged and treated as gone).
    pub async fn load(&self, id: &str) -> Result<Option<EventRecord>> {
        match self.backend.get_bytes(&format!("{EVENTS}{id}")).await {
            Ok(raw) => match serde_json::from_slice(&raw) {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    tracing::warn!(event = %id, error = %e, "unreadable event record; skipped");
                    Ok(None)
                }
            },
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.backend.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `rec`'s change is visible in storage now.
    async fn visible(&self, rec: &EventRecord) -> Result<bool> {
        let Ok(repo) = RepoName::from_str(&rec.repository) else {
            return Ok(false);
        };
        let digest = rec.digest.as_deref().and_then(|d| Digest::from_str(d).ok());
        let tag = rec.tags.first().and_then(|t| Tag::from_str(t).ok());
        Ok(match (rec.action, rec.kind) {
            (Action::Push, Kind::Manifest) => {
                let Some(d) = digest else { return Ok(false) };
                if !self.exists(&layout::manifest_link(&repo, &d)).await? {
                    false
                } else {
                    let mut all = true;
                    for t in rec.tags.iter().filter_map(|t| Tag::from_str(t).ok()) {
                        all &= self.exists(&layout::tag(&repo, &t)).await?;
                    }
                    all
                }
            }
            (Action::Push, Kind::Blob) => match digest {
                Some(d) => self.exists(&layout::layer_link(&repo, &d)).await?,
                None => false,
            },
            (Action::Push, Kind::Tag) => false,
            (Action::Delete, Kind::Manifest) => match digest {
                Some(d) => !self.exists(&layout::manifest_link(&repo, &d)).await?,
                None => false,
            },
            (Action::Delete, Kind::Blob) => match digest {
                Some(d) => !self.exists(&layout::layer_link(&repo, &d)).await?,
                None => false,
            },
            (Action::Delete, Kind::Tag) => match tag {
                Some(t) => !self.exists(&layout::tag(&repo, &t)).await?,
                None => false,
            },
        })
    }

    /// Whether `rec` should be delivered, waited on or dropped; `later` are records stored
    /// after it (any subset the caller has at hand; more of them only helps).
    pub async fn verdict<'a>(
        &self,
        rec: &EventRecord,
        later: impl IntoIterator<Item = &'a EventRecord>,
    ) -> Result<Verdict> {
        if self.visible(rec).await? {
            return Ok(Verdict::Deliver);
        }
        let superseded = later.into_iter().any(|l| {
            l.id > rec.id
                && l.repository == rec.repository
                && ((rec.digest.is_some() && l.digest == rec.digest)
                    || rec.tags.iter().any(|t| l.tags.contains(t)))
        });
        if superseded {
            return Ok(Verdict::Deliver);
        }
        let age = now_ms().saturating_sub(rec.time_ms);
        if age < SETTLE.as_millis() as u64 {
            Ok(Verdict::Wait)
        } else {
            Ok(Verdict::Void)
        }
    }

    /// Ids endpoint `endpoint` has taken.
    pub async fn done_set(&self, endpoint: &str) -> Result<HashSet<String>> {
        Ok(self
            .backend
            .list_dir(&format!("{DONE}{}/", endpoint_key(endpoint)))
            .await?
            .into_iter()
            .collect())
    }

    /// Marks event `id` taken by `endpoint`.
    pub async fn mark_done(&self, endpoint: &str, id: &str) -> Result<()> {
        self.backend
            .put(
                &format!("{DONE}{}/{id}", endpoint_key(endpoint)),
                Bytes::new(),
            )
            .await
    }

    /// Removes event `id` and the done markers of `endpoints` for it.
    pub async fn remove(&self, id: &str, endpoints: &[String]) -> Result<()> {
        self.backend.delete(&format!("{EVENTS}{id}")).await?;
        for ep in endpoints {
            self.backend
                .delete(&format!("{DONE}{}/{id}", endpoint_key(ep)))
                .await?;
        }
        Ok(())
    }

    /// Removes done markers of `endpoint` whose event is gone (left by a crash between removing
    /// an event and its markers). `live` is the current set of event ids.
    pub async fn prune_done(&self, endpoint: &str, live: &HashSet<String>) -> Result<usize> {
        let mut n = 0;
        for id in self.done_set(endpoint).await? {
            if !live.contains(&id) {
                self.backend
                    .delete(&format!("{DONE}{}/{id}", endpoint_key(endpoint)))
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Takes or renews the lease `name` for `ttl` as `holder`. Returns whether `holder` holds it.
    ///
    /// Backends have no compare-and-swap, so two processes racing for a free lease can both
    /// believe they won until the next renewal (each renewal re-reads the holder first, and the
    /// loser steps back). Events carry stable ids, so the overlap at worst delivers an event
    /// twice with the same id.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let key = format!("{LEASES}{}", endpoint_key(name));
        let now = now_ms();
        let current: Option<Lease> = match self.backend.get_bytes(&key).await {
            Ok(raw) => serde_json::from_slice(&raw).ok(),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        if let Some(l) = &current {
            if l.holder != holder && l.expires_ms > now {
                return Ok(false);
            }
        }
        let mine = Lease {
            holder: holder.to_owned(),
            expires_ms: now + ttl.as_millis() as u64,
        };
        self.backend
            .put(
                &key,
                Bytes::from(serde_json::to_vec(&mine).expect("lease serialises")),
            )
            .await?;
        if current.is_none_or(|l| l.holder != holder) {
            // A fresh take: let a racing writer land, then see who won.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let raw = self.backend.get_bytes(&key).await?;
            let now_held: Option<Lease> = serde_json::from_slice(&raw).ok();
            return Ok(now_held.is_some_and(|l| l.holder == holder));
        }
        Ok(true)
    }

    /// Releases lease `name` if `holder` holds it (at shutdown, so another replica takes over
    /// without waiting for the expiry).
    pub async fn release(&self, name: &str, holder: &str) -> Result<()> {
        let key = format!("{LEASES}{}", endpoint_key(name));
        if let Ok(raw) = self.backend.get_bytes(&key).await {
            if serde_json::from_slice::<Lease>(&raw).is_ok_and(|l| l.holder == holder) {
                self.backend.delete(&key).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::FsBackend;

    fn outbox() -> (tempfile::TempDir, Arc<dyn Backend>, Outbox) {
        let dir = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(FsBackend::new(dir.path(), false).unwrap());
        let o = Outbox::new(b.clone());
        (dir, b, o)
    }

    #[tokio::test]
    async fn ids_sort_in_recording_order_and_records_round_trip() {
        let (_d, _b, o) = outbox();
        let repo = RepoName::from_str("a/b").unwrap();
        let d = Digest::from_str(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(o.blob_pushed(&repo, &d, 3).await.unwrap());
        }
        assert_eq!(o.pending().await.unwrap(), ids);
        let rec = o.load(&ids[2]).await.unwrap().unwrap();
        assert_eq!(rec.id, ids[2]);
        assert_eq!(rec.size, Some(3));
        assert_eq!(rec.action, Action::Push);
    }

    #[tokio::test]
    async fn a_push_that_never_became_visible_waits_then_is_void_and_a_visible_one_delivers() {
        let (_d, b, o) = outbox();
        let repo = RepoName::from_str("a").unwrap();
        let d = Digest::from_str(&format!("sha256:{}", "1".repeat(64))).unwrap();
        let id = o.blob_pushed(&repo, &d, 1).await.unwrap();
        let mut rec = o.load(&id).await.unwrap().unwrap();
        assert_eq!(o.verdict(&rec, []).await.unwrap(), Verdict::Wait);
        rec.time_ms -= SETTLE.as_millis() as u64 + 1;
        assert_eq!(o.verdict(&rec, []).await.unwrap(), Verdict::Void);
        b.put(&layout::layer_link(&repo, &d), Bytes::from("x"))
            .await
            .unwrap();
        assert_eq!(o.verdict(&rec, []).await.unwrap(), Verdict::Deliver);
    }

    #[tokio::test]
    async fn a_push_deleted_since_is_delivered_because_the_delete_follows_it() {
        let (_d, _b, o) = outbox();
        let repo = RepoName::from_str("a").unwrap();
        let d = Digest::from_str(&format!("sha256:{}", "2".repeat(64))).unwrap();
        let t = Tag::from_str("v1").unwrap();
        let p = o
            .manifest_pushed(
                &repo,
                &d,
                "application/vnd.oci.image.manifest.v1+json",
                9,
                &[&t],
            )
            .await
            .unwrap();
        let del = o.manifest_deleted(&repo, &d).await.unwrap();
        let p = o.load(&p).await.unwrap().unwrap();
        let del = o.load(&del).await.unwrap().unwrap();
        assert_eq!(o.verdict(&p, [&del]).await.unwrap(), Verdict::Deliver);
        assert_eq!(o.verdict(&del, []).await.unwrap(), Verdict::Deliver);
    }

    #[tokio::test]
    async fn a_lease_is_exclusive_until_it_expires_or_is_released() {
        let (_d, _b, o) = outbox();
        let ttl = Duration::from_secs(60);
        assert!(o.lease("ep", "a", ttl).await.unwrap());
        assert!(!o.lease("ep", "b", ttl).await.unwrap());
        assert!(o.lease("ep", "a", ttl).await.unwrap());
        o.release("ep", "a").await.unwrap();
        assert!(o.lease("ep", "b", ttl).await.unwrap());
        assert!(o.lease("ep2", "a", Duration::ZERO).await.unwrap());
        assert!(o.lease("ep2", "b", ttl).await.unwrap());
    }
}
