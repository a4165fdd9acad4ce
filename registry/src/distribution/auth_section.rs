//! The `auth` section: `auth.htpasswd` becomes this registry's `[auth]` with that file and a
//! rule that means what Distribution means (every request needs a valid login, and a valid login
//! may do everything); `auth.token` and `auth.silly` are refused.

use serde_json::Value;

use super::translate::Out;
use super::values::{get, string};

/// Translates `auth.*` into `out`; schemes that cannot be honoured go to `refused`.
pub(super) fn auth(tree: &Value, out: &mut Out) -> anyhow::Result<()> {
    let Out { t, x, refused } = out;
    let Some(section) = get(tree, "auth").and_then(Value::as_object) else {
        return Ok(());
    };
    let schemes: Vec<&String> = section
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k)
        .collect();
    for k in &schemes {
        match k.as_str() {
            "htpasswd" => {}
            "token" => refused.push(
                "auth.token (an external token server is not supported: this registry issues its own tokens; for ServiceAccount tokens and rules write an [auth] section in a TOML config)"
                    .into(),
            ),
            "silly" => refused.push(
                "auth.silly (Distribution's development scheme admits any credentials; use auth.htpasswd)"
                    .into(),
            ),
            other => refused.push(format!("auth.{other} (unknown access-control scheme)")),
        }
    }
    if schemes.len() > 1 {
        refused.push("auth: more than one scheme (Distribution allows one)".into());
    }
    if !schemes.iter().any(|k| *k == "htpasswd") {
        return Ok(());
    }
    let Some(path) = string(tree, "auth.htpasswd.path")?.filter(|p| !p.is_empty()) else {
        refused.push("auth.htpasswd without a path".into());
        return Ok(());
    };
    let realm = string(tree, "auth.htpasswd.realm")?.unwrap_or_default();
    let section = serde_json::json!({
        "htpasswd": path,
        "rules": [{
            "repositories": ["**"],
            "identities": ["authenticated"],
            "actions": ["pull", "push", "delete"],
        }],
    });
    t.insert("auth".into(), toml::Value::try_from(section)?);
    x.notes.push(format!(
        "auth.htpasswd: every request needs a valid login from {path} (no anonymous pull); a valid login may pull, push and delete, as in Distribution. Clients are challenged for a Bearer token from /token, where the same credentials work (as does Basic on /v2/), so the realm {realm:?} is not shown to them"
    ));
    Ok(())
}
