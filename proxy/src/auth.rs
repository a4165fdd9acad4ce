//! Upstream authentication: parsing `WWW-Authenticate` challenges, fetching bearer tokens from a
//! token service (anonymously or with Basic credentials), and caching tokens until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// A challenge from a `401 Unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="..."`: send the credentials on every request.
    Basic,
    /// `Bearer realm="...",service="...",scope="..."`: fetch a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value. Parameter values may be quoted and quoted values may hold
/// commas (`scope="repository:a:pull,push"`).
pub(crate) fn parse_challenge(v: &str) -> Option<Challenge> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(char::is_whitespace).unwrap_or((v, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            return out;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                val.push(c);
            }
            val = val.trim().to_owned();
        }
        out.insert(key, val);
    }
}

/// A token service's answer.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long it is valid (60 s when unsaid, as the token spec says).
    pub(crate) fn into_token(self) -> Option<(String, Duration)> {
        let t = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        Some((t, Duration::from_secs(self.expires_in.unwrap_or(60).max(1))))
    }
}

/// Tokens by scope, each until a little before it expires.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    /// A token for `scope` that has not expired.
    pub(crate) fn get(&self, scope: &str) -> Option<String> {
        let map = self.tokens.lock().expect("token cache");
        map.get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    /// Keeps `token` for `scope`, to be dropped a little before it expires.
    pub(crate) fn put(&self, scope: &str, token: String, valid: Duration) {
        let margin = (valid / 10).min(Duration::from_secs(30));
        let mut map = self.tokens.lock().expect("token cache");
        if map.len() > 4096 {
            let now = Instant::now();
            map.retain(|_, (_, until)| now < *until);
        }
        map.insert(scope.to_owned(), (token, Instant::now() + (valid - margin)));
    }

    /// Forgets the token for `scope` (the upstream refused it).
    pub(crate) fn forget(&self, scope: &str) {
        self.tokens.lock().expect("token cache").remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:1/t, service = reg"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("reg".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn tokens_expire_and_can_be_forgotten() {
        let c = TokenCache::default();
        c.put("s", "t".into(), Duration::from_secs(300));
        assert_eq!(c.get("s").as_deref(), Some("t"));
        assert_eq!(c.get("other"), None);
        c.forget("s");
        assert_eq!(c.get("s"), None);
        c.put("s", "t".into(), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("s"), None);
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(r.into_token(), Some(("a".into(), Duration::from_secs(60))));
        let r: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(r.into_token(), None);
    }
}
