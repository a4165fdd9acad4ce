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
//! username = "robot"                    # inline credentials: either these or the files
//! password = "..."
//! ```
//!
//! One upstream may set `catch_all = true`: it then serves every repository name that carries
//! no `?ns=` and no upstream prefix (CNCF Distribution's `proxy.remoteurl` mode, where the whole
//! registry mirrors one upstream and every push is refused).

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
    /// and removes those of processes that are gone. Default: the filesystem storage's hidden
    /// scratch folder (fills then move into storage by a rename), else the system's temporary
    /// folder.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the cached content may take; garbage collection evicts the least recently
    /// pulled cached content above it. None: no limit.
    pub max_cache_bytes: Option<u64>,
}

/// One upstream registry. Its `Debug` form leaves the password out.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry host as clients name it: containerd's `?ns=` value and the first path
    /// component of the prefix form (`docker.io`, `ghcr.io`, `quay.io`, `registry.k8s.io`).
    pub name: String,
    /// Base URL of the upstream's API (`https://registry-1.docker.io`).
    pub url: String,
    /// This upstream serves every name that has no `?ns=` and no upstream prefix; at most one
    /// upstream may set it.
    #[serde(default)]
    pub catch_all: bool,
    /// File holding the user name for the upstream (a mounted Secret); anonymous when neither
    /// it nor `username` is set.
    pub username_file: Option<PathBuf>,
    /// File holding the password or token for the upstream.
    pub password_file: Option<PathBuf>,
    /// The user name, inline (instead of `username_file`).
    pub username: Option<String>,
    /// The password or token, inline (instead of `password_file`); never logged.
    pub password: Option<String>,
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
            username: None,
            password: None,
            catch_all: false,
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

    /// The credentials to send upstream: each of the user name and the password inline or from
    /// its file (not both), the two together or neither. Reads the files now.
    pub fn credentials(&self) -> std::io::Result<Option<(String, String)>> {
        let user = self.secret(&self.username, &self.username_file, "username")?;
        let pass = self.secret(&self.password, &self.password_file, "password")?;
        match (user, pass) {
            (Some(u), Some(p)) => Ok(Some((u, p))),
            (None, None) => Ok(None),
            _ => Err(invalid(format!(
                "upstream {}: a user name and a password go together",
                self.name
            ))),
        }
    }

    /// One secret, inline or read from its file.
    fn secret(
        &self,
        inline: &Option<String>,
        file: &Option<PathBuf>,
        what: &str,
    ) -> std::io::Result<Option<String>> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(invalid(format!(
                "upstream {}: set {what} or {what}_file, not both",
                self.name
            ))),
            (Some(v), None) => Ok(Some(v.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "upstream {}: {what}_file {}: {e}",
                            self.name,
                            path.display()
                        ),
                    )
                }),
            (None, None) => Ok(None),
        }
    }

    /// The repository-name component that stands for this upstream in the path prefix form and
    /// in storage: the host name with a port's `:` turned into `-` (`localhost:5000` ->
    /// `localhost-5000`), lower case.
    pub fn prefix(&self) -> String {
        self.name.to_ascii_lowercase().replace(':', "-")
    }
}

impl ProxyConfig {
    /// Checks what no single upstream can: at most one `catch_all`.
    pub fn check(&self) -> std::io::Result<()> {
        let all: Vec<&str> = self
            .upstreams
            .iter()
            .filter(|u| u.catch_all)
            .map(|u| u.name.as_str())
            .collect();
        if all.len() > 1 {
            return Err(invalid(format!(
                "only one upstream may set catch_all; {} do",
                all.join(", ")
            )));
        }
        Ok(())
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("username_file", &self.username_file)
            .field("password_file", &self.password_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("catch_all", &self.catch_all)
            .field("ca_file", &self.ca_file)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("tag_freshness", &self.tag_freshness)
            .field("max_concurrent_fills", &self.max_concurrent_fills)
            .field("library_prefix", &self.library_prefix)
            .finish()
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
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

    #[test]
    fn credentials_inline_or_from_files_never_both_and_never_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, "from-file\n").unwrap();
        let mut u = UpstreamConfig::new("up.test", "http://127.0.0.1:1");
        assert_eq!(u.credentials().unwrap(), None);
        u.username = Some("robot".into());
        assert!(u.credentials().is_err(), "a user name without a password");
        u.password = Some("hunter2".into());
        assert_eq!(
            u.credentials().unwrap(),
            Some(("robot".into(), "hunter2".into()))
        );
        assert!(!format!("{u:?}").contains("hunter2"), "{u:?}");
        u.password_file = Some(pass_file.clone());
        let e = u.credentials().unwrap_err().to_string();
        assert!(e.contains("password or password_file"), "{e}");
        u.password = None;
        assert_eq!(
            u.credentials().unwrap(),
            Some(("robot".into(), "from-file".into()))
        );
    }

    #[test]
    fn at_most_one_catch_all() {
        let c: ProxyConfig = toml_like(
            r#"{"upstreams":[{"name":"a.test","url":"http://a","catch_all":true},{"name":"b.test","url":"http://b"}]}"#,
        );
        assert!(c.upstreams[0].catch_all && !c.upstreams[1].catch_all);
        c.check().unwrap();
        let c: ProxyConfig = toml_like(
            r#"{"upstreams":[{"name":"a.test","url":"http://a","catch_all":true},{"name":"b.test","url":"http://b","catch_all":true}]}"#,
        );
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("a.test, b.test"), "{e}");
    }

    fn toml_like(s: &str) -> ProxyConfig {
        serde_json::from_str(s).unwrap()
    }
}
