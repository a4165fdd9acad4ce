//! Registry operations as a client performs them, each checking the answer: a wrong status,
//! digest or size is an error that fails the run.

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http::Method;
use storage::hash::digest_of;
use storage::Algorithm;

use crate::http::{with_query, Conn, Resp};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256(data: &[u8]) -> String {
    digest_of(Algorithm::Sha256, data).to_string()
}

/// Deterministic pseudo-random bytes (splitmix64), so every server receives the same content.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed;
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A blob distinct for each (`set`, `index`): a prefix of `base` with a unique header.
pub(crate) fn blob_from(base: &[u8], size: usize, set: u32, index: u32) -> Bytes {
    let mut v = base[..size].to_vec();
    let tag = format!("regbench set {set:08} blob {index:08} size {size:012}\n");
    let n = tag.len().min(size);
    v[..n].copy_from_slice(&tag.as_bytes()[..n]);
    Bytes::from(v)
}

/// A descriptor as JSON.
pub(crate) fn descriptor(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// An OCI image manifest over a config and layers (each `(digest, size)`).
pub(crate) fn image_manifest(config: (&str, usize), layers: &[(String, usize)]) -> Bytes {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, s)| descriptor(OCI_LAYER, d, *s))
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config.0, config.1),
        "layers": layers,
    });
    Bytes::from(serde_json::to_vec(&m).expect("JSON"))
}

/// An artifact manifest whose subject is `subject`, distinct per `index`.
pub(crate) fn referrer_manifest(
    empty: (&str, usize),
    subject: (&str, usize),
    index: usize,
    layer: (&str, usize),
) -> Bytes {
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.regbench.signature",
        "config": descriptor(OCI_EMPTY, empty.0, empty.1),
        "layers": [descriptor(OCI_LAYER, layer.0, layer.1)],
        "subject": descriptor(OCI_MANIFEST, subject.0, subject.1),
        "annotations": {"org.example.regbench.index": index.to_string()},
    });
    Bytes::from(serde_json::to_vec(&m).expect("JSON"))
}

fn location(resp: &Resp, what: &str) -> Result<String> {
    resp.header("location")
        .map(str::to_owned)
        .with_context(|| format!("{what}: no Location header"))
}

fn check_digest_header(resp: &Resp, digest: &str, what: &str) -> Result<()> {
    if let Some(got) = resp.header("docker-content-digest") {
        ensure!(
            got == digest,
            "{what}: Docker-Content-Digest {got}, expected {digest}"
        );
    }
    Ok(())
}

/// Starts an upload session; returns its Location.
pub(crate) async fn start_upload(conn: &mut Conn, repo: &str) -> Result<String> {
    let what = format!("POST upload in {repo}");
    let r = conn
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            202,
            &what,
        )
        .await?;
    location(&r, &what)
}

/// Monolithic push: POST, then PUT ?digest= with the whole body.
pub(crate) async fn push_monolithic(
    conn: &mut Conn,
    repo: &str,
    data: Bytes,
    digest: &str,
) -> Result<()> {
    let loc = start_upload(conn, repo).await?;
    let what = format!("PUT blob {digest}");
    let r = conn
        .send(
            Method::PUT,
            &with_query(&loc, &format!("digest={digest}")),
            &[("content-type", "application/octet-stream")],
            data,
        )
        .await?
        .expect(201, &what)?;
    check_digest_header(&r, digest, &what)
}

/// Chunked push: POST, PATCHes of `chunk` bytes with Content-Range, then PUT ?digest=.
pub(crate) async fn push_chunked(
    conn: &mut Conn,
    repo: &str,
    data: Bytes,
    digest: &str,
    chunk: usize,
) -> Result<()> {
    let mut loc = start_upload(conn, repo).await?;
    let mut off = 0usize;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        let range = format!("{}-{}", off, end - 1);
        let what = format!("PATCH {range} of {digest}");
        let r = conn
            .send(
                Method::PATCH,
                &loc,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                ],
                data.slice(off..end),
            )
            .await?
            .expect(202, &what)?;
        let want = format!("0-{}", end - 1);
        match r.header("range") {
            Some(got) if got == want || got == format!("bytes={want}") => {}
            other => bail!("{what}: Range {other:?}, expected {want}"),
        }
        loc = location(&r, &what)?;
        off = end;
    }
    let what = format!("PUT (close) {digest}");
    let r = conn
        .call(
            Method::PUT,
            &with_query(&loc, &format!("digest={digest}")),
            201,
            &what,
        )
        .await?;
    check_digest_header(&r, digest, &what)
}

/// GET of a blob; returns the response after checking status and size (the caller hashes).
pub(crate) async fn get_blob(conn: &mut Conn, repo: &str, digest: &str, size: u64) -> Result<Resp> {
    get_blob_to(conn, repo, digest, size, None).await
}

/// GET of a blob whose bytes are known: each chunk is compared with `want` as it arrives and
/// dropped, so a large pull is checked byte for byte without the client holding it.
pub(crate) async fn get_blob_checked(
    conn: &mut Conn,
    repo: &str,
    digest: &str,
    want: &[u8],
) -> Result<Resp> {
    get_blob_to(conn, repo, digest, want.len() as u64, Some(want)).await
}

/// GET of a blob, its body kept or (with `want`) compared as it arrives; checks status and size.
async fn get_blob_to(
    conn: &mut Conn,
    repo: &str,
    digest: &str,
    size: u64,
    want: Option<&[u8]>,
) -> Result<Resp> {
    let what = format!("GET blob {digest}");
    let target = format!("/v2/{repo}/blobs/{digest}");
    let r = match want {
        Some(want) => conn.get_compared(&target, want).await?,
        None => conn.send(Method::GET, &target, &[], Bytes::new()).await?,
    }
    .expect(200, &what)?;
    ensure!(r.len == size, "{what}: {} bytes, expected {size}", r.len);
    Ok(r)
}

