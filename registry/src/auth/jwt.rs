//! JSON Web Tokens, verified with `ring` (already in the tree through rustls): Kubernetes
//! ServiceAccount tokens against a JWKS (RS256/384/512, PS256, ES256, ES384), and the registry's
//! own short-lived bearer tokens (HS256 with the shared signing key).
//!
//! No JWT crate: the checks are few and explicit here (the algorithm comes from the key, never
//! from the token alone; `none` and unknown `kid`s are rejected; issuer, audience, `exp` and
//! `nbf` are checked), and `ring` does the cryptography.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Longest token accepted, in bytes (Kubernetes tokens are about 1 KiB).
pub const MAX_TOKEN_LEN: usize = 8192;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY: u64 = 30;

/// Why a token was refused. The text never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token")]
    Malformed,
    /// `alg` is `none` or not supported.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// No key in the JWKS has the token's `kid` (and algorithm).
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature invalid")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("token issuer not accepted")]
    Issuer,
    /// The audience is not ours.
    #[error("token audience not accepted")]
    Audience,
    /// The subject is not a ServiceAccount.
    #[error("token subject is not a ServiceAccount")]
    Subject,
}

/// Decodes base64url without padding (padding tolerated).
pub fn b64d(s: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)
}

/// Encodes base64url without padding.
pub fn b64e(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The parts of a compact JWS.
struct Parts<'a> {
    header: Header,
    signed: &'a str,
    payload: Vec<u8>,
    sig: Vec<u8>,
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut it = token.split('.');
    let (h, p, s) = match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err(TokenError::Malformed),
    };
    let header: Header = serde_json::from_slice(&b64d(h)?).map_err(|_| TokenError::Malformed)?;
    Ok(Parts {
        header,
        signed: &token[..h.len() + 1 + p.len()],
        payload: b64d(p)?,
        sig: b64d(s)?,
    })
}

/// The `kid` and `alg` of a token's header, if it parses.
pub fn peek_header(token: &str) -> Option<(String, Option<String>)> {
    let h = token.split('.').next()?;
    let header: Header = serde_json::from_slice(&b64d(h).ok()?).ok()?;
    Some((header.alg, header.kid))
}

/// One key of a JWKS.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// A JSON Web Key Set, as served at the API server's `/openid/v1/jwks`.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Jwks> {
        let j: Jwks = serde_json::from_slice(bytes)?;
        Ok(j)
    }
}

/// Verifies `signed` and `sig` with `key` under the JWS algorithm `alg`.
fn verify_with(key: &Jwk, alg: &str, signed: &[u8], sig: &[u8]) -> Result<(), TokenError> {
    if key.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(TokenError::UnknownKey);
    }
    if key.alg.as_deref().is_some_and(|a| a != alg) {
        return Err(TokenError::UnknownKey);
    }
    let bad = |_| TokenError::Signature;
    match (alg, key.kty.as_str()) {
        ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512", "RSA") => {
            let n = b64d(key.n.as_deref().ok_or(TokenError::UnknownKey)?)?;
            let e = b64d(key.e.as_deref().ok_or(TokenError::UnknownKey)?)?;
            let params: &signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                _ => &signature::RSA_PSS_2048_8192_SHA512,
            };
            RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, signed, sig)
                .map_err(bad)
        }
        ("ES256" | "ES384", "EC") => {
            let (crv, params): (&str, &'static signature::EcdsaVerificationAlgorithm) =
                if alg == "ES256" {
                    ("P-256", &signature::ECDSA_P256_SHA256_FIXED)
                } else {
                    ("P-384", &signature::ECDSA_P384_SHA384_FIXED)
                };
            if key.crv.as_deref() != Some(crv) {
                return Err(TokenError::UnknownKey);
            }
            let mut point = vec![4u8];
            point.extend(b64d(key.x.as_deref().ok_or(TokenError::UnknownKey)?)?);
            point.extend(b64d(key.y.as_deref().ok_or(TokenError::UnknownKey)?)?);
            UnparsedPublicKey::new(params, point)
                .verify(signed, sig)
                .map_err(bad)
        }
        _ => Err(TokenError::UnknownKey),
    }
}

