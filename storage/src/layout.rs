//! Where things live in the key space. The same layout serves every backend, and every key the
//! crate reads or writes is built here.
//!
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>                       blob and manifest bytes, shared, immutable
//! repositories/<name>/_layers/<alg>/<hex>            link: the repository may serve this blob
//! repositories/<name>/_manifests/<alg>/<hex>         link: manifest revision, JSON {mediaType,size}
//! repositories/<name>/_tags/<tag>                    tag -> digest (text)
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>  descriptor of a manifest whose subject is <alg>:<hex>
//! catalog/<name>/_repo                               marker: the repository exists (for /v2/_catalog)
//! quarantine/<alg>/<hex>                             a blob `fsck` found damaged, moved aside
//! uploads/<id>/                                      staging folder of upload session <id> (below)
//! _touched/<key>                                     object backend: modification-time sidecar of <key>
//! outbox/events/<id>                                event outbox: one event record (crate::outbox)
//! outbox/done/<endpoint>/<id>                        endpoint <endpoint> took event <id>
//! outbox/leases/<endpoint>                           which process delivers for <endpoint>
//! proxy/...                                         pull-through cache records, see crate::proxy_cache
//! ```
//!
//! Repository name components start with `[a-z0-9]`, so they never collide with the `_`-prefixed
//! folders.
//!
//! # The staging folder `uploads/<id>/`
//! An upload session's folder is shared by the service and the backend, by this contract:
//! - The service owns exactly one object in it, the session state ([`UPLOAD_STATE`]). It writes
//!   and reads it only through [`Backend::stage_put_state`] and [`Backend::stage_get_state`],
//!   never with `put`/`get`, so the backend knows the object is staging state (the filesystem
//!   backend, for one, syncs it with the upload's commit rather than on every chunk).
//! - The backend owns every other name in the folder (the filesystem backend's `data`; the
//!   object backend's `staged`, `tail-*` and `data`, see [`crate::object`]).
//! - [`Backend::stage_delete`] removes the whole folder, the service's state included: ending a
//!   session (commit, cancel, purge, a digest mismatch) is that one call.
//! - Listings of other prefixes never show staging objects, and a staging folder holds no
//!   content any link may point at.
//!
//! [`Backend::stage_put_state`]: crate::Backend::stage_put_state
//! [`Backend::stage_get_state`]: crate::Backend::stage_get_state
//! [`Backend::stage_delete`]: crate::Backend::stage_delete

use crate::types::{Digest, RepoName, Tag};

/// Folder of all blobs.
pub const BLOBS: &str = "blobs/";

/// Bytes of a blob or manifest.
pub fn blob(d: &Digest) -> String {
    format!("{BLOBS}{}/{}/{}", d.algorithm(), &d.hex()[..2], d.hex())
}

/// The digest a blob key names (`None` for anything else under [`BLOBS`]).
pub fn blob_digest(key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(BLOBS)?;
    let mut parts = rest.split('/');
    let (alg, _, hex) = (parts.next()?, parts.next()?, parts.next()?);
    format!("{alg}:{hex}").parse().ok()
}

/// Root folder of a repository.
pub fn repo(name: &RepoName) -> String {
    format!("repositories/{name}/")
}

/// Folder of a repository's layer links.
pub fn layers_dir(name: &RepoName) -> String {
    format!("repositories/{name}/_layers/")
}

/// A repository's link to a layer or config blob.
pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!("{}{}/{}", layers_dir(name), d.algorithm(), d.hex())
}

/// Folder of a repository's manifest links.
pub fn manifests_dir(name: &RepoName) -> String {
    format!("repositories/{name}/_manifests/")
}

/// A repository's link to a manifest revision.
pub fn manifest_link(name: &RepoName, d: &Digest) -> String {
    format!("{}{}/{}", manifests_dir(name), d.algorithm(), d.hex())
}

