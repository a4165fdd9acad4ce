//! Access control: who is calling (htpasswd users, Kubernetes ServiceAccount tokens, client
//! certificates, registry bearer tokens), what they may do (ordered [`rules`]), and the Docker/OCI
//! token flow (`GET /token`, `WWW-Authenticate: Bearer ...` challenges).
//!
//! It runs as one axum middleware on the `/v2/...` routes ([`layer`], installed by
//! [`crate::layers::around_api`] inside the access log and the concurrency limit), plus the
//! `GET /token` route ([`token_route`]); everything else (`/livez`, `/readyz`, `/metrics`) is
//! open. The caller's [`Identity`] is left on the request (the events' `actor`) and on the
//! answer (the access log's `identity`). Without an `[auth]` section none of this is installed.
//!
//! Answers follow the distribution spec: a caller without credentials who needs some gets 401
//! `UNAUTHORIZED` with a Bearer challenge naming the scope; a caller whose credentials are valid
//! but who lacks the right gets 403 `DENIED`; a bearer token that lacks a scope its subject would
//! be granted gets 401 with `error="insufficient_scope"`, so clients fetch a new one. Bad
//! credentials count against the source address; past the limit, 429 `TOOMANYREQUESTS`.
//! No password, token or key is ever logged.
//!
//! Layout:
//! - `config`: the `[auth]` section ([`AuthConfig`], [`ServiceAccountConfig`]) and its defaults.
//! - `types`: shared types: [`Caller`], [`TlsClient`], why authentication failed, the clock.
//! - `state`: [`Auth`], the state shared by every request, loaded at start-up.
//! - `signing`: the registry-token signing key, from a file or kept in storage.
//! - `cache`: bearer tokens that verified, so a token sent with every request is verified once.
//! - `credentials`: identifying the caller from the `Authorization` header or client certificate.
//! - `respond`: 401 challenges, 403 and 429 answers.
//! - `token`: the `GET /token` endpoint.
//! - `middleware`: the axum middleware ([`layer`]) checking `/v2` requests, and [`token_route`].
//! - [`rules`]: ordered access rules; [`htpasswd`]: users; [`jwt`]: token formats;
//!   [`fetch`]: remote JWKS; [`limit`]: the failed-login limiter.

mod cache;
mod config;
mod credentials;
pub mod fetch;
pub mod htpasswd;
pub mod jwt;
pub mod limit;
mod middleware;
mod respond;
pub mod rules;
mod signing;
mod state;
mod token;
mod types;

pub use config::{AuthConfig, ServiceAccountConfig};
pub use middleware::{layer, token_route};
pub use rules::{Action, Identity, Rule, Rules};
pub use state::Auth;
pub use types::{Caller, TlsClient};

#[cfg(test)]
mod tests;
