//! Access control: who is calling (htpasswd users, Kubernetes ServiceAccount tokens, client
//! certificates, registry bearer tokens), what they may do (ordered [`rules`]), and the Docker/OCI
//! token flow (`GET /token`, `WWW-Authenticate: Bearer ...` challenges).
//!
//! It runs as one axum middleware in front of the router ([`layer`]): `/token` is answered here,
//! `/v2/...` requests are checked here before the handlers run, everything else (`/livez`,
//! `/readyz`, `/metrics`) passes untouched. Without an `[auth]` section none of this is installed.
//!
//! Answers follow the distribution spec: a caller without credentials who needs some gets 401
//! `UNAUTHORIZED` with a Bearer challenge naming the scope; a caller whose credentials are valid
//! but who lacks the right gets 403 `DENIED`; a bearer token that lacks a scope its subject would
//! be granted gets 401 with `error="insufficient_scope"`, so clients fetch a new one. Bad
//! credentials count against the source address; past the limit, 429 `TOOMANYREQUESTS`.
//! No password, token or key is ever logged.

pub mod fetch;
pub mod htpasswd;
pub mod jwt;
pub mod limit;
pub mod rules;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use storage::{Digest, RepoName, Store};

use crate::endpoint::Endpoint;
use crate::error::{ApiError, ErrorCode};
use htpasswd::{Users, Watched};
use jwt::{Access, Jwks, RegistryClaims, TokenError};
pub use rules::{Action, Identity, Rule, Rules};

/// The `[auth]` section of the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The service name in challenges and tokens.
    #[serde(default = "default_service")]
    pub service: String,
    /// The token endpoint's URL for challenges; by default `<scheme>://<Host>/token` of the
    /// request.
    #[serde(default)]
    pub realm: Option<String>,
    /// An htpasswd file with bcrypt entries (`htpasswd -B`), re-read when it changes.
    #[serde(default)]
    pub htpasswd: Option<PathBuf>,
    /// A file with the key that signs registry tokens (at least 32 bytes; e.g. a mounted Secret).
    /// Without it, a key is generated once and kept in storage at `auth/token-key`, so every
    /// replica on the same storage verifies the tokens of the others.
    #[serde(default)]
    pub token_key_file: Option<PathBuf>,
    /// Lifetime of registry tokens, in seconds.
    #[serde(default = "default_ttl")]
    pub token_ttl: u64,
    /// Kubernetes ServiceAccount tokens.
    #[serde(default)]
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
    /// The cluster's service-account signing keys: a JWKS file, as served by the API server at
    /// `/openid/v1/jwks` (re-read when it changes). Either this or `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Or a URL to fetch the JWKS from (cached, refreshed every `jwks_refresh` seconds and when a
    /// token names an unknown key), e.g. `https://kubernetes.default.svc/openid/v1/jwks`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM CA certificates for an https `jwks_url` (in a pod:
    /// `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`).
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// A bearer token file sent with the `jwks_url` request (the registry's own ServiceAccount
    /// token, where the API server does not serve its keys anonymously).
    #[serde(default)]
    pub jwks_token_file: Option<PathBuf>,
    /// Seconds between two fetches of `jwks_url`.
    #[serde(default = "default_refresh")]
    pub jwks_refresh: u64,
    /// The issuer (`--service-account-issuer` of the API server).
    pub issuer: String,
    /// The audience the projected tokens are requested with.
    pub audience: String,
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

/// Set on requests that came over TLS; `subject` is the verified client certificate's subject.
#[derive(Debug, Clone, Default)]
pub struct TlsClient {
    /// The subject (RFC 4514 text, e.g. `CN=builder, O=team`), when a client certificate was
    /// presented and verified.
    pub subject: Option<String>,
}

