//! Pushing blobs: POST+PUT, single POST, chunked PATCHes, streamed PATCHes, upload status,
//! cancel, digest checks, sha512, resume after a restart, concurrency.

use conformance::{
    at_once, expect_body, expect_client_error, expect_error, expect_header, header, location,
    random_bytes, sha256_digest, sha512_digest, with_query, TestRegistry,
};
use reqwest::Response;

/// An inclusive byte range `(first, last)` for a `Content-Range` header.
type Span = (usize, usize);

/// What a closing PUT carries: nothing, or bytes with an optional `Content-Range`.
type Tail<'a> = Option<(&'a [u8], Option<Span>)>;

async fn patch(
    reg: &TestRegistry,
    loc: &str,
    range: Option<(usize, usize)>,
    body: &[u8],
) -> Response {
    let mut req = reg
        .client()
        .patch(loc)
        .header("content-type", "application/octet-stream")
        .body(body.to_vec());
    if let Some((a, b)) = range {
        req = req.header("content-range", format!("{a}-{b}"));
    }
    req.send().await.unwrap()
}

/// PATCH that must be accepted: asserts 202, `Range: 0-<end>`, returns the new location.
async fn patch_ok(
    reg: &TestRegistry,
    loc: &str,
    range: Option<(usize, usize)>,
    body: &[u8],
    end: usize,
) -> String {
    let resp = patch(reg, loc, range, body).await;
    let status = resp.status();
    let h = resp.headers().clone();
    if status != 202 {
        panic!(
            "PATCH {range:?} ({} bytes): want 202, got {status}: {}",
            body.len(),
            resp.text().await.unwrap_or_default()
        );
    }
    assert_eq!(
        header(&h, "range"),
        Some(format!("0-{end}").as_str()),
        "PATCH {range:?} response Range"
    );
    location(&resp)
}

async fn put_close(reg: &TestRegistry, loc: &str, digest: &str, body: Tail<'_>) -> Response {
    let mut req = reg.client().put(with_query(loc, "digest", digest));
    match body {
        Some((data, range)) => {
            req = req
                .header("content-type", "application/octet-stream")
                .body(data.to_vec());
            if let Some((a, b)) = range {
                req = req.header("content-range", format!("{a}-{b}"));
            }
        }
        None => req = req.header("content-length", "0").body(Vec::new()),
    }
    req.send().await.unwrap()
}

/// Closes the upload at `loc` with one PUT carrying all of `data`; the blob must be created in
/// `repo` (see [`expect_created_blob`]).
async fn close_with_all(reg: &TestRegistry, loc: &str, repo: &str, data: &[u8]) {
    let resp = put_close(reg, loc, &sha256_digest(data), Some((data, None))).await;
    expect_created_blob(reg, resp, repo, data).await;
}

