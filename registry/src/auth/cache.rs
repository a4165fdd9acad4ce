//! Verified bearer tokens, so that a client presenting the same token on every request pays for
//! its verification (JSON, base64, HMAC or ECDSA/RSA) once.
//!
//! - The key is the SHA-256 of the token text: the text itself is never kept, and only the
//!   exact token that verified can hit (a token differing in any byte is a miss and goes through
//!   full verification, with its constant-time signature check).
//! - Only tokens that verified are stored; failures are never cached.
//! - Every hit re-checks `exp` and `nbf` against the clock, with the same rule as the verifier
//!   ([`jwt::check_times`]), so a cached token expires at the same second as an uncached one.
//! - A ServiceAccount entry remembers the JWKS that verified it and is only used while that same
//!   JWKS is current: a re-read file or a refreshed URL means verifying again.
//! - [`TokenCache::invalidate`] (on a change of the registry's signing key) drops everything and
//!   stops verifications still in flight from storing their result.
//! - At most [`TokenCache::CAPACITY`] entries: when full, expired entries go first, then
//!   arbitrary ones until a quarter is free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};

use super::jwt::{self, Jwks};
use super::types::Caller;

/// The SHA-256 of a token.
type Key = [u8; 32];

/// How a cached token was verified, which decides where it may be used again.
#[derive(Debug, Clone)]
pub(super) enum Verified {
    /// A registry token (HS256 with the signing key).
    Registry,
    /// A ServiceAccount token, verified with this JWKS.
    ServiceAccount(Weak<Jwks>),
}

#[derive(Debug)]
struct Entry {
    caller: Arc<Caller>,
    exp: Option<u64>,
    nbf: Option<u64>,
    how: Verified,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Bumped by [`TokenCache::invalidate`].
    generation: u64,
}

/// A bounded cache of verified tokens.
#[derive(Debug)]
pub(super) struct TokenCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// A token looked up: its hash, and the cache generation when the lookup was made (an insert
/// from an older generation is dropped).
pub(super) struct Ticket {
    key: Key,
    generation: u64,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_capacity(TokenCache::CAPACITY)
    }
}

impl TokenCache {
    /// Entries kept at most.
    pub(super) const CAPACITY: usize = 4096;

