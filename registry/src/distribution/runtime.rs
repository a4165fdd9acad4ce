//! What a Distribution configuration changes while serving: response headers, read-only mode,
//! deletes off, the debug server with `/debug/health`, and the start-up messages.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::Extras;
use crate::api::AppState;
use crate::error::{ApiError, ErrorCode};

/// Logs what the configuration's source, notes and unsupported keys are (once, at start).
pub fn log_startup(x: &Extras) {
    if x.source.is_empty() {
        return;
    }
    tracing::info!(source = %x.source, "read a CNCF Distribution configuration");
    for n in &x.notes {
        tracing::info!("{n}");
    }
    if x.delete_disabled {
        tracing::info!("deletes are disabled (storage.delete.enabled is not true): DELETE answers 405 UNSUPPORTED");
    }
    if x.read_only {
        tracing::warn!(
            "read-only mode (storage.maintenance.readonly): writes answer 405 UNSUPPORTED"
        );
    }
    if !x.unsupported.is_empty() {
        tracing::warn!(
            keys = %x.unsupported.join(", "),
            "Distribution configuration keys without effect in this registry"
        );
    }
}

/// Middleware: refuses writes in read-only mode and deletes when they are off, and adds the
/// configured response headers.
pub async fn guard(State(x): State<Arc<Extras>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v2/") {
        let m = req.method();
        let write = matches!(
            *m,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if x.read_only && write {
            return with_headers(
                &x,
                ApiError::new(ErrorCode::Unsupported, "the registry is in read-only mode")
                    .with_status(StatusCode::METHOD_NOT_ALLOWED)
                    .into_response(),
            );
        }
        if x.delete_disabled && *m == Method::DELETE {
            return with_headers(
                &x,
                ApiError::new(
                    ErrorCode::Unsupported,
                    "deletes are disabled (storage.delete.enabled)",
                )
                .with_status(StatusCode::METHOD_NOT_ALLOWED)
                .into_response(),
            );
        }
    }
    with_headers(&x, next.run(req).await)
}

fn with_headers(x: &Extras, mut resp: Response) -> Response {
    for (k, vs) in &x.headers {
        let Ok(name) = HeaderName::try_from(k.as_str()) else {
            continue;
        };
        for v in vs {
            if let Ok(v) = HeaderValue::try_from(v.as_str()) {
                resp.headers_mut().append(name.clone(), v);
            }
        }
    }
    resp
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.registry.ping().await {
        Ok(()) => (
            [(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            "{}",
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            serde_json::json!({ "storagedriver_filesystem": crate::error::error_chain(&e) })
                .to_string(),
        )
            .into_response(),
    }
}

async fn metrics() -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        format!(
            "{}{}",
            crate::metrics::METRICS.render(),
            crate::events::render_metrics()
        ),
    )
        .into_response()
}

/// Starts the debug server (`http.debug.addr`) when configured: `/debug/health` (200 `{}` while
/// storage answers) and the metrics at `http.debug.prometheus.path` when enabled.
pub async fn start_debug(
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let x = &state.config.distribution;
    let Some(addr) = &x.debug_addr else {
        return Ok(());
    };
    let addr = super::values::socket_addr(addr)?;
    let mut app = Router::new().route("/debug/health", get(health));
    if let Some(p) = &x.debug_metrics_path {
        app = app.route(p, get(metrics));
    }
    let app = app.with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding http.debug.addr {addr}: {e}"))?;
    tracing::info!(debug_addr = %listener.local_addr()?, "debug server (/debug/health)");
    tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|v| *v).await;
            })
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "debug server ended");
        }
    });
    Ok(())
}
