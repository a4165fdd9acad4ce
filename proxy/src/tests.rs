//! The proxy against an upstream served in-process by axum on loopback: the token flow, single
//! fills, digest checks, time limits and tag freshness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use storage::fs::FsBackend;
use storage::Options;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use storage::hash::digest_of;
use storage::{manifest as media, Digest, Reference, RepoName, Store};

use super::*;

#[derive(Default)]
struct Up {
    blobs: Mutex<HashMap<String, Bytes>>,
    manifests: Mutex<HashMap<String, (String, Bytes)>>,
    blob_gets: AtomicUsize,
    manifest_gets: AtomicUsize,
    manifest_heads: AtomicUsize,
    token_gets: AtomicUsize,
    corrupt: AtomicBool,
    hang: AtomicBool,
    down: AtomicBool,
    port: AtomicUsize,
}

async fn upstream(State(up): State<Arc<Up>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if up.hang.load(SeqCst) {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if up.down.load(SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if path == "/token" {
        up.token_gets.fetch_add(1, SeqCst);
        return axum::Json(serde_json::json!({"token": "t0k", "expires_in": 300})).into_response();
    }
    let authed = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v == "Bearer t0k");
    if !authed {
        let realm = format!("http://127.0.0.1:{}/token", up.port.load(SeqCst));
        return (
            StatusCode::UNAUTHORIZED,
            [(
                "www-authenticate",
                format!("Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:x:pull\""),
            )],
        )
            .into_response();
    }
    let head = req.method() == Method::HEAD;
    if let Some((_, d)) = path.split_once("/blobs/") {
        up.blob_gets.fetch_add(1, SeqCst);
        let Some(mut b) = up.blobs.lock().unwrap().get(d).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if up.corrupt.load(SeqCst) {
            let mut v = b.to_vec();
            v[0] ^= 1;
            b = Bytes::from(v);
        }
        // Send in small pieces, slowly, so concurrent clients overlap with the fill.
        let chunks: Vec<Bytes> = b.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
        let s = futures::stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, std::io::Error>(c)
        });
        use futures::StreamExt;
        let mut h = HeaderMap::new();
        h.insert("content-length", b.len().into());
        return (h, Body::from_stream(s)).into_response();
    }
    if let Some((_, r)) = path.split_once("/manifests/") {
        let Some((mt, b)) = up.manifests.lock().unwrap().get(r).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let d = digest_of(storage::Algorithm::Sha256, &b).to_string();
        let mut h = HeaderMap::new();
        h.insert("content-type", mt.parse().unwrap());
        h.insert("docker-content-digest", d.parse().unwrap());
        h.insert("content-length", b.len().into());
        if head {
            up.manifest_heads.fetch_add(1, SeqCst);
            return (h, Body::empty()).into_response();
        }
        up.manifest_gets.fetch_add(1, SeqCst);
        return (h, b).into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

struct Env {
    up: Arc<Up>,
    proxy: Proxy,
    registry: Arc<Store>,
    _dir: tempfile::TempDir,
}

async fn env(freshness: u64) -> Env {
    let up = Arc::new(Up::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    up.port.store(port as usize, SeqCst);
    let app = axum::Router::new()
        .fallback(upstream)
        .with_state(up.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Store::new(
        Arc::new(FsBackend::new(dir.path().join("data"), false).unwrap()),
        Options::default(),
    ));
    let mut u = UpstreamConfig::new("upstream.test:5000", format!("http://127.0.0.1:{port}"));
    u.first_byte_timeout = 1;
    u.tag_freshness = freshness;
    let cfg = ProxyConfig {
        upstreams: vec![u],
        spool_dir: Some(dir.path().join("spool")),
        max_cache_bytes: None,
    };
    let proxy = Proxy::new(&cfg, registry.clone()).unwrap();
    Env {
        up,
        proxy,
        registry,
        _dir: dir,
    }
}

fn add_blob(up: &Up, data: Vec<u8>) -> Digest {
    let b = Bytes::from(data);
    let d = digest_of(storage::Algorithm::Sha256, &b);
    up.blobs.lock().unwrap().insert(d.to_string(), b);
    d
}

/// A test environment with `data` as a blob in the upstream, and the route of `a/b`.
async fn env_with_blob(data: Vec<u8>) -> (Env, Digest, Route) {
    let e = env(300).await;
    let d = add_blob(&e.up, data);
    let route = e.route();
    (e, d, route)
}

/// An 8 MiB blob of a pattern that repeats every `period` bytes, in the upstream.
fn big_blob(up: &Up, period: u32) -> (Vec<u8>, Digest) {
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i % period) as u8)
        .collect();
    let d = add_blob(up, data.clone());
    (data, d)
}