const ASYMMETRIC: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct SaClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Aud>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// Whether `now` lies between `nbf` and `exp` (each with [`LEEWAY`]); a token without `exp` is
/// refused as expired.
pub fn check_times(exp: Option<u64>, nbf: Option<u64>, now: u64) -> Result<(), TokenError> {
    match exp {
        Some(exp) if exp + LEEWAY > now => {}
        _ => return Err(TokenError::Expired),
    }
    if nbf.is_some_and(|nbf| nbf > now + LEEWAY) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Verifies a ServiceAccount token; returns its subject,
/// `system:serviceaccount:<namespace>:<name>`.
pub fn verify_service_account(
    token: &str,
    jwks: &Jwks,
    issuer: &str,
    audience: &str,
    now: u64,
) -> Result<String, TokenError> {
    verify_service_account_times(token, jwks, issuer, audience, now).map(|v| v.sub)
}

/// A verified ServiceAccount token: its subject and validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaToken {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    /// Expiry (Unix seconds).
    pub exp: Option<u64>,
    /// Not before (Unix seconds).
    pub nbf: Option<u64>,
}

/// [`verify_service_account`], also returning `exp` and `nbf` (for a cache of verified tokens).
pub fn verify_service_account_times(
    token: &str,
    jwks: &Jwks,
    issuer: &str,
    audience: &str,
    now: u64,
) -> Result<SaToken, TokenError> {
    let parts = split(token)?;
    let alg = parts.header.alg.as_str();
    if !ASYMMETRIC.contains(&alg) {
        return Err(TokenError::Algorithm);
    }
    let candidates: Vec<&Jwk> = jwks
        .keys
        .iter()
        .filter(|k| match &parts.header.kid {
            Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
            None => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    let mut result = Err(TokenError::UnknownKey);
    for k in candidates {
        result = verify_with(k, alg, parts.signed.as_bytes(), &parts.sig);
        if result.is_ok() {
            break;
        }
    }
    result?;
    let c: SaClaims = serde_json::from_slice(&parts.payload).map_err(|_| TokenError::Malformed)?;
    if c.iss.as_deref() != Some(issuer) {
        return Err(TokenError::Issuer);
    }
    let aud_ok = match &c.aud {
        Some(Aud::One(a)) => a == audience,
        Some(Aud::Many(v)) => v.iter().any(|a| a == audience),
        None => false,
    };
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    check_times(c.exp, c.nbf, now)?;
    let sub = c.sub.ok_or(TokenError::Subject)?;
    let rest = sub
        .strip_prefix("system:serviceaccount:")
        .ok_or(TokenError::Subject)?;
    match rest.split_once(':') {
        Some((ns, name))
            if !ns.is_empty()
                && !name.is_empty()
                && !name.contains(':')
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b)) =>
        {
            Ok(SaToken {
                sub,
                exp: c.exp,
                nbf: c.nbf,
            })
        }
        _ => Err(TokenError::Subject),
    }
}

/// Access granted on one repository, as carried in a registry token (the Docker token format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Always `repository` (or `registry` for the catalog).
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

/// The claims of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryClaims {
    /// The service name.
    pub iss: String,
    /// The caller's identity; empty for an anonymous caller.
    pub sub: String,
    /// The service name.
    pub aud: String,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// What the token grants.
    pub access: Vec<Access>,
}

impl RegistryClaims {
    /// The claims of a token `service` issues at `now` to `sub` (empty: anonymous), valid for
    /// `ttl` seconds (and from one second before `now`, for clocks a little behind), granting
    /// `access`.
    pub fn issue(service: &str, sub: &str, now: u64, ttl: u64, access: Vec<Access>) -> Self {
        RegistryClaims {
            iss: service.to_owned(),
            sub: sub.to_owned(),
            aud: service.to_owned(),
            exp: now + ttl,
            nbf: now.saturating_sub(1),
            iat: now,
            access,
        }
    }
}

