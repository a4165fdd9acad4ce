//! Runs the shared backend suite (`suite/`) on every backend:
//! - `fs_*`: `FsBackend` in a temporary folder;
//! - `memory_*`: `ObjectBackend` over `object_store`'s in-memory store, with tiny parts so that
//!   every multipart path runs on small data;
//! - `s3_*`: `ObjectBackend` over a real S3-compatible server, `moto_server` (PyPI `moto[server]`),
//!   started by this binary on 127.0.0.1 (ports 17000-17999) and stopped when the binary exits.
//!   When `moto_server` is not on PATH those cases print "not run" and pass, unless
//!   `STORAGE_TEST_REQUIRE_S3=1`, which makes them fail.
//! - `azure_*`: `ObjectBackend` over Azurite (npm `azurite`, its `azurite-blob` command), started
//!   by this binary on 127.0.0.1 (ports 23000-23999, telemetry off, data in a temporary folder),
//!   stopped when the binary exits; each case gets a container of its own and reaches it through
//!   `az://container/prefix` with the options a deployment would give (`endpoint`,
//!   `account_name`, `access_key`). Without `azurite-blob` on PATH they print "not run" and pass,
//!   unless `STORAGE_TEST_REQUIRE_AZURE=1`. When `STORAGE_TEST_AZURE_URL`
//!   (`az://container[/prefix]`) is set, they run on that container instead, under a fresh prefix
//!   per case, with credentials from the usual `AZURE_*` variables.
//! - `gcs_*`: `ObjectBackend` over Google Cloud Storage (or an emulator) when
//!   `STORAGE_TEST_GCS_URL` (`gs://bucket[/prefix]`) names a bucket to use, with credentials from
//!   the usual `GOOGLE_*` variables. Each case works under a fresh prefix of its own. Without the
//!   variable the cases print "not run" and pass.

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

// ---- local servers (moto, Azurite) ----

