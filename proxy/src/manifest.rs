//! Manifests through the cache: by digest from storage once fetched; by tag from storage while
//! fresh, then revalidated with one `HEAD`, and served stale while the upstream is down.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method};
use oci_spec::image::{ImageIndex, ImageManifest};
use storage::hash::digest_of;
use storage::proxy_cache::TagRecord;
use storage::{manifest as media, Digest, Reference};

use crate::{Proxy, ProxyError, Result, Route, Upstream};

/// Largest manifest accepted from an upstream.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Manifest types asked for when the client sent no `Accept`.
const DEFAULT_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// One manifest request: where it goes, what the client asked for and the `Accept` list it
/// sent (passed on to the upstream).
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The route of the request's name.
    pub route: &'a Route,
    /// The tag or digest asked for.
    pub reference: &'a Reference,
    /// The client's `Accept` list, if it sent one.
    pub accept: Option<&'a str>,
}

/// Where a manifest asked for comes from.
#[derive(Debug)]
pub enum ManifestSource {
    /// Stored under the route's cache repository, with this digest.
    Stored(Digest),
    /// Just fetched from the upstream and verified; being stored in the background (the task
    /// holds the manifest's fetch lock, so a request for it meanwhile waits and then finds it
    /// stored; nothing is visible before all of it is written).
    Fetched {
        /// Its digest (verified).
        digest: Digest,
        /// Its media type.
        media_type: String,
        /// Its bytes.
        body: Bytes,
        /// The store task.
        stored: tokio::task::JoinHandle<Result<()>>,
    },
}

impl ManifestSource {
    /// The manifest's digest.
    pub fn digest(&self) -> &Digest {
        match self {
            ManifestSource::Stored(d) | ManifestSource::Fetched { digest: d, .. } => d,
        }
    }
}

impl Proxy {
    /// Makes the manifest `ask.reference` of `ask.route` available in storage under the route's
    /// cache repository and returns its digest: from the cache when it holds it (a digest
    /// always, a tag while fresh, or stale when the upstream is down), else from the upstream.
    pub async fn manifest(&self, ask: Ask<'_>) -> Result<Digest> {
        match self.manifest_source(ask).await? {
            ManifestSource::Stored(d) => Ok(d),
            ManifestSource::Fetched { digest, stored, .. } => {
                stored
                    .await
                    .map_err(|e| ProxyError::from(storage::Error::backend("store task", e)))??;
                Ok(digest)
            }
        }
    }

    /// The manifest `ask.reference` of `ask.route`: from the cache when it holds it (a digest
    /// always, a tag while fresh, or stale when the upstream is down), else fetched from the
    /// upstream, verified, and answered while it is stored.
    pub async fn manifest_source(&self, ask: Ask<'_>) -> Result<ManifestSource> {
        let res = self.manifest_inner(&ask).await;
        match &res {
            Ok(m) => self.touch(ask.route, m.digest()),
            Err(e) => {
                let up = ask.route.upstream.name();
                tracing::debug!(upstream = up, error = %e, "proxied manifest failed");
            }
        }
        res
    }

    /// Whether the manifest `d` is stored in the cache repository.
    async fn stored(&self, route: &Route, d: &Digest) -> bool {
        let by_digest = Reference::Digest(d.clone());
        self.registry
            .manifest_info(&route.local, &by_digest)
            .await
            .is_ok()
    }

    /// Counts a cache hit and answers `d`.
    fn hit(route: &Route, d: &Digest) -> Result<ManifestSource> {
        route.upstream.metrics.hits.fetch_add(1, Relaxed);
        Ok(ManifestSource::Stored(d.clone()))
    }

    async fn manifest_inner(&self, ask: &Ask<'_>) -> Result<ManifestSource> {
        let route = ask.route;
        if let Reference::Digest(d) = ask.reference {
            if self.stored(route, d).await {
                return Self::hit(route, d);
            }
        }
        let lock = self.manifest_lock(format!("{}:{}", route.local, ask.reference));
        let guard = lock.lock_owned().await;
        let tag = match ask.reference {
            // Another request may have fetched it while this one waited.
            Reference::Digest(d) if self.stored(route, d).await => return Self::hit(route, d),
            Reference::Digest(_) => return self.fetch_counted(ask, guard).await,
            Reference::Tag(t) => t,
        };
        let record = self.registry.cache_tag_record(&route.local, tag).await?;
        let cached = match record.as_ref().map(|r| r.digest.parse::<Digest>()) {
            Some(Ok(d)) if self.stored(route, &d).await => d,
            _ => return self.fetch_counted(ask, guard).await,
        };
        if record.is_some_and(|r| r.age() < route.upstream.config.freshness()) {
            return Self::hit(route, &cached);
        }
        // Stale: one HEAD tells whether the tag moved.
        self.revalidate(ask, tag, cached, guard).await
    }

    /// Asks the upstream whether a stale cached tag moved: keeps `cached` when it did not,
    /// fetches the new manifest when it did, serves `cached` stale when the upstream is down.
    async fn revalidate(
        &self,
        ask: &Ask<'_>,
        tag: &storage::Tag,
        cached: Digest,
        guard: FetchGuard,
    ) -> Result<ManifestSource> {
        let route = ask.route;
        let up = &route.upstream;
        let path = format!("manifests/{tag}");
        let res = up
            .head(&route.remote, &path, &accept_header(ask.accept), false)
            .await
            .map(|h| announced_digest(&h).and_then(|a| a.parse::<Digest>().ok()));
        match res {
            Ok(Some(d)) if d == cached => {
                let record = TagRecord::checked_now(&d);
                self.registry
                    .cache_set_tag_record(&route.local, tag, &record)
                    .await?;
                Self::hit(route, &cached)
            }
            Ok(_) => {
                up.metrics.misses.fetch_add(1, Relaxed);
                match self.fetch_manifest(ask, guard).await {
                    Ok(d) => Ok(d),
                    Err(e) => self.stale_or_err(route, tag, e, cached),
                }
            }
            Err(e) => self.stale_or_err(route, tag, e, cached),
        }
    }

