//! Interrupted requests and restarts in the middle of a push: whatever the server keeps must be
//! consistent ("a reader sees a blob, tag or manifest whole, or not at all"), and an interrupted
//! upload must be resumable from the offset the server reports.

use std::time::Duration;

use conformance::{
    header, location, random_bytes, raw_send, sha256_digest, with_query, ManifestBuilder,
    TestRegistry, OCI_MANIFEST,
};

async fn head_status(reg: &TestRegistry, path: &str) -> u16 {
    reg.head(path).status().await
}

/// Asserts that nothing is stored at `path` (HEAD answers 404).
async fn assert_absent(reg: &TestRegistry, path: &str) {
    assert_eq!(head_status(reg, path).await, 404, "HEAD {path}");
}

/// The path and query of an absolute URL.
fn path_of(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    }
}

/// Sends `request` (`METHOD target`) announcing all of `body` in `Content-Length` but only its
/// first `sent` bytes, then closes; asserts that the answer, if any, is not 201 (`what` names
/// the request in the message). The answer's status, if one came.
async fn send_cut(
    reg: &TestRegistry,
    (what, request): (&str, &str),
    content_type: &str,
    body: &[u8],
    sent: usize,
) -> Option<u16> {
    let head = format!(
        "{request} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(&body[..sent]);
    let status = raw_send(reg.base_url(), &req).await.map(|r| r.status);
    if let Some(status) = status {
        assert_ne!(
            status, 201,
            "a {what} whose body was cut short was committed"
        );
    }
    status
}

#[tokio::test]
async fn truncated_blob_put_does_not_create_the_blob() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(4000);
    let digest = sha256_digest(&data);
    let loc = reg.start_upload("crash/put").await;
    let request = format!("PUT {}", path_of(&with_query(&loc, "digest", &digest)));
    let octets = "application/octet-stream";
    if let Some(status) = send_cut(&reg, ("PUT", &request), octets, &data, 2000).await {
        assert!(
            status < 500 || status == 503,
            "truncated PUT answered {status}"
        );
    }
    assert_absent(&reg, &format!("/v2/crash/put/blobs/{digest}")).await;
    let half = sha256_digest(&data[..2000]);
    assert_absent(&reg, &format!("/v2/crash/put/blobs/{half}")).await;
}

#[tokio::test]
async fn truncated_single_post_does_not_create_the_blob() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(4000);
    let digest = sha256_digest(&data);
    let request = format!("POST /v2/crash/post/blobs/uploads/?digest={digest}");
    let octets = "application/octet-stream";
    send_cut(&reg, ("POST", &request), octets, &data, 1000).await;
    assert_absent(&reg, &format!("/v2/crash/post/blobs/{digest}")).await;
}

#[tokio::test]
async fn truncated_manifest_put_does_not_create_the_manifest() {
    let reg = TestRegistry::start().await;
    let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
    reg.push_blob("crash/manifest", cfg).await;
    let body = ManifestBuilder::new(conformance::descriptor(conformance::OCI_CONFIG, cfg))
        .annotation("pad", &"x".repeat(3000))
        .build();
    let request = "PUT /v2/crash/manifest/manifests/cut";
    let half = body.len() / 2;
    send_cut(&reg, ("manifest PUT", request), OCI_MANIFEST, &body, half).await;
    assert_absent(&reg, "/v2/crash/manifest/manifests/cut").await;
    // The whole manifest still goes in afterwards.
    reg.push_manifest("crash/manifest", "cut", OCI_MANIFEST, &body)
        .await;
}

#[tokio::test]
async fn truncated_patch_leaves_a_resumable_upload() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(200_000);
    let loc = reg.start_upload("crash/patch").await;
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Range: 0-{}\r\nContent-Length: {}\r\n\r\n",
        path_of(&loc),
        data.len() - 1,
        data.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(&data[..70_000]);
    if let Some(r) = raw_send(reg.base_url(), &req).await {
        assert_ne!(
            r.status, 202,
            "a PATCH whose body was cut short was accepted whole"
        );
    }
    resume_and_finish(&reg, &loc, "crash/patch", &data, 70_000).await;
}

