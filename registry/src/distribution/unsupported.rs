//! The keys without effect here, collected for the start-up warning.

use serde_json::Value;

use super::env::ENV_PATHS;
use super::values::boolean;
use super::Extras;

/// Every leaf path of the tree (maps under `http.headers`, `log.fields` and lists count as
/// leaves).
fn leaves(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m)
            if !m.is_empty()
                && !matches!(prefix, "http.headers" | "log.fields" | "storage.inmemory") =>
        {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(child, &p, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// Keys Distribution reads that have no effect here (named in the start-up warning).
const NO_EFFECT: &[&str] = &[
    "http.host",
    "http.relativeurls",
    "http.tls.minimumtls",
    "http.http2.disabled",
    "log.accesslog.disabled",
    "storage.filesystem.maxthreads",
    "storage.s3.v4auth",
    "storage.s3.chunksize",
    "storage.s3.storageclass",
    "storage.gcs.chunksize",
    "storage.cache.blobdescriptorsize",
    "storage.tag.concurrencylimit",
    "storage.maintenance.uploadpurging.interval",
    "notifications.events.includereferences",
];

/// The leaf paths translated (or accepted with a note); anything else is unsupported.
fn known(path: &str) -> bool {
    const PREFIXES: &[&str] = &["notifications.endpoints", "http.headers", "log.fields"];
    (ENV_PATHS.contains(&path) && !NO_EFFECT.contains(&path))
        || PREFIXES.contains(&path)
        || path == "storage.inmemory"
}

/// Adds to `x.unsupported` every leaf of `tree` that is neither translated nor refused.
pub(super) fn collect(tree: &Value, x: &mut Extras) -> anyhow::Result<()> {
    let mut all = Vec::new();
    leaves(tree, "", &mut all);
    for l in all {
        if !known(&l)
            && !l.starts_with("auth.")
            && !l.starts_with("proxy.")
            && !x.unsupported.contains(&l)
        {
            x.unsupported.push(l);
        }
    }
    if let Some(true) = boolean(tree, "storage.maintenance.uploadpurging.dryrun")? {
        x.unsupported
            .push("storage.maintenance.uploadpurging.dryrun (purging is real)".into());
    }
    Ok(())
}
