//! The three sources of settings, as `Config::load` reads them: the TOML file ([`FileConfig`],
//! with its retention rules), the `REGISTRY_*` environment, and the `serve` flags
//! ([`ServeArgs`], whose docs name each default; a test holds them and the README against
//! `Config::default`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::Deserialize;
use storage::gc::{parse_duration, Pattern, RetentionRule};
use storage::SparseRule;

use super::LogFormat;

/// A retention rule as written in the config file:
///
/// ```toml
/// [[retention]]
/// repositories = "builds/**"   # glob: * within a path component, ** across
/// keep_tags = 10               # newest tags kept (by push time)
/// protect_tags = "release-*"   # always kept, not counted
/// untagged_after = "7d"        # manifests no tag reaches are removed after this age
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionFile {
    repositories: String,
    keep_tags: Option<usize>,
    protect_tags: Option<String>,
    untagged_after: Option<String>,
}

impl RetentionFile {
    fn rule(&self) -> anyhow::Result<RetentionRule> {
        if self.repositories.trim().is_empty() {
            bail!("repositories must be a pattern such as \"builds/**\"");
        }
        let untagged_after = self
            .untagged_after
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| anyhow::anyhow!("untagged_after: {e}"))?;
        Ok(RetentionRule {
            repositories: Pattern::new(&self.repositories),
            keep_tags: self.keep_tags,
            protect_tags: self.protect_tags.as_deref().map(Pattern::new),
            untagged_after,
        })
    }
}

/// A sparse-manifest rule as written in the config file:
///
/// ```toml
/// [[sparse]]
/// repositories = "mirror/**"   # glob: * within a path component, ** across
/// index_children = true        # an index may name child manifests never pushed here
/// image_layers = false         # an image manifest may name layers never pushed here
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SparseFile {
    repositories: String,
    #[serde(default)]
    index_children: bool,
    #[serde(default)]
    image_layers: bool,
}

/// Settings as they may appear in the config file; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(super) listen: Option<SocketAddr>,
    pub(super) storage: Option<String>,
    pub(super) storage_options: Option<std::collections::BTreeMap<String, String>>,
    pub(super) fsync: Option<bool>,
    pub(super) sendfile: Option<bool>,
    pub(super) auto_mount: Option<bool>,
    pub(super) max_manifest_size: Option<usize>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) log_level: Option<String>,
    pub(super) shutdown_timeout: Option<u64>,
    pub(super) header_read_timeout: Option<u64>,
    pub(super) idle_timeout: Option<u64>,
    pub(super) body_timeout: Option<u64>,
    pub(super) max_concurrent_requests: Option<usize>,
    pub(super) access_log: Option<bool>,
    pub(super) gc_interval: Option<u64>,
    pub(super) gc_grace: Option<u64>,
    pub(super) upload_max_age: Option<u64>,
    pub(super) retention: Option<Vec<RetentionFile>>,
    pub(super) sparse: Option<Vec<SparseFile>>,
    pub(super) referrers_page_size: Option<usize>,
    pub(super) proxy: Option<proxy::ProxyConfig>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) tls_listen: Option<SocketAddr>,
    pub(super) tls_client_ca: Option<PathBuf>,
    pub(super) tls_reload_interval: Option<u64>,
    pub(super) auth: Option<crate::auth::AuthConfig>,
    pub(super) events: Option<crate::events::EventsConfig>,
    pub(super) distribution: Option<crate::distribution::Extras>,
}

