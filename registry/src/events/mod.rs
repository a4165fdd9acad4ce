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
//! renewal period. Receivers drop duplicates by the event's `id`, which never changes.

pub mod config;
pub mod envelope;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use storage::outbox::{EventRecord, Outbox, RequestInfo, Verdict, REQUEST};

pub use config::{Endpoint, EventsConfig, Format};
use envelope::Source;

/// How long a delivery lease lasts without renewal.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a lease is renewed while held.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often the outbox is listed for events recorded by other replicas.
const POLL: Duration = Duration::from_secs(1);
/// Events handled per listing.
const BATCH: usize = 256;
/// Wait between retries before `threshold` failures in a row.
const QUICK_RETRY: Duration = Duration::from_millis(200);

/// Per-endpoint delivery figures, for `/metrics`.
#[derive(Debug, Default, Clone)]
struct EndpointStats {
    delivered: u64,
    failed: u64,
    pending: u64,
    oldest_pending_seconds: f64,
}

#[derive(Debug, Default)]
struct Stats {
    endpoints: BTreeMap<String, EndpointStats>,
    dropped: BTreeMap<&'static str, u64>,
}

static STATS: Mutex<Stats> = Mutex::new(Stats {
    endpoints: BTreeMap::new(),
    dropped: BTreeMap::new(),
});

fn stats<R>(f: impl FnOnce(&mut Stats) -> R) -> R {
    f(&mut STATS.lock().expect("events stats lock"))
}

fn bump(endpoint: &str, f: impl FnOnce(&mut EndpointStats)) {
    stats(|s| f(s.endpoints.entry(endpoint.to_owned()).or_default()));
}

/// Counts events dropped from the outbox, by reason (`max_events`, `max_age`, `void`).
fn dropped(reason: &'static str, n: u64) {
    stats(|s| *s.dropped.entry(reason).or_default() += n);
}

/// The event metrics in Prometheus text format (appended to `/metrics`).
pub fn render_metrics() -> String {
    use std::fmt::Write as _;
    let s = STATS.lock().expect("events stats lock");
    let mut out = String::new();
    if s.endpoints.is_empty() && s.dropped.is_empty() {
        return out;
    }
    let metric = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    metric(
        &mut out,
        "registry_events_delivered_total",
        "counter",
        "Events an endpoint answered 2xx for.",
    );
    for (ep, e) in &s.endpoints {
        let _ = writeln!(
            out,
            "registry_events_delivered_total{{endpoint=\"{}\"}} {}",
            esc(ep),
            e.delivered
        );
    }
    metric(
        &mut out,
        "registry_events_failed_total",
        "counter",
        "Delivery attempts that failed (error, timeout or non-2xx); each is retried.",
    );
    for (ep, e) in &s.endpoints {
        let _ = writeln!(
            out,
            "registry_events_failed_total{{endpoint=\"{}\"}} {}",
            esc(ep),
            e.failed
        );
    }
    metric(
        &mut out,
        "registry_events_pending",
        "gauge",
        "Events in the outbox the endpoint has not taken yet.",
    );
    for (ep, e) in &s.endpoints {
        let _ = writeln!(
            out,
            "registry_events_pending{{endpoint=\"{}\"}} {}",
            esc(ep),
            e.pending
        );
    }
    metric(
        &mut out,
        "registry_events_oldest_pending_seconds",
        "gauge",
        "Age of the oldest event the endpoint has not taken yet (0 when none).",
    );
    for (ep, e) in &s.endpoints {
        let _ = writeln!(
            out,
            "registry_events_oldest_pending_seconds{{endpoint=\"{}\"}} {:.3}",
            esc(ep),
            e.oldest_pending_seconds
        );
    }
    metric(
        &mut out,
        "registry_events_dropped_total",
        "counter",
        "Events removed from the outbox undelivered: over max_events, older than max_age, or void (their change never completed).",
    );
    for reason in ["max_events", "max_age", "void"] {
        let _ = writeln!(
            out,
            "registry_events_dropped_total{{reason=\"{reason}\"}} {}",
            s.dropped.get(reason).copied().unwrap_or(0)
        );
    }
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Axum middleware: runs the request with its details visible to the outbox, so events carry
/// Distribution's `request` block.
pub async fn request_context(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let info = request_info(&req);
    REQUEST.scope(info, next.run(req)).await
}

fn request_info(req: &axum::extract::Request) -> RequestInfo {
    let h = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let addr = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    RequestInfo {
        id: req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(uuid_like),
        addr,
        host: h(http::header::HOST),
        method: req.method().to_string(),
        useragent: h(http::header::USER_AGENT),
        actor: String::new(),
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}-{:x}",
        now_ms(),
        N.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff
    )
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
    tokio::spawn(sweep(
        outbox,
        names,
        cfg.max_events,
        Duration::from_secs(cfg.max_age),
        stop,
    ));
}

struct Deliverer {
    outbox: Arc<Outbox>,
    holder: String,
    names: Arc<Vec<String>>,
    source: Source,
    client: reqwest::Client,
    ep: Endpoint,
    stop: tokio::sync::watch::Receiver<bool>,
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

    async fn run(mut self) {
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

/// Enforces the outbox limits and removes events every endpoint took, under its own lease.
async fn sweep(
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
