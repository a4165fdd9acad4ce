//! `regbench`: load benchmarks of OCI registries, side by side (see BENCHMARKS.md).
//!
//! - `regbench run --server NAME=ADDR[+ADDR...],PID[+PID...][,push-only|blob-pushes-only][,tls=http1|h2][,auth=basic|bearer:USER:PASS|ignored:LENGTH] ...` runs
//!   every scenario against each already-running server (several addresses: replicas taken in
//!   turn per request) and writes a Markdown table.
//! - `regbench startup ...` measures start-to-ready time of a server command.
//! - `regbench seed --storage DIR --repos N` fills a storage folder with N repositories.
//! - `regbench pullthrough ...` pulls an image through the pull-through cache, cold and warm.
//!
//! # Layout
//! - `scenarios/`: the scenarios and the run loop (`transfer`: large pushes and pulls;
//!   `requests`: small requests under load and many small pushes; `mixed`: both at once);
//! - `auth`: Basic credentials or a bearer token from `GET /token` for servers with access control;
//! - `pullthrough`: the pull-through cache against direct and local pulls;
//! - `http`: the hyper client (plain HTTP/1.1, TLS with HTTP/1.1 or HTTP/2, replicas in turn);
//! - `oci`: registry operations as a client does them, each checking the answer;
//! - `report`: the results table, medians of rounds, ratios;
//! - `procfs`: a server's CPU time and memory from /proc;
//! - `ceiling`: the loopback ceiling's minimal `sendfile` sender;
//! - `floor`: the push floor, the least work a blob push needs;
//! - `startup`: start-to-ready time and the seeding of storage.

mod auth;
mod ceiling;
mod floor;
mod http;
mod oci;
mod procfs;
mod pullthrough;
mod report;
mod scenarios;
mod startup;

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};

use http::{Alpn, Endpoint};
use report::{Cell, Results};
use scenarios::{Bench, Scale, Scenario, Server};

