//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (with mount and monolithic variants), and
//! `GET`/`PATCH`/`PUT`/`DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE};
use http::StatusCode;
use storage::range::{upload_range, ContentRange};
use storage::{Algorithm, ByteStream, Digest, RepoName};

use super::{
    body_stream, content_length, drain, has_body, param, Answer, Ctx, CHUNK_MIN, CONTENT_DIGEST,
    UPLOAD_UUID,
};
use crate::error::{ApiError, ErrorCode};

fn upload_location(name: &RepoName, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn upload_response(status: StatusCode, name: &RepoName, id: &str, offset: u64) -> Response {
    (
        status,
        [
            (LOCATION, upload_location(name, id)),
            (RANGE, upload_range(offset)),
            (UPLOAD_UUID, id.to_owned()),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
    )
        .into_response()
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (CONTENT_DIGEST, digest.to_string()),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
    )
        .into_response()
}

fn with_upload_location(e: storage::Error, name: &RepoName, id: &str) -> ApiError {
    let range = matches!(e, storage::Error::RangeInvalid { .. });
    let api: ApiError = e.into();
    if range {
        api.with_header(LOCATION, upload_location(name, id))
    } else {
        api
    }
}

/// The chunk's start (from `Content-Range`) and declared length (from `Content-Range`, else
/// `Content-Length`).
fn chunk_bounds(h: &HeaderMap) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let cl = content_length(h);
    let Some(raw) = h.get(CONTENT_RANGE) else {
        return Ok((None, cl));
    };
    let text = raw.to_str().unwrap_or("");
    let range: ContentRange = text.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::BlobUploadInvalid,
            format!("Content-Range must be <start>-<end>, not {text:?}"),
        )
    })?;
    let len = range.len().ok_or_else(|| {
        let why = if range.end < range.start {
            "ends before it starts"
        } else {
            "is larger than any blob"
        };
        ApiError::new(
            ErrorCode::BlobUploadInvalid,
            format!("Content-Range {text} {why}"),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    })?;
    if let Some(cl) = cl.filter(|cl| *cl != len) {
        return Err(ApiError::new(
            ErrorCode::SizeInvalid,
            format!("Content-Range covers {len} bytes but Content-Length is {cl}"),
        ));
    }
    Ok((Some(range.start), Some(len)))
}

/// Answers a storage error on a chunk. A chunk that does not start where the upload ends comes
/// back unread from the service: it is drained first, so the client reads the 416.
async fn chunk_refused(
    cx: &Ctx<'_>,
    e: storage::Error,
    data: ByteStream,
    name: &RepoName,
    id: &str,
) -> ApiError {
    if matches!(e, storage::Error::RangeInvalid { .. }) {
        drain(Body::from_stream(data), content_length(&cx.parts.headers)).await;
    }
    with_upload_location(e, name, id)
}

fn digest_is_empty(d: &Digest) -> bool {
    *d == storage::hash::digest_of(d.algorithm(), b"")
}

/// `POST /v2/<name>/blobs/uploads/`: a cross-repository mount (`?mount=`), a whole upload in one
/// request (`?digest=` with a body), or a new upload session.
pub(super) async fn start(cx: &Ctx<'_>, name: RepoName, body: Body) -> Result<Response, ApiError> {
    let (reg, h, q) = (&cx.st.registry, &cx.parts.headers, cx.query);
    if let Some(mount) = param(q, "mount") {
        let digest: Digest = mount.parse()?;
        let from: Option<RepoName> = param(q, "from")
            .filter(|f| !f.is_empty())
            .map(str::parse)
            .transpose()?;
        if reg.blob_mount(&name, &digest, from.as_ref()).await? {
            return Ok(blob_created(&name, &digest));
        }
    } else if let Some(d) = param(q, "digest") {
        let digest: Digest = d.parse()?;
        // A POST with a digest and a body is a whole upload; without a body, open a session.
        if has_body(h) || content_length(h).is_none() && digest_is_empty(&digest) {
            let data = body_stream(body, cx.st.config.body_timeout);
            reg.blob_put(&name, &digest, content_length(h), data)
                .await?;
            return Ok(blob_created(&name, &digest));
        }
    }
    let alg = match param(q, "digest-algorithm") {
        Some(a) => a.parse::<Algorithm>().map_err(|_| {
            ApiError::new(
                ErrorCode::Unsupported,
                format!("digest-algorithm {a:?} is not supported (sha256, sha512)"),
            )
        })?,
        None => param(q, "digest")
            .and_then(|d| d.parse::<Digest>().ok())
            .map(|d| d.algorithm())
            .unwrap_or(Algorithm::Sha256),
    };
    let s = reg.upload_start(&name, alg).await?;
    let mut resp = upload_response(StatusCode::ACCEPTED, &name, &s.id, 0);
    let min = reg.backend().min_chunk();
    if min > 0 {
        resp.headers_mut().insert(CHUNK_MIN, HeaderValue::from(min));
    }
    Ok(resp)
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how far the upload is.
pub(super) async fn status(cx: &Ctx<'_>, name: RepoName, id: String) -> Result<Response, ApiError> {
    let s = cx.st.registry.upload_status(&name, &id).await?;
    Ok(upload_response(
        StatusCode::NO_CONTENT,
        &name,
        &id,
        s.offset,
    ))
}

/// The chunk a PATCH or PUT carries: its start and length (from `Content-Range` and
/// `Content-Length`) and its bytes.
fn chunk(cx: &Ctx<'_>, body: Body) -> Result<(Option<u64>, Option<u64>, ByteStream), ApiError> {
    let (start, len) = chunk_bounds(&cx.parts.headers)?;
    Ok((start, len, body_stream(body, cx.st.config.body_timeout)))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: appends a chunk.
pub(super) async fn patch(cx: &Ctx<'_>, name: RepoName, id: String, body: Body) -> Answer {
    let (start, len, mut data) = chunk(cx, body)?;
    let res = cx
        .st
        .registry
        .upload_append(&name, &id, start, len, &mut data)
        .await;
    match res {
        Ok(s) => Ok(upload_response(StatusCode::ACCEPTED, &name, &id, s.offset)),
        Err(e) => Err(chunk_refused(cx, e, data, &name, &id).await),
    }
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: closes the upload, with an optional last chunk.
pub(super) async fn finish(cx: &Ctx<'_>, name: RepoName, id: String, body: Body) -> Answer {
    let digest: Digest = param(cx.query, "digest")
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::DigestInvalid,
                "closing an upload needs ?digest=<digest of the whole blob>",
            )
        })?
        .parse()?;
    let (start, len, mut data) = chunk(cx, body)?;
    let last = has_body(&cx.parts.headers).then_some(&mut data);
    let res = cx
        .st
        .registry
        .upload_finish(&name, &id, &digest, start, len, last)
        .await;
    match res {
        Ok(_) => Ok(blob_created(&name, &digest)),
        Err(e) => Err(chunk_refused(cx, e, data, &name, &id).await),
    }
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancels the upload.
pub(super) async fn cancel(cx: &Ctx<'_>, name: RepoName, id: String) -> Result<Response, ApiError> {
    cx.st.registry.upload_cancel(&name, &id).await?;
    Ok((StatusCode::NO_CONTENT, [(CONTENT_LENGTH, "0")]).into_response())
}