    /// A miss: fetches the manifest from the upstream, counting a failure as an error.
    async fn fetch_counted(&self, ask: &Ask<'_>, guard: FetchGuard) -> Result<ManifestSource> {
        ask.route.upstream.metrics.misses.fetch_add(1, Relaxed);
        let res = self.fetch_manifest(ask, guard).await;
        if let Err(e) = &res {
            self.count_error(ask.route, e);
        }
        res
    }

    /// A failed revalidation of `tag`: the stale `cached` digest when the upstream is down,
    /// else the error. Counts the error either way.
    fn stale_or_err(
        &self,
        route: &Route,
        tag: &storage::Tag,
        e: ProxyError,
        cached: Digest,
    ) -> Result<ManifestSource> {
        self.count_error(route, &e);
        if !e.upstream_down() {
            return Err(e);
        }
        route.upstream.metrics.stale.fetch_add(1, Relaxed);
        tracing::warn!(
            upstream = route.upstream.name(),
            repository = %route.local,
            %tag,
            error = %e,
            "proxy: serving a stale tag, the upstream is unavailable"
        );
        Ok(ManifestSource::Stored(cached))
    }

    /// GETs a manifest from the upstream, verifies it and starts storing it (and the tag) in a
    /// task that holds `guard` until it is stored.
    async fn fetch_manifest(&self, ask: &Ask<'_>, guard: FetchGuard) -> Result<ManifestSource> {
        let (route, reference) = (ask.route, ask.reference);
        let up = &route.upstream;
        let started = Instant::now();
        let path = format!("manifests/{reference}");
        let resp = up
            .send(
                Method::GET,
                &route.remote,
                &path,
                &accept_header(ask.accept),
            )
            .await?;
        let what = || format!("{}:{reference}", route.remote);
        up.expect_ok(resp.status(), "manifest GET", what, false)?;
        let announced = announced_digest(resp.headers());
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST as u64)
        {
            return Err(up.invalid("manifest larger than 4 MiB"));
        }
        let body = read_limited(resp, MAX_MANIFEST, up).await?;
        up.metrics.bytes.fetch_add(body.len() as u64, Relaxed);
        let actual = verified_digest(up, reference, announced, &body)?;
        let media_type = manifest_media_type(&body, content_type.as_deref())
            .map_err(|m| up.invalid(format!("manifest {reference}: {m}")))?;
        let tag = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        let (registry, up, local) = (self.registry.clone(), up.clone(), route.local.clone());
        let (digest, mt, bytes) = (actual.clone(), media_type.clone(), body.clone());
        let stored = tokio::spawn(async move {
            let res = store_manifest(&registry, &local, &digest, &mt, bytes.clone(), tag).await;
            drop(guard);
            match &res {
                Ok(()) => {
                    up.metrics.fills.fetch_add(1, Relaxed);
                    tracing::info!(
                        upstream = up.name(),
                        repository = %local,
                        %digest,
                        media_type = mt,
                        size = bytes.len(),
                        seconds = started.elapsed().as_secs_f64(),
                        "proxy fill: manifest stored"
                    );
                }
                Err(e) => tracing::warn!(
                    upstream = up.name(),
                    repository = %local,
                    %digest,
                    error = %e,
                    "proxy fill: storing a manifest failed; nothing visible"
                ),
            }
            res
        });
        Ok(ManifestSource::Fetched {
            digest: actual,
            media_type,
            body,
            stored,
        })
    }
}

/// The fetch lock of one manifest, held until a fetched manifest is stored.
type FetchGuard = tokio::sync::OwnedMutexGuard<()>;

/// Stores a verified manifest in the cache repository, with `tag` and its tag record.
async fn store_manifest(
    registry: &storage::Store,
    local: &storage::RepoName,
    actual: &Digest,
    media_type: &str,
    body: Bytes,
    tag: Option<storage::Tag>,
) -> Result<()> {
    registry
        .cache_manifest(local, actual, media_type, body, tag.as_ref())
        .await?;
    if let Some(t) = &tag {
        let record = TagRecord::checked_now(actual);
        registry.cache_set_tag_record(local, t, &record).await?;
    }
    Ok(())
}

/// The `Docker-Content-Digest` an answer announces, if any.
fn announced_digest(h: &http::HeaderMap) -> Option<String> {
    h.get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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
            Err(_) => return Err(up.unavailable("manifest body stalled")),
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => return Err(up.unavailable(format!("manifest body: {e}"))),
            Ok(Some(Ok(c))) => {
                if buf.len() + c.len() > limit {
                    return Err(up.invalid("manifest larger than 4 MiB"));
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

/// The digest of a manifest body, which must be the one asked for, else the one the upstream
/// announced (when it did).
fn verified_digest(
    up: &Upstream,
    reference: &Reference,
    announced: Option<String>,
    body: &[u8],
) -> Result<Digest> {
    let expected =
        match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => match announced {
                Some(a) => Some(a.parse::<Digest>().map_err(|_| {
                    up.invalid(format!("Docker-Content-Digest {a:?} is not a digest"))
                })?),
                None => None,
            },
        };
    let alg = expected
        .as_ref()
        .map(|d| d.algorithm())
        .unwrap_or(storage::Algorithm::Sha256);
    let actual = digest_of(alg, body);
    match expected {
        Some(expected) if expected != actual => Err(ProxyError::DigestMismatch {
            upstream: up.name().to_owned(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(actual),
    }
}
