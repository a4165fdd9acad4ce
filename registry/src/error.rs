//! The wire error: the spec's error codes, the status each one travels with by default
//! ([`ErrorCode::status`]), and the JSON body `{"errors":[{"code","message","detail"}]}`. Rendering has no side effects; internal faults are
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

impl ErrorCode {
    /// The status this code travels with unless the spec asks for another one (416 for a range,
    /// 405, 413, 414, a 404 for a path that names no endpoint, a 500 for inconsistent data).
    pub fn status(self) -> StatusCode {
        use ErrorCode as C;
        match self {
            C::BlobUnknown | C::BlobUploadUnknown | C::ManifestUnknown | C::NameUnknown => {
                StatusCode::NOT_FOUND
            }
            C::BlobUploadInvalid
            | C::DigestInvalid
            | C::ManifestBlobUnknown
            | C::ManifestInvalid
            | C::NameInvalid
            | C::SizeInvalid
            | C::Unsupported => StatusCode::BAD_REQUEST,
            C::Unauthorized => StatusCode::UNAUTHORIZED,
            C::Denied => StatusCode::FORBIDDEN,
            C::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
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
    /// An error with a code and message, sent with the code's status ([`ErrorCode::status`]).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            internal: None,
        }
    }

    /// Sends the error with another status than its code's, where the spec asks for one.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// A 416 for a chunk that does not start where the upload ends: the `Range` header tells the
    /// client how much the registry holds.
    pub fn upload_range(message: impl Into<String>, offset: u64) -> Self {
        ApiError::new(ErrorCode::BlobUploadInvalid, message)
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(http::header::RANGE, storage::range::upload_range(offset))
    }

    /// A 416 for a blob `Range` that selects no byte of a blob of `size` bytes.
    pub fn blob_range(message: impl Into<String>, size: u64) -> Self {
        ApiError::new(ErrorCode::BlobUnknown, message)
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(
                http::header::CONTENT_RANGE,
                storage::range::unsatisfied_range(size),
            )
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
        ApiError::new(code, e.to_string())
    }
}

impl From<storage::Error> for ApiError {
    fn from(e: storage::Error) -> Self {
        use storage::Error as S;
        use ErrorCode as C;
        let msg = e.to_string();
        match e {
            S::Parse(p) => p.into(),
            S::BlobUnknown(d) => ApiError::new(C::BlobUnknown, msg)
                .with_detail(serde_json::json!({ "digest": d.to_string() })),
            S::UploadUnknown => ApiError::new(C::BlobUploadUnknown, msg),
            S::RangeInvalid { offset, .. } => ApiError::upload_range(msg, offset),
            S::SizeInvalid(_) => ApiError::new(C::SizeInvalid, msg),
            S::DigestMismatch { .. } => ApiError::new(C::DigestInvalid, msg),
            S::ManifestInvalid(_) => ApiError::new(C::ManifestInvalid, msg),
            S::ManifestTooLarge { .. } => {
                ApiError::new(C::ManifestInvalid, msg).with_status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            S::ManifestBlobUnknown(d) => ApiError::new(C::ManifestBlobUnknown, msg)
                .with_detail(serde_json::json!({ "digest": d.to_string() })),
            S::ManifestUnknown(_) => ApiError::new(C::ManifestUnknown, msg),
            S::NameUnknown(_) => ApiError::new(C::NameUnknown, msg),
            S::Unsupported(_) => ApiError::new(C::Unsupported, msg),
            S::Body(_) => ApiError::new(C::BlobUploadInvalid, msg),
            S::NotFound(_) | S::Corrupt(_) => ApiError::new(
                C::Unavailable,
                "stored data is inconsistent; the registry log has the details",
            )
            .with_status(StatusCode::INTERNAL_SERVER_ERROR)
            .with_internal(msg),
            S::Backend { .. } => {
                ApiError::new(C::Unavailable, "storage is unavailable; retry later")
                    .with_header(RETRY_AFTER, "1")
                    .with_internal(error_chain(&e))
            }
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

    #[test]
    fn statuses_follow_the_codes() {
        use storage::Error as S;
        let status = |e: S| ApiError::from(e).status.as_u16();
        assert_eq!(status(S::UploadUnknown), 404);
        assert_eq!(status(S::SizeInvalid("x".into())), 400);
        assert_eq!(
            status(S::RangeInvalid {
                start: 5,
                offset: 3
            }),
            416
        );
        assert_eq!(status(S::ManifestTooLarge { size: 9, limit: 1 }), 413);
        assert_eq!(status(S::Corrupt("x".into())), 500);
        assert_eq!(ErrorCode::TooManyRequests.status().as_u16(), 429);
        assert_eq!(ErrorCode::Unavailable.status().as_u16(), 503);
        let e = ApiError::from(S::RangeInvalid {
            start: 5,
            offset: 3,
        });
        assert_eq!(e.headers[0].1, "0-2");
        let e = ApiError::blob_range("no", 7);
        assert_eq!(
            (e.status.as_u16(), e.headers[0].1.to_str().unwrap()),
            (416, "bytes */7")
        );
    }
}
