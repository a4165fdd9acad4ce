//! Store outages on the S3 backend. A `registry serve` process runs on a bucket of `s3s-fs` (a
//! disk-backed S3 server, so a restart keeps the data) started here on 127.0.0.1 (ports
//! 20000-20999); the test stops the S3 server (SIGKILL), restarts it, and freezes it (SIGSTOP,
//! a store that accepts connections and never answers) while clients push:
//! - chunks PATCHed before, during and after an outage: the one during gets a clean 503 with
//!   the spec's JSON error body and `Retry-After`, within a bounded time; after the restart the
//!   upload's status still shows the last acknowledged offset, the same chunk sent again is
//!   accepted, and the finished blob has the right digest; the unfinished blob was never served;
//! - a streamed PATCH whose store dies in the middle of the body: afterwards the upload resumes
//!   from the offset the registry reports and completes with the right digest;
//! - every kind of request while the store is down (manifest GET/PUT, blob HEAD, POST upload,
//!   tags list, /readyz) gets a 503 with Retry-After in bounded time, /livez stays 200, and a
//!   manifest PUT refused during the outage is not visible afterwards, and succeeds when retried;
//! - a short outage (store back within a second) is absorbed by the server's own retries: the
//!   request succeeds;
//! - a frozen store: requests get a 503 within the configured timeouts; after the store resumes,
//!   uploads continue and whatever was refused is absent or whole, never partial.
//!
//! The registry under test runs with `--storage-option timeout=2s --storage-option
//! connect_timeout=1s`; a second registry with object_store's default timeouts shows what the
//! defaults do when the store refuses connections (a frozen store with the defaults takes about
//! 180 s per request, the retry budget, which this test does not wait for).
//!
//! ```text
//! s3-outage [--registry PATH]   (--help for more)
//! ```
//! Prints `PASS name` / `FAIL name: reason` lines and `N passed, N failed`; exits 1 on failure.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::answer::{self, expect_range, header, location_path, Check, Remote};
use conformance::answer::{status_is, Sent};
use conformance::ensure;
use conformance::process::{self, RegistryProcess};
use conformance::program::{Common, Tally};
use conformance::reqwest::{Body, Method, Response, StatusCode};
use conformance::s3;
use conformance::s3::S3Server;
use conformance::serde_json::Value;
use conformance::{random_bytes, sha256_digest, OCI_MANIFEST};
use futures::StreamExt;

const BUCKET: &str = "outage";
const MIB: usize = 1024 * 1024;
/// The longest a request may take to be answered while the store is down or frozen.
const BOUND: Duration = Duration::from_secs(60);

/// The S3 server, which the test stops and starts again on the same port and folder.
struct Store {
    root: PathBuf,
    port: u16,
    log: PathBuf,
    server: Mutex<Option<S3Server>>,
}

impl Store {
    fn start(&self) -> Result<(), String> {
        let mut s = self.server.lock().expect("store lock");
        if s.is_none() {
            *s = Some(conformance::s3::start_s3s_fs(
                &self.root, self.port, &self.log,
            )?);
        }
        Ok(())
    }

    /// SIGKILL, as a crash or a node loss would.
    fn stop(&self) {
        if let Some(s) = self.server.lock().expect("store lock").take() {
            s.process.kill();
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(s) = &*self.server.lock().expect("store lock") {
            s.process.signal(sig);
        }
    }

    fn pid(&self) -> Option<u32> {
        self.server
            .lock()
            .expect("store lock")
            .as_ref()
            .map(|s| s.process.pid)
    }
}

/// A 503 as the spec and the issue want it: `Retry-After` (seconds or a date), and for any
/// method but HEAD a JSON body `{"errors":[{"code","message",...}]}` whose codes are uppercase
/// identifiers. Returns the first code.
async fn expect_unavailable(what: &str, resp: Response, head: bool) -> Result<String, String> {
    let status = resp.status();
    let retry_after = header(&resp, "retry-after");
    let ctype = header(&resp, "content-type").unwrap_or_default();
    let body = resp.bytes().await.unwrap_or_default();
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE,
        "{what}: status {status}, want 503: {:.300}",
        String::from_utf8_lossy(&body)
    );
    let ra = retry_after.ok_or_else(|| format!("{what}: 503 without Retry-After"))?;
    ensure!(
        ra.trim().parse::<u64>().is_ok() || ra.contains("GMT"),
        "{what}: Retry-After {ra:?} is neither seconds nor an HTTP date"
    );
    if head {
        return Ok(String::new());
    }
    ensure!(
        ctype.starts_with("application/json"),
        "{what}: 503 Content-Type {ctype:?}, want application/json"
    );
    let v: Value = conformance::serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{what}: 503 body is not JSON ({e}): {:.200}",
            String::from_utf8_lossy(&body)
        )
    })?;
    let errors = v["errors"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{what}: 503 body has no \"errors\" array: {v}"))?;
    for e in errors {
        let code = e["code"].as_str().unwrap_or_default();
        ensure!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{what}: error code {:?} is not an uppercase identifier",
            e["code"]
        );
        ensure!(
            e.get("message").is_none_or(Value::is_string),
            "{what}: error message is not a string: {e}"
        );
    }
    Ok(errors[0]["code"].as_str().unwrap_or_default().to_owned())
}

