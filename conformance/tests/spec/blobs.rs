//! Pulling blobs: GET/HEAD headers and bodies, Range requests, unknown blobs, deletion.

use conformance::{expect_error, expect_header, header, sha256_digest, TestRegistry};

#[tokio::test]
async fn blob_get_and_head_return_bytes_and_headers() {
    let reg = TestRegistry::start().await;
    let (data, digest) = reg.push_random_blob("pull/blob", 70_000).await;
    let url = reg.url(&format!("/v2/pull/blob/blobs/{digest}"));

    let resp = reg.get(&url).expect(200).await;
    let h = resp.headers().clone();
    assert_eq!(header(&h, "docker-content-digest"), Some(digest.as_str()));
    assert_eq!(header(&h, "content-length"), Some("70000"));
    assert!(
        header(&h, "content-type").is_some(),
        "blob GET needs a Content-Type"
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), data.len());
    assert_eq!(sha256_digest(&body), digest, "GET returned other bytes");

    let resp = reg.head(&url).expect(200).await;
    let hh = resp.headers().clone();
    assert_eq!(header(&hh, "docker-content-digest"), Some(digest.as_str()));
    assert_eq!(header(&hh, "content-length"), Some("70000"));
    assert_eq!(header(&hh, "content-type"), header(&h, "content-type"));
    assert!(
        resp.bytes().await.unwrap().is_empty(),
        "HEAD must have no body"
    );
}

#[tokio::test]
async fn blob_range_requests() {
    let reg = TestRegistry::start().await;
    let (data, digest) = reg.push_random_blob("pull/range", 10_000).await;
    let url = reg.url(&format!("/v2/pull/range/blobs/{digest}"));
    let len = data.len();

    // (Range header, first byte, last byte) of satisfiable ranges.
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-0".into(), 0, 0),
        ("bytes=100-199".into(), 100, 199),
        ("bytes=9000-".into(), 9000, len - 1),
        ("bytes=-500".into(), len - 500, len - 1),
        (format!("bytes={}-{}", len - 1, len - 1), len - 1, len - 1),
        // Last byte past the end is clipped (RFC 9110 14.1.2).
        ("bytes=9990-20000".into(), 9990, len - 1),
        // A suffix longer than the blob selects all of it.
        ("bytes=-20000".into(), 0, len - 1),
    ];
    for (range, first, last) in cases {
        let resp = reg.get(&url).header("range", &range).await;
        assert_eq!(resp.status(), 206, "Range {range}");
        let h = resp.headers().clone();
        assert_eq!(
            header(&h, "content-range"),
            Some(format!("bytes {first}-{last}/{len}").as_str()),
            "Range {range}"
        );
        assert_eq!(
            header(&h, "content-length"),
            Some((last - first + 1).to_string().as_str()),
            "Range {range}"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &data[first..=last], "Range {range}: wrong bytes");
    }

    // Unsatisfiable: first byte at or past the end.
    for range in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 10, len + 20),
    ] {
        let resp = reg.get(&url).header("range", &range).await;
        assert_eq!(resp.status(), 416, "Range {range}");
        if let Some(cr) = header(resp.headers(), "content-range") {
            assert_eq!(
                cr,
                format!("bytes */{len}"),
                "416 Content-Range for {range}"
            );
        }
    }

    // A full GET after ranges still returns everything.
    let resp = reg.get(&url).expect(200).await;
    assert_eq!(resp.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let reg = TestRegistry::start().await;
    reg.push_blob("pull/unknown", b"something").await;
    let missing = sha256_digest(b"never pushed");
    let url = reg.url(&format!("/v2/pull/unknown/blobs/{missing}"));
    reg.get(&url).error(404, &["BLOB_UNKNOWN"]).await;
    let resp = reg.head(&url).expect(404).await;
    assert!(resp.bytes().await.unwrap().is_empty());
    // Unknown repository too.
    reg.get(format!("/v2/no/such/repo/blobs/{missing}"))
        .error(404, &["BLOB_UNKNOWN", "NAME_UNKNOWN"])
        .await;
}

#[tokio::test]
async fn blob_is_served_only_by_repositories_that_hold_it() {
    let reg = TestRegistry::start().await;
    let (_, digest) = reg.push_random_blob("team/a", 3000).await;
    reg.get(format!("/v2/team/a/blobs/{digest}"))
        .expect(200)
        .await;
    // team/b exists (has content) but never received or mounted this blob.
    reg.push_blob("team/b", b"other content").await;
    let path = format!("/v2/team/b/blobs/{digest}");
    reg.get(&path).error(404, &["BLOB_UNKNOWN"]).await;
    reg.head(&path).expect(404).await;
}

#[tokio::test]
async fn blob_delete_then_404() {
    let reg = TestRegistry::start().await;
    let (data, digest) = reg.push_random_blob("manage/blob", 5000).await;
    let url = reg.url(&format!("/v2/manage/blob/blobs/{digest}"));

    let resp = reg.delete(&url).await;
    assert_eq!(resp.status(), 202, "DELETE blob");

    reg.get(&url).error(404, &["BLOB_UNKNOWN"]).await;
    reg.head(&url).expect(404).await;

    reg.delete(&url).error(404, &["BLOB_UNKNOWN"]).await;

    // A manifest naming the deleted blob is refused, or, if accepted, the blob is served again:
    // never an accepted manifest whose blob 404s.
    let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
    reg.push_blob("manage/blob", cfg).await;
    let m =
        conformance::ManifestBuilder::new(conformance::descriptor(conformance::OCI_CONFIG, cfg))
            .layer(conformance::descriptor(conformance::OCI_LAYER, &data))
            .build();
    let resp = reg
        .put_manifest("manage/blob", "after-delete", conformance::OCI_MANIFEST, &m)
        .await;
    if resp.status() == 201 {
        let resp = reg.get(&url).await;
        assert_eq!(
            resp.status(),
            200,
            "manifest accepted but its layer is not served"
        );
    } else {
        expect_error(resp, 400, &["MANIFEST_BLOB_UNKNOWN"]).await;
    }

    // The same content can be pushed again afterwards.
    let again = reg.push_blob("manage/blob", &data).await;
    assert_eq!(again, digest);
    let resp = reg.get(&url).expect(200).await;
    assert_eq!(resp.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn blob_delete_in_one_repository_leaves_others() {
    let reg = TestRegistry::start().await;
    let (data, digest) = reg.push_random_blob("share/one", 4000).await;
    reg.push_blob("share/two", &data).await;
    reg.delete(format!("/v2/share/one/blobs/{digest}"))
        .expect(202)
        .await;
    let resp = reg.get(format!("/v2/share/two/blobs/{digest}")).await;
    assert_eq!(resp.status(), 200, "blob still linked in share/two");
    assert_eq!(resp.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn empty_blob_round_trip() {
    let reg = TestRegistry::start().await;
    let digest = reg.push_blob("pull/empty", b"").await;
    assert_eq!(
        digest,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let url = reg.url(&format!("/v2/pull/empty/blobs/{digest}"));
    let resp = reg.get(&url).expect(200).await;
    expect_header(resp.headers(), "content-length", "0");
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = reg.head(&url).expect(200).await;
    expect_header(resp.headers(), "content-length", "0");
}
