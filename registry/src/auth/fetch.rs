//! The JWKS fetched from a URL (the API server's `/openid/v1/jwks`, or its OIDC discovery's
//! `jwks_uri`) and cached: fetched at start, refreshed every `jwks_refresh` seconds, and early
//! (at most every 30 s) when a token names a `kid` the cached set lacks, so a key rotation is
//! picked up without a restart. HTTPS needs `jwks_ca_file`; `jwks_token_file` sends a bearer token
//! (the registry's own ServiceAccount token, for API servers that do not serve the keys
//! anonymously).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::jwt::Jwks;

/// Largest JWKS document accepted.
const MAX_JWKS: usize = 1 << 20;
/// Time limit of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two fetches caused by unknown `kid`s.
const EARLY_EVERY: Duration = Duration::from_secs(30);

/// Where and how to fetch.
#[derive(Debug, Clone)]
pub struct Source {
    /// `http://` or `https://` URL.
    pub url: String,
    /// PEM CA certificates for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token to send (re-read on every fetch: projected tokens rotate).
    pub token_file: Option<PathBuf>,
}

/// One GET of the JWKS.
pub async fn fetch(src: &Source) -> anyhow::Result<Jwks> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(src))
        .await
        .map_err(|_| anyhow!("fetching {} timed out", src.url))?
}

