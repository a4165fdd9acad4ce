//! Distribution's `REGISTRY_*` variables: which configuration paths they set, and laying them
//! over the file's tree.

use serde_json::{Map, Value};

/// Environment variables Distribution reads, by configuration path. Sections whose value is a
/// map or list (`http.headers`, `notifications.endpoints`) take YAML, as Distribution's do.
pub(super) const ENV_PATHS: &[&str] = &[
    "version",
    "log.level",
    "log.formatter",
    "log.fields",
    "log.accesslog.disabled",
    "loglevel",
    "http.addr",
    "http.net",
    "http.host",
    "http.prefix",
    "http.secret",
    "http.relativeurls",
    "http.draintimeout",
    "http.headers",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.clientcas",
    "http.tls.minimumtls",
    "http.debug.addr",
    "http.debug.prometheus.enabled",
    "http.debug.prometheus.path",
    "http.http2.disabled",
    "storage.filesystem.rootdirectory",
    "storage.filesystem.maxthreads",
    "storage.s3.bucket",
    "storage.s3.region",
    "storage.s3.regionendpoint",
    "storage.s3.accesskey",
    "storage.s3.secretkey",
    "storage.s3.secure",
    "storage.s3.forcepathstyle",
    "storage.s3.rootdirectory",
    "storage.s3.v4auth",
    "storage.s3.chunksize",
    "storage.s3.skipverify",
    "storage.s3.encrypt",
    "storage.s3.storageclass",
    "storage.gcs.bucket",
    "storage.gcs.keyfile",
    "storage.gcs.rootdirectory",
    "storage.gcs.chunksize",
    "storage.azure.accountname",
    "storage.azure.accountkey",
    "storage.azure.container",
    "storage.azure.realm",
    "storage.azure.rootdirectory",
    "storage.delete.enabled",
    "storage.maintenance.uploadpurging.enabled",
    "storage.maintenance.uploadpurging.age",
    "storage.maintenance.uploadpurging.interval",
    "storage.maintenance.uploadpurging.dryrun",
    "storage.maintenance.readonly.enabled",
    "storage.readonly.enabled",
    "storage.cache.blobdescriptor",
    "storage.cache.blobdescriptorsize",
    "storage.redirect.disable",
    "storage.tag.concurrencylimit",
    "health.storagedriver.enabled",
    "health.storagedriver.interval",
    "health.storagedriver.threshold",
    "notifications.endpoints",
    "notifications.events.includereferences",
    "auth.htpasswd.realm",
    "auth.htpasswd.path",
    "auth.token.realm",
    "auth.silly.realm",
    "proxy.remoteurl",
    "proxy.username",
    "proxy.password",
    "proxy.ttl",
];

/// The variable Distribution reads for a configuration path.
pub fn env_name(path: &str) -> String {
    format!("REGISTRY_{}", path.replace('.', "_").to_ascii_uppercase())
}

pub(super) const DRIVERS: [&str; 5] = ["filesystem", "inmemory", "s3", "gcs", "azure"];

/// The project's environment as `Config::load` should see it: `REGISTRY_STORAGE` holding a
/// Distribution driver name (`REGISTRY_STORAGE=s3`) selects a driver, it is not a folder.
pub fn project_env<'a>(
    env: &'a dyn Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        let v = env(k)?;
        if k == "REGISTRY_STORAGE" && DRIVERS.contains(&v.trim()) {
            return None;
        }
        Some(v)
    }
}

/// Applies Distribution's variables over the file's tree.
pub(super) fn overlay_env(
    tree: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    if let Some(driver) = env("REGISTRY_STORAGE") {
        let driver = driver.trim().to_owned();
        if DRIVERS.contains(&driver.as_str()) {
            let storage = tree
                .as_object_mut()
                .expect("mapping")
                .entry("storage")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(m) = storage.as_object_mut() {
                m.retain(|k, _| !DRIVERS.contains(&k.as_str()) || *k == driver);
                m.entry(driver).or_insert_with(|| Value::Object(Map::new()));
            }
        }
    }
    for path in ENV_PATHS {
        let name = env_name(path);
        let Some(raw) = env(&name) else { continue };
        let v: Value = if raw.trim().is_empty() {
            Value::String(String::new())
        } else {
            yaml_serde::from_str(&raw).unwrap_or(Value::String(raw.clone()))
        };
        // A driver chosen by variable replaces the file's driver.
        if let Some(driver) = path
            .strip_prefix("storage.")
            .and_then(|p| p.split('.').next())
            .filter(|d| DRIVERS.contains(d))
        {
            if let Some(m) = tree.get_mut("storage").and_then(Value::as_object_mut) {
                m.retain(|k, _| !DRIVERS.contains(&k.as_str()) || k == driver);
            }
        }
        let mut node = &mut *tree;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let m = node.as_object_mut().expect("object");
            if i + 1 == parts.len() {
                m.insert((*part).to_owned(), v.clone());
                break;
            }
            node = m
                .entry((*part).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(())
}
