//! The outbox sweeper: enforces `max_events` and `max_age` and removes events every endpoint
//! took, under a lease of its own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use storage::outbox::Outbox;

use super::metrics::dropped;
use super::{now_ms, LEASE_TTL};

/// Enforces the outbox limits and removes events every endpoint took, under its own lease.
pub(super) async fn sweep(
    outbox: Arc<Outbox>,
    names: Arc<Vec<String>>,
    max_events: usize,
    max_age: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let holder = format!("{}-{}", outbox.instance(), std::process::id());
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => false,
            _ = stop.wait_for(|v| *v) => true,
        };
        if stopping {
            let _ = outbox.release("_sweeper", &holder).await;
            return;
        }
        match outbox.lease("_sweeper", &holder, LEASE_TTL).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "outbox sweeper: storage error");
                continue;
            }
        }
        if let Err(e) = sweep_once(&outbox, &names, max_events, max_age).await {
            tracing::warn!(error = %e, "outbox sweeper: storage error");
        }
    }
}

async fn sweep_once(
    outbox: &Outbox,
    names: &[String],
    max_events: usize,
    max_age: Duration,
) -> storage::Result<()> {
    let ids = outbox.pending().await?;
    let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
    let too_old: Vec<&String> = ids
        .iter()
        .filter(|i| Outbox::id_time_ms(i).is_some_and(|t| t < cutoff))
        .collect();
    for id in &too_old {
        outbox.remove(id, names).await?;
    }
    if !too_old.is_empty() {
        dropped("max_age", too_old.len() as u64);
        tracing::warn!(
            dropped = too_old.len(),
            max_age_seconds = max_age.as_secs(),
            "outbox: dropped undelivered events older than max_age"
        );
    }
    let left = &ids[too_old.len()..];
    if left.len() > max_events {
        let over = &left[..left.len() - max_events];
        for id in over {
            outbox.remove(id, names).await?;
        }
        dropped("max_events", over.len() as u64);
        tracing::warn!(
            dropped = over.len(),
            max_events,
            "outbox full: dropped the oldest undelivered events"
        );
    }
    let live: HashSet<String> = outbox.pending().await?.into_iter().collect();
    let mut done_by_all: Option<HashSet<String>> = None;
    for n in names {
        outbox.prune_done(n, &live).await?;
        let d = outbox.done_set(n).await?;
        done_by_all = Some(match done_by_all {
            None => d,
            Some(acc) => acc.intersection(&d).cloned().collect(),
        });
    }
    if names.len() > 1 {
        for id in done_by_all.unwrap_or_default() {
            outbox.remove(&id, names).await?;
        }
    }
    Ok(())
}