fn add_image(up: &Up, tag: &str, layer: &Digest) -> Digest {
    let config = add_blob(up, b"{}".to_vec());
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 1}],
    });
    let b = Bytes::from(serde_json::to_vec(&m).unwrap());
    let d = digest_of(storage::Algorithm::Sha256, &b);
    let mut ms = up.manifests.lock().unwrap();
    ms.insert(tag.to_owned(), (media::OCI_MANIFEST.to_owned(), b.clone()));
    ms.insert(d.to_string(), (media::OCI_MANIFEST.to_owned(), b));
    d
}

/// The bytes `range` (all of them when `None`) of the fill of `d` in progress.
async fn read_fill(
    p: &Proxy,
    route: &Route,
    d: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let BlobSource::Filling { size, fill } = p.blob(route, d).await.unwrap() else {
        panic!("expected a fill in progress")
    };
    let got: Vec<Bytes> = fill
        .stream(range.unwrap_or(0..size), size)
        .try_collect()
        .await
        .unwrap();
    got.concat()
}

fn ask<'a>(route: &'a Route, reference: &'a Reference) -> Ask<'a> {
    Ask {
        route,
        reference,
        accept: None,
    }
}

impl Env {
    /// The route of `a/b` asked for with `?ns=` of the test's upstream.
    fn route(&self) -> Route {
        self.proxy
            .route(&name("a/b"), Some("upstream.test:5000"))
            .unwrap()
    }
}

fn name(s: &str) -> RepoName {
    s.parse().unwrap()
}

#[tokio::test]
async fn routes_by_ns_and_by_prefix_only_for_configured_upstreams() {
    let e = env(300).await;
    let r = e
        .proxy
        .route(&name("library/alpine"), Some("upstream.test:5000"))
        .unwrap();
    assert_eq!(
        (r.remote.as_str(), r.local.as_str()),
        ("library/alpine", "upstream.test-5000/library/alpine")
    );
    let r = e
        .proxy
        .route(&name("upstream.test-5000/a/b"), None)
        .unwrap();
    assert_eq!(
        (r.remote.as_str(), r.local.as_str()),
        ("a/b", "upstream.test-5000/a/b")
    );
    assert!(e.proxy.route(&name("library/alpine"), None).is_none());
    assert!(e
        .proxy
        .route(&name("library/alpine"), Some("quay.io"))
        .is_none());
    assert!(e.proxy.route(&name("upstream.test-5000"), None).is_none());

    let mut hub = UpstreamConfig::new("docker.io", "https://registry-1.docker.io");
    hub.first_byte_timeout = 1;
    let cfg = ProxyConfig {
        upstreams: vec![hub],
        spool_dir: Some(e._dir.path().join("s2")),
        max_cache_bytes: None,
    };
    let p = Proxy::new(&cfg, e.registry.clone()).unwrap();
    let r = p.route(&name("alpine"), Some("docker.io")).unwrap();
    assert_eq!(
        (r.remote.as_str(), r.local.as_str()),
        ("library/alpine", "docker.io/library/alpine")
    );
    let r = p.route(&name("docker.io/alpine"), None).unwrap();
    assert_eq!(r.local.as_str(), "docker.io/library/alpine");
}

