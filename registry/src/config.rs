//! One typed configuration, read from a TOML file, then `REGISTRY_*` environment variables, then
//! command-line flags (each overriding the one before), validated once at start.
//!
//! Environment access is injected (`load` takes a lookup function) so tests never touch the
//! process environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::Deserialize;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
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

/// The registry's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on for plain HTTP.
    pub listen: SocketAddr,
    /// Storage location: a folder path for the filesystem backend.
    pub storage: String,
    /// fsync blob and metadata writes before acknowledging them (survives power loss).
    pub fsync: bool,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5000)),
            storage: "./data".into(),
            fsync: true,
            auto_mount: true,
            max_manifest_size: 4 * 1024 * 1024,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_timeout: 30,
        }
    }
}

/// Settings as they may appear in the config file; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    storage: Option<String>,
    fsync: Option<bool>,
    auto_mount: Option<bool>,
    max_manifest_size: Option<usize>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    shutdown_timeout: Option<u64>,
}

/// The `serve` flags. Each also reads `REGISTRY_<NAME>` from the environment (flags win).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; its keys are the flag names with '_' (env REGISTRY_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address for plain HTTP [env REGISTRY_LISTEN] [default: 0.0.0.0:5000]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Storage: a folder for the filesystem backend [env REGISTRY_STORAGE] [default: ./data]
    #[arg(long)]
    pub storage: Option<String>,
    /// fsync writes before acknowledging them: an acknowledged push survives a power cut
    /// [env REGISTRY_FSYNC] [default: true]
    #[arg(long)]
    pub fsync: Option<bool>,
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
}

fn env_parse<T: FromStr>(
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

impl Config {
    /// Builds the configuration from the file named by `--config` or `REGISTRY_CONFIG`, then the
    /// environment (through `env`), then the flags.
    pub fn load(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let path = args
            .config
            .clone()
            .or_else(|| env("REGISTRY_CONFIG").map(PathBuf::from));
        let file = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let d = Config::default();
        macro_rules! pick {
            ($field:ident, $env:literal) => {
                args.$field
                    .clone()
                    .or(env_parse(env, $env)?)
                    .or(file.$field)
                    .unwrap_or(d.$field)
            };
        }
        let cfg = Config {
            listen: pick!(listen, "REGISTRY_LISTEN"),
            storage: pick!(storage, "REGISTRY_STORAGE"),
            fsync: pick!(fsync, "REGISTRY_FSYNC"),
            auto_mount: pick!(auto_mount, "REGISTRY_AUTO_MOUNT"),
            max_manifest_size: pick!(max_manifest_size, "REGISTRY_MAX_MANIFEST_SIZE"),
            log_format: pick!(log_format, "REGISTRY_LOG_FORMAT"),
            log_level: pick!(log_level, "REGISTRY_LOG_LEVEL"),
            shutdown_timeout: pick!(shutdown_timeout, "REGISTRY_SHUTDOWN_TIMEOUT"),
        };
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
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("log_level {:?}", self.log_level))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
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
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nstorage = \"/f\"\nfsync = false\nlog_format = \"json\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
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
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert!(Config::load(&args, &env_of(&[])).is_err());
    }
}
