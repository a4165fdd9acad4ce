//! Runs the shared backend suite (`suite/`) on every backend:
//! - `fs_*`: `FsBackend` in a temporary folder;
//! - `memory_*`: `ObjectBackend` over `object_store`'s in-memory store, with tiny parts so that
//!   every multipart path runs on small data;
//! - `s3_*`: `ObjectBackend` over a real S3-compatible server, `moto_server` (PyPI `moto[server]`),
//!   started by this binary on 127.0.0.1 (ports 17000-17999) and stopped when the binary exits.
//!   When `moto_server` is not on PATH those cases print "not run" and pass, unless
//!   `STORAGE_TEST_REQUIRE_S3=1`, which makes them fail.
//! - `gcs_*` and `azure_*`: `ObjectBackend` over Google Cloud Storage and Azure Blob Storage, or
//!   their emulators, when `STORAGE_TEST_GCS_URL` (`gs://bucket[/prefix]`) or
//!   `STORAGE_TEST_AZURE_URL` (`az://container[/prefix]`) names a bucket to use, with credentials
//!   from the usual `GOOGLE_*` / `AZURE_*` variables (`AZURE_STORAGE_USE_EMULATOR=true` for
//!   Azurite). Each case works under a fresh prefix of its own. Without the variable the cases
//!   print "not run" and pass.

mod suite;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use storage::object::ObjectBackend;
use storage::Backend;

/// Part size of the in-memory runs: odd, so part and chunk boundaries never line up by chance.
const MEMORY_PART: usize = 4099;

fn fs_backend() -> (Arc<dyn Backend>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = storage::fs::FsBackend::new(dir.path().join("root"), false).expect("fs backend");
    (Arc::new(b), dir)
}

fn memory_backend() -> Arc<dyn Backend> {
    Arc::new(ObjectBackend::memory().with_part_size(MEMORY_PART))
}

// ---- moto ----

struct Moto {
    addr: SocketAddr,
    /// The wrapper shell; moto dies when its stdin (held here) closes, i.e. when this process ends.
    _child: Mutex<Child>,
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn start_moto() -> Result<Moto, String> {
    if !on_path("moto_server") {
        return Err("moto_server is not on PATH (pip install 'moto[server]')".into());
    }
    let first = 17000 + (std::process::id() % 900) as u16;
    let port = (0..100)
        .map(|i| 17000 + (first - 17000 + i * 7) % 1000)
        .find(|p| port_free(*p))
        .ok_or("no free port in 17000-17999")?;
    // The shell starts moto, then waits for its own stdin to close (this test binary exiting,
    // however it exits) and stops moto by its PID. `timeout` bounds moto's life in any case.
    let script = format!(
        "timeout 1800 moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; \
         echo started; cat >/dev/null; kill $pid 2>/dev/null; wait $pid 2>/dev/null"
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("REQUESTS_CA_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start moto_server: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http(addr, "GET", "/", b"").is_ok_and(|(code, _)| code == 200) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("moto_server did not answer on {addr} within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Moto {
        addr,
        _child: Mutex::new(child),
    })
}

/// One plain HTTP/1.1 request to the local server; returns the status code and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {out:.200}")))?;
    Ok((code, out))
}

fn moto() -> Result<&'static Moto, String> {
    static MOTO: OnceLock<Result<Moto, String>> = OnceLock::new();
    MOTO.get_or_init(start_moto).as_ref().map_err(Clone::clone)
}

/// A fresh bucket on moto, and a backend on it (under a key prefix, as deployments use).
fn s3_backend(case: &str) -> Option<Arc<dyn Backend>> {
    let m = match moto() {
        Ok(m) => m,
        Err(why) => {
            if std::env::var("STORAGE_TEST_REQUIRE_S3").is_ok_and(|v| v == "1") {
                panic!("S3 case {case}: {why}");
            }
            println!("S3 case {case}: not run: {why}");
            return None;
        }
    };
    static N: AtomicUsize = AtomicUsize::new(0);
    let bucket = format!(
        "suite-{}-{}",
        case.replace('_', "-"),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (code, out) = http(m.addr, "PUT", &format!("/{bucket}"), b"").expect("create bucket");
    assert_eq!(code, 200, "create bucket {bucket}: {out:.300}");
    Some(Arc::new(s3_url_backend(
        m.addr,
        &format!("s3://{bucket}/some/prefix"),
    )))
}

fn s3_url_backend(addr: SocketAddr, url: &str) -> ObjectBackend {
    ObjectBackend::from_url(
        url,
        [
            ("endpoint", format!("http://{addr}")),
            ("region", "us-east-1".to_owned()),
            ("access_key_id", "testing".to_owned()),
            ("secret_access_key", "testing".to_owned()),
            ("allow_http", "true".to_owned()),
            ("virtual_hosted_style_request", "false".to_owned()),
        ],
    )
    .expect("s3 backend")
}

/// A backend under a fresh prefix of the bucket named by `var`, or None (printed as "not run").
fn cloud_backend(var: &str, what: &str, case: &str) -> Option<Arc<dyn Backend>> {
    let Ok(url) = std::env::var(var) else {
        println!("{what} case {case}: not run: {var} is not set (an emulator or credentials)");
        return None;
    };
    static N: AtomicUsize = AtomicUsize::new(0);
    let url = format!(
        "{}/suite-{}-{}-{}",
        url.trim_end_matches('/'),
        std::process::id(),
        case.replace('_', "-"),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let opts: [(&str, String); 0] = [];
    Some(Arc::new(
        ObjectBackend::from_url(&url, opts).unwrap_or_else(|e| panic!("{what} backend {url}: {e}")),
    ))
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test]
                async fn $case() {
                    let (b, _dir) = super::fs_backend();
                    super::suite::$case(b).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::suite::$case(super::memory_backend()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = super::s3_backend(stringify!($case)) {
                        super::suite::$case(b).await;
                    }
                }
            )*
        }
        mod gcs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) =
                        super::cloud_backend("STORAGE_TEST_GCS_URL", "GCS", stringify!($case))
                    {
                        super::suite::$case(b).await;
                    }
                }
            )*
        }
        mod azure {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) =
                        super::cloud_backend("STORAGE_TEST_AZURE_URL", "Azure", stringify!($case))
                    {
                        super::suite::$case(b).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    put_then_read,
    put_replaces,
    get_ranges,
    delete_is_idempotent,
    list_by_key_prefix,
    list_hides_staging_area,
    list_dir_children,
    touch_refreshes,
    stage_append_at_offsets,
    stage_append_discards_failed_bytes,
    stage_append_rewinds,
    stage_commit_publishes_len,
    stage_commit_keeps_existing,
    stage_delete_is_idempotent,
    stage_list_ids,
    registry_chunked_upload,
    registry_manifests_and_referrers,
);