/// Asserts a 201 with a Location that serves exactly `data`.
async fn expect_created_blob(reg: &TestRegistry, resp: Response, repo: &str, data: &[u8]) {
    let status = resp.status();
    if status != 201 {
        panic!(
            "want 201, got {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let digest = sha256_digest(data);
    if let Some(dcd) = header(resp.headers(), "docker-content-digest") {
        assert!(dcd.starts_with("sha"), "Docker-Content-Digest {dcd}");
    }
    let blob_loc = location(&resp);
    let got = reg.get(&blob_loc).await;
    assert_eq!(got.status(), 200, "GET the 201's Location {blob_loc}");
    assert_eq!(got.bytes().await.unwrap(), data, "bytes at Location");
    let by_digest = reg.get(format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(by_digest.status(), 200);
    assert_eq!(by_digest.bytes().await.unwrap(), data);
}

async fn head_status(reg: &TestRegistry, repo: &str, digest: &str) -> u16 {
    let resp = reg.head(format!("/v2/{repo}/blobs/{digest}")).await;
    resp.status().as_u16()
}

/// Asserts that none of `digests` is served in `repo` (HEAD 404).
async fn expect_not_stored(reg: &TestRegistry, repo: &str, digests: &[&str]) {
    for digest in digests {
        assert_eq!(head_status(reg, repo, digest).await, 404, "{repo}@{digest}");
    }
}

/// Asserts `GET`, `PATCH` (`range`, `chunk`), the closing `PUT` (`digest`, `body`) and `DELETE`
/// of the upload at `url` all answer 404 `BLOB_UPLOAD_UNKNOWN`.
async fn expect_upload_unknown(
    reg: &TestRegistry,
    url: &str,
    (range, chunk): (Span, &[u8]),
    (digest, body): (&str, Tail<'_>),
) {
    let answers = [
        reg.get(url).await,
        patch(reg, url, Some(range), chunk).await,
        put_close(reg, url, digest, body).await,
        reg.delete(url).await,
    ];
    for resp in answers {
        expect_error(resp, 404, &["BLOB_UPLOAD_UNKNOWN"]).await;
    }
}

/// Pushes `len` random bytes to `repo`: PATCHes ending at `ends` (with a `Content-Range`
/// when `ranged`), then the closing PUT, carrying the rest after the last end when `tail` is
/// set (with a `Content-Range` when it is `Some(true)`). Asserts each PATCH's 202 and `Range`,
/// and the 201 with a blob that serves the bytes.
async fn push_in_steps(repo: &str, len: usize, ends: &[usize], ranged: bool, tail: Option<bool>) {
    let reg = TestRegistry::start().await;
    let data = random_bytes(len);
    let mut loc = reg.start_upload(repo).await;
    let mut from = 0;
    for &to in ends {
        let range = ranged.then_some((from, to - 1));
        loc = patch_ok(&reg, &loc, range, &data[from..to], to - 1).await;
        from = to;
    }
    let last = tail.map(|ranged| (&data[from..], ranged.then_some((from, len - 1))));
    let resp = put_close(&reg, &loc, &sha256_digest(&data), last).await;
    expect_created_blob(&reg, resp, repo, &data).await;
}

#[tokio::test]
async fn post_then_put_monolithic() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(300_000);
    let resp = reg
        .post("/v2/push/mono/blobs/uploads/")
        .header("content-length", "0")
        .expect(202)
        .await;
    let raw = header(resp.headers(), "location")
        .expect("Location")
        .to_owned();
    assert!(!raw.is_empty());
    let loc = location(&resp);
    close_with_all(&reg, &loc, "push/mono", &data).await;
}

#[tokio::test]
async fn post_with_digest_single_request() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(50_000);
    let digest = sha256_digest(&data);
    let resp = reg
        .post(format!("/v2/push/single/blobs/uploads/?digest={digest}"))
        .octets(data.clone())
        .await;
    expect_created_blob(&reg, resp, "push/single", &data).await;
}

#[tokio::test]
async fn post_with_wrong_digest_is_rejected_and_not_stored() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(1000);
    let wrong = sha256_digest(b"other");
    reg.post(format!("/v2/push/single/blobs/uploads/?digest={wrong}"))
        .octets(data.clone())
        .error(400, &["DIGEST_INVALID"])
        .await;
    expect_not_stored(&reg, "push/single", &[&wrong, &sha256_digest(&data)]).await;
}

/// One test per row: push `len` random bytes to `repo` by PATCHes ending at `ends` (each with a
/// `Content-Range` when `ranged`), then a PUT that carries the bytes after the last end when
/// `tail` is set (with a `Content-Range` when it is `Some(true)`).
macro_rules! push_in_steps_tests {
    ($($name:ident: $repo:literal, $len:expr, $ends:expr, $ranged:expr, $tail:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            push_in_steps($repo, $len, &$ends, $ranged, $tail).await;
        }
    )*};
}

push_in_steps_tests! {
    chunked_upload_in_order: "push/chunked", 250_000, [100_000, 200_000, 250_000], true, None;
    chunked_upload_with_final_chunk_in_put: "push/chunked", 150_000, [100_000], true, Some(true);
    final_chunk_in_put_without_content_range: "push/chunked", 20_000, [10_000], true, Some(false);
    streamed_patch_without_content_range: "push/stream", 1_500_000, [1_500_000], false, None;
    several_patches_without_content_range_append:
        "push/stream", 30_000, [10_000, 25_000, 30_000], false, None;
}

