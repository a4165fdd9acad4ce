//! The Docker/OCI token flow: `GET /token` answers with a registry token for the part of the
//! requested scope the caller is granted.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use storage::RepoName;

use super::credentials::source_ip;
use super::jwt::{self, Access, RegistryClaims};
use super::respond::too_many;
use super::rules::Action;
use super::state::Auth;
use super::types::now_secs;

/// Parses `scope` parameters: `repository:<name>:<actions>` (also `repository(plugin):...`),
/// several per parameter separated by spaces. Invalid names are skipped.
fn parse_scopes(query: Option<&str>) -> Vec<(RepoName, Vec<Action>)> {
    let mut out: Vec<(RepoName, Vec<Action>)> = Vec::new();
    let Some(q) = query else { return out };
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if k != "scope" {
            continue;
        }
        for s in v.split(' ') {
            let mut it = s.splitn(2, ':');
            let (Some(kind), Some(rest)) = (it.next(), it.next()) else {
                continue;
            };
            if kind.split('(').next() != Some("repository") {
                continue;
            }
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let Ok(name) = name.parse::<RepoName>() else {
                continue;
            };
            let actions = Action::parse_list(actions);
            if let Some((_, a)) = out.iter_mut().find(|(n, _)| *n == name) {
                a.extend(actions);
                a.sort();
                a.dedup();
            } else if out.len() < 32 {
                out.push((name, actions));
            }
        }
    }
    out
}

/// `GET /token`: a registry token for the part of the requested scope the caller is granted.
pub(super) async fn token(auth: &Auth, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        // containerd tries an OAuth POST first and falls back to GET on 405.
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(http::header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    let ip = source_ip(&req);
    if let Some(secs) = auth.limit.blocked(ip) {
        return too_many(secs);
    }
    let (parts, _body) = req.into_parts();
    let caller = match auth.caller_or_refusal(&parts, ip, None).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let id = caller.identity();
    let access: Vec<Access> = parse_scopes(parts.uri.query())
        .into_iter()
        .filter_map(|(name, wanted)| {
            let granted = auth.rules.granted(&id, name.as_str(), &wanted);
            (!granted.is_empty()).then(|| Access {
                kind: "repository".into(),
                name: name.as_str().to_owned(),
                actions: granted.iter().map(|a| a.as_str().to_owned()).collect(),
            })
        })
        .collect();
    let now = now_secs();
    let ttl = auth.cfg.token_ttl.max(60);
    let claims = RegistryClaims::issue(
        &auth.cfg.service,
        id.name.as_deref().unwrap_or(""),
        now,
        ttl,
        access,
    );
    tracing::debug!(
        caller = id.display(),
        scopes = claims.access.len(),
        "token issued"
    );
    let t = jwt::sign_registry(&claims, &auth.key());
    let body = serde_json::json!({
        "token": t,
        "access_token": t,
        "expires_in": ttl,
    });
    (
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}
