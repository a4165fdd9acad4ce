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
//!
//! # Layout
//! - [`runtime`]: what the Extras change while serving (headers, read-only, debug server).
//! - [`logging`]: the log subscriber, with `log.fields` on every line.
//! - [`access_line`]: the access log's lines, written without the general formatter.
//! - `env`: the `REGISTRY_*` variables and laying them over the file.
//! - `values`: typed values read from the tree by dotted path.
//! - `translate`: the tree turned into the config table, with the `log` and `notifications`
//!   sections.
//! - `http_section`: the `http` section.
//! - `storage_section`: the `storage` section.
//! - `auth_section`: the `auth` section (`auth.htpasswd` as `[auth]`).
//! - `proxy_section`: the `proxy` section (`proxy.remoteurl` as a catch-all upstream).
//! - `unsupported`: the keys without effect, for the start-up warning.

pub mod access_line;
mod auth_section;
mod env;
mod http_section;
pub mod logging;
mod proxy_section;
pub mod runtime;
mod storage_section;
mod translate;
mod unsupported;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use env::{env_name, project_env};
use env::{overlay_env, ENV_PATHS};
use translate::translate;

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
    /// Fields added to every log line (`log.fields`), text and JSON.
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

/// The config file a bare `registry serve` reads, as Distribution's image does (a serve with no
/// config file and no storage or listen address named by flags or the project's variables, as
/// `ServeArgs::is_bare` decides): the first of [`DEFAULT_PATHS`] that exists.
pub fn default_config() -> Option<PathBuf> {
    DEFAULT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Reads the configuration as Distribution would, when there is one: `path` in Distribution's
/// YAML format, or, with no file, Distribution's `REGISTRY_*` variables alone. `None` when the
/// configuration is the project's own. The answer is the project's config-file settings, as the
/// TOML table a project config file would hold.
pub(crate) fn file_config(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<toml::Table>> {
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
    Ok(Some(table))
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

#[cfg(test)]
mod tests;
