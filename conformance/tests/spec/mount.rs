//! Mounting a blob from another repository (`POST ?mount=<digest>&from=<repo>`), and the
//! automatic mount without `from`.

use conformance::{
    expect_error, expect_header, header, location, random_bytes, sha256_digest, with_query,
    TestRegistry,
};

async fn mount(
    reg: &TestRegistry,
    repo: &str,
    digest: &str,
    from: Option<&str>,
) -> reqwest::Response {
    let mut url = reg.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}"));
    if let Some(from) = from {
        url = with_query(&url, "from", from);
    }
    reg.post(url).header("content-length", "0").await
}

/// Asserts a mount answered 201 with `digest` in `Docker-Content-Digest` (`what` names the
/// case); returns the blob's location.
fn expect_mounted(resp: reqwest::Response, digest: &str, what: &str) -> String {
    assert_eq!(resp.status(), 201, "{what}");
    expect_header(resp.headers(), "docker-content-digest", digest);
    location(&resp)
}

async fn blob_status(reg: &TestRegistry, repo: &str, digest: &str) -> u16 {
    reg.get(format!("/v2/{repo}/blobs/{digest}")).status().await
}

#[tokio::test]
async fn mount_from_repository_that_has_the_blob() {
    let reg = TestRegistry::start().await;
    let (data, digest) = reg.push_random_blob("src/repo", 20_000).await;
    assert_eq!(blob_status(&reg, "dst/repo", &digest).await, 404);

    let resp = mount(&reg, "dst/repo", &digest, Some("src/repo")).await;
    let loc = expect_mounted(resp, &digest, "mount from a repository holding the blob");
    let got = reg.get(&loc).await;
    assert_eq!(got.status(), 200, "GET mount Location {loc}");
    assert_eq!(got.bytes().await.unwrap(), data);

    let got = reg.get(format!("/v2/dst/repo/blobs/{digest}")).await;
    assert_eq!(got.status(), 200);
    expect_header(got.headers(), "docker-content-digest", digest.as_str());
    assert_eq!(got.bytes().await.unwrap(), data);

    // The mounted blob can be referenced by a manifest in the target repository.
    let layer = conformance::descriptor(conformance::OCI_LAYER, &data);
    reg.push_manifest_over("dst/repo", "mounted", layer).await;
}

#[tokio::test]
async fn mount_of_unknown_blob_starts_an_upload() {
    let reg = TestRegistry::start().await;
    reg.push_blob("src/empty", b"something else").await;
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);

    let resp = mount(&reg, "dst/fallback", &digest, Some("src/empty")).await;
    assert_eq!(resp.status(), 202, "mount of a blob nobody has");
    let loc = location(&resp);
    assert_eq!(blob_status(&reg, "dst/fallback", &digest).await, 404);

    // The session works like any other.
    reg.put(with_query(&loc, "digest", &digest))
        .octets(data.clone())
        .expect(201)
        .await;
    assert_eq!(blob_status(&reg, "dst/fallback", &digest).await, 200);
    // From a repository that does not exist at all: also 202.
    let other = sha256_digest(b"absent everywhere");
    let resp = mount(&reg, "dst/fallback", &other, Some("no/such/repo")).await;
    assert_eq!(resp.status(), 202);
    assert!(header(resp.headers(), "location").is_some());
}

#[tokio::test]
async fn automatic_mount_without_from() {
    let reg = TestRegistry::start().await;
    let (data, digest) = reg.push_random_blob("auto/src", 5000).await;
    let resp = mount(&reg, "auto/dst", &digest, None).await;
    let loc = expect_mounted(
        resp,
        &digest,
        "mount without from (auto-mount is on by default)",
    );
    let got = reg.get(&loc).await;
    assert_eq!(got.bytes().await.unwrap(), data);
    assert_eq!(blob_status(&reg, "auto/dst", &digest).await, 200);
}

#[tokio::test]
async fn automatic_mount_can_be_turned_off() {
    let reg = TestRegistry::start_with(|c| c.auto_mount = false).await;
    let (_, digest) = reg.push_random_blob("auto/src", 5000).await;
    let resp = mount(&reg, "auto/dst", &digest, None).await;
    assert_eq!(
        resp.status(),
        202,
        "mount without from when auto_mount = false"
    );
    assert!(header(resp.headers(), "location").is_some());
    assert_eq!(blob_status(&reg, "auto/dst", &digest).await, 404);
    // An explicit from still mounts.
    let resp = mount(&reg, "auto/dst", &digest, Some("auto/src")).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(blob_status(&reg, "auto/dst", &digest).await, 200);
}

#[tokio::test]
async fn mount_from_repository_lacking_the_blob_does_not_leak_it() {
    // `from` names a repository that does not hold the blob (another one does). Whether the
    // registry mounts it (it MAY cross-mount anything it finds) or starts an upload, the answer
    // must be one of the two documented ones and consistent with what it then serves.
    let reg = TestRegistry::start().await;
    let (_, digest) = reg.push_random_blob("holder/repo", 1000).await;
    reg.push_blob("bystander/repo", b"unrelated").await;
    let resp = mount(&reg, "target/repo", &digest, Some("bystander/repo")).await;
    let st = resp.status().as_u16();
    assert!(st == 201 || st == 202, "mount answered {st}");
    let served = blob_status(&reg, "target/repo", &digest).await;
    if st == 201 {
        assert_eq!(served, 200);
    } else {
        assert_eq!(served, 404);
    }
}

#[tokio::test]
async fn mount_with_malformed_digest_is_not_a_server_error() {
    let reg = TestRegistry::start().await;
    reg.push_blob("src/m", b"x").await;
    let resp = mount(&reg, "dst/m", "sha256:nothex", Some("src/m")).await;
    let st = resp.status().as_u16();
    if st == 202 {
        return; // ignored the bad mount and started an upload: allowed
    }
    expect_error(resp, 400, &["DIGEST_INVALID"]).await;
}