/// The `kid` of registry tokens (and how they are told apart from ServiceAccount tokens).
pub const REGISTRY_KID: &str = "registry-hs256";

/// Signs registry claims with the shared HMAC key.
pub fn sign_registry(claims: &RegistryClaims, key: &ring::hmac::Key) -> String {
    let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{REGISTRY_KID}"}}"#);
    let payload = serde_json::to_vec(claims).expect("claims serialise");
    let signed = format!("{}.{}", b64e(header.as_bytes()), b64e(&payload));
    let tag = ring::hmac::sign(key, signed.as_bytes());
    format!("{signed}.{}", b64e(tag.as_ref()))
}

/// Verifies a registry token (signature in constant time, then audience and times).
pub fn verify_registry(
    token: &str,
    key: &ring::hmac::Key,
    service: &str,
    now: u64,
) -> Result<RegistryClaims, TokenError> {
    let parts = split(token)?;
    if parts.header.alg != "HS256" || parts.header.kid.as_deref() != Some(REGISTRY_KID) {
        return Err(TokenError::Algorithm);
    }
    ring::hmac::verify(key, parts.signed.as_bytes(), &parts.sig)
        .map_err(|_| TokenError::Signature)?;
    let c: RegistryClaims =
        serde_json::from_slice(&parts.payload).map_err(|_| TokenError::Malformed)?;
    if c.aud != service || c.iss != service {
        return Err(TokenError::Audience);
    }
    check_times(Some(c.exp), Some(c.nbf), now)?;
    Ok(c)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    pub(crate) const ISS: &str = "https://kubernetes.default.svc.cluster.local";

    /// A P-256 key pair and its JWK.
    pub(crate) fn ec_key(kid: &str) -> (EcdsaKeyPair, serde_json::Value) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let pt = kp.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64e(&pt[1..33]), "y": b64e(&pt[33..65]),
        });
        (kp, jwk)
    }

    pub(crate) fn es256(kp: &EcdsaKeyPair, kid: &str, claims: &serde_json::Value) -> String {
        let h = serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
        let signed = format!(
            "{}.{}",
            b64e(h.to_string().as_bytes()),
            b64e(claims.to_string().as_bytes())
        );
        let sig = kp.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64e(sig.as_ref()))
    }

    pub(crate) fn sa_claims(ns: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": ISS, "aud": ["registry"], "exp": exp, "nbf": exp - 3600, "iat": exp - 3600,
            "sub": format!("system:serviceaccount:{ns}:builder"),
        })
    }

    fn now() -> u64 {
        1_900_000_000
    }

    #[test]
    fn es256_service_account_tokens() {
        let (kp, jwk) = ec_key("k1");
        let (other, _) = ec_key("k1");
        let jwks = Jwks::parse(serde_json::json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        let v = |t: &str| verify_service_account(t, &jwks, ISS, "registry", now());
        let good = es256(&kp, "k1", &sa_claims("team-a", now() + 600));
        assert_eq!(v(&good).unwrap(), "system:serviceaccount:team-a:builder");
        assert_eq!(
            v(&es256(&kp, "k1", &sa_claims("team-a", now() - 600))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            v(&es256(&kp, "k2", &sa_claims("team-a", now() + 600))),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            v(&es256(&other, "k1", &sa_claims("team-a", now() + 600))),
            Err(TokenError::Signature)
        );
        let mut c = sa_claims("team-a", now() + 600);
        c["aud"] = "other".into();
        assert_eq!(v(&es256(&kp, "k1", &c)), Err(TokenError::Audience));
        let mut c = sa_claims("team-a", now() + 600);
        c["iss"] = "https://evil".into();
        assert_eq!(v(&es256(&kp, "k1", &c)), Err(TokenError::Issuer));
        let mut c = sa_claims("team-a", now() + 600);
        c["nbf"] = (now() + 300).into();
        assert_eq!(v(&es256(&kp, "k1", &c)), Err(TokenError::NotYetValid));
        let mut c = sa_claims("team-a", now() + 600);
        c["sub"] = "alice".into();
        assert_eq!(v(&es256(&kp, "k1", &c)), Err(TokenError::Subject));
        // alg none, with or without a signature.
        let body = good.split('.').nth(1).unwrap();
        let none = format!("{}.{body}.", b64e(br#"{"alg":"none","kid":"k1"}"#));
        assert_eq!(v(&none), Err(TokenError::Algorithm));
        // HS256 with the public key as the secret (algorithm confusion) is refused.
        let hs = format!("{}.{body}.AAAA", b64e(br#"{"alg":"HS256","kid":"k1"}"#));
        assert_eq!(v(&hs), Err(TokenError::Algorithm));
        // The same signature with a tampered payload.
        let mut p: Vec<&str> = good.split('.').collect();
        let evil = b64e(sa_claims("team-b", now() + 600).to_string().as_bytes());
        p[1] = &evil;
        assert_eq!(v(&p.join(".")), Err(TokenError::Signature));
        for junk in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!!.!!!.!!!",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(v(junk), Err(TokenError::Malformed), "{junk:.20}");
        }
    }

    #[test]
    fn rs256_with_a_fixed_key() {
        // A 2048-bit RSA key (PKCS#1 DER) made with openssl, for this test only.
        let der = URL_SAFE_NO_PAD
            .decode(include_str!("testdata/rsa2048.pk1.b64").trim())
            .unwrap();
        let kp = ring::signature::RsaKeyPair::from_der(&der).expect("RSA key");
        let public: RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
        let jwk = serde_json::json!({
            "kty": "RSA", "kid": "r1", "alg": "RS256",
            "n": b64e(&public.n), "e": b64e(&public.e),
        });
        let jwks = Jwks {
            keys: vec![serde_json::from_value(jwk).unwrap()],
        };
        let h = b64e(br#"{"alg":"RS256","kid":"r1"}"#);
        let signed = format!(
            "{h}.{}",
            b64e(sa_claims("ci", now() + 60).to_string().as_bytes())
        );
        let mut sig = vec![0; kp.public().modulus_len()];
        kp.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signed.as_bytes(),
            &mut sig,
        )
        .unwrap();
        let tok = format!("{signed}.{}", b64e(&sig));
        assert_eq!(
            verify_service_account(&tok, &jwks, ISS, "registry", now()).unwrap(),
            "system:serviceaccount:ci:builder"
        );
        // An ES256 header naming the RSA key is refused.
        let es = format!(
            "{}.{}",
            b64e(br#"{"alg":"ES256","kid":"r1"}"#),
            tok.split_once('.').unwrap().1
        );
        assert_eq!(
            verify_service_account(&es, &jwks, ISS, "registry", now()),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn registry_tokens() {
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let other =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"another key, another key, abcdef");
        let access = vec![Access {
            kind: "repository".into(),
            name: "lib/app".into(),
            actions: vec!["pull".into()],
        }];
        let c = RegistryClaims::issue("registry", "alice", now(), 300, access);
        let t = sign_registry(&c, &key);
        assert_eq!(verify_registry(&t, &key, "registry", now()).unwrap(), c);
        assert_eq!(
            verify_registry(&t, &other, "registry", now()),
            Err(TokenError::Signature)
        );
        assert_eq!(
            verify_registry(&t, &key, "elsewhere", now()),
            Err(TokenError::Audience)
        );
        assert_eq!(
            verify_registry(&t, &key, "registry", now() + 400),
            Err(TokenError::Expired)
        );
        assert_eq!(peek_header(&t).unwrap().1.as_deref(), Some(REGISTRY_KID));
    }
}
