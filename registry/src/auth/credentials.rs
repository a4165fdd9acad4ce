//! Who is calling: Basic credentials (htpasswd users, or a ServiceAccount token as the password),
//! bearer tokens (registry tokens or ServiceAccount tokens), else the client certificate. Bad
//! credentials count against the source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;

use super::cache::Verified;
use super::jwt::{self, Jwks, RegistryClaims, TokenError};
use super::rules::Identity;
use super::state::{Auth, KeySet};
use super::types::{now_secs, Caller, Refused, TlsClient};

/// The source address of the connection (unspecified when unknown).
pub(super) fn source_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

impl Auth {
    /// A ServiceAccount token's caller, from the cache of verified tokens while the JWKS that
    /// verified it is current, else verified now.
    async fn verify_sa(&self, token: &str) -> Result<Arc<Caller>, &'static str> {
        let (Some(sa), Some(jwks)) = (&self.cfg.serviceaccount, &self.jwks) else {
            return Err("ServiceAccount tokens are not configured");
        };
        let now = now_secs();
        let mut keys = jwks.get();
        let ticket = match self.tokens.get(token, now, |how| match how {
            Verified::ServiceAccount(w) => std::ptr::eq(w.as_ptr(), Arc::as_ptr(&keys)),
            Verified::Registry => false,
        }) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let check = |keys: &Jwks| {
            jwt::verify_service_account_times(token, keys, &sa.issuer, &sa.audience, now)
        };
        let mut r = check(&keys);
        if let (Err(TokenError::UnknownKey), KeySet::Url(remote)) = (&r, jwks) {
            // The cluster may have rotated its keys.
            if remote.refresh_for_unknown_key().await {
                keys = jwks.get();
                r = check(&keys);
            }
        }
        let v = r.map_err(|e| token_reason(&e))?;
        let caller = Caller::Principal(Identity::named(&v.sub));
        let how = Verified::ServiceAccount(Arc::downgrade(&keys));
        Ok(self.tokens.insert(ticket, caller, v.exp, v.nbf, how, now))
    }

    pub(super) async fn verify_registry_token(
        &self,
        token: &str,
    ) -> Result<RegistryClaims, TokenError> {
        let now = now_secs();
        match jwt::verify_registry(token, &self.key(), &self.cfg.service, now) {
            Err(TokenError::Signature) if self.signing.refresh().await => {
                // Tokens verified with the old key are no longer good.
                self.tokens.invalidate();
                jwt::verify_registry(token, &self.key(), &self.cfg.service, now)
            }
            r => r,
        }
    }

    /// A bearer token's caller: from the cache of verified tokens, else a registry token (HS256,
    /// `kid` [`jwt::REGISTRY_KID`]) or else a ServiceAccount token, verified now.
    async fn bearer(&self, token: &str) -> Result<Arc<Caller>, &'static str> {
        let now = now_secs();
        let ticket = match self.tokens.get(token, now, |how| match how {
            Verified::Registry => true,
            // Checked against the current JWKS there.
            Verified::ServiceAccount(_) => false,
        }) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        // The header is parsed once: a token that is not a registry token (its `alg` and `kid`)
        // is refused as such before any signature check, and then tried as a ServiceAccount.
        match self.verify_registry_token(token).await {
            Ok(c) => {
                let id = if c.sub.is_empty() {
                    Identity::anonymous()
                } else {
                    Identity::named(&c.sub)
                };
                let caller = Caller::Token(id, c.access);
                let (exp, nbf) = (Some(c.exp), Some(c.nbf));
                Ok(self
                    .tokens
                    .insert(ticket, caller, exp, nbf, Verified::Registry, now))
            }
            Err(TokenError::Algorithm) => self.verify_sa(token).await,
            Err(TokenError::Malformed) => Err("malformed bearer token"),
            Err(e) => Err(token_reason(&e)),
        }
    }

    /// Identifies the caller from the `Authorization` header, else the client certificate.
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
        ip: IpAddr,
        tls: Option<&TlsClient>,
    ) -> Result<Arc<Caller>, Refused> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Ok(Arc::new(match tls.and_then(|t| t.subject.as_deref()) {
                Some(s) => Caller::Principal(Identity::named(s)),
                None => Caller::Anonymous,
            }));
        };
        if let Some(secs) = self.limit.blocked(ip) {
            return Err(Refused::Blocked(secs));
        }
        let r = self.check_credentials(value).await;
        if let Err(reason) = &r {
            self.limit.fail(ip);
            tracing::info!(source = %ip, reason = *reason, "authentication failed");
        }
        r.map_err(Refused::Bad)
    }

    async fn check_credentials(&self, value: &HeaderValue) -> Result<Arc<Caller>, &'static str> {
        if value.len() > 2 * jwt::MAX_TOKEN_LEN {
            return Err("Authorization header too long");
        }
        let v = value
            .to_str()
            .map_err(|_| "Authorization header not text")?;
        let (scheme, rest) = v
            .trim()
            .split_once(' ')
            .ok_or("malformed Authorization header")?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| "malformed Basic credentials")?;
            let text = String::from_utf8(raw).map_err(|_| "malformed Basic credentials")?;
            let (user, password) = text.split_once(':').ok_or("malformed Basic credentials")?;
            if let Some(users) = &self.users {
                if users.has(user) {
                    return if users.verify(user, password).await {
                        Ok(Arc::new(Caller::Principal(Identity::named(user))))
                    } else {
                        Err("wrong password")
                    };
                }
            }
            if password.matches('.').count() == 2 && self.jwks.is_some() {
                return self.verify_sa(password).await;
            }
            if let Some(users) = &self.users {
                // Costs one bcrypt, like a known user.
                let _ = users.verify(user, password).await;
            }
            Err("unknown user")
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(rest).await
        } else {
            Err("unsupported Authorization scheme")
        }
    }
}

fn token_reason(e: &TokenError) -> &'static str {
    match e {
        TokenError::Malformed => "malformed token",
        TokenError::Algorithm => "token algorithm not accepted",
        TokenError::UnknownKey => "token signed by an unknown key",
        TokenError::Signature => "token signature invalid",
        TokenError::Expired => "token expired",
        TokenError::NotYetValid => "token not yet valid",
        TokenError::Issuer => "token issuer not accepted",
        TokenError::Audience => "token audience not accepted",
        TokenError::Subject => "token subject not accepted",
    }
}
