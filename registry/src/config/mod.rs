//! One typed configuration, read from a TOML file, then `REGISTRY_*` environment variables, then
//! command-line flags (each overriding the one before), validated once at start.
//!
//! Environment access is injected (`load` takes a lookup function) so tests never touch the
//! process environment.

mod sources;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use storage::gc::{GcOptions, RetentionRule};

pub(crate) use sources::FileConfig;
use sources::{env_parse, retention_rules, sparse_rules, storage_options};
pub use sources::{ConfigFileArgs, ServeArgs};
pub use storage::SparseRule;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => bail!("log format must be text or json, not {s:?}"),
        }
    }
}

/// The registry's configuration. Serialises to its settings (file keys and values), which is
/// how the tests hold the flag docs and the README against [`Config::default`].
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Address to listen on for plain HTTP.
    pub listen: SocketAddr,
    /// Storage location: a folder path for the filesystem backend, or an object-store URL
    /// (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`, `memory://`).
    pub storage: String,
    /// Settings of the object-store backend (`endpoint`, `region`, `access_key_id`,
    /// `secret_access_key`, `allow_http`, `virtual_hosted_style_request`, ...). A key ending in
    /// `_file` names a file holding the value (a mounted Kubernetes Secret).
    #[serde(skip)]
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// fsync blob and metadata writes before acknowledging them (survives power loss).
    pub fsync: bool,
    /// Send blob downloads on plain HTTP/1.x with `sendfile(2)` (filesystem storage): no copy
    /// through the registry's memory.
    pub sendfile: bool,
    /// Mount blobs by digest alone when a mount names no `from`, or a `from` without the blob.
    pub auto_mount: bool,
    /// Largest manifest accepted, in bytes (413 above).
    pub max_manifest_size: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (`info`, `registry=debug`, ...).
    pub log_level: String,
    /// Seconds to let requests in flight finish after SIGTERM.
    pub shutdown_timeout: u64,
    /// Seconds a client has to send a request's headers (slowloris protection).
    pub header_read_timeout: u64,
    /// Seconds a connection may sit with no request in flight and no bytes moving.
    pub idle_timeout: u64,
    /// Seconds a request body may stall between two chunks before the request fails.
    pub body_timeout: u64,
    /// Requests served at once; more are answered 429 with Retry-After.
    pub max_concurrent_requests: usize,
    /// Write one `info` line per request (the access log, target `registry::access`).
    pub access_log: bool,
    /// Seconds between background garbage collections; 0 turns them off.
    pub gc_interval: u64,
    /// Seconds an object must be untouched before garbage collection may remove it.
    pub gc_grace: u64,
    /// Seconds after which an upload session nobody touches is purged.
    pub upload_max_age: u64,
    /// Retention rules (config file only), applied by garbage collection; checked at load.
    #[serde(skip)]
    pub retention: Vec<RetentionRule>,
    /// Which references pushed manifests may leave out, per repository pattern (config file
    /// only; none by default, so nothing half-pushed is ever accepted).
    #[serde(skip)]
    pub sparse: Vec<SparseRule>,
    /// Most referrers one `GET /v2/<name>/referrers/<digest>` answers with; more follow through
    /// the `Link` header.
    pub referrers_page_size: usize,
    /// The pull-through cache (config file only, `[proxy]` with `[[proxy.upstreams]]`): names
    /// under a configured upstream's host, or asked for with its `?ns=`, are filled from it.
    #[serde(skip)]
    pub proxy: Option<proxy::ProxyConfig>,
    /// PEM certificate chain (leaf first) for HTTPS; HTTPS is served when it is set.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (RSA, ECDSA or Ed25519) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Address for HTTPS, beside plain HTTP on `listen` (used when `tls_cert` is set).
    pub tls_listen: SocketAddr,
    /// PEM CA certificates: when set, HTTPS clients must present a certificate signed by one.
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds between checks of the certificate and key files for changes (0: never reload).
    pub tls_reload_interval: u64,
    /// Access control (config file only); `None` serves everyone everything, as before.
    #[serde(skip)]
    pub auth: Option<crate::auth::AuthConfig>,
    /// Notification endpoints and outbox limits (`[events]`, config file only).
    #[serde(skip)]
    pub events: crate::events::EventsConfig,
    /// Settings only a Distribution configuration sets (see [`crate::distribution`]).
    #[serde(skip)]
    pub distribution: crate::distribution::Extras,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5000)),
            storage: "./data".into(),
            storage_options: Default::default(),
            fsync: true,
            sendfile: true,
            auto_mount: storage::Options::default().auto_mount,
            max_manifest_size: storage::Options::DEFAULT_MAX_MANIFEST_SIZE,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_timeout: 30,
            header_read_timeout: 30,
            idle_timeout: 120,
            body_timeout: 60,
            max_concurrent_requests: 1024,
            access_log: true,
            gc_interval: 3600,
            gc_grace: GcOptions::DEFAULT_GRACE.as_secs(),
            upload_max_age: GcOptions::DEFAULT_UPLOAD_MAX_AGE.as_secs(),
            retention: Vec::new(),
            sparse: Vec::new(),
            referrers_page_size: 500,
            proxy: None,
            tls_cert: None,
            tls_key: None,
            tls_listen: SocketAddr::from(([0, 0, 0, 0], 5443)),
            tls_client_ca: None,
            tls_reload_interval: 5,
            auth: None,
            events: Default::default(),
            distribution: Default::default(),
        }
    }
}