/// The end (exclusive) of the upload's `Range: 0-<last>` header; 0 when it has no bytes.
fn range_end(resp: &Response) -> Result<usize, String> {
    let r = header(resp, "range").ok_or("no Range header")?;
    let last = r
        .strip_prefix("0-")
        .and_then(|l| l.parse::<usize>().ok())
        .ok_or_else(|| format!("bad Range {r:?}"))?;
    // "0-0" is what registries send for an empty upload as well as for one byte; the caller
    // tells them apart by the PATCH it tries next (a wrong offset gets 416).
    Ok(last + 1)
}

struct Ctx {
    api: Remote,
    reg: RegistryProcess,
    store: Arc<Store>,
}

impl Ctx {
    /// GET the blob: 200, and the bytes are `data`.
    async fn expect_blob(&self, repo: &str, data: &[u8]) -> Result<(), String> {
        let digest = sha256_digest(data);
        let resp = self
            .api
            .call(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .await?;
        status_is(&resp, 200, &format!("GET blob {digest}:"))?;
        let body = resp.bytes().await.map_err(|e| format!("read blob: {e}"))?;
        ensure!(
            body.len() == data.len() && sha256_digest(&body) == digest,
            "GET blob {digest}: {} bytes hashing to {}",
            body.len(),
            sha256_digest(&body)
        );
        Ok(())
    }
}

/// Timed request: the answer and how long it took; fails past [`BOUND`].
async fn timed<F, T>(what: &str, f: F) -> Result<(T, Duration), String>
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let t = Instant::now();
    let r = tokio::time::timeout(BOUND + Duration::from_secs(30), f)
        .await
        .map_err(|_| {
            format!(
                "{what}: no answer within {:?}",
                BOUND + Duration::from_secs(30)
            )
        })??;
    let took = t.elapsed();
    ensure!(
        took <= BOUND,
        "{what}: answered after {:.1} s, more than {BOUND:?}",
        took.as_secs_f64()
    );
    Ok((r, took))
}

async fn chunks_across_an_outage(ctx: &Ctx) -> Check {
    let repo = "outage/chunks";
    let sizes = [6 * MIB, 6 * MIB + 7, 3 * MIB + 1];
    let data = random_bytes(sizes.iter().sum());
    let (a, b) = (sizes[0], sizes[0] + sizes[1]);
    let loc = ctx.api.start_upload(repo).await?;
    let resp = ctx.api.patch(&loc, 0, &data[..a]).await?;
    expect_range("PATCH before the outage", &resp, 202, a)?;
    let loc = location_path(&resp)?;

    ctx.store.stop();
    let (resp, took) = timed(
        "PATCH during the outage",
        ctx.api.patch(&loc, a, &data[a..b]),
    )
    .await?;
    let code = expect_unavailable("PATCH during the outage", resp, false).await?;
    let (resp, _) = timed(
        "upload status during the outage",
        ctx.api.call(Method::GET, &loc),
    )
    .await?;
    expect_unavailable("upload status during the outage", resp, false).await?;
    ctx.store.start()?;

    let resp = ctx.api.call(Method::GET, &loc).await?;
    expect_range("upload status after the restart", &resp, 204, a)?;
    let resp = ctx.api.patch(&loc, a, &data[a..b]).await?;
    expect_range("the refused chunk sent again", &resp, 202, b)?;
    let loc = location_path(&resp)?;
    let resp = ctx.api.patch(&loc, b, &data[b..]).await?;
    expect_range("PATCH after the outage", &resp, 202, data.len())?;
    let loc = location_path(&resp)?;
    let digest = sha256_digest(&data);
    ensure!(
        ctx.api.blob_status(repo, &digest).await? == 404,
        "the unfinished blob is served before its PUT"
    );
    let resp = ctx.api.close(&loc, &digest).await?;
    status_is(&resp, 201, "PUT after the outage:")?;
    ctx.expect_blob(repo, &data).await?;
    Ok(format!(
        "503 {code} after {:.1} s while down",
        took.as_secs_f64()
    ))
}

