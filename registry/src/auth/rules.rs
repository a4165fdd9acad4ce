//! Access rules: an ordered list; for each action the first rule that names the repository, the
//! caller and the action decides (allow, or deny with `deny = true`). No matching rule: denied.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An operation on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests, blobs, tags, referrers; list in the catalog.
    Pull,
    /// Upload blobs, put manifests and tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    /// The name used in token scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Parses a scope action; `*` means all three.
    pub fn parse_list(s: &str) -> Vec<Action> {
        let mut out = Vec::new();
        for a in s.split(',') {
            match a.trim() {
                "pull" => out.push(Action::Pull),
                "push" => out.push(Action::Push),
                "delete" => out.push(Action::Delete),
                "*" => out.extend([Action::Pull, Action::Push, Action::Delete]),
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `None` for an anonymous caller; else the user name, `system:serviceaccount:<ns>:<name>`,
    /// or a client certificate's subject.
    pub name: Option<Arc<str>>,
    /// The Kubernetes namespace of a ServiceAccount caller.
    pub namespace: Option<Arc<str>>,
}

impl Identity {
    /// The anonymous caller.
    pub fn anonymous() -> Identity {
        Identity::default()
    }

    /// A named caller; a ServiceAccount name also yields its namespace.
    pub fn named(name: &str) -> Identity {
        let namespace = name
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
            .map(|(ns, _)| Arc::from(ns));
        Identity {
            name: Some(Arc::from(name)),
            namespace,
        }
    }

    /// For logs: the name, or `anonymous`.
    pub fn display(&self) -> &str {
        self.name.as_deref().unwrap_or("anonymous")
    }
}

/// One rule as written in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Repository globs: `*` matches within one path component, `**` across components;
    /// `{namespace}` and `{user}` stand for the caller's namespace and name.
    pub repositories: Vec<String>,
    /// `anonymous`, `authenticated`, `everyone`, `namespace:<ns>` (glob), or names (glob: `*`
    /// matches anything but `:`), e.g. `system:serviceaccount:ci:*`.
    pub identities: Vec<String>,
    /// The actions this rule decides.
    pub actions: Vec<Action>,
    /// Deny instead of allow.
    #[serde(default)]
    pub deny: bool,
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// Anonymous pull and authenticated pull and push everywhere.
    pub fn default_rules() -> Rules {
        Rules(vec![
            Rule {
                repositories: vec!["**".into()],
                identities: vec!["authenticated".into()],
                actions: vec![Action::Pull, Action::Push],
                deny: false,
            },
            Rule {
                repositories: vec!["**".into()],
                identities: vec!["anonymous".into()],
                actions: vec![Action::Pull],
                deny: false,
            },
        ])
    }

    /// Checks every glob once at start, so a typo fails the start instead of a request.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (i, r) in self.0.iter().enumerate() {
            if r.repositories.is_empty() || r.identities.is_empty() || r.actions.is_empty() {
                anyhow::bail!(
                    "auth rule {i}: repositories, identities and actions must not be empty"
                );
            }
            for p in &r.repositories {
                let bad = p.split('/').any(|c| c.is_empty())
                    || p.replace("{namespace}", "x")
                        .replace("{user}", "x")
                        .contains(['{', '}']);
                if bad {
                    anyhow::bail!("auth rule {i}: repository pattern {p:?} is not a valid glob");
                }
            }
        }
        Ok(())
    }

    /// Whether `who` may do `action` on `repo`.
    pub fn allows(&self, who: &Identity, repo: &str, action: Action) -> bool {
        for r in &self.0 {
            if !r.actions.contains(&action) {
                continue;
            }
            if !r.identities.iter().any(|i| identity_matches(i, who)) {
                continue;
            }
            if r.repositories.iter().any(|p| repo_matches(p, who, repo)) {
                return !r.deny;
            }
        }
        false
    }

    /// The subset of `wanted` that `who` may do on `repo`.
    pub fn granted(&self, who: &Identity, repo: &str, wanted: &[Action]) -> Vec<Action> {
        wanted
            .iter()
            .copied()
            .filter(|a| self.allows(who, repo, *a))
            .collect()
    }
}

fn identity_matches(pattern: &str, who: &Identity) -> bool {
    match pattern {
        "everyone" => true,
        "anonymous" => who.name.is_none(),
        "authenticated" => who.name.is_some(),
        p => {
            if let Some(ns) = p.strip_prefix("namespace:") {
                return who
                    .namespace
                    .as_deref()
                    .is_some_and(|n| glob(ns.as_bytes(), n.as_bytes(), b':'));
            }
            who.name
                .as_deref()
                .is_some_and(|n| glob(p.as_bytes(), n.as_bytes(), b':'))
        }
    }
}

fn repo_matches(pattern: &str, who: &Identity, repo: &str) -> bool {
    let mut p = pattern.to_owned();
    if p.contains("{namespace}") {
        match &who.namespace {
            Some(ns) => p = p.replace("{namespace}", ns),
            None => return false,
        }
    }
    if p.contains("{user}") {
        match &who.name {
            // A name with `/` or glob characters cannot stand for one path component.
            Some(n) if !n.contains(['/', '*']) => p = p.replace("{user}", n),
            _ => return false,
        }
    }
    glob(p.as_bytes(), repo.as_bytes(), b'/')
}

