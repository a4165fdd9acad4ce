//! `registry cert`: a private CA and certificates signed by it, so that nodes can trust the
//! registry's service name without the Kubernetes CSR API or a person approving anything.
//!
//! - Without `--ca`: creates a CA and a server certificate; writes `ca.crt`, `ca.key`, `tls.crt`,
//!   `tls.key` into `--out`.
//! - With `--ca DIR`: signs with the CA in `DIR/ca.crt` + `DIR/ca.key` instead (a new server
//!   certificate for the same CA, e.g. to rotate it); writes `tls.crt`, `tls.key` (and `ca.crt`).
//! - With `--client NAME` (needs `--ca`): a client certificate for mutual TLS; writes `NAME.crt`,
//!   `NAME.key`.
//! - `--secret NAME [--namespace NS]` prints a `kubernetes.io/tls` Secret (with `ca.crt`).
//!
//! Existing files are never overwritten without `--force`. Keys are written with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine;

mod ca;

pub use ca::{Ca, KeyType, PemPair};

/// Names a server certificate covers when no `--dns`/`--ip` is given: the in-cluster names of
/// the `builds` Service in the `registry` namespace, and loopback.
pub const DEFAULT_DNS: &[&str] = &[
    "builds.registry.svc.cluster.local",
    "builds.registry.svc",
    "builds.registry",
    "localhost",
];
/// Addresses a server certificate covers when no `--dns`/`--ip` is given.
pub const DEFAULT_IPS: &[&str] = &["127.0.0.1"];

/// The `registry cert` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CertArgs {
    /// Folder to write the PEM files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The names a server certificate covers.
    #[command(flatten)]
    pub names: ServerNames,
    /// Sign with the existing CA in DIR/ca.crt and DIR/ca.key instead of creating a CA.
    #[arg(long, value_name = "DIR")]
    pub ca: Option<PathBuf>,
    /// Issue a client certificate (for mutual TLS) with this common name instead of a server
    /// certificate; needs --ca. Writes NAME.crt and NAME.key.
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    /// Print a Kubernetes Secret manifest (type kubernetes.io/tls, plus ca.crt) with this name
    /// on standard output.
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// Namespace of the Secret manifest.
    #[arg(long, value_name = "NS", default_value = "registry")]
    pub namespace: String,
    /// Days the server or client certificate is valid.
    #[arg(long, default_value_t = 397)]
    pub days: u32,
    /// Days a new CA is valid.
    #[arg(long, default_value_t = 3650)]
    pub ca_days: u32,
    /// Key algorithm for new keys.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// The names a server certificate covers: `--dns` and `--ip`, or the defaults when neither is
/// given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerNames {
    /// DNS name for the server certificate; repeatable. Without --dns and --ip:
    /// builds.registry.svc.cluster.local, builds.registry.svc, builds.registry, localhost,
    /// 127.0.0.1.
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address for the server certificate; repeatable.
    #[arg(long, value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
}

impl ServerNames {
    /// Whether neither `--dns` nor `--ip` was given.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ip.is_empty()
    }

    /// The names given, or [`DEFAULT_DNS`] and [`DEFAULT_IPS`] when none is.
    pub fn or_defaults(&self) -> (Vec<String>, Vec<IpAddr>) {
        if !self.is_empty() {
            return (self.dns.clone(), self.ip.clone());
        }
        let dns = DEFAULT_DNS.iter().map(|s| s.to_string()).collect();
        let ips = DEFAULT_IPS
            .iter()
            .map(|s| s.parse().expect("default IP parses"))
            .collect();
        (dns, ips)
    }
}

/// A Kubernetes Secret of type `kubernetes.io/tls` holding the pair and the CA certificate.
pub fn secret_manifest(name: &str, namespace: &str, pair: &PemPair, ca_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
        b64(&pair.cert),
        b64(&pair.key),
        b64(ca_pem),
    )
}

/// A Kubernetes object name: lowercase letters, digits, '-' and '.', at most 253 characters.
fn check_k8s_name(what: &str, s: &str) -> anyhow::Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric();
    if !ok {
        bail!("{what} {s:?} is not a valid Kubernetes name (lowercase letters, digits, '-', '.')");
    }
    Ok(())
}

