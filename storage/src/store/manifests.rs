//! Manifests: resolving references, reading, pushing (after checking what they reference) and
//! deleting.

use crate::sparse::may_be_missing;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ManifestInfo, PushedManifest, Store};
use crate::error::{Error, Result};
use crate::hash::digest_of;
use crate::layout;
use crate::manifest;
use crate::types::{Algorithm, Digest, Reference, RepoName, Tag};

/// A repository's link to a manifest revision.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestLink {
    media_type: String,
    size: u64,
}

/// The digest of a pushed manifest: checked against the reference when that is a digest.
fn pushed_digest(reference: &Reference, body: &[u8]) -> Result<Digest> {
    match reference {
        Reference::Digest(d) => {
            let actual = digest_of(d.algorithm(), body);
            if &actual != d {
                return Err(Error::DigestMismatch {
                    expected: d.clone(),
                    actual,
                });
            }
            Ok(actual)
        }
        Reference::Tag(_) => Ok(digest_of(Algorithm::Sha256, body)),
    }
}

impl Store {
    async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => match self.backend.get_bytes(&layout::tag(repo, t)).await {
                Ok(raw) => std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| Error::Corrupt(format!("tag {repo}:{t}"))),
                Err(e) if e.is_not_found() => Err(Error::ManifestUnknown(t.to_string())),
                Err(e) => Err(e),
            },
        }
    }

    async fn manifest_link(&self, repo: &RepoName, digest: &Digest) -> Result<ManifestInfo> {
        let raw = match self
            .backend
            .get_bytes(&layout::manifest_link(repo, digest))
            .await
        {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Err(Error::ManifestUnknown(digest.to_string())),
            Err(e) => return Err(e),
        };
        let link: ManifestLink = serde_json::from_slice(&raw)
            .map_err(|e| Error::Corrupt(format!("manifest link {repo}@{digest}: {e}")))?;
        Ok(ManifestInfo {
            digest: digest.clone(),
            media_type: link.media_type,
            size: link.size,
        })
    }

    /// Metadata of a manifest by tag or digest (for HEAD).
    pub async fn manifest_info(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestInfo> {
        let digest = self.resolve(repo, reference).await?;
        self.manifest_link(repo, &digest).await
    }

    /// A manifest's metadata and exact bytes.
    pub async fn manifest_get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(ManifestInfo, Bytes)> {
        let info = self.manifest_info(repo, reference).await?;
        let bytes = match self.backend.get_bytes(&layout::blob(&info.digest)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(Error::ManifestUnknown(info.digest.to_string()))
            }
            Err(e) => return Err(e),
        };
        Ok((info, bytes))
    }

    /// Checks that a manifest's reference is in the repository by refreshing its link and its
    /// bytes: the refreshed times keep a concurrent garbage collection from removing them (the
    /// caller holds `gc_lock` shared).
    async fn ref_hold(&self, repo: &RepoName, r: &manifest::Ref) -> Result<bool> {
        let (first, second) = if r.role == manifest::Role::Child {
            (
                layout::manifest_link(repo, &r.digest),
                layout::layer_link(repo, &r.digest),
            )
        } else {
            (
                layout::layer_link(repo, &r.digest),
                layout::manifest_link(repo, &r.digest),
            )
        };
        let linked = self.refresh(&first).await? || self.refresh(&second).await?;
        Ok(linked && self.refresh(&layout::blob(&r.digest)).await?)
    }

    /// Stores a manifest under `reference` (and the extra `tags`), after checking that everything
    /// it references is in the repository.
    pub async fn manifest_put(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        tags: &[Tag],
    ) -> Result<PushedManifest> {
        if body.len() > self.opts.max_manifest_size {
            return Err(Error::ManifestTooLarge {
                size: body.len(),
                limit: self.opts.max_manifest_size,
            });
        }
        let digest = pushed_digest(reference, &body)?;
        let parsed = manifest::parse(&body, content_type)?;
        let _gc = self.gc_lock.read().await;
        let checks = futures::future::try_join_all(
            parsed
                .refs
                .iter()
                .map(|r| async move { Ok::<_, Error>((r, self.ref_hold(repo, r).await?)) }),
        )
        .await?;
        if let Some((missing, _)) = checks
            .into_iter()
            .find(|(r, ok)| !ok && !may_be_missing(&self.opts.sparse, repo, r.role))
        {
            return Err(Error::ManifestBlobUnknown(missing.digest.clone()));
        }

        let mut all_tags: Vec<&Tag> = tags.iter().collect();
        if let Reference::Tag(t) = reference {
            all_tags.push(t);
        }
        let event = crate::outbox::Change::ManifestPush {
            repo,
            digest: &digest,
            media_type: &parsed.media_type,
            size: body.len() as u64,
            tags: &all_tags,
        };
        self.evented(event, async {
            let blob_key = layout::blob(&digest);
            if !self.refresh(&blob_key).await? {
                self.backend.put(&blob_key, body.clone()).await?;
            }
            let link = ManifestLink {
                media_type: parsed.media_type.clone(),
                size: body.len() as u64,
            };
            self.backend
                .put(
                    &layout::manifest_link(repo, &digest),
                    Bytes::from(serde_json::to_vec(&link).expect("link serialises")),
                )
                .await?;
            if let Some(subject) = &parsed.subject {
                let desc = manifest::referrer_descriptor(&parsed, &digest, body.len() as u64);
                self.backend
                    .put(
                        &layout::referrer(repo, subject, &digest),
                        Bytes::from(serde_json::to_vec(&desc).expect("descriptor serialises")),
                    )
                    .await?;
            }
            for t in &all_tags {
                self.backend
                    .put(&layout::tag(repo, t), Bytes::from(digest.to_string()))
                    .await?;
            }
            self.ensure_catalog(repo).await
        })
        .await?;
        Ok(PushedManifest {
            digest,
            subject: parsed.subject,
        })
    }

    /// Deletes a tag (untag), or a manifest by digest together with its tags and referrer entry.
    pub async fn manifest_delete(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        match reference {
            Reference::Tag(t) => {
                let key = layout::tag(repo, t);
                if !self.backend.exists(&key).await? {
                    return Err(Error::ManifestUnknown(t.to_string()));
                }
                let event = crate::outbox::Change::TagDelete { repo, tag: t };
                self.evented(event, self.backend.delete(&key)).await
            }
            Reference::Digest(d) => {
                let (_, bytes) = self.manifest_get(repo, reference).await?;
                let event = crate::outbox::Change::ManifestDelete { repo, digest: d };
                self.evented(event, async {
                    let target = d.to_string();
                    for name in self.backend.list_dir(&layout::tags_dir(repo)).await? {
                        let key = layout::tag_named(repo, &name);
                        match self.backend.get_bytes(&key).await {
                            Ok(v) if v.as_ref() == target.as_bytes() => {
                                self.backend.delete(&key).await?
                            }
                            Ok(_) => {}
                            Err(e) if e.is_not_found() => {}
                            Err(e) => return Err(e),
                        }
                    }
                    if let Ok(parsed) = manifest::parse(&bytes, None) {
                        if let Some(subject) = parsed.subject {
                            self.backend
                                .delete(&layout::referrer(repo, &subject, d))
                                .await?;
                        }
                    }
                    self.backend.delete(&layout::manifest_link(repo, d)).await
                })
                .await
            }
        }
    }
}
