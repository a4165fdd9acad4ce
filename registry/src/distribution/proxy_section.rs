//! The `proxy` section: Distribution's pull-through cache mode (`proxy.remoteurl`, where the
//! whole registry mirrors one upstream and pushes are refused) becomes one `[[proxy.upstreams]]`
//! entry with `catch_all = true`, named after the upstream's host.

use serde_json::Value;

use super::translate::Out;
use super::values::{duration, get, string};

/// Translates `proxy.*` into `out`; what cannot be honoured goes to `refused`.
pub(super) fn proxy(tree: &Value, out: &mut Out) -> anyhow::Result<()> {
    let Out { t, x, refused } = out;
    if get(tree, "proxy").is_none() {
        return Ok(());
    }
    let Some(url) = string(tree, "proxy.remoteurl")?.filter(|u| !u.is_empty()) else {
        x.unsupported
            .push("proxy (without proxy.remoteurl the registry is not a cache)".into());
        return Ok(());
    };
    let Some(name) = upstream_name(&url) else {
        refused.push(format!(
            "proxy.remoteurl {url:?} (an http:// or https:// URL of a registry is needed)"
        ));
        return Ok(());
    };
    let user = string(tree, "proxy.username")?.filter(|u| !u.is_empty());
    let pass = string(tree, "proxy.password")?.filter(|p| !p.is_empty());
    let mut up = serde_json::json!({
        "name": name,
        "url": url.trim_end_matches('/'),
        "catch_all": true,
    });
    match (user, pass) {
        (Some(u), Some(p)) => {
            up["username"] = u.into();
            up["password"] = p.into();
        }
        (None, None) => {}
        _ => refused.push("proxy.username and proxy.password go together".into()),
    }
    let section = serde_json::json!({ "upstreams": [up] });
    t.insert("proxy".into(), toml::Value::try_from(section)?);
    x.notes.push(format!(
        "proxy.remoteurl: a pull-through cache of {url} (upstream {name:?}): every repository is fetched from it and cached, pushes are refused"
    ));
    if let Some(ttl) = duration(tree, "proxy.ttl")? {
        x.notes.push(format!(
            "proxy.ttl {}s accepted: here content cached by digest stays until garbage collection evicts it (max_cache_bytes of a TOML [proxy] section), and a cached tag is checked upstream again after tag_freshness (300 s)",
            ttl.as_secs()
        ));
    }
    Ok(())
}

/// The upstream's name: the remote URL's host (with its port), Docker Hub's API hosts as
/// `docker.io`. `None` when `url` is not an http(s) URL with a host.
fn upstream_name(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    let host = host.rsplit('@').next()?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid {
        return None;
    }
    Some(match host {
        "registry-1.docker.io" | "index.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        h => h.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distribution::Extras;

    fn translate(yaml: &str) -> (toml::Table, Extras, Vec<String>) {
        let tree: Value = yaml_serde::from_str(yaml).unwrap();
        let mut out = Out::default();
        proxy(&tree, &mut out).unwrap();
        (out.t, out.x, out.refused)
    }

    #[test]
    fn remoteurl_becomes_one_catch_all_upstream() {
        let (t, x, refused) = translate(
            "proxy:\n  remoteurl: https://registry-1.docker.io\n  username: robot\n  password: s3cret\n  ttl: 168h\n",
        );
        assert!(refused.is_empty(), "{refused:?}");
        let up = &t["proxy"]["upstreams"][0];
        assert_eq!(up["name"].as_str(), Some("docker.io"));
        assert_eq!(up["url"].as_str(), Some("https://registry-1.docker.io"));
        assert_eq!(up["catch_all"].as_bool(), Some(true));
        assert_eq!(up["username"].as_str(), Some("robot"));
        assert_eq!(up["password"].as_str(), Some("s3cret"));
        assert_eq!(t["proxy"]["upstreams"].as_array().unwrap().len(), 1);
        assert!(x.notes.iter().any(|n| n.contains("proxy.ttl 604800s")));
        assert!(x.notes.iter().all(|n| !n.contains("s3cret")));
    }

    #[test]
    fn the_name_is_the_remote_host() {
        for (url, name) in [
            ("https://ghcr.io", Some("ghcr.io")),
            ("http://127.0.0.1:5001/", Some("127.0.0.1:5001")),
            ("https://index.docker.io/v2/", Some("docker.io")),
            (
                "https://Mirror.Example.com:8443/path",
                Some("mirror.example.com:8443"),
            ),
            ("ftp://example.com", None),
            ("registry-1.docker.io", None),
            ("https://", None),
            ("https://bad host", None),
        ] {
            assert_eq!(upstream_name(url).as_deref(), name, "{url}");
        }
    }

    #[test]
    fn anonymous_upstream_and_half_credentials() {
        let (t, _, refused) = translate("proxy:\n  remoteurl: https://quay.io\n");
        assert!(refused.is_empty());
        let up = t["proxy"]["upstreams"][0].as_table().unwrap();
        assert!(!up.contains_key("username") && !up.contains_key("password"));
        let (_, _, refused) =
            translate("proxy:\n  remoteurl: https://quay.io\n  username: robot\n");
        assert_eq!(refused.len(), 1, "{refused:?}");
        let (_, _, refused) = translate("proxy:\n  remoteurl: not-a-url\n");
        assert_eq!(refused.len(), 1, "{refused:?}");
        let (t, x, _) = translate("proxy:\n  ttl: 1h\n");
        assert!(!t.contains_key("proxy"));
        assert_eq!(x.unsupported.len(), 1);
    }
}
