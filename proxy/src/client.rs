//! The client of one upstream registry: requests with the token flow (a 401 challenge, a token
//! fetched and cached per scope, a new token on the next 401) or Basic auth, redirects to blob
//! storage followed (reqwest drops `Authorization` when a redirect leaves the upstream's host),
//! and a time limit on the response headers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{header, HeaderValue, Method, StatusCode};
use reqwest::{Client, RequestBuilder, Response};

use crate::auth::{parse_challenge, Challenge, TokenCache};
use crate::config::UpstreamConfig;
use crate::error::{ProxyError, Result};
use crate::metrics::UpstreamMetrics;

/// Redirects followed for one request (Docker Hub and ghcr send one, to a CDN).
const MAX_REDIRECTS: usize = 5;

/// One configured upstream registry and its connection pool, tokens and counters.
#[derive(Debug)]
pub struct Upstream {
    /// Its configuration.
    pub config: UpstreamConfig,
    /// Counters exported as metrics.
    pub metrics: UpstreamMetrics,
    /// Its prefix in the path form and in storage (see [`UpstreamConfig::prefix`]).
    pub prefix: String,
    base: String,
    http: Client,
    creds: Option<Credentials>,
    tokens: TokenCache,
    /// The upstream asked for Basic auth once: send credentials up front from then on.
    basic: AtomicBool,
    /// Bounds the fills from this upstream at once.
    pub(crate) fills: tokio::sync::Semaphore,
}

/// A user name and password for the upstream; `Debug` shows the user name only.
#[derive(Clone)]
struct Credentials {
    user: String,
    pass: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.user)
    }
}

