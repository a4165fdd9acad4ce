//! Single-flight blob fills. The first request for an uncached blob starts one fill: a task that
//! streams the upstream's bytes into a spool file on local disk while hashing them, verifies the
//! digest, then hands the spool file to the store ([`Store::blob_put_verified`]), which commits it
//! through the registry's atomic upload path: on the filesystem backend, with the spool folder in
//! its scratch folder (the default), by renaming the file into staging, with no second read,
//! hash or copy of the bytes; elsewhere by streaming it through the verified upload. One client
//! (normally the one whose request started the fill) gets the upstream's chunks themselves as
//! they arrive, through a channel bounded in bytes: no copy and no read of the spool file. When
//! that client falls behind by more than the bound for longer than a short total wait, or goes
//! away, the fill stops feeding it and it reads on from the spool file. Every other client reads
//! the spool file as it grows (memory stays bounded: a read buffer per client), through one
//! handle the fill keeps open, so a reader that starts after the file was moved into storage
//! reads the same bytes. The last byte is
//! released only once the digest is verified, so no client ever receives a complete body with
//! the wrong content. The fill runs in its own task, so
//! clients that disconnect do not stop it; a fill that fails leaves nothing in storage and the
//! next request starts a new one. A process killed mid-fill leaves at most its spool folder
//! (removed by the next start, see `spool_folder`) or a staged upload no client can reach
//! (purged like any other): nothing partial is ever visible.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http::{header, Method};
use std::io::Write;
use storage::hash::Hasher;
use storage::{ByteStream, Digest, RepoName, Store};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::client::Upstream;
use crate::error::{ProxyError, Result};

/// Bytes a client reads from the spool file at once, at most (its memory while it streams).
const READ_CHUNK: usize = 1024 * 1024;

/// Bytes of upstream chunks already received that the fill collects before it hashes and
/// writes them to the spool in one blocking call (fewer thread hand-offs and reader wake-ups;
/// it never waits for more bytes to fill a batch).
const WRITE_BATCH: usize = 1024 * 1024;

/// Bytes of upstream chunks the fill may have handed to its fed client and not yet taken back
/// (the fed client's memory, at most).
const FEED_BYTES: usize = 8 * 1024 * 1024;

/// Chunks in the fed client's channel, at most.
const FEED_CHUNKS: usize = 1024;

/// How long in all a fill waits for its fed client to take chunks before it stops feeding it
/// (that client then reads on from the spool file).
const FEED_WAIT: Duration = Duration::from_millis(500);

/// A chunk for the fed client, holding its share of [`FEED_BYTES`].
pub(crate) type FeedChunk = (Bytes, OwnedSemaphorePermit);

/// The fill's side of the channel to its fed client.
struct FeedTx {
    tx: mpsc::Sender<FeedChunk>,
    room: Arc<Semaphore>,
    waited: Duration,
}

/// Where a fill stands; watched by the clients reading it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FillState {
    /// The blob's size, once the upstream's headers arrived.
    pub(crate) size: Option<u64>,
    /// Bytes in the spool file.
    pub(crate) written: u64,
    /// All bytes arrived and hash to the digest.
    pub(crate) verified: bool,
    /// The blob was already in storage: read it from there.
    pub(crate) cached: bool,
    /// The fill failed.
    pub(crate) failed: Option<ProxyError>,
}

/// One fill in progress.
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) state: watch::Receiver<FillState>,
    /// The spool file, open for reading: readers `pread` through it, whether the file is still
    /// in the spool folder or already moved into storage (or removed); closed with the last
    /// reader.
    file: Arc<std::fs::File>,
    /// The upstream's chunks as they arrive, for the first client that takes them.
    feed: Mutex<Option<mpsc::Receiver<FeedChunk>>>,
}

impl Fill {
    /// The channel of the upstream's chunks, to the first caller only.
    pub(crate) fn take_feed(&self) -> Option<mpsc::Receiver<FeedChunk>> {
        self.feed.lock().expect("feed lock").take()
    }
}

/// The fills in progress in this process, by cache repository and digest.
#[derive(Debug, Default)]
pub(crate) struct Fills {
    map: Mutex<HashMap<(RepoName, Digest), Arc<Fill>>>,
}

/// Everything a fill task needs.
pub(crate) struct FillJob {
    pub(crate) registry: Arc<Store>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) remote: String,
    pub(crate) local: RepoName,
    pub(crate) digest: Digest,
    pub(crate) spool: PathBuf,
}

