//! The built-in node probe image ([`crate::probe_image`]): `GET`/`HEAD` of its manifests and
//! blobs are answered from memory, before storage and the pull-through cache. Every other
//! request on its repository goes on as usual.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderValue, CONTENT_TYPE, ETAG};
use http::{HeaderMap, Method, StatusCode};

use super::blobs::{blob_headers, requested_range};
use super::{header_value, Ctx, CONTENT_DIGEST};
use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::probe_image::{self, Object};

/// The answer when `ep` reads the probe image, else `None`.
pub(super) fn answer(cx: &Ctx<'_>, ep: &Endpoint) -> Option<Result<Response, ApiError>> {
    use Endpoint as E;
    let img = probe_image::image();
    let head = cx.parts.method == Method::HEAD;
    match ep {
        E::GetManifest { name, reference } | E::HeadManifest { name, reference }
            if name.as_str() == probe_image::REPO =>
        {
            let m = img.manifest(&reference.to_string())?;
            Some(Ok(manifest(m, head)))
        }
        E::GetBlob { name, digest } | E::HeadBlob { name, digest }
            if name.as_str() == probe_image::REPO =>
        {
            let b = img.blob(digest)?;
            Some(blob(cx, b, head))
        }
        _ => None,
    }
}

fn manifest(m: &Object, head: bool) -> Response {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(m.media_type));
    h.insert(CONTENT_DIGEST, header_value(&m.digest.to_string()));
    h.insert(ETAG, header_value(&format!("\"{}\"", m.digest)));
    h.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(m.bytes.len()),
    );
    let body = if head {
        Body::empty()
    } else {
        Body::from(m.bytes.clone())
    };
    (StatusCode::OK, h, body).into_response()
}

fn blob(cx: &Ctx<'_>, b: &Object, head: bool) -> Result<Response, ApiError> {
    let size = b.bytes.len() as u64;
    let range = requested_range(&cx.parts.headers, size)?;
    let (status, headers, _) = blob_headers(&b.digest, range.as_ref(), size);
    let bytes = match (&range, head) {
        (_, true) => Default::default(),
        (Some(r), false) => b.bytes.slice(r.start as usize..r.end as usize),
        (None, false) => b.bytes.clone(),
    };
    Ok((status, headers, Body::from(bytes)).into_response())
}
