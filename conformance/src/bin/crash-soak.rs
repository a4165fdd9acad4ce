//! Crash safety, checked against the real `registry` process.
//!
//! Each round starts the registry on the same storage, lets several clients push blobs
//! (monolithic and chunked), push manifests under fresh tags, and delete tags and manifests, then
//! kills the server with SIGKILL at a random moment. After a restart it checks that:
//! - everything that got a success status is whole: blobs hash to their digest, manifests come
//!   back byte for byte, tags point where they were last set, deletions stayed deleted;
//! - whatever was in flight at the kill is either absent or whole (never half-written);
//! - chunked uploads interrupted by the kill resume from the offset the server reports, and
//!   complete with the right digest;
//! - `registry fsck` finds nothing damaged.
//!
//! The last round also checks graceful shutdown: a slow upload in flight when SIGTERM arrives
//! completes with 201, and the process exits 0.
//!
//! ```text
//! crash-soak [--registry PATH] [--rounds N] [--seconds S] [--clients C]   (--help for more)
//! ```
//! Rounds stop at N or after S seconds, whichever comes first. Prints `N passed, N failed`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::answer::{status_is, Sent};
use conformance::process::{self, RegistryChild};
use conformance::program::{Common, Tally};
use conformance::{random_bytes, sha256_digest, Rng};
use serde_json::json;

#[derive(Default)]
struct Ledger {
    /// Blobs acknowledged with 201, by repository.
    blobs: Vec<(String, String, usize)>,
    /// Manifests acknowledged with 201 and not deleted: (repo, digest) -> bytes.
    manifests: HashMap<(String, String), Vec<u8>>,
    /// Manifests whose deletion was acknowledged.
    deleted: Vec<(String, String)>,
    /// Tags acknowledged: (repo, tag) -> digest.
    tags: HashMap<(String, String), String>,
    /// Tags whose deletion was acknowledged.
    untagged: Vec<(String, String)>,
    /// Objects whose fate is unknown (request in flight at the kill): (repo, digest, bytes).
    uncertain_blobs: Vec<(String, String, Vec<u8>)>,
    /// Chunked uploads cut by the kill: (repo, location, acknowledged offset, whole blob).
    interrupted: Vec<(String, String, u64, Vec<u8>)>,
}

/// Starts the registry on `storage` (the same every round); its log goes to `log`.
async fn start(bin: &Path, storage: &Path, log: &Path) -> RegistryChild {
    let extra = [
        "--fsync",
        "false",
        "--gc-interval",
        "0",
        "--shutdown-timeout",
        "20",
    ];
    RegistryChild::start(bin, storage, &extra, log)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn manifest_for(config: &str, layers: &[(String, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": layers,
    }))
    .expect("json")
}

/// Records the answer to the request that completes a blob push (`what`): acknowledged (201) in
/// `blobs`; no answer (the kill) in `uncertain_blobs`, and false: the client stops. Any other
/// status is a wrong answer (panic).
fn record_push(
    ledger: &Mutex<Ledger>,
    what: &str,
    repo: &str,
    digest: &str,
    data: Vec<u8>,
    answer: reqwest::Result<reqwest::Response>,
) -> bool {
    let mut ledger = ledger.lock().unwrap();
    match answer {
        Ok(r) if r.status() == 201 => {
            ledger
                .blobs
                .push((repo.to_owned(), digest.to_owned(), data.len()));
            true
        }
        Ok(r) => panic!("{what} answered {}", r.status()),
        Err(_) => {
            ledger
                .uncertain_blobs
                .push((repo.to_owned(), digest.to_owned(), data));
            false
        }
    }
}