/// Hashes a pulled body and compares it with `digest`.
pub(crate) fn verify_body(r: &Resp, digest: &str) -> Result<()> {
    let mut h = storage::hash::Hasher::new(Algorithm::Sha256);
    for c in &r.chunks {
        h.update(c);
    }
    let got = h.finish().to_string();
    ensure!(
        got == digest,
        "pulled bytes hash to {got}, expected {digest}"
    );
    Ok(())
}

/// HEAD of a blob, checking size and digest headers.
pub(crate) async fn head_blob(conn: &mut Conn, repo: &str, digest: &str, size: u64) -> Result<()> {
    let what = format!("HEAD blob {digest}");
    let r = conn
        .call(
            Method::HEAD,
            &format!("/v2/{repo}/blobs/{digest}"),
            200,
            &what,
        )
        .await?;
    let len = r
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    ensure!(
        len == Some(size),
        "{what}: Content-Length {len:?}, expected {size}"
    );
    check_digest_header(&r, digest, &what)
}

/// PUT of a manifest under `reference`, checking the digest the server reports.
pub(crate) async fn put_manifest(
    conn: &mut Conn,
    repo: &str,
    reference: &str,
    body: Bytes,
) -> Result<()> {
    let digest = sha256(&body);
    let what = format!("PUT manifest {repo}:{reference}");
    let r = conn
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", OCI_MANIFEST)],
            body,
        )
        .await?
        .expect(201, &what)?;
    check_digest_header(&r, &digest, &what)
}

/// GET or HEAD of a manifest (accepting an OCI image manifest); fails unless the answer is 200.
async fn manifest_request(
    conn: &mut Conn,
    method: Method,
    repo: &str,
    reference: &str,
) -> Result<(Resp, String)> {
    let what = format!("{method} manifest {repo}:{reference}");
    let target = format!("/v2/{repo}/manifests/{reference}");
    let r = conn
        .send(method, &target, &[("accept", OCI_MANIFEST)], Bytes::new())
        .await?
        .expect(200, &what)?;
    Ok((r, what))
}

/// GET of a manifest, checking that the bytes are exactly `want`.
pub(crate) async fn get_manifest(
    conn: &mut Conn,
    repo: &str,
    reference: &str,
    want: &Bytes,
) -> Result<()> {
    let (r, what) = manifest_request(conn, Method::GET, repo, reference).await?;
    ensure!(
        r.body() == *want,
        "{what}: body differs from what was pushed"
    );
    check_digest_header(&r, &sha256(want), &what)
}

/// HEAD of a manifest, checking size and digest.
pub(crate) async fn head_manifest(
    conn: &mut Conn,
    repo: &str,
    reference: &str,
    digest: &str,
    size: usize,
) -> Result<()> {
    let (r, what) = manifest_request(conn, Method::HEAD, repo, reference).await?;
    let len = r
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    ensure!(
        len == Some(size),
        "{what}: Content-Length {len:?}, expected {size}"
    );
    ensure!(
        r.header("docker-content-digest") == Some(digest),
        "{what}: Docker-Content-Digest {:?}, expected {digest}",
        r.header("docker-content-digest")
    );
    Ok(())
}

/// The next page from a `Link: <url>; rel="next"` header.
fn next_link(r: &Resp) -> Option<String> {
    let link = r.header("link")?;
    let start = link.find('<')? + 1;
    let end = link[start..].find('>')? + start;
    Some(link[start..end].to_owned())
}

/// Lists all tags (following pagination); returns how many there are and how many pages it took.
pub(crate) async fn list_tags(conn: &mut Conn, repo: &str) -> Result<(usize, usize)> {
    let mut target = format!("/v2/{repo}/tags/list");
    let mut count = 0;
    for page in 1..=10_000 {
        let what = format!("GET {target}");
        let r = conn.call(Method::GET, &target, 200, &what).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&r.body()).with_context(|| format!("{what}: not JSON"))?;
        ensure!(v["name"] == repo, "{what}: name {}", v["name"]);
        count += v["tags"].as_array().map(|a| a.len()).unwrap_or(0);
        match next_link(&r) {
            Some(next) => target = next,
            None => return Ok((count, page)),
        }
    }
    bail!("tag list of {repo} did not end after 10000 pages")
}

/// GET of the referrers of `subject`; `None` when the server has no referrers API (404 that is
/// not an OCI error about the manifest), else the number of descriptors.
pub(crate) async fn referrers(conn: &mut Conn, repo: &str, subject: &str) -> Result<Option<usize>> {
    let what = format!("GET referrers of {subject}");
    let r = conn
        .send(
            Method::GET,
            &format!("/v2/{repo}/referrers/{subject}"),
            &[],
            Bytes::new(),
        )
        .await?;
    if r.status.as_u16() == 404 {
        return Ok(None);
    }
    let r = r.expect(200, &what)?;
    let v: serde_json::Value =
        serde_json::from_slice(&r.body()).with_context(|| format!("{what}: not JSON"))?;
    ensure!(
        v["mediaType"] == "application/vnd.oci.image.index.v1+json",
        "{what}: mediaType {}",
        v["mediaType"]
    );
    Ok(Some(
        v["manifests"].as_array().map(|a| a.len()).unwrap_or(0),
    ))
}