/// A server this binary started on 127.0.0.1.
struct Local {
    addr: SocketAddr,
    /// The wrapper shell; the server dies when its stdin (held here) closes, i.e. when this
    /// process ends.
    _child: Mutex<Child>,
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Starts `command` (a shell command line; `{port}` in it becomes a free port of
/// `first..first + 1000`) and waits until `ready` accepts the server's answer to `GET /`.
/// `cleanup` runs in the wrapper shell after the server stopped.
fn start_local(
    name: &str,
    first: u16,
    command: &str,
    cleanup: &str,
    ready: fn(u16, &str) -> bool,
) -> Result<Local, String> {
    let start = (std::process::id() % 900) as u16;
    let port = (0..100)
        .map(|i| first + (start + i * 7) % 1000)
        .find(|p| port_free(*p))
        .ok_or_else(|| format!("no free port in {first}-{}", first + 999))?;
    let command = command.replace("{port}", &port.to_string());
    // The shell starts the server, then waits for its own stdin to close (this test binary
    // exiting, however it exits) and stops the server by its PID. `timeout` bounds the server's
    // life in any case.
    let script = format!(
        "timeout 1800 {command} >/dev/null 2>&1 & pid=$!; \
         echo started; cat >/dev/null; kill $pid 2>/dev/null; wait $pid 2>/dev/null; {cleanup}"
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
        .map_err(|e| format!("start {name}: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http(addr, "GET", "/", b"").is_ok_and(|(code, out)| ready(code, &out)) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("{name} did not answer on {addr} within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Local {
        addr,
        _child: Mutex::new(child),
    })
}

/// Whether `STORAGE_TEST_REQUIRE_<what>=1`: a missing server fails the cases instead of
/// skipping them.
fn required(what: &str) -> bool {
    std::env::var(format!("STORAGE_TEST_REQUIRE_{what}")).is_ok_and(|v| v == "1")
}

/// The local server `started` for a `label` case, or `None` after saying why the case does not
/// run; panics instead when `STORAGE_TEST_REQUIRE_<what>=1`.
fn local_or_skip<'a>(
    started: Result<&'a Local, String>,
    what: &str,
    label: &str,
    case: &str,
) -> Option<&'a Local> {
    match started {
        Ok(l) => Some(l),
        Err(why) if required(what) => panic!("{label} case {case}: {why}"),
        Err(why) => {
            println!("{label} case {case}: not run: {why}");
            None
        }
    }
}

/// A bucket or container name of its own for each case run.
fn fresh_name(case: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "suite-{}-{}",
        case.replace('_', "-"),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---- moto ----

fn start_moto() -> Result<Local, String> {
    if !on_path("moto_server") {
        return Err("moto_server is not on PATH (pip install 'moto[server]')".into());
    }
    start_local(
        "moto_server",
        17000,
        "moto_server -H 127.0.0.1 -p {port}",
        "",
        |code, _| code == 200,
    )
}

/// One plain HTTP/1.1 request to the local server; returns the status code and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http_with(addr, method, path, &[], body)
}

/// [`http`] with extra request headers.
fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
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

fn moto() -> Result<&'static Local, String> {
    static MOTO: OnceLock<Result<Local, String>> = OnceLock::new();
    MOTO.get_or_init(start_moto).as_ref().map_err(Clone::clone)
}

/// A fresh bucket on moto, and a backend on it (under a key prefix, as deployments use).
fn s3_backend(case: &str) -> Option<Arc<dyn Backend>> {
    let m = local_or_skip(moto(), "S3", "S3", case)?;
    let bucket = fresh_name(case);
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

// ---- Azurite ----

/// The storage account every Azurite serves, and its key: public, the same everywhere.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's blob service (npm `azurite`) on 127.0.0.1, its data in a temporary folder that is
/// removed when it stops.
fn start_azurite() -> Result<Local, String> {
    if !on_path("azurite-blob") {
        return Err("azurite-blob is not on PATH (npm install -g azurite@3)".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("azurite-")
        .tempdir()
        .map_err(|e| format!("temporary folder for azurite: {e}"))?
        .keep();
    let Some(path) = dir.to_str().filter(|p| !p.contains('\'')) else {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("unusable temporary folder {}", dir.display()));
    };
    // --disableTelemetry: by default Azurite reports to Microsoft; nothing may leave 127.0.0.1.
    // --loose and --skipApiVersionCheck: object_store sends an API version and headers the
    // installed Azurite may not know yet.
    let res = start_local(
        "azurite-blob",
        23000,
        &format!(
            "azurite-blob --blobHost 127.0.0.1 --blobPort {{port}} --location '{path}' \
             --silent --disableTelemetry --skipApiVersionCheck --loose"
        ),
        &format!("rm -rf '{path}'"),
        |_, out| out.contains("Server: Azurite-Blob"),
    );
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    res
}

fn azurite() -> Result<&'static Local, String> {
    static AZURITE: OnceLock<Result<Local, String>> = OnceLock::new();
    AZURITE
        .get_or_init(start_azurite)
        .as_ref()
        .map_err(Clone::clone)
}

/// HMAC-SHA256 (RFC 2104), for the one request signed here.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > k.len() {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer);
    out
}

/// Creates a container on Azurite (`object_store` has no call for it): a `PUT` signed with the
/// account key (Shared Key authorization).
fn azurite_create_container(addr: SocketAddr, name: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let version = "2021-08-06";
    // Verb, eleven empty standard headers, the x-ms-* headers, the resource and its query.
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-version:{version}\n\
         /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
    );
    let key = b64.decode(AZURITE_KEY).expect("account key");
    let sig = b64.encode(hmac_sha256(&key, to_sign.as_bytes()));
    let (code, out) = http_with(
        addr,
        "PUT",
        &format!("/{AZURITE_ACCOUNT}/{name}?restype=container"),
        &[
            ("x-ms-version", version.to_owned()),
            (
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
            ),
        ],
        b"",
    )
    .expect("create container");
    assert_eq!(code, 201, "create container {name}: {out:.300}");
}

/// A backend on Azurite for an `az://container/prefix` URL, configured as a deployment would
/// configure it for an Azure-compatible endpoint.
fn azurite_url_backend(addr: SocketAddr, url: &str) -> ObjectBackend {
    ObjectBackend::from_url(
        url,
        [
            ("account_name", AZURITE_ACCOUNT.to_owned()),
            ("access_key", AZURITE_KEY.to_owned()),
            // Path-style: http://host:port/<account>/<container>/<key>, as Azurite serves it.
            ("endpoint", format!("http://{addr}/{AZURITE_ACCOUNT}")),
            ("allow_http", "true".to_owned()),
            // `use_emulator` would ignore `endpoint` (object_store then reads the address from
            // AZURITE_BLOB_STORAGE_URL only, 127.0.0.1:10000 by default): off, even when set in
            // the environment.
            ("use_emulator", "false".to_owned()),
        ],
    )
    .expect("azure backend")
}

