//! The scenarios, run against each server in turn (the order alternates per scenario), with the
//! server's CPU time and peak memory read from /proc around each timed part.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use tokio::task::JoinSet;

use crate::http::{Conn, Endpoint};
use crate::oci::{self, sha256};
use crate::procfs::{self, Probe, Usage};
use crate::report::{fmt_num, percentile, Cell, Results};

const MIB: usize = 1024 * 1024;
const MB: f64 = 1e6;
const GB: f64 = 1e9;

/// A server under test.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) name: String,
    /// Where clients send requests (several addresses: replicas taken in turn).
    pub(crate) addr: Endpoint,
    /// Credentials for every request, if the server has access control.
    pub(crate) login: Option<crate::auth::Login>,
    /// The server's processes (one per replica).
    pub(crate) pids: Vec<u32>,
    /// Only the push scenarios run against it (the fsync-off variant).
    pub(crate) push_only: bool,
    /// Only the blob push scenarios run against it (the push floor, which has no manifests).
    pub(crate) blob_pushes_only: bool,
}

/// Sizes, counts and durations.
#[derive(Debug, Clone)]
pub(crate) struct Scale {
    pub(crate) big: usize,
    pub(crate) mono_n: usize,
    pub(crate) chunked_n: usize,
    pub(crate) chunk: usize,
    pub(crate) warm_rounds: usize,
    pub(crate) load_conns: usize,
    pub(crate) load_secs: f64,
    pub(crate) load_max: u64,
    pub(crate) small_n: usize,
    pub(crate) small_size: usize,
    pub(crate) small_conc: usize,
    pub(crate) tags_n: usize,
    pub(crate) list_conns: usize,
    pub(crate) list_secs: f64,
    pub(crate) referrers_n: usize,
    pub(crate) mixed_secs: f64,
    pub(crate) mixed_pushers: usize,
    pub(crate) mixed_pullers: usize,
    pub(crate) mixed_pool: usize,
    pub(crate) mixed_push_size: usize,
    pub(crate) mixed_pull_size: usize,
}

impl Scale {
    pub(crate) fn full() -> Self {
        Scale {
            big: 256 * MIB,
            mono_n: 3,
            chunked_n: 2,
            chunk: 8 * MIB,
            warm_rounds: 2,
            load_conns: 64,
            load_secs: 10.0,
            load_max: 2_000_000,
            small_n: 100,
            small_size: MIB,
            small_conc: 16,
            tags_n: 1000,
            list_conns: 16,
            list_secs: 5.0,
            referrers_n: 20,
            mixed_secs: 15.0,
            mixed_pushers: 4,
            mixed_pullers: 16,
            mixed_pool: 400,
            mixed_push_size: MIB,
            mixed_pull_size: 16 * MIB,
        }
    }

    pub(crate) fn quick() -> Self {
        Scale {
            big: 64 * MIB,
            mono_n: 2,
            chunked_n: 1,
            warm_rounds: 1,
            load_secs: 2.0,
            list_secs: 1.0,
            mixed_secs: 3.0,
            mixed_pool: 100,
            ..Scale::full()
        }
    }
}

/// Which measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    PushMono,
    PushChunked,
    PullFirst,
    PullWarm,
    GetManifest,
    HeadBlob,
    HeadManifest,
    SmallPushes,
    TagPuts,
    TagList,
    Referrers,
    Mixed,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 12] = [
        Scenario::PushMono,
        Scenario::PushChunked,
        Scenario::PullFirst,
        Scenario::PullWarm,
        Scenario::GetManifest,
        Scenario::HeadBlob,
        Scenario::HeadManifest,
        Scenario::SmallPushes,
        Scenario::TagPuts,
        Scenario::TagList,
        Scenario::Referrers,
        Scenario::Mixed,
    ];

    fn is_blob_push(self) -> bool {
        matches!(
            self,
            Scenario::PushMono | Scenario::PushChunked | Scenario::SmallPushes
        )
    }

    fn is_push(self) -> bool {
        matches!(
            self,
            Scenario::PushMono | Scenario::PushChunked | Scenario::SmallPushes | Scenario::TagPuts
        )
    }
}

/// The fixed small objects of the request-rate scenarios, the same on every server.
struct Fixture {
    config: Bytes,
    config_digest: String,
    layer: Bytes,
    layer_digest: String,
    manifest: Bytes,
    manifest_digest: String,
}

