//! Server memory on the S3 backend: pushes a 1 GiB blob through a `registry serve` process on an
//! S3 bucket (`s3s-fs`, a disk-backed S3 server started here on 127.0.0.1, ports 20000-20999),
//! twice: as one streamed PATCH without Content-Length (chunked transfer encoding), then in
//! 8 MiB chunks (PATCH with Content-Range), each closed by PUT `?digest=`; then pulls it back
//! and checks its digest. After each phase it reads the server's peak resident memory (`VmHWM`
//! in `/proc/PID/status`) and asserts it stays below 64 MiB + 5 MiB (one part) per concurrent
//! upload; the last phase runs two 256 MiB uploads at once (bound 64 + 2 x 5 MiB).
//!
//! ```text
//! s3-memory [--registry PATH] [--mib 1024]   (--help for more)
//! ```
//! Prints `PASS name` / `FAIL name: reason` lines (with the memory figures) and
//! `N passed, N failed`; exits 1 on failure.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use conformance::answer::status_is;
use conformance::answer::{self, location_path, Remote};
use conformance::ensure;
use conformance::process::{self, RegistryProcess, Watched};
use conformance::program::{Common, Tally};
use conformance::reqwest::{Body, StatusCode};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1024 * 1024;
const BUCKET: &str = "memory";
/// Piece size of the generated data (what one generator step produces).
const PIECE: usize = 256 * 1024;

