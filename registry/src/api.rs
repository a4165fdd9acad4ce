//! The distribution API handlers. One entry point, [`dispatch`], parses the path into an
//! [`Endpoint`], runs the matching handler inside a span named after the endpoint, and renders
//! errors. Handlers are thin: they read headers and query parameters, call the storage service
//! with domain types and byte streams, and build the response the spec asks for.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::TryStreamExt;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, LINK, LOCATION, RANGE, TRANSFER_ENCODING,
};
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::json;
use storage::{Algorithm, ByteStream, Digest, Reference, Registry, RepoName, Tag};
use tracing::Instrument;

use crate::config::Config;
use crate::endpoint::{Endpoint, RouteError};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::METRICS;
use crate::sendfile::ZeroCopy;

/// State shared by every request.
#[derive(Debug)]
pub struct AppState {
    /// The storage service.
    pub registry: Arc<Registry>,
    /// The configuration in force.
    pub config: Arc<Config>,
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const CHUNK_MIN: HeaderName = HeaderName::from_static("oci-chunk-min-length");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
const OCI_FILTERS: HeaderName = HeaderName::from_static("oci-filters-applied");
const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");

/// Most tags one manifest push may create through `?tag=`.
const MAX_PUSH_TAGS: usize = 100;

/// The `Range` header value for an upload holding `offset` bytes (`0-<last byte>`; `0-0` when
/// empty, as clients expect).
pub fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

type Query = Vec<(String, String)>;

fn query_of(parts: &Parts) -> Query {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn param<'a>(q: &'a Query, key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The request body as a byte stream. A body that stalls for `timeout_secs` between two chunks
/// fails with `TimedOut`, so a stalled client cannot hold an upload open forever.
fn body_stream(body: Body, timeout_secs: u64) -> ByteStream {
    let limit = std::time::Duration::from_secs(timeout_secs.max(1));
    let data = body.into_data_stream();
    Box::pin(futures::stream::unfold(data, move |mut data| async move {
        match tokio::time::timeout(limit, futures::StreamExt::next(&mut data)).await {
            Ok(Some(Ok(b))) => {
                METRICS.received(b.len() as u64);
                Some((Ok(b), data))
            }
            Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), data)),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("request body stalled for {} s", limit.as_secs()),
                )),
                data,
            )),
        }
    }))
}

/// Most bytes read and thrown away from a rejected request body, so the client reads the answer
/// instead of a connection reset (closing a socket with unread data makes the kernel send RST).
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads and discards what is left of a rejected body, up to [`DRAIN_LIMIT`] bytes and 10 s. A
/// body declared larger than that is not read at all: the connection closes after the answer.
async fn drain(body: Body, declared: Option<u64>) {
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return;
    }
    let mut data = body.into_data_stream();
    let mut n = 0u64;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(b)) = futures::StreamExt::next(&mut data).await {
            n += b.len() as u64;
            if n > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// Whether the request carries a body at all (a PUT closing an upload may or may not).
fn has_body(h: &HeaderMap) -> bool {
    match content_length(h) {
        Some(n) => n > 0,
        None => h.contains_key(TRANSFER_ENCODING),
    }
}

fn bad_request(code: ErrorCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(code, StatusCode::BAD_REQUEST, msg)
}

/// Parses `Content-Range` of an upload chunk: `<start>-<end>`, inclusive, optionally written as
/// `bytes <start>-<end>/<total>`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes ")
        .or_else(|| v.strip_prefix("bytes="))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    Some((a, b))
}

/// A blob `Range` request resolved against the size: `None` to serve the whole blob (no header,
/// or one this server ignores, such as multiple ranges), `Some(Err)` when unsatisfiable.
pub fn parse_range(v: &str, size: u64) -> Option<Result<Range<u64>, ()>> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok(size.saturating_sub(n)..size));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        size
    } else {
        let last: u64 = b.parse().ok()?;
        if last < start {
            return None;
        }
        last.saturating_add(1).min(size)
    };
    if start >= size {
        return Some(Err(()));
    }
    Some(Ok(start..end))
}