/// The file settings: a Distribution config (or Distribution's variables) when there is one,
/// else the project's TOML file at `path`, else the defaults.
fn read_file_config(
    path: Option<&std::path::Path>,
    raw_env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<FileConfig> {
    Ok(match crate::distribution::file_config(path, raw_env)? {
        Some(table) => toml::Value::Table(table)
            .try_into()
            .context("translating the Distribution configuration")?,
        None => match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", p.display()))?
            }
            None => FileConfig::default(),
        },
    })
}

impl Config {
    /// The garbage collection options this configuration describes.
    pub fn gc_options(&self, dry_run: bool) -> GcOptions {
        GcOptions {
            dry_run,
            grace: std::time::Duration::from_secs(self.gc_grace),
            upload_max_age: std::time::Duration::from_secs(self.upload_max_age),
            retention: self.retention.clone(),
        }
    }

    /// The object-store settings with `KEY_file` entries replaced by the files' contents.
    pub fn resolved_storage_options(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.storage_options
            .iter()
            .map(|(k, v)| match k.strip_suffix("_file") {
                Some(key) => std::fs::read_to_string(v)
                    .map(|s| (key.to_owned(), s.trim().to_owned()))
                    .with_context(|| format!("reading storage option {k} from {v}")),
                None => Ok((k.clone(), v.clone())),
            })
            .collect()
    }

