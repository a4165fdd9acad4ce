//! Referrers: the descriptors of the manifests whose `subject` is a given manifest, in pages.

use futures::{StreamExt, TryStreamExt};

use super::Store;
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::Descriptor;
use crate::types::{Digest, RepoName};

/// Most bytes of descriptors one referrers page carries, so that a subject with many large
/// annotations cannot make one huge response (clients such as containerd refuse index bodies
/// over about 4 MiB).
pub const REFERRERS_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// One page of a subject's referrers.
#[derive(Debug, Clone, Default)]
pub struct ReferrersPage {
    /// The descriptors, ordered by digest.
    pub descriptors: Vec<Descriptor>,
    /// More referrers follow the last one of this page.
    pub more: bool,
}

impl Store {
    /// A page of the descriptors of the manifests in `repo` whose subject is `subject`
    /// (optionally only those of `artifact_type`), ordered by digest: at most `n` of them after
    /// the digest `last`, and no more than [`REFERRERS_PAGE_BYTES`] of JSON (a page always holds
    /// at least one descriptor when any is left).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        n: usize,
        last: Option<&Digest>,
    ) -> Result<ReferrersPage> {
        if n == 0 {
            return Ok(ReferrersPage::default());
        }
        let after = last.map(layout::referrer_name);
        let names: Vec<String> = self
            .backend
            .list_dir(&layout::referrers_dir(repo, subject))
            .await?
            .into_iter()
            .filter(|name| after.as_ref().is_none_or(|a| name > a))
            .collect();
        let mut descs = futures::stream::iter(names)
            .map(|name| {
                let key = layout::referrer_named(repo, subject, &name);
                async move {
                    match self.backend.get_bytes(&key).await {
                        Ok(raw) => serde_json::from_slice::<Descriptor>(&raw)
                            .map(|d| Some((d, raw.len())))
                            .map_err(|e| Error::Corrupt(format!("referrer {key}: {e}"))),
                        Err(e) if e.is_not_found() => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(16)
            .try_filter_map(|d| async move {
                Ok(d.filter(|(d, _)| {
                    artifact_type.is_none()
                        || d.artifact_type()
                            .as_ref()
                            .map(ToString::to_string)
                            .as_deref()
                            == artifact_type
                }))
            })
            .boxed();
        let mut page = ReferrersPage::default();
        let mut bytes = 0;
        // One matching descriptor past the page is read, so `more` never points at an empty page.
        while let Some((d, len)) = descs.try_next().await? {
            let full = page.descriptors.len() >= n
                || !page.descriptors.is_empty() && bytes + len > REFERRERS_PAGE_BYTES;
            if full {
                page.more = true;
                break;
            }
            bytes += len;
            page.descriptors.push(d);
        }
        Ok(page)
    }
}