#[tokio::test]
async fn out_of_order_and_stale_chunks_get_416_with_current_range() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(300);
    let loc = reg.start_upload("push/order").await;
    let loc = patch_ok(&reg, &loc, Some((0, 99)), &data[..100], 99).await;

    // A gap: starts past the current end.
    let resp = patch(&reg, &loc, Some((200, 299)), &data[200..]).await;
    assert_eq!(resp.status(), 416, "chunk with a gap");
    assert_eq!(header(resp.headers(), "range"), Some("0-99"), "416 Range");

    // Stale: resends the first chunk.
    let resp = patch(&reg, &loc, Some((0, 99)), &data[..100]).await;
    assert_eq!(resp.status(), 416, "stale chunk");
    assert_eq!(header(resp.headers(), "range"), Some("0-99"), "416 Range");

    // Overlapping the end.
    let resp = patch(&reg, &loc, Some((50, 149)), &data[50..150]).await;
    assert_eq!(resp.status(), 416, "overlapping chunk");

    // The status endpoint reports where to go on.
    let resp = reg.get(&loc).expect(204).await;
    expect_header(resp.headers(), "range", "0-99");
    let loc = location(&resp);

    // A final chunk out of order in the PUT is a 416 too.
    let resp = put_close(
        &reg,
        &loc,
        &sha256_digest(&data),
        Some((&data[150..], Some((150, 299)))),
    )
    .await;
    assert_eq!(resp.status(), 416, "PUT with out-of-order final chunk");

    // The upload is still usable and the rejected bytes were not kept.
    let loc = patch_ok(&reg, &loc, Some((100, 199)), &data[100..200], 199).await;
    let loc = patch_ok(&reg, &loc, Some((200, 299)), &data[200..], 299).await;
    let resp = put_close(&reg, &loc, &sha256_digest(&data), None).await;
    expect_created_blob(&reg, resp, "push/order", &data).await;
}

#[tokio::test]
async fn malformed_or_inconsistent_content_range_is_a_client_error() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(100);
    let loc = reg.start_upload("push/badrange").await;
    for bad in ["garbage", "0-", "-99", "99-0"] {
        let resp = reg
            .patch(&loc)
            .header("content-range", bad)
            .octets(data.clone())
            .await;
        let st = resp.status().as_u16();
        assert!(
            st == 400 || st == 416,
            "Content-Range {bad:?}: want 400 or 416, got {st}"
        );
    }
    // Range length differs from the body length.
    let resp = patch(&reg, &loc, Some((0, 199)), &data).await;
    let st = resp.status().as_u16();
    assert!(
        st == 400 || st == 416,
        "Content-Range 0-199 with a 100-byte body: want 400 or 416, got {st}"
    );
    // Nothing was appended by any of these.
    let resp = reg.get(&loc).expect(204).await;
    let range = header(resp.headers(), "range").map(str::to_owned);
    assert!(
        range.is_none() || range.as_deref() == Some("0-0") || range.as_deref() == Some("0--1"),
        "upload grew after rejected chunks: Range {range:?}"
    );
    let loc = location(&resp);
    let loc = patch_ok(&reg, &loc, Some((0, 99)), &data, 99).await;
    let resp = put_close(&reg, &loc, &sha256_digest(&data), None).await;
    expect_created_blob(&reg, resp, "push/badrange", &data).await;
}

#[tokio::test]
async fn streamed_patch_with_chunked_transfer_encoding_32mib() {
    let reg = TestRegistry::start().await;
    const TOTAL: usize = 32 * 1024 * 1024;
    const PIECE: usize = 256 * 1024;
    let seed = random_bytes(PIECE);
    // Each piece differs (index mixed in) so a misplaced piece changes the digest.
    let piece = move |i: usize| -> Vec<u8> {
        let mut p = seed.clone();
        p[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p
    };
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for i in 0..TOTAL / PIECE {
        sha2::Digest::update(&mut hasher, piece(i));
    }
    let digest = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));

    let loc = reg.start_upload("push/big").await;
    let p2 = piece.clone();
    let stream = futures::stream::iter(
        (0..TOTAL / PIECE).map(move |i| Ok::<Vec<u8>, std::io::Error>(p2(i))),
    );
    let resp = reg
        .patch(&loc)
        .octets(reqwest::Body::wrap_stream(stream))
        .await;
    assert_eq!(resp.status(), 202, "streamed PATCH");
    expect_header(resp.headers(), "range", format!("0-{}", TOTAL - 1).as_str());
    let loc = location(&resp);
    let resp = put_close(&reg, &loc, &digest, None).await;
    assert_eq!(resp.status(), 201, "close streamed upload");

    let url = reg.url(&format!("/v2/push/big/blobs/{digest}"));
    let resp = reg.head(&url).expect(200).await;
    expect_header(resp.headers(), "content-length", TOTAL.to_string().as_str());
    // Read it back as a stream and hash it.
    let mut resp = reg.get(&url).expect(200).await;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut n = 0usize;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        n += chunk.len();
        sha2::Digest::update(&mut hasher, &chunk);
    }
    assert_eq!(n, TOTAL);
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher))),
        digest
    );
}