impl Upstream {
    /// A client for `config`; reads the credential and CA files now.
    pub fn new(config: UpstreamConfig) -> std::io::Result<Self> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let base = config.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(bad(format!(
                "upstream {}: url {:?} must start with http:// or https://",
                config.name, config.url
            )));
        }
        let creds = config
            .credentials()?
            .map(|(user, pass)| Credentials { user, pass });
        let mut b = Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .connect_timeout(config.first_byte())
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("registry-proxy/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| bad(format!("upstream {}: ca_file: {e}", config.name)))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("upstream {}: ca_file: {e}", config.name)))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b
            .build()
            .map_err(|e| bad(format!("upstream {}: {e}", config.name)))?;
        Ok(Upstream {
            prefix: config.prefix(),
            fills: tokio::sync::Semaphore::new(config.max_concurrent_fills.max(1)),
            metrics: UpstreamMetrics::default(),
            config,
            base,
            http,
            creds,
            tokens: TokenCache::default(),
            basic: AtomicBool::new(false),
        })
    }

    /// The upstream's name (its `ns` host).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn unavailable(&self, msg: impl Into<String>) -> ProxyError {
        ProxyError::Unavailable {
            upstream: self.config.name.clone(),
            msg: msg.into(),
        }
    }

    /// The upstream sent something unusable.
    pub(crate) fn invalid(&self, msg: impl Into<String>) -> ProxyError {
        ProxyError::Invalid {
            upstream: self.config.name.clone(),
            msg: msg.into(),
        }
    }

    /// Refuses an answer other than 200 to `request` (`blob GET`): 404 means the upstream does
    /// not have `what` (a blob when `blob`), anything else is invalid.
    pub(crate) fn expect_ok(
        &self,
        status: StatusCode,
        request: &str,
        what: impl FnOnce() -> String,
        blob: bool,
    ) -> Result<()> {
        match status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(ProxyError::NotFound {
                upstream: self.config.name.clone(),
                what: what(),
                blob,
            }),
            s => Err(self.invalid(format!("{request} answered {s}"))),
        }
    }

    /// Sends `HEAD /v2/<repo>/<path>` and returns the answer's headers when it is 200 (see
    /// [`Upstream::expect_ok`] for the rest).
    pub(crate) async fn head(
        &self,
        repo: &str,
        path: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        blob: bool,
    ) -> Result<http::HeaderMap> {
        let resp = self.send(Method::HEAD, repo, path, headers).await?;
        let request = if blob { "blob HEAD" } else { "manifest HEAD" };
        self.expect_ok(resp.status(), request, || format!("{repo}/{path}"), blob)?;
        Ok(resp.headers().clone())
    }

    /// Awaits `fut` for at most the first-byte time.
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = reqwest::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.config.first_byte(), fut).await {
            Err(_) => Err(ProxyError::Timeout {
                upstream: self.config.name.clone(),
                secs: self.config.first_byte().as_secs(),
            }),
            Ok(Err(e)) if e.is_timeout() => Err(ProxyError::Timeout {
                upstream: self.config.name.clone(),
                secs: self.config.first_byte().as_secs(),
            }),
            Ok(Err(e)) => Err(self.unavailable(error_chain(&e))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    fn authorize(&self, req: RequestBuilder, scope: &str) -> RequestBuilder {
        if let Some(t) = self.tokens.get(scope) {
            return req.bearer_auth(t);
        }
        match &self.creds {
            Some(c) if self.basic.load(Ordering::Relaxed) => req.basic_auth(&c.user, Some(&c.pass)),
            _ => req,
        }
    }

    /// Fetches a token for `scope` from the challenge's realm.
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<()> {
        let mut q: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = service {
            q.push(("service", s));
        }
        let mut req = self.http.get(realm).query(&q);
        if let Some(c) = &self.creds {
            req = req.basic_auth(&c.user, Some(&c.pass));
        }
        let resp = self.timed(req.send()).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ProxyError::Denied {
                upstream: self.config.name.clone(),
                msg: format!("token service {realm} answered {status}"),
            });
        }
        if !status.is_success() {
            return Err(self.unavailable(format!("token service {realm} answered {status}")));
        }
        let body = self.timed(resp.bytes()).await?;
        let (token, valid) = serde_json::from_slice::<crate::auth::TokenResponse>(&body)
            .ok()
            .and_then(|t| t.into_token())
            .ok_or_else(|| ProxyError::Invalid {
                upstream: self.config.name.clone(),
                msg: format!("token service {realm} sent no token"),
            })?;
        self.tokens.put(scope, token, valid);
        Ok(())
    }

    /// Sends `method` to `/v2/<repo>/<path>` with the pull scope of `repo`, answering a 401
    /// challenge once (token or Basic), and returns the response as soon as its headers arrive.
    /// 429 and 5xx become [`ProxyError::Unavailable`], 401/403 after authenticating
    /// [`ProxyError::Denied`]; other statuses are returned for the caller to judge.
    pub async fn send(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        headers: &[(header::HeaderName, HeaderValue)],
    ) -> Result<Response> {
        let url = format!("{}/v2/{repo}/{path}", self.base);
        let scope = format!("repository:{repo}:pull");
        let build = |with_auth: bool| {
            let mut r = self.http.request(method.clone(), &url);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            if with_auth {
                r = self.authorize(r, &scope);
            }
            r
        };
        let mut resp = self.timed(build(true).send()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            self.tokens.forget(&scope);
            match challenge {
                Some(Challenge::Bearer { realm, service, .. }) => {
                    // Our own scope: the challenge's may be for another action (push).
                    self.fetch_token(&realm, service.as_deref(), &scope).await?;
                }
                Some(Challenge::Basic) if self.creds.is_some() => {
                    self.basic.store(true, Ordering::Relaxed);
                }
                _ => {
                    return Err(ProxyError::Denied {
                        upstream: self.config.name.clone(),
                        msg: "401 without a challenge this registry can answer".into(),
                    })
                }
            }
            resp = self.timed(build(true).send()).await?;
        }
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ProxyError::Denied {
                upstream: self.config.name.clone(),
                msg: format!("{method} {url} answered {status}"),
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(self.unavailable(format!("{method} {url} answered {status}")));
        }
        Ok(resp)
    }
}

/// An error and its sources on one line (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
