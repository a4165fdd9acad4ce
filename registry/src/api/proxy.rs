//! Routing to the pull-through cache ([`proxy::Proxy`]): a request whose `?ns=` or first name
//! component names a configured upstream is filled from that upstream, then served from the
//! cache repository like any other; pushes into such names are refused. Everything else passes
//! through untouched.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use http::header::{HeaderMap, ACCEPT};
use http::StatusCode;
use proxy::{BlobSource, ManifestSource, ProxyError};
use storage::{Digest, Reference};

use super::{blobs, manifests, param, Ctx};
use crate::endpoint::Endpoint;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::METRICS;

/// What the cache made of a request.
pub(super) enum Routed {
    /// Not proxied, or filled: serve this endpoint from storage.
    Local(Endpoint),
    /// Answered here (a blob streaming from a fill, or an upstream's size for HEAD).
    Done(Response),
}

/// Sends a request for a proxied name to the cache; other requests come back unchanged.
pub(super) async fn route(cx: &Ctx<'_>, ep: Endpoint) -> Result<Routed, ApiError> {
    let (st, parts, q) = (cx.st, cx.parts, cx.query);
    let Some(px) = &st.proxy else {
        return Ok(Routed::Local(ep));
    };
    let Some(name) = ep.target().0 else {
        return Ok(Routed::Local(ep));
    };
    let ns = param(q, "ns");
    let Some(route) = px.route(name, ns) else {
        return match (ns, px.catch_all()) {
            // The registry mirrors one upstream and holds nothing else: an unknown `ns` would
            // be answered with that upstream's content under the same name.
            (Some(ns), Some(all)) => Err(ApiError::new(
                ErrorCode::NameUnknown,
                format!(
                    "no upstream is configured for ns={ns}; this registry mirrors {}",
                    all.name()
                ),
            )),
            _ => Ok(Routed::Local(ep)),
        };
    };
    let accept = accept_list(&parts.headers);
    let accept = accept.as_deref();
    let local = route.local.clone();
    Ok(match ep {
        Endpoint::GetManifest { ref reference, .. }
        | Endpoint::HeadManifest { ref reference, .. } => {
            let ask = proxy::Ask {
                route: &route,
                reference,
                accept,
            };
            let d = match px.manifest_source(ask).await.map_err(api_error)? {
                ManifestSource::Stored(d) => d,
                // Verified and being stored: answered now, not after the store's writes.
                ManifestSource::Fetched {
                    digest,
                    media_type,
                    body,
                    ..
                } => {
                    return Ok(Routed::Done(manifests::fetched(
                        &ep, digest, media_type, body,
                    )))
                }
            };
            let reference = Reference::Digest(d);
            Routed::Local(match ep {
                Endpoint::GetManifest { .. } => Endpoint::GetManifest {
                    name: local,
                    reference,
                },
                _ => Endpoint::HeadManifest {
                    name: local,
                    reference,
                },
            })
        }
        Endpoint::HeadBlob { digest, .. } => head_blob(cx, &route, digest).await?,
        Endpoint::GetBlob { digest, .. } => get_blob(cx, &route, digest).await?,
        Endpoint::ListTags { .. } => Routed::Local(Endpoint::ListTags { name: local }),
        Endpoint::Referrers { digest, .. } => Routed::Local(Endpoint::Referrers {
            name: local,
            digest,
        }),
        _ => return Err(read_only(&route)),
    })
}

/// `HEAD` of a proxied blob: from storage when stored, else the upstream's size (no fill).
async fn head_blob(cx: &Ctx<'_>, route: &proxy::Route, digest: Digest) -> Result<Routed, ApiError> {
    let px = cx.st.proxy.as_ref().expect("routed by the proxy");
    let local = route.local.clone();
    Ok(
        match px.blob_size(route, &digest).await.map_err(api_error)? {
            Some(size) if cx.st.registry.blob_size(&local, &digest).await.is_err() => {
                let (status, headers, _) = blobs::blob_headers(&digest, None, size);
                Routed::Done((status, headers, Body::empty()).into_response())
            }
            _ => Routed::Local(Endpoint::HeadBlob {
                name: local,
                digest,
            }),
        },
    )
}

/// `GET` of a proxied blob: from storage when stored, else (the range asked for, or all of it)
/// from the fill in progress as it arrives.
async fn get_blob(cx: &Ctx<'_>, route: &proxy::Route, digest: Digest) -> Result<Routed, ApiError> {
    let px = cx.st.proxy.as_ref().expect("routed by the proxy");
    Ok(match px.blob(route, &digest).await.map_err(api_error)? {
        BlobSource::Stored => Routed::Local(Endpoint::GetBlob {
            name: route.local.clone(),
            digest,
        }),
        BlobSource::Filling { size, fill } => {
            let range = blobs::requested_range(&cx.parts.headers, size)?;
            let (status, headers, _) = blobs::blob_headers(&digest, range.as_ref(), size);
            let stream = fill.stream(range.unwrap_or(0..size), size);
            let body = Body::from_stream(stream.inspect_ok(|b| METRICS.sent(b.len() as u64)));
            Routed::Done((status, headers, body).into_response())
        }
    })
}

/// The media types the client takes, joined into one list: clients send them as one list or as
/// several Accept headers. `None` when there is no Accept header.
fn accept_list(headers: &HeaderMap) -> Option<String> {
    let accept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!accept.is_empty()).then(|| accept.join(", "))
}

/// The error for a write to a pull-through cache.
fn read_only(route: &proxy::Route) -> ApiError {
    ApiError::new(
        ErrorCode::Denied,
        format!(
            "{} is a pull-through cache of {}; it cannot be written",
            route.local,
            route.upstream.name()
        ),
    )
}

/// The wire error for a cache failure. Upstream trouble is a 5xx (502, or 504 for a timeout), so
/// that a client with several hosts (containerd) moves on to the next.
fn api_error(e: ProxyError) -> ApiError {
    let msg = e.to_string();
    match e {
        ProxyError::NotFound { blob: true, .. } => ApiError::new(ErrorCode::BlobUnknown, msg),
        ProxyError::NotFound { blob: false, .. } => ApiError::new(ErrorCode::ManifestUnknown, msg),
        ProxyError::Timeout { .. } => {
            ApiError::new(ErrorCode::Unavailable, msg).with_status(StatusCode::GATEWAY_TIMEOUT)
        }
        ProxyError::Denied { .. } => ApiError::new(ErrorCode::Denied, msg),
        ProxyError::Unavailable { .. }
        | ProxyError::DigestMismatch { .. }
        | ProxyError::Invalid { .. } => {
            ApiError::new(ErrorCode::Unavailable, msg).with_status(StatusCode::BAD_GATEWAY)
        }
        ProxyError::Storage(_) => ApiError::new(
            ErrorCode::Unavailable,
            "storage is unavailable; retry later",
        )
        .with_internal(msg),
    }
}
