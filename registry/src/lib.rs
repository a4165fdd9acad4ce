//! An OCI distribution registry: the HTTP API over the `storage` crate.
//!
//! # Layout
//! - [`config`]: the typed configuration (file, then `REGISTRY_*` environment, then flags).
//! - [`endpoint`]: parsing `/v2/...` paths, right to left, into an [`endpoint::Endpoint`].
//! - [`api`]: the handlers behind one dispatch function.
//! - [`error`]: the spec's error codes and the JSON error body.
//! - [`server`]: the router and [`server::run`], which serves until shutdown.

pub mod api;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod server;

pub use config::Config;
