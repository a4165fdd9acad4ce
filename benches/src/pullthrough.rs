//! Pull-through cache: an image of a few layers held by an upstream CNCF Distribution (started
//! by run.sh on loopback), pulled
//! - cold through our cache, from a registry started here on fresh storage for every iteration,
//!   beside a direct pull from the upstream (the proxy's overhead);
//! - warm through our cache, beside the same image pushed into the same registry (a local pull);
//! - through Distribution as a proxy (`proxy.remoteurl`), cold (fresh storage each iteration)
//!   and warm, beside direct pulls from the upstream, as the peer figure;
//! - cold through our cache and directly, both reaching the upstream over an emulated network
//!   link of a fixed rate (`--link-mbit`): a pacing TCP relay in this process on 127.0.0.1 in
//!   front of the upstream, because a real upstream (Docker Hub, ghcr.io) is across a network,
//!   not on loopback. Only the upstream's side is paced; the client reaches ours on loopback,
//!   as a node reaches an in-cluster mirror.
//!
//! A pull is what a client does: the manifest by tag, then the config and layers three at a time
//! (containerd's and Docker's default), each compared byte for byte with what was pushed. Every
//! server started here listens on 127.0.0.1, has its own folder, and is killed by its PID when
//! it is done with (also when the run fails).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::Method;
use tokio::process::Command;
use tokio::task::JoinSet;

use crate::http::{Conn, Endpoint};
use crate::oci::{self, sha256};
use crate::procfs::Probe;
use crate::report::{Cell, Results};
use crate::startup::Guard;

const MIB: usize = 1024 * 1024;
const MB: f64 = 1e6;
const GB: f64 = 1e9;
/// The upstream's name in our proxy configuration: `/v2/upstream.test/<repo>/...`.
const UPSTREAM: &str = "upstream.test";
/// The image's repository in the upstream.
const REPO: &str = "bench/image";
/// Blobs pulled at once, as containerd and Docker do by default.
const PULL_CONCURRENCY: usize = 3;

/// What `regbench pullthrough` is given.
#[derive(clap::Args)]
pub(crate) struct Opts {
    /// Our registry binary.
    #[arg(long)]
    pub(crate) registry: PathBuf,
    /// CNCF Distribution's binary (docker-registry), for the peer columns.
    #[arg(long)]
    pub(crate) distribution: Option<PathBuf>,
    /// The upstream (a running CNCF Distribution, plain HTTP, on loopback) and its PID.
    #[arg(long)]
    pub(crate) upstream: SocketAddr,
    #[arg(long)]
    pub(crate) upstream_pid: u32,
    /// Folder for the servers' storage and logs (each cold iteration gets a fresh one).
    #[arg(long)]
    pub(crate) work: PathBuf,
    /// Port for ours; Distribution as a proxy listens on the next one (127.0.0.1).
    #[arg(long)]
    pub(crate) port: u16,
    /// Cold pulls (each from a fresh server) and warm pulls of each kind (1 to 50).
    #[arg(long, default_value_t = 5)]
    pub(crate) iterations: usize,
    /// Layer sizes in MiB.
    #[arg(long, value_delimiter = ',', default_value = "24,16,8,4")]
    pub(crate) layers_mib: Vec<usize>,
    /// Clock ticks per second (getconf CLK_TCK).
    #[arg(long, default_value_t = 100.0)]
    pub(crate) clk_tck: f64,
    /// Rate of the emulated link to the upstream, Mbit/s in each direction, shared by all
    /// connections over it (0: no link rows).
    #[arg(long, default_value_t = 1000)]
    pub(crate) link_mbit: u64,
}

/// An image of a config and a few layers, pushed and pulled by tag `v1`.
struct Image {
    blobs: Vec<(Bytes, String)>,
    manifest: Bytes,
}

