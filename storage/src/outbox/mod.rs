//! The event outbox: registry events (push, delete) kept in the storage backend until every
//! notification endpoint has taken them, so they survive restarts and are seen by every replica
//! that shares the storage.
//!
//! # Keys
//! ```text
//! outbox/events/<id>              one event record (JSON), written before the change it describes
//! outbox/done/<endpoint>/<id>     endpoint <endpoint> answered 2xx for event <id>
//! outbox/leases/<name>            which process delivers for endpoint <name> (JSON, with expiry)
//! ```
//!
//! # Never lost, never false
//! A writer stores the record with one `put` *before* the first write that makes its change
//! visible (the manifest link, the layer link, the tag), and removes it again if the change then
//! fails. A crash between the two leaves a record whose change never happened. So a deliverer
//! first asks [`Outbox::verdict`]: the record is delivered when its change is visible in storage
//! (the manifest link exists for a push, the tag is gone for a tag delete, ...) or when a later
//! record about the same repository and object exists (the object was pushed and then deleted
//! again, or the tag moved on); a record that is neither and is older than [`SETTLE`] describes
//! a change that never completed and is dropped ("void"). A record younger than that may belong
//! to a request still running, and waits.
//!
//! Ids sort by creation time (milliseconds, then a per-process sequence, then a per-process
//! random instance id), so listing `outbox/events/` gives the delivery order.
//!
//! # Layout
//! - [`records`]: the event record, the change it describes and the verdict on it.
//! - `keys`: event ids and endpoint names as they appear in keys (built in [`crate::layout`]).
//! - `write`: recording events before their change, and settling them after.
//! - `read`: listing and loading events, and deciding whether one is delivered.
//! - `done`: per-endpoint done markers and removing delivered events.
//! - `lease`: the storage leases that pick one deliverer per endpoint.

mod done;
mod keys;
mod lease;
mod read;
pub mod records;
mod write;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::Backend;

pub use keys::endpoint_key;
pub use records::{Action, Change, EventRecord, Kind, RequestInfo, Verdict, REQUEST};

/// How long a record whose change is not visible may belong to a request still in flight.
pub const SETTLE: Duration = Duration::from_secs(30);

/// The outbox over a backend. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Outbox {
    backend: Arc<dyn Backend>,
    instance: String,
    seq: AtomicU64,
    notify: tokio::sync::Notify,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Outbox {
    /// An outbox over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Outbox {
            backend,
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            seq: AtomicU64::new(0),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// This process's instance id (part of every event id it records).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Wakes when this process records an event (other replicas' events are found by polling).
    pub async fn recorded(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests;
