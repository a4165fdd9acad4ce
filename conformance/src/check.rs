//! Checks of `reqwest` responses: headers, `Location`, `Link`, and spec error bodies.

use reqwest::header::HeaderMap;
use reqwest::Response;
use serde_json::Value;

/// The error codes a registry may put in an error body (distribution spec, "Error Codes").
pub const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// The first value of header `name`, if any (panics on non-UTF-8).
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("header value is not visible ASCII"))
}

/// Asserts that the first value of header `name` is `want`.
#[track_caller]
pub fn expect_header(headers: &HeaderMap, name: &str, want: &str) {
    assert_eq!(header(headers, name), Some(want), "header {name}");
}

/// Every value of header `name`, split on commas and trimmed (RFC 9110 list syntax).
pub fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .expect("header value is not visible ASCII")
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The response's `Location`, resolved against the request URL (it may be relative).
pub fn location(resp: &Response) -> String {
    let loc = header(resp.headers(), "location")
        .unwrap_or_else(|| panic!("{} {}: no Location header", resp.status(), resp.url()));
    resp.url()
        .join(loc)
        .unwrap_or_else(|e| panic!("Location {loc:?} does not resolve: {e}"))
        .to_string()
}

/// Appends `key=value` to `url` (`?` or `&` as needed), without percent-encoding the value.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// The target of a `Link: <url>; rel="next"` header, if the response has one.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all("link") {
        let v = v.to_str().expect("Link header is not visible ASCII");
        for part in v.split(',') {
            let part = part.trim();
            let Some(rest) = part.strip_prefix('<') else {
                continue;
            };
            let Some((target, params)) = rest.split_once('>') else {
                continue;
            };
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                return Some(target.to_owned());
            }
        }
    }
    None
}

/// Checks a pagination `Link` target `link` (resolved against `base`): its path is `path` and
/// its query has `n=<n>` and `last=<last>`. Returns the next page's absolute URL.
#[track_caller]
pub fn expect_next_page(base: &str, link: &str, path: &str, n: usize, last: &str) -> String {
    let next = reqwest::Url::parse(base).unwrap().join(link).unwrap();
    assert_eq!(next.path(), path, "Link target {link}");
    let q: Vec<(String, String)> = next.query_pairs().into_owned().collect();
    assert!(
        q.contains(&("n".into(), n.to_string())),
        "Link {link} lacks n={n}"
    );
    assert!(
        q.contains(&("last".into(), last.to_owned())),
        "Link {link} lacks last={last}"
    );
    next.to_string()
}

/// Checks that `body` is a spec error body (`{"errors":[{"code","message","detail"}, ...]}`
/// with every code from the spec's table) and returns its codes. `message` must be a string
/// (the spec makes it optional; we always want one for users); `detail` is optional, any JSON.
pub fn error_codes(body: &[u8]) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    })?;
    let errors = v
        .get("errors")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("error body has no \"errors\" array: {v}"))?;
    if errors.is_empty() {
        return Err(format!("\"errors\" is empty: {v}"));
    }
    let mut codes = Vec::new();
    for e in errors {
        let code = e
            .get("code")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("error without a string \"code\": {e}"))?;
        if !SPEC_ERROR_CODES.contains(&code) {
            return Err(format!("code {code:?} is not one of the spec's codes: {e}"));
        }
        if !e.get("message").is_some_and(Value::is_string) {
            return Err(format!("error without a string \"message\": {e}"));
        }
        codes.push(code.to_owned());
    }
    Ok(codes)
}

/// Asserts the response has status `status` and a spec error body holding one of `codes`
/// (any spec code when `codes` is empty). Returns the parsed body.
pub async fn expect_error(resp: Response, status: u16, codes: &[&str]) -> Value {
    let got = resp.status().as_u16();
    let url = resp.url().to_string();
    let ct = header(resp.headers(), "content-type").map(str::to_owned);
    let body = resp.bytes().await.expect("read error body");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(
        got, status,
        "{url}: want status {status}, got {got}: {text}"
    );
    let found = error_codes(&body).unwrap_or_else(|e| panic!("{url} ({got}): {e}"));
    if !codes.is_empty() {
        assert!(
            found.iter().any(|c| codes.contains(&c.as_str())),
            "{url} ({got}): want one of {codes:?}, got {found:?}: {text}"
        );
    }
    if let Some(ct) = ct {
        assert!(
            ct.starts_with("application/json"),
            "{url}: JSON error body has Content-Type {ct:?}"
        );
    }
    serde_json::from_slice(&body).expect("error body JSON")
}

/// Asserts the response has status `status` and exactly the body `want`.
pub async fn expect_body(resp: Response, status: u16, want: &[u8]) {
    let got = resp.status().as_u16();
    let url = resp.url().to_string();
    let body = resp.bytes().await.expect("read body");
    assert_eq!(got, status, "{url}: want status {status}, got {got}");
    assert!(
        body == want,
        "{url}: want {} bytes (sha256 {}), got {} bytes (sha256 {})",
        want.len(),
        crate::oci::sha256_digest(want),
        body.len(),
        crate::oci::sha256_digest(&body)
    );
}

/// Asserts the response is a client error (4xx, never 5xx or success) and, unless it is the
/// answer to a HEAD, that it carries a spec error body. Returns the status.
pub async fn expect_client_error(resp: Response) -> u16 {
    let got = resp.status().as_u16();
    let url = resp.url().to_string();
    let body = resp.bytes().await.expect("read error body");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        (400..500).contains(&got),
        "{url}: want a 4xx client error, got {got}: {text}"
    );
    if let Err(e) = error_codes(&body) {
        panic!("{url} ({got}): {e}");
    }
    got
}