impl Image {
    fn new(layers_mib: &[usize]) -> Image {
        let config = Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
        let biggest = layers_mib.iter().copied().max().unwrap_or(1) * MIB;
        let base = oci::random_bytes(biggest, 0x9011);
        let layers: Vec<(Bytes, String)> = layers_mib
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let b = oci::blob_from(&base, m * MIB, 14, i as u32);
                let d = sha256(&b);
                (b, d)
            })
            .collect();
        let descs: Vec<(String, usize)> =
            layers.iter().map(|(b, d)| (d.clone(), b.len())).collect();
        let config_digest = sha256(&config);
        let manifest = oci::image_manifest((&config_digest, config.len()), &descs);
        let mut blobs = vec![(config, config_digest)];
        blobs.extend(layers);
        Image { blobs, manifest }
    }

    fn bytes(&self) -> u64 {
        (self.blobs.iter().map(|(b, _)| b.len()).sum::<usize>() + self.manifest.len()) as u64
    }

    async fn push(&self, ep: &Endpoint, repo: &str) -> Result<()> {
        let mut conn = Conn::connect(ep).await?;
        for (data, digest) in &self.blobs {
            oci::push_monolithic(&mut conn, repo, data.clone(), digest).await?;
        }
        oci::put_manifest(&mut conn, repo, "v1", self.manifest.clone()).await
    }
}

