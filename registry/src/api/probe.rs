//! The built-in node probe image ([`crate::probe_image`]): `GET`/`HEAD` of its manifests and
//! blobs are answered from memory, before storage and the pull-through cache. Every other
//! request on its repository goes on as usual.

use axum::body::Body;
use axum::response::IntoResponse;
use http::Method;

use super::blobs::{blob_headers, requested_range};
use super::manifests::manifest_response;
use super::{Answer, Ctx};
use crate::endpoint::Endpoint;
use crate::probe_image::{self, Object};

/// The answer when `ep` reads the probe image, else `None`.
pub(super) fn answer(cx: &Ctx<'_>, ep: &Endpoint) -> Option<Answer> {
    use Endpoint as E;
    let head = || cx.parts.method == Method::HEAD;
    match ep {
        E::GetManifest { name, reference } | E::HeadManifest { name, reference }
            if name.as_str() == probe_image::REPO =>
        {
            let m = probe_image::image().manifest(reference)?;
            let info = storage::ManifestInfo {
                digest: m.digest.clone(),
                media_type: m.media_type.to_owned(),
                size: m.bytes.len() as u64,
            };
            let body = if head() {
                Body::empty()
            } else {
                Body::from(m.bytes.clone())
            };
            Some(Ok(manifest_response(&info, body)))
        }
        E::GetBlob { name, digest } | E::HeadBlob { name, digest }
            if name.as_str() == probe_image::REPO =>
        {
            let b = probe_image::image().blob(digest)?;
            Some(blob(cx, b, head()))
        }
        _ => None,
    }
}

fn blob(cx: &Ctx<'_>, b: &Object, head: bool) -> Answer {
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
