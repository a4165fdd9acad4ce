//! Building the router and running the server until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use http::StatusCode;
use storage::fs::FsBackend;
use storage::{Options, Registry};
use tokio::net::TcpListener;

use crate::api::{dispatch, AppState};
use crate::config::Config;
use crate::error::{ApiError, ErrorCode};

/// Opens the storage named by the configuration.
pub fn open_registry(config: &Config) -> anyhow::Result<Registry> {
    let backend = FsBackend::new(&config.storage, config.fsync)?;
    Ok(Registry::new(
        Arc::new(backend),
        Options {
            auto_mount: config.auto_mount,
            max_manifest_size: config.max_manifest_size,
        },
    ))
}

/// The HTTP application: health endpoints and the distribution API.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .fallback(not_found)
        .with_state(state)
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    match st.registry.ping().await {
        Ok(()) => "ok\n".into_response(),
        Err(e) => {
            tracing::warn!(error = %crate::error::error_chain(&e), "storage not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        StatusCode::NOT_FOUND,
        "no such endpoint; the API lives under /v2/",
    )
}

/// Serves `config` on `listener` until `shutdown` completes, then lets requests in flight finish
/// for at most `config.shutdown_timeout` seconds.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = open_registry(&config)?;
    let grace = Duration::from_secs(config.shutdown_timeout);
    let state = Arc::new(AppState {
        registry: Arc::new(registry),
        config: Arc::new(config),
    });
    let app = router(state);
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let mut rx2 = rx.clone();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = rx.wait_for(|v| *v).await;
    });
    tokio::select! {
        res = serve => res.map_err(Into::into),
        _ = async move {
            let _ = rx2.wait_for(|v| *v).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(seconds = grace.as_secs(), "requests still running after the shutdown timeout; exiting");
            Ok(())
        }
    }
}
