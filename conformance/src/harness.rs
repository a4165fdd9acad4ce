//! [`TestRegistry`]: a real registry server on a loopback socket with its own storage, started,
//! stopped and restarted by the tests, and the push helpers the tests share.

use std::future::{Future, IntoFuture};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Body, Client, Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::check::{expect_error, location, next_link, with_query};
use crate::oci::{descriptor, sha256_digest, ManifestBuilder, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use crate::random::{random_bytes, random_u64};
use crate::s3;

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

/// `TestRegistry::get(target)` and its kind for each method: [`TestRegistry::request`] with
/// that method.
macro_rules! shortcuts {
    ($($name:ident: $method:ident,)*) => {$(
        #[doc = concat!("`", stringify!($method), " <target>`: see [`TestRegistry::request`].")]
        pub fn $name(&self, target: impl AsRef<str>) -> Call {
            self.request(Method::$method, target)
        }
    )*};
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

    /// A path (which starts with `/`) joined to the base URL; an absolute URL (an upload's
    /// `Location`) as it is.
    fn target(&self, target: &str) -> String {
        if target.starts_with('/') {
            self.url(target)
        } else {
            target.to_owned()
        }
    }

    /// `method <target>` (a path starting with `/`, or an absolute URL such as an upload's
    /// `Location`) with the default headers; add headers and a body, then `.await` it.
    pub fn request(&self, method: Method, target: impl AsRef<str>) -> Call {
        let url = self.target(target.as_ref());
        Call {
            what: format!("{method} {url}"),
            req: self.client.request(method, url),
            want: None,
        }
    }

    shortcuts! {
        get: GET, head: HEAD, delete: DELETE, post: POST, put: PUT, patch: PATCH,
    }

    /// `GET <target>` of one page of a paginated list (tags, catalog): asserts 200 and that
    /// `key` holds a list of strings; returns them, the next page's `Link`, and the whole body.
    pub async fn list_page(&self, target: &str, key: &str) -> (Vec<String>, Option<String>, Value) {
        let resp = self.get(target).await;
        assert_eq!(resp.status(), 200, "GET {target}");
        let link = next_link(resp.headers());
        let v: Value = resp.json().await.expect("list JSON");
        let names = match &v[key] {
            Value::Array(a) => a
                .iter()
                .map(|r| r.as_str().expect("list entry is a string").to_owned())
                .collect(),
            other => panic!("GET {target}: {key:?} is not a list: {other}"),
        };
        (names, link, v)
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
        self.start_upload_at(&format!("/v2/{repo}/blobs/uploads/"))
            .await
    }

    /// `POST <path>` (an uploads path, with a query of its own) with an empty body; asserts 202
    /// and returns the upload location, resolved to an absolute URL.
    pub async fn start_upload_at(&self, path: &str) -> String {
        let resp = self.post(path).header(CONTENT_LENGTH.as_str(), "0").await;
        let status = resp.status();
        if status != StatusCode::ACCEPTED {
            panic!(
                "POST {path}: want 202, got {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        location(&resp)
    }

    /// Pushes `len` random bytes as a blob to `repo`; the bytes and their digest.
    pub async fn push_random_blob(&self, repo: &str, len: usize) -> (Vec<u8>, String) {
        let data = crate::random_bytes(len);
        let digest = self.push_blob(repo, &data).await;
        (data, digest)
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
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Call {
        self.put(format!("/v2/{repo}/manifests/{reference}"))
            .header(CONTENT_TYPE.as_str(), media_type)
            .body(body.to_vec())
    }

    /// Pushes a small config and, as `repo:tag`, an image manifest over it and `layer` (the
    /// descriptor of a blob already in `repo`); asserts 201.
    pub async fn push_manifest_over(&self, repo: &str, tag: &str, layer: Value) {
        let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
        self.push_blob(repo, cfg).await;
        let config = crate::oci::descriptor(crate::oci::OCI_CONFIG, cfg);
        let manifest = crate::oci::ManifestBuilder::new(config)
            .layer(layer)
            .build();
        self.push_manifest(repo, tag, crate::oci::OCI_MANIFEST, &manifest)
            .await;
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

/// A request to a [`TestRegistry`] being put together; `.await` sends it and gives the
/// response, whatever its status (it panics only when the request cannot be sent).
pub struct Call {
    what: String,
    req: RequestBuilder,
    /// The status the answer must have, when set.
    want: Option<u16>,
}

impl Call {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.req = self.req.header(name, value.as_ref());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.req = self.req.body(body);
        self
    }

    /// Asserts the answer has `status` (the panic message has the body).
    pub fn expect(mut self, status: u16) -> Self {
        self.want = Some(status);
        self
    }

    /// Sends the request and asserts the answer is `status` with a spec error body holding one of
    /// `codes` (see [`expect_error`]); returns the body.
    pub async fn error(self, status: u16, codes: &[&str]) -> Value {
        expect_error(self.await, status, codes).await
    }

    /// Sends the request; the answer's status.
    pub async fn status(self) -> u16 {
        self.await.status().as_u16()
    }

    /// Sends the request and parses the answer's body as JSON.
    pub async fn json(self) -> Value {
        let what = self.what.clone();
        let resp = self.await;
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("{what}: JSON body: {e}"))
    }

    /// Sets the body with `Content-Type: application/octet-stream`.
    pub fn octets(self, body: impl Into<Body>) -> Self {
        self.header("content-type", "application/octet-stream")
            .body(body)
    }
}

impl IntoFuture for Call {
    type Output = Response;
    type IntoFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let Call { what, req, want } = self;
        Box::pin(async move {
            let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
            match want {
                Some(want) if resp.status().as_u16() != want => {
                    let got = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    panic!("{what}: want status {want}, got {got}: {body}");
                }
                _ => resp,
            }
        })
    }
}

/// Sends every call at once, each on a task of its own; their statuses, in order.
pub async fn at_once(calls: Vec<Call>) -> Vec<u16> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|call| tokio::spawn(async move { call.await.status().as_u16() }))
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request task"));
    }
    statuses
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
