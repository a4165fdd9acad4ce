//! The upstream registries a node pulls through this registry (`UPSTREAMS` of the node setup):
//! `host=url` pairs such as `docker.io=https://registry-1.docker.io,ghcr.io=https://ghcr.io`. For
//! each, the node setup writes `<config_path>/<host>/hosts.toml` with `server = "<url>"` and this
//! registry as a `[host]` with `capabilities = ["pull", "resolve"]`, so containerd pulls through
//! the cache (`?ns=<host>`) and falls back to the upstream itself when the registry is down.

/// One upstream: the registry host name as image references spell it (`docker.io`,
/// `registry.example:5000`) and the URL containerd falls back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub url: String,
}

fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    name_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

fn valid_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(r) => {
            let host = r.split('/').next().unwrap_or_default();
            !host.is_empty()
                && r.chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '\'' | '#'))
        }
        None => false,
    }
}

/// Parses `host=url` pairs separated by commas (or white space). An empty list is no upstream.
pub fn parse(list: &str) -> Result<Vec<Upstream>, String> {
    let mut out: Vec<Upstream> = Vec::new();
    for entry in list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
    {
        let (host, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("'{entry}' is not host=url"))?;
        if !valid_host(host) {
            return Err(format!(
                "'{host}' is not a registry host name (such as docker.io or registry.example:5000)"
            ));
        }
        let url = url.trim_end_matches('/');
        if !valid_url(url) {
            return Err(format!(
                "'{url}' (for {host}) is not an http:// or https:// URL"
            ));
        }
        if out.iter().any(|u| u.host == host) {
            return Err(format!("{host} is listed twice"));
        }
        out.push(Upstream {
            host: host.to_owned(),
            url: url.to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_in_order() {
        let u = parse("docker.io=https://registry-1.docker.io,ghcr.io=https://ghcr.io/").unwrap();
        assert_eq!(
            u,
            [
                Upstream {
                    host: "docker.io".into(),
                    url: "https://registry-1.docker.io".into()
                },
                Upstream {
                    host: "ghcr.io".into(),
                    url: "https://ghcr.io".into()
                },
            ]
        );
        let u =
            parse(" registry.test:5000=http://127.0.0.1:5000 \n quay.io=https://quay.io").unwrap();
        assert_eq!(u[0].host, "registry.test:5000");
        assert_eq!(u[1].url, "https://quay.io");
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse(" , ").unwrap(), []);
    }

    #[test]
    fn refuses_what_would_break_a_hosts_toml() {
        for bad in [
            "docker.io",
            "=https://x",
            "docker.io=",
            "docker.io=ftp://x",
            "docker.io=https://",
            "docker.io=https://x\"y",
            "../etc=https://x",
            "a/b=https://x",
            "docker.io:0=https://x",
            "docker.io:99999=https://x",
            "-x.io=https://x",
            "docker.io=https://a,docker.io=https://b",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
