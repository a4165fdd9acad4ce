//! Collection, retention and fsck against a real filesystem backend.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::fs::FsBackend;
use crate::hash::digest_of;
use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::types::{Algorithm, Reference};
use crate::Options;

/// A service over a fresh folder, and a repository name.
fn setup(repo: &str) -> (tempfile::TempDir, Registry, RepoName) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new(
        Arc::new(FsBackend::new(dir.path(), false).unwrap()),
        Options::default(),
    );
    (dir, reg, repo.parse().unwrap())
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
    let (_dir, reg, repo) = setup("app");
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
    let (_dir, reg, repo) = setup("builds/app");
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
    let (dir, reg, repo) = setup("app");
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
