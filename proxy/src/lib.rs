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
//! - [`fill`]: single-flight blob fills through a spool file.
//! - [`metrics`]: counters per upstream.
//! - [`error`]: the error type, `ProxyError`.

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod fill;
pub mod metrics;
mod route;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use oci_spec::image::{ImageIndex, ImageManifest};
use storage::hash::digest_of;
use storage::proxy_cache::{now_secs, TagRecord};
use storage::{manifest as media, ByteStream, Digest, Reference, RepoName, Store};

pub use client::Upstream;
pub use config::{ProxyConfig, UpstreamConfig};
pub use error::{ProxyError, Result};
pub use route::Route;

/// Largest manifest accepted from an upstream.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// How often a pulled object's last-pulled time is written at most.
const PULLED_RESOLUTION: Duration = Duration::from_secs(60);

/// Manifest types asked for when the client sent no `Accept`.
const DEFAULT_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Where the bytes of a requested blob come from.
pub enum BlobSource {
    /// Stored: serve it from storage under [`Route::local`].
    Stored,
    /// Being filled: the blob's size, and its bytes as they arrive.
    Filling {
        /// The blob's size.
        size: u64,
        /// The fill, to read any range of.
        fill: Spooled,
    },
}

/// A fill in progress, read through its spool file.
pub struct Spooled(Arc<fill::Fill>);