impl Fixture {
    fn new(seed: u64) -> Self {
        let config = Bytes::from(format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"regbench\":{seed}}}"
        ));
        let layer = Bytes::from(oci::random_bytes(4096, seed));
        let config_digest = sha256(&config);
        let layer_digest = sha256(&layer);
        let manifest = oci::image_manifest(
            (&config_digest, config.len()),
            &[(layer_digest.clone(), layer.len())],
        );
        let manifest_digest = sha256(&manifest);
        Fixture {
            config,
            config_digest,
            layer,
            layer_digest,
            manifest,
            manifest_digest,
        }
    }

    async fn push(&self, conn: &mut Conn, repo: &str, tag: &str) -> Result<()> {
        oci::push_monolithic(conn, repo, self.config.clone(), &self.config_digest).await?;
        oci::push_monolithic(conn, repo, self.layer.clone(), &self.layer_digest).await?;
        oci::put_manifest(conn, repo, tag, self.manifest.clone()).await
    }
}

/// The whole run.
pub(crate) struct Bench {
    pub(crate) scale: Scale,
    pub(crate) clk_tck: f64,
    pub(crate) servers: Vec<Server>,
    pub(crate) results: Results,
    /// Times each scenario runs; each figure is the median over the rounds.
    pub(crate) rounds: usize,
    base: Vec<u8>,
    digests: HashMap<(u32, u32, usize), String>,
    fixture: Fixture,
}

/// Request latencies in microseconds and the wall time they took.
struct LoadStats {
    lat_us: Vec<u64>,
    elapsed: Duration,
}

impl LoadStats {
    fn rate(&self) -> f64 {
        self.lat_us.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, p: f64) -> f64 {
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
}

impl Op {
    async fn run(&self, conn: &mut Conn) -> Result<()> {
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
        }
    }
}

/// Runs `op` on `conns` connections until `secs` have passed or `max` requests were sent.
async fn load(addr: &Endpoint, conns: usize, secs: f64, max: u64, op: Op) -> Result<LoadStats> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let sent = Arc::new(AtomicU64::new(0));
    let mut conns_open = Vec::with_capacity(conns);
    for _ in 0..conns {
        conns_open.push(Conn::connect(addr).await?);
    }
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for mut conn in conns_open {
        let op = op.clone();
        let sent = sent.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                op.run(&mut conn).await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    let elapsed = t0.elapsed();
    all.sort_unstable();
    Ok(LoadStats {
        lat_us: all,
        elapsed,
    })
}

/// `sync`, bounded in time; a failure only costs fairness, so it is reported and ignored.
async fn settle_disk() {
    let run = tokio::process::Command::new("sync").status();
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(st)) if st.success() => {}
        other => eprintln!("regbench: sync before the scenario did not finish cleanly: {other:?}"),
    }
}

impl Bench {
    pub(crate) fn new(scale: Scale, clk_tck: f64, servers: Vec<Server>) -> Self {
        let base = oci::random_bytes(scale.big.max(scale.mixed_pull_size), 0x5eed);
        Bench {
            scale,
            clk_tck,
            servers,
            results: Results::default(),
            rounds: 1,
            base,
            digests: HashMap::new(),
            fixture: Fixture::new(1),
        }
    }

    /// Blob `index` of `set` with `size` bytes, and its digest (computed once).
    fn blob(&mut self, set: u32, index: u32, size: usize) -> (Bytes, String) {
        let data = oci::blob_from(&self.base, size, set, index);
        let digest = self
            .digests
            .entry((set, index, size))
            .or_insert_with(|| sha256(&data))
            .clone();
        (data, digest)
    }

    fn probe(&self, s: &Server) -> Result<Probe> {
        Probe::start(&s.pids, self.clk_tck)
    }

    fn rec(&mut self, scenario: &str, metric: &str, unit: &str, lower: bool, s: &Server, v: f64) {
        self.results.num(scenario, metric, unit, lower, &s.name, v);
    }

    /// Records MB/s (from the client-side transfer time), CPU per GB and peak RSS.
    fn rec_transfer(&mut self, title: &str, s: &Server, bytes: u64, busy: Duration, u: Usage) {
        self.rec(
            title,
            "throughput",
            "MB/s",
            false,
            s,
            bytes as f64 / MB / busy.as_secs_f64(),
        );
        self.rec_cpu_per_gb(title, s, &u, bytes);
    }

