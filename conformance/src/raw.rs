//! The one raw HTTP/1.1 client of the tests, for requests that a client library would normalise
//! or refuse to send (`..` in a path, lying `Content-Length`, cut-short bodies, huge headers),
//! for pipelined requests on one kept-alive connection, and for plain unsigned requests to an S3
//! server.
//!
//! - [`request`] writes a request's bytes; [`exchange`] sends bytes on a fresh connection and
//!   reads until the server closes it; [`raw_request`] and [`raw_send`] are the two common uses.
//! - [`read_response`] reads one answer off a kept-alive connection (blocking).
//! - [`blocking_request`]: one request on a blocking socket (S3 setup, readiness probes).
//! - [`parse`]: a whole answer (head, and body decoded when chunked) from bytes.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 answer read off a raw socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The name the tests that read answers off kept-alive connections use.
pub type RawAnswer = RawResponse;

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The bytes of a request with `Host: 127.0.0.1`, `Connection: close` and the given headers.
/// `Content-Length` is added for the body unless a header sets it (or `Transfer-Encoding`)
/// already, and only when there is a body or the method is PUT, POST or PATCH.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        let lk = k.to_ascii_lowercase();
        has_len |= lk == "content-length" || lk == "transfer-encoding";
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `host:port` of `addr`, which may also be a base URL `http://host:port/`.
fn host_port(addr: &str) -> &str {
    addr.strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/')
}

/// Sends `data` on a new connection to `addr` (`host:port` or `http://host:port`), closes the
/// sending half when `half_close`, and reads until the server closes the connection. Write errors
/// are ignored (the server may answer and close before reading everything), and so is a reset
/// after a partial answer. `Ok(None)` when the server closed without answering; `Err` when it
/// could not be reached, or nothing ended within `limit` (a hang).
pub async fn exchange(
    addr: &str,
    data: &[u8],
    limit: Duration,
    half_close: bool,
) -> Result<Option<RawResponse>, String> {
    let host = host_port(addr);
    let work = async {
        let mut s = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        let _ = s.write_all(data).await;
        if half_close {
            let _ = s.shutdown().await;
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no answer and no close within {limit:?}"))??;
    Ok(parse(&buf))
}

/// Sends one request written by hand (so the path is not normalised, e.g. `..` stays) to the
/// registry at `base` (`http://host:port`) and reads the whole answer (10 s at most). Panics when
/// there is no answer.
pub async fn raw_request(base: &str, method: &str, path: &str, body: &[u8]) -> RawResponse {
    let len = body.len().to_string();
    let data = request(method, path, &[("Content-Length", &len)], body);
    exchange(base, &data, Duration::from_secs(10), false)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .unwrap_or_else(|| panic!("{method} {path}: closed without an answer"))
}

/// Sends `data` (a request written by hand, possibly cut short) to the registry at `base`,
/// closes the sending half, and reads whatever comes back (10 s at most). `None` when the
/// server closed the connection without answering.
pub async fn raw_send(base: &str, data: &[u8]) -> Option<RawResponse> {
    exchange(base, data, Duration::from_secs(10), true)
        .await
        .unwrap_or_else(|e| panic!("raw_send: {e}"))
}

/// One request on a blocking socket to `addr` (connect within 2 s, answer within 30 s).
pub fn blocking_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<RawResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(&request(method, path, &[], body))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    parse(&out).ok_or_else(|| {
        std::io::Error::other(format!(
            "bad response: {:.200}",
            String::from_utf8_lossy(&out)
        ))
    })
}

/// Reads one answer to a request whose method was `method` off a kept-alive connection: the head,
/// then `Content-Length` bytes of body (none for HEAD).
pub fn read_response(r: &mut impl BufRead, method: &str) -> std::io::Result<RawResponse> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed before the end of the head".into()));
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push(line.trim_end().to_owned());
    }
    let (status, headers) =
        parse_head(&head.join("\r\n")).ok_or_else(|| bad(format!("bad head {head:?}")))?;
    let mut answer = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if method != "HEAD" {
        let len: usize = answer
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("no numeric Content-Length".into()))?;
        answer.body = vec![0; len];
        r.read_exact(&mut answer.body)?;
    }
    Ok(answer)
}

/// The status and headers (names lowercased) of a head without its final empty line.
fn parse_head(head: &str) -> Option<(u16, Vec<(String, String)>)> {
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((status, headers))
}

/// A whole answer read until the connection closed: the head, and the body (decoded when it is
/// chunked). `None` when there is no complete head with a status line.
pub fn parse(buf: &[u8]) -> Option<RawResponse> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (status, headers) = parse_head(&String::from_utf8_lossy(&buf[..split]))?;
    let raw_body = &buf[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// The data of a chunked body, up to the last chunk or as far as it arrived.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}