impl Spooled {
    /// The bytes `range` of the blob as the fill writes them: nothing waits for the whole fill,
    /// memory stays at one read buffer, and the blob's last byte follows the digest check.
    pub fn stream(self, range: std::ops::Range<u64>, size: u64) -> ByteStream {
        fill::stream(self.0, range, size)
    }
}

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
    /// A cache over `registry` for the configured upstreams. Empties the spool folder.
    pub fn new(cfg: &ProxyConfig, registry: Arc<Store>) -> std::io::Result<Self> {
        let base = cfg.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        cfg.check()?;
        let spool = spool_folder(&base)?;
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

    fn count_error(&self, route: &Route, e: &ProxyError) {
        if !matches!(e, ProxyError::NotFound { .. } | ProxyError::Storage(_)) {
            route.upstream.metrics.errors.fetch_add(1, Relaxed);
        }
    }

    /// Makes the manifest `reference` of `route` available in storage under `route.local` and
    /// returns its digest: from the cache when it holds it (a digest always, a tag while fresh,
    /// or stale when the upstream is down), else from the upstream. `accept` is the client's
    /// `Accept` list, passed on to the upstream.
    pub async fn manifest(
        &self,
        route: &Route,
        reference: &Reference,
        accept: Option<&str>,
    ) -> Result<Digest> {
        let up = &route.upstream;
        let res = self.manifest_inner(route, reference, accept).await;
        match &res {
            Ok(d) => {
                if let Err(e) = self
                    .registry
                    .cache_touch_pulled(&route.local, d, PULLED_RESOLUTION)
                    .await
                {
                    tracing::warn!(error = %e, "recording a pull time failed");
                }
            }
            Err(e) => {
                tracing::debug!(upstream = up.name(), error = %e, "proxied manifest failed");
            }
        }
        res
    }

    async fn manifest_inner(
        &self,
        route: &Route,
        reference: &Reference,
        accept: Option<&str>,
    ) -> Result<Digest> {
        let up = &route.upstream;
        let reg = &self.registry;
        if let Reference::Digest(d) = reference {
            if reg.manifest_info(&route.local, reference).await.is_ok() {
                up.metrics.hits.fetch_add(1, Relaxed);
                return Ok(d.clone());
            }
        }
        let lock = self.manifest_lock(format!("{}:{reference}", route.local));
        let _guard = lock.lock().await;
        let tag = match reference {
            Reference::Digest(d) => {
                // Another request may have fetched it while this one waited.
                if reg.manifest_info(&route.local, reference).await.is_ok() {
                    up.metrics.hits.fetch_add(1, Relaxed);
                    return Ok(d.clone());
                }
                return self.fetch_counted(route, reference, accept).await;
            }
            Reference::Tag(t) => t,
        };
        let record = reg.cache_tag_record(&route.local, tag).await?;
        let cached = self.cached_tag(route, record.as_ref()).await;
        let Some(cached) = cached else {
            return self.fetch_counted(route, reference, accept).await;
        };
        let record = record.expect("cached implies a record");
        if record.age() < up.config.freshness() {
            up.metrics.hits.fetch_add(1, Relaxed);
            return Ok(cached);
        }
        // Stale: one HEAD tells whether the tag moved.
        let res = self.head_tag(route, tag, accept).await;
        match res {
            Ok(Some(d)) if d == cached => {
                up.metrics.hits.fetch_add(1, Relaxed);
                reg.cache_set_tag_record(
                    &route.local,
                    tag,
                    &TagRecord {
                        digest: d.to_string(),
                        checked: now_secs(),
                    },
                )
                .await?;
                Ok(cached)
            }
            Ok(_) => {
                up.metrics.misses.fetch_add(1, Relaxed);
                match self.fetch_manifest(route, reference, accept).await {
                    Ok(d) => Ok(d),
                    Err(e) => self.stale_or_err(route, tag, e, cached),
                }
            }
            Err(e) => self.stale_or_err(route, tag, e, cached),
        }
    }

    /// A miss: fetches the manifest from the upstream, counting a failure as an error.
    async fn fetch_counted(
        &self,
        route: &Route,
        reference: &Reference,
        accept: Option<&str>,
    ) -> Result<Digest> {
        route.upstream.metrics.misses.fetch_add(1, Relaxed);
        let res = self.fetch_manifest(route, reference, accept).await;
        if let Err(e) = &res {
            self.count_error(route, e);
        }
        res
    }

    /// The digest `record` names, when that manifest is in the cache repository.
    async fn cached_tag(&self, route: &Route, record: Option<&TagRecord>) -> Option<Digest> {
        let reg = &self.registry;
        match record {
            Some(r) => match r.digest.parse::<Digest>() {
                Ok(d)
                    if reg
                        .manifest_info(&route.local, &Reference::Digest(d.clone()))
                        .await
                        .is_ok() =>
                {
                    Some(d)
                }
                _ => None,
            },
            None => None,
        }
    }

    /// Asks the upstream, with one HEAD, which digest `tag` names now.
    async fn head_tag(
        &self,
        route: &Route,
        tag: &storage::Tag,
        accept: Option<&str>,
    ) -> Result<Option<Digest>> {
        let up = &route.upstream;
        let resp = up
            .send(
                Method::HEAD,
                &route.remote,
                &format!("manifests/{tag}"),
                &accept_header(accept),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok())),
            StatusCode::NOT_FOUND => Err(ProxyError::NotFound {
                upstream: up.name().to_owned(),
                what: format!("{}:{tag}", route.remote),
                blob: false,
            }),
            s => Err(ProxyError::Invalid {
                upstream: up.name().to_owned(),
                msg: format!("manifest HEAD answered {s}"),
            }),
        }
    }

    /// A failed revalidation of `tag`: the stale `cached` digest when the upstream is down,
    /// else the error. Counts the error either way.
    fn stale_or_err(
        &self,
        route: &Route,
        tag: &storage::Tag,
        e: ProxyError,
        cached: Digest,
    ) -> Result<Digest> {
        self.count_error(route, &e);
        if e.upstream_down() {
            self.stale(route, tag, &e);
            Ok(cached)
        } else {
            Err(e)
        }
    }

    fn stale(&self, route: &Route, tag: &storage::Tag, e: &ProxyError) {
        route.upstream.metrics.stale.fetch_add(1, Relaxed);
        tracing::warn!(
            upstream = route.upstream.name(),
            repository = %route.local,
            %tag,
            error = %e,
            "proxy: serving a stale tag, the upstream is unavailable"
        );
    }

    /// GETs a manifest from the upstream, verifies it and stores it (and the tag).
    async fn fetch_manifest(
        &self,
        route: &Route,
        reference: &Reference,
        accept: Option<&str>,
    ) -> Result<Digest> {
        let up = &route.upstream;
        let started = Instant::now();
        let invalid = |msg: String| ProxyError::Invalid {
            upstream: up.name().to_owned(),
            msg,
        };
        let resp = up
            .send(
                Method::GET,
                &route.remote,
                &format!("manifests/{reference}"),
                &accept_header(accept),
            )
            .await?;
        check_manifest_status(route, reference, resp.status())?;
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST as u64)
        {
            return Err(invalid("manifest larger than 4 MiB".into()));
        }
        let body = read_limited(resp, MAX_MANIFEST, up).await?;
        up.metrics.bytes.fetch_add(body.len() as u64, Relaxed);
        let expected = expected_digest(up, reference, announced)?;
        let alg = expected
            .as_ref()
            .map(|d| d.algorithm())
            .unwrap_or(storage::Algorithm::Sha256);
        let actual = digest_of(alg, &body);
        if let Some(expected) = expected {
            if expected != actual {
                return Err(ProxyError::DigestMismatch {
                    upstream: up.name().to_owned(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let media_type = manifest_media_type(&body, content_type.as_deref())
            .map_err(|m| invalid(format!("manifest {reference}: {m}")))?;
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        self.store_manifest(route, &actual, &media_type, body.clone(), tag)
            .await?;
        up.metrics.fills.fetch_add(1, Relaxed);
        tracing::info!(
            upstream = up.name(),
            repository = %route.local,
            reference = %reference,
            digest = %actual,
            media_type,
            size = body.len(),
            seconds = started.elapsed().as_secs_f64(),
            "proxy fill: manifest stored"
        );
        Ok(actual)
    }

    /// Stores a verified manifest in the cache repository, with `tag` and its tag record.
    async fn store_manifest(
        &self,
        route: &Route,
        actual: &Digest,
        media_type: &str,
        body: Bytes,
        tag: Option<&storage::Tag>,
    ) -> Result<()> {
        self.registry
            .cache_manifest(&route.local, actual, media_type, body, tag)
            .await?;
        if let Some(t) = tag {
            self.registry
                .cache_set_tag_record(
                    &route.local,
                    t,
                    &TagRecord {
                        digest: actual.to_string(),
                        checked: now_secs(),
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Size of a blob for `HEAD`: from storage, else from the upstream (without filling).
    pub async fn blob_size(&self, route: &Route, digest: &Digest) -> Result<Option<u64>> {
        let up = &route.upstream;
        if let Ok(size) = self.registry.blob_size(&route.local, digest).await {
            up.metrics.hits.fetch_add(1, Relaxed);
            return Ok(Some(size));
        }
        let res = async {
            let resp = up
                .send(Method::HEAD, &route.remote, &format!("blobs/{digest}"), &[])
                .await?;
            match resp.status() {
                StatusCode::OK => Ok(resp
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())),
                StatusCode::NOT_FOUND => Err(ProxyError::NotFound {
                    upstream: up.name().to_owned(),
                    what: digest.to_string(),
                    blob: true,
                }),
                s => Err(ProxyError::Invalid {
                    upstream: up.name().to_owned(),
                    msg: format!("blob HEAD answered {s}"),
                }),
            }
        }
        .await;
        if let Err(e) = &res {
            self.count_error(route, e);
        }
        res
    }

    /// The bytes of a blob: [`BlobSource::Stored`] when storage has it under `route.local` (also
    /// after waiting for a fill to finish when the upstream sent no size), else the fill in
    /// progress, to be read as it arrives. Waits for the upstream's headers at most the
    /// first-byte time.
    pub async fn blob(&self, route: &Route, digest: &Digest) -> Result<BlobSource> {
        let up = &route.upstream;
        if self.registry.blob_size(&route.local, digest).await.is_ok() {
            up.metrics.hits.fetch_add(1, Relaxed);
            self.touch(route, digest).await;
            return Ok(BlobSource::Stored);
        }
        let job = fill::FillJob {
            registry: self.registry.clone(),
            upstream: up.clone(),
            remote: route.remote.clone(),
            local: route.local.clone(),
            digest: digest.clone(),
            spool: self.spool.clone(),
        };
        let f = self
            .fills
            .join_or_start(job)
            .map_err(|e| ProxyError::from(storage::Error::backend("proxy spool folder", e)))?;
        // The fill itself gives up after the first-byte time; this bounds a wait for a permit.
        let limit = up.config.first_byte() * 2;
        let state = match tokio::time::timeout(limit, fill::wait_started(&f)).await {
            Ok(s) => s,
            Err(_) => {
                return Err(ProxyError::Timeout {
                    upstream: up.name().to_owned(),
                    secs: limit.as_secs(),
                })
            }
        };
        if let Some(e) = state.failed {
            return Err(e);
        }
        if state.cached {
            up.metrics.hits.fetch_add(1, Relaxed);
            self.touch(route, digest).await;
            return Ok(BlobSource::Stored);
        }
        up.metrics.misses.fetch_add(1, Relaxed);
        self.touch(route, digest).await;
        match state.size {
            Some(size) => Ok(BlobSource::Filling {
                size,
                fill: Spooled(f),
            }),
            _ => {
                fill::wait_done(&f).await?;
                Ok(BlobSource::Stored)
            }
        }
    }

    async fn touch(&self, route: &Route, digest: &Digest) {
        if let Err(e) = self
            .registry
            .cache_touch_pulled(&route.local, digest, PULLED_RESOLUTION)
            .await
        {
            tracing::warn!(error = %e, "recording a pull time failed");
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

/// A spool folder of this process's own under `base`, after removing those of processes that
/// are gone (a killed registry leaves its partial fills there; they were never visible).
fn spool_folder(base: &std::path::Path) -> std::io::Result<PathBuf> {
    const PREFIX: &str = "registry-proxy-fills-";
    std::fs::create_dir_all(base)?;
    for entry in std::fs::read_dir(base)?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|p| {
            p == std::process::id() || std::path::Path::new(&format!("/proc/{p}")).exists()
        });
        if !alive || pid.parse::<u32>() == Ok(std::process::id()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let own = base.join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&own)?;
    Ok(own)
}

fn accept_header(accept: Option<&str>) -> Vec<(header::HeaderName, HeaderValue)> {
    let v = accept
        .filter(|a| !a.trim().is_empty())
        .unwrap_or(DEFAULT_ACCEPT);
    HeaderValue::from_str(v)
        .map(|v| vec![(header::ACCEPT, v)])
        .unwrap_or_default()
}

async fn read_limited(resp: reqwest::Response, limit: usize, up: &Upstream) -> Result<Bytes> {
    use futures::StreamExt;
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let stall = Duration::from_secs(up.config.stall_timeout.max(1));
    loop {
        match tokio::time::timeout(stall, body.next()).await {
            Err(_) => {
                return Err(ProxyError::Unavailable {
                    upstream: up.name().to_owned(),
                    msg: "manifest body stalled".into(),
                })
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => {
                return Err(ProxyError::Unavailable {
                    upstream: up.name().to_owned(),
                    msg: format!("manifest body: {e}"),
                })
            }
            Ok(Some(Ok(c))) => {
                if buf.len() + c.len() > limit {
                    return Err(ProxyError::Invalid {
                        upstream: up.name().to_owned(),
                        msg: "manifest larger than 4 MiB".into(),
                    });
                }
                buf.extend_from_slice(&c);
            }
        }
    }
}

/// The media type of a manifest from an upstream, checked by parsing it with `oci-spec`: the
/// body's `mediaType`, else the response's `Content-Type`. Docker schema 1 and unknown types are
/// refused (this registry does not serve them).
fn manifest_media_type(
    body: &[u8],
    content_type: Option<&str>,
) -> std::result::Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON manifest: {e}"))?;
    let media_type = probe
        .media_type
        .or_else(|| content_type.map(str::to_owned))
        .or_else(|| {
            Some(if probe.manifests.is_some() {
                media::OCI_INDEX.to_owned()
            } else {
                media::OCI_MANIFEST.to_owned()
            })
        })
        .expect("always some");
    match media::kind_of(&media_type) {
        Some(media::Kind::Index) => {
            ImageIndex::from_reader(body).map_err(|e| format!("invalid index: {e}"))?;
        }
        Some(media::Kind::Image) => {
            ImageManifest::from_reader(body).map_err(|e| format!("invalid manifest: {e}"))?;
        }
        None => return Err(format!("unsupported manifest type {media_type:?}")),
    }
    Ok(media_type)
}

/// Refuses a manifest GET answer other than 200.
fn check_manifest_status(route: &Route, reference: &Reference, status: StatusCode) -> Result<()> {
    let up = &route.upstream;
    let invalid = |msg: String| ProxyError::Invalid {
        upstream: up.name().to_owned(),
        msg,
    };
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            return Err(ProxyError::NotFound {
                upstream: up.name().to_owned(),
                what: format!("{}:{reference}", route.remote),
                blob: false,
            })
        }
        s => return Err(invalid(format!("manifest GET answered {s}"))),
    }
    Ok(())
}

/// The digest the manifest must have: the one asked for, else the one the upstream announced.
fn expected_digest(
    up: &Upstream,
    reference: &Reference,
    announced: Option<String>,
) -> Result<Option<Digest>> {
    let invalid = |msg: String| ProxyError::Invalid {
        upstream: up.name().to_owned(),
        msg,
    };
    Ok(match reference {
        Reference::Digest(d) => Some(d.clone()),
        Reference::Tag(_) => match announced {
            Some(a) => Some(
                a.parse::<Digest>()
                    .map_err(|_| invalid(format!("Docker-Content-Digest {a:?} is not a digest")))?,
            ),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests;
