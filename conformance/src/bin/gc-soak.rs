//! Online garbage collection under load, against the real `registry` process.
//!
//! The server runs with `--gc-interval 1 --gc-grace 2`: it collects every second, and anything
//! unreferenced for two seconds is fair game. Meanwhile several clients, each in its own
//! repository, push images (config, layers, manifest, tag), pull them back, overwrite tags, and
//! delete manifests, so garbage keeps appearing. Clients reuse layers of images deleted earlier
//! (checking with HEAD or a cross-repository mount first, as real clients do), which is exactly
//! the race the collector must get right: a manifest push that names a blob the collector
//! removed gets `MANIFEST_BLOB_UNKNOWN`; the client then uploads the blob again and retries.
//!
//! Checks:
//! - during the run, every pull of an acknowledged, not deleted image is whole;
//! - at the end, every acknowledged image not deleted is whole (manifest bytes, config and every
//!   layer read back with matching digests), by digest and by its tag if the tag still names it;
//! - the collector removed blobs while serving (`registry_gc_removed_blobs_total` > 0);
//! - the server stops on SIGTERM with exit 0;
//! - `registry gc --dry-run --gc-grace 0` lists exactly what `registry gc --gc-grace 0` then
//!   removes, and afterwards no blob that only deleted images referenced is left in storage;
//! - after that final collection, a restarted server still serves every live image whole, and
//!   `registry fsck` is clean.
//!
//! ```text
//! gc-soak [--registry PATH] [--seconds 20] [--clients 4]   (--help for more)
//! ```
//! Prints PASS/FAIL lines and `N passed, N failed`; exits 1 on any failure.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::answer::Remote;
use conformance::answer::{status_is, Sent};
use conformance::process::{self, RegistryChild};
use conformance::program::{Common, Tally};
use conformance::{
    descriptor, random_bytes, sha256_digest, ManifestBuilder, Rng, OCI_CONFIG, OCI_LAYER,
    OCI_MANIFEST,
};
use serde_json::Value;
use tokio::process::Command;

/// An image a client pushed and the server acknowledged with 201.
#[derive(Debug, Clone)]
struct Image {
    repo: String,
    tag: String,
    digest: String,
    manifest: Vec<u8>,
    /// Config first, then the layers.
    blobs: Vec<String>,
}

#[derive(Default)]
struct Ledger {
    /// Acknowledged and not deleted, by manifest digest.
    live: HashMap<String, Image>,
    /// Deleted (the manifest DELETE got 202).
    deleted: Vec<Image>,
    /// (repo, tag) -> digest the tag was last set to.
    tags: HashMap<(String, String), String>,
    /// Problems seen during the run.
    errors: Vec<String>,
}

#[derive(Default)]
struct Counters {
    pushes: AtomicU64,
    pulls: AtomicU64,
    deletes: AtomicU64,
    retries: AtomicU64,
    reused: AtomicU64,
    mounts: AtomicU64,
}

/// Starts the registry on `storage`, collecting every second (`gc`) or never; its log goes to
/// `log`.
async fn start(bin: &Path, storage: &Path, log: &Path, gc: bool) -> Result<RegistryChild, String> {
    let extra = [
        "--fsync",
        "false",
        "--gc-interval",
        if gc { "1" } else { "0" },
        "--gc-grace",
        "2",
        "--shutdown-timeout",
        "10",
    ];
    RegistryChild::start(bin, storage, &extra, log).await
}

/// Uploads `data` with POST then PUT (or, every other time, three PATCHes and a PUT).
async fn upload(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    data: &[u8],
    chunked: bool,
) -> Result<(), String> {
    let api = Remote::new(http, base);
    if !chunked || data.len() < 3 {
        return api.push_blob(repo, data).await.map(|_| ());
    }
    let loc = api.start_upload(repo).await?;
    let cut = [0, data.len() / 3, 2 * data.len() / 3, data.len()];
    for w in cut.windows(2) {
        let r = api.patch(&loc, w[0], &data[w[0]..w[1]]).await?;
        status_is(&r, 202, "PATCH answered")?;
    }
    let r = api.close(&loc, &sha256_digest(data)).await?;
    status_is(&r, 201, "closing PUT answered")?;
    Ok(())
}

