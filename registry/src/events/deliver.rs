//! The per-endpoint delivery task: holds the endpoint's lease, sends pending events in order and
//! records what the endpoint took.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use storage::outbox::{EventRecord, Outbox, Verdict};

use super::envelope::{self, Source};
use super::metrics::{bump, dropped};
use super::{now_ms, Endpoint, LEASE_TTL};

/// How often a lease is renewed while held.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often the outbox is listed for events recorded by other replicas.
const POLL: Duration = Duration::from_secs(1);
/// Events handled per listing.
const BATCH: usize = 256;
/// Wait between retries before `threshold` failures in a row.
const QUICK_RETRY: Duration = Duration::from_millis(200);

pub(super) struct Deliverer {
    pub(super) outbox: Arc<Outbox>,
    pub(super) holder: String,
    pub(super) names: Arc<Vec<String>>,
    pub(super) source: Source,
    pub(super) client: reqwest::Client,
    pub(super) ep: Endpoint,
    pub(super) stop: tokio::sync::watch::Receiver<bool>,
}

/// Why a delivery pass ended early.
enum Pause {
    /// Lost the lease, or shutting down.
    Yield,
    /// An event is not settled yet; look again shortly.
    Wait,
}

impl Deliverer {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn idle(&mut self, d: Duration) {
        let outbox = self.outbox.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = outbox.recorded() => {}
            _ = self.stop.wait_for(|v| *v) => {}
        }
    }

    pub(super) async fn run(mut self) {
        let mut held_since: Option<Instant> = None;
        loop {
            if self.stopping() {
                if held_since.is_some() {
                    let _ = self.outbox.release(&self.ep.name, &self.holder).await;
                }
                return;
            }
            let held = match self
                .outbox
                .lease(&self.ep.name, &self.holder, LEASE_TTL)
                .await
            {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(endpoint = %self.ep.name, error = %e, "event lease: storage error");
                    false
                }
            };
            if held && held_since.is_none() {
                tracing::info!(endpoint = %self.ep.name, "delivering events for this endpoint");
            }
            held_since = held.then(Instant::now);
            let todo = match self.todo().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(endpoint = %self.ep.name, error = %e, "listing the event outbox failed");
                    self.idle(POLL).await;
                    continue;
                }
            };
            if !held || todo.is_empty() {
                self.idle(POLL).await;
                continue;
            }
            match self.pass(&todo, &mut held_since).await {
                Ok(None) => {}
                Ok(Some(Pause::Wait)) => self.idle(Duration::from_millis(300)).await,
                Ok(Some(Pause::Yield)) => {}
                Err(e) => {
                    tracing::warn!(endpoint = %self.ep.name, error = %e, "event delivery: storage error");
                    self.idle(POLL).await;
                }
            }
        }
    }

    /// Events this endpoint has not taken, oldest first; updates the pending figures.
    async fn todo(&self) -> storage::Result<Vec<String>> {
        let ids = self.outbox.pending().await?;
        let done = self.outbox.done_set(&self.ep.name).await?;
        let todo: Vec<String> = ids.into_iter().filter(|i| !done.contains(i)).collect();
        let oldest = todo
            .first()
            .and_then(|i| Outbox::id_time_ms(i))
            .map(|t| now_ms().saturating_sub(t) as f64 / 1000.0)
            .unwrap_or(0.0);
        bump(&self.ep.name, |s| {
            s.pending = todo.len() as u64;
            s.oldest_pending_seconds = oldest;
        });
        Ok(todo)
    }

    /// Renews the lease when due; false when it was lost.
    async fn keep_lease(&self, held_since: &mut Option<Instant>) -> bool {
        match held_since {
            Some(t) if t.elapsed() < RENEW_EVERY => true,
            _ => match self
                .outbox
                .lease(&self.ep.name, &self.holder, LEASE_TTL)
                .await
            {
                Ok(true) => {
                    *held_since = Some(Instant::now());
                    true
                }
                Ok(false) => {
                    tracing::info!(endpoint = %self.ep.name, "another replica delivers for this endpoint now");
                    *held_since = None;
                    false
                }
                Err(e) => {
                    tracing::warn!(endpoint = %self.ep.name, error = %e, "renewing the event lease failed");
                    *held_since = None;
                    false
                }
            },
        }
    }

    async fn pass(
        &mut self,
        todo: &[String],
        held_since: &mut Option<Instant>,
    ) -> storage::Result<Option<Pause>> {
        let mut cache: HashMap<String, EventRecord> = HashMap::new();
        let todo = &todo[..todo.len().min(BATCH)];
        for (i, id) in todo.iter().enumerate() {
            if self.stopping() || !self.keep_lease(held_since).await {
                return Ok(Some(Pause::Yield));
            }
            let rec = match cache.remove(id) {
                Some(r) => r,
                None => match self.outbox.load(id).await? {
                    Some(r) => r,
                    None => continue,
                },
            };
            let mut verdict = self.outbox.verdict(&rec, []).await?;
            if verdict != Verdict::Deliver {
                for later in &todo[i + 1..] {
                    if !cache.contains_key(later) {
                        if let Some(r) = self.outbox.load(later).await? {
                            cache.insert(later.clone(), r);
                        }
                    }
                }
                verdict = self.outbox.verdict(&rec, cache.values()).await?;
            }
            match verdict {
                Verdict::Wait => return Ok(Some(Pause::Wait)),
                Verdict::Void => {
                    tracing::info!(event = %rec.id, repository = %rec.repository, "dropping the event of a change that never completed");
                    dropped("void", 1);
                    self.outbox.remove(&rec.id, &self.names).await?;
                    continue;
                }
                Verdict::Deliver => {}
            }
            let evs: Vec<Value> = envelope::events(&rec, &self.source)
                .into_iter()
                .filter(|e| !envelope::ignored(&self.ep, e))
                .collect();
            if !evs.is_empty() && !self.send(&rec, &evs, held_since).await {
                return Ok(Some(Pause::Yield));
            }
            self.taken(&rec.id).await?;
        }
        Ok(None)
    }

    /// Records that this endpoint took `id`; removes the event once every endpoint has.
    async fn taken(&self, id: &str) -> storage::Result<()> {
        if self.names.len() == 1 {
            return self.outbox.remove(id, &self.names).await;
        }
        self.outbox.mark_done(&self.ep.name, id).await?;
        for other in self.names.iter() {
            if !self.outbox.done_set(other).await?.contains(id) {
                return Ok(());
            }
        }
        self.outbox.remove(id, &self.names).await
    }

    /// Sends until the endpoint answers 2xx. False when the lease was lost or the process is
    /// stopping first (the event stays pending).
    async fn send(
        &mut self,
        rec: &EventRecord,
        evs: &[Value],
        held_since: &mut Option<Instant>,
    ) -> bool {
        let (ctype, body) = envelope::body(&self.ep, evs);
        let mut failures = 0u32;
        loop {
            let mut req = self
                .client
                .post(&self.ep.url)
                .header(http::header::CONTENT_TYPE, ctype)
                .body(body.clone());
            for (k, vs) in &self.ep.headers {
                for v in vs {
                    req = req.header(k.as_str(), v.as_str());
                }
            }
            let outcome = match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => {
                    bump(&self.ep.name, |s| s.delivered += evs.len() as u64);
                    tracing::debug!(endpoint = %self.ep.name, event = %rec.id, "event delivered");
                    return true;
                }
                Err(why) => {
                    failures += 1;
                    bump(&self.ep.name, |s| s.failed += 1);
                    let wait = if failures >= self.ep.threshold.max(1) {
                        self.ep.backoff.max(QUICK_RETRY)
                    } else {
                        QUICK_RETRY
                    };
                    if failures == 1 || failures % 20 == 0 {
                        tracing::warn!(endpoint = %self.ep.name, event = %rec.id, attempts = failures, error = %why, "event delivery failed; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.wait_for(|v| *v) => return false,
                    }
                    if !self.keep_lease(held_since).await {
                        return false;
                    }
                }
            }
        }
    }
}
