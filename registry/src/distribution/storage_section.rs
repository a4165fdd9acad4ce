//! The `storage` section: the driver and its options, deletes, read-only mode and upload
//! purging.

use anyhow::{bail, Context};
use serde_json::Value;

use super::env::DRIVERS;
use super::values::{boolean, duration, get, string};
use super::Extras;

/// Translates `storage.*` (and `health`) into `t` and `x`; keys that cannot be honoured go to
/// `refused`.
pub(super) fn storage(
    tree: &Value,
    t: &mut toml::Table,
    x: &mut Extras,
    refused: &mut Vec<String>,
) -> anyhow::Result<()> {
    let storage = get(tree, "storage").and_then(Value::as_object);
    let drivers: Vec<&str> = storage
        .map(|m| {
            m.keys()
                .map(String::as_str)
                .filter(|k| DRIVERS.contains(k))
                .collect()
        })
        .unwrap_or_default();
    if drivers.len() > 1 {
        bail!("storage: more than one driver ({})", drivers.join(", "));
    }
    let mut opts = toml::Table::new();
    match drivers.first().copied().unwrap_or("filesystem") {
        "filesystem" => {
            let root = string(tree, "storage.filesystem.rootdirectory")?
                .unwrap_or_else(|| "/var/lib/registry".into());
            t.insert("storage".into(), root.into());
        }
        "inmemory" => {
            t.insert("storage".into(), "memory://".into());
        }
        "s3" => s3(tree, t, &mut opts, refused)?,
        "gcs" => gcs(tree, t, &mut opts)?,
        "azure" => azure(tree, t, &mut opts, refused)?,
        _ => unreachable!("driver list"),
    }
    if !opts.is_empty() {
        t.insert("storage_options".into(), toml::Value::Table(opts));
    }
    maintenance(tree, t, x)
}

/// `storage.s3`.
fn s3(
    tree: &Value,
    t: &mut toml::Table,
    opts: &mut toml::Table,
    refused: &mut Vec<String>,
) -> anyhow::Result<()> {
    let bucket = string(tree, "storage.s3.bucket")?.context("storage.s3.bucket is required")?;
    let root = string(tree, "storage.s3.rootdirectory")?.unwrap_or_default();
    let root = root.trim_matches('/');
    t.insert(
        "storage".into(),
        if root.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{root}")
        }
        .into(),
    );
    if let Some(r) = string(tree, "storage.s3.region")? {
        opts.insert("region".into(), r.into());
    }
    let endpoint = string(tree, "storage.s3.regionendpoint")?.filter(|e| !e.is_empty());
    let secure = boolean(tree, "storage.s3.secure")?.unwrap_or(true);
    if let Some(mut e) = endpoint {
        if !e.contains("://") {
            e = format!("{}://{e}", if secure { "https" } else { "http" });
        }
        if e.starts_with("http://") {
            opts.insert("allow_http".into(), "true".into());
        }
        opts.insert("endpoint".into(), e.into());
    } else if !secure {
        opts.insert("allow_http".into(), "true".into());
    }
    if let Some(a) = string(tree, "storage.s3.accesskey")?.filter(|s| !s.is_empty()) {
        opts.insert("access_key_id".into(), a.into());
    }
    if let Some(s) = string(tree, "storage.s3.secretkey")?.filter(|s| !s.is_empty()) {
        opts.insert("secret_access_key".into(), s.into());
    }
    let path_style = boolean(tree, "storage.s3.forcepathstyle")?.unwrap_or(false);
    opts.insert(
        "virtual_hosted_style_request".into(),
        (!path_style).to_string().into(),
    );
    if boolean(tree, "storage.s3.skipverify")?.unwrap_or(false) {
        refused.push(
            "storage.s3.skipverify (certificate checks stay on; trust the CA instead)".into(),
        );
    }
    if boolean(tree, "storage.s3.encrypt")?.unwrap_or(false) {
        refused.push("storage.s3.encrypt (use the bucket's default encryption)".into());
    }
    Ok(())
}

