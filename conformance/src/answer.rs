//! Checks of `reqwest` responses for the test programs, which report a failed check as an
//! `Err(reason)` (see [`crate::ensure!`]) instead of panicking like the Rust tests do.

use reqwest::Response;

/// What a program's check returns: a note for the PASS line, or why it failed.
pub type Check = Result<String, String>;

/// `ensure!(condition, "format", args...)`: returns `Err(format!(...))` from the enclosing
/// function unless `condition` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// `req.sent().await`: sends a request; a transport error becomes its message.
pub trait Sent {
    fn sent(self) -> impl std::future::Future<Output = Result<Response, String>> + Send;
}

impl Sent for reqwest::RequestBuilder {
    async fn sent(self) -> Result<Response, String> {
        self.send().await.map_err(|e| e.to_string())
    }
}

/// `Ok` when `resp` has status `want`, else `Err("<what> <status>")`.
pub fn status_is(resp: &Response, want: u16, what: &str) -> Result<(), String> {
    ensure!(resp.status() == want, "{what} {}", resp.status());
    Ok(())
}

/// The first value of header `name`, when it is visible ASCII.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The path (and query) of the response's `Location`, absolute or relative, so that it can be
/// sent to any replica.
pub fn location_path(resp: &Response) -> Result<String, String> {
    let loc = header(resp, "location").ok_or("no Location header")?;
    Ok(match loc.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map(|i| rest[i..].to_owned())
            .unwrap_or_default(),
        None => loc,
    })
}

/// The response has `status` and an upload `Range` of `0-<end - 1>`.
pub fn expect_range(what: &str, resp: &Response, status: u16, end: usize) -> Result<(), String> {
    ensure!(
        resp.status().as_u16() == status,
        "{what}: status {}, want {status}",
        resp.status()
    );
    let range = header(resp, "range");
    let want = format!("0-{}", end.saturating_sub(1));
    ensure!(
        range.as_deref() == Some(want.as_str()),
        "{what}: Range {range:?}, want {want}"
    );
    Ok(())
}

/// The first 300 characters of the body, for a failure message.
pub async fn body_text(resp: Response) -> String {
    let t = resp.text().await.unwrap_or_default();
    t.chars().take(300).collect()
}

/// `POST <base>/v2/<repo>/blobs/uploads/` with an empty body: 202 and the upload's path.
pub async fn start_upload(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
) -> Result<String, String> {
    let resp = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .map_err(|e| format!("POST: {e}"))?;
    ensure!(
        resp.status() == reqwest::StatusCode::ACCEPTED,
        "POST: {}",
        resp.status()
    );
    location_path(&resp)
}

/// A registry as the programs talk to it: a client and the base URL. Every request fails with
/// `Err(reason)` (the request and the error) instead of panicking.
#[derive(Clone)]
pub struct Remote {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub base: String,
}

impl Remote {
    pub fn new(client: &reqwest::Client, base: &str) -> Self {
        Remote {
            client: client.clone(),
            base: base.to_owned(),
        }
    }

    /// The base URL joined with `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `req`; `what` names it in the error.
    pub async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Response, String> {
        req.send().await.map_err(|e| format!("{what}: {e}"))
    }

