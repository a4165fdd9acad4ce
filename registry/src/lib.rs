//! An OCI distribution registry: the HTTP API over the `storage` crate.
//!
//! # Layout
//! - [`config`]: the typed configuration (file, then `REGISTRY_*` environment, then flags).
//! - [`endpoint`]: parsing `/v2/...` paths, right to left, into an [`endpoint::Endpoint`].
//! - [`api`]: the handlers behind one dispatch function, one file per resource.
//! - [`layers`]: the tower layers around the API: routing, request span, metrics, admission.
//! - [`error`]: the spec's error codes and the JSON error body.
//! - [`listen`]: accepting connections, with header, idle and HTTP/2 limits.
//! - [`maintenance`]: garbage collection and fsck, scheduled and from the command line.
//! - [`metrics`]: Prometheus metrics served at `/metrics`.
//! - [`server`]: the router and [`server::run`], which serves until shutdown.
//! - [`tls`]: HTTPS through rustls: certificate reload, mutual TLS, the TLS accept loop.
//! - [`cert`]: `registry cert`, a private CA and the certificates it signs.

pub mod api;
pub mod cert;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod layers;
pub mod listen;
pub mod maintenance;
pub mod metrics;
pub mod sendfile;
pub mod server;
pub mod tls;

pub use config::Config;
