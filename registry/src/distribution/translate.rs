//! The translation of a Distribution tree into the project's config table, section by
//! section.

use anyhow::{bail, Context};
use serde_json::Value;

use super::auth_section::auth;
use super::http_section::http;
use super::proxy_section::proxy;
use super::storage_section::storage;
use super::unsupported;
use super::values::{get, string};
use super::Extras;

/// What the translation builds: the project's config table, the [`Extras`], and what is
/// refused (the start stops with all the reasons).
#[derive(Default)]
pub(super) struct Out {
    pub t: toml::Table,
    pub x: Extras,
    pub refused: Vec<String>,
}

/// Turns a Distribution tree into the project's config table and the [`Extras`].
pub(super) fn translate(tree: &Value) -> anyhow::Result<(toml::Table, Extras)> {
    let mut out = Out::default();
    if let Some(v) = string(tree, "version")? {
        if v != "0.1" {
            bail!("version {v:?}: Distribution configurations are version 0.1");
        }
    }
    log(tree, &mut out.t, &mut out.x)?;
    http(tree, &mut out)?;
    storage(tree, &mut out)?;
    auth(tree, &mut out)?;
    proxy(tree, &mut out)?;
    needs_other_parts(tree, &mut out.x, &mut out.refused);
    notifications(tree, &mut out.t)?;
    let Out { t, mut x, refused } = out;
    if !refused.is_empty() {
        bail!(
            "this Distribution configuration asks for what this registry will not silently skip:\n  - {}",
            refused.join("\n  - ")
        );
    }
    unsupported::collect(tree, &mut x)?;
    Ok((t, x))
}

/// The `log` section (and v2's `loglevel`).
fn log(tree: &Value, t: &mut toml::Table, x: &mut Extras) -> anyhow::Result<()> {
    let level = string(tree, "log.level")?.or(string(tree, "loglevel")?);
    if let Some(level) = level {
        let level = match level.as_str() {
            "warning" => "warn".to_owned(),
            "panic" | "fatal" => "error".to_owned(),
            l => l.to_owned(),
        };
        t.insert("log_level".into(), level.into());
    }
    if let Some(f) = string(tree, "log.formatter")? {
        let fmt = match f.as_str() {
            "text" => "text",
            "json" | "logstash" => "json",
            other => bail!("log.formatter {other:?}: text, json or logstash"),
        };
        if f == "logstash" {
            x.notes
                .push("log.formatter logstash: writing JSON lines (logstash reads them)".into());
        }
        t.insert("log_format".into(), fmt.into());
    }
    if let Some(fields) = get(tree, "log.fields").and_then(Value::as_object) {
        for (k, v) in fields {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            x.log_fields.insert(k.clone(), v);
        }
    }
    Ok(())
}

/// Sections that need parts this build does not have: refused, or named as unsupported.
fn needs_other_parts(tree: &Value, x: &mut Extras, refused: &mut Vec<String>) {
    if get(tree, "middleware").is_some() {
        refused.push("middleware (storage and registry middleware are not supported)".into());
    }
    if get(tree, "validation.manifests.urls").is_some() {
        x.unsupported.push("validation.manifests.urls".into());
    }
}

/// `notifications.endpoints`, as the `[events]` section.
fn notifications(tree: &Value, t: &mut toml::Table) -> anyhow::Result<()> {
    if let Some(eps) = get(tree, "notifications.endpoints") {
        let eps = strip_nulls(eps.clone());
        let ev = toml::Value::try_from(&eps).context("notifications.endpoints")?;
        let mut events = toml::Table::new();
        events.insert("endpoints".into(), ev);
        t.insert("events".into(), toml::Value::Table(events));
    }
    Ok(())
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .filter(|v| !v.is_null())
                .map(strip_nulls)
                .collect(),
        ),
        other => other,
    }
}
