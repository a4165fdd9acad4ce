//! Test harness for the registry's spec suite (`tests/spec.rs`).
//!
//! Every test starts its own server: [`TestRegistry::start`] makes a temporary storage folder
//! (or, with `CONFORMANCE_STORAGE=s3`, a bucket of its own on a `moto_server` that the test
//! process starts on first use and that stops when the process exits: see [`s3`]),
//! binds `127.0.0.1:0` and runs [`registry::server::run`] on it (on a thread with its own
//! multi-threaded runtime, as in production). Tests
//! talk to it over a real socket with `reqwest` (and [`raw_request`] where a client library would
//! normalise the request away), so the whole HTTP stack is exercised, as a real client sees it.
//!
//! # Layout
//! - [`TestRegistry`]: start, stop, restart (same storage folder, same port), URLs, a client,
//!   and push helpers (`push_blob`, `put_manifest`, `push_manifest`, `push_image`).
//! - Content helpers: [`random_bytes`], [`sha256_digest`], [`sha512_digest`], [`descriptor`].
//! - Manifest builders: [`ManifestBuilder`], [`IndexBuilder`], media type constants.
//! - Response checks: [`expect_error`], [`error_codes`], [`header`], [`header_values`],
//!   [`location`], [`next_link`], [`with_query`].
//! - [`process`]: the processes the test programs in `src/bin` start (`registry serve`,
//!   `moto_server`, `s3s-fs`), their ports, and how they are stopped; [`s3`]: the S3 side.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Client, Response, StatusCode, Url};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256, Sha512};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub use reqwest;
pub use serde_json;

pub mod process;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The OCI empty descriptor media type (`{}`).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Digest of the two bytes `{}`, the content of the OCI empty descriptor.
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The error codes a registry may put in an error body (distribution spec, "Error Codes").
pub const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

type Configure = Box<dyn Fn(&mut registry::Config) + Send + Sync>;

/// A server in flight on its own thread and runtime, and the means to stop it.
struct Running {
    shutdown: oneshot::Sender<()>,
    /// Receives what `run` returned, once its runtime has been shut down.
    done: oneshot::Receiver<Result<(), String>>,
}

/// A real registry server on a loopback socket, with its own temporary storage folder.
pub struct TestRegistry {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    base: String,
    /// Rebuilt on every restart so no pooled connection to a stopped server is reused.
    client: Client,
    /// Removed when the `TestRegistry` is dropped.
    storage: tempfile::TempDir,
    /// Applied to a default `Config` each time a server starts (Config need not be `Clone`).
    configure: Configure,
    /// The bound socket. The server gets a duplicate of it, so the port stays ours across a
    /// restart and clients that queue up while the server is down are served by the next one.
    keeper: Option<std::net::TcpListener>,
    addr: std::net::SocketAddr,
    running: Option<Running>,
    /// With `CONFORMANCE_STORAGE=s3`: this server's own bucket on the process's moto server
    /// (kept across restarts); the storage folder above is then unused.
    s3_bucket: Option<String>,
}

