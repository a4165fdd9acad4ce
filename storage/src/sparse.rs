//! Sparse manifests: which references a manifest pushed into a repository may leave out.
//!
//! By default every blob and child manifest a pushed manifest names must already be in the
//! repository, so a build registry never holds a half-pushed image. Mirrors need less: copying one
//! platform of a multi-platform image keeps an index whose other children were never fetched, and
//! a pull-through cache stores a manifest before the layers nobody pulled yet. A [`SparseRule`]
//! relaxes the check for the repositories its pattern matches, separately for index children and
//! for image layers. The config of an image manifest is always required: without it nothing can
//! run or inspect the image.

use crate::manifest::Role;
use crate::pattern::Pattern;
use crate::types::RepoName;

/// What may be missing from manifests pushed into the repositories `repositories` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseRule {
    /// Which repositories the rule governs (`*` within a path component, `**` across).
    pub repositories: Pattern,
    /// An index may name child manifests that were never pushed.
    pub index_children: bool,
    /// An image manifest may name layers that were never pushed (its config must be there).
    pub image_layers: bool,
}

impl SparseRule {
    /// A rule for the repositories matching `pattern`.
    pub fn new(pattern: &str, index_children: bool, image_layers: bool) -> Self {
        SparseRule {
            repositories: Pattern::new(pattern),
            index_children,
            image_layers,
        }
    }

    /// Whether content in `role` may be missing under this rule.
    fn allows(&self, role: Role) -> bool {
        match role {
            Role::Child => self.index_children,
            Role::Layer => self.image_layers,
            Role::Config => false,
        }
    }
}

/// Whether a manifest pushed into `repo` may name content in `role` that the repository lacks:
/// the first rule whose pattern matches `repo` decides; with none, nothing may be missing.
pub fn may_be_missing(rules: &[SparseRule], repo: &RepoName, role: Role) -> bool {
    rules
        .iter()
        .find(|r| r.repositories.matches(repo.as_str()))
        .is_some_and(|r| r.allows(role))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn the_first_matching_rule_decides_per_role() {
        let rules = vec![
            SparseRule::new("mirror/strict/**", false, false),
            SparseRule::new("mirror/**", true, false),
            SparseRule::new("cache/*", true, true),
        ];
        let repo = |s: &str| s.parse::<RepoName>().unwrap();
        let cases = [
            ("mirror/a", Role::Child, true),
            ("mirror/a", Role::Layer, false),
            ("mirror/strict/a", Role::Child, false),
            ("cache/a", Role::Layer, true),
            ("cache/a", Role::Config, false),
            ("cache/a/b", Role::Layer, false),
            ("builds/a", Role::Child, false),
        ];
        for (name, role, want) in cases {
            assert_eq!(
                may_be_missing(&rules, &repo(name), role),
                want,
                "{name} {role:?}"
            );
        }
        assert!(!may_be_missing(&[], &repo("a"), Role::Child));
    }

    /// A sparse manifest pushed under a rule is accepted, and fsck, run with the same rules,
    /// does not report what the rule allowed to be missing; without the rule it does.
    #[tokio::test]
    async fn fsck_follows_the_rules_the_push_followed() {
        use crate::fs::FsBackend;
        use crate::hash::digest_of;
        use crate::types::{Algorithm, Reference};
        use crate::{Options, Store};
        use bytes::Bytes;
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FsBackend::new(dir.path(), false).unwrap());
        let open = |sparse: Vec<SparseRule>| {
            Store::new(
                backend.clone(),
                Options {
                    sparse,
                    ..Options::default()
                },
            )
        };
        let repo: RepoName = "mirror/a".parse().unwrap();
        let config = Bytes::from_static(br#"{"architecture":"amd64","os":"linux"}"#);
        let config_digest = digest_of(Algorithm::Sha256, &config);
        let reg = open(vec![SparseRule::new("mirror/**", false, true)]);
        reg.blob_put(
            &repo,
            &config_digest,
            Some(config.len() as u64),
            futures::stream::iter([Ok(config.clone())]).boxed(),
        )
        .await
        .unwrap();
        let missing = digest_of(Algorithm::Sha256, b"never pushed");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": missing.to_string(), "size": 12}],
        });
        let body = Bytes::from(serde_json::to_vec(&manifest).unwrap());
        let tag = Reference::Tag("v1".parse().unwrap());
        reg.manifest_put(&repo, &tag, None, body.clone(), &[])
            .await
            .unwrap();
        assert!(reg.fsck(false).await.unwrap().problems.is_empty());
        let strict = open(Vec::new());
        let problems = strict.fsck(false).await.unwrap().problems;
        assert!(
            problems.iter().any(|p| p.contains(&missing.to_string())),
            "{problems:?}"
        );
        // The same push is refused where no rule allows it.
        let other: RepoName = "builds/a".parse().unwrap();
        assert!(matches!(
            strict.manifest_put(&other, &tag, None, body, &[]).await,
            Err(crate::Error::ManifestBlobUnknown(d)) if d == config_digest || d == missing
        ));
    }
}
