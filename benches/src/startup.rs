//! Start-to-ready time: spawn the server, poll its readiness URL, stop it. Also the seeding of a
//! storage folder with many repositories, written through the storage crate (the same layout the
//! registry writes).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::Method;
use storage::fs::FsBackend;
use storage::{Options, Reference, RepoName, Store};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::http::Conn;
use crate::oci::{self, sha256};

/// Kills the child it holds when dropped, so a failing run leaves no server behind.
pub(crate) struct Guard(pub(crate) Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// Spawns `cmd` and returns how long it took until GET `path` on `addr` answered 200, and the
/// server's RSS (MiB) at that moment.
pub(crate) async fn time_to_ready(
    cmd: &[String],
    addr: SocketAddr,
    path: &str,
) -> Result<(Duration, f64)> {
    let t0 = Instant::now();
    let child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let mut guard = Guard(Some(child));
    let pid = guard.0.as_ref().and_then(|c| c.id()).context("no pid")?;
    let limit = Duration::from_secs(60);
    let ready = loop {
        if t0.elapsed() > limit {
            bail!("{cmd:?} not ready within {limit:?}");
        }
        if let Some(status) = guard.0.as_mut().expect("child").try_wait()? {
            bail!("{cmd:?} exited with {status} before it was ready");
        }
        let ep = crate::http::Endpoint::plain(addr);
        if let Ok(mut c) = Conn::connect(&ep).await {
            if let Ok(r) = c.send(Method::GET, path, &[], Bytes::new()).await {
                if r.status.as_u16() == 200 {
                    break t0.elapsed();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let rss = crate::procfs::status_kib(pid, "VmRSS")? as f64 / 1024.0;
    let mut child = guard.0.take().expect("child");
    child.start_kill()?;
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .context("server did not exit after kill")??;
    Ok((ready, rss))
}

/// Writes `repos` repositories, each with one small image tagged `latest`, into `root`.
pub(crate) async fn seed(root: &str, repos: usize) -> Result<()> {
    let backend = Arc::new(FsBackend::new(root, false)?);
    let reg = Arc::new(Store::new(backend, Options::default()));
    let config = Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
    let config_digest: storage::Digest = sha256(&config).parse()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..16 {
        let (reg, config, config_digest, next) = (
            reg.clone(),
            config.clone(),
            config_digest.clone(),
            next.clone(),
        );
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= repos {
                    break;
                }
                let name: RepoName = format!("seed/repo-{i:05}").parse()?;
                let layer = Bytes::from(format!("layer of repository {i}"));
                let layer_digest: storage::Digest = sha256(&layer).parse()?;
                for (data, d) in [(config.clone(), &config_digest), (layer, &layer_digest)] {
                    let len = data.len() as u64;
                    let stream = futures::stream::once(async move { Ok(data) });
                    reg.blob_put(&name, d, Some(len), Box::pin(stream)).await?;
                }
                let m = oci::image_manifest(
                    (&config_digest.to_string(), config.len()),
                    &[(
                        layer_digest.to_string(),
                        format!("layer of repository {i}").len(),
                    )],
                );
                let tag: Reference = "latest".parse()?;
                reg.manifest_put(&name, &tag, Some(oci::OCI_MANIFEST), m, &[])
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}