impl TlsClient {
    /// The subject of the first certificate of `chain`, if it parses.
    pub fn from_chain(chain: Option<&[rustls_pki_types::CertificateDer<'_>]>) -> TlsClient {
        let subject = chain.and_then(|c| c.first()).and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let s = cert.subject().to_string();
            (!s.is_empty()).then_some(s)
        });
        TlsClient { subject }
    }
}

/// Where the token-signing key comes from.
#[derive(Debug)]
enum KeySource {
    File,
    Storage(Arc<Store>),
}

const STORED_KEY: &str = "auth/token-key";

/// The access-control state shared by every request.
#[derive(Debug)]
pub struct Auth {
    cfg: AuthConfig,
    rules: Rules,
    users: Option<Users>,
    jwks: Option<KeySet>,
    key: RwLock<(ring::hmac::Key, Instant)>,
    key_source: KeySource,
    limit: limit::FailureLimit,
    registry: Arc<Store>,
}

/// Where ServiceAccount token keys come from.
#[derive(Debug)]
enum KeySet {
    File(Watched<Jwks>),
    Url(Arc<fetch::Remote>),
}

impl KeySet {
    fn get(&self) -> Arc<Jwks> {
        match self {
            KeySet::File(w) => w.get().0,
            KeySet::Url(r) => r.get(),
        }
    }
}

/// How the caller was identified.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// A user, ServiceAccount or client certificate: the rules decide each request.
    Principal(Identity),
    /// A registry token: it grants what it lists.
    Token(Identity, Vec<Access>),
}

impl Caller {
    /// The identity (anonymous for an anonymous token).
    pub fn identity(&self) -> Identity {
        match self {
            Caller::Anonymous => Identity::anonymous(),
            Caller::Principal(i) | Caller::Token(i, _) => i.clone(),
        }
    }
}

/// Why authentication failed.
enum Refused {
    /// Bad credentials (the reason is for the log; it never holds a secret).
    Bad(&'static str),
    /// Too many failures from this address; retry after so many seconds.
    Blocked(u64),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key_from_bytes(b: &[u8]) -> anyhow::Result<ring::hmac::Key> {
    let b = b.trim_ascii();
    if b.len() < 32 {
        anyhow::bail!("the token signing key must be at least 32 bytes");
    }
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b))
}

/// Reads the shared key from storage, creating it when absent. Two replicas starting at once
/// may both write; both then re-read, and a replica whose token fails to verify re-reads the key
/// (at most every 10 s), so they converge on the last one written.
async fn stored_key(reg: &Store) -> anyhow::Result<ring::hmac::Key> {
    let backend = reg.backend();
    match backend.get_bytes(STORED_KEY).await {
        Ok(b) => return key_from_bytes(&b),
        Err(storage::Error::NotFound(_)) => {}
        Err(e) => return Err(anyhow::anyhow!("reading {STORED_KEY} from storage: {e}")),
    }
    let mut raw = [0u8; 48];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| anyhow::anyhow!("no randomness for the token signing key"))?;
    let text = base64::engine::general_purpose::STANDARD.encode(raw);
    backend
        .put(STORED_KEY, Bytes::from(text))
        .await
        .map_err(|e| anyhow::anyhow!("storing {STORED_KEY}: {e}"))?;
    tracing::info!(
        key = STORED_KEY,
        "generated the token signing key in storage"
    );
    let b = backend
        .get_bytes(STORED_KEY)
        .await
        .map_err(|e| anyhow::anyhow!("reading {STORED_KEY} from storage: {e}"))?;
    key_from_bytes(&b)
}