async fn store_dies_mid_body(ctx: &Ctx) -> Check {
    let repo = "outage/midbody";
    let data = Arc::new(random_bytes(24 * MIB + 333));
    let digest = sha256_digest(&data);
    let loc = ctx.api.start_upload(repo).await?;
    // The body: 1 MiB pieces; after 9 MiB the S3 server is killed, then the rest follows.
    let piece = MIB;
    let n = data.len().div_ceil(piece);
    let store = ctx.store.clone();
    let d = data.clone();
    let body = futures::stream::iter(0..n).then(move |i| {
        let d = d.clone();
        let store = store.clone();
        async move {
            if i == 9 {
                let s = store.clone();
                tokio::task::spawn_blocking(move || s.stop())
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let end = ((i + 1) * piece).min(d.len());
            Ok::<_, std::io::Error>(d[i * piece..end].to_vec())
        }
    });
    let t = Instant::now();
    let sent = ctx.api.patch_stream(&loc, Body::wrap_stream(body)).await;
    let took = t.elapsed();
    ensure!(
        took <= BOUND,
        "streamed PATCH cut by the outage: answered after {:.1} s",
        took.as_secs_f64()
    );
    let outcome = match sent {
        Ok(resp) => {
            let code = expect_unavailable("streamed PATCH cut by the outage", resp, false).await?;
            format!("503 {code}")
        }
        // The server may answer and close while the body is still being sent.
        Err(e) => format!("connection ended without a readable answer ({e})"),
    };
    ensure!(
        ctx.store.pid().is_none(),
        "the S3 server was not stopped during the body"
    );
    ctx.store.start()?;

    let resp = ctx.api.call(Method::GET, &loc).await?;
    status_is(&resp, 204, "upload status after the restart:")?;
    let mut offset = range_end(&resp)?;
    // "0-0" also means "empty": try 0 when offset 1 is refused.
    let loc = location_path(&resp)?;
    let mut resp = ctx.api.patch(&loc, offset, &data[offset..]).await?;
    if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE && offset == 1 {
        offset = 0;
        resp = ctx.api.patch(&loc, 0, &data).await?;
    }
    ensure!(
        offset <= data.len(),
        "the registry reports {offset} bytes, more than were sent"
    );
    expect_range("resumed PATCH", &resp, 202, data.len())?;
    let loc = location_path(&resp)?;
    let resp = ctx.api.close(&loc, &digest).await?;
    status_is(&resp, 201, "PUT after resuming:")?;
    ctx.expect_blob(repo, &data).await?;
    Ok(format!(
        "{outcome}; resumed at {offset} of {} bytes",
        data.len()
    ))
}

async fn every_request_503_while_down(ctx: &Ctx, defaults: &RegistryProcess) -> Check {
    let repo = "outage/down";
    let manifest = ctx.api.new_manifest(repo, 1500).await?;
    let kept = ctx.api.new_manifest(repo, 1500).await?;
    let resp = ctx.api.put_manifest(repo, "kept", &kept).await?;
    status_is(&resp, 201, "PUT manifest before the outage:")?;
    let blob = sha256_digest(&random_bytes(10));

    ctx.store.stop();
    let c = &ctx.api.client;
    let url = |p: &str| ctx.api.url(p);
    let t = Instant::now();
    let (put_m, get_m, head_b, post_u, tags, ready, live, dflt) = tokio::join!(
        timed("PUT manifest", ctx.api.put_manifest(repo, "new", &manifest)),
        timed("GET manifest", async {
            c.get(url(&format!("/v2/{repo}/manifests/kept")))
                .header("accept", OCI_MANIFEST)
                .sent()
                .await
        }),
        timed("HEAD blob", async {
            c.head(url(&format!("/v2/{repo}/blobs/{blob}")))
                .sent()
                .await
        }),
        timed("POST upload", async {
            c.post(url(&format!("/v2/{repo}/blobs/uploads/")))
                .header("content-length", "0")
                .sent()
                .await
        }),
        timed("GET tags/list", async {
            c.get(url(&format!("/v2/{repo}/tags/list"))).sent().await
        }),
        timed("GET /readyz", async { c.get(url("/readyz")).sent().await }),
        timed("GET /livez", async { c.get(url("/livez")).sent().await }),
        timed(
            "GET manifest on the registry with default timeouts",
            async {
                c.get(defaults.url(&format!("/v2/{repo}/manifests/kept")))
                    .header("accept", OCI_MANIFEST)
                    .sent()
                    .await
            }
        ),
    );
    let slowest = t.elapsed();
    let (resp, _) = put_m?;
    expect_unavailable("PUT manifest", resp, false).await?;
    expect_unavailable("GET manifest", get_m?.0, false).await?;
    expect_unavailable("HEAD blob", head_b?.0, true).await?;
    expect_unavailable("POST upload", post_u?.0, false).await?;
    expect_unavailable("GET tags/list", tags?.0, false).await?;
    let (ready, _) = ready?;
    status_is(&ready, 503, "/readyz while the store is down:")?;
    let (live, live_took) = live?;
    status_is(&live, 200, "/livez while the store is down:")?;
    ensure!(
        live_took < Duration::from_secs(2),
        "/livez took {:.1} s while the store is down",
        live_took.as_secs_f64()
    );
    let (dresp, dtook) = dflt?;
    expect_unavailable("GET manifest (default timeouts)", dresp, false).await?;
    ctx.store.start()?;

    let (status, _, _) = ctx.api.get_manifest(repo, "new").await?;
    ensure!(
        status == 404,
        "the manifest refused during the outage is served afterwards ({status})"
    );
    let resp = ctx.api.put_manifest(repo, "new", &manifest).await?;
    status_is(&resp, 201, "PUT manifest retried after the outage:")?;
    let (status, _, body) = ctx.api.get_manifest(repo, "new").await?;
    ensure!(
        status == 200 && body == manifest,
        "the retried manifest: {status}, exact bytes: {}",
        body == manifest
    );
    let what = "the manifest pushed before the outage";
    ctx.api.expect_manifest((repo, "kept"), &kept, what).await?;
    Ok(format!(
        "7 requests answered 503 within {:.1} s; with default timeouts {:.1} s",
        slowest.as_secs_f64(),
        dtook.as_secs_f64()
    ))
}

async fn short_outage_is_retried_inside(ctx: &Ctx) -> Check {
    let repo = "outage/short";
    let data = random_bytes(6 * MIB + 5);
    let loc = ctx.api.start_upload(repo).await?;
    ctx.store.stop();
    let store = ctx.store.clone();
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        tokio::task::spawn_blocking(move || store.start())
            .await
            .map_err(|e| e.to_string())?
    });
    let t = Instant::now();
    let resp = ctx.api.patch(&loc, 0, &data).await;
    let took = t.elapsed();
    restart.await.map_err(|e| e.to_string())??;
    let resp = resp?;
    expect_range(
        "PATCH while the store restarts within a second",
        &resp,
        202,
        data.len(),
    )?;
    let loc = location_path(&resp)?;
    let resp = ctx.api.close(&loc, &sha256_digest(&data)).await?;
    status_is(&resp, 201, "PUT:")?;
    ctx.expect_blob(repo, &data).await?;
    Ok(format!("answered 202 after {:.1} s", took.as_secs_f64()))
}

