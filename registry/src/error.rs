//! The wire error: the spec's error codes, the status each one travels with, and the JSON body
//! `{"errors":[{"code","message","detail"}]}`. Rendering has no side effects; internal faults are
//! logged once by the request middleware.

use axum::response::{IntoResponse, Response};
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

/// The error codes of the distribution spec ("Error Codes"), plus `UNAVAILABLE` for 5xx answers,
/// which the spec's table (written for 4xx bodies) does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// blob unknown to registry
    BlobUnknown,
    /// blob upload invalid
    BlobUploadInvalid,
    /// blob upload unknown to registry
    BlobUploadUnknown,
    /// provided digest did not match uploaded content
    DigestInvalid,
    /// manifest references a manifest or blob unknown to registry
    ManifestBlobUnknown,
    /// manifest invalid
    ManifestInvalid,
    /// manifest unknown to registry
    ManifestUnknown,
    /// invalid repository name
    NameInvalid,
    /// repository name not known to registry
    NameUnknown,
    /// provided length did not match content length
    SizeInvalid,
    /// authentication required
    Unauthorized,
    /// requested access to the resource is denied
    Denied,
    /// the operation is unsupported
    Unsupported,
    /// too many requests
    #[serde(rename = "TOOMANYREQUESTS")]
    TooManyRequests,
    /// the registry cannot serve the request now (storage failure); retry later
    Unavailable,
}

/// An error as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    /// The spec code.
    pub code: ErrorCode,
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// Structured detail, if any.
    pub detail: Option<Value>,
    /// Extra headers (`Range`/`Location` on 416, `Retry-After`, `Allow`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The full cause of a server fault, for the log only: it names storage endpoints and keys,
    /// which clients have no business seeing.
    pub internal: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a Value>,
}

impl ApiError {
    /// An error with a code, status and message.
    pub fn new(code: ErrorCode, status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            status,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            internal: None,
        }
    }

    /// Keeps the full cause for the log.
    pub fn with_internal(mut self, cause: String) -> Self {
        self.internal = Some(cause);
        self
    }

    /// Adds structured detail.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: impl TryInto<HeaderValue>) -> Self {
        if let Ok(v) = value.try_into() {
            self.headers.push((name, v));
        }
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// True for faults of the server rather than of the request.
    pub fn is_server_fault(&self) -> bool {
        self.status.is_server_error()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            errors: [Entry {
                code: self.code,
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        };
        let json = serde_json::to_vec(&body).expect("error body serialises");
        let mut resp = (
            self.status,
            [(http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().append(k, v);
        }
        resp
    }
}

impl From<storage::ParseError> for ApiError {
    fn from(e: storage::ParseError) -> Self {
        use storage::ParseError as P;
        let code = match e {
            P::Digest(..) => ErrorCode::DigestInvalid,
            P::Name(..) => ErrorCode::NameInvalid,
            P::Tag(..) => ErrorCode::ManifestInvalid,
        };
        ApiError::new(code, StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<storage::Error> for ApiError {
    fn from(e: storage::Error) -> Self {
        use storage::Error as S;
        use ErrorCode as C;
        let msg = e.to_string();
        match e {
            S::Parse(p) => p.into(),
            S::BlobUnknown(d) => ApiError::new(C::BlobUnknown, StatusCode::NOT_FOUND, msg)
                .with_detail(serde_json::json!({ "digest": d.to_string() })),
            S::UploadUnknown => ApiError::new(C::BlobUploadUnknown, StatusCode::NOT_FOUND, msg),
            S::RangeInvalid { offset, .. } => {
                ApiError::new(C::BlobUploadInvalid, StatusCode::RANGE_NOT_SATISFIABLE, msg)
                    .with_header(http::header::RANGE, crate::api::range_header(offset))
            }
            S::SizeInvalid(_) => ApiError::new(C::SizeInvalid, StatusCode::BAD_REQUEST, msg),
            S::DigestMismatch { .. } => {
                ApiError::new(C::DigestInvalid, StatusCode::BAD_REQUEST, msg)
            }
            S::ManifestInvalid(_) => {
                ApiError::new(C::ManifestInvalid, StatusCode::BAD_REQUEST, msg)
            }
            S::ManifestTooLarge { .. } => {
                ApiError::new(C::ManifestInvalid, StatusCode::PAYLOAD_TOO_LARGE, msg)
            }
            S::ManifestBlobUnknown(d) => {
                ApiError::new(C::ManifestBlobUnknown, StatusCode::BAD_REQUEST, msg)
                    .with_detail(serde_json::json!({ "digest": d.to_string() }))
            }
            S::ManifestUnknown(_) => ApiError::new(C::ManifestUnknown, StatusCode::NOT_FOUND, msg),
            S::NameUnknown(_) => ApiError::new(C::NameUnknown, StatusCode::NOT_FOUND, msg),
            S::Unsupported(_) => ApiError::new(C::Unsupported, StatusCode::BAD_REQUEST, msg),
            S::Body(_) => ApiError::new(C::BlobUploadInvalid, StatusCode::BAD_REQUEST, msg),
            S::NotFound(_) | S::Corrupt(_) => ApiError::new(
                C::Unavailable,
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored data is inconsistent; the registry log has the details",
            )
            .with_internal(msg),
            S::Backend { .. } => ApiError::new(
                C::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "storage is unavailable; retry later",
            )
            .with_header(RETRY_AFTER, "1")
            .with_internal(error_chain(&e)),
        }
    }
}

/// The error and its sources, joined, for messages that must name the root cause.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_the_spec_writes_them() {
        let s = |c| serde_json::to_string(&c).unwrap();
        assert_eq!(s(ErrorCode::BlobUploadUnknown), "\"BLOB_UPLOAD_UNKNOWN\"");
        assert_eq!(
            s(ErrorCode::ManifestBlobUnknown),
            "\"MANIFEST_BLOB_UNKNOWN\""
        );
        assert_eq!(s(ErrorCode::TooManyRequests), "\"TOOMANYREQUESTS\"");
        assert_eq!(s(ErrorCode::NameInvalid), "\"NAME_INVALID\"");
    }
}
