//! The tower layers around the distribution API, outermost first:
//!
//! 1. [`classify`] parses the path into an [`Endpoint`] once and leaves it on the request as a
//!    [`Route`], where every inner layer and the handler read it;
//! 2. a `tower-http` trace layer opens the span `request{endpoint, method}` that every log line
//!    of the request (and of its body) carries;
//! 3. [`observe`] counts the request in the metrics (in flight, uploads, status, latency) and logs
//!    `request done` at debug level;
//! 4. [`access_log`] writes one `info` line per request (unless `access_log = false`), with the
//!    caller's identity that access control leaves on the answer;
//! 5. [`crate::api::wire_headers`] adds what every `/v2/` answer carries;
//! 6. [`admit`] answers 429 with `Retry-After` beyond `max_concurrent_requests`;
//! 7. with an `[auth]` section, [`crate::auth::layer`] identifies the caller (leaving its
//!    [`Identity`] on the request and on the answer) and refuses what the rules do not allow;
//! 8. with events configured, [`crate::events::request_context`] makes the request's details
//!    (and the identity, as the `actor`) visible to the events written while it runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tokio::sync::Semaphore;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use crate::auth::{Auth, Identity};
use crate::config::Config;
use crate::endpoint::{Endpoint, Route};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::METRICS;

/// The `/v2/` API as one service: `api` (the handler, state applied) inside the layers above;
/// access control only with `auth`, the access log only when on, the request context only with
/// events. The layers wrap the handler once, not each route of a router, so a request clones
/// the stack once (one allocation) instead of once per layer.
pub fn around_api(api: MethodRouter, config: &Config, auth: Option<Arc<Auth>>) -> ApiService {
    let permits = Arc::new(Semaphore::new(config.max_concurrent_requests));
    let events = config.events.active().next().is_some();
    let stack = ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(from_fn(classify))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let endpoint = req
                        .extensions()
                        .get::<Route>()
                        .map_or("invalid", Route::label);
                    tracing::info_span!("request", endpoint, method = %req.method())
                })
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(from_fn(observe))
        .option_layer(config.access_log.then(|| from_fn(access_log)))
        .layer(from_fn(crate::api::wire_headers))
        .layer(from_fn_with_state(permits, admit))
        .option_layer(auth.map(|a| from_fn_with_state(a, crate::auth::layer)))
        .option_layer(events.then(|| from_fn(crate::events::request_context)))
        .service(api);
    BoxCloneSyncService::new(stack)
}

/// The `/v2/` API with its layers, as [`around_api`] builds it.
pub type ApiService = BoxCloneSyncService<Request, Response, std::convert::Infallible>;

/// Parses the endpoint of a `/v2/...` request and leaves it on the request.
pub async fn classify(mut req: Request, next: Next) -> Response {
    let route = Route::of(req.method(), req.uri().path());
    req.extensions_mut().insert(route);
    next.run(req).await
}

/// Counts the request in the metrics and logs it when the answer is ready.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = METRICS.enter();
    let route = req.extensions().get::<Route>();
    let label = route.map_or("invalid", Route::label);
    let _upload = matches!(
        route.and_then(Route::endpoint),
        Some(
            Endpoint::PatchUpload { .. }
                | Endpoint::PutUpload { .. }
                | Endpoint::StartUpload { .. }
        )
    )
    .then(|| METRICS.enter_upload());
    let uri = req.uri().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        METRICS.storage_error();
    }
    METRICS.request(label, status.as_u16(), started.elapsed());
    tracing::debug!(
        uri = %uri,
        status = status.as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request done"
    );
    resp
}

/// Serves the request while one of `permits` is free; otherwise answers 429 at once.
pub async fn admit(State(permits): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        METRICS.overload();
        tracing::debug!("request rejected: at the concurrency limit");
        return ApiError::new(
            ErrorCode::TooManyRequests,
            "the registry is at its concurrency limit; retry shortly",
        )
        .with_header(http::header::RETRY_AFTER, "1")
        .into_response();
    };
    next.run(req).await
}

/// Whether the log filter lets access lines through now (`--log-level warn` does not): the
/// access log and what only it reads (the identity on the answer) are skipped otherwise.
pub fn access_logged() -> bool {
    tracing::enabled!(target: crate::distribution::access_line::TARGET, tracing::Level::INFO)
}

/// Writes one `info` line per request under the target `registry::access`: method, endpoint,
/// repository, reference, status, bytes of the answer, duration to the answer's head and the
/// client's address (as the JSON log format's fields too). With access control on, `identity`
/// names the caller (a user, `system:serviceaccount:<ns>:<name>`, a client certificate's
/// subject, or `anonymous`; absent when its credentials were refused), as the auth layer left it
/// on the answer. Off with `access_log = false`.
pub async fn access_log(req: Request, next: Next) -> Response {
    if !access_logged() {
        return next.run(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<Route>();
    let endpoint = route.map_or("invalid", Route::label);
    let (repository, reference) = match route.and_then(Route::endpoint).map(Endpoint::target) {
        Some((name, reference)) => (name.map(ToString::to_string), reference),
        None => (None, None),
    };
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let resp = next.run(req).await;
    let bytes = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .or_else(|| http_body::Body::size_hint(resp.body()).exact())
        .unwrap_or(0);
    let identity = resp.extensions().get::<Identity>().map(Identity::display);
    tracing::info!(
        target: crate::distribution::access_line::TARGET,
        method = %method,
        endpoint,
        repository = repository.as_deref().unwrap_or(""),
        reference = reference.as_deref().unwrap_or(""),
        status = resp.status().as_u16(),
        bytes,
        micros = started.elapsed().as_micros() as u64,
        client = client.map(tracing::field::display),
        identity,
        "access"
    );
    resp
}