#[derive(Parser)]
#[command(
    name = "regbench",
    about = "Side-by-side load benchmarks of OCI registries"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenarios against running servers.
    Run {
        /// NAME=ADDR[+ADDR...],PID[+PID...][,push-only|blob-pushes-only][,tls=http1|h2][,auth=basic|bearer:USER:PASS|ignored:LENGTH]; several addresses are
        /// replicas taken in turn per request. The ratio column is the first server over the second.
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        /// Column titles, NAME=TITLE (defaults to NAME).
        #[arg(long = "title")]
        titles: Vec<String>,
        /// Smaller sizes and shorter durations.
        #[arg(long)]
        quick: bool,
        /// Only these scenarios (names as printed in progress lines), comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Clock ticks per second (getconf CLK_TCK).
        #[arg(long, default_value_t = 100.0)]
        clk_tck: f64,
        /// Result sets (JSON) measured separately, merged in first.
        #[arg(long)]
        merge: Vec<String>,
        /// Append the Markdown table to this file.
        #[arg(long)]
        out: Option<String>,
        /// Write all figures as JSON here.
        #[arg(long)]
        json: Option<String>,
        /// PEM CA certificate trusted by the `tls=` servers.
        #[arg(long)]
        ca_cert: Option<String>,
        /// Size of the large blobs in MiB (overrides the scale's).
        #[arg(long)]
        big_mib: Option<usize>,
        /// Large blobs pushed monolithically and chunked (overrides the scale's counts).
        #[arg(long)]
        reps: Option<usize>,
        /// Ratio columns, A/B by server name (instead of the first server over the second).
        #[arg(long = "ratio")]
        ratios: Vec<String>,
        /// Run each scenario this many times (the servers' order alternating) and record the
        /// median of each figure.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Measure start-to-ready time of `CMD` (median of several starts).
    Startup {
        /// Column (server name) the figure belongs to.
        #[arg(long)]
        server: String,
        /// Row label, e.g. "empty storage".
        #[arg(long)]
        label: String,
        /// Address the command listens on.
        #[arg(long)]
        addr: SocketAddr,
        /// Path that answers 200 when ready.
        #[arg(long, default_value = "/readyz")]
        path: String,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Result set (JSON) to add the figure to (created if missing).
        #[arg(long)]
        out: String,
        /// The server command.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Record "not measured" for a server in a startup row.
    Na {
        #[arg(long)]
        server: String,
        #[arg(long)]
        label: String,
        #[arg(long)]
        why: String,
        #[arg(long)]
        out: String,
    },
    /// Run the push floor (the least work a blob push needs: see `floor.rs`) until killed.
    Floor {
        #[arg(long)]
        listen: SocketAddr,
        /// Folder for its files (created if missing).
        #[arg(long)]
        dir: std::path::PathBuf,
        /// fsync each blob and its folder before the 201, as the registry does by default.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        fsync: bool,
    },
    /// Pull an image through our pull-through cache (cold and warm) and, with --distribution,
    /// through Distribution as a proxy, beside direct and local pulls (see pullthrough.rs).
    Pullthrough {
        #[command(flatten)]
        opts: pullthrough::Opts,
        /// Column titles, NAME=TITLE.
        #[arg(long = "title")]
        titles: Vec<String>,
        /// Append the Markdown table to this file.
        #[arg(long)]
        out: Option<String>,
        /// Write all figures as JSON here.
        #[arg(long)]
        json: Option<String>,
    },
    /// Fill a storage folder with repositories through the storage crate.
    Seed {
        #[arg(long)]
        storage: String,
        #[arg(long, default_value_t = 10_000)]
        repos: usize,
    },
}

/// `NAME=ADDR[+ADDR...],PID[+PID...][,push-only|blob-pushes-only][,tls=http1|tls=h2][,auth=basic|bearer:USER:PASS|ignored:LENGTH]`: several addresses are
/// replicas taken in turn per request; `tls=` speaks HTTPS with that ALPN, trusting `ca`; `auth=`
/// sends Basic credentials, or a bearer token got from `GET /token` with them, on every request;
/// `auth=ignored:LENGTH` a dummy bearer header of that length to a server without access control.
fn parse_server(s: &str, ca: Option<&str>) -> Result<Server> {
    let (name, rest) = s.split_once('=').context("--server NAME=ADDR,PID")?;
    let parts: Vec<&str> = rest.split(',').collect();
    if parts.len() < 2 {
        bail!("--server {s}: expected NAME=ADDR[+ADDR...],PID[+PID...][,push-only|blob-pushes-only][,tls=http1|h2][,auth=basic|bearer:USER:PASS|ignored:LENGTH]");
    }
    let addrs = parts[0]
        .split('+')
        .map(|a| a.parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("address in {s}"))?;
    let pids = parts[1]
        .split('+')
        .map(str::parse::<u32>)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("pid in {s}"))?;
    let mut push_only = false;
    let mut blob_pushes_only = false;
    let mut tls = None;
    let mut login = None;
    for opt in &parts[2..] {
        if let Some(a) = opt.strip_prefix("auth=") {
            login = Some(auth::Login::parse(a)?);
            continue;
        }
        match *opt {
            "push-only" => push_only = true,
            "blob-pushes-only" => blob_pushes_only = true,
            "tls=http1" | "tls=h2" => {
                let ca = ca.with_context(|| format!("--server {s}: tls needs --ca-cert"))?;
                let alpn = if *opt == "tls=h2" {
                    Alpn::H2
                } else {
                    Alpn::Http1
                };
                tls = Some(http::tls_config(ca, alpn)?);
            }
            other => bail!("--server {s}: unknown option {other}"),
        }
    }
    Ok(Server {
        name: name.to_owned(),
        addr: Endpoint {
            addrs,
            tls,
            auth: None,
        },
        login,
        pids,
        push_only,
        blob_pushes_only,
    })
}

fn parse_scenario(s: &str) -> Result<Scenario> {
    Scenario::ALL
        .iter()
        .copied()
        .find(|sc| format!("{sc:?}").eq_ignore_ascii_case(s))
        .with_context(|| format!("unknown scenario {s}"))
}

fn load_or_new(path: &str) -> Result<Results> {
    if std::path::Path::new(path).exists() {
        Results::load(path)
    } else {
        Ok(Results::default())
    }
}

/// (name, title) for each column: the title given as NAME=TITLE, or the name.
fn titled(names: &[&str], titles: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            let title = titles
                .iter()
                .find_map(|t| t.strip_prefix(&format!("{n}=")))
                .unwrap_or(n);
            ((*n).to_owned(), title.to_owned())
        })
        .collect()
}