/// Reads an image back: manifest bytes by `reference`, then the config and every layer with
/// matching digests.
async fn pull(
    http: &reqwest::Client,
    base: &str,
    img: &Image,
    reference: &str,
) -> Result<(), String> {
    let r = http
        .get(format!("{base}/v2/{}/manifests/{reference}", img.repo))
        .header("accept", OCI_MANIFEST)
        .sent()
        .await?;
    status_is(&r, 200, &format!("GET {}:{reference} answered", img.repo))?;
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if body.as_ref() != img.manifest.as_slice() {
        return Err(format!(
            "manifest {}:{reference} differs from what was pushed",
            img.repo
        ));
    }
    for d in &img.blobs {
        let r = http
            .get(format!("{base}/v2/{}/blobs/{d}", img.repo))
            .sent()
            .await?;
        status_is(
            &r,
            200,
            &format!("blob {d} of {}@{} answered", img.repo, img.digest),
        )?;
        let b = r.bytes().await.map_err(|e| e.to_string())?;
        if sha256_digest(&b) != *d {
            return Err(format!(
                "blob {d} of {}@{} has the wrong content",
                img.repo, img.digest
            ));
        }
    }
    Ok(())
}

/// What a client may reuse: blobs (with their bytes) it pushed before, including blobs of
/// images it deleted since.
type Pool = Vec<(String, Vec<u8>)>;

/// Pushes one image into `repo` under `tag`, reusing some blobs from `pool`. Handles the
/// documented race outcome: MANIFEST_BLOB_UNKNOWN makes it upload what is missing and retry.
#[allow(clippy::too_many_arguments)]
async fn push_image(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
    other_repo: &str,
    tag: &str,
    rng: &mut Rng,
    pool: &mut Pool,
    counters: &Counters,
) -> Result<Image, String> {
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"n\":\"{}\"}}",
        hex::encode(random_bytes(8))
    )
    .into_bytes();
    let mut blobs: Vec<Vec<u8>> = vec![config];
    for _ in 0..1 + rng.below(3) {
        if !pool.is_empty() && rng.below(2) == 0 {
            let (_, data) = &pool[rng.below(pool.len() as u64) as usize];
            blobs.push(data.clone());
        } else {
            blobs.push(random_bytes(512 + rng.below(16 * 1024) as usize));
        }
    }
    // Make sure each blob is there: HEAD (or a mount from the other repository) first, as
    // real clients do, and upload only what is missing.
    for (i, data) in blobs.iter().enumerate() {
        let d = sha256_digest(data);
        let there = if i > 0 && rng.below(4) == 0 {
            let r = http
                .post(format!(
                    "{base}/v2/{repo}/blobs/uploads/?mount={d}&from={other_repo}"
                ))
                .header("content-length", "0")
                .sent()
                .await?;
            let ok = r.status() == 201;
            if ok {
                counters.mounts.fetch_add(1, Ordering::Relaxed);
            } else {
                status_is(&r, 202, "mount answered")?;
            }
            ok
        } else {
            let r = http
                .head(format!("{base}/v2/{repo}/blobs/{d}"))
                .sent()
                .await?;
            r.status() == 200
        };
        if there {
            counters.reused.fetch_add(1, Ordering::Relaxed);
        } else {
            upload(http, base, repo, data, rng.below(2) == 0).await?;
        }
        if i > 0 && !pool.iter().any(|(pd, _)| *pd == d) {
            pool.push((d, data.clone()));
        }
    }
    let mut b = ManifestBuilder::new(descriptor(OCI_CONFIG, &blobs[0]));
    for l in &blobs[1..] {
        b = b.layer(descriptor(OCI_LAYER, l));
    }
    let manifest = b.build();
    let digest = sha256_digest(&manifest);
    for attempt in 0..6 {
        let r = http
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .sent()
            .await?;
        let status = r.status().as_u16();
        if status == 201 {
            return Ok(Image {
                repo: repo.to_owned(),
                tag: tag.to_owned(),
                digest,
                manifest,
                blobs: blobs.iter().map(|b| sha256_digest(b)).collect(),
            });
        }
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let code = body["errors"][0]["code"].as_str().unwrap_or("");
        if status != 400 || code != "MANIFEST_BLOB_UNKNOWN" || attempt == 5 {
            return Err(format!("manifest PUT answered {status}: {body}"));
        }
        // The collector removed something this manifest names: upload it again and retry.
        counters.retries.fetch_add(1, Ordering::Relaxed);
        for data in &blobs {
            let d = sha256_digest(data);
            let r = http
                .head(format!("{base}/v2/{repo}/blobs/{d}"))
                .sent()
                .await?;
            if r.status() != 200 {
                upload(http, base, repo, data, false).await?;
            }
        }
    }
    unreachable!("the loop returns")
}

