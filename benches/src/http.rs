//! A small HTTP client over hyper's connection API: one connection per address of a [`Conn`]
//! (plain HTTP/1.1, or TLS with HTTP/1.1 or HTTP/2 by ALPN), reused across requests and
//! re-opened if the server closes it. Every request is bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Connections opened so far (a server that closes keep-alive connections shows up here).
pub(crate) static CONNECTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Longest any single request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A request: method, target (path and query, or an absolute URL whose path is used), extra
/// headers and body.
struct Req<'a> {
    method: Method,
    target: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Bytes,
}

/// What happens to a response body as it arrives.
#[derive(Clone, Copy)]
enum Sink<'a> {
    /// Kept in [`Resp::chunks`].
    Keep,
    /// Compared chunk by chunk with these bytes and dropped: large downloads are checked
    /// exactly without the client holding (and faulting in) the whole body.
    Compare(&'a [u8]),
}

/// A response whose body has been read completely.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// Body as received, chunk by chunk (no copying); empty unless read with [`Sink::Keep`].
    pub(crate) chunks: Vec<Bytes>,
    /// Total body length.
    pub(crate) len: u64,
}

impl Resp {
    /// A header as text, if present and ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as one buffer (copies when it came in several chunks).
    pub(crate) fn body(&self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut v = Vec::with_capacity(self.len as usize);
                for c in &self.chunks {
                    v.extend_from_slice(c);
                }
                Bytes::from(v)
            }
        }
    }

    /// Fails unless the status is `want`, quoting the body for diagnosis.
    pub(crate) fn expect(self, want: u16, what: &str) -> Result<Self> {
        if self.status.as_u16() != want {
            let body = self.body();
            let shown = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
            bail!(
                "{what}: expected status {want}, got {} ({shown})",
                self.status
            );
        }
        Ok(self)
    }
}

/// How a client reaches a server: one address, or several replicas taken in turn per request
/// (as a Kubernetes Service spreads connections), over plain HTTP/1.1 or TLS.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) addrs: Vec<SocketAddr>,
    /// TLS client settings (trusted CA, ALPN); `None` is plain HTTP/1.1.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// `Authorization` header value sent with every request (Basic or Bearer), if any.
    pub(crate) auth: Option<Arc<str>>,
}

impl Endpoint {
    /// One plain-HTTP address, no credentials.
    pub(crate) fn plain(addr: SocketAddr) -> Self {
        Endpoint {
            addrs: vec![addr],
            tls: None,
            auth: None,
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addrs", &self.addrs)
            .field("tls", &self.tls.as_ref().map(|c| c.alpn_protocols.clone()))
            .field("auth", &self.auth.as_ref().map(|a| a.split(' ').next()))
            .finish()
    }
}

/// Which HTTP version a TLS client offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    Http1,
    H2,
}

impl Alpn {
    fn id(self) -> &'static [u8] {
        match self {
            Alpn::Http1 => b"http/1.1",
            Alpn::H2 => b"h2",
        }
    }
}

/// A TLS client configuration (rustls, ring provider) trusting only the CA in `ca_pem`, offering
/// only `alpn`.
pub(crate) fn tls_config(ca_pem: &str, alpn: Alpn) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).with_context(|| format!("read {ca_pem}"))? {
        roots.add(cert.with_context(|| format!("certificate in {ca_pem}"))?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in {ca_pem}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.id().to_vec()];
    Ok(Arc::new(cfg))
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn usable(&mut self) -> bool {
        match self {
            Sender::H1(s) => !s.is_closed() && s.ready().await.is_ok(),
            Sender::H2(s) => !s.is_closed() && s.ready().await.is_ok(),
        }
    }
}

/// Spreads the first request of each connection over the replicas.
static ROUND_ROBIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One keep-alive connection to each address of an [`Endpoint`]; requests go to the addresses in
/// turn (round robin per request: the PATCHes of one upload land on different replicas).
pub(crate) struct Conn {
    ep: Endpoint,
    senders: Vec<Option<Sender>>,
    next: usize,
}

impl Conn {
    /// A request without body or extra headers whose answer must be `want` (`what` names it in
    /// the error).
    pub(crate) async fn call(
        &mut self,
        method: Method,
        target: &str,
        want: u16,
        what: &str,
    ) -> Result<Resp> {
        self.send(method, target, &[], Bytes::new())
            .await?
            .expect(want, what)
    }

