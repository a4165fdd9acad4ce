//! The outbox's keys (see the parent module's key list).

/// Folder of the event records.
pub(super) const EVENTS: &str = "outbox/events/";
const DONE: &str = "outbox/done/";
const LEASES: &str = "outbox/leases/";

/// Key of event record `id`.
pub(super) fn event(id: &str) -> String {
    format!("{EVENTS}{id}")
}

/// Folder of the done markers of `endpoint`.
pub(super) fn done_dir(endpoint: &str) -> String {
    format!("{DONE}{}/", endpoint_key(endpoint))
}

/// Key of the marker saying `endpoint` took event `id`.
pub(super) fn done(endpoint: &str, id: &str) -> String {
    format!("{DONE}{}/{id}", endpoint_key(endpoint))
}

/// Key of lease `name`.
pub(super) fn lease(name: &str) -> String {
    format!("{LEASES}{}", endpoint_key(name))
}

/// Whether `id` has the shape of an event id.
pub(super) fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An endpoint name made safe for a key (same name, same key).
pub fn endpoint_key(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        s.push('_');
    }
    s
}
