//! Recording events: one `put` before the change, and settling the record after it.

use crate::layout;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::records::{Action, Change, EventRecord, Kind, REQUEST};
use super::{now_ms, Outbox};
use crate::error::Result;
use crate::types::{Digest, RepoName, Tag};

impl Outbox {
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
            .put(&layout::outbox_event(&id), Bytes::from(raw))
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
        self.deleted(Kind::Manifest, repo, digest).await
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
        self.deleted(Kind::Blob, repo, digest).await
    }

    /// Records the delete of a `kind` object by digest before it happens.
    async fn deleted(&self, kind: Kind, repo: &RepoName, digest: &Digest) -> Result<String> {
        self.record(
            Action::Delete,
            kind,
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
                if let Err(e) = self.backend.delete(&layout::outbox_event(&id)).await {
                    tracing::warn!(event = %id, error = %e, "could not remove the event of a failed change; it will be found void");
                }
            }
        }
    }
}