/// One client: random operations until `stop`, recording what was acknowledged.
async fn client_loop(
    base: String,
    repo: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    ops: Arc<AtomicU64>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut rng = Rng(seed | 1);
    let empty = b"{}".to_vec();
    let empty_d = sha256_digest(&empty);
    let mut my_blobs: Vec<(String, usize)> = Vec::new();
    let mut my_tags: Vec<(String, String)> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let op = rng.below(10);
        if my_blobs.is_empty() || op < 4 {
            // Monolithic push (sometimes of the empty config blob).
            let data = if my_blobs.is_empty() {
                empty.clone()
            } else {
                random_bytes(1 + rng.below(512 * 1024) as usize)
            };
            let d = sha256_digest(&data);
            let r = http
                .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
                .body(data.clone())
                .send()
                .await;
            let len = data.len();
            if !record_push(&ledger, "monolithic push", &repo, &d, data, r) {
                return;
            }
            if d != empty_d {
                my_blobs.push((d, len));
            }
        } else if op < 6 {
            // Chunked push in three PATCHes.
            let data = random_bytes(3 * 1024 + rng.below(3 * 256 * 1024) as usize);
            let d = sha256_digest(&data);
            let Ok(r) = http
                .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                .send()
                .await
            else {
                return;
            };
            assert_eq!(r.status(), 202, "POST upload");
            let loc = r.headers()["location"].to_str().unwrap().to_owned();
            let cut = [0, data.len() / 3, 2 * data.len() / 3, data.len()];
            let mut acked = 0u64;
            for w in cut.windows(2) {
                let r = http
                    .patch(format!("{base}{loc}"))
                    .header("content-range", format!("{}-{}", w[0], w[1] - 1))
                    .header("content-type", "application/octet-stream")
                    .body(data[w[0]..w[1]].to_vec())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => acked = w[1] as u64,
                    Ok(r) => panic!("PATCH answered {}", r.status()),
                    Err(_) => {
                        ledger.lock().unwrap().interrupted.push((
                            repo.clone(),
                            loc.clone(),
                            acked,
                            data.clone(),
                        ));
                        return;
                    }
                }
            }
            let r = http.put(format!("{base}{loc}?digest={d}")).send().await;
            let len = data.len();
            if !record_push(&ledger, "closing PUT", &repo, &d, data, r) {
                return;
            }
            my_blobs.push((d, len));
        } else if op < 9 {
            // Manifest under a fresh tag.
            let k = 1 + rng.below(3) as usize;
            let layers: Vec<_> = (0..k)
                .map(|_| my_blobs[rng.below(my_blobs.len() as u64) as usize].clone())
                .collect();
            let body = manifest_for(&empty_d, &layers);
            let d = sha256_digest(&body);
            let tag = format!("t{seed}-{n}");
            let r = http
                .put(format!("{base}/v2/{repo}/manifests/{tag}"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 201 => {
                    let mut l = ledger.lock().unwrap();
                    l.manifests.insert((repo.clone(), d.clone()), body);
                    l.tags.insert((repo.clone(), tag.clone()), d.clone());
                    my_tags.push((tag, d));
                }
                Ok(r) => panic!("manifest PUT answered {}", r.status()),
                Err(_) => return,
            }
        } else if let Some(i) = (!my_tags.is_empty()).then(|| rng.below(my_tags.len() as u64)) {
            // Delete a tag, or the manifest behind it.
            let (tag, d) = my_tags.swap_remove(i as usize);
            let by_digest = rng.below(2) == 0;
            let target = if by_digest { d.clone() } else { tag.clone() };
            {
                // In flight: its fate is unknown until acknowledged.
                let mut l = ledger.lock().unwrap();
                l.tags.remove(&(repo.clone(), tag.clone()));
                if by_digest {
                    l.manifests.remove(&(repo.clone(), d.clone()));
                    l.tags.retain(|(r, _), v| !(r == &repo && v == &d));
                }
            }
            let r = http
                .delete(format!("{base}/v2/{repo}/manifests/{target}"))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 202 => {
                    let mut l = ledger.lock().unwrap();
                    l.untagged.push((repo.clone(), tag));
                    if by_digest {
                        l.deleted.push((repo.clone(), d.clone()));
                        my_tags.retain(|(_, v)| v != &d);
                    }
                }
                // The manifest went with an earlier delete by digest of the same content.
                Ok(r) if r.status() == 404 => {}
                Ok(r) => panic!("DELETE answered {}", r.status()),
                Err(_) => return,
            }
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

async fn verify(base: &str, ledger: &mut Ledger) -> Result<usize, String> {
    let http = reqwest::Client::new();
    let mut checked = 0;
    for (repo, d, size) in &ledger.blobs {
        let r = http
            .get(format!("{base}/v2/{repo}/blobs/{d}"))
            .sent()
            .await?;
        status_is(&r, 200, &format!("acknowledged blob {repo}@{d} answers"))?;
        let b = r.bytes().await.map_err(|e| e.to_string())?;
        if b.len() != *size || sha256_digest(&b) != *d {
            return Err(format!("acknowledged blob {repo}@{d} is not whole"));
        }
        checked += 1;
    }
    for (repo, d, data) in &ledger.uncertain_blobs {
        let r = http
            .get(format!("{base}/v2/{repo}/blobs/{d}"))
            .sent()
            .await?;
        if r.status() == 200 {
            let b = r.bytes().await.map_err(|e| e.to_string())?;
            if b[..] != data[..] {
                return Err(format!(
                    "blob {repo}@{d} in flight at the kill is half-written"
                ));
            }
        }
        checked += 1;
    }
    for ((repo, d), body) in &ledger.manifests {
        let r = http
            .get(format!("{base}/v2/{repo}/manifests/{d}"))
            .sent()
            .await?;
        status_is(
            &r,
            200,
            &format!("acknowledged manifest {repo}@{d} answers"),
        )?;
        if r.bytes().await.map_err(|e| e.to_string())?[..] != body[..] {
            return Err(format!("manifest {repo}@{d} changed"));
        }
        checked += 1;
    }
    for ((repo, tag), d) in &ledger.tags {
        let r = http
            .head(format!("{base}/v2/{repo}/manifests/{tag}"))
            .sent()
            .await?;
        let got = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        if r.status() != 200 || got != Some(d.as_str()) {
            return Err(format!(
                "acknowledged tag {repo}:{tag} lost ({})",
                r.status()
            ));
        }
        checked += 1;
    }
    for (repo, tag) in &ledger.untagged {
        let r = http
            .head(format!("{base}/v2/{repo}/manifests/{tag}"))
            .sent()
            .await?;
        if r.status() != 404 {
            return Err(format!("deleted tag {repo}:{tag} came back"));
        }
        checked += 1;
    }
    for (repo, d) in &ledger.deleted {
        let r = http
            .head(format!("{base}/v2/{repo}/manifests/{d}"))
            .sent()
            .await?;
        if r.status() != 404 && !ledger.manifests.contains_key(&(repo.clone(), d.clone())) {
            return Err(format!("deleted manifest {repo}@{d} came back"));
        }
        checked += 1;
    }
    // Interrupted chunked uploads: resume from the offset the server reports.
    for (repo, loc, acked, data) in std::mem::take(&mut ledger.interrupted) {
        let r = http.get(format!("{base}{loc}")).sent().await?;
        status_is(&r, 204, &format!("interrupted upload {loc} answers"))?;
        let range = r.headers()["range"].to_str().unwrap_or("").to_owned();
        let end: u64 = range
            .split('-')
            .nth(1)
            .and_then(|e| e.parse().ok())
            .ok_or(format!("bad Range {range:?}"))?;
        let offset = if end == 0 && acked == 0 { 0 } else { end + 1 };
        if offset < acked || offset > data.len() as u64 {
            return Err(format!(
                "upload {loc} reports {offset} bytes after {acked} were acknowledged"
            ));
        }
        let d = sha256_digest(&data);
        let rest = data[offset as usize..].to_vec();
        let mut put = http.put(format!("{base}{loc}?digest={d}"));
        if !rest.is_empty() {
            put = put
                .header(
                    "content-range",
                    format!("{offset}-{}", data.len() as u64 - 1),
                )
                .body(rest);
        }
        let r = put.sent().await?;
        status_is(&r, 201, &format!("resuming {loc} at {offset} answers"))?;
        ledger.blobs.push((repo, d, data.len()));
        checked += 1;
    }
    Ok(checked)
}

/// SIGTERM while a slow upload streams: the upload completes and the process exits 0.
async fn graceful(mut server: RegistryChild) -> Result<(), String> {
    let data = random_bytes(256 * 1024);
    let d = sha256_digest(&data);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
    let slow = futures::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(60)).await;
        c
    });
    let url = format!("{}/v2/graceful/blobs/uploads/?digest={d}", server.base);
    let upload = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body(reqwest::Body::wrap_stream(slow))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    server.terminate()?;
    let code = upload
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("upload in flight at SIGTERM failed: {e}"))?;
    if code != 201 {
        return Err(format!("upload in flight at SIGTERM answered {code}"));
    }
    server.wait_stopped(Duration::from_secs(25)).await
}

