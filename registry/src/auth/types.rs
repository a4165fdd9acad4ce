//! Types shared by the other auth modules: how a caller was identified, why authentication
//! failed, the TLS client marker and the clock.

use std::time::{SystemTime, UNIX_EPOCH};

use super::jwt::Access;
use super::rules::Identity;

/// Set on requests that came over TLS; `subject` is the verified client certificate's subject.
#[derive(Debug, Clone, Default)]
pub struct TlsClient {
    /// The subject (RFC 4514 text, e.g. `CN=builder, O=team`), when a client certificate was
    /// presented and verified.
    pub subject: Option<String>,
}

impl TlsClient {
    /// The subject of the first certificate of `chain`, if it parses.
    pub fn from_chain(chain: Option<&[rustls_pki_types::CertificateDer<'_>]>) -> TlsClient {
        let subject = chain.and_then(|c| c.first()).and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let s = cert.subject().to_string();
            (!s.is_empty()).then_some(s)
        });
        TlsClient { subject }
    }
}

/// How the caller was identified.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// A user, ServiceAccount or client certificate: the rules decide each request.
    Principal(Identity),
    /// A registry token: it grants what it lists.
    Token(Identity, Vec<Access>),
}

impl Caller {
    /// The identity (anonymous for an anonymous token).
    pub fn identity(&self) -> Identity {
        match self {
            Caller::Anonymous => Identity::anonymous(),
            Caller::Principal(i) | Caller::Token(i, _) => i.clone(),
        }
    }
}

/// Why authentication failed.
pub(super) enum Refused {
    /// Bad credentials (the reason is for the log; it never holds a secret).
    Bad(&'static str),
    /// Too many failures from this address; retry after so many seconds.
    Blocked(u64),
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
