//! Per-endpoint delivery figures and dropped-event counts, rendered for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Per-endpoint delivery figures, for `/metrics`.
#[derive(Debug, Default, Clone)]
pub(super) struct EndpointStats {
    pub(super) delivered: u64,
    pub(super) failed: u64,
    pub(super) pending: u64,
    pub(super) oldest_pending_seconds: f64,
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

pub(super) fn bump(endpoint: &str, f: impl FnOnce(&mut EndpointStats)) {
    stats(|s| f(s.endpoints.entry(endpoint.to_owned()).or_default()));
}

/// Counts events dropped from the outbox, by reason (`max_events`, `max_age`, `void`).
pub(super) fn dropped(reason: &'static str, n: u64) {
    stats(|s| *s.dropped.entry(reason).or_default() += n);
}

/// Writes the `# HELP` and `# TYPE` lines of metric `name`.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Writes one per-endpoint metric: its header, then one line per endpoint with `value`.
fn per_endpoint(
    out: &mut String,
    s: &Stats,
    (name, kind, help): (&str, &str, &str),
    value: impl Fn(&EndpointStats) -> String,
) {
    header(out, name, kind, help);
    for (ep, e) in &s.endpoints {
        let _ = writeln!(out, "{name}{{endpoint=\"{}\"}} {}", esc(ep), value(e));
    }
}

/// The event metrics in Prometheus text format (appended to `/metrics`).
pub fn render_metrics() -> String {
    let s = STATS.lock().expect("events stats lock");
    let mut out = String::new();
    if s.endpoints.is_empty() && s.dropped.is_empty() {
        return out;
    }
    per_endpoint(
        &mut out,
        &s,
        (
            "registry_events_delivered_total",
            "counter",
            "Events an endpoint answered 2xx for.",
        ),
        |e| e.delivered.to_string(),
    );
    per_endpoint(
        &mut out,
        &s,
        (
            "registry_events_failed_total",
            "counter",
            "Delivery attempts that failed (error, timeout or non-2xx); each is retried.",
        ),
        |e| e.failed.to_string(),
    );
    per_endpoint(
        &mut out,
        &s,
        (
            "registry_events_pending",
            "gauge",
            "Events in the outbox the endpoint has not taken yet.",
        ),
        |e| e.pending.to_string(),
    );
    per_endpoint(
        &mut out,
        &s,
        (
            "registry_events_oldest_pending_seconds",
            "gauge",
            "Age of the oldest event the endpoint has not taken yet (0 when none).",
        ),
        |e| format!("{:.3}", e.oldest_pending_seconds),
    );
    header(
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