    /// Opens a connection to every address of `ep`.
    pub(crate) async fn connect(ep: &Endpoint) -> Result<Self> {
        anyhow::ensure!(!ep.addrs.is_empty(), "no address to connect to");
        let mut c = Conn {
            ep: ep.clone(),
            senders: ep.addrs.iter().map(|_| None).collect(),
            next: ROUND_ROBIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        for i in 0..ep.addrs.len() {
            c.reconnect(i).await?;
        }
        Ok(c)
    }

    async fn reconnect(&mut self, i: usize) -> Result<()> {
        let addr = self.ep.addrs[i];
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connect to {addr} timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        CONNECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sender = match &self.ep.tls {
            None => Sender::H1(handshake_h1(stream).await?),
            Some(cfg) => {
                let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                let tls = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, stream),
                )
                .await
                .map_err(|_| anyhow!("TLS handshake with {addr} timed out"))?
                .with_context(|| format!("TLS handshake with {addr}"))?;
                let offered = cfg.alpn_protocols.first().map(Vec::as_slice);
                let got = tls.get_ref().1.alpn_protocol();
                anyhow::ensure!(
                    got == offered,
                    "{addr}: ALPN {:?} negotiated, {:?} offered",
                    got.map(String::from_utf8_lossy),
                    offered.map(String::from_utf8_lossy)
                );
                if got == Some(Alpn::H2.id()) {
                    let (sender, conn) =
                        hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                            .initial_stream_window_size(4 * 1024 * 1024)
                            .initial_connection_window_size(8 * 1024 * 1024)
                            .handshake(TokioIo::new(tls))
                            .await
                            .context("HTTP/2 handshake")?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Sender::H2(sender)
                } else {
                    Sender::H1(handshake_h1(tls).await?)
                }
            }
        };
        self.senders[i] = Some(sender);
        Ok(())
    }

    /// Sends a request for `target` (path and query, or an absolute URL whose path is used) and
    /// reads the whole response body.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp> {
        let req = Req {
            method,
            target,
            headers,
            body,
        };
        self.timed(req, Sink::Keep).await
    }

    /// GET of `target`, its body compared with `want` chunk by chunk as it arrives and dropped
    /// (a successful answer's; an error's is kept for the message).
    pub(crate) async fn get_compared(&mut self, target: &str, want: &[u8]) -> Result<Resp> {
        let req = Req {
            method: Method::GET,
            target,
            headers: &[],
            body: Bytes::new(),
        };
        self.timed(req, Sink::Compare(want)).await
    }

    /// [`Conn::exchange`] bounded by [`REQUEST_TIMEOUT`], errors naming the request.
    async fn timed(&mut self, req: Req<'_>, sink: Sink<'_>) -> Result<Resp> {
        let target = path_of(req.target);
        let what = format!("{} {target}", req.method);
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(Req { target, ..req }, sink))
            .await
            .map_err(|_| anyhow!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| what.clone())
    }

    /// One request and its whole response, on the next address's connection (re-opened if the
    /// server closed it).
    async fn exchange(&mut self, req: Req<'_>, sink: Sink<'_>) -> Result<Resp> {
        let Req {
            method,
            target,
            headers,
            body,
        } = req;
        let i = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        let usable = match self.senders[i].as_mut() {
            Some(s) => s.usable().await,
            None => false,
        };
        if !usable {
            self.reconnect(i).await?;
        }
        let addr = self.ep.addrs[i];
        let h2 = matches!(self.senders[i], Some(Sender::H2(_)));
        let mut req = Request::builder().method(method);
        req = if h2 {
            // HTTP/2 takes scheme and authority from the URI (:scheme, :authority).
            req.uri(format!("https://{addr}{target}"))
        } else {
            req.uri(target).header("host", addr.to_string())
        };
        if let Some(auth) = &self.ep.auth {
            req = req.header("authorization", auth.as_ref());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() {
            req = req.header("content-length", body.len());
        }
        let req = req.body(Full::new(body))?;
        let resp = match self.senders[i].as_mut().expect("connected") {
            Sender::H1(s) => s.send_request(req).await?,
            Sender::H2(s) => s.send_request(req).await?,
        };
        let (parts, mut body) = resp.into_parts();
        // Only a successful answer goes to the sink; an error body is kept for the message.
        let sink = if parts.status.is_success() {
            sink
        } else {
            Sink::Keep
        };
        let mut chunks = Vec::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                let at = len as usize;
                len += data.len() as u64;
                match sink {
                    Sink::Keep => chunks.push(data),
                    Sink::Compare(want) => anyhow::ensure!(
                        want.get(at..at + data.len()) == Some(&data[..]),
                        "body differs from the expected bytes within {at}..{}",
                        at + data.len()
                    ),
                }
            }
        }
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            chunks,
            len,
        })
    }
}

async fn handshake_h1<S>(io: S) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The path and query of a URL, or the input if it is already a path.
pub(crate) fn path_of(target: &str) -> &str {
    if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        }
    } else {
        target
    }
}

/// Appends a query parameter to a target that may already have a query.
pub(crate) fn with_query(target: &str, kv: &str) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}{kv}")
}