async fn frozen_store(ctx: &Ctx) -> Check {
    let repo = "outage/frozen";
    let data = random_bytes(12 * MIB + 9);
    let a = 6 * MIB;
    let loc = ctx.api.start_upload(repo).await?;
    let resp = ctx.api.patch(&loc, 0, &data[..a]).await?;
    expect_range("PATCH before the freeze", &resp, 202, a)?;
    let loc = location_path(&resp)?;
    let manifest = ctx.api.new_manifest(repo, 1500).await?;

    ctx.store.signal("STOP");
    let (patch, put_m, get_m) = tokio::join!(
        timed(
            "PATCH to a frozen store",
            ctx.api.patch(&loc, a, &data[a..])
        ),
        timed(
            "PUT manifest to a frozen store",
            ctx.api.put_manifest(repo, "frozen", &manifest)
        ),
        timed("GET manifest from a frozen store", async {
            ctx.api
                .client
                .get(ctx.api.url(&format!("/v2/{repo}/manifests/frozen")))
                .sent()
                .await
        }),
    );
    ctx.store.signal("CONT");
    let (patch, took) = patch?;
    expect_unavailable("PATCH to a frozen store", patch, false).await?;
    let (put_m, _) = put_m?;
    expect_unavailable("PUT manifest to a frozen store", put_m, false).await?;
    expect_unavailable("GET manifest from a frozen store", get_m?.0, false).await?;

    // The store resumes and may now carry out requests the registry gave up on: whatever
    // shows up must be whole.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _, body) = ctx.api.get_manifest(repo, "frozen").await?;
    ensure!(
        status == 404 || (status == 200 && body == manifest),
        "the manifest refused while frozen: {status}, {} bytes",
        body.len()
    );
    let resp = ctx.api.call(Method::GET, &loc).await?;
    status_is(&resp, 204, "upload status after the freeze:")?;
    let offset = range_end(&resp)?;
    ensure!(
        offset == a || offset == data.len(),
        "upload status after the freeze: {offset} bytes, want {a} (refused chunk dropped) or {} (it landed late)",
        data.len()
    );
    let loc = location_path(&resp)?;
    let loc = if offset < data.len() {
        let resp = ctx.api.patch(&loc, offset, &data[offset..]).await?;
        expect_range("the refused chunk sent again", &resp, 202, data.len())?;
        location_path(&resp)?
    } else {
        loc
    };
    let resp = ctx.api.close(&loc, &sha256_digest(&data)).await?;
    status_is(&resp, 201, "PUT after the freeze:")?;
    ctx.expect_blob(repo, &data).await?;
    let resp = ctx.api.put_manifest(repo, "frozen", &manifest).await?;
    status_is(&resp, 201, "PUT manifest after the freeze:")?;
    let what = "manifest after the freeze";
    ctx.api
        .expect_manifest((repo, "frozen"), &manifest, what)
        .await?;
    Ok(format!(
        "503 after {:.1} s (timeout=2s, connect_timeout=1s); upload resumed at {offset}",
        took.as_secs_f64()
    ))
}