#[tokio::test]
async fn a_catch_all_upstream_serves_every_other_name_and_is_filled_from() {
    let e = env(300).await;
    let port = e.up.port.load(SeqCst);
    let mut all = UpstreamConfig::new("docker.io", format!("http://127.0.0.1:{port}"));
    all.catch_all = true;
    all.first_byte_timeout = 1;
    let other = UpstreamConfig::new("quay.io", "http://127.0.0.1:1");
    let mut cfg = ProxyConfig {
        upstreams: vec![all, other],
        spool_dir: Some(e._dir.path().join("s3")),
        max_cache_bytes: None,
    };
    let p = Proxy::new(&cfg, e.registry.clone()).unwrap();
    assert_eq!(p.catch_all().unwrap().name(), "docker.io");
    let r = p.route(&name("library/alpine"), None).unwrap();
    assert_eq!(
        (r.upstream.name(), r.remote.as_str(), r.local.as_str()),
        ("docker.io", "library/alpine", "library/alpine")
    );
    let r = p.route(&name("alpine"), None).unwrap();
    assert_eq!(
        (r.remote.as_str(), r.local.as_str()),
        ("library/alpine", "alpine")
    );
    // The prefix and ns forms still name their upstream, the catch-all one included.
    let r = p.route(&name("quay.io/a/b"), None).unwrap();
    assert_eq!(
        (r.upstream.name(), r.local.as_str()),
        ("quay.io", "quay.io/a/b")
    );
    let r = p.route(&name("library/alpine"), Some("docker.io")).unwrap();
    assert_eq!(r.local.as_str(), "docker.io/library/alpine");
    assert!(p.route(&name("library/alpine"), Some("ghcr.io")).is_none());

    // A blob of a catch-all name is filled from the catch-all upstream.
    let d = add_blob(&e.up, vec![5u8; 100_000]);
    let r = p.route(&name("a/b"), None).unwrap();
    assert_eq!(read_fill(&p, &r, &d, None).await, vec![5u8; 100_000]);

    cfg.upstreams[1].catch_all = true;
    let err = Proxy::new(&cfg, e.registry.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("only one upstream may set catch_all"), "{err}");
}

#[tokio::test]
async fn sixteen_clients_one_upstream_get_right_bytes() {
    let e = env(300).await;
    let (data, d) = big_blob(&e.up, 251);
    let route = e.route();
    let pulls = (0..16).map(|_| async {
        match e.proxy.blob(&route, &d).await.unwrap() {
            BlobSource::Filling { size, fill } => {
                let got: Vec<Bytes> = fill.stream(0..size, size).try_collect().await.unwrap();
                assert_eq!(size, data.len() as u64);
                got.concat()
            }
            BlobSource::Stored => {
                let s = e.registry.blob_read(&d, None).await.unwrap();
                let got: Vec<Bytes> = s.try_collect().await.unwrap();
                got.concat()
            }
        }
    });
    for got in futures::future::join_all(pulls).await {
        assert!(got == data, "a client got other bytes");
    }
    assert_eq!(e.up.blob_gets.load(SeqCst), 1, "one upstream GET");
    assert_eq!(e.up.token_gets.load(SeqCst), 1, "one token, cached");
    // Stored and served from storage afterwards.
    for _ in 0..100 {
        if e.registry.blob_size(&route.local, &d).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        e.proxy.blob(&route, &d).await.unwrap(),
        BlobSource::Stored
    ));
    assert_eq!(e.up.blob_gets.load(SeqCst), 1);
}

#[tokio::test]
async fn a_range_is_served_from_the_fill_without_waiting_for_all_of_it() {
    let e = env(300).await;
    // 8 MiB in 64 KiB pieces 2 ms apart: the fill takes about 0.25 s.
    let (data, d) = big_blob(&e.up, 253);
    let route = e.route();
    let head = read_fill(&e.proxy, &route, &d, Some(1000..70_000)).await;
    assert_eq!(head, data[1000..70_000]);
    let filling = e.registry.blob_size(&route.local, &d).await.is_err();
    assert!(filling, "the first range came before the fill was stored");
    let end = data.len() as u64;
    let tail = read_fill(&e.proxy, &route, &d, Some(end - 10..end)).await;
    assert_eq!(tail, data[data.len() - 10..]);
    assert_eq!(e.up.blob_gets.load(SeqCst), 1, "one fill for both ranges");
}