/// The `serve` flags. Each also reads `REGISTRY_<NAME>` from the environment (flags win).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// The config file.
    #[command(flatten)]
    pub file: ConfigFileArgs,
    /// Address for plain HTTP [env REGISTRY_LISTEN] [default: 0.0.0.0:5000]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Storage: a folder (filesystem backend) or s3://bucket/prefix, gs://..., az://...,
    /// memory:// [env REGISTRY_STORAGE] [default: ./data]
    #[arg(long)]
    pub storage: Option<String>,
    /// Object-store settings as key=value, repeatable (endpoint, region, access_key_id,
    /// secret_access_key, allow_http, ...; KEY_file=PATH reads the value from a file)
    /// [env REGISTRY_STORAGE_OPTIONS, comma-separated]
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    pub storage_options: Vec<String>,
    /// fsync writes before acknowledging them: an acknowledged push survives a power cut
    /// [env REGISTRY_FSYNC] [default: true]
    #[arg(long)]
    pub fsync: Option<bool>,
    /// Send blob downloads on plain HTTP/1.x with sendfile(2) when storage is a local folder;
    /// false reads them through memory [env REGISTRY_SENDFILE] [default: true]
    #[arg(long)]
    pub sendfile: Option<bool>,
    /// Mount blobs by digest when a mount request names no (or the wrong) `from`
    /// [env REGISTRY_AUTO_MOUNT] [default: true]
    #[arg(long)]
    pub auto_mount: Option<bool>,
    /// Largest manifest accepted, in bytes [env REGISTRY_MAX_MANIFEST_SIZE] [default: 4194304]
    #[arg(long)]
    pub max_manifest_size: Option<usize>,
    /// Log format [env REGISTRY_LOG_FORMAT] [default: text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or registry=debug [env REGISTRY_LOG_LEVEL] [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Seconds requests in flight get to finish after SIGTERM [env REGISTRY_SHUTDOWN_TIMEOUT]
    /// [default: 30]
    #[arg(long)]
    pub shutdown_timeout: Option<u64>,
    /// Seconds a client has to send a request's headers
    /// [env REGISTRY_HEADER_READ_TIMEOUT] [default: 30]
    #[arg(long)]
    pub header_read_timeout: Option<u64>,
    /// Seconds a connection may sit with nothing in flight and nothing moving before it is
    /// closed [env REGISTRY_IDLE_TIMEOUT] [default: 120]
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Seconds a request body may stall between two chunks before the request fails
    /// [env REGISTRY_BODY_TIMEOUT] [default: 60]
    #[arg(long)]
    pub body_timeout: Option<u64>,
    /// Requests served at once; beyond it requests get 429 with Retry-After
    /// [env REGISTRY_MAX_CONCURRENT_REQUESTS] [default: 1024]
    #[arg(long)]
    pub max_concurrent_requests: Option<usize>,
    /// Write one info line per request: method, endpoint, repository, reference, status,
    /// bytes, duration, client [env REGISTRY_ACCESS_LOG] [default: true]
    #[arg(long)]
    pub access_log: Option<bool>,
    /// Seconds between background garbage collections; 0 turns them off
    /// [env REGISTRY_GC_INTERVAL] [default: 3600]
    #[arg(long)]
    pub gc_interval: Option<u64>,
    /// Seconds an unreferenced object must be untouched before garbage collection removes it
    /// [env REGISTRY_GC_GRACE] [default: 3600]
    #[arg(long)]
    pub gc_grace: Option<u64>,
    /// Seconds after which an abandoned upload session is purged
    /// [env REGISTRY_UPLOAD_MAX_AGE] [default: 86400]
    #[arg(long)]
    pub upload_max_age: Option<u64>,
    /// Most referrers in one answer of the referrers API; more follow through `Link`
    /// [env REGISTRY_REFERRERS_PAGE_SIZE] [default: 500]
    #[arg(long)]
    pub referrers_page_size: Option<usize>,
    /// PEM certificate (chain) for HTTPS; serves HTTPS on --tls-listen when set
    /// [env REGISTRY_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert: RSA, ECDSA or Ed25519 [env REGISTRY_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Address for HTTPS, served beside plain HTTP on --listen [env REGISTRY_TLS_LISTEN]
    /// [default: 0.0.0.0:5443]
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM CA certificate(s): require HTTPS clients to present a certificate signed by one
    /// (mutual TLS) [env REGISTRY_TLS_CLIENT_CA]
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds between checks of --tls-cert/--tls-key for changes, which are then loaded
    /// without dropping connections; 0 never reloads [env REGISTRY_TLS_RELOAD_INTERVAL]
    /// [default: 5]
    #[arg(long)]
    pub tls_reload_interval: Option<u64>,
}