async fn client_loop(
    base: String,
    id: usize,
    clients: usize,
    deadline: Instant,
    ledger: Arc<Mutex<Ledger>>,
    counters: Arc<Counters>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let repo = format!("soak/c{id}");
    let other = format!("soak/c{}", (id + 1) % clients);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x1234_5678_9ABC_DEF1));
    let mut pool: Pool = Vec::new();
    let mut mine: Vec<Image> = Vec::new();
    let mut n = 0u64;
    let fail = |e: String| ledger.lock().expect("ledger").errors.push(e);
    while Instant::now() < deadline {
        n += 1;
        let op = rng.below(10);
        if mine.len() < 2 || op < 4 {
            // Push under a fresh tag, or overwrite one of ours (the old image stays, untagged).
            let tag = if !mine.is_empty() && rng.below(4) == 0 {
                mine[rng.below(mine.len() as u64) as usize].tag.clone()
            } else {
                format!("t{n}")
            };
            match push_image(
                &http, &base, &repo, &other, &tag, &mut rng, &mut pool, &counters,
            )
            .await
            {
                Ok(img) => {
                    counters.pushes.fetch_add(1, Ordering::Relaxed);
                    let mut l = ledger.lock().expect("ledger");
                    l.tags
                        .insert((repo.clone(), tag.clone()), img.digest.clone());
                    l.live.insert(img.digest.clone(), img.clone());
                    mine.push(img);
                }
                Err(e) => fail(format!("{repo}: push failed: {e}")),
            }
        } else if op < 8 {
            // Pull one of ours, by digest or by its tag when the tag still names it.
            let img = mine[rng.below(mine.len() as u64) as usize].clone();
            let by_tag = {
                let l = ledger.lock().expect("ledger");
                l.tags.get(&(repo.clone(), img.tag.clone())) == Some(&img.digest)
            } && rng.below(2) == 0;
            let reference = if by_tag {
                img.tag.clone()
            } else {
                img.digest.clone()
            };
            match pull(&http, &base, &img, &reference).await {
                Ok(()) => {
                    counters.pulls.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => fail(format!("pull of an acknowledged image failed: {e}")),
            }
        } else {
            // Delete one of ours by digest: it (and its tag, if it still names it) becomes
            // garbage.
            let i = rng.below(mine.len() as u64) as usize;
            let img = mine.swap_remove(i);
            let r = http
                .delete(format!("{base}/v2/{repo}/manifests/{}", img.digest))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 202 => {
                    counters.deletes.fetch_add(1, Ordering::Relaxed);
                    let mut l = ledger.lock().expect("ledger");
                    l.live.remove(&img.digest);
                    l.tags.retain(|(r, _), d| !(r == &repo && *d == img.digest));
                    mine.retain(|m| m.digest != img.digest);
                    l.deleted.push(img);
                }
                Ok(r) => fail(format!(
                    "DELETE {repo}@{} answered {}",
                    img.digest,
                    r.status()
                )),
                Err(e) => fail(format!("DELETE {repo}@{}: {e}", img.digest)),
            }
        }
    }
}

/// Pulls every live image by digest, and by every tag that names it.
async fn verify_all(
    http: &reqwest::Client,
    base: &str,
    live: &[Image],
    tags: &HashMap<(String, String), String>,
) -> Result<String, String> {
    let mut n = 0;
    for img in live {
        pull(http, base, img, &img.digest).await?;
        n += 1;
    }
    for ((repo, tag), d) in tags {
        let img = live
            .iter()
            .find(|i| &i.digest == d && &i.repo == repo)
            .ok_or_else(|| format!("tag {repo}:{tag} names an image not in the ledger"))?;
        pull(http, base, img, tag).await?;
        n += 1;
    }
    Ok(format!("{} images, {n} pulls", live.len()))
}

async fn metric(base: &str, name: &str) -> Result<f64, String> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
        .ok_or_else(|| format!("no {name} in /metrics"))
}