    /// `method path`, no body.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> Result<Response, String> {
        let what = format!("{method} {path}");
        let req = self.client.request(method, self.url(path));
        self.send(&what, req).await
    }

    /// `POST /v2/<repo>/blobs/uploads/` with an empty body: 202 and the upload's path.
    pub async fn start_upload(&self, repo: &str) -> Result<String, String> {
        start_upload(&self.client, &self.base, repo).await
    }

    /// PATCH of `chunk` at `offset` of the upload at `loc`, with `Content-Range`.
    pub async fn patch(&self, loc: &str, offset: usize, chunk: &[u8]) -> Result<Response, String> {
        let range = format!("{}-{}", offset, offset + chunk.len() - 1);
        let req = self
            .client
            .patch(self.url(loc))
            .header("content-range", &range);
        let req = req.header("content-type", "application/octet-stream");
        self.send(&format!("PATCH {range}"), req.body(chunk.to_vec()))
            .await
    }

    /// One PATCH of the upload at `loc` streaming `body`, without Content-Length or Content-Range.
    pub async fn patch_stream(&self, loc: &str, body: reqwest::Body) -> reqwest::Result<Response> {
        let req = self.client.patch(self.url(loc));
        let req = req.header("content-type", "application/octet-stream");
        req.body(body).send().await
    }

    /// The closing `PUT <loc>?digest=<digest>` with an empty body.
    pub async fn close(&self, loc: &str, digest: &str) -> Result<Response, String> {
        let url = self.url(&crate::check::with_query(loc, "digest", digest));
        let req = self.client.put(url).header("content-length", "0");
        self.send("PUT ?digest", req).await
    }

    /// POST + PUT of a whole blob: 201; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Result<String, String> {
        let loc = self.start_upload(repo).await?;
        let digest = crate::oci::sha256_digest(data);
        let url = self.url(&crate::check::with_query(&loc, "digest", &digest));
        let req = self.client.put(url).body(data.to_vec());
        let req = req.header("content-type", "application/octet-stream");
        let resp = self.send("PUT blob", req).await?;
        ensure!(resp.status() == 201, "PUT blob: {}", resp.status());
        Ok(digest)
    }

    /// HEAD of a blob: its status.
    pub async fn blob_status(&self, repo: &str, digest: &str) -> Result<u16, String> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.call(reqwest::Method::HEAD, &path).await?;
        Ok(resp.status().as_u16())
    }

    /// Pushes a fresh small image's blobs (a config and one layer of `layer_len` random bytes)
    /// and returns its manifest bytes (not pushed).
    pub async fn new_manifest(&self, repo: &str, layer_len: usize) -> Result<Vec<u8>, String> {
        let comment = crate::random::random_suffix();
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"comment\":\"{comment}\"}}"
        )
        .into_bytes();
        let layer = crate::random::random_bytes(layer_len);
        self.push_blob(repo, &config).await?;
        self.push_blob(repo, &layer).await?;
        Ok(crate::oci::ManifestBuilder::new(crate::oci::descriptor(
            crate::oci::OCI_CONFIG,
            &config,
        ))
        .layer(crate::oci::descriptor(crate::oci::OCI_LAYER, &layer))
        .build())
    }

    /// `PUT /v2/<repo>/manifests/<reference>` of an OCI image manifest, whatever the answer.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        body: &[u8],
    ) -> Result<Response, String> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let req = self
            .client
            .put(url)
            .header("content-type", crate::oci::OCI_MANIFEST);
        self.send("PUT manifest", req.body(body.to_vec())).await
    }

    /// GET a manifest by reference: (status, `Docker-Content-Digest`, body; empty when it
    /// could not be read).
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(u16, Option<String>, Vec<u8>), String> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let req = self
            .client
            .get(url)
            .header("accept", crate::oci::OCI_MANIFEST);
        let resp = self.send("GET manifest", req).await?;
        let status = resp.status().as_u16();
        let digest = header(&resp, "docker-content-digest");
        let body = resp.bytes().await.unwrap_or_default().to_vec();
        Ok((status, digest, body))
    }

    /// GET of `repo:reference` answers 200 with exactly `want`; else `Err("<what>: <status>")`.
    pub async fn expect_manifest(
        &self,
        (repo, reference): (&str, &str),
        want: &[u8],
        what: &str,
    ) -> Result<(), String> {
        let (status, _, body) = self.get_manifest(repo, reference).await?;
        ensure!(status == 200 && body == want, "{what}: {status}");
        Ok(())
    }

    /// GET `path`: 200 and its JSON body (`what` names it in errors).
    pub async fn get_json(&self, path: &str, what: &str) -> Result<serde_json::Value, String> {
        let resp = self.call(reqwest::Method::GET, path).await?;
        ensure!(resp.status() == 200, "{what}: {}", resp.status());
        resp.json().await.map_err(|e| format!("{what} JSON: {e}"))
    }
}

/// The programs' HTTP client: `timeout` per request, 10 s to connect, no proxy.
pub fn client(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(std::time::Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("build the HTTP client")
}