/// Glob match: `**` matches anything, `*` anything but `sep`; other bytes match themselves.
/// `a/**` also matches `a` itself.
fn glob(p: &[u8], s: &[u8], sep: u8) -> bool {
    if p.is_empty() {
        return s.is_empty();
    }
    if p.starts_with(b"/**") && sep == b'/' && s.is_empty() && p.len() == 3 {
        return true;
    }
    if p.starts_with(b"**") {
        let rest = &p[2..];
        return (0..=s.len()).any(|i| glob(rest, &s[i..], sep));
    }
    if p[0] == b'*' {
        let rest = &p[1..];
        for i in 0..=s.len() {
            if glob(rest, &s[i..], sep) {
                return true;
            }
            if i < s.len() && s[i] == sep {
                break;
            }
        }
        return false;
    }
    !s.is_empty() && p[0] == s[0] && glob(&p[1..], &s[1..], sep)
}

/// One `[[rules]]` stanza in TOML, for tests.
#[cfg(test)]
pub(crate) fn rule_toml(repos: &[&str], ids: &[&str], actions: &[&str], deny: bool) -> String {
    let list = |v: &[&str]| {
        let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        quoted.join(", ")
    };
    format!(
        "[[rules]]\nrepositories = [{}]\nidentities = [{}]\nactions = [{}]\ndeny = {deny}\n",
        list(repos),
        list(ids),
        list(actions)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml_text: &str) -> Rules {
        #[derive(Deserialize)]
        struct F {
            rules: Vec<Rule>,
        }
        let f: F = toml::from_str(toml_text).unwrap();
        let r = Rules(f.rules);
        r.validate().unwrap();
        r
    }

    #[test]
    fn globs() {
        assert!(glob(b"**", b"a/b/c", b'/'));
        assert!(glob(b"a/*", b"a/b", b'/'));
        assert!(!glob(b"a/*", b"a/b/c", b'/'));
        assert!(glob(b"a/**", b"a/b/c", b'/'));
        assert!(glob(b"a/**", b"a", b'/'));
        assert!(!glob(b"a/**", b"ab", b'/'));
        assert!(glob(b"a/*/c", b"a/x/c", b'/'));
        assert!(glob(
            b"system:serviceaccount:*:*",
            b"system:serviceaccount:ci:builder",
            b':'
        ));
        assert!(!glob(
            b"system:serviceaccount:*",
            b"system:serviceaccount:ci:builder",
            b':'
        ));
        assert!(!glob(b"alice", b"alice2", b':'));
    }

    #[test]
    fn default_is_anonymous_pull_authenticated_push() {
        let r = Rules::default_rules();
        let anon = Identity::anonymous();
        let alice = Identity::named("alice");
        assert!(r.allows(&anon, "lib/app", Action::Pull));
        assert!(!r.allows(&anon, "lib/app", Action::Push));
        assert!(r.allows(&alice, "lib/app", Action::Push));
        assert!(!r.allows(&alice, "lib/app", Action::Delete));
    }

    #[test]
    fn per_namespace() {
        let r = rules(
            &[
                rule_toml(
                    &["builds/{namespace}/**"],
                    &["system:serviceaccount:*:*"],
                    &["pull", "push"],
                    false,
                ),
                rule_toml(&["secret/**"], &["everyone"], &["pull"], true),
                rule_toml(&["**"], &["everyone"], &["pull"], false),
                rule_toml(
                    &["**"],
                    &["admin", "namespace:ops"],
                    &["pull", "push", "delete"],
                    false,
                ),
            ]
            .concat(),
        );
        let sa = Identity::named("system:serviceaccount:team-a:builder");
        assert_eq!(sa.namespace.as_deref(), Some("team-a"));
        assert!(r.allows(&sa, "builds/team-a/app", Action::Push));
        assert!(r.allows(&sa, "builds/team-a", Action::Push));
        assert!(!r.allows(&sa, "builds/team-b/app", Action::Push));
        assert!(!r.allows(&sa, "builds/team-a/app", Action::Delete));
        assert!(r.allows(&sa, "builds/team-b/app", Action::Pull));
        assert!(!r.allows(&sa, "secret/x", Action::Pull));
        let anon = Identity::anonymous();
        assert!(r.allows(&anon, "lib/x", Action::Pull));
        assert!(!r.allows(&anon, "builds/team-a/app", Action::Push));
        let admin = Identity::named("admin");
        assert!(r.allows(&admin, "lib/x", Action::Delete));
        assert!(
            !r.allows(&admin, "secret/x", Action::Pull),
            "first rule decides"
        );
        let ops = Identity::named("system:serviceaccount:ops:deployer");
        assert!(r.allows(&ops, "lib/x", Action::Delete));
        // A user without a namespace never matches a {namespace} rule.
        assert!(!r.allows(&Identity::named("bob"), "builds/bob/x", Action::Push));
        assert_eq!(
            r.granted(&sa, "builds/team-b/app", &[Action::Pull, Action::Push]),
            vec![Action::Pull]
        );
    }

    #[test]
    fn user_placeholder_and_validation() {
        let r = rules(&rule_toml(
            &["home/{user}/**"],
            &["authenticated"],
            &["push"],
            false,
        ));
        assert!(r.allows(&Identity::named("bob"), "home/bob/x", Action::Push));
        assert!(!r.allows(&Identity::named("bob"), "home/alice/x", Action::Push));
        assert!(!r.allows(&Identity::named("b/o"), "home/b/o/x", Action::Push));
        let bad = Rules(vec![Rule {
            repositories: vec!["a//b".into()],
            identities: vec!["x".into()],
            actions: vec![Action::Pull],
            deny: false,
        }]);
        assert!(bad.validate().is_err());
        assert_eq!(
            Action::parse_list("push,pull,bogus"),
            vec![Action::Pull, Action::Push]
        );
    }
}
