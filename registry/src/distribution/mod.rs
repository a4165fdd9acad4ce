//! A drop-in for CNCF Distribution's configuration: its `config.yml` (v2.8 and v3 layouts) and
//! its `REGISTRY_*` variables (`REGISTRY_HTTP_ADDR`, `REGISTRY_STORAGE_S3_BUCKET`, ...), turned
//! into this registry's own settings.
//!
//! The translation produces the same table a TOML config file would (so the project's own
//! `REGISTRY_*` variables and flags still apply on top), plus [`Extras`]: what only Distribution
//! has (response headers, a debug address, read-only mode, deletes off) and the messages to log
//! at start. Keys that would change behaviour if ignored (`auth`, `proxy`, read-only, deletes
//! off, a URL prefix, ...) are honoured or refused; keys without effect here are named in one
//! warning.

pub mod runtime;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::FileConfig;

/// Where Distribution's images keep their configuration (v3, then v2).
pub const DEFAULT_PATHS: [&str; 2] = [
    "/etc/distribution/config.yml",
    "/etc/docker/registry/config.yml",
];

/// What a Distribution configuration sets beyond the project's own settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Extras {
    /// The file the settings came from (or `environment`).
    #[serde(default)]
    pub source: String,
    /// Headers added to every response (`http.headers`).
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Address of the debug server (`http.debug.addr`): `/debug/health` and, when enabled,
    /// the Prometheus metrics.
    #[serde(default)]
    pub debug_addr: Option<String>,
    /// Path of the metrics on the debug server, when `http.debug.prometheus.enabled`.
    #[serde(default)]
    pub debug_metrics_path: Option<String>,
    /// `storage.maintenance.readonly.enabled`: writes answer 405 UNSUPPORTED.
    #[serde(default)]
    pub read_only: bool,
    /// Deletes answer 405 UNSUPPORTED (Distribution's default unless `storage.delete.enabled`).
    #[serde(default)]
    pub delete_disabled: bool,
    /// Fields Distribution adds to every log line (`log.fields`), logged at start.
    #[serde(default)]
    pub log_fields: BTreeMap<String, String>,
    /// Keys accepted without effect, one warning at start.
    #[serde(default)]
    pub unsupported: Vec<String>,
    /// Notes about accepted keys (logged at info).
    #[serde(default)]
    pub notes: Vec<String>,
}

fn is_yaml_path(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

/// Whether the text is a Distribution YAML file rather than TOML: its first setting is
/// `version:` (every Distribution configuration starts with it).
fn looks_like_distribution(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("version:"))
}

/// Environment variables Distribution reads, by configuration path. Sections whose value is a
/// map or list (`http.headers`, `notifications.endpoints`) take YAML, as Distribution's do.
const ENV_PATHS: &[&str] = &[
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

const DRIVERS: [&str; 5] = ["filesystem", "inmemory", "s3", "gcs", "azure"];

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

/// The config file a bare `registry serve` reads, as Distribution's image does: with no config
/// file and no storage or listen address named by flags or the project's variables, the first
/// of [`DEFAULT_PATHS`] that exists.
pub fn default_config(
    args: &crate::config::ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    let bare = args.config.is_none()
        && args.config_file.is_none()
        && args.storage.is_none()
        && args.listen.is_none()
        && env("REGISTRY_CONFIG").is_none()
        && env("REGISTRY_STORAGE").is_none()
        && env("REGISTRY_LISTEN").is_none();
    if !bare {
        return None;
    }
    DEFAULT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Reads the configuration as Distribution would, when there is one: `path` in Distribution's
/// YAML format, or, with no file, Distribution's `REGISTRY_*` variables alone. `None` when the
/// configuration is the project's own.
pub(crate) fn file_config(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<FileConfig>> {
    let (source, text) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?;
            if !is_yaml_path(p) && !looks_like_distribution(&text) {
                return Ok(None);
            }
            (p.display().to_string(), Some(text))
        }
        None => {
            let any = ENV_PATHS
                .iter()
                .filter(|p| **p != "log.level")
                .any(|p| env(&env_name(p)).is_some());
            if !any {
                return Ok(None);
            }
            ("environment".to_owned(), None)
        }
    };
    let mut tree: Value = match &text {
        Some(t) => yaml_serde::from_str(t).with_context(|| format!("parsing {source} as YAML"))?,
        None => Value::Object(Map::new()),
    };
    if tree.is_null() {
        tree = Value::Object(Map::new());
    }
    if !tree.is_object() {
        bail!("{source}: a Distribution configuration is a YAML mapping");
    }
    overlay_env(&mut tree, env)?;
    let (table, mut extras) = translate(&tree).with_context(|| format!("in {source}"))?;
    extras.source = source;
    let mut table = table;
    table.insert(
        "distribution".into(),
        toml::Value::try_from(&extras).context("extras")?,
    );
    let file: FileConfig = toml::Value::Table(table)
        .try_into()
        .context("translating the Distribution configuration")?;
    Ok(Some(file))
}

impl serde::Serialize for Extras {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Extras", 9)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("headers", &self.headers)?;
        if let Some(a) = &self.debug_addr {
            st.serialize_field("debug_addr", a)?;
        }
        if let Some(p) = &self.debug_metrics_path {
            st.serialize_field("debug_metrics_path", p)?;
        }
        st.serialize_field("read_only", &self.read_only)?;
        st.serialize_field("delete_disabled", &self.delete_disabled)?;
        st.serialize_field("log_fields", &self.log_fields)?;
        st.serialize_field("unsupported", &self.unsupported)?;
        st.serialize_field("notes", &self.notes)?;
        st.end()
    }
}