    /// Records the server's CPU seconds per GB moved (`bytes`) and its peak RSS.
    fn rec_cpu_per_gb(&mut self, title: &str, s: &Server, u: &Usage, bytes: u64) {
        self.rec(
            title,
            "server CPU",
            "CPU s/GB",
            true,
            s,
            u.cpu_secs / (bytes as f64 / GB),
        );
        self.rec_peak(title, s, u);
    }

    /// MB/s of `n` GETs of blob `content` (whose digest is `digest`) from [`crate::ceiling`],
    /// through the same client call and check as the servers' pulls, and the sender's CPU
    /// seconds per GB.
    async fn loopback_ceiling(&self, content: Bytes, digest: &str, n: usize) -> Result<(f64, f64)> {
        let sender = crate::ceiling::start(content.clone()).await?;
        let ep = Endpoint::plain(sender.addr);
        let mut conn = Conn::connect(&ep).await?;
        let mut busy = Duration::ZERO;
        let mut bytes = 0u64;
        let cpu0 = sender.cpu_secs(self.clk_tck)?;
        for _ in 0..n {
            let t = Instant::now();
            let r = oci::get_blob_checked(&mut conn, "bench/big", digest, &content).await?;
            busy += t.elapsed();
            bytes += r.len;
        }
        let cpu = sender.cpu_secs(self.clk_tck)? - cpu0;
        Ok((
            bytes as f64 / MB / busy.as_secs_f64(),
            cpu / (bytes as f64 / GB),
        ))
    }

    /// Peak RSS (the largest replica's) and, for several replicas, each one's.
    fn rec_peak(&mut self, title: &str, s: &Server, u: &Usage) {
        self.rec(title, "server peak RSS", "MiB", true, s, u.peak_mib);
        if u.peaks_mib.len() > 1 {
            let each: Vec<String> = u.peaks_mib.iter().map(|m| fmt_num(*m)).collect();
            self.results.set(
                title,
                "server peak RSS of each replica",
                "MiB",
                true,
                &s.name,
                Cell::Text(each.join(" / ")),
            );
        }
    }

    fn rec_load(&mut self, title: &str, s: &Server, st: &LoadStats, u: Usage) {
        self.rec(title, "rate", "req/s", false, s, st.rate());
        self.rec(title, "latency p50", "ms", true, s, st.p(50.0));
        self.rec(title, "latency p99", "ms", true, s, st.p(99.0));
        self.rec(
            title,
            "server CPU",
            "CPU ms/1k req",
            true,
            s,
            u.cpu_secs * 1000.0 / (st.lat_us.len() as f64 / 1000.0),
        );
        self.rec_peak(title, s, &u);
    }

    /// Every scenario against every server, alternating which server goes first.
    pub(crate) async fn run(&mut self, only: &[Scenario]) -> Result<()> {
        for s in self.servers.clone() {
            let rss = procfs::max_mib(&s.pids, "VmRSS")?;
            self.rec(
                "server",
                "idle RSS after start (VmRSS)",
                "MiB",
                true,
                &s,
                rss,
            );
        }
        let mut overall: HashMap<String, f64> = HashMap::new();
        for (i, sc) in Scenario::ALL.iter().enumerate() {
            if !only.is_empty() && !only.contains(sc) {
                continue;
            }
            let mut rounds = Vec::with_capacity(self.rounds);
            for round in 0..self.rounds {
                let earlier = std::mem::take(&mut self.results);
                let outcome = self.run_round(*sc, i + round, &mut overall).await;
                rounds.push(std::mem::replace(&mut self.results, earlier));
                outcome?;
            }
            self.results.merge(Results::median_of(rounds));
        }
        for s in self.servers.clone() {
            if let Some(p) = overall.get(&s.name) {
                self.rec(
                    "server",
                    "peak RSS over all scenarios (VmHWM)",
                    "MiB",
                    true,
                    &s,
                    *p,
                );
            }
        }
        Ok(())
    }

