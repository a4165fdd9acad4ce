//! `regbench floor`: the push floor, a server that does the least work any registry must do to
//! accept a blob, so that a push figure can be read against what the work itself costs on this
//! machine. For each upload it receives the body with hyper, hashes every byte with the same
//! SHA-256 as the registry (`sha2`, SHA-NI), appends it to a file, and at the closing PUT checks
//! the digest, fsyncs the file (with `--fsync true`), renames it into place and fsyncs the
//! folder. Nothing else: no upload state on disk, no resumability, no links, no repositories, no
//! limits. It speaks just enough of the distribution API for the blob push scenarios (POST,
//! PATCH, PUT `?digest=`, HEAD of the blob, and `GET /v2/` to say it is up) and runs as its own process, so its CPU and memory
//! are read from /proc like any server's.
//!
//! Hashing and writing run one after the other on the connection's task, the cheapest way in
//! CPU; the registry hashes on a second thread so that the two overlap, which costs a hand-off
//! but shortens the push.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Digest as _;
use tokio::net::TcpListener;

/// One upload in progress.
struct Upload {
    file: std::fs::File,
    hasher: sha2::Sha256,
    len: u64,
}

struct Floor {
    dir: PathBuf,
    fsync: bool,
    uploads: Mutex<HashMap<u64, Upload>>,
    next: AtomicU64,
}

/// Serves on `listen` until the process is killed, storing under `dir`.
pub(crate) async fn serve(listen: SocketAddr, dir: PathBuf, fsync: bool) -> Result<()> {
    std::fs::create_dir_all(dir.join("uploads")).context("uploads folder")?;
    std::fs::create_dir_all(dir.join("blobs")).context("blobs folder")?;
    let floor = Arc::new(Floor {
        dir,
        fsync,
        uploads: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let floor = floor.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let floor = floor.clone();
                async move { Ok::<_, Infallible>(floor.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn answer(status: StatusCode, headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(Bytes::new())).expect("valid response")
}

impl Floor {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("regbench floor: {e:#}");
                answer(StatusCode::BAD_REQUEST, &[])
            }
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let method = req.method().clone();
        if method == Method::POST && path.ends_with("/blobs/uploads/") {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let file = std::fs::File::create(self.dir.join("uploads").join(id.to_string()))?;
            let upload = Upload {
                file,
                hasher: sha2::Sha256::new(),
                len: 0,
            };
            self.uploads.lock().expect("uploads").insert(id, upload);
            return Ok(answer(
                StatusCode::ACCEPTED,
                &[("location", format!("/floor/uploads/{id}"))],
            ));
        }
        if let Some(id) = path.strip_prefix("/floor/uploads/") {
            let id: u64 = id.parse().context("upload id")?;
            let mut up = self
                .uploads
                .lock()
                .expect("uploads")
                .remove(&id)
                .context("unknown upload")?;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    up.hasher.update(&data);
                    up.file.write_all(&data)?;
                    up.len += data.len() as u64;
                }
            }
            let location = format!("/floor/uploads/{id}");
            if method == Method::PATCH {
                let range = format!("0-{}", up.len.saturating_sub(1));
                self.uploads.lock().expect("uploads").insert(id, up);
                return Ok(answer(
                    StatusCode::ACCEPTED,
                    &[("location", location), ("range", range)],
                ));
            }
            let want = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("digest="))
                .context("PUT without digest")?
                .replace("%3A", ":");
            let hex: String = up
                .hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let got = format!("sha256:{hex}");
            anyhow::ensure!(got == want, "digest {got}, expected {want}");
            if self.fsync {
                up.file.sync_all()?;
            }
            let blobs = self.dir.join("blobs");
            std::fs::rename(
                self.dir.join("uploads").join(id.to_string()),
                blobs.join(&hex),
            )?;
            if self.fsync {
                std::fs::File::open(&blobs)?.sync_all()?;
            }
            return Ok(answer(
                StatusCode::CREATED,
                &[("docker-content-digest", got.clone()), ("location", got)],
            ));
        }
        if method == Method::GET && path == "/v2/" {
            return Ok(answer(StatusCode::OK, &[]));
        }
        if method == Method::HEAD {
            if let Some((_, digest)) = path.rsplit_once("/blobs/") {
                let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
                if let Ok(m) = std::fs::metadata(self.dir.join("blobs").join(hex)) {
                    return Ok(answer(
                        StatusCode::OK,
                        &[
                            ("content-length", m.len().to_string()),
                            ("docker-content-digest", digest.to_owned()),
                        ],
                    ));
                }
            }
        }
        Ok(answer(StatusCode::NOT_FOUND, &[]))
    }
}
