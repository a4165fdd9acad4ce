//! Refusals: `401 UNAUTHORIZED` with a `WWW-Authenticate: Bearer ...` challenge naming the token
//! endpoint and scope, `403 DENIED`, and `429 TOOMANYREQUESTS` past the failed-login limit.

use axum::response::{IntoResponse, Response};
use http::header::{HeaderValue, WWW_AUTHENTICATE};

use super::state::Auth;
use super::types::{Caller, Refused, TlsClient};
use crate::error::{ApiError, ErrorCode};

impl Auth {
    /// Who sent the request, or the answer that refuses it: 429 while its address is blocked,
    /// 401 (with `error` in the challenge) when its credentials do not check out.
    pub(super) async fn caller_or_refusal(
        &self,
        parts: &http::request::Parts,
        ip: std::net::IpAddr,
        error: Option<&str>,
    ) -> Result<std::sync::Arc<Caller>, Response> {
        match self
            .authenticate(&parts.headers, ip, parts.extensions.get::<TlsClient>())
            .await
        {
            Ok(c) => Ok(c),
            Err(Refused::Blocked(secs)) => Err(too_many(secs)),
            Err(Refused::Bad(reason)) => Err(self.unauthorized(
                parts,
                None,
                error,
                &format!("authentication failed: {reason}"),
            )),
        }
    }

    fn realm(&self, parts: &http::request::Parts) -> String {
        if let Some(r) = &self.cfg.realm {
            return r.clone();
        }
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })
            .unwrap_or("localhost");
        let scheme = if parts.extensions.get::<TlsClient>().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}/token")
    }

    fn challenge(
        &self,
        parts: &http::request::Parts,
        scope: Option<(&str, &str)>,
        error: Option<&str>,
    ) -> String {
        let mut c = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(parts),
            self.cfg.service
        );
        if let Some((repo, actions)) = scope {
            c.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
        }
        if let Some(e) = error {
            c.push_str(&format!(",error=\"{e}\""));
        }
        c
    }

    pub(super) fn unauthorized(
        &self,
        parts: &http::request::Parts,
        scope: Option<(&str, &str)>,
        error: Option<&str>,
        msg: &str,
    ) -> Response {
        let mut r = ApiError::new(ErrorCode::Unauthorized, msg)
            .with_header(WWW_AUTHENTICATE, self.challenge(parts, scope, error))
            .into_response();
        r.headers_mut().insert(
            http::HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        );
        r
    }
}

pub(super) fn too_many(secs: u64) -> Response {
    ApiError::new(
        ErrorCode::TooManyRequests,
        "too many failed logins from this address; retry later",
    )
    .with_header(http::header::RETRY_AFTER, secs.to_string())
    .into_response()
}

pub(super) fn denied(msg: String) -> Response {
    ApiError::new(ErrorCode::Denied, msg).into_response()
}
