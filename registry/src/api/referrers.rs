//! Referrers: `GET /v2/<name>/referrers/<digest>`, an image index of the manifests whose
//! `subject` is the digest, optionally filtered by `artifactType`.

use axum::response::Response;
use http::header::HeaderValue;
use serde_json::json;
use storage::{Digest, RepoName};

use super::{json_response, param, Ctx};
use crate::error::ApiError;

const OCI_FILTERS: http::HeaderName = http::HeaderName::from_static("oci-filters-applied");

/// `GET /v2/<name>/referrers/<digest>`.
pub(super) async fn list(
    cx: &Ctx<'_>,
    name: RepoName,
    digest: Digest,
) -> Result<Response, ApiError> {
    let filter = param(cx.query, "artifactType").filter(|a| !a.is_empty());
    let descs = cx.st.registry.referrers(&name, &digest, filter).await?;
    let mut resp = json_response(
        json!({
            "schemaVersion": 2,
            "mediaType": storage::manifest::OCI_INDEX,
            "manifests": descs,
        }),
        storage::manifest::OCI_INDEX,
    );
    if filter.is_some() {
        resp.headers_mut()
            .insert(OCI_FILTERS, HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}
