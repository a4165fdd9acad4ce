//! Online garbage collection, retention and consistency checks. Runs while the registry serves.
//!
//! # What is removed
//! 1. Retention (optional, per repository pattern): tags beyond the newest N (by when they were
//!    last pushed) unless protected by a pattern, then manifests that no remaining tag reaches
//!    (directly, as an index child, or as a referrer of something reached) and that are older than
//!    a given age.
//! 2. Layer links that no manifest of their repository references and that are older than the
//!    grace period (a client uploads layers before the manifest that names them; the grace period
//!    covers that window).
//! 3. Blobs that no manifest in any repository references, that no repository link holds, and
//!    that are older than the grace period.
//! 4. Upload sessions untouched for longer than their maximum age.
//!
//! # Why it is safe while pushes go on
//! Every write that creates a reference (manifest push, mount, upload commit) first refreshes the
//! modification time of what it references, then writes its link, holding the registry's
//! `gc_lock` shared from the refresh to the link. The collector deletes each candidate holding the
//! lock exclusively, after checking again that the candidate is still older than the grace period.
//! So either the collector deletes first and the writer's refresh finds nothing (the push fails
//! cleanly with MANIFEST_BLOB_UNKNOWN and the client uploads again), or the writer refreshes first
//! and the collector sees a young object and keeps it. Across several processes the lock does not
//! reach: run the collector in one process, and keep the grace period far above the time a push
//! takes (the default is an hour).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::Hasher;
use crate::layout;
use crate::manifest;
use crate::registry::Registry;
use crate::sparse::may_be_missing;
use crate::types::{Digest, Reference, RepoName, Tag};

/// Parses a duration such as `90`, `90s`, `15m`, `24h` or `7d`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| Duration::from_secs(n.saturating_mul(mult)))
        .map_err(|_| format!("{s:?} is not a duration (examples: 90s, 15m, 24h, 7d)"))
}

pub use crate::pattern::Pattern;

/// A retention rule for the repositories matching `repositories`.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    /// Which repositories the rule governs.
    pub repositories: Pattern,
    /// Keep this many of the most recently pushed tags; older ones are removed.
    pub keep_tags: Option<usize>,
    /// Tags matching this pattern are always kept (and do not count against `keep_tags`).
    pub protect_tags: Option<Pattern>,
    /// Remove manifests no tag reaches once they are older than this.
    pub untagged_after: Option<Duration>,
}

/// What a collection does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Objects younger than this are never removed.
    pub grace: Duration,
    /// Upload sessions untouched for longer than this are purged.
    pub upload_max_age: Duration,
    /// Retention rules; the first rule matching a repository applies.
    pub retention: Vec<RetentionRule>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace: Duration::from_secs(3600),
            upload_max_age: Duration::from_secs(24 * 3600),
            retention: Vec::new(),
        }
    }
}

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Tags removed by retention, as `repo:tag`.
    pub tags: Vec<String>,
    /// Manifests removed by retention, as `repo@digest`.
    pub manifests: Vec<String>,
    /// Layer links removed, as `repo@digest`.
    pub layer_links: Vec<String>,
    /// Blobs removed, with their sizes.
    pub blobs: Vec<(String, u64)>,
    /// Bytes freed by removed blobs.
    pub bytes_freed: u64,
    /// Blobs kept.
    pub blobs_kept: u64,
    /// Upload sessions purged.
    pub uploads: Vec<String>,
}

fn digest_from_blob_key(key: &str) -> Option<Digest> {
    let rest = key.strip_prefix("blobs/")?;
    let mut parts = rest.split('/');
    let (alg, _, hex) = (parts.next()?, parts.next()?, parts.next()?);
    format!("{alg}:{hex}").parse().ok()
}

