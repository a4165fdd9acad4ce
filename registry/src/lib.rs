//! An OCI distribution registry: the HTTP API over the `storage` crate.
//!
//! # Layout
//! - [`config`]: the typed configuration (file, then `REGISTRY_*` environment, then flags).
//! - [`endpoint`]: parsing `/v2/...` paths, right to left, into an [`endpoint::Endpoint`].
//! - [`api`]: the handlers behind one dispatch function, one file per resource.
//! - [`layers`]: tower layers around the API: routing, span, metrics, access log, admission.
//! - [`error`]: the spec's error codes and the JSON error body.
//! - [`listen`]: accepting connections, with header, idle and HTTP/2 limits.
//! - [`sendfile`]: blob downloads with `sendfile(2)` on plain HTTP/1.x (the `ZeroCopy` extension).
//! - [`maintenance`]: garbage collection and fsck, scheduled and from the command line.
//! - [`metrics`]: Prometheus metrics served at `/metrics`.
//! - [`server`]: the router and [`server::run`], which serves until shutdown.
//! - [`tls`]: HTTPS through rustls: certificate reload, mutual TLS, the TLS accept loop.
//! - [`auth`]: access control: identities, rules, the Docker/OCI token flow.
//! - [`cert`]: `registry cert`, a private CA (`cert/ca.rs`) and the certificates it signs.
//! - [`events`]: notifications to HTTP endpoints from the storage outbox.
//! - [`distribution`]: reading CNCF Distribution's config.yml and `REGISTRY_*` variables.
//! - [`node_setup`]: `registry node-setup`, what a node's container runtime reads and pulls.
//! - [`probe_image`]: the node probe image the registry serves from memory.

pub mod api;
pub mod auth;
pub mod cert;
pub mod config;
pub mod distribution;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod layers;
pub mod listen;
pub mod maintenance;
pub mod metrics;
pub mod node_setup;
pub mod probe_image;
pub mod sendfile;
pub mod server;
pub mod tls;

pub use config::Config;