/// Runs `registry gc` and returns the objects it lists (the verb removed), sorted.
async fn gc_listing(bin: &Path, storage: &Path, dry_run: bool) -> Result<Vec<String>, String> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "gc",
        "--storage",
        storage.to_str().expect("utf-8"),
        "--gc-grace",
        "0",
        "--log-level",
        "warn",
    ]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd
        .env_remove("REGISTRY_CONFIG")
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "registry gc{} exited with {}: {}",
            if dry_run { " --dry-run" } else { "" },
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let verb = if dry_run { "would remove " } else { "removed " };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut items: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(verb))
        // The summary line ("N tags, N manifests, ...") is not an object.
        .filter(|l| !l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    items.sort();
    Ok(items)
}

fn blob_path(storage: &Path, digest: &str) -> std::path::PathBuf {
    let (alg, hex) = digest.split_once(':').expect("digest");
    storage.join("blobs").join(alg).join(&hex[..2]).join(hex)
}

/// SIGTERM: the server must exit 0 within 20 s.
async fn exits_0(server: RegistryChild) -> Result<String, String> {
    server
        .stop(Duration::from_secs(20))
        .await
        .map(|_| String::new())
}

/// Garbage collection every second while clients push, pull, mount and delete; then the
/// offline collection and fsck.
#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Seconds of load (1 to 3600).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Clients at once (2 to 64).
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

conformance::program_main!(checks);