/// The prefix of an `s3://bucket/prefix` URL is where the keys go, and two prefixes of one
/// bucket do not see each other.
#[tokio::test]
async fn s3_prefix_isolates() {
    let Some(_) = s3_backend("prefix_probe") else {
        return;
    };
    let m = moto().unwrap();
    let (code, _) = http(m.addr, "PUT", "/prefixes", b"").unwrap();
    assert_eq!(code, 200);
    let a = s3_url_backend(m.addr, "s3://prefixes/one");
    let b = s3_url_backend(m.addr, "s3://prefixes/two/");
    a.put("k/x", bytes::Bytes::from_static(b"a")).await.unwrap();
    b.put("k/x", bytes::Bytes::from_static(b"b")).await.unwrap();
    assert_eq!(a.get_bytes("k/x").await.unwrap().as_ref(), b"a");
    assert_eq!(b.get_bytes("k/x").await.unwrap().as_ref(), b"b");
    assert_eq!(a.list("").await.unwrap().len(), 1);
    let raw = http(m.addr, "GET", "/prefixes?list-type=2", b"").unwrap().1;
    assert!(raw.contains("<Key>one/k/x</Key>"), "{raw:.500}");
    assert!(raw.contains("<Key>two/k/x</Key>"), "{raw:.500}");
}

/// A blob above the copy limit is published by streaming it into a new upload.
#[tokio::test]
async fn memory_streamed_publish() {
    let b = ObjectBackend::memory()
        .with_part_size(MEMORY_PART)
        .with_max_copy_size(100);
    let data = suite::pattern(3 * MEMORY_PART + 5, 42);
    let chunks: Vec<std::io::Result<bytes::Bytes>> = data
        .chunks(1000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let n = b
        .stage_append(
            "big",
            0,
            futures::StreamExt::boxed(futures::stream::iter(chunks)),
        )
        .await
        .unwrap();
    b.stage_commit("big", n, "blobs/big").await.unwrap();
    assert_eq!(b.get_bytes("blobs/big").await.unwrap().as_ref(), &data[..]);
}

/// A staged upload lives in the bucket only: a second backend instance (another replica)
/// continues and completes what the first one started, through the same S3 multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_upload_continues_on_another_replica() {
    let Some(_) = s3_backend("replica_probe") else {
        return;
    };
    let m = moto().unwrap();
    let (code, _) = http(m.addr, "PUT", "/replicas", b"").unwrap();
    assert_eq!(code, 200);
    let one = s3_url_backend(m.addr, "s3://replicas/reg");
    let two = s3_url_backend(m.addr, "s3://replicas/reg");
    let part = one.min_chunk() as usize;
    assert_eq!(part, 5 * 1024 * 1024);
    let data = suite::pattern(2 * part + 300, 77);
    let body = |d: &[u8]| -> storage::ByteStream {
        let chunks: Vec<std::io::Result<bytes::Bytes>> = d
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        futures::StreamExt::boxed(futures::stream::iter(chunks))
    };
    let n = one
        .stage_append("rep", 0, body(&data[..part + 100]))
        .await
        .unwrap();
    // One whole part went into a multipart upload that S3 now holds open.
    let open = http(m.addr, "GET", "/replicas?uploads", b"").unwrap().1;
    assert_eq!(open.matches("<UploadId>").count(), 1, "{open:.800}");
    assert!(
        open.contains("<Key>reg/uploads/rep/data</Key>"),
        "{open:.800}"
    );
    let n = two
        .stage_append("rep", n, body(&data[part + 100..]))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    one.stage_commit("rep", n, "blobs/rep").await.unwrap();
    assert_eq!(
        two.get_bytes("blobs/rep").await.unwrap().as_ref(),
        &data[..]
    );
    let open = http(m.addr, "GET", "/replicas?uploads", b"").unwrap().1;
    assert_eq!(open.matches("<UploadId>").count(), 0, "{open:.800}");
    assert!(one
        .list("")
        .await
        .unwrap()
        .iter()
        .all(|m| m.key == "blobs/rep"));
    assert!(two.stage_list().await.unwrap().is_empty());
    // A cancelled upload aborts its multipart upload.
    one.stage_append("gone", 0, body(&data[..part + 1]))
        .await
        .unwrap();
    let open = http(m.addr, "GET", "/replicas?uploads", b"").unwrap().1;
    assert_eq!(open.matches("<UploadId>").count(), 1, "{open:.800}");
    two.stage_delete("gone").await.unwrap();
    let open = http(m.addr, "GET", "/replicas?uploads", b"").unwrap().1;
    assert_eq!(open.matches("<UploadId>").count(), 0, "{open:.800}");
}
