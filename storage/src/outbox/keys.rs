//! Names in the outbox's keys: event ids and endpoint names (the keys themselves are built in
//! [`crate::layout`]).

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