fn upload_location(name: &RepoName, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn upload_response(status: StatusCode, name: &RepoName, id: &str, offset: u64) -> Response {
    (
        status,
        [
            (LOCATION, upload_location(name, id)),
            (RANGE, range_header(offset)),
            (UPLOAD_UUID, id.to_owned()),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
    )
        .into_response()
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (CONTENT_DIGEST, digest.to_string()),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
    )
        .into_response()
}

fn json_response(body: serde_json::Value, content_type: &'static str) -> Response {
    let bytes = serde_json::to_vec(&body).expect("json serialises");
    ([(CONTENT_TYPE, content_type)], bytes).into_response()
}

/// A `Link` header to the page after `last` of at most `n` items, keeping the `extra` query
/// parameters (a filter).
fn link_next(path: &str, n: usize, last: &str, extra: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(format!("n={n}"));
    query.append_pair("last", last).extend_pairs(extra);
    format!("<{path}?{}>; rel=\"next\"", query.finish())
}

fn page_params(q: &Query) -> Result<(Option<usize>, Option<&str>), ApiError> {
    let n = match param(q, "n") {
        None | Some("") => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            bad_request(
                ErrorCode::Unsupported,
                format!("n must be a non-negative integer, not {v:?}"),
            )
        })?),
    };
    Ok((n, param(q, "last").filter(|l| !l.is_empty())))
}

/// The single entry point for `/v2/...`.
pub async fn dispatch(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let _in_flight = METRICS.enter();
    let (parts, body) = req.into_parts();
    let rest = parts
        .uri
        .path()
        .strip_prefix("/v2")
        .map(|r| r.strip_prefix('/').unwrap_or(r))
        .unwrap_or("");
    let parsed = Endpoint::parse(&parts.method, rest);
    let label = parsed.as_ref().map(Endpoint::name).unwrap_or("invalid");
    let span = tracing::info_span!("request", endpoint = label, method = %parts.method);
    let query = query_of(&parts);
    // An error may be answered before the request body is read; an HTTP/1 connection with
    // unread body bytes cannot carry another request, so such answers close it.
    let close_on_error = has_body(&parts.headers) && parts.version <= http::Version::HTTP_11;
    let overloaded = METRICS.in_flight() > st.config.max_concurrent_requests as u64;
    let _upload = matches!(
        parsed,
        Ok(Endpoint::PatchUpload { .. }
            | Endpoint::PutUpload { .. }
            | Endpoint::StartUpload { .. })
    )
    .then(|| METRICS.enter_upload());
    let result = async {
        if overloaded {
            METRICS.overload();
            return Err(ApiError::new(
                ErrorCode::TooManyRequests,
                StatusCode::TOO_MANY_REQUESTS,
                "the registry is at its concurrency limit; retry shortly",
            )
            .with_header(http::header::RETRY_AFTER, "1"));
        }
        let ep = parsed.map_err(|e| match e {
            RouteError::NotFound => ApiError::new(
                ErrorCode::Unsupported,
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {}", parts.uri.path()),
            ),
            RouteError::MethodNotAllowed(allow) => ApiError::new(
                ErrorCode::Unsupported,
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed here", parts.method),
            )
            .with_header(http::header::ALLOW, allow),
            RouteError::Invalid(p) => p.into(),
            RouteError::ManifestUnknown(r) => storage::Error::ManifestUnknown(r).into(),
        })?;
        handle(&st, ep, &parts, &query, body).await
    }
    .instrument(span.clone())
    .await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let _enter = span.enter();
            if e.is_server_fault() {
                METRICS.storage_error();
                let cause = e.internal.as_deref().unwrap_or(&e.message);
                tracing::error!(status = e.status.as_u16(), error = %cause, uri = %parts.uri, "request failed");
            } else {
                tracing::debug!(status = e.status.as_u16(), error = %e.message, "request rejected");
            }
            let mut resp = e.into_response();
            if close_on_error {
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    let h = resp.headers_mut();
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    if let Some(ns) = param(&query, "ns").and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(OCI_NAMESPACE, ns);
    }
    METRICS.request(label, resp.status().as_u16(), started.elapsed());
    let _enter = span.enter();
    tracing::debug!(
        uri = %parts.uri,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request done"
    );
    resp
}