/// `storage.gcs`.
fn gcs(tree: &Value, t: &mut toml::Table, opts: &mut toml::Table) -> anyhow::Result<()> {
    let bucket = string(tree, "storage.gcs.bucket")?.context("storage.gcs.bucket is required")?;
    let root = string(tree, "storage.gcs.rootdirectory")?.unwrap_or_default();
    let root = root.trim_matches('/');
    t.insert(
        "storage".into(),
        if root.is_empty() {
            format!("gs://{bucket}")
        } else {
            format!("gs://{bucket}/{root}")
        }
        .into(),
    );
    if let Some(k) = string(tree, "storage.gcs.keyfile")? {
        opts.insert("service_account_path".into(), k.into());
    }
    Ok(())
}

/// `storage.azure`.
fn azure(
    tree: &Value,
    t: &mut toml::Table,
    opts: &mut toml::Table,
    refused: &mut Vec<String>,
) -> anyhow::Result<()> {
    let container =
        string(tree, "storage.azure.container")?.context("storage.azure.container is required")?;
    let root = string(tree, "storage.azure.rootdirectory")?.unwrap_or_default();
    let root = root.trim_matches('/');
    t.insert(
        "storage".into(),
        if root.is_empty() {
            format!("az://{container}")
        } else {
            format!("az://{container}/{root}")
        }
        .into(),
    );
    if let Some(a) = string(tree, "storage.azure.accountname")? {
        opts.insert("account_name".into(), a.into());
    }
    if let Some(k) = string(tree, "storage.azure.accountkey")? {
        opts.insert("access_key".into(), k.into());
    }
    if let Some(r) = string(tree, "storage.azure.realm")? {
        if r != "core.windows.net" {
            refused.push(format!("storage.azure.realm {r:?} (only core.windows.net)"));
        }
    }
    Ok(())
}

/// Deletes, read-only mode, upload purging, and the accepted-without-effect storage keys.
fn maintenance(tree: &Value, t: &mut toml::Table, x: &mut Extras) -> anyhow::Result<()> {
    // Distribution refuses deletes unless they are enabled.
    x.delete_disabled = !boolean(tree, "storage.delete.enabled")?.unwrap_or(false);
    x.read_only = boolean(tree, "storage.maintenance.readonly.enabled")?.unwrap_or(false)
        || boolean(tree, "storage.readonly.enabled")?.unwrap_or(false)
        || matches!(
            get(tree, "storage.maintenance.readonly"),
            Some(Value::Bool(true))
        )
        || matches!(get(tree, "storage.readonly"), Some(Value::Bool(true)));
    let purging = boolean(tree, "storage.maintenance.uploadpurging.enabled")?.unwrap_or(true);
    if purging {
        if let Some(age) = duration(tree, "storage.maintenance.uploadpurging.age")? {
            t.insert(
                "upload_max_age".into(),
                toml::Value::Integer(age.as_secs().max(1) as i64),
            );
        } else {
            t.insert("upload_max_age".into(), toml::Value::Integer(168 * 3600));
        }
    } else {
        x.notes.push(
            "storage.maintenance.uploadpurging disabled: abandoned uploads are kept for a year"
                .into(),
        );
        t.insert(
            "upload_max_age".into(),
            toml::Value::Integer(365 * 24 * 3600),
        );
    }
    if get(tree, "storage.cache").is_some() {
        x.notes
            .push("storage.cache accepted: blob descriptors are read from storage directly".into());
    }
    if get(tree, "storage.redirect").is_some() {
        x.notes
            .push("storage.redirect accepted: this registry never redirects to storage".into());
    }
    if get(tree, "health").is_some() {
        x.notes.push(
            "health.storagedriver: /readyz and /debug/health check storage on every call".into(),
        );
    }
    Ok(())
}
