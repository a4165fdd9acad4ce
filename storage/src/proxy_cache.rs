//! What a pull-through cache keeps beside the content it caches: when each cached tag was last
//! checked upstream, when each cached object was last pulled (for least-recently-pulled
//! eviction), and which repositories are caches. The proxy itself lives in the `proxy` crate; this
//! module holds only the writes that need the registry's internals; the keys are built in
//! [`crate::layout`].
//!
//! ```text
//! proxy/repos/<name>                     marker: <name> is a cache of an upstream repository
//! proxy/tags/<name>/<tag>                JSON {digest, checked}: the tag as last seen upstream
//! proxy/pulled/<name>/<alg>-<hex>        empty; its modification time is the last pull
//! ```
//!
//! [`Store::cache_evict`] keeps the cache under a size limit, least recently pulled first.
//!
//! A cached manifest is stored without checking that the blobs it references are present: a
//! cache holds only what clients pulled (a multi-platform index with one platform's image is
//! normal, a "sparse" index).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layout;
use crate::store::Store;
use crate::types::{Digest, RepoName, Tag};

/// What the cache knows of a tag upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The digest the tag pointed at when last checked.
    pub digest: String,
    /// When the upstream was last asked (seconds since the Unix epoch).
    pub checked: u64,
}

impl TagRecord {
    /// A record of the upstream naming `digest` now.
    pub fn checked_now(digest: &Digest) -> TagRecord {
        TagRecord {
            digest: digest.to_string(),
            checked: now_secs(),
        }
    }

    /// Time since the upstream was last asked.
    pub fn age(&self) -> Duration {
        Duration::from_secs(now_secs().saturating_sub(self.checked))
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Marks `name` as a cache repository (idempotent).
    pub async fn cache_mark_repo(&self, name: &RepoName) -> Result<()> {
        let key = layout::proxy_repo_marker(name);
        match self.backend().head(&key).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => self.backend().put(&key, Bytes::new()).await,
            Err(e) => Err(e),
        }
    }

