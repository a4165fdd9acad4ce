//! Large blobs: monolithic and chunked pushes, first and warm pulls, and the loopback ceiling
//! measured right after the warm pulls.

use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;

use super::{Bench, Scenario, Server, GB, MB, MIB};
use crate::http::{Conn, Endpoint};
use crate::oci;

impl Bench {
    /// `PushMono` or `PushChunked`: the large blobs, each checked by a HEAD after its push.
    pub(super) async fn push_big(&mut self, sc: Scenario, s: &Server) -> Result<()> {
        let k = self.scale.clone();
        let big_mib = k.big / MIB;
        let chunked = sc == Scenario::PushChunked;
        let (title, n, set, repo) = if chunked {
            let title = format!(
                "push {big_mib} MiB blob, chunked ({} MiB PATCH + Content-Range) x{}",
                k.chunk / MIB,
                k.chunked_n
            );
            (title, k.chunked_n, 2, "bench/chunked")
        } else {
            let title = format!(
                "push {big_mib} MiB blob, monolithic (POST + PUT) x{}",
                k.mono_n
            );
            (title, k.mono_n, 1, "bench/big")
        };
        let mut conn = Conn::connect(&s.addr).await?;
        let mut busy = Duration::ZERO;
        let mut bytes = 0u64;
        let probe = self.probe(s)?;
        for i in 0..n {
            let (data, digest) = self.blob(set, i as u32, k.big);
            let t = Instant::now();
            if chunked {
                oci::push_chunked(&mut conn, repo, data, &digest, k.chunk).await?;
            } else {
                oci::push_monolithic(&mut conn, repo, data, &digest).await?;
            }
            busy += t.elapsed();
            bytes += k.big as u64;
            oci::head_blob(&mut conn, repo, &digest, k.big as u64).await?;
        }
        let u = probe.finish()?;
        self.rec_transfer(&title, s, bytes, busy, u);
        Ok(())
    }

    /// `PullFirst` or `PullWarm`: the monolithically pushed blobs, compared byte for byte; after
    /// the warm pulls over plain HTTP, the loopback ceiling.
    pub(super) async fn pull_big(&mut self, sc: Scenario, s: &Server) -> Result<()> {
        let k = self.scale.clone();
        let big_mib = k.big / MIB;
        let (title, rounds) = if sc == Scenario::PullFirst {
            (
                format!("pull {big_mib} MiB blob, first read x{}", k.mono_n),
                1,
            )
        } else {
            (
                format!(
                    "pull {big_mib} MiB blob, warm x{}",
                    k.mono_n * k.warm_rounds
                ),
                k.warm_rounds,
            )
        };
        let mut conn = Conn::connect(&s.addr).await?;
        let mut busy = Duration::ZERO;
        let mut bytes = 0u64;
        let probe = self.probe(s)?;
        for _ in 0..rounds {
            for i in 0..k.mono_n {
                let (data, digest) = self.blob(1, i as u32, k.big);
                let t = Instant::now();
                // Compared with the pushed bytes as they arrive (exact, and the client
                // holds no 256 MiB body whose fresh pages would slow the first pulls).
                let r = oci::get_blob_checked(&mut conn, "bench/big", &digest, &data).await?;
                busy += t.elapsed();
                bytes += r.len;
            }
        }
        let u = probe.finish()?;
        self.rec_transfer(&title, s, bytes, busy, u);
        if sc == Scenario::PullWarm && s.addr.tls.is_none() {
            let n = rounds * k.mono_n;
            let (content, digest) = self.blob(1, 0, k.big);
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
        Ok(())
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
}
