//! Per-endpoint done markers, and removing events with their markers.

use crate::layout;
use std::collections::HashSet;

use bytes::Bytes;

use super::Outbox;
use crate::error::Result;

impl Outbox {
    /// Ids endpoint `endpoint` has taken.
    pub async fn done_set(&self, endpoint: &str) -> Result<HashSet<String>> {
        Ok(self
            .backend
            .list_dir(&layout::outbox_done_dir(endpoint))
            .await?
            .into_iter()
            .collect())
    }

    /// Marks event `id` taken by `endpoint`.
    pub async fn mark_done(&self, endpoint: &str, id: &str) -> Result<()> {
        self.backend
            .put(&layout::outbox_done(endpoint, id), Bytes::new())
            .await
    }

    /// Removes event `id` and the done markers of `endpoints` for it.
    pub async fn remove(&self, id: &str, endpoints: &[String]) -> Result<()> {
        self.backend.delete(&layout::outbox_event(id)).await?;
        for ep in endpoints {
            self.backend.delete(&layout::outbox_done(ep, id)).await?;
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
                    .delete(&layout::outbox_done(endpoint, &id))
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
