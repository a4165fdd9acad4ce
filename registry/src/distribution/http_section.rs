//! The `http` section: listen address, TLS, response headers and the debug server.

use anyhow::{bail, Context};
use serde_json::Value;

use super::translate::Out;
use super::values::{boolean, duration, get, socket_addr, string};
use super::Extras;

/// Translates `http.*` into `out`; keys that cannot be honoured go to `refused`.
pub(super) fn http(tree: &Value, out: &mut Out) -> anyhow::Result<()> {
    let Out { t, x, refused } = out;
    let addr = socket_addr(&string(tree, "http.addr")?.unwrap_or_else(|| ":5000".into()))
        .context("http.addr")?;
    if let Some(net) = string(tree, "http.net")? {
        if net != "tcp" && !net.is_empty() {
            refused.push(format!("http.net {net:?} (only tcp is served)"));
        }
    }
    if let Some(prefix) = string(tree, "http.prefix")? {
        if !prefix.is_empty() && prefix != "/" {
            refused.push(format!(
                "http.prefix {prefix:?} (the API is served at /v2/ only)"
            ));
        }
    }
    if string(tree, "http.secret")?.is_some() {
        x.notes.push(
            "http.secret accepted and not needed: upload sessions live in storage, not in signed state"
                .into(),
        );
    }
    if let Some(d) = duration(tree, "http.draintimeout")? {
        t.insert(
            "shutdown_timeout".into(),
            toml::Value::Integer(d.as_secs().max(1) as i64),
        );
    }
    headers(tree, x)?;
    tls(tree, t, x, addr)?;
    debug(tree, x)
}

/// `http.headers`: headers added to every response.
fn headers(tree: &Value, x: &mut Extras) -> anyhow::Result<()> {
    if let Some(h) = get(tree, "http.headers").and_then(Value::as_object) {
        for (k, v) in h {
            let vals = match v {
                Value::Array(a) => a
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| s.to_string())
                    })
                    .collect(),
                Value::String(s) => vec![s.clone()],
                other => vec![other.to_string()],
            };
            http::HeaderName::try_from(k.as_str())
                .with_context(|| format!("http.headers: {k:?}"))?;
            x.headers.insert(k.clone(), vals);
        }
    }
    Ok(())
}

/// `http.tls`: HTTPS on `http.addr`, and client certificates.
fn tls(
    tree: &Value,
    t: &mut toml::Table,
    x: &mut Extras,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let cert = string(tree, "http.tls.certificate")?;
    let key = string(tree, "http.tls.key")?;
    match (&cert, &key) {
        (Some(c), Some(k)) => {
            // Distribution serves HTTPS on http.addr; plain HTTP moves to a loopback port of
            // its own (the project always serves plain HTTP too).
            t.insert("tls_cert".into(), c.clone().into());
            t.insert("tls_key".into(), k.clone().into());
            t.insert("tls_listen".into(), addr.to_string().into());
            t.insert("listen".into(), "127.0.0.1:0".into());
            x.notes.push(format!(
                "http.tls: HTTPS on {addr}; plain HTTP only on a loopback port"
            ));
        }
        (None, None) => {
            t.insert("listen".into(), addr.to_string().into());
        }
        _ => bail!("http.tls needs both certificate and key"),
    }
    match get(tree, "http.tls.clientcas") {
        None => {}
        Some(Value::Array(a)) if a.len() == 1 => {
            let ca = a[0].as_str().context("http.tls.clientcas: file names")?;
            t.insert("tls_client_ca".into(), ca.into());
        }
        Some(Value::String(s)) => {
            t.insert("tls_client_ca".into(), s.clone().into());
        }
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(_) => {
            bail!("http.tls.clientcas: give one PEM file (it may hold several CA certificates)")
        }
    }
    Ok(())
}

/// `http.debug`: the debug server and its metrics.
fn debug(tree: &Value, x: &mut Extras) -> anyhow::Result<()> {
    if let Some(dbg) = string(tree, "http.debug.addr")? {
        socket_addr(&dbg).context("http.debug.addr")?;
        x.debug_addr = Some(dbg);
        if boolean(tree, "http.debug.prometheus.enabled")?.unwrap_or(false) {
            x.debug_metrics_path = Some(
                string(tree, "http.debug.prometheus.path")?.unwrap_or_else(|| "/metrics".into()),
            );
        }
    }
    Ok(())
}