    /// One round of scenario `sc` against every server, in the order for position `pos`.
    async fn run_round(
        &mut self,
        sc: Scenario,
        pos: usize,
        overall: &mut HashMap<String, f64>,
    ) -> Result<()> {
        // The servers compared swap places from one scenario (or round) to the next. The push
        // floor goes first, in the machine's best state (so it is a lower bound), and the
        // fsync-off variant last, so the two extra columns never come between the servers
        // compared: on this VM a push costs more the more was written before it in the run.
        let mut compared: Vec<Server> = self
            .servers
            .iter()
            .filter(|s| !s.push_only && !s.blob_pushes_only)
            .cloned()
            .collect();
        if pos % 2 == 1 {
            compared.reverse();
        }
        let first = self.servers.iter().filter(|s| s.blob_pushes_only).cloned();
        let last = self.servers.iter().filter(|s| s.push_only).cloned();
        let order: Vec<Server> = first.chain(compared).chain(last).collect();
        for mut s in order {
            if (s.push_only && !sc.is_push()) || (s.blob_pushes_only && !sc.is_blob_push()) {
                continue;
            }
            if let Some(login) = &s.login {
                // Outside the timed part, as a client logs in once before it pulls.
                let header = login
                    .header(&s.addr)
                    .await
                    .with_context(|| format!("logging in to {} before {sc:?}", s.name))?;
                s.addr.auth = Some(header.into());
            }
            // Write back dirty pages left by the previous scenario (possibly another
            // server's), so that no server pays for the one before it.
            settle_disk().await;
            let t = Instant::now();
            let c0 = crate::http::CONNECTS.load(Ordering::Relaxed);
            eprintln!("regbench: {sc:?} on {} ...", s.name);
            self.scenario(sc, &s)
                .await
                .with_context(|| format!("scenario {sc:?} against {}", s.name))?;
            let peak = procfs::max_mib(&s.pids, "VmHWM")?;
            let e = overall.entry(s.name.clone()).or_insert(0.0);
            *e = e.max(peak);
            eprintln!(
                "regbench:   done in {:.1} s, {} connections opened",
                t.elapsed().as_secs_f64(),
                crate::http::CONNECTS.load(Ordering::Relaxed) - c0
            );
        }
        Ok(())
    }

