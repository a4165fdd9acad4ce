//! A minimal client of the Kubernetes CRI (package `runtime.v1`) over a unix socket: the three
//! unary calls the node setup needs (`Version`, `Status` with `verbose`, `PullImage`), as gRPC
//! over HTTP/2 with the few protobuf messages encoded by hand. The field numbers are those of
//! `k8s.io/cri-api/pkg/apis/runtime/v1/api.proto`; fields not listed are skipped when decoding.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the runtime answered to `Version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub runtime_name: String,
    pub runtime_version: String,
    pub runtime_api_version: String,
}

/// A failed call: the socket, HTTP/2 or gRPC status, as one message.
#[derive(Debug)]
pub struct CallError(pub String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallError {}

fn err(m: impl Into<String>) -> CallError {
    CallError(m.into())
}

// ------------------------------------------------------------------ protobuf, the subset used
fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_bytes_field(buf: &mut BytesMut, field: u32, data: &[u8]) {
    put_varint(buf, u64::from(field << 3 | 2));
    put_varint(buf, data.len() as u64);
    buf.put_slice(data);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, CallError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if buf.is_empty() {
            return Err(err("protobuf: truncated varint"));
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(err("protobuf: varint too long"))
}

/// The fields of one message: (field number, length-delimited bytes). Varint and fixed fields
/// are skipped (none of the messages read here needs them).
fn fields(mut buf: &[u8]) -> Result<Vec<(u32, &[u8])>, CallError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        let field = (key >> 3) as u32;
        match key & 7 {
            0 => {
                get_varint(&mut buf)?;
            }
            1 if buf.len() >= 8 => buf.advance(8),
            5 if buf.len() >= 4 => buf.advance(4),
            2 => {
                let n = get_varint(&mut buf)? as usize;
                if buf.len() < n {
                    return Err(err("protobuf: truncated field"));
                }
                out.push((field, &buf[..n]));
                buf.advance(n);
            }
            w => return Err(err(format!("protobuf: unexpected wire type {w}"))),
        }
    }
    Ok(out)
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `VersionResponse`: version = 1, runtime_name = 2, runtime_version = 3, runtime_api_version = 4.
pub fn decode_version(msg: &[u8]) -> Result<Version, CallError> {
    let mut v = Version::default();
    for (f, b) in fields(msg)? {
        match f {
            2 => v.runtime_name = string(b),
            3 => v.runtime_version = string(b),
            4 => v.runtime_api_version = string(b),
            _ => {}
        }
    }
    Ok(v)
}

/// `StatusResponse`: status = 1, map<string, string> info = 2 (entries: key = 1, value = 2).
pub fn decode_status_info(msg: &[u8]) -> Result<BTreeMap<String, String>, CallError> {
    let mut info = BTreeMap::new();
    for (f, b) in fields(msg)? {
        if f == 2 {
            let (mut k, mut v) = (String::new(), String::new());
            for (ef, eb) in fields(b)? {
                match ef {
                    1 => k = string(eb),
                    2 => v = string(eb),
                    _ => {}
                }
            }
            info.insert(k, v);
        }
    }
    Ok(info)
}

/// `PullImageRequest { ImageSpec image = 1 { string image = 1 } }`.
pub fn encode_pull_request(image: &str) -> Bytes {
    let mut spec = BytesMut::new();
    put_bytes_field(&mut spec, 1, image.as_bytes());
    let mut req = BytesMut::new();
    put_bytes_field(&mut req, 1, &spec);
    req.freeze()
}

/// `PullImageResponse { string image_ref = 1 }`.
pub fn decode_pull_response(msg: &[u8]) -> Result<String, CallError> {
    Ok(fields(msg)?
        .into_iter()
        .find(|(f, _)| *f == 1)
        .map(|(_, b)| string(b))
        .unwrap_or_default())
}

// ------------------------------------------------------------------ gRPC over HTTP/2
fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One unary call: `method` is `/runtime.v1.RuntimeService/Status` and the like. Returns the
/// response message, or the gRPC status and message as an error.
pub async fn call(socket: &Path, method: &str, msg: Bytes) -> Result<Bytes, CallError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| err(format!("connect {}: {e}", socket.display())))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| err(format!("HTTP/2 handshake on {}: {e}", socket.display())))?;
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://localhost{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame(&msg)))
        .map_err(|e| err(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(format!("{method}: {e}")))?;
    let (parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        return Err(err(format!("{method}: HTTP {}", parts.status)));
    }
    let collected = body
        .collect()
        .await
        .map_err(|e| err(format!("{method}: {e}")))?;
    // grpc-status comes in the trailers, or in the headers of a trailers-only response
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let pick = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let code = pick("grpc-status").unwrap_or_else(|| "missing".into());
    if code != "0" {
        let message = percent_decode(&pick("grpc-message").unwrap_or_default());
        return Err(err(format!("{method}: gRPC status {code}: {message}")));
    }
    if data.len() < 5 {
        return Err(err(format!("{method}: empty response")));
    }
    let n = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data[0] != 0 || data.len() < 5 + n {
        return Err(err(format!("{method}: malformed gRPC frame")));
    }
    Ok(data.slice(5..5 + n))
}