/// Applies Distribution's variables over the file's tree.
fn overlay_env(tree: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
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

fn get<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = tree;
    for p in path.split('.') {
        v = v.get(p)?;
    }
    (!v.is_null()).then_some(v)
}

fn string(tree: &Value, path: &str) -> anyhow::Result<Option<String>> {
    match get(tree, path) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => bail!("{path}: expected a string, got {other}"),
    }
}

fn boolean(tree: &Value, path: &str) -> anyhow::Result<Option<bool>> {
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
fn duration(tree: &Value, path: &str) -> anyhow::Result<Option<std::time::Duration>> {
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

/// `http.addr` (`:5000`, `0.0.0.0:5000`, `localhost:5000`, `[::]:5000`) as a socket address.
fn socket_addr(addr: &str) -> anyhow::Result<std::net::SocketAddr> {
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

/// Turns a Distribution tree into the project's config table and the [`Extras`].
fn translate(tree: &Value) -> anyhow::Result<(toml::Table, Extras)> {
    let mut t = toml::Table::new();
    let mut x = Extras::default();
    let mut refused: Vec<String> = Vec::new();

    if let Some(v) = string(tree, "version")? {
        if v != "0.1" {
            bail!("version {v:?}: Distribution configurations are version 0.1");
        }
    }

    // ---- log ----
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

    // ---- http ----
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
    if let Some(dbg) = string(tree, "http.debug.addr")? {
        socket_addr(&dbg).context("http.debug.addr")?;
        x.debug_addr = Some(dbg);
        if boolean(tree, "http.debug.prometheus.enabled")?.unwrap_or(false) {
            x.debug_metrics_path = Some(
                string(tree, "http.debug.prometheus.path")?.unwrap_or_else(|| "/metrics".into()),
            );
        }
    }

    // ---- storage ----
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
        "s3" => {
            let bucket =
                string(tree, "storage.s3.bucket")?.context("storage.s3.bucket is required")?;
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
                    "storage.s3.skipverify (certificate checks stay on; trust the CA instead)"
                        .into(),
                );
            }
            if boolean(tree, "storage.s3.encrypt")?.unwrap_or(false) {
                refused.push("storage.s3.encrypt (use the bucket's default encryption)".into());
            }
        }
        "gcs" => {
            let bucket =
                string(tree, "storage.gcs.bucket")?.context("storage.gcs.bucket is required")?;
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
        }
        "azure" => {
            let container = string(tree, "storage.azure.container")?
                .context("storage.azure.container is required")?;
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
        }
        _ => unreachable!("driver list"),
    }
    if !opts.is_empty() {
        t.insert("storage_options".into(), toml::Value::Table(opts));
    }
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

    // ---- what needs other parts ----
    if let Some(auth) = get(tree, "auth").and_then(Value::as_object) {
        for k in auth.keys() {
            refused.push(format!(
                "auth.{k} (access control is not available in this build; remove the auth section or put an authenticating proxy in front)"
            ));
        }
    }
    if get(tree, "proxy").is_some_and(|p| p.get("remoteurl").is_some()) {
        refused
            .push("proxy.remoteurl (the pull-through cache is not available in this build)".into());
    }
    if get(tree, "middleware").is_some() {
        refused.push("middleware (storage and registry middleware are not supported)".into());
    }
    if get(tree, "validation.manifests.urls").is_some() {
        x.unsupported.push("validation.manifests.urls".into());
    }

    // ---- notifications ----
    if let Some(eps) = get(tree, "notifications.endpoints") {
        let eps = strip_nulls(eps.clone());
        let ev = toml::Value::try_from(&eps).context("notifications.endpoints")?;
        let mut events = toml::Table::new();
        events.insert("endpoints".into(), ev);
        t.insert("events".into(), toml::Value::Table(events));
    }

    if !refused.is_empty() {
        bail!(
            "this Distribution configuration asks for what this registry will not silently skip:\n  - {}",
            refused.join("\n  - ")
        );
    }
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
    Ok((t, x))
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

#[cfg(test)]
mod tests;
