//! The distribution API handlers. One entry point, [`dispatch`], runs the handler of the
//! [`Endpoint`] that the routing layer found (admission, the request span and metrics are tower
//! layers around it, in [`crate::layers`]) and renders errors. Handlers are thin: they read headers and query parameters, call the storage service
//! with domain types and byte streams, and build the response the spec asks for.
//!
//! One file per resource, one function per endpoint:
//! - [`blobs`]: `GET`/`HEAD`/`DELETE` of a blob, ranges and the sendfile path.
//! - [`uploads`]: starting, appending to, closing and cancelling blob uploads.
//! - [`manifests`]: `GET`/`HEAD`/`PUT`/`DELETE` of a manifest.
//! - [`tags`]: the tag list and the catalog, paginated.
//! - [`referrers`]: the referrers index of a digest.
//! - `probe`: the built-in node probe image, answered from memory before anything else.
//! - `proxy`: names of configured upstreams go to the pull-through cache first.

pub mod blobs;
pub mod manifests;
mod probe;
mod proxy;
pub mod referrers;
pub mod tags;
pub mod uploads;

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
};
use http::request::Parts;
use http::StatusCode;
use serde_json::json;
use storage::{ByteStream, Store};

use crate::config::Config;
use crate::endpoint::{Endpoint, Route, RouteError};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::METRICS;

/// State shared by every request.
#[derive(Debug)]
pub struct AppState {
    /// The storage service.
    pub registry: Arc<Store>,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The pull-through cache, when upstreams are configured.
    pub proxy: Option<Arc<::proxy::Proxy>>,
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const CHUNK_MIN: HeaderName = HeaderName::from_static("oci-chunk-min-length");
const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");

type Query = Vec<(String, String)>;

/// What a handler returns: the answer, or the error to render.
pub(super) type Answer = Result<Response, ApiError>;

/// What every handler reads besides its path parameters and the body.
struct Ctx<'a> {
    st: &'a AppState,
    parts: &'a Parts,
    query: &'a Query,
}

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

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("server-built header values are ASCII")
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, [(CONTENT_LENGTH, "0")]).into_response()
}

fn json_response(body: serde_json::Value, content_type: &'static str) -> Response {
    let bytes = serde_json::to_vec(&body).expect("json serialises");
    ([(CONTENT_TYPE, content_type)], bytes).into_response()
}

/// The wire error for a path that names no endpoint.
fn route_error(e: RouteError, parts: &Parts) -> ApiError {
    match e {
        RouteError::NotFound => ApiError::new(
            ErrorCode::Unsupported,
            format!("no such endpoint: {}", parts.uri.path()),
        )
        .with_status(StatusCode::NOT_FOUND),
        RouteError::MethodNotAllowed(allow) => ApiError::new(
            ErrorCode::Unsupported,
            format!("{} is not allowed here", parts.method),
        )
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
        .with_header(http::header::ALLOW, allow),
        RouteError::Invalid(p) => p.into(),
        RouteError::ManifestUnknown(r) => storage::Error::ManifestUnknown(r).into(),
    }
}

/// Renders an error, logging server faults once (with their full cause).
fn error_response(e: ApiError, parts: &Parts) -> Response {
    if e.is_server_fault() {
        let cause = e.internal.as_deref().unwrap_or(&e.message);
        tracing::error!(status = e.status.as_u16(), error = %cause, uri = %parts.uri, "request failed");
    } else {
        tracing::debug!(status = e.status.as_u16(), error = %e.message, "request rejected");
    }
    e.into_response()
}

/// The single entry point for `/v2/...`, behind the layers of [`crate::layers`]: runs the
/// handler of the endpoint the [`Route`] names and renders its error, if any.
pub async fn dispatch(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let route = match parts.extensions.remove::<Route>() {
        Some(r) => r,
        None => Route::of(&parts.method, parts.uri.path()),
    };
    let query = query_of(&parts);
    let result = match route.0 {
        Ok(ep) => {
            let cx = Ctx {
                st: &st,
                parts: &parts,
                query: &query,
            };
            handle(&cx, ep, body).await
        }
        Err(e) => Err(route_error(e, &parts)),
    };
    result.unwrap_or_else(|e| error_response(e, &parts))
}

/// Adds what every `/v2/` answer carries: the API version, the `OCI-Namespace` a client asked
/// for with `?ns=`, and `Connection: close` on an error answered before the request body was
/// read (an HTTP/1 connection with unread body bytes cannot carry another request).
pub async fn wire_headers(req: Request, next: Next) -> Response {
    let close_on_error = has_body(req.headers()) && req.version() <= http::Version::HTTP_11;
    let ns = req
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "ns"))
        .and_then(|(_, v)| HeaderValue::from_str(&v).ok());
    let mut resp = next.run(req).await;
    let failed = resp.status().is_client_error() || resp.status().is_server_error();
    let h = resp.headers_mut();
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    if let Some(ns) = ns {
        h.insert(OCI_NAMESPACE, ns);
    }
    if close_on_error && failed {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Runs the handler of one endpoint.
async fn handle(cx: &Ctx<'_>, ep: Endpoint, body: Body) -> Answer {
    use Endpoint as E;
    if let Some(answer) = probe::answer(cx, &ep) {
        return answer;
    }
    let ep = match proxy::route(cx, ep).await? {
        proxy::Routed::Local(ep) => ep,
        proxy::Routed::Done(resp) => return Ok(resp),
    };
    match ep {
        E::Base => Ok(json_response(json!({}), "application/json")),
        E::GetBlob { name, digest } | E::HeadBlob { name, digest } => {
            blobs::get(cx, name, digest).await
        }
        E::DeleteBlob { name, digest } => blobs::delete(cx, name, digest).await,
        E::StartUpload { name } => uploads::start(cx, name, body).await,
        E::GetUpload { name, id } => uploads::status(cx, name, id).await,
        E::PatchUpload { name, id } => uploads::patch(cx, name, id, body).await,
        E::PutUpload { name, id } => uploads::finish(cx, name, id, body).await,
        E::DeleteUpload { name, id } => uploads::cancel(cx, name, id).await,
        E::GetManifest { name, reference } => manifests::get(cx, name, reference).await,
        E::HeadManifest { name, reference } => manifests::head(cx, name, reference).await,
        E::PutManifest { name, reference } => manifests::put(cx, name, reference, body).await,
        E::DeleteManifest { name, reference } => manifests::delete(cx, name, reference).await,
        E::ListTags { name } => tags::list(cx, name).await,
        E::Catalog => tags::catalog(cx).await,
        E::Referrers { name, digest } => referrers::list(cx, name, digest).await,
    }
}