/// `RuntimeService/Version`.
pub async fn version(socket: &Path) -> Result<Version, CallError> {
    let m = call(socket, "/runtime.v1.RuntimeService/Version", Bytes::new()).await?;
    decode_version(&m)
}

/// `RuntimeService/Status` with `verbose = true`: the `info` map (containerd puts its effective
/// CRI configuration, as JSON, under `config`).
pub async fn status_info(socket: &Path) -> Result<BTreeMap<String, String>, CallError> {
    // StatusRequest { bool verbose = 1 }
    let m = call(
        socket,
        "/runtime.v1.RuntimeService/Status",
        Bytes::from_static(&[0x08, 0x01]),
    )
    .await?;
    decode_status_info(&m)
}

/// `ImageService/PullImage`, bounded by `timeout`; returns the image reference the runtime gives.
pub async fn pull(socket: &Path, image: &str, timeout: Duration) -> Result<String, CallError> {
    let fut = call(
        socket,
        "/runtime.v1.ImageService/PullImage",
        encode_pull_request(image),
    );
    let m = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| err(format!("PullImage {image}: no answer within {timeout:?}")))??;
    decode_pull_response(&m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_request_bytes() {
        // ImageSpec{image:"a/b"} inside PullImageRequest field 1
        assert_eq!(
            &encode_pull_request("a/b")[..],
            &[0x0a, 0x05, 0x0a, 0x03, b'a', b'/', b'b']
        );
    }

    #[test]
    fn status_info_map_is_decoded() {
        let mut entry = BytesMut::new();
        put_bytes_field(&mut entry, 1, b"config");
        put_bytes_field(&mut entry, 2, b"{\"x\":1}");
        let mut msg = BytesMut::new();
        put_bytes_field(&mut msg, 1, &[0x08, 0x01]); // status, skipped
        put_bytes_field(&mut msg, 2, &entry);
        let info = decode_status_info(&msg).unwrap();
        assert_eq!(info.get("config").map(String::as_str), Some("{\"x\":1}"));
    }

    #[test]
    fn version_fields() {
        let mut msg = BytesMut::new();
        put_bytes_field(&mut msg, 1, b"0.1.0");
        put_bytes_field(&mut msg, 2, b"containerd");
        put_bytes_field(&mut msg, 3, b"v2.1.9");
        put_bytes_field(&mut msg, 4, b"v1");
        let v = decode_version(&msg).unwrap();
        assert_eq!(v.runtime_name, "containerd");
        assert_eq!(v.runtime_version, "v2.1.9");
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(decode_status_info(&[0x12, 0x05, 0x0a]).is_err());
        assert_eq!(percent_decode("a%20b%3A"), "a b:");
    }
}
