//! A pull-through cache inside the registry: repositories named after a configured upstream
//! registry (by containerd's `?ns=<host>` or by a `<host>/` path prefix) are filled from that
//! upstream on first pull and served from storage afterwards. This crate speaks to upstreams over
//! HTTP and to the `storage` crate; the server's HTTP layer calls [`Proxy`] and serves what it
//! leaves in storage.
//!
//! # Cache semantics
//! - Blobs and manifests by digest are immutable: fetched once, verified against their digest
//!   before they are stored, served from storage afterwards.
//! - A tag is served from storage for `tag_freshness` after the upstream was last asked; after
//!   that one `HEAD` revalidates it. When the upstream is unreachable, slow or answers 429/5xx,
//!   the cached tag is served anyway (stale; logged and counted).
//! - One fill per blob in a process, however many clients ask (see [`fill`]); manifests are
//!   fetched once per name and reference at a time.
//!
//! # Layout
//! - [`config`]: the upstreams as configured.
//! - `route`: which upstream, if any, a request's name and `?ns=` go to.
//! - [`client`]: the upstream client (token flow, Basic auth, redirects, time limits).
//! - [`auth`]: `WWW-Authenticate` parsing and the token cache.
//! - `manifest`: manifests by tag (freshness, revalidation, stale serves) and by digest.
//! - `blob`: blobs, from storage or from a fill in progress.
//! - [`fill`]: single-flight blob fills through a spool file.
//! - [`metrics`]: counters per upstream.
//! - [`error`]: the error type, `ProxyError`.

pub mod auth;
mod blob;
pub mod client;
pub mod config;
pub mod error;
pub mod fill;
mod manifest;
pub mod metrics;
mod route;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use storage::{Digest, RepoName, Store};

pub use blob::{BlobSource, Spooled};
pub use client::Upstream;
pub use config::{ProxyConfig, UpstreamConfig};
pub use error::{ProxyError, Result};
pub use manifest::{Ask, ManifestSource};
pub use route::Route;

/// How often a pulled object's last-pulled time is written at most.
const PULLED_RESOLUTION: Duration = Duration::from_secs(60);

/// The pull-through cache.
#[derive(Debug)]
pub struct Proxy {
    upstreams: Vec<Arc<Upstream>>,
    /// The upstream of every name without `?ns=` or an upstream prefix, if one is configured.
    catch_all: Option<Arc<Upstream>>,
    registry: Arc<Store>,
    spool: PathBuf,
    fills: Arc<fill::Fills>,
    /// One manifest fetch per (cache repository, reference) at a time.
    manifest_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The configured cache size limit, for the garbage collector.
    pub max_cache_bytes: Option<u64>,
}

impl Proxy {
    /// A cache over `registry` for the configured upstreams. Empties the spool folder: under
    /// `spool_dir` when configured, else in the storage's scratch folder when it has one (the
    /// filesystem backend: a filled blob then moves into storage by a rename, see [`fill`]),
    /// else in the system's temporary folder.
    pub fn new(cfg: &ProxyConfig, registry: Arc<Store>) -> std::io::Result<Self> {
        let base = (cfg.spool_dir.clone())
            .or_else(|| registry.scratch_dir())
            .unwrap_or_else(std::env::temp_dir);
        cfg.check()?;
        let spool = fill::spool_folder(&base)?;
        let mut upstreams = Vec::new();
        for u in &cfg.upstreams {
            let up = Upstream::new(u.clone())?;
            if up.prefix.parse::<RepoName>().is_err() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "upstream name {:?} cannot be a repository name component",
                        u.name
                    ),
                ));
            }
            if upstreams
                .iter()
                .any(|o: &Arc<Upstream>| o.prefix == up.prefix)
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("upstream {:?} is configured twice", u.name),
                ));
            }
            upstreams.push(Arc::new(up));
        }
        Ok(Proxy {
            catch_all: upstreams.iter().find(|u| u.config.catch_all).cloned(),
            upstreams,
            registry,
            spool,
            fills: Arc::default(),
            manifest_locks: Mutex::default(),
            max_cache_bytes: cfg.max_cache_bytes,
        })
    }

    /// The configured upstreams.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    fn manifest_lock(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.manifest_locks.lock().expect("manifest locks");
        if map.len() > 1024 {
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(key).or_default().clone()
    }

    /// Records that `digest` was pulled through `route` now (for eviction), in the background:
    /// the record is for the garbage collector, so no answer waits for its write.
    fn touch(&self, route: &Route, digest: &Digest) {
        let (registry, local, digest) =
            (self.registry.clone(), route.local.clone(), digest.clone());
        tokio::spawn(async move {
            if let Err(e) = registry
                .cache_touch_pulled(&local, &digest, PULLED_RESOLUTION)
                .await
            {
                tracing::warn!(error = %e, "recording a pull time failed");
            }
        });
    }

    fn count_error(&self, route: &Route, e: &ProxyError) {
        if !matches!(e, ProxyError::NotFound { .. } | ProxyError::Storage(_)) {
            route.upstream.metrics.errors.fetch_add(1, Relaxed);
        }
    }

    /// Appends the per-upstream counters to a Prometheus text exposition.
    pub fn render_metrics(&self, out: &mut String) {
        let mut lines: [String; 6] = Default::default();
        for u in &self.upstreams {
            u.metrics.render(u.name(), &mut lines);
        }
        for (i, (name, help)) in metrics::NAMES.iter().enumerate() {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            out.push_str(&lines[i]);
        }
    }
}

#[cfg(test)]
mod tests;