#[tokio::test]
async fn put_with_digest_mismatch_is_400_and_blob_not_stored() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(10_000);
    let wrong = sha256_digest(b"not this");
    // Monolithic PUT with body.
    let loc = reg.start_upload("push/mismatch").await;
    let resp = put_close(&reg, &loc, &wrong, Some((&data, None))).await;
    expect_error(resp, 400, &["DIGEST_INVALID"]).await;
    expect_not_stored(&reg, "push/mismatch", &[&wrong, &sha256_digest(&data)]).await;
    // After PATCH, closing PUT with no body.
    let loc = reg.start_upload("push/mismatch").await;
    let loc = patch_ok(&reg, &loc, Some((0, 9_999)), &data, 9_999).await;
    let resp = put_close(&reg, &loc, &wrong, None).await;
    expect_error(resp, 400, &["DIGEST_INVALID"]).await;
    expect_not_stored(&reg, "push/mismatch", &[&wrong, &sha256_digest(&data)]).await;
}

#[tokio::test]
async fn put_with_malformed_or_missing_digest_is_400() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(100);
    for bad in [
        "sha256:zzzz",
        "sha256:abc",
        "nonsense",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let loc = reg.start_upload("push/baddigest").await;
        let resp = put_close(&reg, &loc, bad, Some((&data, None))).await;
        expect_error(resp, 400, &["DIGEST_INVALID", "UNSUPPORTED"]).await;
    }
    // No digest parameter at all.
    let loc = reg.start_upload("push/baddigest").await;
    reg.put(&loc)
        .octets(data.clone())
        .error(400, &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"])
        .await;
}

#[tokio::test]
async fn upload_status_reports_range_and_location() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(4096);
    let loc = reg.start_upload("push/status").await;
    let resp = reg.get(&loc).await;
    assert_eq!(resp.status(), 204, "status of a fresh upload");
    assert!(header(resp.headers(), "location").is_some());

    let loc = patch_ok(&reg, &loc, Some((0, 4095)), &data, 4095).await;
    let resp = reg.get(&loc).expect(204).await;
    expect_header(resp.headers(), "range", "0-4095");
    let status_loc = location(&resp);
    assert!(resp.bytes().await.unwrap().is_empty(), "204 has no body");
    // The Location from the status answer continues the upload.
    let more = random_bytes(10);
    let loc = patch_ok(&reg, &status_loc, Some((4096, 4105)), &more, 4105).await;
    let mut all = data.clone();
    all.extend_from_slice(&more);
    let resp = put_close(&reg, &loc, &sha256_digest(&all), None).await;
    expect_created_blob(&reg, resp, "push/status", &all).await;
    // A closed upload is gone.
    reg.get(&loc).error(404, &["BLOB_UPLOAD_UNKNOWN"]).await;
}

#[tokio::test]
async fn cancel_upload_then_404() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(1000);
    let loc = reg.start_upload("push/cancel").await;
    let loc = patch_ok(&reg, &loc, Some((0, 999)), &data, 999).await;
    let resp = reg.delete(&loc).header("content-length", "0").await;
    assert_eq!(resp.status(), 204, "DELETE upload");

    let digest = sha256_digest(&data);
    expect_upload_unknown(&reg, &loc, ((1000, 1009), &data[..10]), (&digest, None)).await;
    expect_not_stored(&reg, "push/cancel", &[&digest]).await;
}

#[tokio::test]
async fn unknown_upload_id_is_404_blob_upload_unknown() {
    let reg = TestRegistry::start().await;
    reg.push_blob("push/unknown", b"make the repository exist")
        .await;
    let url = reg.url("/v2/push/unknown/blobs/uploads/6f1c8a2e-9d3b-4c57-8e0a-2b7d5f4c9a11");
    let digest = sha256_digest(b"x");
    expect_upload_unknown(&reg, &url, ((0, 0), b"x"), (&digest, Some((b"x", None)))).await;
    expect_not_stored(&reg, "push/unknown", &[&digest]).await;
}

#[tokio::test]
async fn upload_session_belongs_to_its_repository() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(500);
    let loc = reg.start_upload("owner/one").await;
    // Same session id under another repository's path.
    let other = loc.replacen("/v2/owner/one/", "/v2/owner/two/", 1);
    assert_ne!(
        other, loc,
        "upload location has the repository in its path: {loc}"
    );
    reg.get(&other).error(404, &["BLOB_UPLOAD_UNKNOWN"]).await;
    let resp = put_close(&reg, &other, &sha256_digest(&data), Some((&data, None))).await;
    expect_error(resp, 404, &["BLOB_UPLOAD_UNKNOWN"]).await;
    expect_not_stored(&reg, "owner/two", &[&sha256_digest(&data)]).await;
    // The real session is intact.
    close_with_all(&reg, &loc, "owner/one", &data).await;
}

