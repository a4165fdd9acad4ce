//! Small requests under load: GET/HEAD of manifests and blobs at many connections, tag lists,
//! referrers; and many small pushes (blobs, tags) a fixed number at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bytes::Bytes;
use tokio::task::JoinSet;

use super::{Bench, Scenario, Server, MB, MIB};
use crate::http::{Conn, Endpoint};
use crate::oci::{self, sha256};
use crate::report::{percentile, Cell};

/// Request latencies in microseconds and the wall time they took.
pub(super) struct LoadStats {
    pub(super) lat_us: Vec<u64>,
    pub(super) elapsed: Duration,
}

impl LoadStats {
    pub(super) fn rate(&self) -> f64 {
        self.lat_us.len() as f64 / self.elapsed.as_secs_f64()
    }
    pub(super) fn p(&self, p: f64) -> f64 {
        percentile(&self.lat_us, p) / 1000.0
    }
}

/// One kind of request in a load loop; each checks the answer.
#[derive(Clone)]
enum Op {
    GetManifest {
        repo: String,
        tag: String,
        want: Bytes,
    },
    HeadBlob {
        repo: String,
        digest: String,
        size: u64,
    },
    HeadManifest {
        repo: String,
        tag: String,
        digest: String,
        size: usize,
    },
    TagList {
        repo: String,
        want: usize,
    },
    Referrers {
        repo: String,
        subject: String,
        want: usize,
    },
    /// Request `i` pushes blob `i` of the list, monolithically.
    PushBlobs {
        repo: &'static str,
        blobs: Arc<Vec<(Bytes, String)>>,
    },
    /// Request `i` puts the manifest under tag `t<i>` (five digits).
    PutTags {
        repo: &'static str,
        manifest: Bytes,
    },
}

impl Op {
    /// Request number `i` of the run.
    async fn run(&self, conn: &mut Conn, i: usize) -> Result<()> {
        match self {
            Op::GetManifest { repo, tag, want } => oci::get_manifest(conn, repo, tag, want).await,
            Op::HeadBlob { repo, digest, size } => oci::head_blob(conn, repo, digest, *size).await,
            Op::HeadManifest {
                repo,
                tag,
                digest,
                size,
            } => oci::head_manifest(conn, repo, tag, digest, *size).await,
            Op::TagList { repo, want } => {
                let (n, _) = oci::list_tags(conn, repo).await?;
                ensure!(n == *want, "tag list of {repo}: {n} tags, expected {want}");
                Ok(())
            }
            Op::Referrers {
                repo,
                subject,
                want,
            } => {
                let n = oci::referrers(conn, repo, subject).await?;
                ensure!(
                    n == Some(*want),
                    "referrers of {subject}: {n:?}, expected {want}"
                );
                Ok(())
            }
            Op::PushBlobs { repo, blobs } => {
                let (data, digest) = &blobs[i];
                oci::push_monolithic(conn, repo, data.clone(), digest).await
            }
            Op::PutTags { repo, manifest } => {
                oci::put_manifest(conn, repo, &format!("t{i:05}"), manifest.clone()).await
            }
        }
    }
}

/// Runs `op` on `conns` connections until `secs` have passed or `max` requests were sent.
async fn load(addr: &Endpoint, conns: usize, secs: f64, max: u64, op: Op) -> Result<LoadStats> {
    drive(connect_n(addr, conns).await?, secs, max, op).await
}

/// Longest a fixed number of pushes may take.
const PUSHES_SECS: f64 = 600.0;

/// Runs `op` for requests 0..`n` over `conns` (each connection taking the next number) and
/// fails unless all ran.
async fn indexed(conns: Vec<Conn>, n: usize, op: Op) -> Result<LoadStats> {
    let st = drive(conns, PUSHES_SECS, n as u64, op).await?;
    ensure!(st.lat_us.len() == n, "only {} of {n} ran", st.lat_us.len());
    Ok(st)
}

