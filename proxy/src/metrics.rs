//! Counters per upstream, rendered in the Prometheus text format by [`crate::Proxy::render_metrics`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What happened with one upstream since start.
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    /// Requests answered from the cache without asking the upstream for content.
    pub hits: AtomicU64,
    /// Requests that needed content from the upstream.
    pub misses: AtomicU64,
    /// Cached tags served because the upstream was down, slow or overloaded.
    pub stale: AtomicU64,
    /// Upstream requests that failed (unreachable, timeout, 429, 5xx, refused, bad content).
    pub errors: AtomicU64,
    /// Bytes of content received from the upstream.
    pub bytes: AtomicU64,
    /// Fills (blob or manifest) completed and stored.
    pub fills: AtomicU64,
}

impl UpstreamMetrics {
    pub(crate) fn render(&self, name: &str, out: &mut [String; 6]) {
        let l = name.replace('\\', "\\\\").replace('"', "\\\"");
        for (i, v) in [
            &self.hits,
            &self.misses,
            &self.stale,
            &self.errors,
            &self.bytes,
            &self.fills,
        ]
        .into_iter()
        .enumerate()
        {
            let _ = writeln!(
                out[i],
                "{}{{upstream=\"{l}\"}} {}",
                NAMES[i].0,
                v.load(Relaxed)
            );
        }
    }
}

pub(crate) const NAMES: [(&str, &str); 6] = [
    (
        "registry_proxy_hits_total",
        "Proxied requests answered from the cache.",
    ),
    (
        "registry_proxy_misses_total",
        "Proxied requests that needed content from the upstream.",
    ),
    (
        "registry_proxy_stale_total",
        "Cached tags served while the upstream was unavailable.",
    ),
    (
        "registry_proxy_upstream_errors_total",
        "Failed upstream requests.",
    ),
    (
        "registry_proxy_upstream_bytes_total",
        "Content bytes received from the upstream.",
    ),
    (
        "registry_proxy_fills_total",
        "Blobs and manifests fetched from the upstream and stored.",
    ),
];