fn digest_from_link(dir: &str, key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(dir)?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

impl Registry {
    /// Names of every repository in the catalog.
    pub async fn repositories(&self) -> Result<Vec<RepoName>> {
        Ok(self
            .catalog(None, None)
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// Manifest revisions of a repository with their link's modification time.
    async fn manifest_revisions(&self, repo: &RepoName) -> Result<Vec<(Digest, SystemTime)>> {
        let dir = format!("{}_manifests/", layout::repo(repo));
        Ok(self
            .backend()
            .list(&dir)
            .await?
            .into_iter()
            .filter_map(|m| digest_from_link(&dir, &m.key).map(|d| (d, m.modified)))
            .collect())
    }

    /// The parsed content of a stored manifest, or None when it is missing or unreadable.
    async fn parsed_manifest(&self, digest: &Digest) -> Result<Option<manifest::Parsed>> {
        match self.backend().get_bytes(&layout::blob(digest)).await {
            Ok(b) => Ok(manifest::parse(&b, None).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key` if it is still older than `cutoff`, under the exclusive GC lock.
    async fn delete_if_old(&self, key: &str, cutoff: SystemTime) -> Result<bool> {
        let _gc = self.gc_lock.write().await;
        match self.backend().head(key).await {
            Ok(m) if m.modified < cutoff => {
                self.backend().delete(key).await?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn apply_retention(
        &self,
        repo: &RepoName,
        rule: &RetentionRule,
        opts: &GcOptions,
        now: SystemTime,
        report: &mut GcReport,
    ) -> Result<HashSet<Digest>> {
        let mut removed = HashSet::new();
        let tags_dir = layout::tags_dir(repo);
        let mut tags: Vec<(String, SystemTime, Digest)> = Vec::new();
        for m in self.backend().list(&tags_dir).await? {
            let Some(name) = m.key.strip_prefix(&tags_dir) else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            if let Ok(raw) = self.backend().get_bytes(&m.key).await {
                if let Some(d) = std::str::from_utf8(&raw).ok().and_then(|s| s.parse().ok()) {
                    tags.push((name.to_owned(), m.modified, d));
                }
            }
        }
        // Newest first.
        tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut kept: Vec<&(String, SystemTime, Digest)> = Vec::new();
        let mut counted = 0usize;
        for t in &tags {
            let protected = rule.protect_tags.as_ref().is_some_and(|p| p.matches(&t.0));
            if protected {
                kept.push(t);
                continue;
            }
            counted += 1;
            if rule.keep_tags.is_none_or(|n| counted <= n) {
                kept.push(t);
                continue;
            }
            report.tags.push(format!("{repo}:{}", t.0));
            if !opts.dry_run {
                let tag: Tag = t.0.parse()?;
                match self.manifest_delete(repo, &Reference::Tag(tag)).await {
                    Ok(()) | Err(Error::ManifestUnknown(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let Some(age) = rule.untagged_after else {
            return Ok(removed);
        };
        // Everything the kept tags reach: index children and referrers, transitively.
        let revisions = self.manifest_revisions(repo).await?;
        let mut parsed: HashMap<Digest, Option<manifest::Parsed>> = HashMap::new();
        for (d, _) in &revisions {
            parsed.insert(d.clone(), self.parsed_manifest(d).await?);
        }
        let mut referrers_of: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for (d, p) in &parsed {
            if let Some(s) = p.as_ref().and_then(|p| p.subject.clone()) {
                referrers_of.entry(s).or_default().push(d.clone());
            }
        }
        let mut reached: HashSet<Digest> = HashSet::new();
        let mut stack: Vec<Digest> = kept.iter().map(|t| t.2.clone()).collect();
        while let Some(d) = stack.pop() {
            if !reached.insert(d.clone()) {
                continue;
            }
            if let Some(Some(p)) = parsed.get(&d) {
                if p.kind == manifest::Kind::Index {
                    stack.extend(p.refs.iter().map(|r| r.digest.clone()));
                }
            }
            if let Some(rs) = referrers_of.get(&d) {
                stack.extend(rs.iter().cloned());
            }
        }
        let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        for (d, modified) in revisions {
            if reached.contains(&d) || modified >= cutoff {
                continue;
            }
            if !opts.dry_run {
                let _gc = self.gc_lock.write().await;
                // A push of the same manifest since the listing refreshed its link: keep it.
                match self.backend().head(&layout::manifest_link(repo, &d)).await {
                    Ok(m) if m.modified < cutoff => {}
                    Ok(_) => continue,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                }
                match self
                    .manifest_delete(repo, &Reference::Digest(d.clone()))
                    .await
                {
                    Ok(()) | Err(Error::ManifestUnknown(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            report.manifests.push(format!("{repo}@{d}"));
            removed.insert(d);
        }
        Ok(removed)
    }

    /// Runs one collection. See the module documentation for what it removes and why that is
    /// safe while the registry serves.
    pub async fn collect_garbage(&self, opts: &GcOptions) -> Result<GcReport> {
        let now = SystemTime::now();
        let cutoff = now
            .checked_sub(opts.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = GcReport::default();
        let mut marked: HashSet<Digest> = HashSet::new();

        for repo in self.repositories().await? {
            let mut removed = HashSet::new();
            if let Some(rule) = opts
                .retention
                .iter()
                .find(|r| r.repositories.matches(repo.as_str()))
            {
                removed = self
                    .apply_retention(&repo, rule, opts, now, &mut report)
                    .await?;
            }
            // Mark what the repository's manifests reference.
            let mut referenced: HashSet<Digest> = HashSet::new();
            for (d, _) in self.manifest_revisions(&repo).await? {
                if removed.contains(&d) {
                    continue;
                }
                if let Some(p) = self.parsed_manifest(&d).await? {
                    referenced.extend(p.refs.into_iter().map(|r| r.digest));
                }
                marked.insert(d);
            }
            // Layer links: kept (and their blobs marked) while referenced or young.
            let dir = format!("{}_layers/", layout::repo(&repo));
            for m in self.backend().list(&dir).await? {
                let Some(d) = digest_from_link(&dir, &m.key) else {
                    continue;
                };
                if referenced.contains(&d) || m.modified >= cutoff {
                    marked.insert(d);
                    continue;
                }
                report.layer_links.push(format!("{repo}@{d}"));
                if !opts.dry_run && !self.delete_if_old(&m.key, cutoff).await? {
                    marked.insert(d);
                }
            }
            marked.extend(referenced);
        }

        for m in self.backend().list("blobs/").await? {
            let Some(d) = digest_from_blob_key(&m.key) else {
                continue;
            };
            if marked.contains(&d) || m.modified >= cutoff {
                report.blobs_kept += 1;
                continue;
            }
            if opts.dry_run || self.delete_if_old(&m.key, cutoff).await? {
                report.blobs.push((d.to_string(), m.size));
                report.bytes_freed += m.size;
            } else {
                report.blobs_kept += 1;
            }
        }

        let upload_cutoff = now
            .checked_sub(opts.upload_max_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (id, modified) in self.backend().stage_list().await? {
            if modified < upload_cutoff {
                report.uploads.push(id.clone());
                if !opts.dry_run {
                    self.backend().stage_delete(&id).await?;
                }
            }
        }
        Ok(report)
    }

    /// Checks every stored blob against its digest and every manifest, tag and referrer entry
    /// against what it points to. With `quarantine`, damaged blobs are moved to `quarantine/`.
    pub async fn fsck(&self, quarantine: bool) -> Result<FsckReport> {
        let mut r = FsckReport::default();
        let mut present: BTreeSet<Digest> = BTreeSet::new();
        for m in self.backend().list("blobs/").await? {
            let Some(d) = digest_from_blob_key(&m.key) else {
                r.problems.push(format!("unexpected object {}", m.key));
                continue;
            };
            r.blobs_checked += 1;
            let mut h = Hasher::new(d.algorithm());
            let mut s = self.backend().get(&m.key, None).await?.stream;
            while let Some(chunk) = s
                .try_next()
                .await
                .map_err(|e| Error::backend(format!("read {}", m.key), e))?
            {
                h.update(&chunk);
            }
            let actual = h.finish();
            if actual != d {
                r.problems
                    .push(format!("blob {d} is damaged: its bytes hash to {actual}"));
                if quarantine {
                    self.quarantine(&m.key, &d).await?;
                    r.quarantined.push(d.to_string());
                }
                continue;
            }
            present.insert(d);
        }
        for repo in self.repositories().await? {
            let layers_dir = format!("{}_layers/", layout::repo(&repo));
            let layers: HashSet<Digest> = self
                .backend()
                .list(&layers_dir)
                .await?
                .iter()
                .filter_map(|m| digest_from_link(&layers_dir, &m.key))
                .collect();
            let revisions: HashSet<Digest> = self
                .manifest_revisions(&repo)
                .await?
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            for d in &layers {
                if !present.contains(d) {
                    r.problems
                        .push(format!("{repo}: layer link {d} points at a missing blob"));
                }
            }
            for d in &revisions {
                r.manifests_checked += 1;
                if !present.contains(d) {
                    r.problems
                        .push(format!("{repo}: manifest {d} has no (intact) bytes"));
                    continue;
                }
                let Some(p) = self.parsed_manifest(d).await? else {
                    r.problems
                        .push(format!("{repo}: manifest {d} does not parse"));
                    continue;
                };
                for rf in p.refs {
                    let linked = layers.contains(&rf.digest) || revisions.contains(&rf.digest);
                    if !linked && may_be_missing(&self.options().sparse, &repo, rf.role) {
                        continue;
                    }
                    if !linked || !present.contains(&rf.digest) {
                        r.problems.push(format!(
                            "{repo}: manifest {d} references {}, which is missing",
                            rf.digest
                        ));
                    }
                }
            }
            let tags_dir = layout::tags_dir(&repo);
            for name in self.backend().list_dir(&tags_dir).await? {
                let raw = self
                    .backend()
                    .get_bytes(&format!("{tags_dir}{name}"))
                    .await?;
                match std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.parse::<Digest>().ok())
                {
                    Some(d) if revisions.contains(&d) => {}
                    Some(d) => r
                        .problems
                        .push(format!("{repo}:{name} points at missing manifest {d}")),
                    None => r.problems.push(format!("{repo}:{name} is unreadable")),
                }
            }
        }
        Ok(r)
    }

    async fn quarantine(&self, key: &str, d: &Digest) -> Result<()> {
        let id = format!("quarantine-{}", uuid::Uuid::new_v4().simple());
        let src = self.backend().get(key, None).await?;
        let len = self.backend().stage_append(&id, 0, src.stream).await?;
        self.backend()
            .stage_commit(
                &id,
                len,
                &format!("quarantine/{}/{}", d.algorithm(), d.hex()),
            )
            .await?;
        self.backend().delete(key).await
    }
}

/// What `fsck` found.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    /// Blobs hashed.
    pub blobs_checked: u64,
    /// Manifest revisions checked.
    pub manifests_checked: u64,
    /// Everything found wrong, one line each.
    pub problems: Vec<String>,
    /// Blobs moved to `quarantine/`.
    pub quarantined: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604800)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn keys() {
        let h = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(
            digest_from_blob_key(&format!("blobs/sha256/9f/{h}"))
                .unwrap()
                .to_string(),
            format!("sha256:{h}")
        );
        assert!(digest_from_blob_key("blobs/sha256/9f").is_none());
        assert_eq!(
            digest_from_link("r/_layers/", &format!("r/_layers/sha256/{h}"))
                .unwrap()
                .hex(),
            h
        );
    }
}

#[cfg(test)]
mod collect_tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::StreamExt;

    use super::*;
    use crate::fs::FsBackend;
    use crate::hash::digest_of;
    use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
    use crate::types::Algorithm;
    use crate::Options;

    fn registry(dir: &std::path::Path) -> Registry {
        Registry::new(
            Arc::new(FsBackend::new(dir, false).unwrap()),
            Options::default(),
        )
    }

    async fn blob(reg: &Registry, repo: &RepoName, data: &[u8]) -> Digest {
        let d = digest_of(Algorithm::Sha256, data);
        let body = futures::stream::iter(vec![Ok(Bytes::copy_from_slice(data))]).boxed();
        reg.blob_put(repo, &d, None, body).await.unwrap();
        d
    }

    async fn image(reg: &Registry, repo: &RepoName, tag: Option<&str>, layer: &[u8]) -> Digest {
        let config = blob(reg, repo, b"{}").await;
        let l = blob(reg, repo, layer).await;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{l}","size":{}}}]}}"#,
            layer.len()
        );
        let d = digest_of(Algorithm::Sha256, m.as_bytes());
        let r = match tag {
            Some(t) => Reference::Tag(t.parse().unwrap()),
            None => Reference::Digest(d.clone()),
        };
        reg.manifest_put(repo, &r, None, Bytes::from(m), &[])
            .await
            .unwrap();
        d
    }

    fn now_opts() -> GcOptions {
        GcOptions {
            grace: Duration::ZERO,
            ..GcOptions::default()
        }
    }

    #[tokio::test]
    async fn removes_only_what_nothing_references() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let repo: RepoName = "app".parse().unwrap();
        let kept = image(&reg, &repo, Some("v1"), b"kept layer").await;
        let gone = image(&reg, &repo, Some("v2"), b"gone layer").await;
        let stray = blob(&reg, &repo, b"stray upload").await;
        reg.manifest_delete(&repo, &Reference::Digest(gone.clone()))
            .await
            .unwrap();

        // Within the grace period nothing goes.
        let r = reg.collect_garbage(&GcOptions::default()).await.unwrap();
        assert!(r.blobs.is_empty() && r.layer_links.is_empty());

        let dry = reg
            .collect_garbage(&GcOptions {
                dry_run: true,
                ..now_opts()
            })
            .await
            .unwrap();
        let r = reg.collect_garbage(&now_opts()).await.unwrap();
        assert_eq!(
            dry.blobs, r.blobs,
            "a dry run lists exactly what a run removes"
        );
        let removed: HashSet<String> = r.blobs.iter().map(|b| b.0.clone()).collect();
        let gone_layer = digest_of(Algorithm::Sha256, b"gone layer").to_string();
        assert!(removed.contains(&gone.to_string()));
        assert!(removed.contains(&gone_layer));
        assert!(removed.contains(&stray.to_string()));
        assert_eq!(removed.len(), 3, "{removed:?}");
        // The tagged image is whole.
        let (_, bytes) = reg
            .manifest_get(&repo, &Reference::Tag("v1".parse().unwrap()))
            .await
            .unwrap();
        for rf in manifest::parse(&bytes, None).unwrap().refs {
            reg.blob_size(&repo, &rf.digest).await.unwrap();
        }
        assert_eq!(
            reg.manifest_info(&repo, &Reference::Digest(kept))
                .await
                .unwrap()
                .size as usize,
            bytes.len()
        );
        assert!(reg.fsck(false).await.unwrap().problems.is_empty());
    }

    #[tokio::test]
    async fn retention_keeps_newest_tags_and_what_they_reach() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let repo: RepoName = "builds/app".parse().unwrap();
        let old = image(&reg, &repo, Some("old"), b"1").await;
        let child = image(&reg, &repo, None, b"2").await;
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":1}}]}}"#
        );
        reg.manifest_put(
            &repo,
            &Reference::Tag("new".parse().unwrap()),
            None,
            Bytes::from(index),
            &[],
        )
        .await
        .unwrap();
        let _release = image(&reg, &repo, Some("release-1"), b"3").await;
        let orphan = image(&reg, &repo, None, b"4").await;
        let opts = GcOptions {
            retention: vec![RetentionRule {
                repositories: Pattern::new("builds/**"),
                keep_tags: Some(1),
                protect_tags: Some(Pattern::new("release-*")),
                untagged_after: Some(Duration::ZERO),
            }],
            ..now_opts()
        };
        let r = reg.collect_garbage(&opts).await.unwrap();
        assert_eq!(r.tags, vec!["builds/app:old".to_string()]);
        let mut removed = r.manifests.clone();
        removed.sort();
        let mut want = vec![format!("builds/app@{old}"), format!("builds/app@{orphan}")];
        want.sort();
        assert_eq!(removed, want);
        let page = reg.tags(&repo, None, None).await.unwrap();
        assert_eq!(page.items, vec!["new".to_string(), "release-1".to_string()]);
        // The index child is reached through the kept tag and stays.
        reg.manifest_get(&repo, &Reference::Digest(child))
            .await
            .unwrap();
        assert!(reg.fsck(false).await.unwrap().problems.is_empty());
    }

    #[tokio::test]
    async fn fsck_finds_and_quarantines_damage() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let repo: RepoName = "app".parse().unwrap();
        image(&reg, &repo, Some("v1"), b"layer bytes").await;
        let layer = digest_of(Algorithm::Sha256, b"layer bytes");
        let path = dir.path().join(layout::blob(&layer));
        std::fs::write(&path, b"bit rot").unwrap();
        let r = reg.fsck(true).await.unwrap();
        assert_eq!(r.quarantined, vec![layer.to_string()]);
        assert!(r.problems.iter().any(|p| p.contains("damaged")));
        assert!(!path.exists());
        assert!(dir
            .path()
            .join(format!("quarantine/sha256/{}", layer.hex()))
            .exists());
        let again = reg.fsck(false).await.unwrap();
        assert!(
            again.problems.iter().any(|p| p.contains("missing")),
            "{:?}",
            again.problems
        );
    }
}