impl Fills {
    /// The fill of `job`'s blob in progress, or a new one started for it.
    pub(crate) fn join_or_start(self: &Arc<Self>, job: FillJob) -> io::Result<Arc<Fill>> {
        let key = (job.local.clone(), job.digest.clone());
        let mut map = self.map.lock().expect("fills lock");
        if let Some(f) = map.get(&key) {
            return Ok(f.clone());
        }
        // Mode 0666 less the umask, as the storage's own files get: the file may become a blob.
        let file = tempfile::Builder::new()
            .prefix("fill-")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(&job.spool)?;
        let (file, path) = file.into_parts();
        let read = Arc::new(file.try_clone()?);
        let (tx, rx) = watch::channel(FillState::default());
        let (feed_tx, feed_rx) = mpsc::channel(FEED_CHUNKS);
        let feed = FeedTx {
            tx: feed_tx,
            room: Arc::new(Semaphore::new(FEED_BYTES)),
            waited: Duration::ZERO,
        };
        let fill = Arc::new(Fill {
            state: rx,
            file: read,
            feed: Mutex::new(Some(feed_rx)),
        });
        map.insert(key.clone(), fill.clone());
        let fills = self.clone();
        let keep = fill.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (upstream, local, digest) =
                (job.upstream.clone(), job.local.clone(), job.digest.clone());
            let res = run(job, file, path, &tx, feed).await;
            match &res {
                Ok(Some(size)) => {
                    upstream.metrics.fills.fetch_add(1, Relaxed);
                    tracing::info!(
                        upstream = upstream.name(),
                        repository = %local,
                        %digest,
                        size,
                        seconds = started.elapsed().as_secs_f64(),
                        "proxy fill: blob stored"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    upstream.metrics.errors.fetch_add(1, Relaxed);
                    tracing::warn!(
                        upstream = upstream.name(),
                        repository = %local,
                        %digest,
                        error = %e,
                        "proxy fill failed; nothing stored"
                    );
                    tx.send_modify(|s| s.failed = Some(e.clone()));
                }
            }
            fills.map.lock().expect("fills lock").remove(&key);
            drop(keep);
        });
        Ok(fill)
    }
}