/// Writes `files` into `dir`, refusing (before writing anything) when one exists and `force` is
/// off. Names ending in `.key` get mode 0600.
fn write_files(dir: &Path, files: &[(&str, &str)], force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !force {
        let existing: Vec<String> = files
            .iter()
            .map(|(n, _)| dir.join(n))
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "refusing to overwrite {} (pass --force to replace)",
                existing.join(", ")
            );
        }
    }
    for (name, content) in files {
        let path = dir.join(name);
        let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
        // Write a new file and rename it over the old one: readers never see half a file.
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(content.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs `registry cert`: returns what to print on standard output (the Secret manifest, if
/// asked for); progress goes to standard error.
pub fn run(args: &CertArgs) -> anyhow::Result<String> {
    if args.out.is_none() && args.secret.is_none() {
        bail!(
            "nothing to do: give --out DIR (write PEM files) and/or --secret NAME (print a Secret)"
        );
    }
    if let Some(s) = &args.secret {
        check_k8s_name("--secret", s)?;
        check_k8s_name("--namespace", &args.namespace)?;
    }
    if args.days == 0 || args.ca_days == 0 {
        bail!("--days and --ca-days must be at least 1");
    }
    let (ca, new_ca) = match &args.ca {
        Some(dir) => (Ca::load(dir)?, false),
        None => (Ca::generate(args.key_type, args.ca_days)?, true),
    };
    let (pair, files) = match &args.client {
        Some(name) => client_files(args, &ca, name, new_ca)?,
        None => server_files(args, &ca, new_ca)?,
    };
    if let Some(dir) = &args.out {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        write_files(dir, &refs, args.force)?;
        for (n, _) in &files {
            eprintln!("registry cert: wrote {}", dir.join(n).display());
        }
    }
    Ok(match &args.secret {
        Some(name) => secret_manifest(name, &args.namespace, &pair, ca.cert_pem()),
        None => String::new(),
    })
}

/// A client certificate for `name` and the files that hold it.
fn client_files(
    args: &CertArgs,
    ca: &Ca,
    name: &str,
    new_ca: bool,
) -> anyhow::Result<(PemPair, Vec<(String, String)>)> {
    if new_ca {
        bail!("--client needs --ca DIR: a client certificate must come from the CA the registry trusts");
    }
    if !args.names.is_empty() {
        bail!("--dns and --ip are for server certificates, not with --client");
    }
    let file_ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !file_ok {
        bail!("--client {name:?}: use letters, digits, '-', '_', '.', '@' (it names the files)");
    }
    let pair = ca.issue_client(name, args.key_type, args.days)?;
    let files = vec![
        (format!("{name}.crt"), pair.cert.clone()),
        (format!("{name}.key"), pair.key.clone()),
    ];
    Ok((pair, files))
}

/// A server certificate and the files that hold it, with the CA's certificate (and key, for a
/// new CA).
fn server_files(
    args: &CertArgs,
    ca: &Ca,
    new_ca: bool,
) -> anyhow::Result<(PemPair, Vec<(String, String)>)> {
    let mut files: Vec<(String, String)> = Vec::new();
    let (dns, ips) = args.names.or_defaults();
    let pair = ca.issue_server(&dns, &ips, args.key_type, args.days)?;
    files.push(("tls.crt".into(), pair.cert.clone()));
    files.push(("tls.key".into(), pair.key.clone()));
    let same_dir = match (&args.ca, &args.out) {
        (Some(a), Some(b)) => {
            a.canonicalize().ok().is_some() && a.canonicalize().ok() == b.canonicalize().ok()
        }
        _ => false,
    };
    if !same_dir {
        files.push(("ca.crt".into(), ca.cert_pem().to_string()));
    }
    if new_ca {
        files.push(("ca.key".into(), ca.key_pem()));
    }
    let names: Vec<String> = dns
        .iter()
        .cloned()
        .chain(ips.iter().map(|i| i.to_string()))
        .collect();
    eprintln!("registry cert: server certificate for {}", names.join(", "));
    Ok((pair, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    fn args(out: &Path) -> CertArgs {
        CertArgs {
            out: Some(out.to_owned()),
            names: ServerNames::default(),
            ca: None,
            client: None,
            secret: None,
            namespace: "registry".into(),
            days: 30,
            ca_days: 60,
            key_type: KeyType::EcdsaP256,
            force: false,
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// A root store trusting only the CA certificate `ca`.
    fn roots(ca: &str) -> std::sync::Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        roots.into()
    }

    /// Verifies `leaf` as a server certificate for `name` against `ca` with webpki (what rustls
    /// clients do).
    fn verify_server(ca: &str, leaf: &str, name: &str) -> Result<(), rustls::Error> {
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(ca),
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
        v.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
    }

    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn creates_ca_and_server_cert_for_the_default_names() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(&args(dir.path())).unwrap();
        assert_eq!(out, "");
        for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (ca, leaf) = (
            read(&dir.path().join("ca.crt")),
            read(&dir.path().join("tls.crt")),
        );
        for name in [
            "builds.registry.svc.cluster.local",
            "builds.registry.svc",
            "builds.registry",
            "localhost",
            "127.0.0.1",
        ] {
            verify_server(&ca, &leaf, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(verify_server(&ca, &leaf, "other.example").is_err());
        // The pair loads as a server certificate.
        crate::tls::certified_key_from_pem(
            leaf.as_bytes(),
            read(&dir.path().join("tls.key")).as_bytes(),
            &crate::tls::provider(),
        )
        .unwrap();
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        run(&args(dir.path())).unwrap();
        let before = read(&dir.path().join("tls.crt"));
        let e = run(&args(dir.path())).unwrap_err();
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        assert_eq!(read(&dir.path().join("tls.crt")), before);
        run(&CertArgs {
            force: true,
            ..args(dir.path())
        })
        .unwrap();
        assert_ne!(read(&dir.path().join("tls.crt")), before);
    }

    #[test]
    fn existing_ca_signs_new_server_and_client_certs() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        run(&args(&ca_dir)).unwrap();
        let ca = read(&ca_dir.join("ca.crt"));
        // Rotation: a new server certificate from the same CA, only for the given names.
        let next = dir.path().join("next");
        run(&CertArgs {
            ca: Some(ca_dir.clone()),
            names: ServerNames {
                dns: vec!["reg.example".into()],
                ip: vec!["10.1.2.3".parse().unwrap()],
            },
            key_type: KeyType::Ed25519,
            ..args(&next)
        })
        .unwrap();
        assert!(!next.join("ca.key").exists());
        assert_eq!(read(&next.join("ca.crt")), ca);
        let leaf = read(&next.join("tls.crt"));
        verify_server(&ca, &leaf, "reg.example").unwrap();
        verify_server(&ca, &leaf, "10.1.2.3").unwrap();
        assert!(verify_server(&ca, &leaf, "localhost").is_err());

        // A client certificate accepted by a verifier that trusts the CA.
        let clients = dir.path().join("clients");
        run(&CertArgs {
            ca: Some(ca_dir.clone()),
            client: Some("builder-1".into()),
            ..args(&clients)
        })
        .unwrap();
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&ca),
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        let client =
            CertificateDer::from_pem_slice(read(&clients.join("builder-1.crt")).as_bytes())
                .unwrap();
        v.verify_client_cert(&client, &[], UnixTime::now()).unwrap();
        // ... and one from another CA is not.
        let other = Ca::generate(KeyType::EcdsaP256, 1).unwrap();
        let stranger = other.issue_client("x", KeyType::EcdsaP256, 1).unwrap();
        let stranger = CertificateDer::from_pem_slice(stranger.cert.as_bytes()).unwrap();
        assert!(v
            .verify_client_cert(&stranger, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn client_needs_an_existing_ca_and_a_ca_key_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(&CertArgs {
            client: Some("c".into()),
            ..args(dir.path())
        })
        .unwrap_err();
        assert!(e.to_string().contains("--ca"), "{e}");
        let a = Ca::generate(KeyType::EcdsaP256, 1).unwrap();
        let b = Ca::generate(KeyType::EcdsaP256, 1).unwrap();
        assert!(Ca::from_pem(a.cert_pem(), &a.key_pem()).is_ok());
        assert!(Ca::from_pem(a.cert_pem(), &b.key_pem()).is_err());
    }

    #[test]
    fn ed25519_keys_are_written_as_pkcs8_v1_and_still_work() {
        let ca = Ca::generate(KeyType::Ed25519, 1).unwrap();
        let pem = ca.key_pem();
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        // SEQUENCE of 46 bytes, version 0
        assert_eq!(&der.secret_der()[..5], &[0x30, 0x2e, 0x02, 0x01, 0x00]);
        // the rewritten CA key still signs: reload the CA from PEM and issue a server cert
        let again = Ca::from_pem(ca.cert_pem(), &pem).unwrap();
        let pair = again
            .issue_server(&["a.example".into()], &[], KeyType::Ed25519, 1)
            .unwrap();
        crate::tls::certified_key_from_pem(
            pair.cert.as_bytes(),
            pair.key.as_bytes(),
            &crate::tls::provider(),
        )
        .unwrap();
        verify_server(ca.cert_pem(), &pair.cert, "a.example").unwrap();
    }

    #[test]
    fn secret_manifest_holds_the_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(&CertArgs {
            secret: Some("registry-tls".into()),
            namespace: "registry".into(),
            ..args(dir.path())
        })
        .unwrap();
        assert!(out.contains("kind: Secret\n"));
        assert!(out.contains("type: kubernetes.io/tls\n"));
        assert!(out.contains("  name: registry-tls\n  namespace: registry\n"));
        let field = |k: &str| -> String {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("  {k}: ")))
                .unwrap();
            let b = base64::engine::general_purpose::STANDARD
                .decode(line.split_once(": ").unwrap().1)
                .unwrap();
            String::from_utf8(b).unwrap()
        };
        assert_eq!(field("tls.crt"), read(&dir.path().join("tls.crt")));
        assert_eq!(field("tls.key"), read(&dir.path().join("tls.key")));
        assert_eq!(field("ca.crt"), read(&dir.path().join("ca.crt")));
        assert!(!out.contains("ca.key"));
        let e = run(&CertArgs {
            secret: Some("Bad_Name".into()),
            out: None,
            ..args(dir.path())
        })
        .unwrap_err();
        assert!(e.to_string().contains("Kubernetes name"), "{e}");
    }
}
