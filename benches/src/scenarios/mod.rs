//! The scenarios, run against each server in turn (the order alternates per scenario), with the
//! server's CPU time and peak memory read from /proc around each timed part.
//!
//! - `transfer`: large blob pushes and pulls, and the loopback ceiling beside them;
//! - `requests`: small requests under load (manifests, HEADs, tag lists, referrers) and many
//!   small pushes;
//! - `mixed`: pushers and pullers at once.

mod mixed;
mod requests;
mod transfer;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;

use crate::http::{Conn, Endpoint};
use crate::oci::{self, sha256};
use crate::procfs::{self, Probe, Usage};
use crate::report::{fmt_num, Cell, Results};
use requests::LoadStats;

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
        let cell = Cell::Num(v);
        self.results
            .set(scenario, metric, unit, lower, &s.name, cell);
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
        match sc {
            Scenario::PushMono | Scenario::PushChunked => self.push_big(sc, s).await,
            Scenario::PullFirst | Scenario::PullWarm => self.pull_big(sc, s).await,
            Scenario::GetManifest | Scenario::HeadBlob | Scenario::HeadManifest => {
                self.small_requests(sc, s).await
            }
            Scenario::SmallPushes => self.small_pushes(s).await,
            Scenario::TagPuts => self.tag_puts(s).await,
            Scenario::TagList => self.tag_list(s).await,
            Scenario::Referrers => self.referrers(s).await,
            Scenario::Mixed => self.mixed(s).await,
        }
    }
}