    pub(super) fn with_capacity(capacity: usize) -> TokenCache {
        TokenCache {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks `token` up. `Ok` holds the cached caller when the token verified before, is still
    /// within its times at `now`, and was verified in a way `usable` accepts; `Err` holds the
    /// ticket to [`insert`](Self::insert) with after a full verification.
    pub(super) fn get(
        &self,
        token: &str,
        now: u64,
        usable: impl FnOnce(&Verified) -> bool,
    ) -> Result<Arc<Caller>, Ticket> {
        let key: Key = Sha256::digest(token.as_bytes()).into();
        let mut inner = self.lock();
        let generation = inner.generation;
        if let Some(e) = inner.map.get(&key) {
            if jwt::check_times(e.exp, e.nbf, now).is_ok() && usable(&e.how) {
                return Ok(e.caller.clone());
            }
            // Expired, or its keys were replaced: verify again (and drop it now).
            inner.map.remove(&key);
        }
        Err(Ticket { key, generation })
    }

    /// Stores a token that verified (never call this for one that did not).
    pub(super) fn insert(
        &self,
        ticket: Ticket,
        caller: Caller,
        exp: Option<u64>,
        nbf: Option<u64>,
        how: Verified,
        now: u64,
    ) -> Arc<Caller> {
        let caller = Arc::new(caller);
        let mut inner = self.lock();
        if inner.generation != ticket.generation {
            return caller;
        }
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&ticket.key) {
            inner
                .map
                .retain(|_, e| jwt::check_times(e.exp, e.nbf, now).is_ok());
            let keep = self.capacity - self.capacity.div_ceil(4);
            if inner.map.len() > keep {
                let extra: Vec<Key> = inner.map.keys().skip(keep).copied().collect();
                for k in extra {
                    inner.map.remove(&k);
                }
            }
        }
        inner.map.insert(
            ticket.key,
            Entry {
                caller: caller.clone(),
                exp,
                nbf,
                how,
            },
        );
        caller
    }

    /// Forgets every entry (the signing key changed).
    pub(super) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.map.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::header::AUTHORIZATION;
    use http::HeaderMap;

    use super::super::jwt::{Access, RegistryClaims, LEEWAY};
    use super::super::rules::Identity;
    use super::super::types::{now_secs, Refused};
    use super::super::{Auth, AuthConfig};
    use super::*;

    fn alice() -> Caller {
        Caller::Principal(Identity::named("alice"))
    }

    fn put(c: &TokenCache, token: &str, exp: u64, how: Verified, now: u64) {
        let t = c.get(token, now, |_| true).expect_err("a miss");
        c.insert(t, alice(), Some(exp), Some(exp - 600), how, now);
    }

    #[test]
    fn a_cached_token_still_expires_at_its_exp() {
        let c = TokenCache::default();
        let exp = 1_900_000_000;
        put(&c, "t1", exp, Verified::Registry, exp - 300);
        // Exactly where the verifier stops accepting it, the cache stops too.
        for now in [exp - 300, exp, exp + LEEWAY - 1, exp + LEEWAY, exp + 3600] {
            let verifier = jwt::check_times(Some(exp), Some(exp - 600), now).is_ok();
            assert_eq!(c.get("t1", now, |_| true).is_ok(), verifier, "at {now}");
        }
        assert!(
            c.get("t1", exp - 300, |_| true).is_err(),
            "dropped once expired"
        );
        // Not before its nbf either.
        put(&c, "t2", exp, Verified::Registry, exp - 300);
        assert!(c.get("t2", exp - 600 - LEEWAY - 1, |_| true).is_err());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = TokenCache::with_capacity(16);
        let now = 1_900_000_000;
        for i in 0..1000 {
            put(
                &c,
                &format!("token {i}"),
                now + 600,
                Verified::Registry,
                now,
            );
            assert!(c.len() <= 16, "{} entries", c.len());
        }
        // The newest token is there; expired ones go before live ones.
        assert!(c.get("token 999", now, |_| true).is_ok());
        let c = TokenCache::with_capacity(4);
        for i in 0..3 {
            put(
                &c,
                &format!("old {i}"),
                now - 3600,
                Verified::Registry,
                now - 3700,
            );
        }
        put(&c, "live", now + 600, Verified::Registry, now);
        put(&c, "new", now + 600, Verified::Registry, now);
        assert!(c.get("live", now, |_| true).is_ok());
        assert!(c.get("new", now, |_| true).is_ok());
    }

    #[test]
    fn invalidate_drops_entries_and_verifications_in_flight() {
        let c = TokenCache::default();
        let now = 1_900_000_000;
        put(&c, "a", now + 600, Verified::Registry, now);
        let in_flight = c.get("b", now, |_| true).expect_err("a miss");
        c.invalidate();
        assert!(c.get("a", now, |_| true).is_err());
        c.insert(
            in_flight,
            alice(),
            Some(now + 600),
            None,
            Verified::Registry,
            now,
        );
        assert!(c.get("b", now, |_| true).is_err());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_service_account_entry_is_only_used_with_the_jwks_that_verified_it() {
        let c = TokenCache::default();
        let now = 1_900_000_000;
        let old = Arc::new(Jwks { keys: vec![] });
        put(
            &c,
            "sa",
            now + 600,
            Verified::ServiceAccount(Arc::downgrade(&old)),
            now,
        );
        let same = |k: &Arc<Jwks>| {
            let k = k.clone();
            move |how: &Verified| match how {
                Verified::ServiceAccount(w) => std::ptr::eq(w.as_ptr(), Arc::as_ptr(&k)),
                Verified::Registry => false,
            }
        };
        assert!(c.get("sa", now, same(&old)).is_ok());
        let new = Arc::new(Jwks { keys: vec![] });
        drop(old);
        assert!(c.get("sa", now, same(&new)).is_err());
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn a_changed_token_is_refused_after_the_good_one_was_cached() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            storage: dir.path().display().to_string(),
            fsync: false,
            ..Default::default()
        };
        let cfg: AuthConfig = toml::from_str("").unwrap();
        let store = Arc::new(crate::server::open_registry(&config).unwrap());
        let auth: Arc<Auth> = Auth::new(cfg, store).await.unwrap();
        let now = now_secs();
        let claims = RegistryClaims {
            iss: "registry".into(),
            sub: "alice".into(),
            aud: "registry".into(),
            exp: now + 60,
            nbf: now,
            iat: now,
            access: vec![Access {
                kind: "repository".into(),
                name: "lib/app".into(),
                actions: vec!["pull".into()],
            }],
        };
        let good = jwt::sign_registry(&claims, &auth.key());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..3 {
            match auth.authenticate(&bearer(&good), ip, None).await.as_deref() {
                Ok(Caller::Token(id, access)) => {
                    assert_eq!(id.name.as_deref(), Some("alice"));
                    assert_eq!(access, &claims.access);
                }
                _ => panic!("the good token is accepted"),
            }
        }
        assert_eq!(auth.tokens.len(), 1);
        // One character changed in the signature, then in the claims: both refused.
        let sig_at = good.rfind('.').unwrap() + 5;
        let pay_at = good.find('.').unwrap() + 5;
        for at in [sig_at, pay_at] {
            let mut bad = good.clone().into_bytes();
            bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).unwrap();
            for _ in 0..2 {
                let r = auth.authenticate(&bearer(&bad), ip, None).await;
                assert!(matches!(r, Err(Refused::Bad(_))), "changed at {at}");
            }
        }
        assert_eq!(auth.tokens.len(), 1, "failures are not cached");
        assert!(auth.authenticate(&bearer(&good), ip, None).await.is_ok());
    }
}
