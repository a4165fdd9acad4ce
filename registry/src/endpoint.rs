//! Parsing a `/v2/...` request into an [`Endpoint`].
//!
//! Repository names contain `/`, so routes cannot be matched left to right. The path is read from
//! the right: the last segments decide the kind (`/manifests/<ref>`, `/blobs/<digest>`,
//! `/blobs/uploads/<id>`, `/tags/list`, `/referrers/<digest>`) and everything before is the name.
//! Names, digests and references are validated here, so handlers only see valid values.

use http::Method;
use storage::{Digest, ParseError, Reference, RepoName};

/// Every operation of the distribution API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v2/`
    Base,
    /// `GET /v2/_catalog`
    Catalog,
    /// `GET /v2/<name>/tags/list`
    ListTags { name: RepoName },
    /// `GET /v2/<name>/manifests/<reference>`
    GetManifest {
        name: RepoName,
        reference: Reference,
    },
    /// `HEAD /v2/<name>/manifests/<reference>`
    HeadManifest {
        name: RepoName,
        reference: Reference,
    },
    /// `PUT /v2/<name>/manifests/<reference>`
    PutManifest {
        name: RepoName,
        reference: Reference,
    },
    /// `DELETE /v2/<name>/manifests/<reference>`
    DeleteManifest {
        name: RepoName,
        reference: Reference,
    },
    /// `GET /v2/<name>/blobs/<digest>`
    GetBlob { name: RepoName, digest: Digest },
    /// `HEAD /v2/<name>/blobs/<digest>`
    HeadBlob { name: RepoName, digest: Digest },
    /// `DELETE /v2/<name>/blobs/<digest>`
    DeleteBlob { name: RepoName, digest: Digest },
    /// `POST /v2/<name>/blobs/uploads/`
    StartUpload { name: RepoName },
    /// `GET /v2/<name>/blobs/uploads/<id>`
    GetUpload { name: RepoName, id: String },
    /// `PATCH /v2/<name>/blobs/uploads/<id>`
    PatchUpload { name: RepoName, id: String },
    /// `PUT /v2/<name>/blobs/uploads/<id>`
    PutUpload { name: RepoName, id: String },
    /// `DELETE /v2/<name>/blobs/uploads/<id>`
    DeleteUpload { name: RepoName, id: String },
    /// `GET /v2/<name>/referrers/<digest>`
    Referrers { name: RepoName, digest: Digest },
}

/// Why a path could not be turned into an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No endpoint has this shape.
    NotFound,
    /// The path names an endpoint that does not take this method; carries the allowed methods.
    MethodNotAllowed(&'static str),
    /// A name, digest or reference in the path is invalid.
    Invalid(ParseError),
}

/// The endpoint of a request (or why there is none), found once by the routing layer and kept
/// in the request's extensions for the layers and the handler.
#[derive(Debug, Clone)]
pub struct Route(pub Result<Endpoint, RouteError>);

impl Route {
    /// Parses a request for `path` (starting with `/v2`).
    pub fn of(method: &Method, path: &str) -> Route {
        let rest = path
            .strip_prefix("/v2")
            .map(|r| r.strip_prefix('/').unwrap_or(r))
            .unwrap_or("");
        Route(Endpoint::parse(method, rest))
    }

    /// The endpoint's label for logs and metrics (`invalid` when there is none).
    pub fn label(&self) -> &'static str {
        self.0.as_ref().map_or("invalid", Endpoint::name)
    }

    /// The endpoint, if the path named one.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.0.as_ref().ok()
    }
}

impl From<ParseError> for RouteError {
    fn from(e: ParseError) -> Self {
        RouteError::Invalid(e)
    }
}