/// Pulls `repo:v1` from `ep` as a client does and returns how long it took.
async fn pull(ep: &Endpoint, repo: &str, img: &Arc<Image>) -> Result<Duration> {
    let t0 = Instant::now();
    let mut conn = Conn::connect(ep).await?;
    oci::get_manifest(&mut conn, repo, "v1", &img.manifest).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..PULL_CONCURRENCY {
        let (ep, repo, img, next) = (ep.clone(), repo.to_owned(), img.clone(), next.clone());
        set.spawn(async move {
            let mut conn = Conn::connect(&ep).await?;
            while let Some((data, digest)) = img.blobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                oci::get_blob_checked(&mut conn, &repo, digest, data).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(t0.elapsed())
}

/// A server started here: killed by its PID when stopped or dropped.
struct Daemon {
    guard: Guard,
    pid: u32,
    ep: Endpoint,
}

impl Daemon {
    /// Starts `cmd`, logging to `log`, and waits until GET `ready` on `addr` answers 200.
    async fn start(cmd: &[&str], log: &Path, addr: SocketAddr, ready: &str) -> Result<Daemon> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(cmd[0])
            .args(&cmd[1..])
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        let mut guard = Guard(Some(child));
        let pid = guard.0.as_ref().and_then(|c| c.id()).context("no pid")?;
        let ep = Endpoint::plain(addr);
        let t0 = Instant::now();
        loop {
            if let Some(st) = guard.0.as_mut().expect("child").try_wait()? {
                bail!(
                    "{cmd:?} exited with {st} before it was ready (log: {})",
                    log.display()
                );
            }
            if let Ok(mut c) = Conn::connect(&ep).await {
                if let Ok(r) = c.send(Method::GET, ready, &[], Bytes::new()).await {
                    if r.status.as_u16() == 200 {
                        break;
                    }
                }
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("{cmd:?} not ready within 30 s (log: {})", log.display());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Daemon { guard, pid, ep })
    }

    async fn stop(mut self) -> Result<()> {
        let mut child = self.guard.0.take().expect("child");
        child.start_kill()?;
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .context("server did not exit after kill")??;
        Ok(())
    }
}

/// Per-pull samples of one column in one row: seconds, the serving process's CPU seconds, and
/// the CPU seconds of every process the pull ran on (the client, the upstream, and ours when the
/// pull goes through it).
#[derive(Default)]
struct Samples {
    secs: Vec<f64>,
    cpu: Vec<f64>,
    all_cpu: Vec<f64>,
}

impl Samples {
    /// Pulls `repo` from `ep`, counting the CPU of `pid`, and of `pid`, the upstream and this
    /// process (the client, and the link's relay when there is one) together.
    async fn pull(
        &mut self,
        o: &Opts,
        ep: &Endpoint,
        pid: u32,
        repo: &str,
        img: &Arc<Image>,
    ) -> Result<()> {
        let mut pids = vec![std::process::id(), o.upstream_pid];
        if pid != o.upstream_pid {
            pids.push(pid);
        }
        let (probe, all) = (
            Probe::start(&[pid], o.clk_tck)?,
            Probe::start(&pids, o.clk_tck)?,
        );
        let t = pull(ep, repo, img).await?;
        self.secs.push(t.as_secs_f64());
        self.cpu.push(probe.finish()?.cpu_secs);
        self.all_cpu.push(all.finish()?.cpu_secs);
        Ok(())
    }

    fn record(&self, res: &mut Results, row: &str, column: &str, bytes: u64) {
        let (secs, cpu, all) = (median(&self.secs), median(&self.cpu), median(&self.all_cpu));
        let ms = |v: &[f64]| -> String {
            let v: Vec<String> = v.iter().map(|s| format!("{:.1}", s * 1000.0)).collect();
            v.join(" ")
        };
        eprintln!(
            "{} | {column}: pulls, ms: {}; serving CPU, ms: {}; all CPU, ms: {}",
            row.split(';').next().unwrap_or(row),
            ms(&self.secs),
            ms(&self.cpu),
            ms(&self.all_cpu)
        );
        for (metric, unit, lower, v) in [
            ("pull time (median)", "ms", true, secs * 1000.0),
            (
                "throughput (at the median time)",
                "MB/s",
                false,
                bytes as f64 / MB / secs,
            ),
            (
                "serving process's CPU (median)",
                "CPU s/GB",
                true,
                cpu / (bytes as f64 / GB),
            ),
            (
                "CPU of client, upstream and cache together (median)",
                "CPU s/GB",
                true,
                all / (bytes as f64 / GB),
            ),
        ] {
            res.set(row, metric, unit, lower, column, Cell::Num(v));
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Our configuration: the upstream under the name [`UPSTREAM`], its tags fresh for an hour.
const OURS_CONFIG: &str = r#"gc_interval = 0

[proxy]

[[proxy.upstreams]]
name = "{name}"
url = "http://{upstream}"
tag_freshness = 3600
"#;

/// Distribution as a proxy of the upstream, its stock blob descriptor cache, no access log.
const DIST_CONFIG: &str = r#"version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: "{dir}/data"}, cache: {blobdescriptor: inmemory}}
http: {addr: "{addr}"}
proxy: {remoteurl: "http://{upstream}"}
"#;

/// Creates `dir` and writes `template` to the file `name` in it, with `{dir}`, `{addr}`,
/// `{upstream}` and `{name}` filled in; returns the file's path.
fn config_file(
    dir: &Path,
    addr: SocketAddr,
    upstream: SocketAddr,
    name: &str,
    template: &str,
) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let text = template
        .replace("{dir}", dir.to_str().context("folder path")?)
        .replace("{addr}", &addr.to_string())
        .replace("{upstream}", &upstream.to_string())
        .replace("{name}", UPSTREAM);
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    path.to_str().map(str::to_owned).context("config path")
}

/// Starts our registry on fresh storage in `dir`, with the upstream configured at `upstream`
/// (the upstream itself, or the link in front of it).
async fn start_ours(o: &Opts, dir: &Path, upstream: SocketAddr) -> Result<Daemon> {
    let addr = SocketAddr::from(([127, 0, 0, 1], o.port));
    let cfg = config_file(dir, addr, upstream, "registry.toml", OURS_CONFIG)?;
    let (listen, storage) = (addr.to_string(), dir.join("data").display().to_string());
    let cmd = [
        o.registry.to_str().context("registry path")?,
        "serve",
        "--config",
        &cfg,
        "--listen",
        &listen,
        "--storage",
        &storage,
        "--log-level",
        "warn",
    ];
    Daemon::start(&cmd, &o.work.join("pullthrough-ours.log"), addr, "/readyz").await
}

/// Starts Distribution as a proxy of the upstream on fresh storage in `dir`.
async fn start_dist_proxy(o: &Opts, bin: &Path, dir: &Path) -> Result<Daemon> {
    let addr = SocketAddr::from(([127, 0, 0, 1], o.port + 1));
    let cfg = config_file(dir, addr, o.upstream, "config.yml", DIST_CONFIG)?;
    let cmd = [bin.to_str().context("distribution path")?, "serve", &cfg];
    Daemon::start(&cmd, &o.work.join("pullthrough-dist.log"), addr, "/v2/").await
}

/// `iterations` cold pulls through ours (a fresh registry and storage for each, its upstream at
/// `upstream`) alternating with direct pulls from `upstream`.
async fn cold_pulls(
    o: &Opts,
    img: &Arc<Image>,
    upstream: SocketAddr,
    label: &str,
    cold: &mut Samples,
    direct: &mut Samples,
) -> Result<()> {
    let proxied = format!("{UPSTREAM}/{REPO}");
    let direct_ep = Endpoint::plain(upstream);
    for i in 0..o.iterations.clamp(1, 50) {
        let dir = o.work.join(format!("pullthrough-{label}-{i}"));
        let ours = start_ours(o, &dir, upstream).await?;
        for first in [i % 2 == 0, i % 2 == 1] {
            if first {
                cold.pull(o, &ours.ep, ours.pid, &proxied, img).await?;
            } else {
                direct
                    .pull(o, &direct_ep, o.upstream_pid, REPO, img)
                    .await?;
            }
        }
        ours.stop().await?;
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// An emulated network link in front of a server: a TCP relay on 127.0.0.1 that forwards each
/// direction no faster than the link's rate, all connections sharing it (as they share one
/// link). It carries at most a fixed number of bytes in all, and lives until [`Link::stop`] or
/// its drop; a connection idle for [`LINK_IDLE`] is closed.
struct Link {
    addr: SocketAddr,
    tasks: JoinSet<()>,
    carried: Arc<std::sync::atomic::AtomicU64>,
}

/// How long a connection over the link may stay idle.
const LINK_IDLE: Duration = Duration::from_secs(60);

/// Bytes forwarded per read and paced write.
const LINK_CHUNK: usize = 64 * 1024;

/// Link time a direction may have been idle and still send at once to catch up (a token bucket
/// of this many bytes at the link's rate): the relay's timers wake a millisecond or so late, and
/// without this credit a connection would lose that time after every chunk and never reach the
/// rate.
const LINK_BURST: Duration = Duration::from_millis(2);

/// One direction of the link: when it is free again, at its rate.
struct Pacer {
    ns_per_byte: f64,
    free_at: std::sync::Mutex<Instant>,
}

impl Pacer {
    fn new(mbit: u64) -> Arc<Pacer> {
        Arc::new(Pacer {
            ns_per_byte: 8000.0 / mbit as f64,
            free_at: std::sync::Mutex::new(Instant::now()),
        })
    }

    /// When `n` bytes given to the link now have gone through it (after those ahead of them,
    /// and no earlier than [`LINK_BURST`] of idle link time allows).
    fn reserve(&self, n: usize) -> Instant {
        let mut free = self.free_at.lock().expect("pacer lock");
        let now = Instant::now();
        let start = (*free).max(now.checked_sub(LINK_BURST).unwrap_or(now));
        *free = start + Duration::from_nanos((n as f64 * self.ns_per_byte) as u64);
        *free
    }
}

impl Link {
    /// A link of `mbit` Mbit/s each way in front of `server`, carrying at most `max_bytes`.
    async fn start(server: SocketAddr, mbit: u64, max_bytes: u64) -> Result<Link> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (down, up) = (Pacer::new(mbit), Pacer::new(mbit));
        let carried = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let budget = Arc::new(std::sync::atomic::AtomicU64::new(max_bytes));
        let mut tasks = JoinSet::new();
        let count = carried.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(server).await else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let (down, up, budget, count) =
                    (down.clone(), up.clone(), budget.clone(), count.clone());
                conns.spawn(async move {
                    let to_client = relay(sr, cw, down, budget.clone(), Some(count));
                    let to_server = relay(cr, sw, up, budget, None);
                    let _ = tokio::join!(to_client, to_server);
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Link {
            addr,
            tasks,
            carried,
        })
    }

    /// Stops the relay (its connections with it); returns the bytes it carried towards the
    /// clients.
    fn stop(mut self) -> u64 {
        self.tasks.abort_all();
        self.carried.load(Ordering::Relaxed)
    }
}

/// Copies `from` to `to` paced by `pacer`, within what is left of `budget`, counting into
/// `count`; ends at the end of `from`, an error, an exhausted budget or [`LINK_IDLE`].
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    pacer: Arc<Pacer>,
    budget: Arc<std::sync::atomic::AtomicU64>,
    count: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; LINK_CHUNK];
    loop {
        let n = match tokio::time::timeout(LINK_IDLE, from.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
        };
        let take = |left: u64| left.checked_sub(n as u64);
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
            .is_err()
        {
            bail!("the link's byte limit is reached");
        }
        tokio::time::sleep_until(pacer.reserve(n).into()).await;
        to.write_all(&buf[..n]).await?;
        if let Some(c) = &count {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    to.shutdown().await?;
    Ok(())
}

/// Runs the pull-through measurements and returns the figures.
pub(crate) async fn run(o: &Opts) -> Result<Results> {
    let img = Arc::new(Image::new(&o.layers_mib));
    let upstream = Endpoint::plain(o.upstream);
    img.push(&upstream, REPO)
        .await
        .context("pushing the image to the upstream")?;
    let proxied = format!("{UPSTREAM}/{REPO}");
    let n = o.iterations.clamp(1, 50);
    let (mut cold, mut direct) = (Samples::default(), Samples::default());
    let (mut warm, mut local) = (Samples::default(), Samples::default());

    // Warm through the cache against the same image pushed into the same registry.
    let dir = o.work.join("pullthrough-warm");
    let ours = start_ours(o, &dir, o.upstream).await?;
    img.push(&ours.ep, "local/image")
        .await
        .context("pushing the image locally")?;
    pull(&ours.ep, &proxied, &img)
        .await
        .context("filling the cache")?;
    for i in 0..n {
        for first in [i % 2 == 0, i % 2 == 1] {
            if first {
                warm.pull(o, &ours.ep, ours.pid, &proxied, &img).await?;
            } else {
                local
                    .pull(o, &ours.ep, ours.pid, "local/image", &img)
                    .await?;
            }
        }
    }
    ours.stop().await?;
    std::fs::remove_dir_all(&dir)?;

    // Cold: a fresh registry and storage for every pull through the cache.
    cold_pulls(o, &img, o.upstream, "cold", &mut cold, &mut direct).await?;

    let mut res = Results::default();
    let mib = o.layers_mib.iter().sum::<usize>();
    let what = format!("pull an image ({} layers, {mib} MiB)", o.layers_mib.len());
    let cold_row = format!("{what} cold through the cache (fresh storage each time) x{n}; reference: direct from the upstream");
    let warm_row = format!("{what} warm through the cache x{n}; reference: ours, the same image pushed into it (Distribution: direct from the upstream)");
    let bytes = img.bytes();
    cold.record(&mut res, &cold_row, "cache", bytes);
    direct.record(&mut res, &cold_row, "reference", bytes);
    warm.record(&mut res, &warm_row, "cache", bytes);
    local.record(&mut res, &warm_row, "reference", bytes);

    if o.link_mbit > 0 {
        // The same cold pulls, the upstream reached over the link by both.
        let link = Link::start(o.upstream, o.link_mbit, 64 * bytes).await?;
        let (mut lcold, mut ldirect) = (Samples::default(), Samples::default());
        let res_link = cold_pulls(o, &img, link.addr, "link", &mut lcold, &mut ldirect).await;
        let carried = link.stop();
        res_link.context("cold pulls over the link")?;
        let row = format!(
            "{what} cold through the cache, the upstream over a {} Mbit/s link x{n}; reference: direct from the upstream over the same link",
            o.link_mbit
        );
        lcold.record(&mut res, &row, "cache", bytes);
        ldirect.record(&mut res, &row, "reference", bytes);
        eprintln!(
            "link: {} MB carried towards the clients in {} pulls",
            carried / 1_000_000,
            2 * n
        );
    }

    if let Some(bin) = &o.distribution {
        let (mut dcold, mut dwarm, mut ddirect) =
            (Samples::default(), Samples::default(), Samples::default());
        for i in 0..n {
            let dir = o.work.join(format!("pullthrough-dist-{i}"));
            let d = start_dist_proxy(o, bin, &dir).await?;
            if i % 2 == 1 {
                ddirect
                    .pull(o, &upstream, o.upstream_pid, REPO, &img)
                    .await?;
            }
            dcold.pull(o, &d.ep, d.pid, REPO, &img).await?;
            dwarm.pull(o, &d.ep, d.pid, REPO, &img).await?;
            if i % 2 == 0 {
                ddirect
                    .pull(o, &upstream, o.upstream_pid, REPO, &img)
                    .await?;
            }
            d.stop().await?;
            std::fs::remove_dir_all(&dir)?;
        }
        dcold.record(&mut res, &cold_row, "dist-cache", bytes);
        dwarm.record(&mut res, &warm_row, "dist-cache", bytes);
        ddirect.record(&mut res, &cold_row, "dist-direct", bytes);
        ddirect.record(&mut res, &warm_row, "dist-direct", bytes);
    }
    Ok(res)
}
