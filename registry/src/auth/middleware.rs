//! The middleware on the `/v2/...` routes: requests are checked against the rules before the
//! handlers run (with catalog filtering and guarded cross-repository mounts), and the caller's
//! identity travels with the request and its answer; and the `GET /token` route.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{StatusCode, Uri};
use storage::{Digest, RepoName};

use super::credentials::source_ip;
use super::respond::denied;
use super::rules::Action;
use super::state::Auth;
use super::token::token;
use super::types::Caller;
use crate::endpoint::{Endpoint, Route};
use crate::error::{ApiError, ErrorCode};

/// What a `/v2` request needs, from its endpoint.
fn needs(ep: &Endpoint) -> Option<(&RepoName, Action)> {
    use Endpoint as E;
    match ep {
        E::Base | E::Catalog => None,
        E::ListTags { name }
        | E::GetManifest { name, .. }
        | E::HeadManifest { name, .. }
        | E::GetBlob { name, .. }
        | E::HeadBlob { name, .. }
        | E::Referrers { name, .. } => Some((name, Action::Pull)),
        E::PutManifest { name, .. }
        | E::StartUpload { name }
        | E::GetUpload { name, .. }
        | E::PatchUpload { name, .. }
        | E::PutUpload { name, .. }
        | E::DeleteUpload { name, .. } => Some((name, Action::Push)),
        E::DeleteManifest { name, .. } | E::DeleteBlob { name, .. } => Some((name, Action::Delete)),
    }
}

/// The middleware on the `/v2` routes: install with
/// `axum::middleware::from_fn_with_state(auth, layer)` inside the layer that classifies the
/// request (it reads the [`Route`]). The caller's [`Identity`](super::rules::Identity) is left on the request (for the
/// events' `actor`) and on the answer (for the access log), refusals included once the caller is
/// known; on the answer only while access lines are logged.
pub async fn layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let ip = source_ip(&req);
    let (mut parts, body) = req.into_parts();
    let caller = match auth
        .caller_or_refusal(&parts, ip, Some("invalid_token"))
        .await
    {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let id = caller.identity();
    parts.extensions.insert(id.clone());
    let mut resp = check(&auth, &caller, parts, body, next).await;
    if crate::layers::access_logged() {
        resp.extensions_mut().insert(id);
    }
    resp
}

/// Checks an identified caller's request against the rules and runs it when allowed.
async fn check(
    auth: &Auth,
    caller: &Caller,
    mut parts: http::request::Parts,
    body: Body,
    next: Next,
) -> Response {
    let route = match parts.extensions.get::<Route>() {
        Some(r) => r.clone(),
        None => Route::of(&parts.method, parts.uri.path()),
    };
    let Some(ep) = route.endpoint() else {
        // Malformed paths get the handler's error; they reach no repository.
        return next.run(Request::from_parts(parts, body)).await;
    };
    match ep {
        Endpoint::Base => {
            if matches!(caller, Caller::Anonymous) {
                return auth.unauthorized(&parts, None, None, "authentication required");
            }
        }
        Endpoint::Catalog => {
            let resp = next.run(Request::from_parts(parts, body)).await;
            return filter_catalog(auth, caller, resp).await;
        }
        _ => {}
    }
    if let Some((name, action)) = needs(ep) {
        let ns = parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes()).find_map(|(k, v)| (k == "ns").then_some(v))
        });
        let repo = auth.rule_name(name, ns.as_deref());
        let repo = &*repo;
        if !auth.may(caller, repo, action) {
            return refuse(auth, &parts, caller, repo, action);
        }
        if let Endpoint::StartUpload { .. } = ep {
            guard_mount(auth, caller, &mut parts).await;
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The answer to a caller who may not do `action` on `repo`: a challenge when new credentials or
/// a new token could help, else 403.
fn refuse(
    auth: &Auth,
    parts: &http::request::Parts,
    caller: &Caller,
    repo: &str,
    action: Action,
) -> Response {
    let scope = if action == Action::Push {
        "pull,push"
    } else {
        action.as_str()
    };
    let id = caller.identity();
    let live = auth.rules.allows(&id, repo, action);
    tracing::debug!(
        caller = id.display(),
        repo,
        action = action.as_str(),
        "access refused"
    );
    match (caller, live) {
        (Caller::Anonymous, _) => {
            auth.unauthorized(parts, Some((repo, scope)), None, "authentication required")
        }
        (Caller::Token(..), true) => auth.unauthorized(
            parts,
            Some((repo, scope)),
            Some("insufficient_scope"),
            "the token does not grant this action; request a new one",
        ),
        (Caller::Token(id, _), false) if id.name.is_none() => {
            auth.unauthorized(parts, Some((repo, scope)), None, "authentication required")
        }
        _ => denied(format!(
            "{} may not {} {repo}",
            id.display(),
            action.as_str()
        )),
    }
}

/// A cross-repository mount only goes ahead when the caller may pull `from` and `from` holds the
/// blob; otherwise `mount` and `from` are dropped and the POST opens an ordinary upload (202), as
/// the spec allows, so a mount never hands out a blob the caller could not read.
async fn guard_mount(auth: &Auth, caller: &Caller, parts: &mut http::request::Parts) {
    let Some(q) = parts.uri.query() else { return };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(mount) = get("mount") else { return };
    let allowed = match (
        get("from").and_then(|f| f.parse::<RepoName>().ok()),
        mount.parse::<Digest>(),
    ) {
        (Some(from), Ok(digest)) => {
            let id = caller.identity();
            (auth.rules.allows(&id, from.as_str(), Action::Pull)
                || auth.may(caller, from.as_str(), Action::Pull))
                && auth.registry.blob_size(&from, &digest).await.is_ok()
        }
        // An invalid digest gets the handler's error.
        (_, Err(_)) => return,
        (None, Ok(_)) => false,
    };
    if allowed {
        return;
    }
    tracing::debug!(
        caller = caller.identity().display(),
        "mount refused: no pull right on the source; opening an upload instead"
    );
    let kept: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "mount" && k != "from")
        .collect();
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in kept {
        ser.append_pair(k, v);
    }
    let q = ser.finish();
    let pq = if q.is_empty() {
        parts.uri.path().to_owned()
    } else {
        format!("{}?{q}", parts.uri.path())
    };
    let mut up = parts.uri.clone().into_parts();
    if let Ok(pq) = pq.parse() {
        up.path_and_query = Some(pq);
        if let Ok(u) = Uri::from_parts(up) {
            parts.uri = u;
        }
    }
}

/// Keeps in a catalog answer only the repositories the caller may pull. Paging is unchanged
/// (the `Link` header follows the unfiltered listing), so a page may hold fewer than `n`.
async fn filter_catalog(auth: &Auth, caller: &Caller, resp: Response) -> Response {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return ApiError::new(ErrorCode::Unavailable, "catalog too large").into_response();
    };
    let mut v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    let id = caller.identity();
    if let Some(list) = v.get_mut("repositories").and_then(|r| r.as_array_mut()) {
        list.retain(|r| {
            r.as_str().is_some_and(|name| {
                auth.may(caller, name, Action::Pull) || auth.rules.allows(&id, name, Action::Pull)
            })
        });
    }
    let out = serde_json::to_vec(&v).unwrap_or_default();
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Response::from_parts(parts, Body::from(out))
}

/// `GET /token`, as a route of the application.
pub fn token_route<S: Clone + Send + Sync + 'static>(auth: Arc<Auth>) -> MethodRouter<S> {
    any(move |req: Request| async move { token(&auth, req).await })
}
