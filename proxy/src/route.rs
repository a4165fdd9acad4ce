//! Which upstream a request goes to: containerd's `?ns=<host>`, else an upstream's prefix as the
//! first name component, else the catch-all upstream when one is configured. Everything else is
//! a repository of the build registry itself.

use std::sync::Arc;

use storage::RepoName;

use crate::client::Upstream;
use crate::Proxy;

/// A request's repository resolved to an upstream.
#[derive(Debug, Clone)]
pub struct Route {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// The repository's name at the upstream (`library/alpine`).
    pub remote: String,
    /// The cache repository in storage (`docker.io/library/alpine`; for the catch-all upstream
    /// the name as asked), from which the server serves what the proxy filled. Access rules are
    /// matched on it too, so one rule covers a proxied image however it is reached.
    pub local: RepoName,
}

impl Proxy {
    /// The upstream a request names, if any: `ns` (containerd's mirror form), else the first
    /// component of `name` (the prefix form), else the catch-all upstream. `None` for the build
    /// registry's own repositories, and for an `ns` that names no configured upstream.
    pub fn route(&self, name: &RepoName, ns: Option<&str>) -> Option<Route> {
        let (upstream, rest) = match ns {
            Some(ns) => {
                let up = self
                    .upstreams
                    .iter()
                    .find(|u| u.config.name.eq_ignore_ascii_case(ns))?;
                // A client may also send the prefix form to a mirror.
                let rest = name
                    .as_str()
                    .strip_prefix(&format!("{}/", up.prefix))
                    .unwrap_or(name.as_str());
                (up, rest)
            }
            None => match self.by_prefix(name) {
                Some(found) => found,
                None => {
                    let up = self.catch_all.as_ref()?;
                    return Some(Route {
                        upstream: up.clone(),
                        remote: remote_name(up, name.as_str()),
                        local: name.clone(),
                    });
                }
            },
        };
        let remote = remote_name(upstream, rest);
        let local = format!("{}/{remote}", upstream.prefix).parse().ok()?;
        Some(Route {
            upstream: upstream.clone(),
            remote,
            local,
        })
    }

    /// The catch-all upstream, when one is configured: then the registry holds no repositories
    /// of its own, and an `ns` that names no upstream names nothing it can serve.
    pub fn catch_all(&self) -> Option<&Arc<Upstream>> {
        self.catch_all.as_ref()
    }

    /// The upstream whose prefix is the first component of `name`, and the rest of the name.
    fn by_prefix<'a>(&'a self, name: &'a RepoName) -> Option<(&'a Arc<Upstream>, &'a str)> {
        let (first, rest) = name.as_str().split_once('/')?;
        let up = self.upstreams.iter().find(|u| u.prefix == first)?;
        Some((up, rest))
    }
}

/// The name at the upstream: `library/` in front of a one-component name where the upstream
/// wants it (Docker Hub's official images).
fn remote_name(up: &Upstream, rest: &str) -> String {
    let library = up
        .config
        .library_prefix
        .unwrap_or(up.config.name == "docker.io");
    if library && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_owned()
    }
}