    /// Builds the configuration from the file named by `--config` or `REGISTRY_CONFIG`, then the
    /// environment (through `env`), then the flags.
    pub fn load(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let path = args
            .file
            .path()
            .map(PathBuf::from)
            .or_else(|| env("REGISTRY_CONFIG").map(PathBuf::from));
        // A Distribution config.yml (or Distribution's REGISTRY_* variables) is read into the
        // same file settings; the project's own variables then apply on top.
        let raw_env = env;
        let dist_env = crate::distribution::project_env(env);
        let env: &dyn Fn(&str) -> Option<String> = &dist_env;
        let file = read_file_config(path.as_deref(), raw_env)?;
        let d = Config::default();
        // Flags, then environment, then file; `pick!` falls back to the default.
        macro_rules! pick_opt {
            ($field:ident, $env:literal) => {
                args.$field
                    .clone()
                    .or(env_parse(env, $env)?)
                    .or(file.$field)
            };
        }
        macro_rules! pick {
            ($field:ident, $env:literal) => {
                pick_opt!($field, $env).unwrap_or(d.$field)
            };
        }
        let mut cfg = Config {
            listen: pick!(listen, "REGISTRY_LISTEN"),
            storage: pick!(storage, "REGISTRY_STORAGE"),
            storage_options: storage_options(
                file.storage_options.clone().unwrap_or_default(),
                env("REGISTRY_STORAGE_OPTIONS"),
                &args.storage_options,
            )?,
            fsync: pick!(fsync, "REGISTRY_FSYNC"),
            sendfile: pick!(sendfile, "REGISTRY_SENDFILE"),
            auto_mount: pick!(auto_mount, "REGISTRY_AUTO_MOUNT"),
            max_manifest_size: pick!(max_manifest_size, "REGISTRY_MAX_MANIFEST_SIZE"),
            log_format: pick!(log_format, "REGISTRY_LOG_FORMAT"),
            log_level: pick!(log_level, "REGISTRY_LOG_LEVEL"),
            shutdown_timeout: pick!(shutdown_timeout, "REGISTRY_SHUTDOWN_TIMEOUT"),
            header_read_timeout: pick!(header_read_timeout, "REGISTRY_HEADER_READ_TIMEOUT"),
            idle_timeout: pick!(idle_timeout, "REGISTRY_IDLE_TIMEOUT"),
            body_timeout: pick!(body_timeout, "REGISTRY_BODY_TIMEOUT"),
            max_concurrent_requests: pick!(
                max_concurrent_requests,
                "REGISTRY_MAX_CONCURRENT_REQUESTS"
            ),
            access_log: pick!(access_log, "REGISTRY_ACCESS_LOG"),
            gc_interval: pick!(gc_interval, "REGISTRY_GC_INTERVAL"),
            gc_grace: pick!(gc_grace, "REGISTRY_GC_GRACE"),
            upload_max_age: pick!(upload_max_age, "REGISTRY_UPLOAD_MAX_AGE"),
            retention: retention_rules(file.retention.as_deref().unwrap_or_default())?,
            sparse: sparse_rules(file.sparse.as_deref().unwrap_or_default())?,
            referrers_page_size: pick!(referrers_page_size, "REGISTRY_REFERRERS_PAGE_SIZE"),
            proxy: file.proxy.clone(),
            tls_cert: pick_opt!(tls_cert, "REGISTRY_TLS_CERT"),
            tls_key: pick_opt!(tls_key, "REGISTRY_TLS_KEY"),
            tls_listen: pick!(tls_listen, "REGISTRY_TLS_LISTEN"),
            tls_client_ca: pick_opt!(tls_client_ca, "REGISTRY_TLS_CLIENT_CA"),
            tls_reload_interval: pick!(tls_reload_interval, "REGISTRY_TLS_RELOAD_INTERVAL"),
            auth: file.auth.clone(),
            events: file.events.clone().unwrap_or_default(),
            distribution: file.distribution.clone().unwrap_or_default(),
        };
        cfg.events.validate()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.storage.trim().is_empty() {
            bail!("storage must name a folder");
        }
        if self.max_manifest_size < 1024 {
            bail!("max_manifest_size must be at least 1024 bytes");
        }
        if !(1..=10_000).contains(&self.referrers_page_size) {
            bail!("referrers_page_size must be between 1 and 10000");
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => bail!("tls_cert is set but tls_key is not"),
            (None, Some(_)) => bail!("tls_key is set but tls_cert is not"),
            (Some(c), Some(k)) if c.as_os_str().is_empty() || k.as_os_str().is_empty() => {
                bail!("tls_cert and tls_key must name files")
            }
            (Some(_), Some(_)) if self.tls_listen == self.listen && self.listen.port() != 0 => {
                bail!("tls_listen and listen must differ ({})", self.listen)
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            bail!("tls_client_ca needs tls_cert and tls_key (mutual TLS is part of HTTPS)");
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("log_level {:?}", self.log_level))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    /// A config file `name` holding `text`, in a folder that lives as long as its guard.
    pub(crate) fn config_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    /// The flags naming a config file that holds `text` (it lives as long as the folder guard).
    fn file_args(text: &str) -> (tempfile::TempDir, ServeArgs) {
        let (dir, file) = config_file("r.toml", text);
        (dir, ServeArgs::with_config(file))
    }

    /// An environment holding exactly `pairs`.
    pub(crate) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_serve_a_newcomer() {
        let c = Config::load(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:5000");
        assert_eq!(c.storage, "./data");
        assert!(c.auto_mount);
        assert_eq!(c.max_manifest_size, 4 * 1024 * 1024);
    }

    #[test]
    fn file_then_env_then_flags() {
        let (_dir, args) = file_args(
            "listen = \"127.0.0.1:1\"\nstorage = \"/f\"\nfsync = false\nlog_format = \"json\"\n",
        );
        let c = Config::load(&args, &env_of(&[])).unwrap();
        assert_eq!(
            (c.listen.port(), c.storage.as_str(), c.fsync),
            (1, "/f", false)
        );
        assert_eq!(c.log_format, LogFormat::Json);

        let env = env_of(&[
            ("REGISTRY_LISTEN", "127.0.0.1:2"),
            ("REGISTRY_FSYNC", "true"),
        ]);
        let c = Config::load(&args, &env).unwrap();
        assert_eq!(
            (c.listen.port(), c.storage.as_str(), c.fsync),
            (2, "/f", true)
        );

        let args = ServeArgs {
            listen: Some("127.0.0.1:3".parse().unwrap()),
            ..args
        };
        let c = Config::load(&args, &env).unwrap();
        assert_eq!(c.listen.port(), 3);
    }

    #[test]
    fn bad_values_are_reported() {
        let e = Config::load(
            &ServeArgs::default(),
            &env_of(&[("REGISTRY_FSYNC", "maybe")]),
        );
        assert!(e.unwrap_err().to_string().contains("REGISTRY_FSYNC"));
        let (_dir, args) = file_args("lisen = \"x\"\n");
        assert!(Config::load(&args, &env_of(&[])).is_err());
    }

    #[test]
    fn tls_settings_follow_the_same_order() {
        let c = Config::load(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert_eq!((c.tls_cert.clone(), c.tls_client_ca.clone()), (None, None));
        assert_eq!(c.tls_listen.to_string(), "0.0.0.0:5443");
        assert_eq!(c.tls_reload_interval, 5);

        let (_dir, args) = file_args("tls_cert = \"/f/tls.crt\"\ntls_key = \"/f/tls.key\"\ntls_listen = \"127.0.0.1:8443\"\n");
        let c = Config::load(&args, &env_of(&[])).unwrap();
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/f/tls.crt")));
        assert_eq!(c.tls_listen.port(), 8443);
        let env = env_of(&[
            ("REGISTRY_TLS_CERT", "/e/tls.crt"),
            ("REGISTRY_TLS_CLIENT_CA", "/e/ca.crt"),
            ("REGISTRY_TLS_RELOAD_INTERVAL", "1"),
        ]);
        let c = Config::load(&args, &env).unwrap();
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/e/tls.crt")));
        assert_eq!(c.tls_key.as_deref(), Some(Path::new("/f/tls.key")));
        assert_eq!(c.tls_client_ca.as_deref(), Some(Path::new("/e/ca.crt")));
        assert_eq!(c.tls_reload_interval, 1);
        let args = ServeArgs {
            tls_cert: Some("/a/tls.crt".into()),
            ..args
        };
        let c = Config::load(&args, &env).unwrap();
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/a/tls.crt")));
    }

    #[test]
    fn tls_settings_are_checked() {
        let err = |pairs: &[(&str, &str)]| {
            Config::load(&ServeArgs::default(), &env_of(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("REGISTRY_TLS_CERT", "/c")]).contains("tls_key"));
        assert!(err(&[("REGISTRY_TLS_KEY", "/k")]).contains("tls_cert"));
        assert!(err(&[("REGISTRY_TLS_CLIENT_CA", "/ca")]).contains("tls_client_ca"));
        assert!(err(&[
            ("REGISTRY_TLS_CERT", "/c"),
            ("REGISTRY_TLS_KEY", "/k"),
            ("REGISTRY_TLS_LISTEN", "0.0.0.0:5000"),
        ])
        .contains("differ"));
    }

    #[test]
    fn a_bad_retention_rule_fails_the_load() {
        let load = |text: &str| {
            let (_dir, args) = file_args(text);
            Config::load(&args, &env_of(&[])).map_err(|e| format!("{e:#}"))
        };
        let c = load(
            "[[retention]]\nrepositories = \"builds/**\"\nkeep_tags = 3\nuntagged_after = \"7d\"\n",
        )
        .unwrap();
        assert_eq!(c.retention.len(), 1);
        assert_eq!(c.retention[0].keep_tags, Some(3));
        assert_eq!(
            c.retention[0].untagged_after,
            Some(std::time::Duration::from_secs(7 * 86400))
        );
        assert_eq!(c.gc_options(true).retention.len(), 1);

        let e = load(
            "[[retention]]\nrepositories = \"a/**\"\n[[retention]]\nrepositories = \"b\"\nuntagged_after = \"soon\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("retention rule 2") && e.contains("untagged_after"),
            "{e}"
        );
        let e = load("[[retention]]\nrepositories = \" \"\n").unwrap_err();
        assert!(e.contains("retention rule 1"), "{e}");
        let e = load("[[retention]]\nrepositories = \"a\"\nkeep = 1\n").unwrap_err();
        assert!(e.contains("keep"), "{e}");
    }

    #[test]
    fn sparse_rules_and_the_referrers_page_come_from_the_file() {
        let (_dir, args) = file_args(
            "referrers_page_size = 20\n[[sparse]]\nrepositories = \"mirror/**\"\nindex_children = true\n",
        );
        let c = Config::load(&args, &|_| None).unwrap();
        assert_eq!(c.sparse, vec![SparseRule::new("mirror/**", true, false)]);
        assert_eq!(c.referrers_page_size, 20);
        assert_eq!(Config::default().sparse, vec![]);
        for bad in [
            "[[sparse]]\nrepositories = \"a\"\nlayers = true\n",
            "[[sparse]]\nrepositories = \" \"\nimage_layers = true\n",
            "referrers_page_size = 0\n",
        ] {
            let (_dir, args) = file_args(bad);
            assert!(Config::load(&args, &|_| None).is_err(), "{bad}");
        }
    }
}