/// The config file, named as `--config FILE` or, as Distribution's `registry serve FILE` does, as
/// the only argument.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigFileArgs {
    /// TOML config file; its keys are the flag names with '_' (env REGISTRY_CONFIG).
    /// A Distribution config.yml works too (as --config or as the only argument); without
    /// either, /etc/distribution/config.yml or /etc/docker/registry/config.yml is read if present.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Config file given as Distribution's `registry serve FILE` does.
    #[arg(value_name = "CONFIG", conflicts_with = "config")]
    pub config_file: Option<PathBuf>,
}

impl ConfigFileArgs {
    /// The file named in either form.
    pub fn path(&self) -> Option<&Path> {
        self.config.as_deref().or(self.config_file.as_deref())
    }
}

impl ServeArgs {
    /// The flags of `registry serve --config FILE`.
    pub fn with_config(file: PathBuf) -> ServeArgs {
        ServeArgs {
            file: ConfigFileArgs {
                config: Some(file),
                config_file: None,
            },
            ..Default::default()
        }
    }

    /// Whether this is a bare `registry serve`: no config file and no storage or listen address
    /// from flags or the project's variables (then Distribution's default config paths are read).
    pub fn is_bare(&self, env: &dyn Fn(&str) -> Option<String>) -> bool {
        self.file.path().is_none()
            && self.storage.is_none()
            && self.listen.is_none()
            && env("REGISTRY_CONFIG").is_none()
            && env("REGISTRY_STORAGE").is_none()
            && env("REGISTRY_LISTEN").is_none()
    }
}

pub(super) fn env_parse<T: FromStr>(
    env: &dyn Fn(&str) -> Option<String>,
    key: &str,
) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match env(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{key}={v:?}: {e}")),
    }
}

/// Merges object-store settings: file, then environment (`k=v,k=v`), then flags (`k=v`).
pub(super) fn storage_options(
    mut opts: std::collections::BTreeMap<String, String>,
    env: Option<String>,
    flags: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let env_pairs: Vec<String> = env
        .map(|e| {
            e.split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    for pair in env_pairs.iter().chain(flags) {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("storage option {pair:?} is not KEY=VALUE"))?;
        opts.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(opts)
}

/// The retention rules of the config file, each checked: a bad one fails the start.
pub(super) fn retention_rules(rules: &[RetentionFile]) -> anyhow::Result<Vec<RetentionRule>> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.rule()
                .with_context(|| format!("retention rule {} ({:?})", i + 1, r.repositories))
        })
        .collect()
}

/// The sparse-manifest rules of the config file, each checked: a bad one fails the start.
pub(super) fn sparse_rules(rules: &[SparseFile]) -> anyhow::Result<Vec<SparseRule>> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.repositories.trim().is_empty() {
                bail!(
                    "sparse rule {}: repositories must be a pattern such as \"mirror/**\"",
                    i + 1
                );
            }
            Ok(SparseRule::new(
                &r.repositories,
                r.index_children,
                r.image_layers,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::ServeArgs;

    /// Each default is written once, in `Config::default`; the flag docs (`--help`) and the
    /// README's configuration table must name the same values, environment variables and flags.
    #[test]
    fn flag_docs_and_readme_name_the_defaults() {
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let cmd = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        for (key, value) in defaults.as_object().unwrap() {
            let want = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                v => Some(v.to_string()),
            };
            let flag = format!("--{}", key.replace('_', "-"));
            let env = format!("REGISTRY_{}", key.to_uppercase());
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == key.as_str())
                .unwrap_or_else(|| panic!("setting {key} has no flag"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let documented = help
                .split("[default: ")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .map(str::to_owned);
            assert_eq!(documented, want, "{flag}: {help}");
            assert!(help.contains(&format!("env {env}")), "{flag}: {help}");
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("README's configuration table has no row {key}"));
            let cols: Vec<&str> = row.split(" | ").collect();
            assert_eq!(cols[1], format!("`{env}`"), "{row}");
            assert_eq!(cols[2], format!("`{flag}`"), "{row}");
            let shown = want.map_or("none".to_owned(), |w| format!("`{w}`"));
            assert_eq!(cols[3], shown, "{row}");
        }
    }
}
