//! HTTPS: the rustls server configuration, certificate reload, and the TLS accept loop.
//!
//! - [`TlsServer::load`] reads a PEM certificate chain and key (RSA, ECDSA or Ed25519; PKCS#8,
//!   PKCS#1 or SEC1) and, optionally, a client CA for mutual TLS. ALPN offers `h2` and `http/1.1`.
//! - The certificate is served through [`CertStore`], a [`ResolvesServerCert`] that hands out the
//!   current pair. [`TlsServer::reload_if_changed`] re-reads the files and swaps the pair when
//!   their bytes change (Kubernetes updates a mounted Secret by swapping a symlink, so the files
//!   are re-opened by path every time). Handshakes already done keep their keys: connections in
//!   flight are not touched. A broken new pair leaves the old one in place and is logged once.
//! - [`serve`] accepts TCP connections, runs the handshake, and serves HTTP/1.1 or HTTP/2 on each
//!   through hyper-util's auto builder; on shutdown it stops accepting and lets connections finish.
//!
//! The crypto provider is rustls' `ring` one: aws-lc-rs needs cmake and builds slowly.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use axum::Router;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The crypto provider every TLS object here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint of a DER certificate, as lowercase hex (what `openssl x509
/// -fingerprint -sha256` prints, without the colons).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses a PEM certificate chain (leaf first) and private key, and checks that they belong
/// together.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("certificate file is not valid PEM: {e}"))?;
    if chain.is_empty() {
        bail!("certificate file holds no CERTIFICATE block");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        anyhow!("key file holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}")
    })?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow!("unusable private key: {e}"))?;
    let ck = CertifiedKey::new(chain, key);
    // Insist on a positive match (CertifiedKey::from_der lets "unknown" pass).
    ck.keys_match()
        .map_err(|e| anyhow!("the key does not belong to the certificate: {e}"))?;
    Ok(ck)
}

/// Builds the verifier of client certificates from the PEM trust anchors read from `ca_file`.
fn client_verifier(
    ca_file: &Path,
    pem: &[u8],
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| anyhow!("tls_client_ca {}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow!("tls_client_ca {}: {e}", ca_file.display()))?;
        n += 1;
    }
    if n == 0 {
        bail!(
            "tls_client_ca {} holds no CERTIFICATE block",
            ca_file.display()
        );
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| anyhow!("tls_client_ca {}: {e}", ca_file.display()))
}

/// The current certificate and key; rustls asks it for the pair at every handshake.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, ck: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = ck;
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ck = self.get();
        f.debug_struct("CertStore")
            .field(
                "leaf_sha256",
                &ck.end_entity_cert().map(fingerprint).unwrap_or_default(),
            )
            .finish()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// What a reload check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files hold the bytes already seen.
    Unchanged,
    /// A new pair is in use; its leaf fingerprint.
    Reloaded(String),
    /// The files changed but do not form a usable pair; the old pair stays. The error.
    Failed(String),
}

/// The bytes last read from the certificate and key files, loaded or not.
#[derive(Default, PartialEq, Eq)]
struct Seen {
    cert: Vec<u8>,
    key: Vec<u8>,
    /// The client CA file's bytes (empty without mutual TLS).
    ca: Vec<u8>,
}

/// HTTPS settings and state: the rustls configuration and the reloadable certificate.
pub struct TlsServer {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    store: Arc<CertStore>,
    client_ca: Option<PathBuf>,
    seen: Mutex<Seen>,
    /// Swapped whole when the client CA changes; each handshake takes the current one.
    config: RwLock<Arc<ServerConfig>>,
}

