//! Several replicas on one bucket: three `registry serve` processes on the same S3 bucket (a
//! `moto_server` started here on 127.0.0.1, ports 20000-20999), no sticky sessions, no shared
//! state but the bucket. Checks:
//! - an upload started (POST) on replica 1 takes PATCH chunks alternately on replicas 2 and 3,
//!   crossing the 5 MiB part boundary; a stale chunk sent to the replica that did not serve the
//!   previous PATCH gets 416 with the upload's current `Range`, and so does a chunk that skips
//!   ahead; replica 1 completes it with PUT; every replica then serves the blob (bytes, digest);
//! - a manifest pushed on one replica is served by tag at once by the others (several rounds,
//!   every replica writing in turn);
//! - a tag moved on replica 1 is seen moved at once on replicas 2 and 3 (which read it before);
//! - a tag deleted on one replica is 404 on the others, and a manifest deleted by digest too;
//! - a referrer pushed on replica 2 is listed at once by replica 3 (which listed none before),
//!   and a referrer deleted on replica 3 disappears from replica 2;
//! - `registry gc --upload-max-age` purges an abandoned upload: its multipart upload (moto's
//!   `ListMultipartUploads`) and its objects are gone, and a younger upload survives and completes.
//!
//! ```text
//! s3-replicas [--registry PATH]   (--help for more)
//! ```
//! Prints `PASS name` / `FAIL name: reason` lines and `N passed, N failed`; exits 1 on failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conformance::answer::{self, body_text, expect_range, header, location_path, Check, Remote};
use conformance::answer::{status_is, Sent};
use conformance::process::{self, RegistryProcess};
use conformance::program::{Common, Tally};
use conformance::reqwest::{Client, Method, Response, StatusCode};
use conformance::s3;
use conformance::serde_json::Value;
use conformance::{descriptor, random_bytes, sha256_digest, ManifestBuilder, OCI_MANIFEST};
use conformance::{ensure, with_query};

const BUCKET: &str = "replicas";
const MIB: usize = 1024 * 1024;

struct Ctx {
    client: Client,
    replicas: Vec<RegistryProcess>,
    moto: SocketAddr,
    registry: PathBuf,
    options: std::collections::BTreeMap<String, String>,
}

impl Ctx {
    /// The registry API of `replica`.
    fn api(&self, replica: usize) -> Remote {
        Remote::new(&self.client, &self.replicas[replica].base)
    }

    /// `method path` on `replica`, no body.
    async fn send(&self, method: Method, replica: usize, path: &str) -> Result<Response, String> {
        self.api(replica).call(method, path).await
    }

    fn url(&self, replica: usize, path: &str) -> String {
        self.replicas[replica].url(path)
    }

    /// POST + PUT of a whole blob on one replica.
    async fn push_blob(&self, replica: usize, repo: &str, data: &[u8]) -> Result<String, String> {
        let pushed = self.api(replica).push_blob(repo, data).await;
        pushed.map_err(|e| format!("on replica {}: {e}", replica + 1))
    }

    /// Pushes a fresh small image's blobs (on `blob_replica`) and returns its manifest bytes.
    async fn new_manifest(&self, blob_replica: usize, repo: &str) -> Result<Vec<u8>, String> {
        self.api(blob_replica).new_manifest(repo, 2000).await
    }

    async fn put_manifest(
        &self,
        replica: usize,
        repo: &str,
        reference: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let resp = self
            .api(replica)
            .put_manifest(repo, reference, body)
            .await?;
        let status = resp.status();
        ensure!(
            status == StatusCode::CREATED,
            "PUT manifest {repo}:{reference} on replica {}: {status}: {}",
            replica + 1,
            body_text(resp).await
        );
        Ok(())
    }

    /// GET a manifest by reference on one replica: (status, Docker-Content-Digest, body).
    async fn get_manifest(
        &self,
        replica: usize,
        repo: &str,
        reference: &str,
    ) -> Result<(u16, Option<String>, Vec<u8>), String> {
        self.api(replica).get_manifest(repo, reference).await
    }