/// Reads the upload's offset, checks it is at most `sent`, sends the rest and closes the upload;
/// the committed blob must be exactly `data` (so the kept prefix was consistent).
async fn resume_and_finish(reg: &TestRegistry, loc: &str, repo: &str, data: &[u8], sent: usize) {
    let resp = reg.get(loc).await;
    assert_eq!(resp.status(), 204, "upload status after the interruption");
    let range = header(resp.headers(), "range").map(str::to_owned);
    let loc = location(&resp);
    // "0-0" is ambiguous (nothing, or one byte); try both.
    let candidates: Vec<usize> = match range.as_deref() {
        None | Some("0--1") => vec![0],
        Some("0-0") => vec![0, 1],
        Some(r) => {
            let end: usize = r
                .strip_prefix("0-")
                .and_then(|e| e.parse().ok())
                .unwrap_or_else(|| panic!("bad Range {r:?}"));
            vec![end + 1]
        }
    };
    for &offset in &candidates {
        assert!(
            offset <= sent,
            "server claims {offset} bytes but only {sent} were sent"
        );
        let resp = reg
            .patch(&loc)
            .header("content-range", format!("{offset}-{}", data.len() - 1))
            .octets(data[offset..].to_vec())
            .await;
        if resp.status() == 416 && offset != *candidates.last().unwrap() {
            continue;
        }
        assert_eq!(resp.status(), 202, "PATCH the rest from {offset}");
        let loc = location(&resp);
        let digest = sha256_digest(data);
        let resp = reg.put(with_query(&loc, "digest", &digest)).await;
        assert_eq!(
            resp.status(),
            201,
            "closing the resumed upload (a wrong digest here means the kept prefix was corrupt)"
        );
        let got = reg.get(format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(got.bytes().await.unwrap(), data);
        return;
    }
    panic!("could not resume the upload from {candidates:?}");
}

#[tokio::test]
async fn restart_during_a_streamed_patch_leaves_a_resumable_upload() {
    // A short grace period so the server does not wait for our stalled request for long.
    let mut reg = TestRegistry::start_with(|c| c.shutdown_timeout = 1).await;
    const PIECE: usize = 64 * 1024;
    const SENT_PIECES: usize = 16; // 1 MiB goes out, then the stream stalls
    let data = random_bytes(2 * 1024 * 1024);
    let loc = reg.start_upload("crash/restart").await;

    let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel::<()>();
    let pieces: Vec<Vec<u8>> = data[..SENT_PIECES * PIECE]
        .chunks(PIECE)
        .map(<[u8]>::to_vec)
        .collect();
    let stream = futures::stream::unfold(
        (pieces.into_iter(), Some(stalled_tx)),
        |(mut it, mut tx)| async move {
            match it.next() {
                Some(p) => Some((Ok::<Vec<u8>, std::io::Error>(p), (it, tx))),
                None => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                    // Stall (bounded) as a client that lost its network would.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    None
                }
            }
        },
    );
    let client = reg.client().clone();
    let patch_loc = loc.clone();
    let inflight = tokio::spawn(async move {
        client
            .patch(&patch_loc)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
    });
    tokio::time::timeout(Duration::from_secs(20), stalled_rx)
        .await
        .expect("the stream never reached its stall point")
        .expect("stream dropped");
    // Give the server a moment to take in what was sent, then restart it under the request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    reg.restart().await;
    let outcome = tokio::time::timeout(Duration::from_secs(40), inflight)
        .await
        .expect("the interrupted PATCH never ended")
        .expect("PATCH task panicked");
    if let Ok(resp) = &outcome {
        assert_ne!(
            resp.status(),
            202,
            "a PATCH cut by a restart cannot have been accepted whole"
        );
    }
    resume_and_finish(&reg, &loc, "crash/restart", &data, SENT_PIECES * PIECE).await;
}