impl Auth {
    /// Loads files and the signing key; fails on anything that would make requests fail later.
    pub async fn new(cfg: AuthConfig, registry: Arc<Store>) -> anyhow::Result<Arc<Auth>> {
        let rules = if cfg.rules.is_empty() {
            Rules::default_rules()
        } else {
            Rules(cfg.rules.clone())
        };
        rules.validate()?;
        let users = cfg.htpasswd.as_deref().map(Users::open).transpose()?;
        let jwks = match &cfg.serviceaccount {
            None => None,
            Some(sa) => Some(match (&sa.jwks_file, &sa.jwks_url) {
                (Some(f), None) => KeySet::File(Watched::open(f, "JWKS", Jwks::parse)?),
                (None, Some(url)) => KeySet::Url(
                    fetch::Remote::start(
                        fetch::Source {
                            url: url.clone(),
                            ca_file: sa.jwks_ca_file.clone(),
                            token_file: sa.jwks_token_file.clone(),
                        },
                        Duration::from_secs(sa.jwks_refresh),
                    )
                    .await?,
                ),
                _ => anyhow::bail!(
                    "[auth.serviceaccount] needs exactly one of jwks_file and jwks_url"
                ),
            }),
        };
        let (key, key_source) = match &cfg.token_key_file {
            Some(p) => {
                let b = std::fs::read(p)
                    .map_err(|e| anyhow::anyhow!("reading token_key_file {}: {e}", p.display()))?;
                (key_from_bytes(&b)?, KeySource::File)
            }
            None => (
                stored_key(&registry).await?,
                KeySource::Storage(registry.clone()),
            ),
        };
        let limit = limit::FailureLimit::new(
            cfg.max_failures,
            Duration::from_secs(cfg.failure_window.max(1)),
        );
        Ok(Arc::new(Auth {
            rules,
            users,
            jwks,
            key: RwLock::new((key, Instant::now())),
            key_source,
            limit,
            registry,
            cfg,
        }))
    }