/// A backend on Azure: under a fresh prefix of `STORAGE_TEST_AZURE_URL` when it is set (a real
/// account, credentials from `AZURE_*`), else in a fresh container on Azurite.
fn azure_backend(case: &str) -> Option<Arc<dyn Backend>> {
    if std::env::var_os("STORAGE_TEST_AZURE_URL").is_some() {
        return cloud_backend("STORAGE_TEST_AZURE_URL", "Azure", case);
    }
    let a = local_or_skip(azurite(), "AZURE", "Azure", case)?;
    let container = fresh_name(case);
    azurite_create_container(a.addr, &container);
    Some(Arc::new(azurite_url_backend(
        a.addr,
        &format!("az://{container}/some/prefix"),
    )))
}

/// A backend under a fresh prefix of the bucket named by `var`, or None (printed as "not run").
fn cloud_backend(var: &str, what: &str, case: &str) -> Option<Arc<dyn Backend>> {
    let Ok(url) = std::env::var(var) else {
        println!("{what} case {case}: not run: {var} is not set (an emulator or credentials)");
        return None;
    };
    let url = format!(
        "{}/{}-{}",
        url.trim_end_matches('/'),
        std::process::id(),
        fresh_name(case)
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
                    if let Some(b) = super::azure_backend(stringify!($case)) {
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
    stage_adopt_takes_or_leaves,
    stage_delete_is_idempotent,
    stage_list_ids,
    registry_chunked_upload,
    registry_manifests_and_referrers,
);

/// The prefix of an `s3://bucket/prefix` URL is where the keys go, and two prefixes of one
/// bucket do not see each other.
#[tokio::test]
async fn s3_prefix_isolates() {
    let Some(addr) = moto_bucket("prefix_probe", "prefixes") else {
        return;
    };
    let a = s3_url_backend(addr, "s3://prefixes/one");
    let b = s3_url_backend(addr, "s3://prefixes/two/");
    prefixes_do_not_mix(&a, &b).await;
    let raw = http(addr, "GET", "/prefixes?list-type=2", b"").unwrap().1;
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
    let Some(addr) = moto_bucket("replica_probe", "replicas") else {
        return;
    };
    let (one, two, data, n) = two_replicas(|| s3_url_backend(addr, "s3://replicas/reg"), 77).await;
    // One whole part went into a multipart upload that S3 now holds open.
    let open = http(addr, "GET", "/replicas?uploads", b"").unwrap().1;
    assert_eq!(open.matches("<UploadId>").count(), 1, "{open:.800}");
    assert!(
        open.contains("<Key>reg/uploads/rep/data</Key>"),
        "{open:.800}"
    );
    let n = stage_the_rest(&two, &data, n).await;
    commit_on_one_read_on_two(&one, &two, &data, n).await;
    let open = http(addr, "GET", "/replicas?uploads", b"").unwrap().1;
    assert_eq!(open.matches("<UploadId>").count(), 0, "{open:.800}");
    only_the_blob_is_left(&one, &two).await;
    // A cancelled upload aborts its multipart upload.
    one.stage_append(
        "gone",
        0,
        chunked_body(&data[..one.min_chunk() as usize + 1]),
    )
    .await
    .unwrap();
    let open = http(addr, "GET", "/replicas?uploads", b"").unwrap().1;
    assert_eq!(open.matches("<UploadId>").count(), 1, "{open:.800}");
    two.stage_delete("gone").await.unwrap();
    let open = http(addr, "GET", "/replicas?uploads", b"").unwrap().1;
    assert_eq!(open.matches("<UploadId>").count(), 0, "{open:.800}");
}

/// Two backends on two prefixes of one bucket or container: each reads back only what it wrote.
async fn prefixes_do_not_mix(a: &ObjectBackend, b: &ObjectBackend) {
    a.put("k/x", bytes::Bytes::from_static(b"a")).await.unwrap();
    b.put("k/x", bytes::Bytes::from_static(b"b")).await.unwrap();
    assert_eq!(a.get_bytes("k/x").await.unwrap().as_ref(), b"a");
    assert_eq!(b.get_bytes("k/x").await.unwrap().as_ref(), b"b");
    assert_eq!(a.list("").await.unwrap().len(), 1);
}

/// Two backends (replicas) made by `make`, and the first part of the upload "rep" staged on the
/// first (see [`stage_first_part`]).
async fn two_replicas(
    make: impl Fn() -> ObjectBackend,
    seed: u8,
) -> (ObjectBackend, ObjectBackend, Vec<u8>, u64) {
    let (one, two) = (make(), make());
    let (data, n) = stage_first_part(&one, seed).await;
    (one, two, data, n)
}

/// The replica tests' upload "rep" of two parts and 300 bytes (pattern `seed`): the first part
/// and 100 bytes staged on `one`. Asserts the part size is 5 MiB; returns the data and the
/// staged length.
async fn stage_first_part(one: &ObjectBackend, seed: u8) -> (Vec<u8>, u64) {
    let part = one.min_chunk() as usize;
    assert_eq!(part, 5 * 1024 * 1024);
    let data = suite::pattern(2 * part + 300, seed);
    let first = chunked_body(&data[..part + 100]);
    let n = one.stage_append("rep", 0, first).await.unwrap();
    (data, n)
}

/// Stages the rest of `data` from `n` on `two`; asserts the whole is staged.
async fn stage_the_rest(two: &ObjectBackend, data: &[u8], n: u64) -> u64 {
    let rest = chunked_body(&data[n as usize..]);
    let n = two.stage_append("rep", n, rest).await.unwrap();
    assert_eq!(n, data.len() as u64);
    n
}

/// Commits "rep" on `one` as "blobs/rep"; `two` reads it back whole.
async fn commit_on_one_read_on_two(one: &ObjectBackend, two: &ObjectBackend, data: &[u8], n: u64) {
    one.stage_commit("rep", n, "blobs/rep").await.unwrap();
    let got = two.get_bytes("blobs/rep").await.unwrap();
    assert_eq!(got.as_ref(), data);
}

/// After the commit only "blobs/rep" is stored and no upload is staged.
async fn only_the_blob_is_left(one: &ObjectBackend, two: &ObjectBackend) {
    let keys = one.list("").await.unwrap();
    assert!(keys.iter().all(|m| m.key == "blobs/rep"));
    assert!(two.stage_list().await.unwrap().is_empty());
}

/// `d` as a request body arrives: in 64 KiB chunks.
fn chunked_body(d: &[u8]) -> storage::ByteStream {
    let chunks: Vec<std::io::Result<bytes::Bytes>> = d
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    futures::StreamExt::boxed(futures::stream::iter(chunks))
}

/// Azurite's address, with a new container `name`, for the cases that run on Azurite only (they
/// make containers of their own); `None` when a real account is configured instead, or when
/// Azurite is missing and not required (`probe` names the case in the "not run" line).
fn azurite_container(probe: &str, name: &str) -> Option<SocketAddr> {
    if std::env::var_os("STORAGE_TEST_AZURE_URL").is_some() {
        return None;
    }
    azure_backend(probe)?;
    let addr = azurite().ok()?.addr;
    azurite_create_container(addr, name);
    Some(addr)
}

/// moto's address, with a new bucket `name`, for the cases that run on moto only; `None` when
/// moto is missing and not required (`probe` names the case in the "not run" line).
fn moto_bucket(probe: &str, name: &str) -> Option<SocketAddr> {
    s3_backend(probe)?;
    let addr = moto().unwrap().addr;
    let (code, _) = http(addr, "PUT", &format!("/{name}"), b"").unwrap();
    assert_eq!(code, 200);
    Some(addr)
}

/// The prefix of an `az://container/prefix` URL is where the keys go, and two prefixes of one
/// container do not see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_prefix_isolates() {
    let Some(addr) = azurite_container("prefix_probe", "prefixes") else {
        return;
    };
    let a = azurite_url_backend(addr, "az://prefixes/one");
    let b = azurite_url_backend(addr, "az://prefixes/two/");
    let whole = azurite_url_backend(addr, "az://prefixes");
    prefixes_do_not_mix(&a, &b).await;
    let all: Vec<String> = whole
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(all, ["one/k/x", "two/k/x"]);
}

/// A staged upload lives in the container only: a second backend instance (another replica)
/// continues and completes what the first one started, through the same uncommitted blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_upload_continues_on_another_replica() {
    let Some(addr) = azurite_container("replica_probe", "replicas") else {
        return;
    };
    let (one, two, data, n) =
        two_replicas(|| azurite_url_backend(addr, "az://replicas/reg"), 78).await;
    // One whole part is an uncommitted block: the data blob does not exist yet.
    assert!(one
        .head("uploads/rep/data")
        .await
        .unwrap_err()
        .is_not_found());
    let n = stage_the_rest(&two, &data, n).await;
    // Reading it back completes the blocks into the data blob, on either replica.
    let read: Vec<bytes::Bytes> =
        futures::TryStreamExt::try_collect(one.stage_read("rep", n).await.unwrap())
            .await
            .unwrap();
    assert_eq!(read.concat(), data);
    commit_on_one_read_on_two(&one, &two, &data, n).await;
    only_the_blob_is_left(&one, &two).await;
}