/// The rustls configuration: the reloadable certificate, and client verification when a CA is
/// given.
fn server_config(
    provider: &Arc<CryptoProvider>,
    store: &Arc<CertStore>,
    client_ca: Option<(&Path, &[u8])>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        Some((path, pem)) => {
            builder.with_client_cert_verifier(client_verifier(path, pem, provider.clone())?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("store", &self.store)
            .finish()
    }
}

impl TlsServer {
    /// Loads the certificate and key (and the client CA, when given: then every client must
    /// present a certificate it signed).
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<TlsServer> {
        let provider = provider();
        let seen = Seen {
            cert: std::fs::read(cert)
                .with_context(|| format!("reading tls_cert {}", cert.display()))?,
            key: std::fs::read(key)
                .with_context(|| format!("reading tls_key {}", key.display()))?,
            ca: match client_ca {
                Some(ca) => std::fs::read(ca)
                    .with_context(|| format!("reading tls_client_ca {}", ca.display()))?,
                None => Vec::new(),
            },
        };
        let ck = certified_key_from_pem(&seen.cert, &seen.key, &provider)
            .with_context(|| format!("tls_cert {} / tls_key {}", cert.display(), key.display()))?;
        let store = Arc::new(CertStore {
            current: RwLock::new(Arc::new(ck)),
        });
        let config = server_config(&provider, &store, client_ca.map(|p| (p, &seen.ca[..])))?;
        Ok(TlsServer {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            provider,
            store,
            client_ca: client_ca.map(Path::to_owned),
            seen: Mutex::new(seen),
            config: RwLock::new(config),
        })
    }

    /// The rustls server configuration (ALPN `h2`, `http/1.1`).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The SHA-256 fingerprint of the leaf certificate served now.
    pub fn current_fingerprint(&self) -> String {
        self.store
            .get()
            .end_entity_cert()
            .map(fingerprint)
            .unwrap_or_default()
    }

    /// Re-reads the certificate, key and client CA files; when their bytes differ from the last
    /// ones seen, loads them and, if usable, serves them from the next handshake on.
    pub fn reload_if_changed(&self) -> Reload {
        let read = || -> anyhow::Result<Seen> {
            Ok(Seen {
                cert: std::fs::read(&self.cert_path)
                    .with_context(|| format!("reading {}", self.cert_path.display()))?,
                key: std::fs::read(&self.key_path)
                    .with_context(|| format!("reading {}", self.key_path.display()))?,
                ca: match &self.client_ca {
                    Some(ca) => {
                        std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?
                    }
                    None => Vec::new(),
                },
            })
        };
        let now = match read() {
            Ok(s) => s,
            Err(e) => return Reload::Failed(format!("{e:#}")),
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == now {
            return Reload::Unchanged;
        }
        if seen.ca != now.ca {
            let ca = self.client_ca.as_deref().map(|p| (p, &now.ca[..]));
            match server_config(&self.provider, &self.store, ca) {
                Ok(c) => *self.config.write().unwrap_or_else(PoisonError::into_inner) = c,
                Err(e) => {
                    seen.ca = now.ca;
                    return Reload::Failed(format!("{e:#}; keeping the previous client CA"));
                }
            }
            if seen.cert == now.cert && seen.key == now.key {
                *seen = now;
                return Reload::Reloaded(self.current_fingerprint());
            }
        }
        let result = certified_key_from_pem(&now.cert, &now.key, &self.provider);
        *seen = now;
        match result {
            Ok(ck) => {
                let fp = ck.end_entity_cert().map(fingerprint).unwrap_or_default();
                self.store.set(Arc::new(ck));
                Reload::Reloaded(fp)
            }
            Err(e) => Reload::Failed(format!("{e:#}")),
        }
    }

    /// Checks the files every `interval` until `shutdown` turns true, logging each outcome once.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut last_error = String::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|v| *v) => return,
            }
            let this = self.clone();
            let outcome = match tokio::task::spawn_blocking(move || this.reload_if_changed()).await
            {
                Ok(o) => o,
                Err(e) => Reload::Failed(format!("reload task failed: {e}")),
            };
            match outcome {
                Reload::Unchanged => {}
                Reload::Reloaded(fp) => {
                    last_error.clear();
                    tracing::info!(
                        cert = %self.cert_path.display(),
                        sha256 = %fp,
                        "TLS certificate reloaded; new connections get the new certificate"
                    );
                }
                Reload::Failed(e) => {
                    if e != last_error {
                        tracing::error!(
                            cert = %self.cert_path.display(),
                            key = %self.key_path.display(),
                            error = %e,
                            serving_sha256 = %self.current_fingerprint(),
                            "TLS certificate reload failed; keeping the previous certificate"
                        );
                        last_error = e;
                    }
                }
            }
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` turns true; then stops accepting and
/// waits for the open connections to finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<TlsServer>,
    app: Router,
    limits: crate::listen::Limits,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let builder = Arc::new(crate::listen::http_builder(&limits));
    let conn_shutdown = shutdown.clone();
    crate::listen::accept_loop(listener, shutdown, move |tcp, peer, watcher| {
        // The configuration in force now: a reloaded client CA applies from the next handshake.
        let acceptor = TlsAcceptor::from(tls.config());
        let builder = builder.clone();
        let app = app.clone();
        let mut conn_shutdown = conn_shutdown.clone();
        async move {
            let activity = crate::listen::Activity::new();
            let io = crate::listen::ActiveIo::new(tcp, activity.clone());
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io));
            let stream = tokio::select! {
                res = handshake => match res {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = conn_shutdown.wait_for(|v| *v) => return,
            };
            // Requests learn that they came over TLS, and from which verified client certificate.
            let client = crate::auth::TlsClient::from_chain(stream.get_ref().1.peer_certificates());
            let app = app.layer(axum::Extension(client));
            crate::listen::serve_connection(
                stream, activity, peer, &builder, app, watcher, limits, None,
            )
            .await;
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn pair(alg: &'static rcgen::SignatureAlgorithm, name: &str) -> (String, String) {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    // An RSA key (PKCS#1, "BEGIN RSA PRIVATE KEY") and a self-signed certificate for it, made
    // once with `openssl req -x509 -newkey rsa:2048 -nodes -traditional`: ring cannot generate
    // RSA keys, and RSA pairs must load.
    const RSA_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIDJzCCAg+gAwIBAgIUCRLB2z4Y9+C8/Tjp8vqm2NIAmI4wDQYJKoZIhvcNAQEL\n\
BQAwFjEUMBIGA1UEAwwLcnNhLmV4YW1wbGUwIBcNMjYxMTI0MjIxNTExWhgPMjEy\n\
NjEwMzEyMjE1MTFaMBYxFDASBgNVBAMMC3JzYS5leGFtcGxlMIIBIjANBgkqhkiG\n\
9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoqB0IzTjpimmHOuEF8YrDIH4yVfY66hK/qgV\n\
O46PWdVgpDHObQSW/tL+1KHM9v0C6PTm38nUT2PZ6WHYntUMfdYCaOqh/ZD71km6\n\
66ZhhpVyj2qWgrLTl+3Jxejod/1shHxE8V+gGndG+RI/kTJHVRL5pFFJCdfJh3P/\n\
4+evzY7QIbK6eg6ad/IE5oHUg+hvj6T1578hPjwKCI+Iltc7DVCGD1wu7ywe78Tc\n\
q0yQIRkA6ohXMzEQOkXxGFTbgf8lOuTLc8XTOylCp3mYwPykYBPnoWzI/q9XdSAY\n\
Mderi31UAoyYv/pcX2z4SlI9b7jNFqhMAFigh145saS3m5iYZQIDAQABo2swaTAd\n\
BgNVHQ4EFgQUcjAuHWm7IbvqGDlOGCowpQInD2swHwYDVR0jBBgwFoAUcjAuHWm7\n\
IbvqGDlOGCowpQInD2swDwYDVR0TAQH/BAUwAwEB/zAWBgNVHREEDzANggtyc2Eu\n\
ZXhhbXBsZTANBgkqhkiG9w0BAQsFAAOCAQEAMmV/f9KRo5PlH4NPDTBKdRrDTSoX\n\
q+e24E2ibiF88h+bmTR/FaaBRsivKae1fTjGf/ttr5mYVU6PNaK6wa9yBLv5ZGVI\n\
cEmZzAncXERGx/NcWTUpVydiGsR32rj9GMam/GDPF8MsISyXZq4o1GPPcYpgPXO3\n\
W+YanXilCj0+dGiynp3NOHj0OSwAXmTeUcyledLYwtDgP4Ea4Aehx6o7cnlQPPoD\n\
qyqWDUNiaTH2uN09oksz0URuqbVsgm21DeVULC+oInCbjj7sUsnea6skiPESEre4\n\
7++B0SXu2KedSzZ6Hv5ul3FyY7fzxKB+7keHzVgPVc1LwQ6fwbyRYaXKxg==\n\
-----END CERTIFICATE-----\n\
";
    const RSA_KEY: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEpAIBAAKCAQEAoqB0IzTjpimmHOuEF8YrDIH4yVfY66hK/qgVO46PWdVgpDHO\n\
bQSW/tL+1KHM9v0C6PTm38nUT2PZ6WHYntUMfdYCaOqh/ZD71km666ZhhpVyj2qW\n\
grLTl+3Jxejod/1shHxE8V+gGndG+RI/kTJHVRL5pFFJCdfJh3P/4+evzY7QIbK6\n\
eg6ad/IE5oHUg+hvj6T1578hPjwKCI+Iltc7DVCGD1wu7ywe78Tcq0yQIRkA6ohX\n\
MzEQOkXxGFTbgf8lOuTLc8XTOylCp3mYwPykYBPnoWzI/q9XdSAYMderi31UAoyY\n\
v/pcX2z4SlI9b7jNFqhMAFigh145saS3m5iYZQIDAQABAoIBAEEudY4c5zeUzucd\n\
gJK001FOkMRGiQOfLvvVq7j0wUEc1IDLE7U/VzPopsnb1haSv0VWz2iX8Rgm6dLw\n\
bE3xD3IqQkoB7Q6AO2geoiRMSh+Sq9mOu6fD/CoTXUGNQgvBz+pkEo/6J2YkM5al\n\
+UN9dvjCw7tX9yHSUwyO8lvK43xMIqM2+xEv7c8Nh7H56E1W3eaTSoMBkyhN5IGY\n\
5gD8gImFRcYsfGn5ZClmiZ0J3IF6KTSmUyAipHu1yIGh2PFH1gI8XMrns5V7REKf\n\
luH9Zx9nFk1XmDF4Z3xkm2FFRoxj7I9+h3kgKnM0q+WSbER6myGv9jRLmS9Ge9qm\n\
k+chMtsCgYEA33k5p45xQv8G8J+gWnyaSUSWDb1Q9Ykv+P77AJBhb36GvFyl/4Xu\n\
3G8YXzAGPMBoiT6eZpK6+SM2e+lh+F7mVhI1WapBEU08WK1WTNlvB4Bfz1F/9qu5\n\
Y55FsPAFpv+307WQXALRfUTMVdprDqRopI8XwS5HvwakTw74HnRd3DcCgYEAukwJ\n\
dhfEtJHwAhnKWhMCKJlB4IRnTFyqhZfqNhe8Eo5qNQZw3eMdDF3EV9PcM8w4CmmL\n\
R8ZewyP2GgpsMYveCKnvvh/DzIQ6WPgbebHcPdG7EO9tXpOR9I19dsTVMRpAb6zP\n\
kntPa6zOB6QQlbnuvMV1toEFZoGSjnjhMP84ukMCgYEAkgZcrihdyjFrD4C+/2G8\n\
T3QJuSCj7k2ek03KJiwx/vDmid7geX/C/Td67XgsGzZ/GG9aghwPIQzpZT6zTeB1\n\
EnkDc3vU2MFnVWquobjS3Ev+TzIqM70yfu3FDEFK8DzYmfZiRj1xNjHmc5MtsXut\n\
BRqboxfiuehVJXPancvcKTECgYBDfsjuwC3EPht2p2FowPpHOz9i2JWUVP5y6Fcy\n\
weah0ncoPu0lduNPV6mLKHbfTV4AZ7zOhFBQ4vaG+L+6M7J98ROrDlciAcYh9cH+\n\
lTH2M8ZSnGxDl7OJprmODkIvSBOQYkvSBlr/59u9aPOZS4PzYJcFSDlsqgUvGRx9\n\
Y/ppgQKBgQCoeuIPDSQOkWZfhaAKk43kst+E4P6qhHjwwNUGqxE15a3FdSORLIba\n\
zBnDLT8DaxrPjZA1w3G8cXyvN+l3RV6mXZTCXXM22j/Y5bJZFADYh3ZzafYdZL8O\n\
PW72TBjNZhuOgUAW9bs3+dQVSZLoOl9KBfDcvsu9XNMyeHjUMdwWHg==\n\
-----END RSA PRIVATE KEY-----\n\
";

    #[test]
    fn loads_ecdsa_ed25519_and_rsa_pairs() {
        let p = provider();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (c, k) = pair(alg, "a.example");
            certified_key_from_pem(c.as_bytes(), k.as_bytes(), &p)
                .unwrap_or_else(|e| panic!("{alg:?}: {e:#}"));
        }
        assert!(RSA_KEY.contains("BEGIN RSA PRIVATE KEY"));
        certified_key_from_pem(RSA_CERT.as_bytes(), RSA_KEY.as_bytes(), &p).unwrap();
    }

    #[test]
    fn rejects_mismatched_or_missing_parts() {
        let p = provider();
        let (c1, _k1) = pair(&rcgen::PKCS_ECDSA_P256_SHA256, "a.example");
        let (_c2, k2) = pair(&rcgen::PKCS_ECDSA_P256_SHA256, "b.example");
        let e = certified_key_from_pem(c1.as_bytes(), k2.as_bytes(), &p).unwrap_err();
        assert!(format!("{e:#}").contains("does not belong"), "{e:#}");
        let e = certified_key_from_pem(b"", k2.as_bytes(), &p).unwrap_err();
        assert!(format!("{e:#}").contains("no CERTIFICATE"), "{e:#}");
        let e = certified_key_from_pem(c1.as_bytes(), b"junk", &p).unwrap_err();
        assert!(format!("{e:#}").contains("private key"), "{e:#}");
    }

    #[test]
    fn reload_swaps_on_change_and_keeps_old_pair_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (c1, k1) = pair(&rcgen::PKCS_ECDSA_P256_SHA256, "one.example");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let tls = TlsServer::load(&cert, &key, None).unwrap();
        let fp1 = tls.current_fingerprint();
        assert_eq!(tls.reload_if_changed(), Reload::Unchanged);

        // A new pair, swapped in through a symlinked folder like a Kubernetes Secret volume.
        let (c2, k2) = pair(&rcgen::PKCS_ED25519, "two.example");
        let v2 = dir.path().join("v2");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("tls.crt"), &c2).unwrap();
        std::fs::write(v2.join("tls.key"), &k2).unwrap();
        std::fs::remove_file(&cert).unwrap();
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(v2.join("tls.crt"), &cert).unwrap();
        std::os::unix::fs::symlink(v2.join("tls.key"), &key).unwrap();
        let Reload::Reloaded(fp2) = tls.reload_if_changed() else {
            panic!("expected a reload")
        };
        assert_ne!(fp1, fp2);
        assert_eq!(tls.current_fingerprint(), fp2);
        assert_eq!(tls.reload_if_changed(), Reload::Unchanged);

        // A certificate without its key: the old pair stays, the failure is reported once.
        let (c3, _k3) = pair(&rcgen::PKCS_ECDSA_P256_SHA256, "three.example");
        std::fs::write(v2.join("tls.crt"), &c3).unwrap();
        match tls.reload_if_changed() {
            Reload::Failed(e) => assert!(e.contains("does not belong"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(tls.current_fingerprint(), fp2);
        assert_eq!(tls.reload_if_changed(), Reload::Unchanged);
    }

    #[test]
    fn reload_picks_up_a_changed_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pair(&rcgen::PKCS_ECDSA_P256_SHA256, "localhost");
        let (ca1, _) = pair(&rcgen::PKCS_ECDSA_P256_SHA256, "ca one");
        let (ca2, _) = pair(&rcgen::PKCS_ED25519, "ca two");
        let (cert, key, ca) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("ca.crt"),
        );
        std::fs::write(&cert, &c).unwrap();
        std::fs::write(&key, &k).unwrap();
        std::fs::write(&ca, &ca1).unwrap();
        let tls = TlsServer::load(&cert, &key, Some(&ca)).unwrap();
        let before = tls.config();
        assert_eq!(tls.reload_if_changed(), Reload::Unchanged);
        std::fs::write(&ca, &ca2).unwrap();
        assert!(matches!(tls.reload_if_changed(), Reload::Reloaded(_)));
        let after = tls.config();
        assert!(
            !Arc::ptr_eq(&before, &after),
            "a new CA gives a new configuration"
        );
        std::fs::write(&ca, "not a certificate").unwrap();
        assert!(matches!(tls.reload_if_changed(), Reload::Failed(_)));
        assert!(
            Arc::ptr_eq(&after, &tls.config()),
            "a broken CA keeps the previous one"
        );
    }

    #[test]
    fn alpn_offers_h2_and_http11() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pair(&rcgen::PKCS_ECDSA_P256_SHA256, "a.example");
        std::fs::write(dir.path().join("c"), c).unwrap();
        std::fs::write(dir.path().join("k"), k).unwrap();
        let tls = TlsServer::load(&dir.path().join("c"), &dir.path().join("k"), None).unwrap();
        assert_eq!(
            tls.config().alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