/// Prints the table, appends it to `out` and writes the figures as JSON to `json`.
fn emit(res: &Results, table: &str, out: Option<&str>, json: Option<&str>) -> Result<()> {
    println!("{table}");
    if let Some(j) = json {
        res.save(j)?;
    }
    if let Some(o) = out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(o)?;
        f.write_all(table.as_bytes())?;
    }
    Ok(())
}

/// Records `cell` for `server` in the start-up row `row` picks, in the result set `out`.
fn startup_cell(
    out: &str,
    row: impl FnOnce(&Results) -> String,
    server: &str,
    cell: Cell,
) -> Result<()> {
    let mut res = load_or_new(out)?;
    let row = row(&res);
    res.set("server", &row, "ms", true, server, cell);
    res.save(out)
}

fn startup_row(label: &str) -> String {
    format!("start-to-ready, {label}")
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run {
            servers,
            titles,
            quick,
            only,
            clk_tck,
            merge,
            out,
            json,
            ca_cert,
            big_mib,
            reps,
            ratios,
            rounds,
        } => {
            let servers = servers
                .iter()
                .map(|s| parse_server(s, ca_cert.as_deref()))
                .collect::<Result<Vec<_>>>()?;
            if servers.len() < 2 {
                bail!("need at least two --server");
            }
            let only = only
                .iter()
                .map(|s| parse_scenario(s))
                .collect::<Result<Vec<_>>>()?;
            let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
            let columns = titled(&names, &titles);
            let mut scale = if quick { Scale::quick() } else { Scale::full() };
            if let Some(m) = big_mib {
                scale.big = m.max(1) * 1024 * 1024;
            }
            if let Some(n) = reps {
                scale.mono_n = n.max(1);
                scale.chunked_n = n.max(1);
            }
            let ratios = ratios
                .iter()
                .map(|r| {
                    let (a, b) = r.split_once('/').context("--ratio A/B")?;
                    ensure!(
                        [a, b].iter().all(|n| columns.iter().any(|(c, _)| c == n)),
                        "--ratio {r}: no such server"
                    );
                    Ok((a.to_owned(), b.to_owned()))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut bench = Bench::new(scale, clk_tck, servers);
            bench.rounds = rounds.max(1);
            for m in &merge {
                bench.results.merge(Results::load(m)?);
            }
            let outcome = bench.run(&only).await;
            let table = bench.results.markdown(&columns, &ratios);
            emit(&bench.results, &table, out.as_deref(), json.as_deref())?;
            outcome
        }
        Cmd::Startup {
            server,
            label,
            addr,
            path,
            runs,
            out,
            cmd,
        } => {
            let mut times = Vec::new();
            let mut rss = Vec::new();
            for _ in 0..runs.max(1) {
                let (t, r) = startup::time_to_ready(&cmd, addr, &path).await?;
                times.push(t.as_secs_f64() * 1000.0);
                rss.push(r);
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            eprintln!(
                "regbench: {server} {label}: start-to-ready {times:.1?} ms (median {median:.1})"
            );
            let row = format!("{} (median of {})", startup_row(&label), times.len());
            startup_cell(&out, |_| row, &server, Cell::Num(median))
        }
        Cmd::Na {
            server,
            label,
            why,
            out,
        } => {
            // The row title must match the one `startup` writes for the other server.
            let row = |res: &Results| {
                res.rows
                    .iter()
                    .find(|r| r.metric.starts_with(&startup_row(&label)))
                    .map(|r| r.metric.clone())
                    .unwrap_or_else(|| startup_row(&label))
            };
            startup_cell(&out, row, &server, Cell::Na(why))
        }
        Cmd::Pullthrough {
            opts,
            titles,
            out,
            json,
        } => {
            let res = pullthrough::run(&opts).await?;
            let mut names = vec!["cache", "reference"];
            let mut ratios = vec![("cache".to_owned(), "reference".to_owned())];
            if opts.distribution.is_some() {
                names.extend(["dist-cache", "dist-direct"]);
                ratios.push(("dist-cache".to_owned(), "dist-direct".to_owned()));
            }
            let columns = titled(&names, &titles);
            let table = res.markdown(&columns, &ratios);
            emit(&res, &table, out.as_deref(), json.as_deref())
        }
        Cmd::Floor { listen, dir, fsync } => floor::serve(listen, dir, fsync).await,
        Cmd::Seed { storage, repos } => {
            let t = std::time::Instant::now();
            startup::seed(&storage, repos).await?;
            eprintln!(
                "regbench: seeded {repos} repositories in {storage} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}