/// Runs `op` on the open connections `conns` until `secs` have passed or `max` requests were
/// sent; request number `i` (0, 1, ...) is `op.run(conn, i)`.
async fn drive(conns: Vec<Conn>, secs: f64, max: u64, op: Op) -> Result<LoadStats> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let sent = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for mut conn in conns {
        let (op, sent) = (op.clone(), sent.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = sent.fetch_add(1, Ordering::Relaxed);
                if i >= max {
                    break;
                }
                let t = Instant::now();
                op.run(&mut conn, i as usize).await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(lat)
        });
    }
    let mut lat_us = Vec::new();
    while let Some(r) = set.join_next().await {
        lat_us.extend(r??);
    }
    let elapsed = t0.elapsed();
    lat_us.sort_unstable();
    Ok(LoadStats { lat_us, elapsed })
}

/// `n` connections to `ep`.
async fn connect_n(ep: &Endpoint, n: usize) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::connect(ep).await?);
    }
    Ok(conns)
}

impl Bench {
    /// Runs `op` under load on `conns` connections for `secs` and records the figures.
    async fn measure_load(
        &mut self,
        title: &str,
        s: &Server,
        conns: usize,
        secs: f64,
        op: Op,
    ) -> Result<()> {
        let probe = self.probe(s)?;
        let st = load(&s.addr, conns, secs, self.scale.load_max, op).await?;
        let u = probe.finish()?;
        self.rec_load(title, s, &st, u);
        Ok(())
    }

    /// `GetManifest`, `HeadBlob` or `HeadManifest` at `load_conns` connections.
    pub(super) async fn small_requests(&mut self, sc: Scenario, s: &Server) -> Result<()> {
        let k = self.scale.clone();
        let repo = "bench/load".to_owned();
        let f = &self.fixture;
        if sc == Scenario::GetManifest {
            let mut conn = Conn::connect(&s.addr).await?;
            f.push(&mut conn, &repo, "v1").await?;
        }
        let (title, op) = match sc {
            Scenario::GetManifest => (
                "GET manifest by tag",
                Op::GetManifest {
                    repo,
                    tag: "v1".into(),
                    want: f.manifest.clone(),
                },
            ),
            Scenario::HeadBlob => (
                "HEAD blob",
                Op::HeadBlob {
                    repo,
                    digest: f.layer_digest.clone(),
                    size: f.layer.len() as u64,
                },
            ),
            _ => (
                "HEAD manifest by tag",
                Op::HeadManifest {
                    repo,
                    tag: "v1".into(),
                    digest: f.manifest_digest.clone(),
                    size: f.manifest.len(),
                },
            ),
        };
        let title = format!("{title}, {} connections", k.load_conns);
        self.measure_load(&title, s, k.load_conns, k.load_secs, op)
            .await
    }

    /// `TagList`: the tag list of the repository `tag_puts` filled, under load.
    pub(super) async fn tag_list(&mut self, s: &Server) -> Result<()> {
        let k = self.scale.clone();
        let repo = "bench/tags".to_owned();
        let mut conn = Conn::connect(&s.addr).await?;
        let (n, pages) = oci::list_tags(&mut conn, &repo).await?;
        ensure!(n == k.tags_n, "tag list: {n} tags, expected {}", k.tags_n);
        let title = format!(
            "GET tags/list ({} tags, {pages} page(s)), {} connections",
            k.tags_n, k.list_conns
        );
        let op = Op::TagList {
            repo,
            want: k.tags_n,
        };
        self.measure_load(&title, s, k.list_conns, k.list_secs, op)
            .await
    }

    pub(super) async fn small_pushes(&mut self, s: &Server) -> Result<()> {
        let k = self.scale.clone();
        let title = format!(
            "push {} distinct {} MiB blobs, {} at a time",
            k.small_n,
            k.small_size / MIB,
            k.small_conc
        );
        let blobs: Vec<(Bytes, String)> = (0..k.small_n)
            .map(|i| self.blob(3, i as u32, k.small_size))
            .collect();
        let digests: Vec<String> = blobs.iter().step_by(7).map(|(_, d)| d.clone()).collect();
        let conns = connect_n(&s.addr, k.small_conc).await?;
        let probe = self.probe(s)?;
        let op = Op::PushBlobs {
            repo: "bench/small",
            blobs: Arc::new(blobs),
        };
        let st = indexed(conns, k.small_n, op).await?;
        let u = probe.finish()?;
        let mut conn = Conn::connect(&s.addr).await?;
        for d in &digests {
            oci::head_blob(&mut conn, "bench/small", d, k.small_size as u64).await?;
        }
        let bytes = (k.small_n * k.small_size) as u64;
        let secs = st.elapsed.as_secs_f64();
        self.rec(&title, "pushes", "blobs/s", false, s, st.rate());
        self.rec(
            &title,
            "throughput",
            "MB/s",
            false,
            s,
            bytes as f64 / MB / secs,
        );
        self.rec(&title, "push latency p50", "ms", true, s, st.p(50.0));
        self.rec(&title, "push latency p99", "ms", true, s, st.p(99.0));
        self.rec_cpu_per_gb(&title, s, &u, bytes);
        Ok(())
    }

