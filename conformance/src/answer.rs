//! Checks of `reqwest` responses for the test programs, which report a failed check as an
//! `Err(reason)` (see [`crate::ensure!`]) instead of panicking like the Rust tests do.

use reqwest::Response;

/// What a program's check returns: a note for the PASS line, or why it failed.
pub type Check = Result<String, String>;

/// `ensure!(condition, "format", args...)`: returns `Err(format!(...))` from the enclosing
/// function unless `condition` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The first value of header `name`, when it is visible ASCII.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The path (and query) of the response's `Location`, absolute or relative, so that it can be
/// sent to any replica.
pub fn location_path(resp: &Response) -> Result<String, String> {
    let loc = header(resp, "location").ok_or("no Location header")?;
    Ok(match loc.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map(|i| rest[i..].to_owned())
            .unwrap_or_default(),
        None => loc,
    })
}

/// The response has `status` and an upload `Range` of `0-<end - 1>`.
pub fn expect_range(what: &str, resp: &Response, status: u16, end: usize) -> Result<(), String> {
    ensure!(
        resp.status().as_u16() == status,
        "{what}: status {}, want {status}",
        resp.status()
    );
    let range = header(resp, "range");
    let want = format!("0-{}", end.saturating_sub(1));
    ensure!(
        range.as_deref() == Some(want.as_str()),
        "{what}: Range {range:?}, want {want}"
    );
    Ok(())
}

/// The first 300 characters of the body, for a failure message.
pub async fn body_text(resp: Response) -> String {
    let t = resp.text().await.unwrap_or_default();
    t.chars().take(300).collect()
}

/// `POST <base>/v2/<repo>/blobs/uploads/` with an empty body: 202 and the upload's path.
pub async fn start_upload(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
) -> Result<String, String> {
    let resp = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .map_err(|e| format!("POST: {e}"))?;
    ensure!(
        resp.status() == reqwest::StatusCode::ACCEPTED,
        "POST: {}",
        resp.status()
    );
    location_path(&resp)
}
