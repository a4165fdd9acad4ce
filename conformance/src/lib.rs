//! Test harness for the registry's spec suite (`tests/spec.rs`), the other Rust test targets
//! (`tests/hostile.rs`, `tests/downloads.rs`) and the test programs in `src/bin`.
//!
//! Every test starts its own server: [`TestRegistry::start`] makes a temporary storage folder
//! (or, with `CONFORMANCE_STORAGE=s3`, a bucket of its own on a `moto_server` that the test
//! process starts on first use and that stops when the process exits: see [`s3`]),
//! binds `127.0.0.1:0` and runs [`registry::server::run`] on it (on a thread with its own
//! multi-threaded runtime, as in production). Tests talk to it over a real socket with `reqwest`
//! (and the [`raw`] client where a client library would normalise the request away), so the
//! whole HTTP stack is exercised, as a real client sees it.
//!
//! Everything public is also re-exported at the crate root (`conformance::TestRegistry`,
//! `conformance::raw_request`, ...), the paths the tests use.
//!
//! # Layout
//! - [`harness`]: [`TestRegistry`] (start, stop, restart on the same storage and port, URLs, a
//!   client, requests as awaitable [`Call`]s, [`at_once`], push helpers `push_blob`,
//!   `put_manifest`, `push_manifest`, `push_image`, `list_page`), [`Image`].
//! - [`random`]: [`random_bytes`], [`random_suffix`], [`Rng`].
//! - [`oci`]: media type constants, [`sha256_digest`], [`sha512_digest`], [`descriptor`],
//!   [`ManifestBuilder`], [`IndexBuilder`], [`empty_descriptor`].
//! - [`check`]: response checks [`expect_error`], [`expect_body`], [`expect_client_error`],
//!   [`error_codes`], [`header`], [`header_values`], [`location`], [`next_link`], [`with_query`].
//! - [`answer`]: checks for the test programs, which fail with `Err` ([`ensure!`]) rather than
//!   a panic, and their registry client [`answer::Remote`].
//! - [`raw`]: the one hand-written HTTP/1.1 client ([`raw_request`], [`raw_send`],
//!   [`raw::exchange`], [`raw::read_response`], [`raw::blocking_request`]).
//! - [`process`]: watched child processes (`registry serve` and the servers the tests need),
//!   their ports, and how they are stopped.
//! - [`program`]: what the test programs in `src/bin` share: the command line, the PASS/FAIL
//!   tally, the run (work folder, summary line, exit code).
//! - [`s3`]: the S3 side (credentials, storage options, starting moto and s3s-fs, the shared moto
//!   server, buckets and listings).

pub use reqwest;
pub use serde_json;

pub mod answer;
pub mod check;
pub mod harness;
pub mod oci;
pub mod process;
pub mod program;
pub mod random;
pub mod raw;
pub mod s3;

pub use check::*;
pub use harness::*;
pub use oci::*;
pub use random::{random_bytes, random_suffix, Rng};
pub use raw::{raw_request, raw_send, RawAnswer, RawResponse};
