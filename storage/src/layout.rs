//! Where things live in the key space. The same layout serves every backend.
//!
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>                       blob and manifest bytes, shared, immutable
//! repositories/<name>/_layers/<alg>/<hex>            link: the repository may serve this blob
//! repositories/<name>/_manifests/<alg>/<hex>         link: manifest revision, JSON {mediaType,size}
//! repositories/<name>/_tags/<tag>                    tag -> digest (text)
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>  descriptor of a manifest whose subject is <alg>:<hex>
//! catalog/<name>/_repo                               marker: the repository exists (for /v2/_catalog)
//! uploads/<id>/state                                 upload session state (JSON), next to the backend's staged bytes
//! ```
//!
//! Repository name components start with `[a-z0-9]`, so they never collide with the `_`-prefixed
//! folders.

use crate::types::{Digest, RepoName, Tag};

/// Bytes of a blob or manifest.
pub fn blob(d: &Digest) -> String {
    format!("blobs/{}/{}/{}", d.algorithm(), &d.hex()[..2], d.hex())
}

/// Root folder of a repository.
pub fn repo(name: &RepoName) -> String {
    format!("repositories/{name}/")
}

/// A repository's link to a layer or config blob.
pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!("repositories/{name}/_layers/{}/{}", d.algorithm(), d.hex())
}

/// A repository's link to a manifest revision.
pub fn manifest_link(name: &RepoName, d: &Digest) -> String {
    format!(
        "repositories/{name}/_manifests/{}/{}",
        d.algorithm(),
        d.hex()
    )
}

/// Folder of a repository's tags.
pub fn tags_dir(name: &RepoName) -> String {
    format!("repositories/{name}/_tags/")
}

/// One tag.
pub fn tag(name: &RepoName, t: &Tag) -> String {
    format!("repositories/{name}/_tags/{t}")
}

/// Folder of the referrers of `subject`.
pub fn referrers_dir(name: &RepoName, subject: &Digest) -> String {
    format!(
        "repositories/{name}/_referrers/{}/{}/",
        subject.algorithm(),
        subject.hex()
    )
}

/// One referrer entry.
pub fn referrer(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}{}-{}",
        referrers_dir(name, subject),
        referrer.algorithm(),
        referrer.hex()
    )
}

/// Prefix of the catalog markers.
pub const CATALOG: &str = "catalog/";

/// Suffix of a catalog marker key.
pub const CATALOG_MARKER: &str = "/_repo";

/// The marker that lists a repository in the catalog.
pub fn catalog_marker(name: &RepoName) -> String {
    format!("{CATALOG}{name}{CATALOG_MARKER}")
}

/// An upload session's state object.
pub fn upload_state(id: &str) -> String {
    format!("uploads/{id}/state")
}