async fn fetch_inner(src: &Source) -> anyhow::Result<Jwks> {
    let uri: http::Uri = src
        .url
        .parse()
        .with_context(|| format!("jwks_url {}", src.url))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("jwks_url must be http:// or https://"),
    };
    let host = uri.host().ok_or_else(|| anyhow!("jwks_url has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let mut req = http::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json");
    if let Some(t) = &src.token_file {
        let token = std::fs::read_to_string(t)
            .with_context(|| format!("reading jwks_token_file {}", t.display()))?;
        req = req.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        );
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let connector = match (https, src.ca_file.as_deref()) {
        (true, Some(ca)) => Some(tls_connector(ca)?),
        (true, None) => bail!("an https jwks_url needs jwks_ca_file"),
        (false, _) => None,
    };
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {}", src.url))?;
    let resp = if let Some(connector) = connector {
        let tls = connector
            .connect(ServerName::try_from(host.clone())?, tcp)
            .await
            .with_context(|| format!("TLS to {}", src.url))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    if !resp.status().is_success() {
        bail!("{} answered {}", src.url, resp.status());
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the JWKS: {e}"))?
        .to_bytes();
    Jwks::parse(&body).with_context(|| format!("the JWKS at {}", src.url))
}

async fn send<I>(
    io: I,
    req: http::Request<Empty<Bytes>>,
) -> anyhow::Result<http::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

fn tls_connector(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let pem =
        std::fs::read(ca).with_context(|| format!("reading jwks_ca_file {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| anyhow!("jwks_ca_file {}: {e}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// The cached key set.
#[derive(Debug)]
pub struct Remote {
    src: Source,
    keys: RwLock<Arc<Jwks>>,
    last_early: Mutex<Option<Instant>>,
}

impl Remote {
    /// Fetches once (a failure is logged and retried by the refresher, so a registry can start
    /// while the API server is briefly away) and starts refreshing every `every`.
    pub async fn start(src: Source, every: Duration) -> anyhow::Result<Arc<Remote>> {
        let _: http::Uri = src
            .url
            .parse()
            .with_context(|| format!("jwks_url {}", src.url))?;
        let first = match fetch(&src).await {
            Ok(k) => {
                tracing::info!(url = %src.url, keys = k.keys.len(), "JWKS fetched");
                k
            }
            Err(e) => {
                tracing::warn!(url = %src.url, error = %format!("{e:#}"), "JWKS fetch failed; retrying in the background");
                Jwks { keys: Vec::new() }
            }
        };
        let r = Arc::new(Remote {
            src,
            keys: RwLock::new(Arc::new(first)),
            last_early: Mutex::new(None),
        });
        let weak = Arc::downgrade(&r);
        let every = every.max(Duration::from_secs(10));
        tokio::spawn(async move {
            loop {
                let empty = match weak.upgrade() {
                    Some(r) => r.get().keys.is_empty(),
                    None => return,
                };
                // Retry soon while nothing was ever fetched.
                tokio::time::sleep(if empty { Duration::from_secs(5) } else { every }).await;
                match weak.upgrade() {
                    Some(r) => r.refresh().await,
                    None => return,
                }
            }
        });
        Ok(r)
    }

    /// The keys in the cache.
    pub fn get(&self) -> Arc<Jwks> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn refresh(&self) {
        match fetch(&self.src).await {
            Ok(k) => {
                tracing::debug!(url = %self.src.url, keys = k.keys.len(), "JWKS refreshed");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(k);
            }
            Err(e) => {
                tracing::warn!(url = %self.src.url, error = %format!("{e:#}"), "JWKS refresh failed; keeping the cached keys")
            }
        }
    }

    /// A token named a key the cache lacks: refresh now, unless that was done in the last 30 s.
    /// Returns whether a refresh ran.
    pub async fn refresh_for_unknown_key(&self) -> bool {
        {
            let mut last = self.last_early.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < EARLY_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.refresh().await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-file HTTP server on 127.0.0.1 answering every request with the current body; counts
    /// requests and keeps the last request head.
    async fn serve(body: Arc<Mutex<String>>) -> (String, Arc<Mutex<(usize, String)>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new((0, String::new())));
        let s2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut buf = vec![0; 4096];
                let n = c.read(&mut buf).await.unwrap_or(0);
                {
                    let mut s = s2.lock().unwrap();
                    s.0 += 1;
                    s.1 = String::from_utf8_lossy(&buf[..n]).into_owned();
                }
                let b = body.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                    b.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            }
        });
        (format!("http://{addr}/openid/v1/jwks"), seen)
    }

    #[tokio::test]
    async fn fetches_caches_and_refreshes_on_an_unknown_kid() {
        let (_, jwk1) = crate::auth::jwt::tests::ec_key("one");
        let (_, jwk2) = crate::auth::jwt::tests::ec_key("two");
        let body = Arc::new(Mutex::new(
            serde_json::json!({ "keys": [jwk1] }).to_string(),
        ));
        let (url, seen) = serve(body.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "registry-sa-token\n").unwrap();
        let src = Source {
            url,
            ca_file: None,
            token_file: Some(token),
        };
        let r = Remote::start(src, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(r.get().keys.len(), 1);
        {
            let s = seen.lock().unwrap();
            assert_eq!(s.0, 1);
            assert!(s.1.starts_with("GET /openid/v1/jwks HTTP/1.1"), "{}", s.1);
            assert!(s
                .1
                .to_ascii_lowercase()
                .contains("authorization: bearer registry-sa-token"));
        }
        *body.lock().unwrap() = serde_json::json!({ "keys": [jwk2.clone(), jwk2] }).to_string();
        assert!(r.refresh_for_unknown_key().await);
        assert_eq!(r.get().keys.len(), 2);
        // Not again within 30 s: a stream of bad kids cannot hammer the API server.
        assert!(!r.refresh_for_unknown_key().await);
        assert_eq!(seen.lock().unwrap().0, 2);
        // A broken answer keeps the cached keys.
        *body.lock().unwrap() = "not json".into();
        r.refresh().await;
        assert_eq!(r.get().keys.len(), 2);
        // https without a CA file is refused.
        let e = fetch(&Source {
            url: "https://127.0.0.1:1/jwks".into(),
            ca_file: None,
            token_file: None,
        })
        .await;
        assert!(format!("{:#}", e.unwrap_err()).contains("jwks_ca_file"));
    }
}