async fn checks(args: Args, work: PathBuf) -> Tally {
    let bin = args.common.registry;
    let seconds = args.seconds.clamp(1, 3600);
    let clients = args.clients.clamp(2, 64);
    let storage = work.join("storage");
    let log = work.join("registry.log");
    let mut report = Tally::default();

    let Some(server) = report.setup("start", start(&bin, &storage, &log, true).await) else {
        return report;
    };
    let base = server.base.clone();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(client_loop(
                base.clone(),
                i,
                clients,
                deadline,
                ledger.clone(),
                counters.clone(),
            ))
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            ledger
                .lock()
                .expect("ledger")
                .errors
                .push(format!("client task failed: {e}"));
        }
    }
    let c = &counters;
    println!(
        "load: {} s, {clients} clients: {} pushes ({} manifest retries after MANIFEST_BLOB_UNKNOWN, {} blobs reused, {} mounted), {} pulls, {} deletes",
        seconds,
        c.pushes.load(Ordering::Relaxed),
        c.retries.load(Ordering::Relaxed),
        c.reused.load(Ordering::Relaxed),
        c.mounts.load(Ordering::Relaxed),
        c.pulls.load(Ordering::Relaxed),
        c.deletes.load(Ordering::Relaxed),
    );
    let (live, deleted, tags, errors) = {
        let l = ledger.lock().expect("ledger");
        (
            l.live.values().cloned().collect::<Vec<_>>(),
            l.deleted.clone(),
            l.tags.clone(),
            l.errors.clone(),
        )
    };
    report.record(
        "clients pushed, pulled and deleted while gc ran",
        if c.pushes.load(Ordering::Relaxed) >= 10 && c.deletes.load(Ordering::Relaxed) > 0 {
            Ok(String::new())
        } else {
            Err("too little traffic to prove anything".into())
        },
    );
    report.record(
        "no request of the load failed (pulls of acknowledged images whole)",
        if errors.is_empty() {
            Ok(format!("{} pulls", c.pulls.load(Ordering::Relaxed)))
        } else {
            Err(format!(
                "{} errors, first: {}",
                errors.len(),
                errors[..errors.len().min(5)].join(" | ")
            ))
        },
    );

    // Let the collector run a few more times over the final state, then check everything.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let http = reqwest::Client::new();
    report.record(
        "every acknowledged image not deleted is whole (by digest and tag)",
        verify_all(&http, &base, &live, &tags).await,
    );
    let removed = metric(&base, "registry_gc_removed_blobs_total").await;
    let runs = metric(&base, "registry_gc_runs_total").await;
    report.record(
        "garbage collection removed blobs while serving",
        match (removed, runs) {
            (Ok(r), Ok(n)) if r > 0.0 && n > 0.0 => Ok(format!("{n} runs, {r} blobs removed")),
            (Ok(r), Ok(n)) => Err(format!("{n} runs, {r} blobs removed")),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
    );
    // Fresh garbage the background collector cannot have taken yet (younger than its grace):
    // a few deleted images and a few blobs no manifest names. The offline run must take them.
    let (mut live, mut deleted, mut tags) = (live, deleted, tags);
    let mut orphans = Vec::new();
    let mut fresh_garbage = Ok(String::new());
    let deleted_before = deleted.len();
    for img in live.iter().take(5).cloned().collect::<Vec<_>>() {
        match http
            .delete(format!("{base}/v2/{}/manifests/{}", img.repo, img.digest))
            .send()
            .await
        {
            Ok(r) if r.status() == 202 => {
                live.retain(|i| i.digest != img.digest);
                tags.retain(|_, d| *d != img.digest);
                deleted.push(img);
            }
            Ok(r) => fresh_garbage = Err(format!("DELETE answered {}", r.status())),
            Err(e) => fresh_garbage = Err(e.to_string()),
        }
    }
    for _ in 0..3 {
        let data = random_bytes(4096);
        match upload(&http, &base, "soak/orphans", &data, false).await {
            Ok(()) => orphans.push(sha256_digest(&data)),
            Err(e) => fresh_garbage = Err(e),
        }
    }
    report.record(
        "fresh garbage made just before the stop",
        fresh_garbage.map(|_| {
            format!(
                "{} images deleted, {} orphan blobs",
                deleted.len() - deleted_before,
                orphans.len()
            )
        }),
    );
    report.record("SIGTERM: the server exits 0", exits_0(server).await);

    // Offline: the dry run lists what the real run removes, and nothing of deleted images stays.
    let dry = gc_listing(&bin, &storage, true).await;
    let real = gc_listing(&bin, &storage, false).await;
    report.record(
        "registry gc --dry-run lists exactly what registry gc removes",
        match (&dry, &real) {
            (Ok(d), Ok(r)) if d == r && !r.is_empty() => Ok(format!("{} objects", r.len())),
            (Ok(d), Ok(r)) if d == r => Err("both listings are empty: nothing to compare".into()),
            (Ok(d), Ok(r)) => {
                let d: BTreeSet<_> = d.iter().collect();
                let r: BTreeSet<_> = r.iter().collect();
                Err(format!(
                    "only in the dry run: {:?}; only in the real run: {:?}",
                    d.difference(&r).take(5).collect::<Vec<_>>(),
                    r.difference(&d).take(5).collect::<Vec<_>>()
                ))
            }
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        },
    );
    let referenced: HashSet<&String> = live
        .iter()
        .flat_map(|i| i.blobs.iter().chain([&i.digest]))
        .collect();
    let garbage: BTreeSet<&String> = deleted
        .iter()
        .flat_map(|i| i.blobs.iter().chain([&i.digest]))
        .chain(orphans.iter())
        .filter(|d| !referenced.contains(d))
        .collect();
    let left: Vec<&&String> = garbage
        .iter()
        .filter(|d| blob_path(&storage, d).exists())
        .collect();
    report.record(
        "no blob that only deleted images referenced is left after gc --gc-grace 0",
        if garbage.is_empty() {
            Err("no garbage was made".into())
        } else if left.is_empty() {
            Ok(format!("{} garbage blobs checked", garbage.len()))
        } else {
            Err(format!(
                "{} left, e.g. {:?}",
                left.len(),
                &left[..left.len().min(3)]
            ))
        },
    );
    let kept: Vec<&&String> = referenced
        .iter()
        .filter(|d| !blob_path(&storage, d).exists())
        .collect();
    report.record(
        "every blob of a live image is still in storage",
        if kept.is_empty() {
            Ok(format!("{} blobs", referenced.len()))
        } else {
            Err(format!(
                "{} missing, e.g. {:?}",
                kept.len(),
                &kept[..kept.len().min(3)]
            ))
        },
    );
    match start(&bin, &storage, &log, false).await {
        Ok(server) => {
            report.record(
                "after the final gc, a restarted server serves every live image whole",
                verify_all(&http, &server.base, &live, &tags).await,
            );
            report.record(
                "SIGTERM after the final checks: exit 0",
                exits_0(server).await,
            );
        }
        Err(e) => report.record("restart after the final gc", Err(e)),
    }
    report.record(
        "registry fsck is clean",
        process::fsck(&bin, &storage).await.map(|()| String::new()),
    );
    if report.failed > 0 {
        if let Ok(text) = std::fs::read_to_string(&log) {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("--- last lines of the registry log ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    report
}
