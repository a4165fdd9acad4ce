//! The request context: the HTTP layer's request details made visible to the outbox.

use storage::outbox::{RequestInfo, REQUEST};

use super::now_ms;

/// Axum middleware: runs the request with its details visible to the outbox, so events carry
/// Distribution's `request` block, and the caller's identity (left on the request by access
/// control) as `actor.name`.
pub async fn request_context(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let info = request_info(&req);
    REQUEST.scope(info, next.run(req)).await
}

fn request_info(req: &axum::extract::Request) -> RequestInfo {
    let h = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let addr = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    RequestInfo {
        id: req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(uuid_like),
        addr,
        host: h(http::header::HOST),
        method: req.method().to_string(),
        useragent: h(http::header::USER_AGENT),
        actor: req
            .extensions()
            .get::<crate::auth::Identity>()
            .map(|i| i.display().to_owned())
            .unwrap_or_default(),
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}-{:x}",
        now_ms(),
        N.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff
    )
}
