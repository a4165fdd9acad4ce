//! Blobs: `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with single byte ranges and the
//! sendfile path for plain HTTP/1 connections.

use std::ops::Range;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, RANGE,
};
use http::{Method, StatusCode};
use storage::{Digest, RepoName};

use super::{accepted, header_value, Ctx, CONTENT_DIGEST};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::METRICS;
use crate::sendfile::ZeroCopy;

/// A blob `Range` request resolved against the size: `None` to serve the whole blob (no header,
/// or one this server ignores, such as multiple ranges), `Some(Err)` when unsatisfiable.
pub fn parse_range(v: &str, size: u64) -> Option<Result<Range<u64>, ()>> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok(size.saturating_sub(n)..size));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        size
    } else {
        let last: u64 = b.parse().ok()?;
        if last < start {
            return None;
        }
        last.saturating_add(1).min(size)
    };
    if start >= size {
        return Some(Err(()));
    }
    Some(Ok(start..end))
}

/// The byte range the request asks for, if any and if satisfiable.
fn requested_range(h: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ApiError> {
    let Some(v) = h.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    match parse_range(v, size) {
        Some(Err(())) => Err(ApiError::new(
            ErrorCode::BlobUnknown,
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("range {v} is outside the blob of {size} bytes"),
        )
        .with_header(CONTENT_RANGE, format!("bytes */{size}"))),
        Some(Ok(r)) => Ok(Some(r)),
        None => Ok(None),
    }
}

/// The status and headers of a blob answer, and the number of body bytes.
fn blob_headers(
    digest: &Digest,
    range: Option<&Range<u64>>,
    size: u64,
) -> (StatusCode, HeaderMap, u64) {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(CONTENT_DIGEST, header_value(&digest.to_string()));
    headers.insert(ETAG, header_value(&format!("\"{digest}\"")));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=31536000"));
    let (status, len) = match range {
        Some(r) => {
            headers.insert(
                CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{size}", r.start, r.end - 1)),
            );
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, size),
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    (status, headers, len)
}

/// `GET` or `HEAD` of a blob (`HEAD` answers the same headers without a body).
pub(super) async fn get(
    cx: &Ctx<'_>,
    name: RepoName,
    digest: Digest,
) -> Result<Response, ApiError> {
    let reg = &cx.st.registry;
    let parts = cx.parts;
    let size = reg.blob_size(&name, &digest).await?;
    let range = requested_range(&parts.headers, size)?;
    let (status, headers, len) = blob_headers(&digest, range.as_ref(), size);
    if parts.method == Method::HEAD {
        return Ok((status, headers, Body::empty()).into_response());
    }
    // Sent from the file when the connection can (plain HTTP/1.x) and the backend has one.
    if let Some(zc) = parts.extensions.get::<ZeroCopy>() {
        if parts.version <= http::Version::HTTP_11 && len > 0 {
            if let Some(file) = reg.blob_file(&digest).await? {
                let body = zc.body(file, range.unwrap_or(0..size));
                return Ok((status, headers, Body::new(body)).into_response());
            }
        }
    }
    let stream = reg
        .blob_read(&digest, range)
        .await?
        .inspect_ok(|b| METRICS.sent(b.len() as u64));
    Ok((status, headers, Body::from_stream(stream)).into_response())
}

/// `DELETE /v2/<name>/blobs/<digest>`.
pub(super) async fn delete(
    cx: &Ctx<'_>,
    name: RepoName,
    digest: Digest,
) -> Result<Response, ApiError> {
    cx.st.registry.blob_delete(&name, &digest).await?;
    Ok(accepted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok(0..10)));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=90-200", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Ok(0..100)));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-1", 100), None);
    }
}
