//! Referrers: the descriptors of the manifests whose `subject` is a given manifest.

use futures::{StreamExt, TryStreamExt};

use super::Registry;
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::Descriptor;
use crate::types::{Digest, RepoName};

impl Registry {
    /// Descriptors of the manifests in `repo` whose subject is `subject`, optionally only those of
    /// `artifact_type`, ordered by digest.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let names = self
            .backend
            .list_dir(&layout::referrers_dir(repo, subject))
            .await?;
        let descs = futures::stream::iter(names)
            .map(|name| {
                let key = layout::referrer_named(repo, subject, &name);
                async move {
                    match self.backend.get_bytes(&key).await {
                        Ok(raw) => serde_json::from_slice::<Descriptor>(&raw)
                            .map(Some)
                            .map_err(|e| Error::Corrupt(format!("referrer {key}: {e}"))),
                        Err(e) if e.is_not_found() => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(16)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(descs
            .into_iter()
            .flatten()
            .filter(|d| artifact_type.is_none() || d.artifact_type.as_deref() == artifact_type)
            .collect())
    }
}
