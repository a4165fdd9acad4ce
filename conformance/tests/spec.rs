//! The registry's HTTP test suite, written from the OCI distribution spec
//! (`/work/shared/specs/distribution-spec.md`) and the image spec for manifests.
//!
//! Each test starts its own server ([`conformance::TestRegistry`]) on `127.0.0.1:0` with its own
//! storage folder, so tests run in parallel and never see each other's content.
//!
//! # Layout
//! - `api`: `/v2/`, health endpoints, unknown query parameters, `ns`.
//! - `blobs`: blob GET/HEAD/DELETE, headers, Range requests.
//! - `uploads`: monolithic, chunked and streamed uploads, status, cancel, sha512, resume.
//! - `mount`: cross-repository and automatic mounts.
//! - `manifests`: push/pull/delete of manifests and tags, validation, limits.
//! - `tags`: tag listing and pagination.
//! - `catalog`: `/v2/_catalog` and pagination.
//! - `crash`: requests cut short and restarts in the middle of a push.
//! - `probe`: the built-in node probe image.
//! - `referrers`: the referrers API.
//! - `errors`: error bodies and codes for bad names, digests and requests.
//! - `workflows`: the official conformance suite's workflows end to end.
//! - `official`: what the official suites check beyond that: references that name nothing,
//!   sparse manifests, referrers pages, HEAD headers equal to GET's.

#[path = "spec/api.rs"]
mod api;
#[path = "spec/blobs.rs"]
mod blobs;
#[path = "spec/catalog.rs"]
mod catalog;
#[path = "spec/crash.rs"]
mod crash;
#[path = "spec/errors.rs"]
mod errors;
#[path = "spec/manifests.rs"]
mod manifests;
#[path = "spec/mount.rs"]
mod mount;
#[path = "spec/official.rs"]
mod official;
#[path = "spec/probe.rs"]
mod probe;
#[path = "spec/referrers.rs"]
mod referrers;
#[path = "spec/tags.rs"]
mod tags;
#[path = "spec/uploads.rs"]
mod uploads;
#[path = "spec/workflows.rs"]
mod workflows;