/// The `Accept` header every request carries unless it sets its own: all manifest types, then
/// anything (what containerd sends when it resolves a reference).
pub const DEFAULT_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, */*";

fn new_client() -> Client {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static(DEFAULT_ACCEPT),
    );
    Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("build reqwest client")
}

impl TestRegistry {
    /// Starts a server with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server whose default configuration is first changed by `configure`
    /// (the storage folder and listen address are always set by the harness).
    pub async fn start_with(
        configure: impl Fn(&mut registry::Config) + Send + Sync + 'static,
    ) -> Self {
        let storage = tempfile::Builder::new()
            .prefix("conformance-")
            .tempdir()
            .expect("create temporary storage folder");
        let keeper = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        keeper
            .set_nonblocking(true)
            .expect("set listener non-blocking");
        let addr = keeper.local_addr().expect("local address");
        let s3_bucket = match std::env::var("CONFORMANCE_STORAGE").as_deref() {
            Err(_) | Ok("" | "fs") => None,
            Ok("s3") => {
                static BUCKETS: AtomicU64 = AtomicU64::new(0);
                let moto =
                    s3::shared_moto().unwrap_or_else(|e| panic!("CONFORMANCE_STORAGE=s3: {e}"));
                let bucket = format!(
                    "spec-{}-{}",
                    std::process::id(),
                    BUCKETS.fetch_add(1, Ordering::Relaxed)
                );
                s3::create_bucket(moto.addr, &bucket);
                Some(bucket)
            }
            Ok(other) => panic!("CONFORMANCE_STORAGE={other}: want fs or s3"),
        };
        let mut reg = TestRegistry {
            base: format!("http://{addr}"),
            client: new_client(),
            storage,
            configure: Box::new(configure),
            keeper: Some(keeper),
            addr,
            running: None,
            s3_bucket,
        };
        reg.spawn();
        reg.wait_ready().await;
        reg
    }

    fn spawn(&mut self) {
        if self.keeper.is_none() {
            let keeper = std::net::TcpListener::bind(self.addr)
                .unwrap_or_else(|e| panic!("rebind {} after stop: {e}", self.addr));
            keeper
                .set_nonblocking(true)
                .expect("set listener non-blocking");
            self.keeper = Some(keeper);
        }
        let dup = self
            .keeper
            .as_ref()
            .expect("listener")
            .try_clone()
            .expect("duplicate listener");
        let mut config = registry::Config::default();
        (self.configure)(&mut config);
        config.listen = self.addr;
        config.storage = self.storage_url();
        if self.s3_bucket.is_some() {
            config.storage_options = s3::shared_moto().expect("moto started").options();
        }
        let (tx, rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        // The server gets its own multi-threaded runtime on its own thread, as in production:
        // it is not starved by the test's single-threaded runtime, and stopping it (dropping
        // the runtime) ends every connection task it spawned.
        std::thread::Builder::new()
            .name(format!("registry-{}", self.addr.port()))
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Err(e) => Err(format!("build server runtime: {e}")),
                    Ok(rt) => {
                        let r = rt.block_on(async move {
                            let listener = tokio::net::TcpListener::from_std(dup)
                                .map_err(|e| format!("tokio listener: {e}"))?;
                            registry::server::run(listener, config, async move {
                                let _ = rx.await;
                            })
                            .await
                            .map_err(|e| format!("{e:#}"))
                        });
                        rt.shutdown_timeout(Duration::from_secs(5));
                        r
                    }
                };
                let _ = done_tx.send(result);
            })
            .expect("spawn server thread");
        self.running = Some(Running {
            shutdown: tx,
            done: done_rx,
        });
    }

    async fn wait_ready(&mut self) {
        let url = self.url("/v2/");
        for _ in 0..100 {
            if let Some(r) = &mut self.running {
                match r.done.try_recv() {
                    Ok(Err(e)) => panic!("registry server exited at start: {e}"),
                    Ok(Ok(())) => panic!("registry server exited at start without error"),
                    Err(oneshot::error::TryRecvError::Closed) => {
                        panic!("registry server thread panicked at start")
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
            }
            let probe = self
                .client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "registry at {} did not answer GET /v2/ within ~10 s",
            self.base
        );
    }

    /// Stops the server task (graceful shutdown) and waits for it, at most 15 s.
    async fn halt(&mut self) {
        // Drop pooled keep-alive connections first: a graceful shutdown may wait for them.
        self.client = new_client();
        if let Some(mut r) = self.running.take() {
            let _ = r.shutdown.send(());
            match tokio::time::timeout(Duration::from_secs(15), &mut r.done).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("registry server returned an error: {e}"),
                Ok(Err(_)) => panic!("registry server thread panicked"),
                Err(_) => panic!("registry server did not shut down within 15 s of the signal"),
            }
        }
    }

    /// Stops the server and releases its port. The storage folder is kept until drop.
    pub async fn stop(&mut self) {
        self.halt().await;
        self.keeper = None;
    }

    /// Stops the server and starts a new one on the same storage folder and the same address.
    pub async fn restart(&mut self) {
        self.halt().await;
        self.spawn();
        self.wait_ready().await;
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The base URL joined with `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A client for this server. Do not keep clones of it across [`TestRegistry::restart`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The storage folder the server was given (unused with `CONFORMANCE_STORAGE=s3`).
    pub fn storage_path(&self) -> &Path {
        self.storage.path()
    }

    /// The server's `storage` setting: the storage folder, or `s3://<bucket>/reg` with
    /// `CONFORMANCE_STORAGE=s3`.
    pub fn storage_url(&self) -> String {
        match &self.s3_bucket {
            Some(bucket) => format!("s3://{bucket}/reg"),
            None => self
                .storage
                .path()
                .to_str()
                .expect("utf-8 temp path")
                .to_owned(),
        }
    }

    /// Resolves a `Location` value (absolute or relative) against the base URL.
    pub fn resolve(&self, location: &str) -> String {
        Url::parse(&format!("{}/", self.base))
            .expect("base url")
            .join(location)
            .unwrap_or_else(|e| panic!("Location {location:?} does not resolve: {e}"))
            .to_string()
    }

    /// `POST /v2/<repo>/blobs/uploads/` with an empty body; asserts 202 and returns the upload
    /// location, resolved to an absolute URL.
    pub async fn start_upload(&self, repo: &str) -> String {
        let resp = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .header(CONTENT_LENGTH, "0")
            .body(Vec::new())
            .send()
            .await
            .expect("POST upload");
        let status = resp.status();
        if status != StatusCode::ACCEPTED {
            panic!(
                "POST /v2/{repo}/blobs/uploads/: want 202, got {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        location(&resp)
    }

    /// Pushes a blob with POST then PUT `?digest=<sha256>`; asserts 201; returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        self.push_blob_as(repo, data, &digest).await;
        digest
    }

    /// Pushes a blob with POST then PUT `?digest=<digest>` (any algorithm); asserts 201.
    pub async fn push_blob_as(&self, repo: &str, data: &[u8], digest: &str) {
        let loc = self.start_upload(repo).await;
        let resp = self
            .client
            .put(with_query(&loc, "digest", digest))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("PUT upload");
        let status = resp.status();
        if status != StatusCode::CREATED {
            panic!(
                "PUT blob {digest} to {repo}: want 201, got {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the given Content-Type and exact bytes.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header(CONTENT_TYPE, media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// Like [`TestRegistry::put_manifest`] but asserts 201 and returns the manifest's sha256 digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let resp = self.put_manifest(repo, reference, media_type, body).await;
        let status = resp.status();
        if status != StatusCode::CREATED {
            panic!(
                "PUT manifest {repo}:{reference}: want 201, got {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        sha256_digest(body)
    }

    /// Pushes a small image (a random config and `layers` random layers) and its manifest,
    /// tagged `tag` (or by digest when `tag` is `None`).
    pub async fn push_image(&self, repo: &str, tag: Option<&str>, layers: usize) -> Image {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"comment\":\"{}\"}}",
            hex::encode(random_bytes(8))
        )
        .into_bytes();
        let config_digest = self.push_blob(repo, &config).await;
        let mut builder = ManifestBuilder::new(descriptor(OCI_CONFIG, &config));
        let mut layer_blobs = Vec::new();
        for _ in 0..layers {
            let data = random_bytes(1024 + (random_u64() % 4096) as usize);
            self.push_blob(repo, &data).await;
            builder = builder.layer(descriptor(OCI_LAYER, &data));
            layer_blobs.push(data);
        }
        let manifest = builder.build();
        let digest = sha256_digest(&manifest);
        let reference = tag.unwrap_or(&digest).to_owned();
        self.push_manifest(repo, &reference, OCI_MANIFEST, &manifest)
            .await;
        Image {
            config,
            config_digest,
            layers: layer_blobs,
            manifest,
            digest,
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            // The server thread shuts down on its own; nothing waits for it.
            let _ = r.shutdown.send(());
        }
    }
}

/// What [`TestRegistry::push_image`] pushed.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    /// The manifest's descriptor (OCI image manifest media type).
    pub fn descriptor(&self) -> Value {
        descriptor(OCI_MANIFEST, &self.manifest)
    }
}

static SEED: AtomicU64 = AtomicU64::new(0);

fn random_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    splitmix(nanos ^ n ^ u64::from(std::process::id()))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` pseudo-random bytes, different on every call (not for cryptography).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = random_u64();
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out.extend_from_slice(&splitmix(state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A short random lowercase hex string, handy for unique names.
pub fn random_suffix() -> String {
    hex::encode(random_bytes(4))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `sha512:<hex>` of `data`.
pub fn sha512_digest(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// A descriptor `{mediaType, digest (sha256), size}` of `data`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256_digest(data),
        "size": data.len(),
    })
}

/// Builds an image manifest (OCI by default) as compact JSON bytes.
#[derive(Debug, Clone)]
pub struct ManifestBuilder {
    media_type: Option<String>,
    config: Value,
    layers: Vec<Value>,
    subject: Option<Value>,
    artifact_type: Option<String>,
    annotations: Map<String, Value>,
}

impl ManifestBuilder {
    /// A manifest with this config descriptor and no layers.
    pub fn new(config: Value) -> Self {
        ManifestBuilder {
            media_type: Some(OCI_MANIFEST.to_owned()),
            config,
            layers: Vec::new(),
            subject: None,
            artifact_type: None,
            annotations: Map::new(),
        }
    }

    /// An artifact manifest: the empty config descriptor and `artifactType`.
    pub fn artifact(artifact_type: &str) -> Self {
        Self::new(empty_descriptor()).artifact_type(artifact_type)
    }

    /// Sets the `mediaType` field; `None` leaves it out.
    pub fn media_type(mut self, media_type: Option<&str>) -> Self {
        self.media_type = media_type.map(str::to_owned);
        self
    }

    pub fn layer(mut self, descriptor: Value) -> Self {
        self.layers.push(descriptor);
        self
    }

    pub fn subject(mut self, descriptor: Value) -> Self {
        self.subject = Some(descriptor);
        self
    }

    pub fn artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_owned());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), json!(value));
        self
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("schemaVersion".into(), json!(2));
        if let Some(mt) = &self.media_type {
            m.insert("mediaType".into(), json!(mt));
        }
        if let Some(at) = &self.artifact_type {
            m.insert("artifactType".into(), json!(at));
        }
        m.insert("config".into(), self.config.clone());
        m.insert("layers".into(), Value::Array(self.layers.clone()));
        if let Some(s) = &self.subject {
            m.insert("subject".into(), s.clone());
        }
        if !self.annotations.is_empty() {
            m.insert(
                "annotations".into(),
                Value::Object(self.annotations.clone()),
            );
        }
        Value::Object(m)
    }

    pub fn build(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).expect("serialise manifest")
    }
}

/// Builds an image index (OCI by default) as compact JSON bytes.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    media_type: Option<String>,
    manifests: Vec<Value>,
    subject: Option<Value>,
    artifact_type: Option<String>,
    annotations: Map<String, Value>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexBuilder {
    pub fn new() -> Self {
        IndexBuilder {
            media_type: Some(OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            subject: None,
            artifact_type: None,
            annotations: Map::new(),
        }
    }

    pub fn media_type(mut self, media_type: Option<&str>) -> Self {
        self.media_type = media_type.map(str::to_owned);
        self
    }

    pub fn manifest(mut self, descriptor: Value) -> Self {
        self.manifests.push(descriptor);
        self
    }

    pub fn subject(mut self, descriptor: Value) -> Self {
        self.subject = Some(descriptor);
        self
    }

    pub fn artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_owned());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), json!(value));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("schemaVersion".into(), json!(2));
        if let Some(mt) = &self.media_type {
            m.insert("mediaType".into(), json!(mt));
        }
        if let Some(at) = &self.artifact_type {
            m.insert("artifactType".into(), json!(at));
        }
        m.insert("manifests".into(), Value::Array(self.manifests.clone()));
        if let Some(s) = &self.subject {
            m.insert("subject".into(), s.clone());
        }
        if !self.annotations.is_empty() {
            m.insert(
                "annotations".into(),
                Value::Object(self.annotations.clone()),
            );
        }
        serde_json::to_vec(&Value::Object(m)).expect("serialise index")
    }
}

/// The OCI empty descriptor (`{}`, 2 bytes).
pub fn empty_descriptor() -> Value {
    json!({"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2})
}

/// An HTTP/1.1 answer read off a raw socket, for tests that write requests by hand.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The first value of header `name`, if any (panics on non-UTF-8).
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("header value is not visible ASCII"))
}

/// Every value of header `name`, split on commas and trimmed (RFC 9110 list syntax).
pub fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .expect("header value is not visible ASCII")
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The response's `Location`, resolved against the request URL (it may be relative).
pub fn location(resp: &Response) -> String {
    let loc = header(resp.headers(), "location")
        .unwrap_or_else(|| panic!("{} {}: no Location header", resp.status(), resp.url()));
    resp.url()
        .join(loc)
        .unwrap_or_else(|e| panic!("Location {loc:?} does not resolve: {e}"))
        .to_string()
}

/// Appends `key=value` to `url` (`?` or `&` as needed), without percent-encoding the value.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// The target of a `Link: <url>; rel="next"` header, if the response has one.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all("link") {
        let v = v.to_str().expect("Link header is not visible ASCII");
        for part in v.split(',') {
            let part = part.trim();
            let Some(rest) = part.strip_prefix('<') else {
                continue;
            };
            let Some((target, params)) = rest.split_once('>') else {
                continue;
            };
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                return Some(target.to_owned());
            }
        }
    }
    None
}

/// Checks that `body` is a spec error body (`{"errors":[{"code","message","detail"}, ...]}`
/// with every code from the spec's table) and returns its codes. `message` must be a string
/// (the spec makes it optional; we always want one for users); `detail` is optional, any JSON.
pub fn error_codes(body: &[u8]) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    })?;
    let errors = v
        .get("errors")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("error body has no \"errors\" array: {v}"))?;
    if errors.is_empty() {
        return Err(format!("\"errors\" is empty: {v}"));
    }
    let mut codes = Vec::new();
    for e in errors {
        let code = e
            .get("code")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("error without a string \"code\": {e}"))?;
        if !SPEC_ERROR_CODES.contains(&code) {
            return Err(format!("code {code:?} is not one of the spec's codes: {e}"));
        }
        if !e.get("message").is_some_and(Value::is_string) {
            return Err(format!("error without a string \"message\": {e}"));
        }
        codes.push(code.to_owned());
    }
    Ok(codes)
}

/// Asserts the response has status `status` and a spec error body holding one of `codes`
/// (any spec code when `codes` is empty). Returns the parsed body.
pub async fn expect_error(resp: Response, status: u16, codes: &[&str]) -> Value {
    let got = resp.status().as_u16();
    let url = resp.url().to_string();
    let ct = header(resp.headers(), "content-type").map(str::to_owned);
    let body = resp.bytes().await.expect("read error body");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        got, status,
        "{url}: want status {status}, got {got}: {text}"
    );
    let found = error_codes(&body).unwrap_or_else(|e| panic!("{url} ({got}): {e}"));
    if !codes.is_empty() {
        assert!(
            found.iter().any(|c| codes.contains(&c.as_str())),
            "{url} ({got}): want one of {codes:?}, got {found:?}: {text}"
        );
    }
    if let Some(ct) = ct {
        assert!(
            ct.starts_with("application/json"),
            "{url}: JSON error body has Content-Type {ct:?}"
        );
    }
    serde_json::from_slice(&body).expect("error body JSON")
}

/// Asserts the response is a client error (4xx, never 5xx or success) and, unless it is the
/// answer to a HEAD, that it carries a spec error body. Returns the status.
pub async fn expect_client_error(resp: Response) -> u16 {
    let got = resp.status().as_u16();
    let url = resp.url().to_string();
    let body = resp.bytes().await.expect("read error body");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        (400..500).contains(&got),
        "{url}: want a 4xx client error, got {got}: {text}"
    );
    if let Err(e) = error_codes(&body) {
        panic!("{url} ({got}): {e}");
    }
    got
}

/// A response read by [`raw_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends one HTTP/1.1 request written by hand (so the path is not normalised, e.g. `..` stays)
/// to the registry at `base` (`http://host:port`) and reads the whole answer (10 s at most).
pub async fn raw_request(base: &str, method: &str, path: &str, body: &[u8]) -> RawResponse {
    let host = base
        .strip_prefix("http://")
        .expect("raw_request needs an http:// base")
        .trim_end_matches('/');
    let work = async {
        let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("write request");
        s.write_all(body).await.expect("write body");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("raw request timed out");
    parse_raw(&buf)
}

/// Sends `data` (a request written by hand, possibly cut short) to the registry at `base`,
/// closes the sending half, and reads whatever comes back (10 s at most). `None` when the
/// server closed the connection without answering. Write errors (the server may close first)
/// are ignored.
pub async fn raw_send(base: &str, data: &[u8]) -> Option<RawResponse> {
    let host = base
        .strip_prefix("http://")
        .expect("raw_send needs an http:// base")
        .trim_end_matches('/');
    let work = async {
        let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
        let _ = s.write_all(data).await;
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("raw_send timed out");
    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
        Some(parse_raw(&buf))
    } else {
        None
    }
}

fn parse_raw(buf: &[u8]) -> RawResponse {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has no end of headers");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw_body = &buf[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// The S3 side of the tests that run on the object-store backend (the spec suite with
/// `CONFORMANCE_STORAGE=s3`, and the S3 test programs `s3-replicas`, `s3-outage`, `s3-memory`):
/// credentials, the registry's storage options, the moto server the spec suite shares, plain
/// requests to an S3 server (buckets, listings), and the programs' PASS/FAIL
/// [`Tally`](crate::s3::Tally). The server processes themselves are started by
/// [`crate::process`].
pub mod s3 {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::OnceLock;
    use std::time::Duration;

    use crate::process::{start_moto, S3Server};

    /// Access key and secret given to the S3 servers and the registry (moto takes any).
    pub const ACCESS_KEY: &str = "conformance";
    /// See [`ACCESS_KEY`].
    pub const SECRET_KEY: &str = "conformance-secret";

    /// Registry storage options for an S3 server at `addr` (path-style, plain HTTP).
    pub fn options(addr: SocketAddr) -> BTreeMap<String, String> {
        [
            ("endpoint", format!("http://{addr}")),
            ("allow_http", "true".to_owned()),
            ("region", "us-east-1".to_owned()),
            ("access_key_id", ACCESS_KEY.to_owned()),
            ("secret_access_key", SECRET_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The moto server shared by this test process, started on first use and stopped when the
    /// process exits. Its log goes to the file named by `CONFORMANCE_MOTO_LOG`, else nowhere
    /// (nothing would remove a log file when the process ends).
    pub fn shared_moto() -> Result<&'static S3Server, String> {
        static MOTO: OnceLock<Result<S3Server, String>> = OnceLock::new();
        MOTO.get_or_init(|| {
            let log = std::env::var_os("CONFORMANCE_MOTO_LOG")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/dev/null".into());
            start_moto(&log)
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// One plain, unsigned HTTP/1.1 request (moto accepts those); returns status and the whole
    /// answer (head and body).
    pub fn http(
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let out = String::from_utf8_lossy(&out).into_owned();
        let code = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response: {out:.200}")))?;
        Ok((code, out))
    }

    /// Creates a bucket on moto (`PUT /<bucket>`); panics unless it answers 200.
    pub fn create_bucket(addr: SocketAddr, bucket: &str) {
        let (code, out) = http(addr, "PUT", &format!("/{bucket}"), b"")
            .unwrap_or_else(|e| panic!("create bucket {bucket} on {addr}: {e}"));
        assert_eq!(code, 200, "create bucket {bucket}: {out:.400}");
    }

    /// The keys of the multipart uploads in progress in `bucket` under `prefix`, from moto's
    /// `ListMultipartUploads` (`GET /<bucket>?uploads`).
    pub fn multipart_uploads(addr: SocketAddr, bucket: &str, prefix: &str) -> Vec<String> {
        let (code, out) = http(
            addr,
            "GET",
            &format!("/{bucket}?uploads&prefix={prefix}"),
            b"",
        )
        .unwrap_or_else(|e| panic!("list multipart uploads of {bucket}: {e}"));
        assert_eq!(code, 200, "list multipart uploads of {bucket}: {out:.400}");
        xml_values(&out, "Key")
    }

    /// The keys of the objects in `bucket` under `prefix` (`ListObjectsV2`, up to 1000).
    pub fn object_keys(addr: SocketAddr, bucket: &str, prefix: &str) -> Vec<String> {
        let (code, out) = http(
            addr,
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            b"",
        )
        .unwrap_or_else(|e| panic!("list objects of {bucket}: {e}"));
        assert_eq!(code, 200, "list objects of {bucket}: {out:.400}");
        xml_values(&out, "Key")
    }

    /// Counts checks and prints `PASS name` / `FAIL name: reason` lines and the final
    /// `N passed, N failed`.
    #[derive(Default)]
    pub struct Tally {
        pub passed: usize,
        pub failed: usize,
    }

    impl Tally {
        /// Records one check.
        pub fn record(&mut self, name: &str, result: Result<String, String>) {
            match result {
                Ok(note) if note.is_empty() => {
                    self.passed += 1;
                    println!("PASS {name}");
                }
                Ok(note) => {
                    self.passed += 1;
                    println!("PASS {name} ({note})");
                }
                Err(why) => {
                    self.failed += 1;
                    println!("FAIL {name}: {why}");
                }
            }
        }

        /// Prints the summary; the process's exit code (0 when nothing failed).
        pub fn finish(&self) -> i32 {
            println!("{} passed, {} failed", self.passed, self.failed);
            i32::from(self.failed > 0)
        }
    }

    /// The text of every `<tag>...</tag>` element of `xml`.
    pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        xml.split(&open)
            .skip(1)
            .filter_map(|s| s.split_once(&close).map(|(v, _)| v.to_owned()))
            .collect()
    }
}