#[tokio::test]
async fn corrupt_upstream_bytes_are_never_stored_and_the_next_pull_retries() {
    let (e, d, route) = env_with_blob(vec![7u8; 300_000]).await;
    e.up.corrupt.store(true, SeqCst);
    match e.proxy.blob(&route, &d).await {
        Ok(BlobSource::Filling { size, fill }) => {
            let r: std::result::Result<Vec<Bytes>, _> =
                fill.stream(0..size, size).try_collect().await;
            let err = r.unwrap_err().to_string();
            assert!(err.contains("digest"), "{err}");
        }
        Ok(BlobSource::Stored) => panic!("stored"),
        Err(err) => assert!(matches!(err, ProxyError::DigestMismatch { .. }), "{err}"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(e.registry.blob_size(&route.local, &d).await.is_err());
    assert!(
        e.registry.blob_read(&d, None).await.is_err(),
        "nothing stored"
    );
    e.up.corrupt.store(false, SeqCst);
    let got = read_fill(&e.proxy, &route, &d, None).await;
    assert_eq!(got, vec![7u8; 300_000], "a new fill");
    assert_eq!(e.up.blob_gets.load(SeqCst), 2);
}

#[tokio::test]
async fn a_hanging_upstream_is_answered_within_the_first_byte_time() {
    let (e, d, route) = env_with_blob(vec![1u8; 10]).await;
    e.up.hang.store(true, SeqCst);
    let t = Instant::now();
    let err = e.proxy.blob(&route, &d).await.err().expect("an error");
    assert!(matches!(err, ProxyError::Timeout { .. }), "{err}");
    let tag: Reference = "latest".parse().unwrap();
    let err = e.proxy.manifest(ask(&route, &tag)).await.unwrap_err();
    assert!(matches!(err, ProxyError::Timeout { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn tags_are_fresh_then_revalidated_and_served_stale_when_the_upstream_is_down() {
    let e = env(1).await;
    let layer = add_blob(&e.up, b"x".to_vec());
    let d1 = add_image(&e.up, "v1", &layer);
    let route = e.route();
    let tag: Reference = "v1".parse().unwrap();
    assert_eq!(e.proxy.manifest(ask(&route, &tag)).await.unwrap(), d1);
    assert_eq!(e.proxy.manifest(ask(&route, &tag)).await.unwrap(), d1);
    assert_eq!(e.up.manifest_gets.load(SeqCst), 1);
    assert_eq!(
        e.up.manifest_heads.load(SeqCst),
        0,
        "fresh: no upstream request"
    );
    // The tag moves upstream: not seen while fresh, seen after.
    let other = add_blob(&e.up, b"y".to_vec());
    let d2 = add_image(&e.up, "v1", &other);
    assert_eq!(e.proxy.manifest(ask(&route, &tag)).await.unwrap(), d1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(e.proxy.manifest(ask(&route, &tag)).await.unwrap(), d2);
    assert_eq!(e.up.manifest_heads.load(SeqCst), 1);
    // By digest: stored, and served without the upstream.
    let (_, body) = e
        .registry
        .manifest_get(&route.local, &Reference::Digest(d2.clone()))
        .await
        .unwrap();
    assert_eq!(digest_of(storage::Algorithm::Sha256, &body), d2);
    e.up.down.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        e.proxy.manifest(ask(&route, &tag)).await.unwrap(),
        d2,
        "stale"
    );
    assert_eq!(route.upstream.metrics.stale.load(Relaxed), 1);
    assert_eq!(
        e.proxy
            .manifest(ask(&route, &Reference::Digest(d1.clone())))
            .await
            .unwrap(),
        d1
    );
    let err = e
        .proxy
        .manifest(ask(&route, &"v9".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(err.upstream_down(), "{err}");
    let mut m = String::new();
    e.proxy.render_metrics(&mut m);
    assert!(
        m.contains("registry_proxy_stale_total{upstream=\"upstream.test:5000\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let e = env(300).await;
    let layer = add_blob(&e.up, b"x".to_vec());
    let d = add_image(&e.up, "v1", &layer);
    // Serve other bytes under the digest.
    let bogus = e.up.manifests.lock().unwrap().get("v1").cloned().unwrap();
    let mut body = bogus.1.to_vec();
    body.push(b' ');
    e.up.manifests
        .lock()
        .unwrap()
        .insert(d.to_string(), (bogus.0, Bytes::from(body)));
    let route = e.route();
    let err = e
        .proxy
        .manifest(ask(&route, &Reference::Digest(d.clone())))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::DigestMismatch { .. }), "{err}");
    assert!(e
        .registry
        .manifest_info(&route.local, &Reference::Digest(d))
        .await
        .is_err());
}

/// Waits up to 5 s for `d` to be stored under `route.local`.
async fn stored(e: &Env, route: &Route, d: &Digest) -> bool {
    for _ in 0..250 {
        if e.registry.blob_size(&route.local, d).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_first_client_that_stalls_or_leaves_does_not_hold_up_the_fill() {
    let e = env(300).await;
    let route = e.route();
    // 12 MiB: more than the fill hands its first client ahead of what that client read.
    let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    let d = add_blob(&e.up, data.clone());
    let BlobSource::Filling { size, fill } = e.proxy.blob(&route, &d).await.unwrap() else {
        panic!("expected a fill in progress")
    };
    // The first client takes the fill's chunks and reads nothing: the fill goes on without it.
    let stalled = fill.stream(0..size, size);
    assert!(
        stored(&e, &route, &d).await,
        "stored while the first client stalled"
    );
    // It still gets every byte (the rest from the spool file).
    let got: Vec<Bytes> = stalled.try_collect().await.unwrap();
    assert!(got.concat() == data, "the stalled client got other bytes");

    // A first client that leaves after its first chunk does not cancel the fill.
    let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    let d = add_blob(&e.up, data);
    let BlobSource::Filling { size, fill } = e.proxy.blob(&route, &d).await.unwrap() else {
        panic!("expected a fill in progress")
    };
    let mut s = fill.stream(0..size, size);
    assert!(!s.try_next().await.unwrap().unwrap().is_empty());
    drop(s);
    assert!(
        stored(&e, &route, &d).await,
        "stored after the first client left"
    );
    assert_eq!(e.up.blob_gets.load(SeqCst), 2, "one upstream GET per blob");
}

#[tokio::test]
async fn by_default_fills_spool_in_the_storage_scratch_folder_and_move_into_storage() {
    use std::os::unix::fs::MetadataExt;
    let e = env(300).await;
    let port = e.up.port.load(SeqCst);
    let mut u = UpstreamConfig::new("upstream.test:5000", format!("http://127.0.0.1:{port}"));
    u.first_byte_timeout = 1;
    let cfg = ProxyConfig {
        upstreams: vec![u],
        spool_dir: None,
        max_cache_bytes: None,
    };
    let p = Proxy::new(&cfg, e.registry.clone()).unwrap();
    let scratch = e.registry.scratch_dir().unwrap();
    assert!(
        p.spool.starts_with(&scratch) && scratch.starts_with(e._dir.path().join("data")),
        "{} not in {}",
        p.spool.display(),
        scratch.display()
    );
    let route = p.route(&name("a/b"), Some("upstream.test:5000")).unwrap();
    let (data, d) = big_blob(&e.up, 251);
    // Two clients of one fill: the first takes the upstream's chunks, the second reads the
    // spool file, but only after the fill moved it into storage.
    let BlobSource::Filling { size, fill: first } = p.blob(&route, &d).await.unwrap() else {
        panic!("expected a fill in progress")
    };
    let BlobSource::Filling { fill: second, .. } = p.blob(&route, &d).await.unwrap() else {
        panic!("expected the same fill")
    };
    let got: Vec<Bytes> = first.stream(0..size, size).try_collect().await.unwrap();
    assert!(got.concat() == data, "the first client got other bytes");
    assert!(stored(&e, &route, &d).await);
    assert_eq!(e.up.blob_gets.load(SeqCst), 1, "one upstream GET");
    let late: Vec<Bytes> = second.stream(1000..size, size).try_collect().await.unwrap();
    assert!(
        late.concat() == data[1000..],
        "the late reader got other bytes"
    );
    // The spool file became the blob (one inode, moved), and nothing is left in the spool.
    let stored_file = e.registry.blob_file(&d).await.unwrap().unwrap();
    assert_eq!(stored_file.metadata().unwrap().len(), size);
    assert_eq!(std::fs::read_dir(&p.spool).unwrap().count(), 0);
    assert_eq!(stored_file.metadata().unwrap().nlink(), 1);
    // Storage lists nothing of the scratch folder.
    let keys = e.registry.backend().list("").await.unwrap();
    assert!(keys.iter().all(|m| !m.key.contains("scratch")), "{keys:?}");
}

#[test]
fn spool_folders_of_gone_processes_are_removed_and_other_hosts_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let folder = |n: &str| {
        let f = base.join(format!("registry-proxy-fills-{n}"));
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("fill-x"), b"partial").unwrap();
        f
    };
    // A pid no process has (above the kernel's pid limit), on this host and in the old naming.
    let dead = folder(&format!("{host}-4294967294"));
    let old_naming = folder("4294967294");
    let parent = folder(&format!("{host}-{}", std::os::unix::process::parent_id()));
    let other_live = folder("elsewhere-1");
    let other_gone = folder("gone-host-1");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    for f in [other_gone.join("fill-x"), other_gone.clone()] {
        std::fs::File::open(&f)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    let own = fill::spool_folder(base).unwrap();
    assert_eq!(
        own,
        base.join(format!(
            "registry-proxy-fills-{host}-{}",
            std::process::id()
        ))
    );
    assert!(own.is_dir());
    assert!(!dead.exists() && !old_naming.exists() && !other_gone.exists());
    assert!(parent.exists() && other_live.exists());
}