/// Deterministic pseudo-random content: piece `i` of the blob seeded by `seed`.
fn piece(seed: u64, i: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut z = seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407);
    while out.len() < len {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(x ^ (x >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The bytes `[start, end)` of the blob `seed` (of any length), built from its pieces.
fn bytes_at(seed: u64, start: u64, end: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut i = start / PIECE as u64;
    while (i * PIECE as u64) < end {
        let p = piece(seed, i, PIECE);
        let p_start = i * PIECE as u64;
        let from = start.saturating_sub(p_start) as usize;
        let to = ((end - p_start) as usize).min(PIECE);
        out.extend_from_slice(&p[from..to]);
        i += 1;
    }
    out
}

/// The sha256 digest of the blob `seed` of `len` bytes.
fn digest_of(seed: u64, len: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < len {
        let end = (off + PIECE as u64).min(len);
        h.update(bytes_at(seed, off, end));
        off = end;
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

struct Ctx {
    api: Remote,
    reg: RegistryProcess,
}

impl Ctx {
    async fn put(&self, loc: &str, digest: &str) -> Result<(), String> {
        let resp = self.api.close(loc, digest).await?;
        let status = resp.status();
        ensure!(
            status == StatusCode::CREATED,
            "PUT ?digest: {status}: {:.300}",
            resp.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// One PATCH streaming the whole blob, without Content-Length or Content-Range.
    async fn push_streamed(&self, repo: &str, seed: u64, len: u64) -> Result<String, String> {
        let loc = self.api.start_upload(repo).await?;
        let pieces = len.div_ceil(PIECE as u64);
        let body = futures::stream::iter(0..pieces).map(move |i| {
            let start = i * PIECE as u64;
            Ok::<_, std::io::Error>(bytes_at(seed, start, (start + PIECE as u64).min(len)))
        });
        let resp = self
            .api
            .patch_stream(&loc, Body::wrap_stream(body))
            .await
            .map_err(|e| format!("streamed PATCH: {e}"))?;
        let status = resp.status();
        ensure!(
            status == StatusCode::ACCEPTED,
            "streamed PATCH: {status}: {:.300}",
            resp.text().await.unwrap_or_default()
        );
        let range = resp.headers().get("range").and_then(|v| v.to_str().ok());
        let want = format!("0-{}", len - 1);
        ensure!(
            range == Some(want.as_str()),
            "streamed PATCH: Range {range:?}, want {want}"
        );
        let loc = location_path(&resp)?;
        let digest = digest_of(seed, len);
        self.put(&loc, &digest).await?;
        Ok(digest)
    }

    /// PATCHes of `chunk` bytes with Content-Range and Content-Length.
    async fn push_chunked(
        &self,
        repo: &str,
        seed: u64,
        len: u64,
        chunk: u64,
    ) -> Result<String, String> {
        let mut loc = self.api.start_upload(repo).await?;
        let mut off = 0;
        while off < len {
            let end = (off + chunk).min(len);
            let resp = self
                .api
                .client
                .patch(self.api.url(&loc))
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{off}-{}", end - 1))
                .body(bytes_at(seed, off, end))
                .send()
                .await
                .map_err(|e| format!("PATCH {off}-{}: {e}", end - 1))?;
            ensure!(
                resp.status() == StatusCode::ACCEPTED,
                "PATCH {off}-{}: {}",
                end - 1,
                resp.status()
            );
            loc = location_path(&resp)?;
            off = end;
        }
        let digest = digest_of(seed, len);
        self.put(&loc, &digest).await?;
        Ok(digest)
    }

    /// GETs the blob and checks its length and digest (streamed, never held whole).
    async fn pull(&self, repo: &str, digest: &str, len: u64) -> Result<(), String> {
        let resp = self
            .api
            .client
            .get(self.api.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .map_err(|e| format!("GET blob: {e}"))?;
        status_is(&resp, 200, "GET blob:")?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("read blob: {e}"))?;
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        ensure!(n == len, "GET blob: {n} bytes, want {len}");
        let got = format!("sha256:{}", hex::encode(h.finalize()));
        ensure!(
            got == digest,
            "GET blob: bytes hash to {got}, want {digest}"
        );
        Ok(())
    }
}

fn hwm_mib(p: &Watched) -> Result<f64, String> {
    p.status_kb("VmHWM")
        .map(|kb| kb as f64 / 1024.0)
        .ok_or_else(|| format!("no VmHWM in /proc/{}/status", p.pid))
}

/// Checks the peak against 64 MiB + 5 MiB per concurrent upload; the note carries the figures.
fn check_memory(p: &Watched, uploads: u32, secs: f64, bytes: u64) -> Result<String, String> {
    let hwm = hwm_mib(p)?;
    let bound = 64.0 + 5.0 * f64::from(uploads);
    let rate = bytes as f64 / MIB as f64 / secs.max(0.001);
    let note =
        format!("server VmHWM {hwm:.1} MiB, bound {bound:.0} MiB; {secs:.1} s, {rate:.0} MiB/s");
    let within = hwm < bound;
    ensure!(within, "{note}");
    Ok(note)
}

/// Pushes and pulls a large blob through a registry on S3 storage and checks its peak memory.
#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Size of the large blob, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
}

conformance::program_main!(checks);

async fn checks(args: Args, work: PathBuf) -> Tally {
    let registry = args.common.registry;
    let mib = args.mib;
    let len = mib * MIB;
    let mut tally = Tally::default();
    let root = work.join("s3");
    std::fs::create_dir_all(root.join(BUCKET)).expect("bucket folder");
    let setup = (|| {
        let port = process::free_port()?;
        let server = conformance::s3::start_s3s_fs(&root, port, &work.join("s3s-fs.log"))?;
        let reg = RegistryProcess::start(
            &registry,
            &format!("s3://{BUCKET}/reg"),
            &server.options(),
            &["--gc-interval", "0", "--log-level", "warn"],
            &work.join("registry.log"),
        )?;
        Ok::<_, String>((server, reg))
    })();
    let Some((server, reg)) = tally.setup("setup", setup) else {
        return tally;
    };
    eprintln!(
        "# s3s-fs on {}, registry on {} (pid {}); start VmHWM {:.1} MiB; work dir {}",
        server.addr,
        reg.base,
        reg.process.pid,
        hwm_mib(&reg.process).unwrap_or(0.0),
        work.display()
    );
    let ctx = Ctx {
        api: Remote::new(&answer::client(Duration::from_secs(600)), &reg.base),
        reg,
    };
    let seed = std::process::id() as u64 ^ 0x5EED;

    let t = Instant::now();
    let streamed = ctx.push_streamed("memory/streamed", seed, len).await;
    let secs = t.elapsed().as_secs_f64();
    let streamed_digest = streamed.as_ref().ok().cloned();
    tally.record(
        &format!("push-{mib}mib-one-streamed-patch"),
        streamed.and_then(|_| check_memory(&ctx.reg.process, 1, secs, len)),
    );

    let t = Instant::now();
    let chunked = ctx
        .push_chunked("memory/chunked", seed ^ 1, len, 8 * MIB)
        .await;
    let secs = t.elapsed().as_secs_f64();
    tally.record(
        &format!("push-{mib}mib-in-8mib-chunks"),
        chunked.and_then(|_| check_memory(&ctx.reg.process, 1, secs, len)),
    );

    if let Some(digest) = streamed_digest {
        let t = Instant::now();
        let pulled = ctx.pull("memory/streamed", &digest, len).await;
        let secs = t.elapsed().as_secs_f64();
        tally.record(
            &format!("pull-{mib}mib"),
            pulled.and_then(|_| check_memory(&ctx.reg.process, 1, secs, len)),
        );
    }

    // Two uploads at once: one streamed, one in 8 MiB chunks, a quarter of the size each.
    let quarter = len / 4;
    let t = Instant::now();
    let (a, b) = tokio::join!(
        ctx.push_streamed("memory/concurrent-a", seed ^ 2, quarter),
        ctx.push_chunked("memory/concurrent-b", seed ^ 3, quarter, 8 * MIB)
    );
    let secs = t.elapsed().as_secs_f64();
    tally.record(
        &format!("two-concurrent-{}mib-pushes", mib / 4),
        a.and(b)
            .and_then(|_| check_memory(&ctx.reg.process, 2, secs, 2 * quarter)),
    );

    if !ctx.reg.process.alive() {
        tally.record("registry-alive", Err("the registry process exited".into()));
    }
    drop(ctx);
    drop(server);
    tally
}