use futures::StreamExt;

/// Kills the registry with SIGKILL under load, round after round, and checks that nothing
/// acknowledged was lost or half-written.
#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Rounds of load, SIGKILL, restart and checks.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// No new round starts after this many seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Clients pushing and deleting at once.
    #[arg(long, default_value_t = 6)]
    clients: usize,
}

conformance::program_main!(checks);

async fn checks(args: Args, work: PathBuf) -> Tally {
    let Args {
        common,
        rounds,
        seconds,
        clients,
    } = args;
    let bin = common.registry;
    let storage = work.join("storage");
    let log = work.join("registry.log");
    let started = Instant::now();
    let mut ledger = Ledger::default();
    let mut tally = Tally::default();
    let seed0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed0 | 1);
    let mut round = 0;
    while round < rounds && started.elapsed() < Duration::from_secs(seconds) {
        round += 1;
        let server = start(&bin, &storage, &log).await;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(std::mem::take(&mut ledger)));
        let ops = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                tokio::spawn(client_loop(
                    server.base.clone(),
                    format!("soak/r{}", c % 3),
                    rng.next_u64() ^ (round as u64) << 32 ^ c as u64,
                    stop.clone(),
                    shared.clone(),
                    ops.clone(),
                ))
            })
            .collect();
        let live = Duration::from_millis(800 + rng.below(1700));
        tokio::time::sleep(live).await;
        server.kill().await;
        stop.store(true, Ordering::Relaxed);
        let mut panicked = None;
        for t in tasks {
            if let Err(e) = t.await {
                panicked = Some(e.to_string());
            }
        }
        ledger = Arc::try_unwrap(shared)
            .ok()
            .expect("clients finished")
            .into_inner()
            .unwrap();
        let server = start(&bin, &storage, &log).await;
        let result = match panicked {
            Some(p) => Err(format!("a client saw a wrong answer: {p}")),
            None => verify(&server.base, &mut ledger).await,
        };
        let result = match result {
            Ok(n) => process::fsck(&bin, &storage).await.map(|_| n),
            Err(e) => Err(e),
        };
        let failed = result.is_err();
        tally.record(
            &format!("round {round}"),
            result
                .map(|n| {
                    format!(
                        "{} operations, SIGKILL after {} ms, {n} objects verified",
                        ops.load(Ordering::Relaxed),
                        live.as_millis()
                    )
                })
                .map_err(|e| format!("{e}\nregistry log: {}", log.display())),
        );
        if failed {
            return tally;
        }
        let last = round == rounds || started.elapsed() >= Duration::from_secs(seconds);
        if last {
            tally.record(
                "graceful shutdown",
                graceful(server)
                    .await
                    .map(|()| "upload in flight at SIGTERM completed, exit 0".to_owned()),
            );
        } else {
            server.kill().await;
        }
    }
    tally
}
