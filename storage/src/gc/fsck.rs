//! The consistency check: every stored blob against its digest, every link, manifest and tag
//! against what it points to, with damaged blobs optionally moved aside.

use std::collections::{BTreeSet, HashSet};

use futures::TryStreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::Hasher;
use crate::layout;
use crate::registry::Registry;
use crate::types::{Digest, RepoName};

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

impl Registry {
    /// Checks every stored blob against its digest and every manifest, tag and referrer entry
    /// against what it points to. With `quarantine`, damaged blobs are moved to `quarantine/`.
    pub async fn fsck(&self, quarantine: bool) -> Result<FsckReport> {
        let mut r = FsckReport::default();
        let present = self.check_blobs(quarantine, &mut r).await?;
        for repo in self.repositories().await? {
            self.check_repository(&repo, &present, &mut r).await?;
        }
        Ok(r)
    }

    /// Hashes every blob; returns the intact ones.
    async fn check_blobs(&self, quarantine: bool, r: &mut FsckReport) -> Result<BTreeSet<Digest>> {
        let mut present: BTreeSet<Digest> = BTreeSet::new();
        for m in self.backend().list(layout::BLOBS).await? {
            let Some(d) = layout::blob_digest(&m.key) else {
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
        Ok(present)
    }

    /// Checks one repository's links, manifests and tags against the intact blobs.
    async fn check_repository(
        &self,
        repo: &RepoName,
        present: &BTreeSet<Digest>,
        r: &mut FsckReport,
    ) -> Result<()> {
        let layers_dir = layout::layers_dir(repo);
        let layers: HashSet<Digest> = self
            .backend()
            .list(&layers_dir)
            .await?
            .iter()
            .filter_map(|m| layout::link_digest(&layers_dir, &m.key))
            .collect();
        let revisions: HashSet<Digest> = self
            .manifest_revisions(repo)
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
                if !linked || !present.contains(&rf.digest) {
                    r.problems.push(format!(
                        "{repo}: manifest {d} references {}, which is missing",
                        rf.digest
                    ));
                }
            }
        }
        r.problems
            .extend(self.tag_problems(repo, &revisions).await?);
        Ok(())
    }

    /// What is wrong with the tags of `repo`: those that do not name one of its revisions.
    async fn tag_problems(
        &self,
        repo: &RepoName,
        revisions: &HashSet<Digest>,
    ) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for name in self.backend().list_dir(&layout::tags_dir(repo)).await? {
            let raw = self
                .backend()
                .get_bytes(&layout::tag_named(repo, &name))
                .await?;
            match std::str::from_utf8(&raw)
                .ok()
                .and_then(|s| s.parse::<Digest>().ok())
            {
                Some(d) if revisions.contains(&d) => {}
                Some(d) => problems.push(format!("{repo}:{name} points at missing manifest {d}")),
                None => problems.push(format!("{repo}:{name} is unreadable")),
            }
        }
        Ok(problems)
    }

    async fn quarantine(&self, key: &str, d: &Digest) -> Result<()> {
        let id = format!("quarantine-{}", uuid::Uuid::new_v4().simple());
        let src = self.backend().get(key, None).await?;
        let len = self.backend().stage_append(&id, 0, src.stream).await?;
        self.backend()
            .stage_commit(&id, len, &layout::quarantine(d))
            .await?;
        self.backend().delete(key).await
    }
}