async fn handle(
    st: &AppState,
    ep: Endpoint,
    parts: &Parts,
    q: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let reg = &st.registry;
    let h = &parts.headers;
    match ep {
        Endpoint::Base => Ok(json_response(json!({}), "application/json")),

        Endpoint::GetBlob { name, digest } | Endpoint::HeadBlob { name, digest } => {
            let size = reg.blob_size(&name, &digest).await?;
            let range = match h.get(RANGE).and_then(|v| v.to_str().ok()) {
                Some(v) => match parse_range(v, size) {
                    Some(Err(())) => {
                        return Err(ApiError::new(
                            ErrorCode::BlobUnknown,
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            format!("range {v} is outside the blob of {size} bytes"),
                        )
                        .with_header(CONTENT_RANGE, format!("bytes */{size}")))
                    }
                    Some(Ok(r)) => Some(r),
                    None => None,
                },
                None => None,
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            headers.insert(CONTENT_DIGEST, header_value(&digest.to_string()));
            headers.insert(ETAG, header_value(&format!("\"{digest}\"")));
            headers.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=31536000"),
            );
            let (status, len) = match &range {
                Some(r) => {
                    headers.insert(
                        CONTENT_RANGE,
                        header_value(&format!("bytes {}-{}/{size}", r.start, r.end - 1)),
                    );
                    (StatusCode::PARTIAL_CONTENT, r.end - r.start)
                }
                None => (StatusCode::OK, size),
            };
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            // Sent from the file when the connection can (plain HTTP/1.x) and the backend has one.
            let from_file = match parts.extensions.get::<ZeroCopy>() {
                Some(zc)
                    if parts.method != Method::HEAD
                        && parts.version <= http::Version::HTTP_11
                        && len > 0 =>
                {
                    reg.blob_file(&digest)
                        .await?
                        .map(|file| zc.body(file, range.clone().unwrap_or(0..size)))
                }
                _ => None,
            };
            let body = if parts.method == Method::HEAD {
                Body::empty()
            } else if let Some(file_body) = from_file {
                Body::new(file_body)
            } else {
                Body::from_stream(
                    reg.blob_read(&digest, range)
                        .await?
                        .inspect_ok(|b| METRICS.sent(b.len() as u64)),
                )
            };
            Ok((status, headers, body).into_response())
        }

        Endpoint::DeleteBlob { name, digest } => {
            reg.blob_delete(&name, &digest).await?;
            Ok(accepted())
        }

        Endpoint::StartUpload { name } => start_upload(st, &name, h, q, body).await,

        Endpoint::GetUpload { name, id } => {
            let s = reg.upload_status(&name, &id).await?;
            Ok(upload_response(
                StatusCode::NO_CONTENT,
                &name,
                &id,
                s.offset,
            ))
        }

        Endpoint::PatchUpload { name, id } => {
            let (start, len) = chunk_bounds(h)?;
            let body = check_chunk_start(reg, &name, &id, start, content_length(h), body).await?;
            let s = reg
                .upload_append(
                    &name,
                    &id,
                    start,
                    len,
                    body_stream(body, st.config.body_timeout),
                )
                .await
                .map_err(|e| with_upload_location(e, &name, &id))?;
            Ok(upload_response(StatusCode::ACCEPTED, &name, &id, s.offset))
        }

        Endpoint::PutUpload { name, id } => {
            let digest: Digest = param(q, "digest")
                .ok_or_else(|| {
                    bad_request(
                        ErrorCode::DigestInvalid,
                        "closing an upload needs ?digest=<digest of the whole blob>",
                    )
                })?
                .parse()?;
            let (start, len) = chunk_bounds(h)?;
            let body = check_chunk_start(reg, &name, &id, start, content_length(h), body).await?;
            let data = has_body(h).then(|| body_stream(body, st.config.body_timeout));
            reg.upload_finish(&name, &id, &digest, start, len, data)
                .await
                .map_err(|e| with_upload_location(e, &name, &id))?;
            Ok(blob_created(&name, &digest))
        }

        Endpoint::DeleteUpload { name, id } => {
            reg.upload_cancel(&name, &id).await?;
            Ok((StatusCode::NO_CONTENT, [(CONTENT_LENGTH, "0")]).into_response())
        }

        Endpoint::GetManifest { name, reference } => {
            let (info, bytes) = reg.manifest_get(&name, &reference).await?;
            METRICS.sent(bytes.len() as u64);
            Ok(manifest_response(&info, Body::from(bytes)))
        }

        Endpoint::HeadManifest { name, reference } => {
            let info = reg.manifest_info(&name, &reference).await?;
            Ok(manifest_response(&info, Body::empty()))
        }

        Endpoint::PutManifest { name, reference } => {
            put_manifest(st, &name, &reference, h, q, body).await
        }

        Endpoint::DeleteManifest { name, reference } => {
            reg.manifest_delete(&name, &reference).await?;
            Ok(accepted())
        }

        Endpoint::ListTags { name } => {
            let (n, last) = page_params(q)?;
            let page = reg.tags(&name, n, last).await?;
            let mut resp = json_response(
                json!({ "name": name.as_str(), "tags": page.items }),
                "application/json",
            );
            if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
                let link = link_next(&format!("/v2/{name}/tags/list"), n, last, &[]);
                resp.headers_mut().insert(LINK, header_value(&link));
            }
            Ok(resp)
        }

        Endpoint::Catalog => {
            let (n, last) = page_params(q)?;
            let page = reg.catalog(n, last).await?;
            let mut resp = json_response(json!({ "repositories": page.items }), "application/json");
            if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
                resp.headers_mut()
                    .insert(LINK, header_value(&link_next("/v2/_catalog", n, last, &[])));
            }
            Ok(resp)
        }

        Endpoint::Referrers { name, digest } => {
            let filter = param(q, "artifactType").filter(|a| !a.is_empty());
            let (n, last) = page_params(q)?;
            let n = n.map_or(st.config.referrers_page_size, |n| {
                n.min(st.config.referrers_page_size)
            });
            let last: Option<Digest> = last.map(str::parse).transpose()?;
            let page = reg
                .referrers(&name, &digest, filter, n, last.as_ref())
                .await?;
            let mut resp = json_response(
                json!({
                    "schemaVersion": 2,
                    "mediaType": storage::manifest::OCI_INDEX,
                    "manifests": page.descriptors,
                }),
                storage::manifest::OCI_INDEX,
            );
            let h = resp.headers_mut();
            if filter.is_some() {
                h.insert(OCI_FILTERS, HeaderValue::from_static("artifactType"));
            }
            if let (true, Some(last)) = (page.more, page.descriptors.last()) {
                let extra: Vec<(&str, &str)> =
                    filter.map(|at| ("artifactType", at)).into_iter().collect();
                let next = link_next(
                    &format!("/v2/{name}/referrers/{digest}"),
                    n,
                    &last.digest.to_string(),
                    &extra,
                );
                h.insert(LINK, header_value(&next));
            }
            Ok(resp)
        }
    }
}