#[tokio::test]
async fn sha512_with_digest_algorithm_parameter() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(40_000);
    let digest = sha512_digest(&data);
    let loc = reg
        .start_upload_at("/v2/push/sha512/blobs/uploads/?digest-algorithm=sha512")
        .await;
    let loc = patch_ok(&reg, &loc, Some((0, 19_999)), &data[..20_000], 19_999).await;
    let loc = patch_ok(&reg, &loc, Some((20_000, 39_999)), &data[20_000..], 39_999).await;
    let resp = put_close(&reg, &loc, &digest, None).await;
    assert_eq!(resp.status(), 201);
    let blob_loc = location(&resp);

    let url = reg.url(&format!("/v2/push/sha512/blobs/{digest}"));
    let resp = reg.head(&url).expect(200).await;
    expect_header(resp.headers(), "docker-content-digest", digest.as_str());
    expect_header(resp.headers(), "content-length", "40000");
    expect_body(reg.get(&url).await, 200, &data).await;
    expect_body(reg.get(&blob_loc).await, 200, &data).await;

    // A manifest may reference the blob by its sha512 digest.
    let layer = serde_json::json!({
        "mediaType": conformance::OCI_LAYER,
        "digest": digest,
        "size": data.len(),
    });
    reg.push_manifest_over("push/sha512", "v1", layer).await;
}

#[tokio::test]
async fn sha512_digest_closes_a_plain_session() {
    let reg = TestRegistry::start().await;
    // Streamed PATCH, then a sha512 digest on the PUT.
    let data = random_bytes(12_345);
    let digest = sha512_digest(&data);
    let loc = reg.start_upload("push/sha512").await;
    let loc = patch_ok(&reg, &loc, None, &data, data.len() - 1).await;
    let resp = put_close(&reg, &loc, &digest, None).await;
    assert_eq!(resp.status(), 201, "plain session closed with sha512");
    let resp = reg
        .get(format!("/v2/push/sha512/blobs/{digest}"))
        .expect(200)
        .await;
    expect_header(resp.headers(), "docker-content-digest", digest.as_str());
    assert_eq!(resp.bytes().await.unwrap(), data);

    // Monolithic POST+PUT with sha512.
    let data2 = random_bytes(777);
    let d2 = sha512_digest(&data2);
    reg.push_blob_as("push/sha512", &data2, &d2).await;
    expect_body(
        reg.get(format!("/v2/push/sha512/blobs/{d2}")).await,
        200,
        &data2,
    )
    .await;

    // Single POST with a sha512 digest.
    let data3 = random_bytes(999);
    let d3 = sha512_digest(&data3);
    reg.post(format!("/v2/push/sha512/blobs/uploads/?digest={d3}"))
        .octets(data3.clone())
        .expect(201)
        .await;
    let resp = reg.get(format!("/v2/push/sha512/blobs/{d3}")).await;
    assert_eq!(resp.bytes().await.unwrap(), data3);

    // A wrong sha512 digest is refused.
    let loc = reg.start_upload("push/sha512").await;
    let wrong = sha512_digest(b"wrong");
    let resp = put_close(&reg, &loc, &wrong, Some((&data3, None))).await;
    expect_error(resp, 400, &["DIGEST_INVALID"]).await;
    expect_not_stored(&reg, "push/sha512", &[&wrong]).await;
}

#[tokio::test]
async fn upload_resumes_after_server_restart() {
    let mut reg = TestRegistry::start().await;
    let data = random_bytes(600_000);
    let loc = reg.start_upload("push/resume").await;
    let loc = patch_ok(&reg, &loc, Some((0, 299_999)), &data[..300_000], 299_999).await;

    reg.restart().await;

    let resp = reg.get(&loc).await;
    assert_eq!(resp.status(), 204, "upload status after restart");
    expect_header(resp.headers(), "range", "0-299999");
    let loc = location(&resp);
    let loc = patch_ok(
        &reg,
        &loc,
        Some((300_000, 449_999)),
        &data[300_000..450_000],
        449_999,
    )
    .await;

    // Restart again mid-way and finish with a streamed PATCH (no Content-Range).
    reg.restart().await;
    let loc = patch_ok(&reg, &loc, None, &data[450_000..], 599_999).await;
    let resp = put_close(&reg, &loc, &sha256_digest(&data), None).await;
    expect_created_blob(&reg, resp, "push/resume", &data).await;

    // Committed content survives a restart as well.
    reg.restart().await;
    expect_body(
        reg.get(format!("/v2/push/resume/blobs/{}", sha256_digest(&data)))
            .await,
        200,
        &data,
    )
    .await;
}