/// The digest a link key under `dir` (a [`layers_dir`] or [`manifests_dir`]) names.
pub fn link_digest(dir: &str, key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(dir)?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// Folder of a repository's tags.
pub fn tags_dir(name: &RepoName) -> String {
    format!("repositories/{name}/_tags/")
}

/// One tag.
pub fn tag(name: &RepoName, t: &Tag) -> String {
    format!("{}{t}", tags_dir(name))
}

/// A tag by the name a listing of [`tags_dir`] returned.
pub fn tag_named(name: &RepoName, tag: &str) -> String {
    format!("{}{tag}", tags_dir(name))
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
    referrer_named(name, subject, &referrer_name(referrer))
}

/// The name of a referrer's entry in [`referrers_dir`] (`<alg>-<hex>`): entries sort as their
/// digests do.
pub fn referrer_name(referrer: &Digest) -> String {
    format!("{}-{}", referrer.algorithm(), referrer.hex())
}

/// A referrer entry by the name a listing of [`referrers_dir`] returned.
pub fn referrer_named(name: &RepoName, subject: &Digest, entry: &str) -> String {
    format!("{}{entry}", referrers_dir(name, subject))
}

/// Prefix of the catalog markers.
pub const CATALOG: &str = "catalog/";

/// Suffix of a catalog marker key.
pub const CATALOG_MARKER: &str = "/_repo";

/// The marker that lists a repository in the catalog.
pub fn catalog_marker(name: &RepoName) -> String {
    format!("{CATALOG}{name}{CATALOG_MARKER}")
}

/// The repository a catalog marker key names.
pub fn catalog_name(key: &str) -> Option<&str> {
    key.strip_prefix(CATALOG)?.strip_suffix(CATALOG_MARKER)
}

/// Where `fsck` moves a damaged blob.
pub fn quarantine(d: &Digest) -> String {
    format!("quarantine/{}/{}", d.algorithm(), d.hex())
}

/// Folder of all staging folders.
pub const UPLOADS: &str = "uploads/";

/// Whether `key` lies in the staging area (listings of content skip it).
pub fn is_staging(key: &str) -> bool {
    key.starts_with(UPLOADS)
}

/// Name of the service's state object in a staging folder.
pub const UPLOAD_STATE: &str = "state";

/// Staging folder of upload session `id`.
pub fn upload_dir(id: &str) -> String {
    format!("{UPLOADS}{id}/")
}

/// The object `name` in the staging folder of `id` (a backend's own objects, or
/// [`UPLOAD_STATE`]).
pub fn upload_object(id: &str, name: &str) -> String {
    format!("{}{name}", upload_dir(id))
}

/// An upload session's state object.
pub fn upload_state(id: &str) -> String {
    upload_object(id, UPLOAD_STATE)
}

/// Folder of the object backend's modification-time sidecars.
pub const TOUCHED: &str = "_touched/";

/// The object backend's modification-time sidecar of `key`.
pub fn touched(key: &str) -> String {
    format!("{TOUCHED}{key}")
}

/// Folder of the pull-through cache's records (see [`crate::proxy_cache`]).
pub const PROXY: &str = "proxy/";
/// Folder of the markers that make repositories caches of an upstream.
pub const PROXY_REPOS: &str = "proxy/repos/";

/// The marker that makes `name` a cache repository.
pub fn proxy_repo_marker(name: &RepoName) -> String {
    format!("{PROXY_REPOS}{name}")
}

/// A cached tag's upstream record.
pub fn proxy_tag(name: &RepoName, tag: &Tag) -> String {
    format!("{PROXY}tags/{name}/{tag}")
}

/// The last-pulled marker of an object in a cache repository.
pub fn proxy_pulled(name: &RepoName, d: &Digest) -> String {
    format!("{PROXY}pulled/{name}/{}-{}", d.algorithm(), d.hex())
}

/// Folder of the event outbox's records (see [`crate::outbox`]).
pub const OUTBOX_EVENTS: &str = "outbox/events/";
const OUTBOX_DONE: &str = "outbox/done/";
const OUTBOX_LEASES: &str = "outbox/leases/";

/// Event record `id` of the outbox.
pub fn outbox_event(id: &str) -> String {
    format!("{OUTBOX_EVENTS}{id}")
}

/// Folder of the done markers of `endpoint` (any name: [`crate::outbox::endpoint_key`] makes it
/// safe for a key).
pub fn outbox_done_dir(endpoint: &str) -> String {
    format!("{OUTBOX_DONE}{}/", crate::outbox::endpoint_key(endpoint))
}

/// The marker saying `endpoint` took event `id`.
pub fn outbox_done(endpoint: &str, id: &str) -> String {
    format!("{}{id}", outbox_done_dir(endpoint))
}

/// The delivery lease of endpoint `name`.
pub fn outbox_lease(name: &str) -> String {
    format!("{OUTBOX_LEASES}{}", crate::outbox::endpoint_key(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let h = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let d: Digest = format!("sha256:{h}").parse().unwrap();
        assert_eq!(blob(&d), format!("blobs/sha256/9f/{h}"));
        assert_eq!(blob_digest(&blob(&d)), Some(d.clone()));
        assert!(blob_digest("blobs/sha256/9f").is_none());
        let r: RepoName = "a/b".parse().unwrap();
        assert_eq!(
            link_digest(&layers_dir(&r), &layer_link(&r, &d)),
            Some(d.clone())
        );
        assert_eq!(
            link_digest(&manifests_dir(&r), &manifest_link(&r, &d)),
            Some(d)
        );
        assert_eq!(catalog_name(&catalog_marker(&r)), Some("a/b"));
        assert_eq!(upload_state("x"), "uploads/x/state");
        assert!(is_staging(&upload_state("x")));
    }

    #[test]
    fn keys() {
        let h = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(
            blob_digest(&format!("blobs/sha256/9f/{h}"))
                .unwrap()
                .to_string(),
            format!("sha256:{h}")
        );
        assert!(blob_digest("blobs/sha256/9f").is_none());
        assert_eq!(
            link_digest("r/_layers/", &format!("r/_layers/sha256/{h}"))
                .unwrap()
                .hex(),
            h
        );
    }
}
