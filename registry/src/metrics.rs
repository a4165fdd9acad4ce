//! Prometheus metrics in the text exposition format, kept in process-wide atomics (one registry
//! process serves one storage, so process-wide is per-registry). Labels are bounded: endpoint
//! names are a fixed set, status codes a small one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Every metric the registry exports.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    in_flight: AtomicU64,
    uploads_in_flight: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_sendfile: AtomicU64,
    storage_errors: AtomicU64,
    rejected_overload: AtomicU64,
    gc_runs: AtomicU64,
    gc_failures: AtomicU64,
    gc_blobs_removed: AtomicU64,
    gc_bytes_freed: AtomicU64,
    gc_manifests_removed: AtomicU64,
    gc_last_seconds_millis: AtomicU64,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// Decrements a gauge when dropped.
pub struct GaugeGuard(&'static AtomicU64);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// Records a finished request.
    pub fn request(&self, endpoint: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((endpoint, status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut lat = self.latency.lock().expect("metrics lock");
        let h = lat.entry(endpoint).or_default();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts a request in flight until the guard drops.
    pub fn enter(&'static self) -> GaugeGuard {
        self.in_flight.fetch_add(1, Relaxed);
        GaugeGuard(&self.in_flight)
    }

    /// Counts an upload request (a request carrying blob bytes) until the guard drops.
    pub fn enter_upload(&'static self) -> GaugeGuard {
        self.uploads_in_flight.fetch_add(1, Relaxed);
        GaugeGuard(&self.uploads_in_flight)
    }

    /// Requests currently being served.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Counts request body bytes.
    pub fn received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Relaxed);
    }

    /// Counts response body bytes.
    pub fn sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Relaxed);
    }

    /// Counts response body bytes that went out with `sendfile(2)` (also counted by `sent`).
    pub fn sent_from_file(&self, n: u64) {
        self.bytes_sendfile.fetch_add(n, Relaxed);
    }

    /// Blob bytes sent with `sendfile(2)` so far.
    pub fn sendfile_bytes(&self) -> u64 {
        self.bytes_sendfile.load(Relaxed)
    }

    /// Counts a request that failed because storage failed.
    pub fn storage_error(&self) {
        self.storage_errors.fetch_add(1, Relaxed);
    }

    /// Counts a request turned away by the concurrency limit.
    pub fn overload(&self) {
        self.rejected_overload.fetch_add(1, Relaxed);
    }

    /// Records a garbage collection run.
    pub fn gc_run(&self, ok: Option<(u64, u64, u64)>, took: Duration) {
        self.gc_runs.fetch_add(1, Relaxed);
        self.gc_last_seconds_millis
            .store(took.as_millis() as u64, Relaxed);
        match ok {
            Some((blobs, bytes, manifests)) => {
                self.gc_blobs_removed.fetch_add(blobs, Relaxed);
                self.gc_bytes_freed.fetch_add(bytes, Relaxed);
                self.gc_manifests_removed.fetch_add(manifests, Relaxed);
            }
            None => {
                self.gc_failures.fetch_add(1, Relaxed);
            }
        }
    }

    /// The latency histograms, by endpoint.
    fn render_latency(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP registry_http_request_duration_seconds Time to answer a request, by endpoint.\n# TYPE registry_http_request_duration_seconds histogram"
        );
        for (ep, h) in self.latency.lock().expect("metrics lock").iter() {
            let mut cum = 0;
            for (b, n) in BUCKETS.iter().zip(h.buckets.iter()) {
                cum += n;
                let _ = writeln!(
                    out,
                    "registry_http_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                out,
                "registry_http_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"+Inf\"}} {}\nregistry_http_request_duration_seconds_sum{{endpoint=\"{ep}\"}} {}\nregistry_http_request_duration_seconds_count{{endpoint=\"{ep}\"}} {}",
                h.count, h.sum, h.count
            );
        }
    }

    /// The plain counters and gauges: name, help, value, type.
    fn scalars(&self) -> [(&'static str, &'static str, &AtomicU64, &'static str); 12] {
        [
            ("registry_http_requests_in_flight", "Requests being served.", &self.in_flight, "gauge"),
            ("registry_upload_requests_in_flight", "Requests carrying blob bytes being received.", &self.uploads_in_flight, "gauge"),
            ("registry_received_bytes_total", "Request body bytes received.", &self.bytes_received, "counter"),
            ("registry_sent_bytes_total", "Blob and manifest bytes sent.", &self.bytes_sent, "counter"),
            ("registry_sendfile_bytes_total", "Blob bytes sent with sendfile(2), without a copy through memory (also in registry_sent_bytes_total).", &self.bytes_sendfile, "counter"),
            ("registry_storage_errors_total", "Requests that failed because storage failed.", &self.storage_errors, "counter"),
            ("registry_overload_rejections_total", "Requests answered 429 by the concurrency limit.", &self.rejected_overload, "counter"),
            ("registry_gc_runs_total", "Garbage collection runs.", &self.gc_runs, "counter"),
            ("registry_gc_failures_total", "Garbage collection runs that failed.", &self.gc_failures, "counter"),
            ("registry_gc_removed_blobs_total", "Blobs removed by garbage collection.", &self.gc_blobs_removed, "counter"),
            ("registry_gc_freed_bytes_total", "Bytes freed by garbage collection.", &self.gc_bytes_freed, "counter"),
            ("registry_gc_removed_manifests_total", "Manifests removed by retention.", &self.gc_manifests_removed, "counter"),
        ]
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        for (name, help, v, kind) in self.scalars() {
            let v = v.load(Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP registry_gc_last_duration_seconds Duration of the latest garbage collection.\n# TYPE registry_gc_last_duration_seconds gauge\nregistry_gc_last_duration_seconds {}",
            self.gc_last_seconds_millis.load(Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "# HELP registry_http_requests_total Requests served, by endpoint and status.\n# TYPE registry_http_requests_total counter"
        );
        for ((ep, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "registry_http_requests_total{{endpoint=\"{ep}\",status=\"{status}\"}} {n}"
            );
        }
        self.render_latency(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("get_blob", 200, Duration::from_micros(300));
        m.request("get_blob", 200, Duration::from_millis(20));
        m.request("get_blob", 404, Duration::from_millis(2));
        m.received(10);
        let text = m.render();
        assert!(
            text.contains("registry_http_requests_total{endpoint=\"get_blob\",status=\"200\"} 2")
        );
        assert!(
            text.contains("registry_http_requests_total{endpoint=\"get_blob\",status=\"404\"} 1")
        );
        assert!(text.contains(
            "registry_http_request_duration_seconds_bucket{endpoint=\"get_blob\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "registry_http_request_duration_seconds_bucket{endpoint=\"get_blob\",le=\"0.025\"} 3"
        ));
        assert!(
            text.contains("registry_http_request_duration_seconds_count{endpoint=\"get_blob\"} 3")
        );
        assert!(text.contains("registry_received_bytes_total 10"));
    }
}
