//! Retention: tags beyond the newest N are removed, then manifests no remaining tag reaches once
//! they are old enough.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::{GcOptions, GcReport, RetentionRule};
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest;
use crate::registry::Registry;
use crate::types::{Digest, Reference, RepoName, Tag};

/// A tag: its name, when it was last pushed, and the manifest it names.
type TagEntry = (String, SystemTime, Digest);

impl Registry {
    /// Applies `rule` to `repo`. Returns the manifests it removed (or, in a dry run, would).
    pub(super) async fn apply_retention(
        &self,
        repo: &RepoName,
        rule: &RetentionRule,
        opts: &GcOptions,
        now: SystemTime,
        report: &mut GcReport,
    ) -> Result<HashSet<Digest>> {
        let tags = self.tags_by_age(repo).await?;
        let kept = self.untag_beyond(repo, rule, opts, &tags, report).await?;
        let Some(age) = rule.untagged_after else {
            return Ok(HashSet::new());
        };
        let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        let revisions = self.manifest_revisions(repo).await?;
        let reached = self.reached_from(&kept, &revisions).await?;
        let mut removed = HashSet::new();
        for (d, modified) in revisions {
            if reached.contains(&d) || modified >= cutoff {
                continue;
            }
            if !opts.dry_run && !self.delete_manifest_if_old(repo, &d, cutoff).await? {
                continue;
            }
            report.manifests.push(format!("{repo}@{d}"));
            removed.insert(d);
        }
        Ok(removed)
    }

    /// The repository's tags, newest first.
    async fn tags_by_age(&self, repo: &RepoName) -> Result<Vec<TagEntry>> {
        let tags_dir = layout::tags_dir(repo);
        let mut tags: Vec<TagEntry> = Vec::new();
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
        tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(tags)
    }

    /// Removes the tags beyond the rule's count (protected ones aside). Returns the manifests
    /// the kept tags name.
    async fn untag_beyond(
        &self,
        repo: &RepoName,
        rule: &RetentionRule,
        opts: &GcOptions,
        tags: &[TagEntry],
        report: &mut GcReport,
    ) -> Result<Vec<Digest>> {
        let mut kept = Vec::new();
        let mut counted = 0usize;
        for t in tags {
            let protected = rule.protect_tags.as_ref().is_some_and(|p| p.matches(&t.0));
            if protected {
                kept.push(t.2.clone());
                continue;
            }
            counted += 1;
            if rule.keep_tags.is_none_or(|n| counted <= n) {
                kept.push(t.2.clone());
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
        Ok(kept)
    }

    /// Everything `roots` reach among `revisions`: index children and referrers, transitively.
    async fn reached_from(
        &self,
        roots: &[Digest],
        revisions: &[(Digest, SystemTime)],
    ) -> Result<HashSet<Digest>> {
        let mut parsed: HashMap<Digest, Option<manifest::Parsed>> = HashMap::new();
        for (d, _) in revisions {
            parsed.insert(d.clone(), self.parsed_manifest(d).await?);
        }
        let mut referrers_of: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for (d, p) in &parsed {
            if let Some(s) = p.as_ref().and_then(|p| p.subject.clone()) {
                referrers_of.entry(s).or_default().push(d.clone());
            }
        }
        let mut reached: HashSet<Digest> = HashSet::new();
        let mut stack: Vec<Digest> = roots.to_vec();
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
        Ok(reached)
    }

    /// Deletes manifest `d` of `repo` if its link is still older than `cutoff`, under the
    /// exclusive GC lock. False when it was kept.
    async fn delete_manifest_if_old(
        &self,
        repo: &RepoName,
        d: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool> {
        let _gc = self.gc_lock.write().await;
        // A push of the same manifest since the listing refreshed its link: keep it.
        match self.backend().head(&layout::manifest_link(repo, d)).await {
            Ok(m) if m.modified < cutoff => {}
            Ok(_) => return Ok(false),
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        }
        match self
            .manifest_delete(repo, &Reference::Digest(d.clone()))
            .await
        {
            Ok(()) | Err(Error::ManifestUnknown(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }
}
