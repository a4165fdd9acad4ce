//! Reading the outbox: listing and loading events, and the verdict on a pending one.

use std::str::FromStr;

use super::keys;
use super::records::{Action, EventRecord, Kind, Verdict};
use super::{now_ms, Outbox, SETTLE};
use crate::error::Result;
use crate::layout;
use crate::types::{Digest, RepoName, Tag};

impl Outbox {
    /// Ids of every stored event, oldest first.
    pub async fn pending(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .backend
            .list_dir(layout::OUTBOX_EVENTS)
            .await?
            .into_iter()
            .filter(|n| keys::id_ok(n))
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
        match self.backend.get_bytes(&layout::outbox_event(id)).await {
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
                if !self
                    .backend
                    .exists(&layout::manifest_link(&repo, &d))
                    .await?
                {
                    false
                } else {
                    let mut all = true;
                    for t in rec.tags.iter().filter_map(|t| Tag::from_str(t).ok()) {
                        all &= self.backend.exists(&layout::tag(&repo, &t)).await?;
                    }
                    all
                }
            }
            (Action::Push, Kind::Blob) => match digest {
                Some(d) => self.backend.exists(&layout::layer_link(&repo, &d)).await?,
                None => false,
            },
            (Action::Push, Kind::Tag) => false,
            (Action::Delete, Kind::Manifest) => match digest {
                Some(d) => {
                    !self
                        .backend
                        .exists(&layout::manifest_link(&repo, &d))
                        .await?
                }
                None => false,
            },
            (Action::Delete, Kind::Blob) => match digest {
                Some(d) => !self.backend.exists(&layout::layer_link(&repo, &d)).await?,
                None => false,
            },
            (Action::Delete, Kind::Tag) => match tag {
                Some(t) => !self.backend.exists(&layout::tag(&repo, &t)).await?,
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
}
