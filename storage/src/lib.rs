//! Storage for an OCI registry: content-addressed blobs, per-repository links, tags, referrers
//! and resumable upload sessions, over interchangeable backends. This crate knows nothing of HTTP.
//!
//! # Layout
//! - [`types`]: validated newtypes (`Digest`, `RepoName`, `Tag`, `Reference`).
//! - [`backend`]: the `Backend` trait and its contracts (atomic put, staged appends, listings).
//! - [`fs`]: the filesystem backend.
//! - [`object`]: the object-storage backend (S3, GCS, Azure, memory) and its multipart staging.
//! - [`layout`]: every key in the key space, and the staging-folder contract with backends.
//! - [`store`]: the `Store`, the service the HTTP layer calls, one module per resource.
//! - [`gc`]: online garbage collection, retention and fsck.
//! - [`hash`]: incremental hashing with savable state.
//! - [`manifest`]: parsing and validating pushed manifests; referrer descriptors.
//! - [`pattern`]: globs over repository names and tags, for retention and sparse rules.
//! - [`sparse`]: which references a pushed manifest may leave out, per repository.
//! - [`range`]: byte ranges as clients write them (`Content-Range`, `Range`) and the 416 helpers.
//! - [`outbox`]: registry events kept in storage until every notification endpoint took them.
//! - [`proxy_cache`]: the keys and writes of the pull-through cache (tag checks, last pulls).
//! - [`error`]: the error vocabulary.

pub mod backend;
pub mod error;
pub mod fs;
pub mod gc;
pub mod hash;
pub mod layout;
pub mod manifest;
pub mod object;
pub mod outbox;
pub mod pattern;
pub mod proxy_cache;
pub mod range;
pub mod sparse;
pub mod store;
pub mod types;

pub use backend::{Backend, ByteStream, GetObject, ObjectMeta};
pub use error::{Error, Result};
pub use sparse::SparseRule;
pub use store::{ManifestInfo, Options, Page, PushedManifest, ReferrersPage, Store, UploadStatus};
pub use types::{Algorithm, Digest, ParseError, Reference, RepoName, Tag};
