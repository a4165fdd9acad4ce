//! The access-control state shared by every request: the rules, the credential sources, the
//! signing key and the failed-login limiter, loaded once at start-up.

use std::sync::Arc;
use std::time::Duration;

use storage::Store;

use super::cache::TokenCache;
use super::config::{AuthConfig, ServiceAccountConfig};
use super::fetch;
use super::htpasswd::{Users, Watched};
use super::jwt::Jwks;
use super::limit::FailureLimit;
use super::rules::{Action, Identity, Rules};
use super::signing::SigningKey;
use super::types::Caller;

/// The access-control state shared by every request.
#[derive(Debug)]
pub struct Auth {
    pub(super) cfg: AuthConfig,
    pub(super) rules: Rules,
    pub(super) users: Option<Users>,
    pub(super) jwks: Option<KeySet>,
    pub(super) signing: SigningKey,
    pub(super) limit: FailureLimit,
    /// Bearer tokens that verified, so a token sent with every request is verified once.
    pub(super) tokens: TokenCache,
    pub(super) registry: Arc<Store>,
    /// The pull-through cache: rules match a proxied name as its cache repository.
    pub(super) proxy: std::sync::OnceLock<Arc<proxy::Proxy>>,
}

/// Where ServiceAccount token keys come from.
#[derive(Debug)]
pub(super) enum KeySet {
    File(Watched<Jwks>),
    Url(Arc<fetch::Remote>),
}

impl KeySet {
    /// Opens the JWKS file or starts fetching the JWKS URL; exactly one must be set.
    async fn open(sa: &ServiceAccountConfig) -> anyhow::Result<KeySet> {
        Ok(match (&sa.jwks_file, &sa.jwks_url) {
            (Some(f), None) => KeySet::File(Watched::open(f, "JWKS", Jwks::parse)?),
            (None, Some(url)) => KeySet::Url(
                fetch::Remote::start(
                    fetch::Source {
                        url: url.clone(),
                        ca_file: sa.jwks_ca_file.clone(),
                        token_file: sa.jwks_token_file.clone(),
                    },
                    Duration::from_secs(sa.jwks_refresh),
                )
                .await?,
            ),
            _ => anyhow::bail!("[auth.serviceaccount] needs exactly one of jwks_file and jwks_url"),
        })
    }

    pub(super) fn get(&self) -> Arc<Jwks> {
        match self {
            KeySet::File(w) => w.get().0,
            KeySet::Url(r) => r.get(),
        }
    }
}

impl Auth {
    /// Loads files and the signing key; fails on anything that would make requests fail later.
    pub async fn new(cfg: AuthConfig, registry: Arc<Store>) -> anyhow::Result<Arc<Auth>> {
        let rules = if cfg.rules.is_empty() {
            Rules::default_rules()
        } else {
            Rules(cfg.rules.clone())
        };
        rules.validate()?;
        let users = cfg.htpasswd.as_deref().map(Users::open).transpose()?;
        let jwks = match &cfg.serviceaccount {
            None => None,
            Some(sa) => Some(KeySet::open(sa).await?),
        };
        let signing = SigningKey::load(cfg.token_key_file.as_deref(), &registry).await?;
        let limit = FailureLimit::new(
            cfg.max_failures,
            Duration::from_secs(cfg.failure_window.max(1)),
        );
        Ok(Arc::new(Auth {
            rules,
            users,
            jwks,
            signing,
            limit,
            tokens: TokenCache::default(),
            registry,
            cfg,
            proxy: Default::default(),
        }))
    }

    /// A one-line description for the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "access control on: {} rule(s){}, htpasswd {}, ServiceAccount tokens {}, token key from {}",
            self.rules.0.len(),
            if self.cfg.rules.is_empty() {
                " (default: anonymous pull, authenticated push)"
            } else {
                ""
            },
            if self.users.is_some() { "on" } else { "off" },
            if self.jwks.is_some() { "on" } else { "off" },
            self.signing.origin()
        )
    }

    /// From now on, rules match a name the pull-through cache serves as its cache repository
    /// ([`proxy::Route::local`]): `?ns=docker.io` with `library/alpine` and the prefix form
    /// `docker.io/library/alpine` both as `docker.io/library/alpine`.
    pub fn match_proxied_names(&self, proxy: Arc<proxy::Proxy>) {
        let _ = self.proxy.set(proxy);
    }

    /// The name rules are matched on for `name` asked for with `ns`.
    pub(super) fn rule_name<'a>(
        &self,
        name: &'a storage::RepoName,
        ns: Option<&str>,
    ) -> std::borrow::Cow<'a, str> {
        match self.proxy.get().and_then(|p| p.route(name, ns)) {
            Some(route) => route.local.to_string().into(),
            None => name.as_str().into(),
        }
    }

    /// The current token-signing key.
    pub(super) fn key(&self) -> ring::hmac::Key {
        self.signing.get()
    }

    /// Whether `caller` may do `action` on `repo`.
    pub(super) fn may(&self, caller: &Caller, repo: &str, action: Action) -> bool {
        match caller {
            Caller::Anonymous => self.rules.allows(&Identity::anonymous(), repo, action),
            Caller::Principal(id) => self.rules.allows(id, repo, action),
            Caller::Token(_, access) => access.iter().any(|a| {
                a.kind == "repository"
                    && a.name == repo
                    && a.actions.iter().any(|x| x == action.as_str())
            }),
        }
    }
}
