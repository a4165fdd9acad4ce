//! The mixed run: pushers (a blob and a manifest each) and pullers (a manifest and a blob each)
//! at once, for a fixed time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bytes::Bytes;
use tokio::task::JoinSet;

use super::{Bench, Fixture, Server, MB, MIB};
use crate::http::Conn;
use crate::oci;
use crate::report::percentile;

impl Bench {
    pub(super) async fn mixed(&mut self, s: &Server) -> Result<()> {
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
