//! Referrers: `GET /v2/<name>/referrers/<digest>`, an image index of the manifests whose
//! `subject` is the digest, optionally filtered by `artifactType`, in pages of at most
//! `referrers_page_size` descriptors with a `Link` to the next page.

use http::header::{HeaderValue, LINK};
use serde_json::json;
use storage::{Digest, RepoName};

use super::tags::{link_next, page_params};
use super::{header_value, json_response, param, Answer, Ctx};

const OCI_FILTERS: http::HeaderName = http::HeaderName::from_static("oci-filters-applied");

/// `GET /v2/<name>/referrers/<digest>`.
pub(super) async fn list(cx: &Ctx<'_>, name: RepoName, digest: Digest) -> Answer {
    let filter = param(cx.query, "artifactType").filter(|a| !a.is_empty());
    let (n, last) = page_params(cx.query)?;
    let bound = cx.st.config.referrers_page_size;
    let n = n.map_or(bound, |n| n.min(bound));
    let last: Option<Digest> = last.map(str::parse).transpose()?;
    let page = cx
        .st
        .registry
        .referrers(&name, &digest, filter, n, last.as_ref())
        .await?;
    let mut resp = json_response(
        json!({
            "schemaVersion": 2,
            "mediaType": storage::manifest::OCI_INDEX,
            "manifests": page.descriptors,
        }),
        storage::manifest::OCI_INDEX,
    );
    let h = resp.headers_mut();
    if filter.is_some() {
        h.insert(OCI_FILTERS, HeaderValue::from_static("artifactType"));
    }
    if let (true, Some(last)) = (page.more, page.descriptors.last()) {
        let extra: Vec<(&str, &str)> = filter.map(|at| ("artifactType", at)).into_iter().collect();
        let next = link_next(
            &format!("/v2/{name}/referrers/{digest}"),
            n,
            last.digest().as_ref(),
            &extra,
        );
        h.insert(LINK, header_value(&next));
    }
    Ok(resp)
}