    /// Pushes a fresh small image on `replica` as `repo:reference`; returns its manifest.
    async fn push_new_manifest(
        &self,
        replica: usize,
        repo: &str,
        reference: &str,
    ) -> Result<Vec<u8>, String> {
        let manifest = self.new_manifest(replica, repo).await?;
        self.put_manifest(replica, repo, reference, &manifest)
            .await?;
        Ok(manifest)
    }

    /// DELETE of `repo:reference` on `replica`: 202.
    async fn delete_manifest(&self, replica: usize, repo: &str, reference: &str) -> Check {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send(Method::DELETE, replica, &path).await?;
        let status = resp.status();
        ensure!(
            status == StatusCode::ACCEPTED,
            "DELETE {repo}:{reference} on replica {}: {status}",
            replica + 1
        );
        Ok(String::new())
    }

    /// `replica` answers 404 for the deleted `repo:reference`.
    async fn expect_gone(&self, replica: usize, repo: &str, reference: &str) -> Check {
        let (status, _, _) = self.get_manifest(replica, repo, reference).await?;
        ensure!(
            status == 404,
            "GET deleted {repo}:{reference} on replica {}: {status}, want 404",
            replica + 1
        );
        Ok(String::new())
    }

    /// Asserts that `replica` serves `repo:reference` as exactly `manifest`.
    async fn expect_manifest(
        &self,
        replica: usize,
        repo: &str,
        reference: &str,
        manifest: &[u8],
    ) -> Result<(), String> {
        let (status, digest, body) = self.get_manifest(replica, repo, reference).await?;
        ensure!(
            status == 200,
            "GET {repo}:{reference} on replica {}: {status}",
            replica + 1
        );
        let want = sha256_digest(manifest);
        ensure!(
            digest.as_deref() == Some(want.as_str()),
            "GET {repo}:{reference} on replica {}: Docker-Content-Digest {digest:?}, want {want}",
            replica + 1
        );
        ensure!(
            body == manifest,
            "GET {repo}:{reference} on replica {}: other bytes",
            replica + 1
        );
        Ok(())
    }

    /// GET `path` on `replica`: 200 and its JSON body (`what` names it in errors).
    async fn get_json(&self, replica: usize, path: &str, what: &str) -> Result<Value, String> {
        let what = format!("{what} on replica {}", replica + 1);
        self.api(replica).get_json(path, &what).await
    }

