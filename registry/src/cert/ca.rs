//! The private CA of `registry cert`: generating or loading it, and the server and client
//! certificates it signs, as PEM.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;

/// Key algorithm of the generated keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (understood by every TLS client).
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A certificate with its key, as PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

/// A CA able to sign certificates.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
    /// The CA certificate as it is distributed (for a loaded CA, the original PEM).
    pem: String,
}

fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = SystemTime::now();
    // A little slack for clocks that lag behind the one signing.
    let not_before = now - Duration::from_secs(3600);
    let not_after = now + Duration::from_secs(u64::from(days) * 86_400);
    (not_before.into(), not_after.into())
}

/// The key as PEM PKCS#8. ring writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the public key),
/// which OpenSSL 3.0 refuses to read; those are rewritten as the v1 form (RFC 8410) that every
/// tool reads, rustls included.
fn key_pem(key: &KeyPair) -> String {
    const V2_PREFIX: [u8; 16] = [
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let der = key.serialize_der();
    if key.algorithm() != &rcgen::PKCS_ED25519 || der.len() < 48 || der[..16] != V2_PREFIX {
        return key.serialize_pem();
    }
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(&der[16..48]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&v1);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn short_id(key: &KeyPair) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.public_key_der())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Ca {
    /// Creates a new CA valid for `days`.
    pub fn generate(key_type: KeyType, days: u32) -> anyhow::Result<Ca> {
        let key = KeyPair::generate_for(key_type.algorithm())?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "registry");
        dn.push(
            DnType::CommonName,
            format!("registry CA {}", short_id(&key)),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(days);
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        Ok(Ca { cert, key, pem })
    }

    /// Loads a CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::from_pem(key_pem)
            .context("parsing the CA key (PKCS#8 PEM, \"BEGIN PRIVATE KEY\")")?;
        let params =
            CertificateParams::from_ca_cert_pem(cert_pem).context("parsing the CA certificate")?;
        if params.is_ca == IsCa::NoCa || params.is_ca == IsCa::ExplicitNoCa {
            bail!("the CA certificate is not a CA (basicConstraints CA:TRUE missing)");
        }
        // Re-signing the parsed parameters yields an issuer with the original subject and key
        // identifier, which is all that signing needs.
        let cert = params
            .self_signed(&key)
            .context("the CA key does not fit the CA certificate")?;
        let ca = Ca {
            cert,
            key,
            pem: cert_pem.to_string(),
        };
        // The key must be the one the certificate certifies.
        crate::tls::certified_key_from_pem(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            &crate::tls::provider(),
        )
        .context("the CA certificate and key")?;
        Ok(ca)
    }

    /// Reads `DIR/ca.crt` and `DIR/ca.key`.
    pub fn load(dir: &Path) -> anyhow::Result<Ca> {
        let (c, k) = (dir.join("ca.crt"), dir.join("ca.key"));
        let cert =
            std::fs::read_to_string(&c).with_context(|| format!("reading {}", c.display()))?;
        let key =
            std::fs::read_to_string(&k).with_context(|| format!("reading {}", k.display()))?;
        Ca::from_pem(&cert, &key).with_context(|| format!("CA in {}", dir.display()))
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The CA key (PKCS#8 PEM).
    pub fn key_pem(&self) -> String {
        key_pem(&self.key)
    }

    /// Issues a server certificate for these DNS names and addresses.
    pub fn issue_server(
        &self,
        dns: &[String],
        ips: &[IpAddr],
        key_type: KeyType,
        days: u32,
    ) -> anyhow::Result<PemPair> {
        if dns.is_empty() && ips.is_empty() {
            bail!("a server certificate needs at least one DNS name or IP address");
        }
        let mut params = CertificateParams::default();
        for d in dns {
            let name = d
                .clone()
                .try_into()
                .map_err(|e| anyhow!("DNS name {d:?}: {e}"))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let cn = dns.first().cloned().unwrap_or_else(|| ips[0].to_string());
        self.issue(
            params,
            &cn,
            ExtendedKeyUsagePurpose::ServerAuth,
            key_type,
            days,
        )
    }

    /// Issues a client certificate with common name `name`.
    pub fn issue_client(
        &self,
        name: &str,
        key_type: KeyType,
        days: u32,
    ) -> anyhow::Result<PemPair> {
        self.issue(
            CertificateParams::default(),
            name,
            ExtendedKeyUsagePurpose::ClientAuth,
            key_type,
            days,
        )
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
        key_type: KeyType,
        days: u32,
    ) -> anyhow::Result<PemPair> {
        let key = KeyPair::generate_for(key_type.algorithm())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(days);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(PemPair {
            cert: cert.pem(),
            key: key_pem(&key),
        })
    }
}