impl Endpoint {
    /// A stable label for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::ListTags { .. } => "list_tags",
            Endpoint::GetManifest { .. } => "get_manifest",
            Endpoint::HeadManifest { .. } => "head_manifest",
            Endpoint::PutManifest { .. } => "put_manifest",
            Endpoint::DeleteManifest { .. } => "delete_manifest",
            Endpoint::GetBlob { .. } => "get_blob",
            Endpoint::HeadBlob { .. } => "head_blob",
            Endpoint::DeleteBlob { .. } => "delete_blob",
            Endpoint::StartUpload { .. } => "start_upload",
            Endpoint::GetUpload { .. } => "get_upload",
            Endpoint::PatchUpload { .. } => "patch_upload",
            Endpoint::PutUpload { .. } => "put_upload",
            Endpoint::DeleteUpload { .. } => "delete_upload",
            Endpoint::Referrers { .. } => "referrers",
        }
    }

    /// Parses the part of the path after `/v2/` for `method`.
    pub fn parse(method: &Method, rest: &str) -> Result<Endpoint, RouteError> {
        use Endpoint as E;
        let m = method;
        let is = |x: &Method| m == x;
        let get_head = if is(&Method::GET) {
            Some(true)
        } else if is(&Method::HEAD) {
            Some(false)
        } else {
            None
        };

        if rest.is_empty() {
            return match get_head {
                Some(_) => Ok(E::Base),
                None => Err(RouteError::MethodNotAllowed("GET, HEAD")),
            };
        }
        if rest == "_catalog" {
            return match get_head {
                Some(_) => Ok(E::Catalog),
                None => Err(RouteError::MethodNotAllowed("GET, HEAD")),
            };
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            let name = name.parse()?;
            return match get_head {
                Some(_) => Ok(E::ListTags { name }),
                None => Err(RouteError::MethodNotAllowed("GET, HEAD")),
            };
        }
        let (head, last) = rest.rsplit_once('/').ok_or(RouteError::NotFound)?;
        if let Some(name) = head.strip_suffix("/manifests") {
            let name: RepoName = name.parse()?;
            let reference: Reference = last.parse()?;
            return match *m {
                Method::GET => Ok(E::GetManifest { name, reference }),
                Method::HEAD => Ok(E::HeadManifest { name, reference }),
                Method::PUT => Ok(E::PutManifest { name, reference }),
                Method::DELETE => Ok(E::DeleteManifest { name, reference }),
                _ => Err(RouteError::MethodNotAllowed("GET, HEAD, PUT, DELETE")),
            };
        }
        if let Some(name) = head.strip_suffix("/referrers") {
            let name = name.parse()?;
            let digest = last.parse()?;
            return match get_head {
                Some(_) => Ok(E::Referrers { name, digest }),
                None => Err(RouteError::MethodNotAllowed("GET, HEAD")),
            };
        }
        // `<name>/blobs/uploads/` and `<name>/blobs/uploads`: a new session.
        let start_name = if last.is_empty() {
            head.strip_suffix("/blobs/uploads")
        } else if last == "uploads" {
            head.strip_suffix("/blobs")
        } else {
            None
        };
        if let Some(name) = start_name {
            let name = name.parse()?;
            return match *m {
                Method::POST => Ok(E::StartUpload { name }),
                _ => Err(RouteError::MethodNotAllowed("POST")),
            };
        }
        if let Some(name) = head.strip_suffix("/blobs/uploads") {
            let name = name.parse()?;
            let id = last.to_owned();
            return match *m {
                Method::GET | Method::HEAD => Ok(E::GetUpload { name, id }),
                Method::PATCH => Ok(E::PatchUpload { name, id }),
                Method::PUT => Ok(E::PutUpload { name, id }),
                Method::DELETE => Ok(E::DeleteUpload { name, id }),
                _ => Err(RouteError::MethodNotAllowed("GET, PATCH, PUT, DELETE")),
            };
        }
        if let Some(name) = head.strip_suffix("/blobs") {
            let name = name.parse()?;
            let digest = last.parse()?;
            return match *m {
                Method::GET => Ok(E::GetBlob { name, digest }),
                Method::HEAD => Ok(E::HeadBlob { name, digest }),
                Method::DELETE => Ok(E::DeleteBlob { name, digest }),
                _ => Err(RouteError::MethodNotAllowed("GET, HEAD, DELETE")),
            };
        }
        Err(RouteError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn ok(m: Method, p: &str) -> Endpoint {
        Endpoint::parse(&m, p).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    #[test]
    fn shapes() {
        assert_eq!(ok(Method::GET, ""), Endpoint::Base);
        assert_eq!(ok(Method::GET, "_catalog"), Endpoint::Catalog);
        assert_eq!(ok(Method::GET, "a/b/tags/list").name(), "list_tags");
        assert_eq!(ok(Method::GET, "a/manifests/latest").name(), "get_manifest");
        assert_eq!(
            ok(Method::HEAD, &format!("a/manifests/{D}")).name(),
            "head_manifest"
        );
        assert_eq!(ok(Method::PUT, "a/manifests/v1").name(), "put_manifest");
        assert_eq!(
            ok(Method::DELETE, "a/manifests/v1").name(),
            "delete_manifest"
        );
        assert_eq!(ok(Method::GET, &format!("a/blobs/{D}")).name(), "get_blob");
        assert_eq!(
            ok(Method::DELETE, &format!("a/blobs/{D}")).name(),
            "delete_blob"
        );
        assert_eq!(
            ok(Method::POST, "a/b/blobs/uploads/").name(),
            "start_upload"
        );
        assert_eq!(ok(Method::POST, "a/b/blobs/uploads").name(), "start_upload");
        assert_eq!(
            ok(Method::PATCH, "a/blobs/uploads/xyz").name(),
            "patch_upload"
        );
        assert_eq!(ok(Method::PUT, "a/blobs/uploads/xyz").name(), "put_upload");
        assert_eq!(ok(Method::GET, "a/blobs/uploads/xyz").name(), "get_upload");
        assert_eq!(
            ok(Method::DELETE, "a/blobs/uploads/xyz").name(),
            "delete_upload"
        );
        assert_eq!(
            ok(Method::GET, &format!("a/referrers/{D}")).name(),
            "referrers"
        );
        // Names that contain the keywords are read from the right.
        match ok(Method::GET, "blobs/manifests/manifests/v1") {
            Endpoint::GetManifest { name, .. } => assert_eq!(name.as_str(), "blobs/manifests"),
            e => panic!("{e:?}"),
        }
        match ok(Method::PATCH, "x/blobs/uploads/blobs/uploads/id1") {
            Endpoint::PatchUpload { name, id } => {
                assert_eq!((name.as_str(), id.as_str()), ("x/blobs/uploads", "id1"))
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn rejects() {
        use RouteError::*;
        let e = |m: Method, p: &str| Endpoint::parse(&m, p).unwrap_err();
        assert!(matches!(
            e(Method::GET, "A/manifests/v1"),
            Invalid(ParseError::Name(..))
        ));
        assert!(matches!(
            e(Method::GET, "a%2fb/manifests/v1"),
            Invalid(ParseError::Name(..))
        ));
        assert!(matches!(
            e(Method::GET, "../manifests/v1"),
            Invalid(ParseError::Name(..))
        ));
        assert!(matches!(
            e(Method::GET, "a/blobs/sha256:xyz"),
            Invalid(ParseError::Digest(..))
        ));
        assert!(matches!(
            e(Method::GET, "a/manifests/-bad"),
            Invalid(ParseError::Tag(..))
        ));
        assert!(matches!(
            e(Method::GET, "a/referrers/nope:"),
            Invalid(ParseError::Digest(..))
        ));
        assert_eq!(
            e(Method::POST, "a/manifests/v1"),
            MethodNotAllowed("GET, HEAD, PUT, DELETE")
        );
        assert_eq!(e(Method::GET, "a/blobs/uploads/"), MethodNotAllowed("POST"));
        assert_eq!(e(Method::GET, "nothing"), NotFound);
        assert_eq!(e(Method::GET, "a/tags"), NotFound);
    }
}
