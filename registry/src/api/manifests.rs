//! Manifests: `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use http::StatusCode;
use storage::{Reference, RepoName, Tag};

use super::{accepted, content_length, drain, header_value, Answer, Ctx, CONTENT_DIGEST};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::METRICS;

const OCI_SUBJECT: http::HeaderName = http::HeaderName::from_static("oci-subject");
const OCI_TAG: http::HeaderName = http::HeaderName::from_static("oci-tag");

/// Most tags one manifest push may create through `?tag=`.
const MAX_PUSH_TAGS: usize = 100;

pub(super) fn manifest_response(info: &storage::ManifestInfo, body: Body) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&info.media_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(CONTENT_DIGEST, header_value(&info.digest.to_string()));
    headers.insert(ETAG, header_value(&format!("\"{}\"", info.digest)));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(info.size));
    (StatusCode::OK, headers, body).into_response()
}

/// `GET /v2/<name>/manifests/<reference>`.
pub(super) async fn get(cx: &Ctx<'_>, name: RepoName, reference: Reference) -> Answer {
    let (info, bytes) = cx.st.registry.manifest_get(&name, &reference).await?;
    METRICS.sent(bytes.len() as u64);
    Ok(manifest_response(&info, Body::from(bytes)))
}

/// The answer to `GET` (or, without the body, `HEAD`) of a manifest the pull-through cache just
/// fetched and verified.
pub(super) fn fetched(
    ep: &crate::endpoint::Endpoint,
    digest: storage::Digest,
    media_type: String,
    body: Bytes,
) -> Response {
    let info = storage::ManifestInfo {
        digest,
        media_type,
        size: body.len() as u64,
    };
    if matches!(ep, crate::endpoint::Endpoint::HeadManifest { .. }) {
        return manifest_response(&info, Body::empty());
    }
    METRICS.sent(body.len() as u64);
    manifest_response(&info, Body::from(body))
}

/// `HEAD /v2/<name>/manifests/<reference>`.
pub(super) async fn head(cx: &Ctx<'_>, name: RepoName, reference: Reference) -> Answer {
    let info = cx.st.registry.manifest_info(&name, &reference).await?;
    Ok(manifest_response(&info, Body::empty()))
}

/// `DELETE /v2/<name>/manifests/<reference>`.
pub(super) async fn delete(cx: &Ctx<'_>, name: RepoName, reference: Reference) -> Answer {
    cx.st.registry.manifest_delete(&name, &reference).await?;
    Ok(accepted())
}

/// Reads a manifest body of at most `limit` bytes; a larger one is drained and refused with 413.
async fn read_limited(h: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = |size: usize| ApiError::from(storage::Error::ManifestTooLarge { size, limit });
    if let Some(cl) = content_length(h) {
        if cl > limit as u64 {
            drain(body, Some(cl)).await;
            return Err(too_large(cl as usize));
        }
    }
    let mut data = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = futures::StreamExt::next(&mut data).await {
        match chunk {
            Ok(b) if buf.len() + b.len() <= limit => buf.extend_from_slice(&b),
            Ok(_) => {
                drain(Body::from_stream(data), content_length(h)).await;
                return Err(too_large(limit + 1));
            }
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::ManifestInvalid,
                    format!("reading the manifest failed: {e}"),
                ))
            }
        }
    }
    Ok(buf.freeze())
}

/// `PUT /v2/<name>/manifests/<reference>`, with `?tag=` for extra tags.
pub(super) async fn put(cx: &Ctx<'_>, name: RepoName, reference: Reference, body: Body) -> Answer {
    let h = &cx.parts.headers;
    let bytes = read_limited(h, body, cx.st.config.max_manifest_size).await?;
    let tags: Vec<Tag> = cx
        .query
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.parse())
        .collect::<Result<_, _>>()?;
    if tags.len() > MAX_PUSH_TAGS {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("at most {MAX_PUSH_TAGS} tags per push"),
        )
        .with_status(StatusCode::URI_TOO_LONG));
    }
    let ct = h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let pushed = cx
        .st
        .registry
        .manifest_put(&name, &reference, ct, bytes, &tags)
        .await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        LOCATION,
        header_value(&format!("/v2/{name}/manifests/{}", pushed.digest)),
    );
    headers.insert(CONTENT_DIGEST, header_value(&pushed.digest.to_string()));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    if let Some(s) = &pushed.subject {
        headers.insert(OCI_SUBJECT, header_value(&s.to_string()));
    }
    for t in &tags {
        headers.append(OCI_TAG, header_value(t.as_str()));
    }
    Ok((StatusCode::CREATED, headers).into_response())
}
