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

//!
//! # Layout
//! - [`retention`]: retention rules applied to one repository.
//! - [`fsck`]: the consistency check.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::Result;
use crate::layout;
use crate::manifest;
use crate::store::Store;
use crate::types::{Digest, RepoName};

pub mod fsck;
pub mod retention;
#[cfg(test)]
mod tests;

pub use fsck::FsckReport;

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

impl GcOptions {
    /// The default [`grace`](Self::grace): an hour.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
    /// The default [`upload_max_age`](Self::upload_max_age): a day.
    pub const DEFAULT_UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace: Self::DEFAULT_GRACE,
            upload_max_age: Self::DEFAULT_UPLOAD_MAX_AGE,
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

impl Store {
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
        let dir = layout::manifests_dir(repo);
        Ok(self
            .backend()
            .list(&dir)
            .await?
            .into_iter()
            .filter_map(|m| layout::link_digest(&dir, &m.key).map(|d| (d, m.modified)))
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
            self.mark_repository(&repo, &removed, opts, cutoff, &mut marked, &mut report)
                .await?;
        }
        self.sweep_blobs(&marked, opts, cutoff, &mut report).await?;
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

    /// Marks what the repository's manifests (except `removed`) reference and its young or
    /// referenced layer links; removes its other layer links.
    async fn mark_repository(
        &self,
        repo: &RepoName,
        removed: &HashSet<Digest>,
        opts: &GcOptions,
        cutoff: SystemTime,
        marked: &mut HashSet<Digest>,
        report: &mut GcReport,
    ) -> Result<()> {
        let mut referenced: HashSet<Digest> = HashSet::new();
        for (d, _) in self.manifest_revisions(repo).await? {
            if removed.contains(&d) {
                continue;
            }
            if let Some(p) = self.parsed_manifest(&d).await? {
                referenced.extend(p.refs.into_iter().map(|r| r.digest));
            }
            marked.insert(d);
        }
        // Layer links: kept (and their blobs marked) while referenced or young.
        let dir = layout::layers_dir(repo);
        for m in self.backend().list(&dir).await? {
            let Some(d) = layout::link_digest(&dir, &m.key) else {
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
        Ok(())
    }

    /// Removes the blobs nothing marked that are older than `cutoff`.
    async fn sweep_blobs(
        &self,
        marked: &HashSet<Digest>,
        opts: &GcOptions,
        cutoff: SystemTime,
        report: &mut GcReport,
    ) -> Result<()> {
        for m in self.backend().list(layout::BLOBS).await? {
            let Some(d) = layout::blob_digest(&m.key) else {
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
        Ok(())
    }
}

#[cfg(test)]
mod unit_tests {
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
}
