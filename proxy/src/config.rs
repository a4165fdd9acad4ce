//! Upstream registries as they appear in the configuration file (`[[proxy.upstreams]]`):
//!
//! ```toml
//! [proxy]
//! max_cache_bytes = 107374182400        # evict least recently pulled content above 100 GiB
//!
//! [[proxy.upstreams]]
//! name = "docker.io"                    # ?ns=docker.io, or /v2/docker.io/library/alpine/...
//! url = "https://registry-1.docker.io"
//! username_file = "/secrets/hub/username"
//! password_file = "/secrets/hub/token"
//! tag_freshness = 600                   # seconds a cached tag is served without asking
//! first_byte_timeout = 5                # then 504, and containerd tries its next host
//!
//! [[proxy.upstreams]]
//! name = "ghcr.io"
//! url = "https://ghcr.io"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The pull-through cache's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The upstream registries; a repository is proxied only when it names one of them.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Folder for blobs being filled (local disk); each process works in a sub-folder of its own
    /// and removes those of processes that are gone. Default: the system's temporary folder.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the cached content may take; garbage collection evicts the least recently
    /// pulled cached content above it. None: no limit.
    pub max_cache_bytes: Option<u64>,
}

/// One upstream registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry host as clients name it: containerd's `?ns=` value and the first path
    /// component of the prefix form (`docker.io`, `ghcr.io`, `quay.io`, `registry.k8s.io`).
    pub name: String,
    /// Base URL of the upstream's API (`https://registry-1.docker.io`).
    pub url: String,
    /// File holding the user name for the upstream (a mounted Secret); anonymous when unset.
    pub username_file: Option<PathBuf>,
    /// File holding the password or token for the upstream.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates trusted for this upstream, beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for the upstream's response headers before answering the client with an
    /// error, so that a client with several mirrors (containerd) moves on quickly.
    #[serde(default = "default_first_byte")]
    pub first_byte_timeout: u64,
    /// Seconds a body may stall between two chunks before the fill fails.
    #[serde(default = "default_stall")]
    pub stall_timeout: u64,
    /// Seconds a cached tag is served without asking the upstream.
    #[serde(default = "default_freshness")]
    pub tag_freshness: u64,
    /// Most fills from this upstream at once; more requests wait.
    #[serde(default = "default_fills")]
    pub max_concurrent_fills: usize,
    /// Whether one-component names get `library/` in front (Docker Hub's official images).
    /// Default: true for `docker.io`.
    pub library_prefix: Option<bool>,
}

fn default_first_byte() -> u64 {
    5
}
fn default_stall() -> u64 {
    60
}
fn default_freshness() -> u64 {
    300
}
fn default_fills() -> usize {
    64
}

impl UpstreamConfig {
    /// A configuration with defaults for everything but the name and URL.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        UpstreamConfig {
            name: name.into(),
            url: url.into(),
            username_file: None,
            password_file: None,
            ca_file: None,
            first_byte_timeout: default_first_byte(),
            stall_timeout: default_stall(),
            tag_freshness: default_freshness(),
            max_concurrent_fills: default_fills(),
            library_prefix: None,
        }
    }

    /// Time to wait for response headers.
    pub fn first_byte(&self) -> Duration {
        Duration::from_secs(self.first_byte_timeout.max(1))
    }

    /// Time a cached tag stays fresh.
    pub fn freshness(&self) -> Duration {
        Duration::from_secs(self.tag_freshness)
    }

    /// The repository-name component that stands for this upstream in the path prefix form and
    /// in storage: the host name with a port's `:` turned into `-` (`localhost:5000` ->
    /// `localhost-5000`), lower case.
    pub fn prefix(&self) -> String {
        self.name.to_ascii_lowercase().replace(':', "-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_prefix() {
        let c: ProxyConfig =
            toml_like(r#"{"upstreams":[{"name":"Localhost:5000","url":"http://127.0.0.1:5000"}]}"#);
        let u = &c.upstreams[0];
        assert_eq!(u.first_byte(), Duration::from_secs(5));
        assert_eq!(u.prefix(), "localhost-5000");
        assert_eq!(u.tag_freshness, 300);
        assert!(c.max_cache_bytes.is_none());
    }

    fn toml_like(s: &str) -> ProxyConfig {
        serde_json::from_str(s).unwrap()
    }
}