    /// Stores a manifest fetched from upstream, already verified against `digest`, under the
    /// cache repository `name` (and `tag`, when given). Unlike a push, the content it references
    /// need not be present.
    pub async fn cache_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        media_type: &str,
        body: Bytes,
        tag: Option<&Tag>,
    ) -> Result<()> {
        self.cache_mark_repo(name).await?;
        let _gc = self.gc_lock.read().await;
        let blob = layout::blob(digest);
        match self.backend().touch(&blob).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => self.backend().put(&blob, body.clone()).await?,
            Err(e) => return Err(e),
        }
        let link = serde_json::json!({ "mediaType": media_type, "size": body.len() });
        self.backend()
            .put(
                &layout::manifest_link(name, digest),
                Bytes::from(link.to_string()),
            )
            .await?;
        if let Some(t) = tag {
            self.backend()
                .put(&layout::tag(name, t), Bytes::from(digest.to_string()))
                .await?;
        }
        let marker = layout::catalog_marker(name);
        if self.backend().head(&marker).await.is_err() {
            self.backend().put(&marker, Bytes::new()).await?;
        }
        Ok(())
    }

    /// The upstream record of a cached tag, if any.
    pub async fn cache_tag_record(&self, name: &RepoName, tag: &Tag) -> Result<Option<TagRecord>> {
        match self
            .backend()
            .get_bytes(&layout::proxy_tag(name, tag))
            .await
        {
            Ok(raw) => Ok(serde_json::from_slice(&raw).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the upstream record of a cached tag.
    pub async fn cache_set_tag_record(
        &self,
        name: &RepoName,
        tag: &Tag,
        rec: &TagRecord,
    ) -> Result<()> {
        let raw = serde_json::to_vec(rec).expect("record serialises");
        self.backend()
            .put(&layout::proxy_tag(name, tag), Bytes::from(raw))
            .await
    }

    /// Records that `digest` was pulled from the cache repository `name` now. Writes at most once
    /// per `resolution` per object (a pull-heavy mirror must not write on every pull).
    pub async fn cache_touch_pulled(
        &self,
        name: &RepoName,
        digest: &Digest,
        resolution: Duration,
    ) -> Result<()> {
        let key = layout::proxy_pulled(name, digest);
        match self.backend().head(&key).await {
            Ok(m) if m.modified.elapsed().unwrap_or_default() < resolution => Ok(()),
            Ok(_) => self.backend().touch(&key).await,
            Err(e) if e.is_not_found() => self.backend().put(&key, Bytes::new()).await,
            Err(e) => Err(e),
        }
    }
}

/// What an eviction removed (or would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictReport {
    /// Bytes of the content cache repositories hold, before eviction.
    pub cached_bytes: u64,
    /// Bytes evicted (their blobs are removed by the garbage collection that follows, once no
    /// other repository holds them).
    pub evicted_bytes: u64,
    /// What was evicted, as `repository@digest`, least recently pulled first.
    pub evicted: Vec<String>,
}

/// Bytes per distinct blob, and how many cache links hold each.
type HeldSizes = (
    std::collections::HashMap<Digest, u64>,
    std::collections::HashMap<Digest, usize>,
);

/// One object a cache repository holds.
struct Held {
    repo: RepoName,
    digest: Digest,
    manifest: bool,
    pulled: std::time::SystemTime,
}

impl Store {
    /// Least-recently-pulled eviction: while the blobs that cache repositories hold take more
    /// than `limit` bytes, removes the cache repositories' links (manifests with their tags,
    /// layers) of the objects pulled longest ago. Touches only repositories marked as caches,
    /// never the build registry's own. Run it before a garbage collection, which then removes
    /// the blobs nothing holds any more.
    pub async fn cache_evict(&self, limit: u64, dry_run: bool) -> Result<EvictReport> {
        let mut held = self.cache_held().await?;
        let (size, mut holders) = self.held_sizes(&held).await?;
        let mut report = EvictReport {
            cached_bytes: size.values().sum(),
            ..Default::default()
        };
        let mut total = report.cached_bytes;
        held.sort_by_key(|h| h.pulled);
        for h in held {
            if total <= limit {
                break;
            }
            if !dry_run {
                self.evict_held(&h).await?;
            }
            let left = holders.get_mut(&h.digest).expect("counted");
            *left -= 1;
            if *left == 0 {
                let n = size.get(&h.digest).copied().unwrap_or(0);
                total = total.saturating_sub(n);
                report.evicted_bytes += n;
            }
            report.evicted.push(format!("{}@{}", h.repo, h.digest));
        }
        Ok(report)
    }

    /// Every manifest and layer link of every repository, with when it was last pulled (the
    /// link's own time when no pull was recorded).
    async fn cache_held(&self) -> Result<Vec<Held>> {
        let mut held: Vec<Held> = Vec::new();
        for m in self.backend().list(layout::PROXY_REPOS).await? {
            let Some(repo) = m
                .key
                .strip_prefix(layout::PROXY_REPOS)
                .and_then(|n| n.parse::<RepoName>().ok())
            else {
                continue;
            };
            for (dir, manifest) in [
                (layout::manifests_dir(&repo), true),
                (layout::layers_dir(&repo), false),
            ] {
                for link in self.backend().list(&dir).await? {
                    let Some(digest) = layout::link_digest(&dir, &link.key) else {
                        continue;
                    };
                    let pulled = match self
                        .backend()
                        .head(&layout::proxy_pulled(&repo, &digest))
                        .await
                    {
                        Ok(p) => p.modified,
                        Err(e) if e.is_not_found() => link.modified,
                        Err(e) => return Err(e),
                    };
                    held.push(Held {
                        repo: repo.clone(),
                        digest,
                        manifest,
                        pulled,
                    });
                }
            }
        }
        Ok(held)
    }

    /// Bytes per distinct blob of `held`, and how many cache links hold each.
    async fn held_sizes(&self, held: &[Held]) -> Result<HeldSizes> {
        let (mut size, mut holders): HeldSizes = Default::default();
        for h in held {
            *holders.entry(h.digest.clone()).or_default() += 1;
            if !size.contains_key(&h.digest) {
                let n = match self.backend().head(&layout::blob(&h.digest)).await {
                    Ok(m) => m.size,
                    Err(e) if e.is_not_found() => 0,
                    Err(e) => return Err(e),
                };
                size.insert(h.digest.clone(), n);
            }
        }
        Ok((size, holders))
    }

    /// Removes one held object's link (a manifest with its tags, or a layer link) and its pull
    /// record.
    async fn evict_held(&self, h: &Held) -> Result<()> {
        if h.manifest {
            match self
                .manifest_delete(&h.repo, &crate::types::Reference::Digest(h.digest.clone()))
                .await
            {
                Ok(()) | Err(crate::error::Error::ManifestUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        } else {
            self.backend()
                .delete(&layout::layer_link(&h.repo, &h.digest))
                .await?;
        }
        self.backend()
            .delete(&layout::proxy_pulled(&h.repo, &h.digest))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fs::FsBackend;
    use crate::store::Options;
    use crate::types::Reference;

    /// A registry on a fresh folder, and the folder (removed when dropped).
    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::new(dir.path(), false).unwrap();
        (dir, Store::new(Arc::new(backend), Options::default()))
    }

    #[tokio::test]
    async fn a_cached_index_needs_none_of_its_children() {
        let (_dir, reg) = temp_store();
        let name: RepoName = "docker.io/library/alpine".parse().unwrap();
        let tag: Tag = "3.20".parse().unwrap();
        let body = Bytes::from_static(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}]}"#,
        );
        let digest = crate::hash::digest_of(crate::types::Algorithm::Sha256, &body);
        reg.cache_manifest(
            &name,
            &digest,
            crate::manifest::OCI_INDEX,
            body.clone(),
            Some(&tag),
        )
        .await
        .unwrap();
        let (info, got) = reg
            .manifest_get(&name, &Reference::Tag(tag.clone()))
            .await
            .unwrap();
        assert_eq!((info.digest, got), (digest.clone(), body));
        assert_eq!(info.media_type, crate::manifest::OCI_INDEX);

        assert_eq!(reg.cache_tag_record(&name, &tag).await.unwrap(), None);
        let rec = TagRecord {
            digest: digest.to_string(),
            checked: now_secs(),
        };
        reg.cache_set_tag_record(&name, &tag, &rec).await.unwrap();
        assert_eq!(reg.cache_tag_record(&name, &tag).await.unwrap(), Some(rec));

        reg.cache_touch_pulled(&name, &digest, Duration::from_secs(60))
            .await
            .unwrap();
        let m = reg
            .backend()
            .head(&layout::proxy_pulled(&name, &digest))
            .await
            .unwrap();
        assert_eq!(m.size, 0);
    }

    #[tokio::test]
    async fn eviction_takes_the_least_recently_pulled_cached_content_only() {
        let (_dir, reg) = temp_store();
        let blob = |n: u8| {
            let data = Bytes::from(vec![n; 1000]);
            (
                crate::hash::digest_of(crate::types::Algorithm::Sha256, &data),
                data,
            )
        };
        let put = |repo: RepoName, d: Digest, data: Bytes| {
            let reg = &reg;
            async move {
                let s = futures::stream::iter(vec![Ok(data.clone())]);
                reg.blob_put(&repo, &d, Some(data.len() as u64), Box::pin(s))
                    .await
                    .unwrap();
            }
        };
        let own: RepoName = "builds/app".parse().unwrap();
        let (old, new) = (
            "up.test/old".parse::<RepoName>().unwrap(),
            "up.test/new".parse::<RepoName>().unwrap(),
        );
        let (d1, b1) = blob(1);
        let (d2, b2) = blob(2);
        let (d3, b3) = blob(3);
        put(own.clone(), d3.clone(), b3).await;
        for (repo, d, b) in [(old.clone(), d1.clone(), b1), (new.clone(), d2.clone(), b2)] {
            reg.cache_mark_repo(&repo).await.unwrap();
            put(repo.clone(), d.clone(), b).await;
            reg.cache_touch_pulled(&repo, &d, Duration::ZERO)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = reg.cache_evict(1500, false).await.unwrap();
        assert_eq!(r.cached_bytes, 2000);
        assert_eq!(r.evicted, vec![format!("{old}@{d1}")]);
        assert!(reg.blob_size(&old, &d1).await.is_err(), "evicted");
        assert!(
            reg.blob_size(&new, &d2).await.is_ok(),
            "recently pulled: kept"
        );
        assert!(
            reg.blob_size(&own, &d3).await.is_ok(),
            "own repository: untouched"
        );
        let r = reg.cache_evict(0, false).await.unwrap();
        assert_eq!(r.evicted, vec![format!("{new}@{d2}")]);
        assert!(
            reg.blob_size(&own, &d3).await.is_ok(),
            "own repository: untouched"
        );
    }
}
