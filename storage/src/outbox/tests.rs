//! Tests of the outbox: ids, verdicts and leases.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::backend::Backend;
use crate::fs::FsBackend;
use crate::layout;
use crate::types::{Digest, RepoName, Tag};

fn outbox() -> (tempfile::TempDir, Arc<dyn Backend>, Outbox) {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Backend> = Arc::new(FsBackend::new(dir.path(), false).unwrap());
    let o = Outbox::new(b.clone());
    (dir, b, o)
}

#[tokio::test]
async fn ids_sort_in_recording_order_and_records_round_trip() {
    let (_d, _b, o) = outbox();
    let repo = RepoName::from_str("a/b").unwrap();
    let d = Digest::from_str(&format!("sha256:{}", "0".repeat(64))).unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(o.blob_pushed(&repo, &d, 3).await.unwrap());
    }
    assert_eq!(o.pending().await.unwrap(), ids);
    let rec = o.load(&ids[2]).await.unwrap().unwrap();
    assert_eq!(rec.id, ids[2]);
    assert_eq!(rec.size, Some(3));
    assert_eq!(rec.action, Action::Push);
}

#[tokio::test]
async fn a_push_that_never_became_visible_waits_then_is_void_and_a_visible_one_delivers() {
    let (_d, b, o) = outbox();
    let repo = RepoName::from_str("a").unwrap();
    let d = Digest::from_str(&format!("sha256:{}", "1".repeat(64))).unwrap();
    let id = o.blob_pushed(&repo, &d, 1).await.unwrap();
    let mut rec = o.load(&id).await.unwrap().unwrap();
    assert_eq!(o.verdict(&rec, []).await.unwrap(), Verdict::Wait);
    rec.time_ms -= SETTLE.as_millis() as u64 + 1;
    assert_eq!(o.verdict(&rec, []).await.unwrap(), Verdict::Void);
    b.put(&layout::layer_link(&repo, &d), Bytes::from("x"))
        .await
        .unwrap();
    assert_eq!(o.verdict(&rec, []).await.unwrap(), Verdict::Deliver);
}

#[tokio::test]
async fn a_push_deleted_since_is_delivered_because_the_delete_follows_it() {
    let (_d, _b, o) = outbox();
    let repo = RepoName::from_str("a").unwrap();
    let d = Digest::from_str(&format!("sha256:{}", "2".repeat(64))).unwrap();
    let t = Tag::from_str("v1").unwrap();
    let p = o
        .manifest_pushed(
            &repo,
            &d,
            "application/vnd.oci.image.manifest.v1+json",
            9,
            &[&t],
        )
        .await
        .unwrap();
    let del = o.manifest_deleted(&repo, &d).await.unwrap();
    let p = o.load(&p).await.unwrap().unwrap();
    let del = o.load(&del).await.unwrap().unwrap();
    assert_eq!(o.verdict(&p, [&del]).await.unwrap(), Verdict::Deliver);
    assert_eq!(o.verdict(&del, []).await.unwrap(), Verdict::Deliver);
}

#[tokio::test]
async fn a_lease_is_exclusive_until_it_expires_or_is_released() {
    let (_d, _b, o) = outbox();
    let ttl = Duration::from_secs(60);
    assert!(o.lease("ep", "a", ttl).await.unwrap());
    assert!(!o.lease("ep", "b", ttl).await.unwrap());
    assert!(o.lease("ep", "a", ttl).await.unwrap());
    o.release("ep", "a").await.unwrap();
    assert!(o.lease("ep", "b", ttl).await.unwrap());
    assert!(o.lease("ep2", "a", Duration::ZERO).await.unwrap());
    assert!(o.lease("ep2", "b", ttl).await.unwrap());
}