    async fn scenario(&mut self, sc: Scenario, s: &Server) -> Result<()> {
        let sc_ = self.scale.clone();
        let big_mib = sc_.big / MIB;
        match sc {
            Scenario::PushMono => {
                let title = format!(
                    "push {big_mib} MiB blob, monolithic (POST + PUT) x{}",
                    sc_.mono_n
                );
                let mut conn = Conn::connect(&s.addr).await?;
                let mut busy = Duration::ZERO;
                let mut bytes = 0u64;
                let probe = self.probe(s)?;
                for i in 0..sc_.mono_n {
                    let (data, digest) = self.blob(1, i as u32, sc_.big);
                    let t = Instant::now();
                    oci::push_monolithic(&mut conn, "bench/big", data, &digest).await?;
                    busy += t.elapsed();
                    bytes += sc_.big as u64;
                    oci::head_blob(&mut conn, "bench/big", &digest, sc_.big as u64).await?;
                }
                let u = probe.finish()?;
                self.rec_transfer(&title, s, bytes, busy, u);
            }
            Scenario::PushChunked => {
                let title = format!(
                    "push {big_mib} MiB blob, chunked ({} MiB PATCH + Content-Range) x{}",
                    sc_.chunk / MIB,
                    sc_.chunked_n
                );
                let mut conn = Conn::connect(&s.addr).await?;
                let mut busy = Duration::ZERO;
                let mut bytes = 0u64;
                let probe = self.probe(s)?;
                for i in 0..sc_.chunked_n {
                    let (data, digest) = self.blob(2, i as u32, sc_.big);
                    let t = Instant::now();
                    oci::push_chunked(&mut conn, "bench/chunked", data, &digest, sc_.chunk).await?;
                    busy += t.elapsed();
                    bytes += sc_.big as u64;
                    oci::head_blob(&mut conn, "bench/chunked", &digest, sc_.big as u64).await?;
                }
                let u = probe.finish()?;
                self.rec_transfer(&title, s, bytes, busy, u);
            }
            Scenario::PullFirst | Scenario::PullWarm => {
                let (title, rounds) = if sc == Scenario::PullFirst {
                    (
                        format!("pull {big_mib} MiB blob, first read x{}", sc_.mono_n),
                        1,
                    )
                } else {
                    (
                        format!(
                            "pull {big_mib} MiB blob, warm x{}",
                            sc_.mono_n * sc_.warm_rounds
                        ),
                        sc_.warm_rounds,
                    )
                };
                let mut conn = Conn::connect(&s.addr).await?;
                let mut busy = Duration::ZERO;
                let mut bytes = 0u64;
                let probe = self.probe(s)?;
                for _ in 0..rounds {
                    for i in 0..sc_.mono_n {
                        let (data, digest) = self.blob(1, i as u32, sc_.big);
                        let t = Instant::now();
                        // Compared with the pushed bytes as they arrive (exact, and the client
                        // holds no 256 MiB body whose fresh pages would slow the first pulls).
                        let r =
                            oci::get_blob_checked(&mut conn, "bench/big", &digest, &data).await?;
                        busy += t.elapsed();
                        bytes += r.len;
                    }
                }
                let u = probe.finish()?;
                self.rec_transfer(&title, s, bytes, busy, u);
                if sc == Scenario::PullWarm && s.addr.tls.is_none() {
                    let n = rounds * sc_.mono_n;
                    let (content, digest) = self.blob(1, 0, sc_.big);
                    let (ceiling, ceiling_cpu) = self.loopback_ceiling(content, &digest, n).await?;
                    let got = bytes as f64 / MB / busy.as_secs_f64();
                    self.rec(
                        &title,
                        "loopback ceiling right after (same client, minimal sendfile sender)",
                        "MB/s",
                        false,
                        s,
                        ceiling,
                    );
                    self.rec(
                        &title,
                        "loopback ceiling: its sender's CPU",
                        "CPU s/GB",
                        true,
                        s,
                        ceiling_cpu,
                    );
                    self.rec(
                        &title,
                        "share of the loopback ceiling",
                        "%",
                        false,
                        s,
                        100.0 * got / ceiling,
                    );
                }
            }
            Scenario::GetManifest | Scenario::HeadBlob | Scenario::HeadManifest => {
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
                let title = format!("{title}, {} connections", sc_.load_conns);
                let probe = self.probe(s)?;
                let st = load(&s.addr, sc_.load_conns, sc_.load_secs, sc_.load_max, op).await?;
                let u = probe.finish()?;
                self.rec_load(&title, s, &st, u);
            }
            Scenario::SmallPushes => self.small_pushes(s).await?,
            Scenario::TagPuts => self.tag_puts(s).await?,
            Scenario::TagList => {
                let repo = "bench/tags".to_owned();
                let mut conn = Conn::connect(&s.addr).await?;
                let (n, pages) = oci::list_tags(&mut conn, &repo).await?;
                ensure!(
                    n == sc_.tags_n,
                    "tag list: {n} tags, expected {}",
                    sc_.tags_n
                );
                let title = format!(
                    "GET tags/list ({} tags, {pages} page(s)), {} connections",
                    sc_.tags_n, sc_.list_conns
                );
                let op = Op::TagList {
                    repo,
                    want: sc_.tags_n,
                };
                let probe = self.probe(s)?;
                let st = load(&s.addr, sc_.list_conns, sc_.list_secs, sc_.load_max, op).await?;
                let u = probe.finish()?;
                self.rec_load(&title, s, &st, u);
            }
            Scenario::Referrers => self.referrers(s).await?,
            Scenario::Mixed => self.mixed(s).await?,
        }
        Ok(())
    }

