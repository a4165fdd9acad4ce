//! Registry events delivered to HTTP endpoints from the storage outbox
//! ([`storage::outbox`]): at least once, in order per endpoint, with retries and backoff,
//! resuming after a restart and on any replica that shares the storage.
//!
//! Each endpoint has one delivery task per process. Only the process holding the endpoint's lease
//! (an object in storage, renewed every few seconds) sends; the others watch and take over when
//! the lease expires. An event is removed from the outbox only after every endpoint answered
//! 2xx for it (or ignores it). A sweeper task (also under a lease) enforces the outbox limits and
//! tidies what a crash left.
//!
//! Duplicates: a process that dies after the endpoint answered 2xx but before it recorded that
//! resends the event after restart; two replicas racing for a free lease may both send for one
//! renewal period. Receivers drop duplicates by the event's `id`, which never changes.//!
//! # Layout
//! - [`config`]: the `[events]` section and its endpoints.
//! - [`envelope`]: Distribution's event envelope built from an outbox record.
//! - `deliver`: the per-endpoint delivery task (lease, order, retries).
//! - `sweep`: the outbox sweeper (limits, tidying after crashes).
//! - `metrics`: delivery figures for `/metrics`.
//! - `request`: the request details events carry.

pub mod config;
mod deliver;
pub mod envelope;
mod metrics;
mod request;
mod sweep;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use storage::outbox::Outbox;

pub use config::{Endpoint, EventsConfig, Format};
use deliver::Deliverer;
use envelope::Source;
use metrics::bump;
pub use metrics::render_metrics;
pub use request::request_context;

/// How long a delivery lease lasts without renewal.
const LEASE_TTL: Duration = Duration::from_secs(15);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts delivery for every active endpoint and the outbox sweeper. Tasks stop when `stop`
/// turns true (releasing their leases so another replica takes over at once).
pub fn spawn(
    outbox: Arc<Outbox>,
    cfg: &EventsConfig,
    source_addr: String,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let endpoints: Vec<Endpoint> = cfg.active().cloned().collect();
    if endpoints.is_empty() {
        return;
    }
    let names: Arc<Vec<String>> = Arc::new(endpoints.iter().map(|e| e.name.clone()).collect());
    let source = Source {
        addr: source_addr,
        instance: outbox.instance().to_owned(),
    };
    for ep in endpoints {
        bump(&ep.name, |_| {});
        let d = Deliverer {
            outbox: outbox.clone(),
            holder: format!("{}-{}", outbox.instance(), std::process::id()),
            names: names.clone(),
            source: source.clone(),
            client: match reqwest::Client::builder().timeout(ep.timeout).build() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(endpoint = %ep.name, error = %e, "cannot build an HTTP client; events for this endpoint stay in the outbox");
                    continue;
                }
            },
            ep,
            stop: stop.clone(),
        };
        tokio::spawn(d.run());
    }
    tokio::spawn(sweep::sweep(
        outbox,
        names,
        cfg.max_events,
        Duration::from_secs(cfg.max_age),
        stop,
    ));
}

/// Adds an outbox to `registry` when endpoints are configured, so every push and delete records
/// its event first. Returns the outbox for [`start`].
pub fn attach(
    registry: storage::Store,
    config: &crate::Config,
) -> (storage::Store, Option<Arc<Outbox>>) {
    if config.events.active().next().is_none() {
        return (registry, None);
    }
    let outbox = Arc::new(Outbox::new(registry.backend().clone()));
    (registry.with_outbox(outbox.clone()), Some(outbox))
}

/// Starts delivery from `outbox` (if any) until `stop` turns true.
pub fn start(
    outbox: Option<Arc<Outbox>>,
    config: &crate::Config,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(outbox) = outbox else { return };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "registry".into());
    let addr = format!("{host}:{}", config.listen.port());
    tracing::info!(
        endpoints = config.events.active().count(),
        max_events = config.events.max_events,
        max_age_seconds = config.events.max_age,
        "event notifications on (outbox in storage)"
    );
    spawn(outbox, &config.events, addr, stop);
}