#[tokio::test]
async fn sha512_upload_resumes_after_restart() {
    let mut reg = TestRegistry::start().await;
    let data = random_bytes(100_000);
    let loc = reg
        .start_upload_at("/v2/push/resume512/blobs/uploads/?digest-algorithm=sha512")
        .await;
    let loc = patch_ok(&reg, &loc, Some((0, 49_999)), &data[..50_000], 49_999).await;
    reg.restart().await;
    let loc = patch_ok(&reg, &loc, Some((50_000, 99_999)), &data[50_000..], 99_999).await;
    let digest = sha512_digest(&data);
    let resp = put_close(&reg, &loc, &digest, None).await;
    assert_eq!(resp.status(), 201);
    expect_body(
        reg.get(format!("/v2/push/resume512/blobs/{digest}")).await,
        200,
        &data,
    )
    .await;
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_blob_all_succeed() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(2 * 1024 * 1024);
    let digest = sha256_digest(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = reg.client().clone();
        let base = reg.base_url().to_owned();
        let data = data.clone();
        let digest = digest.clone();
        tasks.push(tokio::spawn(async move {
            // Half in one PATCH, half monolithic PUT, all to the same repository.
            let resp = client
                .post(format!("{base}/v2/push/race/blobs/uploads/"))
                .header("content-length", "0")
                .body(Vec::new())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
            let mut loc = location(&resp);
            let put_body = if i % 2 == 0 {
                let resp = client
                    .patch(&loc)
                    .header("content-type", "application/octet-stream")
                    .body(data.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
                loc = location(&resp);
                Vec::new()
            } else {
                data.clone()
            };
            let resp = client
                .put(with_query(&loc, "digest", &digest))
                .header("content-type", "application/octet-stream")
                .body(put_body)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201, "one of 8 concurrent pushes failed");
    }
    let resp = reg
        .get(format!("/v2/push/race/blobs/{digest}"))
        .expect(200)
        .await;
    assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), digest);
}

#[tokio::test]
async fn pushing_an_existing_blob_again_succeeds() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(2000);
    let d1 = reg.push_blob("push/again", &data).await;
    let d2 = reg.push_blob("push/again", &data).await;
    assert_eq!(d1, d2);
    let resp = reg.get(format!("/v2/push/again/blobs/{d1}")).await;
    assert_eq!(resp.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn upload_errors_are_client_errors() {
    let reg = TestRegistry::start().await;
    // Single POST whose digest is only an algorithm, and an unsupported digest algorithm.
    let resp = reg
        .post("/v2/push/errs/blobs/uploads/?digest=sha256:")
        .body(b"abc".to_vec())
        .await;
    expect_client_error(resp).await;
    let resp = reg
        .post("/v2/push/errs/blobs/uploads/?digest-algorithm=md5")
        .header("content-length", "0")
        .await;
    expect_client_error(resp).await;
}

#[tokio::test]
async fn concurrent_patches_to_one_upload_append_once() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(256 * 1024);
    let loc = reg.start_upload("push/racing").await;
    let range = format!("0-{}", data.len() - 1);
    let calls = (0..8)
        .map(|_| {
            reg.patch(&loc)
                .header("content-range", &range)
                .octets(data.clone())
        })
        .collect();
    let statuses = at_once(calls).await;
    let mut accepted = 0;
    for st in statuses {
        if st == 202 {
            accepted += 1;
        } else {
            assert!(
                (400..500).contains(&st),
                "a losing concurrent PATCH got {st}"
            );
        }
    }
    assert_eq!(
        accepted, 1,
        "exactly one of 8 identical first chunks may be appended"
    );
    let resp = reg.get(&loc).expect(204).await;
    expect_header(
        resp.headers(),
        "range",
        format!("0-{}", data.len() - 1).as_str(),
    );
    let loc = location(&resp);
    let resp = put_close(&reg, &loc, &sha256_digest(&data), None).await;
    expect_created_blob(&reg, resp, "push/racing", &data).await;
}
