//! Leases in storage: which process delivers for an endpoint (or runs the sweeper).

use crate::layout;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{now_ms, Outbox};
use crate::error::Result;

/// A lease held in storage.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    holder: String,
    expires_ms: u64,
}

impl Outbox {
    /// Takes or renews the lease `name` for `ttl` as `holder`. Returns whether `holder` holds it.
    ///
    /// Backends have no compare-and-swap, so two processes racing for a free lease can both
    /// believe they won until the next renewal (each renewal re-reads the holder first, and the
    /// loser steps back). Events carry stable ids, so the overlap at worst delivers an event
    /// twice with the same id.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let key = layout::outbox_lease(name);
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
        let key = layout::outbox_lease(name);
        if let Ok(raw) = self.backend.get_bytes(&key).await {
            if serde_json::from_slice::<Lease>(&raw).is_ok_and(|l| l.holder == holder) {
                self.backend.delete(&key).await?;
            }
        }
        Ok(())
    }
}