/// Answers a chunk that does not start where the upload ends with 416 after draining it. The
/// storage service checks again under its lock; this early check lets the client read the 416.
async fn check_chunk_start(
    reg: &Registry,
    name: &RepoName,
    id: &str,
    start: Option<u64>,
    declared: Option<u64>,
    body: Body,
) -> Result<Body, ApiError> {
    let Some(start) = start else { return Ok(body) };
    let offset = reg.upload_status(name, id).await?.offset;
    if start == offset {
        return Ok(body);
    }
    drain(body, declared).await;
    Err(with_upload_location(
        storage::Error::RangeInvalid { start, offset },
        name,
        id,
    ))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("server-built header values are ASCII")
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, [(CONTENT_LENGTH, "0")]).into_response()
}

fn with_upload_location(e: storage::Error, name: &RepoName, id: &str) -> ApiError {
    let range = matches!(e, storage::Error::RangeInvalid { .. });
    let api: ApiError = e.into();
    if range {
        api.with_header(LOCATION, upload_location(name, id))
    } else {
        api
    }
}

/// The chunk's start (from `Content-Range`) and declared length (from `Content-Range`, else
/// `Content-Length`).
fn chunk_bounds(h: &HeaderMap) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let cl = content_length(h);
    let Some(raw) = h.get(CONTENT_RANGE) else {
        return Ok((None, cl));
    };
    let text = raw.to_str().unwrap_or("");
    let (start, end) = parse_content_range(text).ok_or_else(|| {
        bad_request(
            ErrorCode::BlobUploadInvalid,
            format!("Content-Range must be <start>-<end>, not {text:?}"),
        )
    })?;
    if end < start {
        return Err(ApiError::new(
            ErrorCode::BlobUploadInvalid,
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("Content-Range {text} ends before it starts"),
        ));
    }
    let len = (end - start).checked_add(1).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BlobUploadInvalid,
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("Content-Range {text} is larger than any blob"),
        )
    })?;
    if let Some(cl) = cl {
        if cl != len {
            return Err(bad_request(
                ErrorCode::SizeInvalid,
                format!("Content-Range covers {len} bytes but Content-Length is {cl}"),
            ));
        }
    }
    Ok((Some(start), Some(len)))
}