/// Runs a fill; `Ok(None)` when the blob turned out to be stored already.
async fn run(
    job: FillJob,
    file: std::fs::File,
    path: tempfile::TempPath,
    tx: &watch::Sender<FillState>,
    feed: FeedTx,
) -> Result<Option<u64>> {
    let up = &job.upstream;
    let _permit = up.fills.acquire().await.expect("semaphore open");
    if let Ok(size) = job.registry.blob_size(&job.local, &job.digest).await {
        tx.send_modify(|s| {
            s.size = Some(size);
            s.cached = true;
        });
        return Ok(None);
    }
    let resp = up
        .send(
            Method::GET,
            &job.remote,
            &format!("blobs/{}", job.digest),
            &[],
        )
        .await?;
    check_response(&job, &resp)?;
    let size = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    tx.send_modify(|s| s.size = size);
    let hasher = Hasher::new(job.digest.algorithm());
    let (written, hasher) = spool(&job, resp, size, file, tx, hasher, feed).await?;
    let actual = hasher.finish();
    if actual != job.digest {
        return Err(ProxyError::DigestMismatch {
            upstream: up.name().to_owned(),
            expected: job.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    tx.send_modify(|s| {
        s.size = Some(written);
        s.verified = true;
    });
    // The spool file holds exactly the `written` bytes just hashed to the digest, and nothing
    // writes to it any more (the writer's handle is closed; readers only `pread`): the store's
    // trust contract. It
    // commits atomically; a crash here leaves only a staged upload that garbage collection
    // purges. Dropping `path` afterwards removes the file if the store copied it instead.
    job.registry.cache_mark_repo(&job.local).await?;
    job.registry
        .blob_put_verified(&job.local, &job.digest, &path, written)
        .await?;
    drop(path);
    Ok(Some(written))
}

/// Refuses an upstream answer that is not the blob: a status other than 200, or a
/// `Docker-Content-Digest` other than the one asked for.
fn check_response(job: &FillJob, resp: &reqwest::Response) -> Result<()> {
    let up = &job.upstream;
    let what = || format!("{}@{}", job.remote, job.digest);
    up.expect_ok(resp.status(), "blob GET", what, true)?;
    if let Some(d) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        if d != job.digest.to_string() {
            return Err(ProxyError::DigestMismatch {
                upstream: up.name().to_owned(),
                expected: job.digest.to_string(),
                actual: d.to_owned(),
            });
        }
    }
    Ok(())
}

/// Hands `chunk` to the fed client, if it is still fed: stops feeding it (drops the channel)
/// when it went away, or when the chunk finds no room within what is left of [`FEED_WAIT`].
async fn feed(feed: &mut Option<FeedTx>, chunk: &Bytes) {
    let Some(f) = feed else { return };
    if f.tx.is_closed() {
        *feed = None;
        return;
    }
    let n = chunk.len().min(FEED_BYTES) as u32;
    let permit = match f.room.clone().try_acquire_many_owned(n) {
        Ok(p) => Some(p),
        Err(_) => {
            let started = Instant::now();
            let left = FEED_WAIT.saturating_sub(f.waited);
            let p = tokio::time::timeout(left, f.room.clone().acquire_many_owned(n)).await;
            f.waited += started.elapsed();
            p.ok().and_then(|p| p.ok())
        }
    };
    let sent = permit.is_some_and(|p| f.tx.try_send((chunk.clone(), p)).is_ok());
    if !sent {
        *feed = None;
    }
}

/// Streams the body into the spool file and `hasher`, in batches of the chunks already
/// received (handed to the fed client, written with one blocking call each, then announced to
/// the readers); returns the bytes written, which must match `size` when the upstream sent one,
/// and the hasher.
async fn spool(
    job: &FillJob,
    resp: reqwest::Response,
    size: Option<u64>,
    file: std::fs::File,
    tx: &watch::Sender<FillState>,
    hasher: Hasher,
    feed_tx: FeedTx,
) -> Result<(u64, Hasher)> {
    let up = &job.upstream;
    let io_err = |e: io::Error| ProxyError::from(storage::Error::backend("proxy spool file", e));
    let mut body = resp.bytes_stream();
    let mut written = 0u64;
    let stall = Duration::from_secs(up.config.stall_timeout.max(1));
    let mut sink = Some((file, hasher));
    let mut fed = Some(feed_tx);
    let mut ended = false;
    while !ended {
        let first = match tokio::time::timeout(stall, body.next()).await {
            Err(_) => {
                return Err(up.unavailable(format!("blob body stalled for {} s", stall.as_secs())))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(up.unavailable(format!("blob body: {e}"))),
            Ok(Some(Ok(c))) => c,
        };
        let mut batch = vec![first];
        let mut len = batch[0].len();
        // Whatever else already arrived, without waiting.
        while len < WRITE_BATCH {
            match body.next().now_or_never() {
                Some(Some(Ok(c))) => {
                    len += c.len();
                    batch.push(c);
                }
                Some(Some(Err(e))) => return Err(up.unavailable(format!("blob body: {e}"))),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        written += len as u64;
        if size.is_some_and(|s| written > s) {
            return Err(up.invalid("blob body longer than its Content-Length"));
        }
        for c in &batch {
            feed(&mut fed, c).await;
        }
        let (mut file, mut hasher) = sink.take().expect("sink returned");
        let res = tokio::task::spawn_blocking(move || {
            for c in &batch {
                hasher.update(c);
                file.write_all(c)?;
            }
            io::Result::Ok((file, hasher))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(io_err)?;
        sink = Some(res);
        up.metrics.bytes.fetch_add(len as u64, Relaxed);
        tx.send_modify(|s| s.written = written);
    }
    if let Some(s) = size.filter(|s| *s != written) {
        return Err(up.invalid(format!("blob body ended after {written} of {s} bytes")));
    }
    let (file, hasher) = sink.expect("sink returned");
    drop(file);
    Ok((written, hasher))
}

/// Waits until the upstream's response headers arrived (the size is known), the blob turned out
/// to be stored already, or the fill failed.
pub(crate) async fn wait_started(fill: &Fill) -> FillState {
    let mut rx = fill.state.clone();
    loop {
        {
            let s = rx.borrow_and_update();
            if s.failed.is_some() || s.cached || s.size.is_some() || s.verified {
                return s.clone();
            }
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone();
        }
    }
}

/// Waits until a fill is over: `Ok` once the blob is stored.
pub(crate) async fn wait_done(fill: &Fill) -> Result<()> {
    let mut rx = fill.state.clone();
    loop {
        if let Some(e) = &rx.borrow_and_update().failed {
            return Err(e.clone());
        }
        if rx.changed().await.is_err() {
            return match &rx.borrow().failed {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            };
        }
    }
}

/// One client's reader of a fill's spool file.
struct Reader {
    fill: Arc<Fill>,
    /// The upstream's chunks, while this reader is the fed client (the spool file after).
    feed: Option<mpsc::Receiver<FeedChunk>>,
    rx: watch::Receiver<FillState>,
    /// Next byte to send, and the end of the requested range (exclusive).
    offset: u64,
    end: u64,
    /// The blob's size: its last byte waits for the digest check.
    size: u64,
    closed: bool,
    done: bool,
}

impl Reader {
    /// Bytes readable now (the last byte of the blob only once verified), or the fill's error.
    fn available(&mut self) -> std::result::Result<u64, ProxyError> {
        let s = self.rx.borrow_and_update();
        if let Some(e) = &s.failed {
            return Err(e.clone());
        }
        Ok(if s.verified {
            s.written
        } else {
            s.written.min(self.size.saturating_sub(1))
        })
    }

    /// Reads up to `avail` (at most [`READ_CHUNK`]) from the spool file in one blocking call,
    /// through the fill's open handle.
    async fn read(&mut self, avail: u64) -> io::Result<Bytes> {
        let n = ((avail.min(self.end) - self.offset) as usize).min(READ_CHUNK);
        let (file, offset) = (self.fill.file.clone(), self.offset);
        let buf = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; n];
            file.read_exact_at(&mut buf, offset)?;
            io::Result::Ok(buf)
        })
        .await
        .map_err(io::Error::other)??;
        self.offset += n as u64;
        Ok(Bytes::from(buf))
    }

    /// The next chunk: `None` at the end of the range, an error when the fill failed.
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        // Fed: every byte but the last straight from the upstream's chunks; the last comes from
        // the spool file once the digest is verified. The channel ends early when the fill
        // failed or stopped feeding this reader, which then reads on from the spool file.
        while let Some(feed) = &mut self.feed {
            let before_last = self.size.saturating_sub(1);
            if self.done || self.offset >= before_last {
                self.feed = None;
                break;
            }
            let Some((mut chunk, _room)) = feed.recv().await else {
                self.feed = None;
                break;
            };
            let n = (before_last - self.offset).min(chunk.len() as u64);
            chunk.truncate(n as usize);
            self.offset += n;
            if n > 0 {
                return Some(Ok(chunk));
            }
        }
        loop {
            if self.done || self.offset >= self.end {
                return None;
            }
            let avail = match self.available() {
                Ok(a) => a,
                Err(e) => return Some(Err(io::Error::other(e.to_string()))),
            };
            if self.offset < avail {
                return Some(self.read(avail).await);
            }
            if self.closed {
                return Some(Err(io::Error::other(
                    "the fill ended before the blob was complete",
                )));
            }
            if self.rx.changed().await.is_err() {
                self.closed = true;
            }
        }
    }
}

/// The bytes `range` of a fill of a blob of `size` bytes as they arrive, for one client: from
/// `feed` (the fill's channel of upstream chunks, when this client took it) if the range is the
/// whole blob, else from the spool file. Ends with an error (the client sees a cut body) if the
/// fill fails; the blob's last byte follows only the digest check.
pub(crate) fn stream(
    fill: Arc<Fill>,
    feed: Option<mpsc::Receiver<FeedChunk>>,
    range: std::ops::Range<u64>,
    size: u64,
) -> ByteStream {
    let whole = range.start == 0 && range.end >= size && size > 0;
    let r = Reader {
        rx: fill.state.clone(),
        feed: feed.filter(|_| whole),
        fill,
        offset: range.start,
        end: range.end.min(size),
        size,
        closed: false,
        done: false,
    };
    futures::stream::unfold(r, |mut r| async move {
        let item = r.next().await?;
        if item.is_err() {
            r.done = true;
        }
        Some((item, r))
    })
    .boxed()
}

/// A spool folder of this process's own under `base`, after removing those that processes
/// that are gone left behind (a killed registry leaves its partial fills there; they were never
/// visible). The folder is named after the host and the process id, because `base` may be in
/// storage shared by replicas on several hosts (the default: the filesystem backend's scratch
/// folder): a folder of this host is removed when its process is gone (or is this one, from an
/// earlier life of the same pid), a folder of another host only when nothing in it changed for
/// [`SPOOL_ABANDONED`] (that host's replica is gone, or it would have removed it at its start).
pub(crate) fn spool_folder(base: &std::path::Path) -> std::io::Result<PathBuf> {
    const PREFIX: &str = "registry-proxy-fills-";
    std::fs::create_dir_all(base)?;
    let host = host_name();
    let own_pid = std::process::id();
    for entry in std::fs::read_dir(base)?.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        // `<host>-<pid>`, or `<pid>` as named before hosts were part of the name.
        let (h, pid) = rest.rsplit_once('-').unwrap_or((host.as_str(), rest));
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let remove = if h == host {
            pid == own_pid || !std::path::Path::new(&format!("/proc/{pid}")).exists()
        } else {
            newest_change(&entry.path())
                .is_some_and(|t| t.elapsed().unwrap_or_default() > SPOOL_ABANDONED)
        };
        if remove {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let own = base.join(format!("{PREFIX}{host}-{own_pid}"));
    std::fs::create_dir_all(&own)?;
    Ok(own)
}

/// How long a spool folder of another host stays untouched before it counts as abandoned.
const SPOOL_ABANDONED: Duration = Duration::from_secs(24 * 3600);

/// This host's name as a file name component (`localhost` when unknown).
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let unsafe_char = |c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-');
    match raw.trim() {
        "" => "localhost".to_owned(),
        name => name.replace(unsafe_char, "_"),
    }
}

/// The latest modification time of the folder `dir` and the files in it.
fn newest_change(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Some(newest)
}