    async fn tags(&self, replica: usize, repo: &str) -> Result<Vec<String>, String> {
        let v = self
            .get_json(replica, &format!("/v2/{repo}/tags/list"), "tags/list")
            .await?;
        Ok(v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn referrers(
        &self,
        replica: usize,
        repo: &str,
        subject: &str,
    ) -> Result<Vec<Value>, String> {
        let v = self
            .get_json(
                replica,
                &format!("/v2/{repo}/referrers/{subject}"),
                "referrers",
            )
            .await?;
        Ok(v["manifests"].as_array().cloned().unwrap_or_default())
    }

    /// PATCH one chunk with Content-Range at `offset`.
    async fn patch(
        &self,
        replica: usize,
        loc: &str,
        offset: usize,
        chunk: &[u8],
    ) -> Result<Response, String> {
        let sent = self.api(replica).patch(loc, offset, chunk).await;
        sent.map_err(|e| format!("on replica {}: {e}", replica + 1))
    }
}

/// Returns a note and the blob's digest.
async fn chunked_upload_across_replicas(ctx: &Ctx) -> Result<(String, String), String> {
    let repo = "replicas/chunked";
    // Chunks: 3 MiB on replica 2, 4 MiB + 5 on replica 3 (crosses the 5 MiB part size),
    // 6 MiB + 11 on replica 2, and the last 1 MiB + 3 in the PUT on replica 1.
    let sizes = [3 * MIB, 4 * MIB + 5, 6 * MIB + 11, MIB + 3];
    let data = random_bytes(sizes.iter().sum());
    let digest = sha256_digest(&data);
    let ends: Vec<usize> = sizes
        .iter()
        .scan(0, |acc, s| {
            *acc += s;
            Some(*acc)
        })
        .collect();
    let (a, b, c) = (ends[0], ends[1], ends[2]);

    let resp = ctx
        .client
        .post(ctx.url(0, &format!("/v2/{repo}/blobs/uploads/")))
        .header("content-length", "0")
        .sent()
        .await?;
    status_is(&resp, 202, "POST on replica 1:")?;
    let loc = location_path(&resp)?;

    let resp = ctx.patch(1, &loc, 0, &data[..a]).await?;
    expect_range("PATCH chunk 1 on replica 2", &resp, 202, a)?;
    let loc = location_path(&resp)?;

    // Replica 3 did not serve that PATCH: the same chunk again is stale.
    let resp = ctx.patch(2, &loc, 0, &data[..a]).await?;
    expect_range("stale chunk 1 again on replica 3", &resp, 416, a)?;
    let resp = ctx.send(Method::GET, 2, &loc).await?;
    expect_range("GET upload status on replica 3", &resp, 204, a)?;

    let resp = ctx.patch(2, &loc, a, &data[a..b]).await?;
    expect_range("PATCH chunk 2 on replica 3", &resp, 202, b)?;
    let loc = location_path(&resp)?;

    // Replica 2 served chunk 1 but not chunk 2: chunk 2 again is stale there.
    let resp = ctx.patch(1, &loc, a, &data[a..b]).await?;
    expect_range("stale chunk 2 again on replica 2", &resp, 416, b)?;
    // A chunk that skips ahead is out of order on any replica.
    let resp = ctx.patch(0, &loc, b + 10, &data[b + 10..c]).await?;
    expect_range("chunk skipping ahead on replica 1", &resp, 416, b)?;

    let resp = ctx.patch(1, &loc, b, &data[b..c]).await?;
    expect_range("PATCH chunk 3 on replica 2", &resp, 202, c)?;
    let loc = location_path(&resp)?;
    let resp = ctx.send(Method::GET, 0, &loc).await?;
    expect_range("GET upload status on replica 1", &resp, 204, c)?;

    let resp = ctx
        .client
        .put(ctx.url(0, &with_query(&loc, "digest", &digest)))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{}-{}", c, data.len() - 1))
        .body(data[c..].to_vec())
        .sent()
        .await?;
    let status = resp.status();
    ensure!(
        status == StatusCode::CREATED,
        "PUT with the last chunk on replica 1: {status}: {}",
        body_text(resp).await
    );
    ensure!(
        header(&resp, "docker-content-digest").as_deref() == Some(digest.as_str()),
        "PUT: Docker-Content-Digest {:?}, want {digest}",
        header(&resp, "docker-content-digest")
    );

    for r in 0..3 {
        let resp = ctx
            .send(Method::GET, r, &format!("/v2/{repo}/blobs/{digest}"))
            .await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "GET blob on replica {}: {}",
            r + 1,
            resp.status()
        );
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        ensure!(
            body.len() == data.len(),
            "GET blob on replica {}: {} bytes, want {}",
            r + 1,
            body.len(),
            data.len()
        );
        ensure!(
            sha256_digest(&body) == digest,
            "GET blob on replica {}: bytes hash to another digest",
            r + 1
        );
        // The finished session is gone everywhere.
        let resp = ctx.send(Method::GET, r, &loc).await?;
        ensure!(
            resp.status() == StatusCode::NOT_FOUND,
            "upload status after PUT on replica {}: {}, want 404",
            r + 1,
            resp.status()
        );
    }
    Ok((
        format!(
            "{} bytes in 4 chunks over 3 replicas, 3 stale/out-of-order chunks got 416",
            data.len()
        ),
        digest,
    ))
}

async fn manifest_visible_at_once(ctx: &Ctx) -> Check {
    let repo = "replicas/visible";
    let rounds = 6;
    for i in 0..rounds {
        let writer = i % 3;
        let tag = format!("v{i}");
        let manifest = ctx.push_new_manifest(writer, repo, &tag).await?;
        for r in (0..3).filter(|r| *r != writer) {
            ctx.expect_manifest(r, repo, &tag, &manifest).await?;
            let tags = ctx.tags(r, repo).await?;
            ensure!(
                tags.contains(&tag),
                "tags/list on replica {} lacks {tag}: {tags:?}",
                r + 1
            );
        }
    }
    Ok(format!(
        "{rounds} pushes, each read at once by tag on the two other replicas"
    ))
}

async fn tag_moved_is_seen_moved(ctx: &Ctx) -> Check {
    let repo = "replicas/moving";
    let first = ctx.push_new_manifest(0, repo, "latest").await?;
    let mut current = first;
    let moves = 4;
    for _ in 0..moves {
        for r in 1..3 {
            ctx.expect_manifest(r, repo, "latest", &current).await?;
        }
        let next = ctx.push_new_manifest(0, repo, "latest").await?;
        for r in 1..3 {
            ctx.expect_manifest(r, repo, "latest", &next)
                .await
                .map_err(|e| format!("after the move: {e}"))?;
        }
        current = next;
    }
    Ok(format!(
        "{moves} moves on replica 1, each seen at once on replicas 2 and 3"
    ))
}

async fn deletions_are_seen(ctx: &Ctx) -> Check {
    let repo = "replicas/deleting";
    let manifest = ctx.push_new_manifest(0, repo, "doomed").await?;
    ctx.put_manifest(0, repo, "keeper", &ctx.new_manifest(0, repo).await?)
        .await?;
    for r in 0..3 {
        ctx.expect_manifest(r, repo, "doomed", &manifest).await?;
    }
    ctx.delete_manifest(1, repo, "doomed").await?;
    for r in [0, 2] {
        ctx.expect_gone(r, repo, "doomed").await?;
        let tags = ctx.tags(r, repo).await?;
        ensure!(
            tags == ["keeper"],
            "tags/list on replica {} after the tag deletion: {tags:?}",
            r + 1
        );
    }
    // The manifest itself (by digest) is still there; delete it on replica 3.
    let digest = sha256_digest(&manifest);
    ctx.expect_manifest(0, repo, &digest, &manifest).await?;
    ctx.delete_manifest(2, repo, &digest).await?;
    for r in [0, 1] {
        ctx.expect_gone(r, repo, &digest).await?;
    }
    Ok(String::new())
}

async fn referrers_across_replicas(ctx: &Ctx) -> Check {
    let repo = "replicas/referrers";
    let subject = ctx.push_new_manifest(0, repo, "app").await?;
    let subject_digest = sha256_digest(&subject);
    let before = ctx.referrers(2, repo, &subject_digest).await?;
    ensure!(
        before.is_empty(),
        "referrers on replica 3 before any push: {before:?}"
    );

    let sig_type = "application/vnd.example.signature.v1";
    let blob = random_bytes(300);
    ctx.push_blob(1, repo, &blob).await?;
    ctx.push_blob(1, repo, b"{}").await?;
    let referrer = ManifestBuilder::artifact(sig_type)
        .layer(descriptor("application/octet-stream", &blob))
        .subject(descriptor(OCI_MANIFEST, &subject))
        .build();
    let referrer_digest = sha256_digest(&referrer);
    ctx.put_manifest(1, repo, &referrer_digest, &referrer)
        .await?;

    let listed = ctx.referrers(2, repo, &subject_digest).await?;
    ensure!(
        listed.len() == 1
            && listed[0]["digest"] == referrer_digest.as_str()
            && listed[0]["artifactType"] == sig_type,
        "referrers on replica 3 after the push on replica 2: {listed:?}"
    );

    let resp = ctx
        .send(
            Method::DELETE,
            2,
            &format!("/v2/{repo}/manifests/{referrer_digest}"),
        )
        .await?;
    status_is(&resp, 202, "DELETE referrer on replica 3:")?;
    let after = ctx.referrers(1, repo, &subject_digest).await?;
    ensure!(
        after.is_empty(),
        "referrers on replica 2 after the deletion on replica 3: {after:?}"
    );
    Ok(String::new())
}

/// Runs `registry gc` on the bucket with `--upload-max-age`.
async fn run_gc(ctx: &Ctx, max_age: u64, log: &Path) -> Result<String, String> {
    let (option_args, envs) = process::storage_option_args(&ctx.options);
    let mut cmd = tokio::process::Command::new(&ctx.registry);
    cmd.arg("gc")
        .arg("--storage")
        .arg(format!("s3://{BUCKET}/reg"))
        .arg("--upload-max-age")
        .arg(max_age.to_string())
        .args(option_args)
        .envs(envs)
        .env_remove("AWS_CA_BUNDLE")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| "registry gc did not finish within 120 s".to_owned())?
        .map_err(|e| format!("run registry gc: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::write(log, &text);
    ensure!(
        out.status.success(),
        "registry gc exited {}: {text:.600}",
        out.status
    );
    Ok(text)
}

async fn abandoned_upload_is_purged(ctx: &Ctx, work: &Path) -> Check {
    let repo = "replicas/abandoned";
    // Two uploads with a whole part each (a multipart upload is open): the old one is left
    // alone for 4 s, the young one gets a chunk just before gc runs with a 2 s limit.
    let start = |r: usize| async move {
        let resp = ctx
            .client
            .post(ctx.url(r, &format!("/v2/{repo}/blobs/uploads/")))
            .header("content-length", "0")
            .sent()
            .await?;
        status_is(&resp, 202, "POST:")?;
        location_path(&resp)
    };
    let old_loc = start(0).await?;
    let old = random_bytes(6 * MIB);
    let resp = ctx.patch(1, &old_loc, 0, &old).await?;
    expect_range("PATCH of the old upload", &resp, 202, old.len())?;
    let young_loc = start(2).await?;
    let id = |loc: &str| {
        loc.rsplit('/')
            .next()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let (old_id, young_id) = (id(&old_loc), id(&young_loc));

    let prefix = "reg/uploads/";
    let uploads = s3::multipart_uploads(ctx.moto, BUCKET, prefix);
    ensure!(
        uploads.iter().any(|k| k.contains(&old_id)),
        "before gc: no multipart upload of the old upload {old_id} in ListMultipartUploads: {uploads:?}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let young = random_bytes(5 * MIB + 17);
    let resp = ctx.patch(0, &young_loc, 0, &young).await?;
    expect_range("PATCH of the young upload", &resp, 202, young.len())?;
    let young_loc = location_path(&resp)?;

    let t = Instant::now();
    let report = run_gc(ctx, 2, &work.join("gc.log")).await?;
    let gc_time = t.elapsed();

    let uploads = s3::multipart_uploads(ctx.moto, BUCKET, prefix);
    ensure!(
        !uploads.iter().any(|k| k.contains(&old_id)),
        "after gc: the old upload's multipart upload is still listed: {uploads:?}; gc said: {report:.500}"
    );
    ensure!(
        uploads.iter().any(|k| k.contains(&young_id)),
        "after gc: the young upload's multipart upload is gone too: {uploads:?}"
    );
    let objects = s3::object_keys(ctx.moto, BUCKET, &format!("{prefix}{old_id}"));
    ensure!(
        objects.is_empty(),
        "after gc: objects of the old upload remain: {objects:?}"
    );
    for r in 0..3 {
        let resp = ctx.send(Method::GET, r, &old_loc).await?;
        ensure!(
            resp.status() == StatusCode::NOT_FOUND,
            "old upload status on replica {} after gc: {}, want 404",
            r + 1,
            resp.status()
        );
    }
    // The young upload goes on.
    let digest = sha256_digest(&young);
    let resp = ctx
        .client
        .put(ctx.url(1, &with_query(&young_loc, "digest", &digest)))
        .sent()
        .await?;
    status_is(&resp, 201, "PUT of the young upload after gc:")?;
    let remaining = s3::multipart_uploads(ctx.moto, BUCKET, prefix);
    ensure!(
        !remaining.iter().any(|k| k.contains(&young_id)),
        "the completed young upload's multipart upload is still listed: {remaining:?}"
    );
    Ok(format!("gc took {:.1} s", gc_time.as_secs_f64()))
}

/// The blob of the first check is still served after gc (its grace period protects it).
async fn blob_survives_gc(ctx: &Ctx, digests: &[(String, String)]) -> Check {
    for (repo, digest) in digests {
        let resp = ctx
            .send(Method::HEAD, 2, &format!("/v2/{repo}/blobs/{digest}"))
            .await?;
        status_is(&resp, 200, &format!("HEAD {repo}@{digest} after gc:"))?;
    }
    Ok(String::new())
}

conformance::program_main!(
    checks,
    "Three registry processes on one S3 bucket (moto) serve one registry."
);

async fn checks(Common { registry }: Common, work: PathBuf) -> Tally {
    let mut tally = Tally::default();
    let Some(moto) = tally.setup("setup", conformance::s3::start_moto(&work.join("moto.log")))
    else {
        return tally;
    };
    s3::create_bucket(moto.addr, BUCKET);
    let options = moto.options();
    let mut replicas = Vec::new();
    for i in 1..=3 {
        match RegistryProcess::start(
            &registry,
            &format!("s3://{BUCKET}/reg"),
            &options,
            &["--gc-interval", "0", "--log-level", "info"],
            &work.join(format!("registry-{i}.log")),
        ) {
            Ok(r) => replicas.push(r),
            Err(e) => {
                tally.record("setup", Err(format!("replica {i}: {e}")));
                return tally;
            }
        }
    }
    eprintln!(
        "# moto on {}, replicas on {}; logs in {}",
        moto.addr,
        replicas
            .iter()
            .map(|r| r.base.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        work.display()
    );
    let ctx = Ctx {
        client: answer::client(Duration::from_secs(120)),
        replicas,
        moto: moto.addr,
        registry,
        options,
    };

    let t = Instant::now();
    let chunked = chunked_upload_across_replicas(&ctx).await;
    let chunked_digest = chunked.as_ref().ok().map(|(_, d)| d.clone());
    tally.record(
        "chunked-upload-across-replicas",
        chunked.map(|(note, _)| note),
    );
    tally.record(
        "manifest-visible-at-once",
        manifest_visible_at_once(&ctx).await,
    );
    tally.record("tag-moved-seen-moved", tag_moved_is_seen_moved(&ctx).await);
    tally.record("deletions-seen", deletions_are_seen(&ctx).await);
    tally.record(
        "referrers-across-replicas",
        referrers_across_replicas(&ctx).await,
    );
    tally.record(
        "abandoned-upload-purged",
        abandoned_upload_is_purged(&ctx, &work).await,
    );
    let survivors: Vec<(String, String)> = chunked_digest
        .into_iter()
        .map(|d| ("replicas/chunked".to_owned(), d))
        .collect();
    tally.record(
        "replicas-still-serve-after-gc",
        async {
            for r in 0..3 {
                let (status, _, _) = ctx.get_manifest(r, "replicas/moving", "latest").await?;
                ensure!(
                    status == 200,
                    "GET replicas/moving:latest on replica {} after gc: {status}",
                    r + 1
                );
            }
            blob_survives_gc(&ctx, &survivors).await
        }
        .await,
    );
    eprintln!("# checks took {:.1} s", t.elapsed().as_secs_f64());
    for (i, r) in ctx.replicas.iter().enumerate() {
        if !r.process.alive() {
            tally.record(
                &format!("replica-{}-alive", i + 1),
                Err("the process exited".into()),
            );
        }
    }
    drop(ctx);
    drop(moto);
    tally
}