    /// A one-line description for the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "access control on: {} rule(s){}, htpasswd {}, ServiceAccount tokens {}, token key from {}",
            self.rules.0.len(),
            if self.cfg.rules.is_empty() {
                " (default: anonymous pull, authenticated push)"
            } else {
                ""
            },
            if self.users.is_some() { "on" } else { "off" },
            if self.jwks.is_some() { "on" } else { "off" },
            match self.key_source {
                KeySource::File => "token_key_file",
                KeySource::Storage(_) => "storage",
            }
        )
    }

    fn key(&self) -> ring::hmac::Key {
        self.key.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Re-reads a storage-kept key after a signature failure (another replica may have written
    /// it last); at most every 10 s. Returns whether the key changed.
    async fn refresh_key(&self) -> bool {
        let KeySource::Storage(reg) = &self.key_source else {
            return false;
        };
        {
            let k = self.key.read().unwrap_or_else(|e| e.into_inner());
            if k.1.elapsed() < Duration::from_secs(10) {
                return false;
            }
        }
        let fresh = match reg.backend().get_bytes(STORED_KEY).await {
            Ok(b) => key_from_bytes(&b).ok(),
            Err(_) => None,
        };
        let mut k = self.key.write().unwrap_or_else(|e| e.into_inner());
        k.1 = Instant::now();
        match fresh {
            Some(f) => {
                k.0 = f;
                true
            }
            None => false,
        }
    }

    async fn verify_sa(&self, token: &str) -> Result<Identity, &'static str> {
        let (Some(sa), Some(jwks)) = (&self.cfg.serviceaccount, &self.jwks) else {
            return Err("ServiceAccount tokens are not configured");
        };
        let check = |keys: &Jwks| {
            jwt::verify_service_account(token, keys, &sa.issuer, &sa.audience, now_secs())
        };
        let mut r = check(&jwks.get());
        if let (Err(TokenError::UnknownKey), KeySet::Url(remote)) = (&r, jwks) {
            // The cluster may have rotated its keys.
            if remote.refresh_for_unknown_key().await {
                r = check(&jwks.get());
            }
        }
        r.map(|sub| Identity::named(&sub))
            .map_err(|e| token_reason(&e))
    }

    async fn verify_registry_token(&self, token: &str) -> Result<RegistryClaims, TokenError> {
        let now = now_secs();
        match jwt::verify_registry(token, &self.key(), &self.cfg.service, now) {
            Err(TokenError::Signature) if self.refresh_key().await => {
                jwt::verify_registry(token, &self.key(), &self.cfg.service, now)
            }
            r => r,
        }
    }

    /// Identifies the caller from the `Authorization` header, else the client certificate.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        ip: IpAddr,
        tls: Option<&TlsClient>,
    ) -> Result<Caller, Refused> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Ok(match tls.and_then(|t| t.subject.as_deref()) {
                Some(s) => Caller::Principal(Identity::named(s)),
                None => Caller::Anonymous,
            });
        };
        if let Some(secs) = self.limit.blocked(ip) {
            return Err(Refused::Blocked(secs));
        }
        let r = self.check_credentials(value).await;
        if let Err(reason) = &r {
            self.limit.fail(ip);
            tracing::info!(source = %ip, reason = *reason, "authentication failed");
        }
        r.map_err(Refused::Bad)
    }

    async fn check_credentials(&self, value: &HeaderValue) -> Result<Caller, &'static str> {
        if value.len() > 2 * jwt::MAX_TOKEN_LEN {
            return Err("Authorization header too long");
        }
        let v = value
            .to_str()
            .map_err(|_| "Authorization header not text")?;
        let (scheme, rest) = v
            .trim()
            .split_once(' ')
            .ok_or("malformed Authorization header")?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| "malformed Basic credentials")?;
            let text = String::from_utf8(raw).map_err(|_| "malformed Basic credentials")?;
            let (user, password) = text.split_once(':').ok_or("malformed Basic credentials")?;
            if let Some(users) = &self.users {
                if users.has(user) {
                    return if users.verify(user, password).await {
                        Ok(Caller::Principal(Identity::named(user)))
                    } else {
                        Err("wrong password")
                    };
                }
            }
            if password.matches('.').count() == 2 && self.jwks.is_some() {
                return self.verify_sa(password).await.map(Caller::Principal);
            }
            if let Some(users) = &self.users {
                // Costs one bcrypt, like a known user.
                let _ = users.verify(user, password).await;
            }
            Err("unknown user")
        } else if scheme.eq_ignore_ascii_case("bearer") {
            match jwt::peek_header(rest) {
                Some((_, Some(kid))) if kid == jwt::REGISTRY_KID => {
                    let c = self
                        .verify_registry_token(rest)
                        .await
                        .map_err(|e| token_reason(&e))?;
                    let id = if c.sub.is_empty() {
                        Identity::anonymous()
                    } else {
                        Identity::named(&c.sub)
                    };
                    Ok(Caller::Token(id, c.access))
                }
                Some(_) => self.verify_sa(rest).await.map(Caller::Principal),
                None => Err("malformed bearer token"),
            }
        } else {
            Err("unsupported Authorization scheme")
        }
    }

    /// Whether `caller` may do `action` on `repo`.
    fn may(&self, caller: &Caller, repo: &str, action: Action) -> bool {
        match caller {
            Caller::Anonymous => self.rules.allows(&Identity::anonymous(), repo, action),
            Caller::Principal(id) => self.rules.allows(id, repo, action),
            Caller::Token(_, access) => access.iter().any(|a| {
                a.kind == "repository"
                    && a.name == repo
                    && a.actions.iter().any(|x| x == action.as_str())
            }),
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

    fn unauthorized(
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

fn token_reason(e: &TokenError) -> &'static str {
    match e {
        TokenError::Malformed => "malformed token",
        TokenError::Algorithm => "token algorithm not accepted",
        TokenError::UnknownKey => "token signed by an unknown key",
        TokenError::Signature => "token signature invalid",
        TokenError::Expired => "token expired",
        TokenError::NotYetValid => "token not yet valid",
        TokenError::Issuer => "token issuer not accepted",
        TokenError::Audience => "token audience not accepted",
        TokenError::Subject => "token subject not accepted",
    }
}

fn too_many(secs: u64) -> Response {
    ApiError::new(
        ErrorCode::TooManyRequests,
        "too many failed logins from this address; retry later",
    )
    .with_header(http::header::RETRY_AFTER, secs.to_string())
    .into_response()
}

fn denied(msg: String) -> Response {
    ApiError::new(ErrorCode::Denied, msg).into_response()
}

fn source_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

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

/// The middleware: install with `axum::middleware::from_fn_with_state(auth, layer)`.
pub async fn layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/token" {
        return token(&auth, req).await;
    }
    if !(path == "/v2" || path.starts_with("/v2/")) {
        return next.run(req).await;
    }
    let ip = source_ip(&req);
    let (mut parts, body) = req.into_parts();
    let caller = match auth
        .authenticate(&parts.headers, ip, parts.extensions.get::<TlsClient>())
        .await
    {
        Ok(c) => c,
        Err(Refused::Blocked(secs)) => return too_many(secs),
        Err(Refused::Bad(reason)) => {
            return auth.unauthorized(
                &parts,
                None,
                Some("invalid_token"),
                &format!("authentication failed: {reason}"),
            )
        }
    };
    let rest = parts.uri.path().strip_prefix("/v2").unwrap_or("");
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let ep = match Endpoint::parse(&parts.method, rest) {
        Ok(ep) => ep,
        // Malformed paths get the handler's error; they reach no repository.
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    match &ep {
        Endpoint::Base => {
            if matches!(caller, Caller::Anonymous) {
                return auth.unauthorized(&parts, None, None, "authentication required");
            }
        }
        Endpoint::Catalog => {
            let resp = next.run(Request::from_parts(parts, body)).await;
            return filter_catalog(&auth, &caller, resp).await;
        }
        _ => {}
    }
    if let Some((name, action)) = needs(&ep) {
        let repo = name.as_str();
        if !auth.may(&caller, repo, action) {
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
            return match (&caller, live) {
                (Caller::Anonymous, _) => {
                    auth.unauthorized(&parts, Some((repo, scope)), None, "authentication required")
                }
                (Caller::Token(..), true) => auth.unauthorized(
                    &parts,
                    Some((repo, scope)),
                    Some("insufficient_scope"),
                    "the token does not grant this action; request a new one",
                ),
                (Caller::Token(id, _), false) if id.name.is_none() => {
                    auth.unauthorized(&parts, Some((repo, scope)), None, "authentication required")
                }
                _ => denied(format!(
                    "{} may not {} {repo}",
                    id.display(),
                    action.as_str()
                )),
            };
        }
        if let Endpoint::StartUpload { .. } = ep {
            guard_mount(&auth, &caller, &mut parts).await;
        }
    }
    next.run(Request::from_parts(parts, body)).await
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
async fn token(auth: &Auth, req: Request) -> Response {
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
    let caller = match auth
        .authenticate(&parts.headers, ip, parts.extensions.get::<TlsClient>())
        .await
    {
        Ok(c) => c,
        Err(Refused::Blocked(secs)) => return too_many(secs),
        Err(Refused::Bad(reason)) => {
            return auth.unauthorized(
                &parts,
                None,
                None,
                &format!("authentication failed: {reason}"),
            )
        }
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
    let claims = RegistryClaims {
        iss: auth.cfg.service.clone(),
        sub: id.name.clone().unwrap_or_default(),
        aud: auth.cfg.service.clone(),
        exp: now + ttl,
        nbf: now.saturating_sub(1),
        iat: now,
        access,
    };
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

/// Wraps `app` in the access-control middleware.
pub fn wrap(app: axum::Router, auth: Arc<Auth>) -> axum::Router {
    app.layer(axum::middleware::from_fn_with_state(auth, layer))
}

#[cfg(test)]
mod tests;
