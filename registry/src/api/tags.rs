//! Listing: `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, paginated with `n`/`last` and a
//! `Link` header to the next page.

use axum::response::Response;
use http::header::LINK;
use serde_json::json;
use storage::RepoName;

use super::{header_value, json_response, param, Ctx, Query};
use crate::error::{ApiError, ErrorCode};

fn link_next(path: &str, n: usize, last: &str) -> String {
    let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    format!("<{path}?n={n}&last={last}>; rel=\"next\"")
}

fn page_params(q: &Query) -> Result<(Option<usize>, Option<&str>), ApiError> {
    let n = match param(q, "n") {
        None | Some("") => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::new(
                ErrorCode::Unsupported,
                format!("n must be a non-negative integer, not {v:?}"),
            )
        })?),
    };
    Ok((n, param(q, "last").filter(|l| !l.is_empty())))
}

/// Adds the `Link` to the next page when there is one.
fn with_next_link(
    mut resp: Response,
    path: &str,
    n: Option<usize>,
    page: &storage::Page,
) -> Response {
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        resp.headers_mut()
            .insert(LINK, header_value(&link_next(path, n, last)));
    }
    resp
}

/// `GET /v2/<name>/tags/list`.
pub(super) async fn list(cx: &Ctx<'_>, name: RepoName) -> Result<Response, ApiError> {
    let (n, last) = page_params(cx.query)?;
    let page = cx.st.registry.tags(&name, n, last).await?;
    let resp = json_response(
        json!({ "name": name.as_str(), "tags": page.items }),
        "application/json",
    );
    Ok(with_next_link(
        resp,
        &format!("/v2/{name}/tags/list"),
        n,
        &page,
    ))
}

/// `GET /v2/_catalog`.
pub(super) async fn catalog(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let (n, last) = page_params(cx.query)?;
    let page = cx.st.registry.catalog(n, last).await?;
    let resp = json_response(json!({ "repositories": page.items }), "application/json");
    Ok(with_next_link(resp, "/v2/_catalog", n, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link() {
        assert_eq!(
            link_next("/v2/a/tags/list", 2, "v1.0"),
            "</v2/a/tags/list?n=2&last=v1.0>; rel=\"next\""
        );
    }
}
