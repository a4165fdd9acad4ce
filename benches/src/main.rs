//! `regbench`: load benchmarks of OCI registries, side by side (see BENCHMARKS.md).
//!
//! - `regbench run --server NAME=ADDR,PID[,push-only] ...` runs every scenario against each
//!   already-running server and writes a Markdown table.
//! - `regbench startup ...` measures start-to-ready time of a server command.
//! - `regbench seed --storage DIR --repos N` fills a storage folder with N repositories.

mod http;
mod oci;
mod procfs;
mod report;
mod scenarios;
mod startup;

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

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
        /// NAME=ADDR,PID[,push-only]; the ratio column is the first server over the second.
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
    /// Fill a storage folder with repositories through the storage crate.
    Seed {
        #[arg(long)]
        storage: String,
        #[arg(long, default_value_t = 10_000)]
        repos: usize,
    },
}

fn parse_server(s: &str) -> Result<Server> {
    let (name, rest) = s.split_once('=').context("--server NAME=ADDR,PID")?;
    let parts: Vec<&str> = rest.split(',').collect();
    if parts.len() < 2 {
        bail!("--server {s}: expected NAME=ADDR,PID[,push-only]");
    }
    Ok(Server {
        name: name.to_owned(),
        addr: parts[0]
            .parse()
            .with_context(|| format!("address in {s}"))?,
        pid: parts[1].parse().with_context(|| format!("pid in {s}"))?,
        push_only: parts.get(2) == Some(&"push-only"),
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
        } => {
            let servers = servers
                .iter()
                .map(|s| parse_server(s))
                .collect::<Result<Vec<_>>>()?;
            if servers.len() < 2 {
                bail!("need at least two --server");
            }
            let only = only
                .iter()
                .map(|s| parse_scenario(s))
                .collect::<Result<Vec<_>>>()?;
            let columns: Vec<(String, String)> = servers
                .iter()
                .map(|s| {
                    let title = titles
                        .iter()
                        .find_map(|t| t.strip_prefix(&format!("{}=", s.name)))
                        .unwrap_or(&s.name);
                    (s.name.clone(), title.to_owned())
                })
                .collect();
            let scale = if quick { Scale::quick() } else { Scale::full() };
            let mut bench = Bench::new(scale, clk_tck, servers);
            for m in &merge {
                bench.results.merge(Results::load(m)?);
            }
            let outcome = bench.run(&only).await;
            let table = bench.results.markdown(&columns);
            println!("{table}");
            if let Some(j) = json {
                bench.results.save(&j)?;
            }
            if let Some(o) = out {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&o)?;
                f.write_all(table.as_bytes())?;
            }
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
            let mut res = load_or_new(&out)?;
            res.num(
                "server",
                &format!("{} (median of {})", startup_row(&label), times.len()),
                "ms",
                true,
                &server,
                median,
            );
            res.save(&out)?;
            Ok(())
        }
        Cmd::Na {
            server,
            label,
            why,
            out,
        } => {
            let mut res = load_or_new(&out)?;
            // The row title must match the one `startup` writes for the other server.
            let row = res
                .rows
                .iter()
                .find(|r| r.metric.starts_with(&startup_row(&label)))
                .map(|r| r.metric.clone())
                .unwrap_or_else(|| startup_row(&label));
            res.set("server", &row, "ms", true, &server, Cell::Na(why));
            res.save(&out)?;
            Ok(())
        }
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
