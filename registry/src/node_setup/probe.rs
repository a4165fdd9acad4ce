//! The probe image: one empty layer and a config, small enough to push on every check. Pushed
//! over HTTP/1.1 (or HTTPS with a given CA) to the registry's address with `Host:` set to the service name.

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{PROBE_REPO, PROBE_TAG};

fn digest(b: &[u8]) -> String {
    storage::hash::digest_of(storage::Algorithm::Sha256, b).to_string()
}

/// (layer, config, manifest) bytes of the probe image for this machine's architecture: the
/// same bytes as that platform's image in the index the registry serves.
pub fn image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let img = crate::probe_image::image();
    let (config, manifest) = img
        .for_arch(crate::probe_image::goarch())
        .unwrap_or_else(|| img.for_arch("amd64").expect("amd64 is in the index"));
    (
        img.layer.bytes.to_vec(),
        config.bytes.to_vec(),
        manifest.bytes.to_vec(),
    )
}

/// Where and how to push: `host:port`, and for HTTPS the CA to trust.
pub struct Target<'a> {
    pub addr: &'a str,
    pub ca: Option<&'a std::path::Path>,
}

async fn connect(t: &Target<'_>, host: &str) -> Result<Box<dyn Io>, String> {
    let stream = tokio::net::TcpStream::connect(t.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", t.addr))?;
    let ca = match t.ca {
        None => return Ok(Box::new(stream)),
        Some(ca) => ca,
    };
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?
    {
        roots
            .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS to {} as {host}: {e}", t.addr))?;
    Ok(Box::new(tls))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn request(
    t: &Target<'_>,
    host: &str,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: Vec<u8>,
) -> Result<http::Response<bytes::Bytes>, String> {
    let stream = connect(t, host).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-length", body.len());
    if let Some(c) = ctype {
        req = req.header("content-type", c);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let (parts, body) = resp.into_parts();
    let b = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(http::Response::from_parts(parts, b))
}

/// PUT `body` to `path`; anything but 201 Created is an error naming `what`.
async fn put_created(
    t: &Target<'_>,
    host: &str,
    path: &str,
    ctype: &str,
    body: Vec<u8>,
    what: &str,
) -> Result<(), String> {
    let r = request(t, host, "PUT", path, Some(ctype), body).await?;
    if r.status() != http::StatusCode::CREATED {
        return Err(format!(
            "{what}: HTTP {}: {}",
            r.status(),
            String::from_utf8_lossy(r.body())
        ));
    }
    Ok(())
}

async fn push_blob(addr: &Target<'_>, host: &str, blob: Vec<u8>) -> Result<(), String> {
    let d = digest(&blob);
    let head = request(
        addr,
        host,
        "HEAD",
        &format!("/v2/{PROBE_REPO}/blobs/{d}"),
        None,
        vec![],
    )
    .await?;
    if head.status().is_success() {
        return Ok(());
    }
    let start = request(
        addr,
        host,
        "POST",
        &format!("/v2/{PROBE_REPO}/blobs/uploads/"),
        None,
        vec![],
    )
    .await?;
    if start.status() != http::StatusCode::ACCEPTED {
        return Err(format!("starting an upload: HTTP {}", start.status()));
    }
    let loc = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("upload without Location")?;
    // Location may be absolute; keep its path and query
    let loc = match loc.find("://") {
        Some(i) => {
            let rest = &loc[i + 3..];
            &rest[rest.find('/').unwrap_or(rest.len())..]
        }
        None => loc,
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    put_created(
        addr,
        host,
        &format!("{loc}{sep}digest={d}"),
        "application/octet-stream",
        blob,
        &format!("uploading {d}"),
    )
    .await
}

/// Pushes the probe image to `addr` as `<name>/registry-node-setup/probe:1`, unless the registry
/// serves it itself (this version does, from memory: no push, so no push rights are needed).
pub async fn push(addr: &Target<'_>, name: &str) -> Result<(), String> {
    let path = format!("/v2/{PROBE_REPO}/manifests/{PROBE_TAG}");
    let head = request(addr, name, "HEAD", &path, None, vec![]).await?;
    let built_in = crate::probe_image::image().index.digest.to_string();
    let served = head
        .headers()
        .get("docker-content-digest")
        .is_some_and(|d| d.as_bytes() == built_in.as_bytes());
    if head.status().is_success() && served {
        return Ok(());
    }
    let (layer, config, manifest) = image();
    push_blob(addr, name, layer).await?;
    push_blob(addr, name, config).await?;
    put_created(
        addr,
        name,
        &format!("/v2/{PROBE_REPO}/manifests/{PROBE_TAG}"),
        "application/vnd.oci.image.manifest.v1+json",
        manifest,
        "pushing the manifest",
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_manifest_names_its_blobs() {
        let (layer, config, manifest) = super::image();
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["config"]["digest"], super::digest(&config));
        assert_eq!(m["layers"][0]["size"], layer.len());
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], super::digest(&layer));
    }
}
