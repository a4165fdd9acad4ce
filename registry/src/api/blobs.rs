//! Blobs: `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with single byte ranges and the
//! sendfile path for plain HTTP/1 connections.

use std::ops::Range;

use axum::body::Body;
use axum::response::IntoResponse;
use futures::TryStreamExt;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, RANGE,
};
use http::{Method, StatusCode};
use storage::range::{partial_range, ByteRange};
use storage::{Digest, RepoName};

use super::{accepted, header_value, Answer, Ctx, CONTENT_DIGEST};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::sendfile::ZeroCopy;

/// The byte range the request asks for: `None` for the whole blob (no `Range`, or one this
/// server ignores, such as several ranges), 416 when it selects no byte of the blob.
pub(super) fn requested_range(h: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ApiError> {
    let Some(v) = h.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Ok(asked) = v.parse::<ByteRange>() else {
        return Ok(None);
    };
    asked.resolve(size).map(Some).map_err(|_| {
        ApiError::blob_range(
            format!("range {v} is outside the blob of {size} bytes"),
            size,
        )
    })
}

/// The status and headers of a blob answer, and the number of body bytes.
pub(super) fn blob_headers(
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
            headers.insert(CONTENT_RANGE, header_value(&partial_range(r, size)));
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, size),
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    (status, headers, len)
}

/// `GET` or `HEAD` of a blob (`HEAD` answers the same headers without a body).
pub(super) async fn get(cx: &Ctx<'_>, name: RepoName, digest: Digest) -> Answer {
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
pub(super) async fn delete(cx: &Ctx<'_>, name: RepoName, digest: Digest) -> Answer {
    cx.st.registry.blob_delete(&name, &digest).await?;
    Ok(accepted())
}
