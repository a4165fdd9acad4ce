//! A small HTTP/1.1 client over hyper's connection API: one TCP connection per [`Conn`], reused
//! across requests and re-opened if the server closes it. Every request is bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Connections opened so far (a server that closes keep-alive connections shows up here).
pub(crate) static CONNECTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Longest any single request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A response whose body has been read completely.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// Body as received, chunk by chunk (no copying).
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

/// One keep-alive connection to a server.
pub(crate) struct Conn {
    addr: SocketAddr,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// Opens a connection to `addr`.
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Self> {
        let mut c = Conn {
            addr,
            host: addr.to_string(),
            sender: None,
        };
        c.reconnect().await?;
        Ok(c)
    }

    async fn reconnect(&mut self) -> Result<()> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(self.addr))
            .await
            .map_err(|_| anyhow!("connect to {} timed out", self.addr))?
            .with_context(|| format!("connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        CONNECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
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
        let target = path_of(target);
        let what = format!("{method} {target}");
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.send_inner(method, target, headers, body),
        )
        .await
        .map_err(|_| anyhow!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| what.clone())
    }

    async fn send_inner(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp> {
        let usable = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !usable {
            self.reconnect().await?;
        }
        let sender = self.sender.as_mut().expect("connected");
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .header("host", &self.host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() {
            req = req.header("content-length", body.len());
        }
        let req = req.body(Full::new(body))?;
        let resp = sender.send_request(req).await?;
        let (parts, mut body) = resp.into_parts();
        let mut chunks = Vec::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len() as u64;
                chunks.push(data);
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