async fn start_upload(
    st: &AppState,
    name: &RepoName,
    h: &HeaderMap,
    q: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let reg = &st.registry;
    if let Some(mount) = param(q, "mount") {
        let digest: Digest = mount.parse()?;
        let from: Option<RepoName> = param(q, "from")
            .filter(|f| !f.is_empty())
            .map(str::parse)
            .transpose()?;
        if reg.blob_mount(name, &digest, from.as_ref()).await? {
            return Ok(blob_created(name, &digest));
        }
    } else if let Some(d) = param(q, "digest") {
        let digest: Digest = d.parse()?;
        // A POST with a digest and a body is a whole upload; without a body, open a session.
        if has_body(h) || content_length(h).is_none() && digest_is_empty(&digest) {
            reg.blob_put(
                name,
                &digest,
                content_length(h),
                body_stream(body, st.config.body_timeout),
            )
            .await?;
            return Ok(blob_created(name, &digest));
        }
    }
    let alg = match param(q, "digest-algorithm") {
        Some(a) => a.parse::<Algorithm>().map_err(|_| {
            bad_request(
                ErrorCode::Unsupported,
                format!("digest-algorithm {a:?} is not supported (sha256, sha512)"),
            )
        })?,
        None => param(q, "digest")
            .and_then(|d| d.parse::<Digest>().ok())
            .map(|d| d.algorithm())
            .unwrap_or(Algorithm::Sha256),
    };
    let s = reg.upload_start(name, alg).await?;
    let mut resp = upload_response(StatusCode::ACCEPTED, name, &s.id, 0);
    let min = reg.backend().min_chunk();
    if min > 0 {
        resp.headers_mut().insert(CHUNK_MIN, HeaderValue::from(min));
    }
    Ok(resp)
}

fn digest_is_empty(d: &Digest) -> bool {
    *d == storage::hash::digest_of(d.algorithm(), b"")
}

fn manifest_response(info: &storage::ManifestInfo, body: Body) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&info.media_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(CONTENT_DIGEST, header_value(&info.digest.to_string()));
    headers.insert(ETAG, header_value(&format!("\"{}\"", info.digest)));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(info.size));
    (StatusCode::OK, headers, body).into_response()
}

async fn put_manifest(
    st: &AppState,
    name: &RepoName,
    reference: &Reference,
    h: &HeaderMap,
    q: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = st.config.max_manifest_size;
    let too_large = |size: usize| ApiError::from(storage::Error::ManifestTooLarge { size, limit });
    if let Some(cl) = content_length(h) {
        if cl > limit as u64 {
            drain(body, Some(cl)).await;
            return Err(too_large(cl as usize));
        }
    }
    let mut data = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut failed = None;
    while let Some(chunk) = futures::StreamExt::next(&mut data).await {
        match chunk {
            Ok(b) if buf.len() + b.len() <= limit => buf.extend_from_slice(&b),
            Ok(_) => {
                drain(Body::from_stream(data), content_length(h)).await;
                return Err(too_large(limit + 1));
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let bytes: Bytes = match failed {
        None => buf.freeze(),
        Some(e) => {
            return Err(bad_request(
                ErrorCode::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            ))
        }
    };
    let tags: Vec<Tag> = q
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.parse())
        .collect::<Result<_, _>>()?;
    if tags.len() > MAX_PUSH_TAGS {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            StatusCode::URI_TOO_LONG,
            format!("at most {MAX_PUSH_TAGS} tags per push"),
        ));
    }
    let ct = h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let pushed = st
        .registry
        .manifest_put(name, reference, ct, bytes, &tags)
        .await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        LOCATION,
        header_value(&format!("/v2/{name}/manifests/{}", pushed.digest)),
    );
    headers.insert(CONTENT_DIGEST, header_value(&pushed.digest.to_string()));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    if let Some(s) = &pushed.subject {
        headers.insert(OCI_SUBJECT, header_value(&s.to_string()));
    }
    for t in &tags {
        headers.append(OCI_TAG, header_value(t.as_str()));
    }
    Ok((StatusCode::CREATED, headers).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok(0..10)));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=90-200", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Ok(0..100)));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-1", 100), None);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-6"), Some((5, 6)));
        assert_eq!(parse_content_range("-5"), None);
        assert_eq!(parse_content_range("a-b"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn upload_range_header() {
        assert_eq!(range_header(0), "0-0");
        assert_eq!(range_header(10), "0-9");
    }

    #[test]
    fn next_link() {
        assert_eq!(
            link_next("/v2/a/tags/list", 2, "v1.0", &[]),
            "</v2/a/tags/list?n=2&last=v1.0>; rel=\"next\""
        );
        assert_eq!(
            link_next(
                "/v2/a/referrers/sha256:1",
                3,
                "sha256:2",
                &[("artifactType", "a/b+c")]
            ),
            "</v2/a/referrers/sha256:1?n=3&last=sha256%3A2&artifactType=a%2Fb%2Bc>; rel=\"next\""
        );
    }
}
