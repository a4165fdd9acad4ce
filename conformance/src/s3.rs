//! The S3 side of the tests that run on the object-store backend (the spec suite with
//! `CONFORMANCE_STORAGE=s3`, and the S3 test programs `s3-replicas`, `s3-outage`, `s3-memory`):
//! credentials, the registry's storage options, the moto server the spec suite shares, plain
//! requests to an S3 server (buckets, listings), and the programs' PASS/FAIL
//! [`Tally`](crate::s3::Tally), and the S3 servers themselves (moto and s3s-fs), started as
//! watched processes through [`crate::process`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{free_port, on_path, spawn_watched, wait_listening, Watched};

/// Access key and secret given to the S3 servers and the registry (moto takes any).
pub const ACCESS_KEY: &str = "conformance";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "conformance-secret";

/// Registry storage options for an S3 server at `addr` (path-style, plain HTTP).
pub fn options(addr: SocketAddr) -> BTreeMap<String, String> {
    [
        ("endpoint", format!("http://{addr}")),
        ("allow_http", "true".to_owned()),
        ("region", "us-east-1".to_owned()),
        ("access_key_id", ACCESS_KEY.to_owned()),
        ("secret_access_key", SECRET_KEY.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The moto server shared by this test process, started on first use and stopped when the
/// process exits. Its log goes to the file named by `CONFORMANCE_MOTO_LOG`, else nowhere
/// (nothing would remove a log file when the process ends).
pub fn shared_moto() -> Result<&'static S3Server, String> {
    static MOTO: OnceLock<Result<S3Server, String>> = OnceLock::new();
    MOTO.get_or_init(|| {
        let log = std::env::var_os("CONFORMANCE_MOTO_LOG")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/dev/null".into());
        start_moto(&log)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// One plain, unsigned HTTP/1.1 request (moto accepts those); returns the status and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let answer = crate::raw::blocking_request(addr, method, path, body)?;
    Ok((
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    ))
}

/// Creates a bucket on moto (`PUT /<bucket>`); panics unless it answers 200.
pub fn create_bucket(addr: SocketAddr, bucket: &str) {
    let (code, out) = http(addr, "PUT", &format!("/{bucket}"), b"")
        .unwrap_or_else(|e| panic!("create bucket {bucket} on {addr}: {e}"));
    assert_eq!(code, 200, "create bucket {bucket}: {out:.400}");
}

/// `GET /<bucket>?<query>` on moto: the `Key` values of the listing; panics unless it answers
/// 200. `what` names the listing in the panic message.
fn listed_keys(addr: SocketAddr, bucket: &str, query: &str, what: &str) -> Vec<String> {
    let (code, out) = http(addr, "GET", &format!("/{bucket}?{query}"), b"")
        .unwrap_or_else(|e| panic!("list {what} of {bucket}: {e}"));
    assert_eq!(code, 200, "list {what} of {bucket}: {out:.400}");
    xml_values(&out, "Key")
}

/// The keys of the multipart uploads in progress in `bucket` under `prefix`, from moto's
/// `ListMultipartUploads` (`GET /<bucket>?uploads`).
pub fn multipart_uploads(addr: SocketAddr, bucket: &str, prefix: &str) -> Vec<String> {
    let query = format!("uploads&prefix={prefix}");
    listed_keys(addr, bucket, &query, "multipart uploads")
}

/// The keys of the objects in `bucket` under `prefix` (`ListObjectsV2`, up to 1000).
pub fn object_keys(addr: SocketAddr, bucket: &str, prefix: &str) -> Vec<String> {
    listed_keys(
        addr,
        bucket,
        &format!("list-type=2&prefix={prefix}"),
        "objects",
    )
}

pub use crate::program::Tally;

/// The text of every `<tag>...</tag>` element of `xml`.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split_once(&close).map(|(v, _)| v.to_owned()))
        .collect()
}

/// A running S3-compatible server, watched.
pub struct S3Server {
    pub addr: SocketAddr,
    pub process: Watched,
}

impl S3Server {
    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry's storage options for this server (`storage_options` in the config).
    pub fn options(&self) -> BTreeMap<String, String> {
        options(self.addr)
    }
}

/// Starts `moto_server` on a free port of the range (a few attempts, as another process may
/// take the port between the check and moto's bind); logs go to `log`.
pub fn start_moto(log: &Path) -> Result<S3Server, String> {
    if !on_path("moto_server") {
        return Err("moto_server is not on PATH (scripts/install-test-deps.sh installs it)".into());
    }
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let args = ["-H", "127.0.0.1", "-p", &port.to_string()].map(str::to_owned);
        let process = spawn_watched("moto_server", &args, &[], log)?;
        match wait_listening(&process, port, Duration::from_secs(60)) {
            Ok(()) => {
                return Ok(S3Server {
                    addr: ([127, 0, 0, 1], port).into(),
                    process,
                })
            }
            Err(e) => last = e,
        }
    }
    Err(format!("moto_server did not start: {last}"))
}

/// Starts `s3s-fs` (a disk-backed S3 server; keeps its data across restarts) serving the folder
/// `root` on `127.0.0.1:port` with [`ACCESS_KEY`]/[`SECRET_KEY`]; logs go to `log`. A
/// bucket is a folder of `root`.
pub fn start_s3s_fs(root: &Path, port: u16, log: &Path) -> Result<S3Server, String> {
    let args = [
        "--host".to_owned(),
        "127.0.0.1".to_owned(),
        "--port".to_owned(),
        port.to_string(),
        "--access-key".to_owned(),
        ACCESS_KEY.to_owned(),
        "--secret-key".to_owned(),
        SECRET_KEY.to_owned(),
        root.to_str().ok_or("non-UTF-8 s3s-fs root")?.to_owned(),
    ];
    let program = if on_path("s3s-fs") {
        "s3s-fs".to_owned()
    } else {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let p = format!("{home}/.cargo/bin/s3s-fs");
        if !Path::new(&p).is_file() {
            return Err(
                "s3s-fs is not installed (scripts/install-test-deps.sh installs it)".into(),
            );
        }
        p
    };
    let process = spawn_watched(&program, &args, &[], log)?;
    wait_listening(&process, port, Duration::from_secs(30))?;
    Ok(S3Server {
        addr: ([127, 0, 0, 1], port).into(),
        process,
    })
}