    pub(super) async fn tag_puts(&mut self, s: &Server) -> Result<()> {
        let k = self.scale.clone();
        let repo = "bench/tags";
        let mut conn = Conn::connect(&s.addr).await?;
        // Blobs first (untimed), then the tag PUTs are the measured part.
        let f = &self.fixture;
        oci::push_monolithic(&mut conn, repo, f.config.clone(), &f.config_digest).await?;
        oci::push_monolithic(&mut conn, repo, f.layer.clone(), &f.layer_digest).await?;
        let title = format!(
            "PUT manifest under {} tags, {} at a time",
            k.tags_n, k.small_conc
        );
        let manifest = f.manifest.clone();
        let conns = connect_n(&s.addr, k.small_conc).await?;
        let probe = self.probe(s)?;
        let op = Op::PutTags {
            repo,
            manifest: manifest.clone(),
        };
        let st = indexed(conns, k.tags_n, op).await?;
        let u = probe.finish()?;
        let last = format!("t{:05}", k.tags_n - 1);
        oci::get_manifest(&mut conn, repo, &last, &manifest).await?;
        self.rec(&title, "rate", "req/s", false, s, st.rate());
        self.rec(&title, "latency p50", "ms", true, s, st.p(50.0));
        self.rec(&title, "latency p99", "ms", true, s, st.p(99.0));
        let cpu_ms = u.cpu_secs * 1000.0 / st.lat_us.len() as f64;
        self.rec(&title, "server CPU", "CPU ms/req", true, s, cpu_ms);
        Ok(())
    }

    pub(super) async fn referrers(&mut self, s: &Server) -> Result<()> {
        let sc = self.scale.clone();
        let repo = "bench/tags";
        let title = format!(
            "GET referrers ({} referrers), {} connections",
            sc.referrers_n, sc.list_conns
        );
        let f = &self.fixture;
        let subject = (f.manifest_digest.clone(), f.manifest.len());
        let mut conn = Conn::connect(&s.addr).await?;
        let probe_api = oci::referrers(&mut conn, repo, &subject.0).await?;
        if probe_api.is_none() {
            // Check that this is a missing API and not a lost manifest.
            oci::get_manifest(&mut conn, repo, "t00000", &f.manifest).await?;
            for metric in ["rate", "latency p50", "latency p99"] {
                let unit = if metric == "rate" { "req/s" } else { "ms" };
                self.results.set(
                    &title,
                    metric,
                    unit,
                    metric != "rate",
                    &s.name,
                    Cell::Na("no referrers API: 404".into()),
                );
            }
            return Ok(());
        }
        let empty = Bytes::from_static(b"{}");
        let empty_digest = sha256(&empty);
        oci::push_monolithic(&mut conn, repo, empty.clone(), &empty_digest).await?;
        for i in 0..sc.referrers_n {
            let sig = Bytes::from(format!("signature {i}"));
            let sig_digest = sha256(&sig);
            oci::push_monolithic(&mut conn, repo, sig.clone(), &sig_digest).await?;
            let m = oci::referrer_manifest(
                (&empty_digest, empty.len()),
                (&subject.0, subject.1),
                i,
                (&sig_digest, sig.len()),
            );
            let d = sha256(&m);
            oci::put_manifest(&mut conn, repo, &d, m).await?;
        }
        let op = Op::Referrers {
            repo: repo.into(),
            subject: subject.0.clone(),
            want: sc.referrers_n,
        };
        self.measure_load(&title, s, sc.list_conns, sc.list_secs, op)
            .await
    }
}
