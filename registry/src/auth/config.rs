//! The `[auth]` section of the config file and its defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::rules::Rule;

/// The `[auth]` section of the config file. (A missing `Option` setting is `None`.)
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The service name in challenges and tokens.
    #[serde(default = "default_service")]
    pub service: String,
    /// The token endpoint's URL for challenges; by default `<scheme>://<Host>/token` of the
    /// request.
    pub realm: Option<String>,
    /// An htpasswd file with bcrypt entries (`htpasswd -B`), re-read when it changes.
    pub htpasswd: Option<PathBuf>,
    /// A file with the key that signs registry tokens (at least 32 bytes; e.g. a mounted Secret).
    /// Without it, a key is generated once and kept in storage at `auth/token-key`, so every
    /// replica on the same storage verifies the tokens of the others.
    pub token_key_file: Option<PathBuf>,
    /// Lifetime of registry tokens, in seconds.
    #[serde(default = "default_ttl")]
    pub token_ttl: u64,
    /// Kubernetes ServiceAccount tokens.
    pub serviceaccount: Option<ServiceAccountConfig>,
    /// Failed logins per source address within `failure_window` before 429 (0: no limit).
    #[serde(default = "default_failures")]
    pub max_failures: u32,
    /// Seconds of the failed-login window.
    #[serde(default = "default_window")]
    pub failure_window: u64,
    /// Ordered rules; empty means anonymous pull and authenticated pull and push.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Verifying Kubernetes ServiceAccount tokens offline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountConfig {
    /// The issuer (`--service-account-issuer` of the API server).
    pub issuer: String,
    /// The audience the projected tokens are requested with.
    pub audience: String,
    /// The cluster's service-account signing keys: a JWKS file, as served by the API server at
    /// `/openid/v1/jwks` (re-read when it changes). Either this or `jwks_url`.
    pub jwks_file: Option<PathBuf>,
    /// Or a URL to fetch the JWKS from (cached, refreshed every `jwks_refresh` seconds and when a
    /// token names an unknown key), e.g. `https://kubernetes.default.svc/openid/v1/jwks`.
    pub jwks_url: Option<String>,
    /// Seconds between two fetches of `jwks_url`.
    #[serde(default = "default_refresh")]
    pub jwks_refresh: u64,
    /// PEM CA certificates for an https `jwks_url` (in a pod:
    /// `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`).
    pub jwks_ca_file: Option<PathBuf>,
    /// A bearer token file sent with the `jwks_url` request (the registry's own ServiceAccount
    /// token, where the API server does not serve its keys anonymously).
    pub jwks_token_file: Option<PathBuf>,
}

fn default_service() -> String {
    "registry".into()
}
fn default_refresh() -> u64 {
    300
}
fn default_ttl() -> u64 {
    300
}
fn default_failures() -> u32 {
    10
}
fn default_window() -> u64 {
    60
}
