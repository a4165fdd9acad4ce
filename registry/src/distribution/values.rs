//! Reading typed values out of the YAML tree by dotted path.

use anyhow::{bail, Context};
use serde_json::Value;

/// The value at dotted `path`, `None` when absent or null.
pub(super) fn get<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = tree;
    for p in path.split('.') {
        v = v.get(p)?;
    }
    (!v.is_null()).then_some(v)
}

/// A string (numbers and booleans as written) at `path`.
pub(super) fn string(tree: &Value, path: &str) -> anyhow::Result<Option<String>> {
    match get(tree, path) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => bail!("{path}: expected a string, got {other}"),
    }
}

/// A boolean (or a string Go would parse as one) at `path`.
pub(super) fn boolean(tree: &Value, path: &str) -> anyhow::Result<Option<bool>> {
    match get(tree, path) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Some(true)),
            "false" | "no" | "off" | "0" | "" => Ok(Some(false)),
            _ => bail!("{path}: expected true or false, got {s:?}"),
        },
        Some(other) => bail!("{path}: expected true or false, got {other}"),
    }
}

/// Go duration string, or a bare number of nanoseconds.
pub(super) fn duration(tree: &Value, path: &str) -> anyhow::Result<Option<std::time::Duration>> {
    match get(tree, path) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(std::time::Duration::from_nanos(
            n.as_u64().with_context(|| format!("{path}: {n}"))?,
        ))),
        Some(Value::String(s)) => crate::events::config::parse_go_duration(s)
            .map(Some)
            .with_context(|| path.to_owned()),
        Some(other) => bail!("{path}: expected a duration such as 10s, got {other}"),
    }
}

/// `http.addr` (`:5000`, `0.0.0.0:5000`, `localhost:5000`, `[::]:5000`) as a socket address.
pub(super) fn socket_addr(addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    let a = addr.trim();
    let a = if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else if let Some(port) = a.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        a.to_owned()
    };
    a.parse()
        .with_context(|| format!("address {addr:?}: give an IP address and port, or :PORT"))
}