fn setup(
    registry: &Path,
    work: &Path,
) -> Result<(Arc<Store>, RegistryProcess, RegistryProcess), String> {
    let root = work.join("s3");
    std::fs::create_dir_all(root.join(BUCKET)).map_err(|e| e.to_string())?;
    let store = Arc::new(Store {
        root,
        port: process::free_port()?,
        log: work.join("s3s-fs.log"),
        server: Mutex::new(None),
    });
    store.start()?;
    let endpoint: std::net::SocketAddr = ([127, 0, 0, 1], store.port).into();
    let mut options = s3::options(endpoint);
    let default_reg = RegistryProcess::start(
        registry,
        &format!("s3://{BUCKET}/reg"),
        &options,
        &["--gc-interval", "0", "--log-level", "info"],
        &work.join("registry-defaults.log"),
    )?;
    options.insert("timeout".into(), "2s".into());
    options.insert("connect_timeout".into(), "1s".into());
    let reg = RegistryProcess::start(
        registry,
        &format!("s3://{BUCKET}/reg"),
        &options,
        &["--gc-interval", "0", "--log-level", "info"],
        &work.join("registry.log"),
    )?;
    Ok((store, reg, default_reg))
}

conformance::program_main!(
    checks,
    "Stops, restarts and freezes the S3 server under the registry while clients push."
);

async fn checks(Common { registry }: Common, work: PathBuf) -> Tally {
    let mut tally = Tally::default();
    let Some((store, reg, default_reg)) = tally.setup("setup", setup(&registry, &work)) else {
        return tally;
    };
    println!(
        "# S3 server: s3s-fs (stopped with SIGKILL and restarted on the same folder; frozen with SIGSTOP)"
    );
    eprintln!(
        "# s3s-fs on 127.0.0.1:{}, registry on {} (default timeouts: {}); work dir {}",
        store.port,
        reg.base,
        default_reg.base,
        work.display()
    );
    let ctx = Ctx {
        api: Remote::new(&answer::client(Duration::from_secs(300)), &reg.base),
        reg,
        store,
    };
    let t = Instant::now();
    tally.record(
        "chunks-before-during-after-outage",
        chunks_across_an_outage(&ctx).await,
    );
    let _ = ctx.store.start();
    tally.record(
        "store-dies-mid-streamed-patch",
        store_dies_mid_body(&ctx).await,
    );
    let _ = ctx.store.start();
    tally.record(
        "every-request-503-while-down",
        every_request_503_while_down(&ctx, &default_reg).await,
    );
    let _ = ctx.store.start();
    tally.record(
        "short-outage-retried-inside",
        short_outage_is_retried_inside(&ctx).await,
    );
    let _ = ctx.store.start();
    tally.record("frozen-store", frozen_store(&ctx).await);
    ctx.store.signal("CONT");
    eprintln!("# checks took {:.1} s", t.elapsed().as_secs_f64());
    if !ctx.reg.process.alive() {
        tally.record("registry-alive", Err("the registry process exited".into()));
    }
    drop(ctx);
    drop(default_reg);
    tally
}
