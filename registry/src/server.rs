//! Building the router and running the server until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use http::StatusCode;
use storage::fs::FsBackend;
use storage::{Options, Store};
use tokio::net::TcpListener;

use crate::api::{dispatch, AppState};
use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::tls::TlsServer;

/// Opens the storage named by the configuration.
pub fn open_registry(config: &Config) -> anyhow::Result<Store> {
    let backend: Arc<dyn storage::Backend> = if config.storage.contains("://") {
        let path = config.storage.strip_prefix("file://");
        match path {
            Some(p) => Arc::new(FsBackend::new(p, config.fsync)?),
            None => Arc::new(storage::object::ObjectBackend::from_url(
                &config.storage,
                config.resolved_storage_options()?,
            )?),
        }
    } else {
        Arc::new(FsBackend::new(&config.storage, config.fsync)?)
    };
    Ok(Store::new(
        backend,
        Options {
            auto_mount: config.auto_mount,
            max_manifest_size: config.max_manifest_size,
            sparse: config.sparse.clone(),
        },
    ))
}

/// The HTTP application: health endpoints and the distribution API, without access control.
pub fn router(state: Arc<AppState>) -> Router {
    app(state, None)
}

/// The HTTP application: health endpoints and the distribution API; with `auth`, access control
/// on the `/v2/` routes and `GET /token`.
pub fn app(state: Arc<AppState>, auth: Option<Arc<crate::auth::Auth>>) -> Router {
    let extras = Arc::new(state.config.distribution.clone());
    // The outer router matches the `/v2` paths; inside the layers the handler is called directly.
    let api = any(dispatch).with_state(state.clone());
    let api = crate::layers::around_api(api, &state.config, auth.clone());
    let mut root = Router::new()
        .route_service("/v2", api.clone())
        .route_service("/v2/", api.clone())
        .route_service("/v2/{*rest}", api)
        .route("/", get(|| async { "" }))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if let Some(a) = auth {
        root = root.route("/token", crate::auth::token_route(a));
    }
    root.fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            extras,
            crate::distribution::runtime::guard,
        ))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut text = crate::metrics::METRICS.render();
    if let Some(p) = &st.proxy {
        p.render_metrics(&mut text);
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text + &crate::events::render_metrics(),
    )
        .into_response()
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
        "no such endpoint; the API lives under /v2/",
    )
    .with_status(StatusCode::NOT_FOUND)
}

/// Serves `config` on `listener` until `shutdown` completes, then lets requests in flight finish
/// for at most `config.shutdown_timeout` seconds. With `config.tls_cert` set, also serves HTTPS on
/// `config.tls_listen`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_tls(listener, None, config, shutdown).await
}

/// Loads the certificate and binds the HTTPS listener (the one given, or `config.tls_listen`)
/// when `config.tls_cert` and `config.tls_key` are set; `None` otherwise.
async fn bind_tls(
    tls_listener: Option<TcpListener>,
    config: &Config,
) -> anyhow::Result<Option<(TcpListener, Arc<TlsServer>)>> {
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = TlsServer::load(cert, key, config.tls_client_ca.as_deref())?;
            let l = match tls_listener {
                Some(l) => l,
                None => TcpListener::bind(config.tls_listen)
                    .await
                    .with_context(|| format!("binding tls_listen {}", config.tls_listen))?,
            };
            tracing::info!(
                tls_listen = %l.local_addr()?,
                cert = %cert.display(),
                sha256 = %tls.current_fingerprint(),
                mutual_tls = config.tls_client_ca.is_some(),
                "serving HTTPS (HTTP/2 and HTTP/1.1)"
            );
            Some((l, Arc::new(tls)))
        }
        _ => None,
    })
}

/// The application for `state`, with access control when the config has an `[auth]` section.
async fn build_app(state: &Arc<AppState>) -> anyhow::Result<Router> {
    let auth = match &state.config.auth {
        Some(a) => {
            let auth = crate::auth::Auth::new(a.clone(), state.registry.clone()).await?;
            if let Some(p) = &state.proxy {
                auth.match_proxied_names(p.clone());
            }
            tracing::info!("{}", auth.describe());
            Some(auth)
        }
        None => {
            tracing::info!("access control off (no [auth] in the config): anyone who reaches the registry may pull, push and delete");
            None
        }
    };
    Ok(app(state.clone(), auth))
}

/// [`run`], with HTTPS on `tls_listener` (bound by the caller, e.g. to port 0 in tests) instead
/// of `config.tls_listen` when `config.tls_cert` is set.
pub async fn run_with_tls(
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = bind_tls(tls_listener, &config).await?;
    let reload_every = Duration::from_secs(config.tls_reload_interval);
    let registry = open_registry(&config)?;
    crate::distribution::runtime::log_startup(&config.distribution);
    let (registry, outbox) = crate::events::attach(registry, &config);
    let grace = Duration::from_secs(config.shutdown_timeout);
    let limits = crate::listen::Limits::from_config(&config);
    let registry = Arc::new(registry);
    let proxy = match &config.proxy {
        Some(p) if !p.upstreams.is_empty() => Some(Arc::new(
            proxy::Proxy::new(p, registry.clone()).context("pull-through cache")?,
        )),
        _ => None,
    };
    let state = Arc::new(AppState {
        registry,
        config: Arc::new(config),
        proxy,
    });
    crate::maintenance::spawn_gc(&state.registry, &state.config);
    let app = build_app(&state).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    crate::events::start(outbox, &state.config, rx.clone());
    crate::distribution::runtime::start_debug(state.clone(), rx.clone()).await?;
    let mut rx2 = rx.clone();
    let https = {
        let rx = rx.clone();
        let app = app.clone();
        async move {
            match tls {
                Some((l, tls)) => {
                    if !reload_every.is_zero() {
                        tokio::spawn(tls.clone().watch(reload_every, rx.clone()));
                    }
                    crate::tls::serve(l, tls, app, limits, rx).await
                }
                None => Ok(()),
            }
        }
    };
    let serve = crate::listen::serve_plain(listener, app, limits, rx);
    let serve = async move {
        let (plain, https) = tokio::join!(serve, https);
        plain.and(https)
    };
    tokio::select! {
        res = serve => res,
        _ = async move {
            let _ = rx2.wait_for(|v| *v).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(seconds = grace.as_secs(), "requests still running after the shutdown timeout; exiting");
            Ok(())
        }
    }
}