    async fn small_pushes(&mut self, s: &Server) -> Result<()> {
        let sc = self.scale.clone();
        let title = format!(
            "push {} distinct {} MiB blobs, {} at a time",
            sc.small_n,
            sc.small_size / MIB,
            sc.small_conc
        );
        let blobs: Arc<Vec<(Bytes, String)>> = Arc::new(
            (0..sc.small_n)
                .map(|i| self.blob(3, i as u32, sc.small_size))
                .collect(),
        );
        let next = Arc::new(AtomicU64::new(0));
        let mut conns = Vec::new();
        for _ in 0..sc.small_conc {
            conns.push(Conn::connect(&s.addr).await?);
        }
        let probe = self.probe(s)?;
        let t0 = Instant::now();
        let mut set = JoinSet::new();
        for mut conn in conns {
            let (blobs, next) = (blobs.clone(), next.clone());
            set.spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((data, digest)) = blobs.get(i) else {
                        break;
                    };
                    let t = Instant::now();
                    oci::push_monolithic(&mut conn, "bench/small", data.clone(), digest).await?;
                    lat.push(t.elapsed().as_micros() as u64);
                }
                anyhow::Ok(lat)
            });
        }
        let mut lat = Vec::new();
        while let Some(r) = set.join_next().await {
            lat.extend(r??);
        }
        let elapsed = t0.elapsed();
        let u = probe.finish()?;
        lat.sort_unstable();
        ensure!(lat.len() == sc.small_n, "only {} pushes ran", lat.len());
        let mut conn = Conn::connect(&s.addr).await?;
        for (_, d) in blobs.iter().step_by(7) {
            oci::head_blob(&mut conn, "bench/small", d, sc.small_size as u64).await?;
        }
        let bytes = (sc.small_n * sc.small_size) as u64;
        self.rec(
            &title,
            "pushes",
            "blobs/s",
            false,
            s,
            lat.len() as f64 / elapsed.as_secs_f64(),
        );
        self.rec(
            &title,
            "throughput",
            "MB/s",
            false,
            s,
            bytes as f64 / MB / elapsed.as_secs_f64(),
        );
        self.rec(
            &title,
            "push latency p50",
            "ms",
            true,
            s,
            percentile(&lat, 50.0) / 1000.0,
        );
        self.rec(
            &title,
            "push latency p99",
            "ms",
            true,
            s,
            percentile(&lat, 99.0) / 1000.0,
        );
        self.rec_cpu_per_gb(&title, s, &u, bytes);
        Ok(())
    }

    async fn tag_puts(&mut self, s: &Server) -> Result<()> {
        let sc = self.scale.clone();
        let repo = "bench/tags";
        let mut conn = Conn::connect(&s.addr).await?;
        // Blobs first (untimed), then the tag PUTs are the measured part.
        let f = &self.fixture;
        oci::push_monolithic(&mut conn, repo, f.config.clone(), &f.config_digest).await?;
        oci::push_monolithic(&mut conn, repo, f.layer.clone(), &f.layer_digest).await?;
        let title = format!(
            "PUT manifest under {} tags, {} at a time",
            sc.tags_n, sc.small_conc
        );
        let manifest = f.manifest.clone();
        let next = Arc::new(AtomicU64::new(0));
        let mut conns = Vec::new();
        for _ in 0..sc.small_conc {
            conns.push(Conn::connect(&s.addr).await?);
        }
        let probe = self.probe(s)?;
        let t0 = Instant::now();
        let mut set = JoinSet::new();
        for mut c in conns {
            let (next, manifest, n) = (next.clone(), manifest.clone(), sc.tags_n);
            set.spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    oci::put_manifest(&mut c, repo, &format!("t{i:05}"), manifest.clone()).await?;
                    lat.push(t.elapsed().as_micros() as u64);
                }
                anyhow::Ok(lat)
            });
        }
        let mut lat = Vec::new();
        while let Some(r) = set.join_next().await {
            lat.extend(r??);
        }
        let elapsed = t0.elapsed();
        let u = probe.finish()?;
        lat.sort_unstable();
        ensure!(lat.len() == sc.tags_n, "only {} tag PUTs ran", lat.len());
        oci::get_manifest(
            &mut conn,
            repo,
            &format!("t{:05}", sc.tags_n - 1),
            &manifest,
        )
        .await?;
        self.rec(
            &title,
            "rate",
            "req/s",
            false,
            s,
            lat.len() as f64 / elapsed.as_secs_f64(),
        );
        self.rec(
            &title,
            "latency p50",
            "ms",
            true,
            s,
            percentile(&lat, 50.0) / 1000.0,
        );
        self.rec(
            &title,
            "latency p99",
            "ms",
            true,
            s,
            percentile(&lat, 99.0) / 1000.0,
        );
        self.rec(
            &title,
            "server CPU",
            "CPU ms/req",
            true,
            s,
            u.cpu_secs * 1000.0 / lat.len() as f64,
        );
        Ok(())
    }

    async fn referrers(&mut self, s: &Server) -> Result<()> {
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
        let probe = self.probe(s)?;
        let st = load(&s.addr, sc.list_conns, sc.list_secs, sc.load_max, op).await?;
        let u = probe.finish()?;
        self.rec_load(&title, s, &st, u);
        Ok(())
    }

    async fn mixed(&mut self, s: &Server) -> Result<()> {
        let sc = self.scale.clone();
        let repo = "bench/mixed";
        let title = format!(
            "mixed: {} pushers ({} MiB blob + manifest) + {} pullers ({} MiB blob + manifest), {} s",
            sc.mixed_pushers,
            sc.mixed_push_size / MIB,
            sc.mixed_pullers,
            sc.mixed_pull_size / MIB,
            sc.mixed_secs
        );
        let f = Fixture::new(2);
        let (pull_blob, pull_digest) = self.blob(5, 0, sc.mixed_pull_size);
        let pull_manifest = oci::image_manifest(
            (&f.config_digest, f.config.len()),
            &[(pull_digest.clone(), pull_blob.len())],
        );
        let mut conn = Conn::connect(&s.addr).await?;
        oci::push_monolithic(&mut conn, repo, f.config.clone(), &f.config_digest).await?;
        oci::push_monolithic(&mut conn, repo, pull_blob.clone(), &pull_digest).await?;
        oci::put_manifest(&mut conn, repo, "pull", pull_manifest.clone()).await?;
        drop(pull_blob);
        let pool: Arc<Vec<(Bytes, String)>> = Arc::new(
            (0..sc.mixed_pool)
                .map(|i| self.blob(6, i as u32, sc.mixed_push_size))
                .collect(),
        );
        let config = Arc::new((f.config_digest.clone(), f.config.len()));
        let next = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs_f64(sc.mixed_secs);
        let mut conns = Vec::new();
        for _ in 0..sc.mixed_pushers + sc.mixed_pullers {
            conns.push(Conn::connect(&s.addr).await?);
        }
        let probe = self.probe(s)?;
        let t0 = Instant::now();
        let mut set = JoinSet::new();
        for (k, mut c) in conns.into_iter().enumerate() {
            let (pool, config, next, bytes, stop) = (
                pool.clone(),
                config.clone(),
                next.clone(),
                bytes.clone(),
                stop.clone(),
            );
            let (pull_manifest, pull_digest) = (pull_manifest.clone(), pull_digest.clone());
            let pull_size = sc.mixed_pull_size as u64;
            let pusher = k < sc.mixed_pushers;
            set.spawn(async move {
                let mut lat = Vec::new();
                let (mut pushes, mut pulls) = (0u64, 0u64);
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if pusher {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some((data, digest)) = pool.get(i) else {
                            break;
                        };
                        oci::push_monolithic(&mut c, repo, data.clone(), digest).await?;
                        let m = oci::image_manifest(
                            (&config.0, config.1),
                            &[(digest.clone(), data.len())],
                        );
                        let len = data.len() + m.len();
                        oci::put_manifest(&mut c, repo, &format!("m{i:05}"), m).await?;
                        bytes.fetch_add(len as u64, Ordering::Relaxed);
                        pushes += 1;
                    } else {
                        oci::get_manifest(&mut c, repo, "pull", &pull_manifest).await?;
                        let r = oci::get_blob(&mut c, repo, &pull_digest, pull_size).await?;
                        oci::verify_body(&r, &pull_digest)?;
                        bytes.fetch_add(r.len + pull_manifest.len() as u64, Ordering::Relaxed);
                        pulls += 1;
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                }
                anyhow::Ok((lat, pushes, pulls))
            });
        }
        let (mut lat, mut pushes, mut pulls) = (Vec::new(), 0, 0);
        let mut failure = None;
        while let Some(r) = set.join_next().await {
            match r? {
                Ok((l, a, b)) => {
                    lat.extend(l);
                    pushes += a;
                    pulls += b;
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let elapsed = t0.elapsed();
        let u = probe.finish()?;
        lat.sort_unstable();
        ensure!(
            pushes > 0 && pulls > 0,
            "mixed run: {pushes} pushes, {pulls} pulls"
        );
        // What was pushed is there.
        for i in [0, pushes as usize - 1] {
            let (data, digest) = &pool[i];
            let m = oci::image_manifest((&config.0, config.1), &[(digest.clone(), data.len())]);
            oci::get_manifest(&mut conn, repo, &format!("m{i:05}"), &m).await?;
        }
        let total = bytes.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        self.rec(
            &title,
            "throughput (push + pull)",
            "MB/s",
            false,
            s,
            total as f64 / MB / secs,
        );
        self.rec(
            &title,
            "push ops (blob + manifest)",
            "ops/s",
            false,
            s,
            pushes as f64 / secs,
        );
        self.rec(
            &title,
            "pull ops (manifest + blob)",
            "ops/s",
            false,
            s,
            pulls as f64 / secs,
        );
        self.rec(
            &title,
            "op latency p99",
            "ms",
            true,
            s,
            percentile(&lat, 99.0) / 1000.0,
        );
        self.rec_cpu_per_gb(&title, s, &u, total);
        Ok(())
    }
}
