//! The `storage` section: the driver and its options, deletes, read-only mode and upload
//! purging.

use anyhow::{bail, Context};
use serde_json::Value;

use super::env::DRIVERS;
use super::translate::Out;
use super::values::{boolean, duration, get, string};
use super::Extras;

/// Translates `storage.*` (and `health`) into `out`; keys that cannot be honoured go to
/// `refused`.
pub(super) fn storage(tree: &Value, out: &mut Out) -> anyhow::Result<()> {
    let Out { t, x, refused } = out;
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
    let url = match drivers.first().copied().unwrap_or("filesystem") {
        "filesystem" => string(tree, "storage.filesystem.rootdirectory")?
            .unwrap_or_else(|| "/var/lib/registry".into()),
        "inmemory" => "memory://".into(),
        "s3" => s3(tree, &mut opts, refused)?,
        "gcs" => gcs(tree, &mut opts)?,
        "azure" => azure(tree, &mut opts, refused)?,
        _ => unreachable!("driver list"),
    };
    t.insert("storage".into(), url.into());
    if !opts.is_empty() {
        t.insert("storage_options".into(), toml::Value::Table(opts));
    }
    maintenance(tree, t, x)
}

/// `storage.s3`: the storage URL; options into `opts`.
fn s3(tree: &Value, opts: &mut toml::Table, refused: &mut Vec<String>) -> anyhow::Result<String> {
    let url = bucket_url(tree, "s3", "bucket", "s3")?;
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
    Ok(url)
}

/// `storage.gcs`: the storage URL; options into `opts`.
fn gcs(tree: &Value, opts: &mut toml::Table) -> anyhow::Result<String> {
    let url = bucket_url(tree, "gcs", "bucket", "gs")?;
    if let Some(k) = string(tree, "storage.gcs.keyfile")? {
        opts.insert("service_account_path".into(), k.into());
    }
    Ok(url)
}

/// `storage.azure`: the storage URL; options into `opts`.
fn azure(
    tree: &Value,
    opts: &mut toml::Table,
    refused: &mut Vec<String>,
) -> anyhow::Result<String> {
    let url = bucket_url(tree, "azure", "container", "az")?;
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
    Ok(url)
}

/// `<scheme>://<bucket>[/<root>]` from `storage.<driver>.<bucket_key>` (required) and
/// `storage.<driver>.rootdirectory`.
fn bucket_url(
    tree: &Value,
    driver: &str,
    bucket_key: &str,
    scheme: &str,
) -> anyhow::Result<String> {
    let key = format!("storage.{driver}.{bucket_key}");
    let bucket = string(tree, &key)?.with_context(|| format!("{key} is required"))?;
    let root = string(tree, &format!("storage.{driver}.rootdirectory"))?.unwrap_or_default();
    let root = root.trim_matches('/');
    Ok(if root.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}/{root}")
    })
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
