//! Pushing, pulling and deleting manifests and tags; validation; size limits; multi-tag push.

use conformance::{
    at_once, descriptor, empty_descriptor, expect_client_error, expect_error, expect_header,
    header, header_values, location, random_bytes, sha256_digest, Call, Image, IndexBuilder,
    ManifestBuilder, TestRegistry, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST,
    EMPTY_JSON_DIGEST, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use reqwest::Method;
use serde_json::json;

/// Pushes a config and one layer to `repo`; returns (config descriptor, layer descriptor).
async fn blobs(reg: &TestRegistry, repo: &str) -> (serde_json::Value, serde_json::Value) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","n":"{}"}}"#,
        conformance::random_suffix()
    );
    reg.push_blob(repo, config.as_bytes()).await;
    let layer = random_bytes(2048);
    reg.push_blob(repo, &layer).await;
    (
        descriptor(OCI_CONFIG, config.as_bytes()),
        descriptor(OCI_LAYER, &layer),
    )
}

/// Pushes `body` as `repo:reference` (`media_type`; asserts 201), then [`assert_manifest`].
async fn push_and_check(
    reg: &TestRegistry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    reg.push_manifest(repo, reference, media_type, body).await;
    assert_manifest(reg, repo, reference, media_type, body).await;
}

/// Asserts GET and HEAD of `/v2/<repo>/manifests/<reference>` serve `body` as `media_type`.
async fn assert_manifest(
    reg: &TestRegistry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let url = reg.url(&format!("/v2/{repo}/manifests/{reference}"));
    let digest = sha256_digest(body);
    let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}");
    for method in [Method::GET, Method::HEAD] {
        let what = format!("{method} {repo}:{reference}");
        let resp = reg
            .request(method.clone(), &url)
            .header("accept", &accept)
            .await;
        assert_eq!(resp.status(), 200, "{what}");
        let h = resp.headers().clone();
        assert_eq!(
            header(&h, "content-type"),
            Some(media_type),
            "{what} Content-Type"
        );
        assert_eq!(header(&h, "docker-content-digest"), Some(digest.as_str()));
        let len = body.len().to_string();
        assert_eq!(
            header(&h, "content-length"),
            Some(len.as_str()),
            "{what} Content-Length"
        );
        // GET returns the exact pushed bytes, HEAD no body.
        let want = if method == Method::GET { body } else { &[] };
        assert_eq!(&resp.bytes().await.unwrap()[..], want, "{what} body");
    }
}

async fn get_status(reg: &TestRegistry, repo: &str, reference: &str) -> u16 {
    reg.get(format!("/v2/{repo}/manifests/{reference}"))
        .status()
        .await
}

/// The PUT of `body` as `target` (`repo:reference`) is refused with 400 and one of `codes`, and
/// nothing is stored under `reference`.
async fn refused(reg: &TestRegistry, target: &str, media_type: &str, body: &[u8], codes: &[&str]) {
    let (repo, reference) = target.split_once(':').expect("repo:reference");
    reg.put_manifest(repo, reference, media_type, body)
        .error(400, codes)
        .await;
    assert_eq!(get_status(reg, repo, reference).await, 404);
}

/// An image manifest over a config and a layer pushed to `repo` (see [`blobs`]).
async fn image_manifest(reg: &TestRegistry, repo: &str) -> Vec<u8> {
    let (config, layer) = blobs(reg, repo).await;
    ManifestBuilder::new(config).layer(layer).build()
}

/// A new image in `repo` tagged with both `tags`.
async fn image_tagged(reg: &TestRegistry, repo: &str, tags: [&str; 2]) -> Image {
    let img = reg.push_image(repo, Some(tags[0]), 1).await;
    reg.push_manifest(repo, tags[1], OCI_MANIFEST, &img.manifest)
        .await;
    img
}

/// The request answers 404 MANIFEST_UNKNOWN.
async fn manifest_unknown(call: Call) {
    call.error(404, &["MANIFEST_UNKNOWN"]).await;
}

#[tokio::test]
async fn push_by_tag_and_pull_exact_bytes() {
    let reg = TestRegistry::start().await;
    let (config, layer) = blobs(&reg, "man/exact").await;
    // Odd whitespace and key order: re-serialising would change the digest.
    let body = format!(
        "{{\n   \"schemaVersion\" :2,\t\"mediaType\":   \"{OCI_MANIFEST}\",\n\"config\":{config} ,\n  \"layers\" : [ {layer} ],\"annotations\":{{\"z\":\"1\",  \"a\":\"2\"}}\n}}\n\n"
    )
    .into_bytes();
    let digest = sha256_digest(&body);
    let resp = reg
        .put_manifest("man/exact", "v1.0", OCI_MANIFEST, &body)
        .expect(201)
        .await;
    expect_header(resp.headers(), "docker-content-digest", digest.as_str());
    let loc = location(&resp);
    let got = reg.get(&loc).await;
    assert_eq!(got.status(), 200, "GET the 201's Location {loc}");
    assert_eq!(got.bytes().await.unwrap(), body);

    assert_manifest(&reg, "man/exact", "v1.0", OCI_MANIFEST, &body).await;
    assert_manifest(&reg, "man/exact", &digest, OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn push_by_digest() {
    let reg = TestRegistry::start().await;
    let body = image_manifest(&reg, "man/bydigest").await;
    let digest = sha256_digest(&body);
    let resp = reg
        .put_manifest("man/bydigest", &digest, OCI_MANIFEST, &body)
        .expect(201)
        .await;
    expect_header(resp.headers(), "docker-content-digest", digest.as_str());
    let loc = location(&resp);
    assert_eq!(reg.get(&loc).await.status(), 200);
    assert_manifest(&reg, "man/bydigest", &digest, OCI_MANIFEST, &body).await;
    // Not tagged: the tag list is empty (or the repository has no tags yet).
    let resp = reg.get("/v2/man/bydigest/tags/list").await;
    if resp.status() == 200 {
        let v: serde_json::Value = resp.json().await.unwrap();
        let tags = v["tags"].as_array().cloned().unwrap_or_default();
        assert!(tags.is_empty(), "tags after digest-only push: {v}");
    }
}

#[tokio::test]
async fn manifest_without_media_type_field_keeps_pushed_content_type() {
    let reg = TestRegistry::start().await;
    let (config, layer) = blobs(&reg, "man/nomt").await;
    let body = ManifestBuilder::new(config)
        .media_type(None)
        .layer(layer)
        .build();
    push_and_check(&reg, "man/nomt", "t", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn content_type_media_type_mismatch_is_manifest_invalid() {
    let reg = TestRegistry::start().await;
    let body = image_manifest(&reg, "man/mismatch").await;
    reg.put_manifest("man/mismatch", "t", OCI_INDEX, &body)
        .error(400, &["MANIFEST_INVALID"])
        .await;
    let codes = ["MANIFEST_INVALID"];
    refused(&reg, "man/mismatch:t", DOCKER_MANIFEST, &body, &codes).await;
}

#[tokio::test]
async fn invalid_json_is_manifest_invalid() {
    let reg = TestRegistry::start().await;
    for body in [
        &b"{not json"[..],
        b"",
        b"[]",
        b"\"a string\"",
        b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":",
    ] {
        reg.put_manifest("man/badjson", "t", OCI_MANIFEST, body).error(400, &["MANIFEST_INVALID"]).await;
    }
    // Structurally wrong: config is not a descriptor / digest is malformed.
    let bad_config = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:nothex", "size": 2},
        "layers": []
    });
    let body = serde_json::to_vec(&bad_config).unwrap();
    let codes = ["MANIFEST_INVALID", "DIGEST_INVALID"];
    refused(&reg, "man/badjson:t", OCI_MANIFEST, &body, &codes).await;
}

#[tokio::test]
async fn missing_blobs_are_manifest_blob_unknown() {
    let reg = TestRegistry::start().await;
    let (config, layer) = blobs(&reg, "man/missing").await;
    let absent_layer = descriptor(OCI_LAYER, b"never uploaded layer");
    let absent_config = descriptor(OCI_CONFIG, b"{\"never\":\"uploaded\"}");

    let body = ManifestBuilder::new(config.clone())
        .layer(layer.clone())
        .layer(absent_layer)
        .build();
    reg.put_manifest("man/missing", "t", OCI_MANIFEST, &body)
        .error(400, &["MANIFEST_BLOB_UNKNOWN"])
        .await;

    let body = ManifestBuilder::new(absent_config)
        .layer(layer.clone())
        .build();
    reg.put_manifest("man/missing", "t", OCI_MANIFEST, &body)
        .error(400, &["MANIFEST_BLOB_UNKNOWN"])
        .await;

    // A blob that exists only in another repository is unknown here.
    let elsewhere = random_bytes(100);
    reg.push_blob("man/other", &elsewhere).await;
    let body = ManifestBuilder::new(config)
        .layer(descriptor(OCI_LAYER, &elsewhere))
        .build();
    let resp = reg
        .put_manifest("man/missing", "t", OCI_MANIFEST, &body)
        .await;
    let st = resp.status().as_u16();
    // Auto-mount may make it known; otherwise it must be MANIFEST_BLOB_UNKNOWN.
    if st != 201 {
        expect_error(resp, 400, &["MANIFEST_BLOB_UNKNOWN"]).await;
        assert_eq!(get_status(&reg, "man/missing", "t").await, 404);
    }
}

#[tokio::test]
async fn index_with_missing_child_is_manifest_blob_unknown() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("man/index", None, 1).await;
    let absent = descriptor(OCI_MANIFEST, b"{\"schemaVersion\":2,\"absent\":true}");
    let body = IndexBuilder::new()
        .manifest(img.descriptor())
        .manifest(absent)
        .build();
    let codes = ["MANIFEST_BLOB_UNKNOWN"];
    refused(&reg, "man/index:multi", OCI_INDEX, &body, &codes).await;
}

#[tokio::test]
async fn index_with_child_only_in_another_repository() {
    let reg = TestRegistry::start().await;
    let elsewhere = reg.push_image("man/elsewhere", None, 1).await;
    reg.push_blob("man/lonely", b"make the repository exist")
        .await;
    let body = IndexBuilder::new().manifest(elsewhere.descriptor()).build();
    let resp = reg
        .put_manifest("man/lonely", "idx", OCI_INDEX, &body)
        .await;
    if resp.status() != 201 {
        expect_error(resp, 400, &["MANIFEST_BLOB_UNKNOWN"]).await;
        assert_eq!(get_status(&reg, "man/lonely", "idx").await, 404);
    } else {
        // Accepted (the registry found the child elsewhere): then it must serve the child here.
        assert_manifest(
            &reg,
            "man/lonely",
            &elsewhere.digest,
            OCI_MANIFEST,
            &elsewhere.manifest,
        )
        .await;
    }
}

#[tokio::test]
async fn push_by_sha512_digest() {
    let reg = TestRegistry::start().await;
    let body = image_manifest(&reg, "man/sha512").await;
    let d512 = conformance::sha512_digest(&body);
    let resp = reg
        .put_manifest("man/sha512", &d512, OCI_MANIFEST, &body)
        .await;
    let st = resp.status().as_u16();
    if st == 400 {
        // An algorithm the registry does not take for manifests: allowed, if said properly.
        expect_error(resp, 400, &["DIGEST_INVALID", "UNSUPPORTED"]).await;
        return;
    }
    assert_eq!(st, 201, "PUT manifest by sha512 digest");
    assert_eq!(
        header(resp.headers(), "docker-content-digest"),
        Some(d512.as_str()),
        "Docker-Content-Digest MUST equal the digest the client pushed by"
    );
    let resp = reg
        .get(format!("/v2/man/sha512/manifests/{d512}"))
        .expect(200)
        .await;
    assert_eq!(resp.bytes().await.unwrap(), body);
    // A wrong sha512 digest is refused.
    let wrong = conformance::sha512_digest(b"wrong");
    reg.put_manifest("man/sha512", &wrong, OCI_MANIFEST, &body)
        .error(400, &["DIGEST_INVALID"])
        .await;
}

#[tokio::test]
async fn index_with_present_children() {
    let reg = TestRegistry::start().await;
    let a = reg.push_image("man/index", None, 1).await;
    let b = reg.push_image("man/index", None, 2).await;
    let mut da = a.descriptor();
    da["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut db = b.descriptor();
    db["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    let body = IndexBuilder::new().manifest(da).manifest(db).build();
    let digest = reg
        .push_manifest("man/index", "multi", OCI_INDEX, &body)
        .await;
    assert_manifest(&reg, "man/index", "multi", OCI_INDEX, &body).await;
    assert_manifest(&reg, "man/index", &digest, OCI_INDEX, &body).await;
    // Children by digest.
    assert_manifest(&reg, "man/index", &a.digest, OCI_MANIFEST, &a.manifest).await;
}

#[tokio::test]
async fn nested_index() {
    let reg = TestRegistry::start().await;
    let a = reg.push_image("man/nested", None, 1).await;
    let inner = IndexBuilder::new().manifest(a.descriptor()).build();
    reg.push_manifest("man/nested", &sha256_digest(&inner), OCI_INDEX, &inner)
        .await;
    let outer = IndexBuilder::new()
        .manifest(descriptor(OCI_INDEX, &inner))
        .build();
    push_and_check(&reg, "man/nested", "outer", OCI_INDEX, &outer).await;
}

#[tokio::test]
async fn subject_pointing_at_nothing_is_accepted_with_oci_subject() {
    let reg = TestRegistry::start().await;
    reg.push_blob("man/subject", b"{}").await;
    let ghost = descriptor(OCI_MANIFEST, b"{\"schemaVersion\":2,\"ghost\":1}");
    let body = ManifestBuilder::artifact("application/vnd.example.sig")
        .layer(empty_descriptor())
        .subject(ghost.clone())
        .build();
    let resp = reg
        .put_manifest("man/subject", &sha256_digest(&body), OCI_MANIFEST, &body)
        .await;
    assert_eq!(
        resp.status(),
        201,
        "subject to a missing manifest must be accepted"
    );
    assert_eq!(
        header(resp.headers(), "oci-subject"),
        ghost["digest"].as_str(),
        "OCI-Subject header"
    );
    assert_manifest(
        &reg,
        "man/subject",
        &sha256_digest(&body),
        OCI_MANIFEST,
        &body,
    )
    .await;
}

#[tokio::test]
async fn buildkit_cache_index_of_plain_blobs_is_accepted() {
    let reg = TestRegistry::start().await;
    let cache_config = br#"{"layers":[{"blob":"sha256:x","parent":-1}],"records":[]}"#.to_vec();
    reg.push_blob("man/cache", &cache_config).await;
    let l1 = random_bytes(3000);
    let l2 = random_bytes(4000);
    reg.push_blob("man/cache", &l1).await;
    reg.push_blob("man/cache", &l2).await;
    let mut d1 = descriptor(OCI_LAYER, &l1);
    d1["annotations"] = json!({"buildkit/createdat": "2024-01-01T00:00:00Z", "containerd.io/uncompressed": sha256_digest(b"u1")});
    let body = IndexBuilder::new()
        .manifest(d1)
        .manifest(descriptor(OCI_LAYER, &l2))
        .manifest(descriptor(
            "application/vnd.buildkit.cacheconfig.v0",
            &cache_config,
        ))
        .build();
    let digest = reg
        .push_manifest("man/cache", "buildcache", OCI_INDEX, &body)
        .await;
    assert_manifest(&reg, "man/cache", "buildcache", OCI_INDEX, &body).await;
    assert_manifest(&reg, "man/cache", &digest, OCI_INDEX, &body).await;
}

#[tokio::test]
async fn docker_schema2_and_manifest_list_are_accepted() {
    let reg = TestRegistry::start().await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = random_bytes(5000);
    reg.push_blob("man/docker", &config).await;
    reg.push_blob("man/docker", &layer).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    });
    let mbytes = serde_json::to_vec_pretty(&m).unwrap();
    let mdigest = reg
        .push_manifest("man/docker", "amd64", DOCKER_MANIFEST, &mbytes)
        .await;
    assert_manifest(&reg, "man/docker", "amd64", DOCKER_MANIFEST, &mbytes).await;

    let mut d = descriptor(DOCKER_MANIFEST, &mbytes);
    d["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let list = json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [d]});
    let lbytes = serde_json::to_vec_pretty(&list).unwrap();
    push_and_check(&reg, "man/docker", "latest", DOCKER_LIST, &lbytes).await;
    assert_manifest(&reg, "man/docker", &mdigest, DOCKER_MANIFEST, &mbytes).await;
}

#[tokio::test]
async fn artifact_manifest_with_empty_config() {
    let reg = TestRegistry::start().await;
    let empty = reg.push_blob("man/artifact", b"{}").await;
    assert_eq!(empty, EMPTY_JSON_DIGEST);
    let payload = random_bytes(700);
    reg.push_blob("man/artifact", &payload).await;
    let body = ManifestBuilder::artifact("application/vnd.example.thing.v1")
        .layer(descriptor(
            "application/vnd.example.thing.layer.v1",
            &payload,
        ))
        .annotation("org.opencontainers.image.title", "thing")
        .build();
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed["config"]["mediaType"], OCI_EMPTY);
    push_and_check(&reg, "man/artifact", "thing", OCI_MANIFEST, &body).await;

    // An artifact with no layers at all (the official suite pushes one).
    let bare = ManifestBuilder::artifact("application/vnd.example.bare").build();
    push_and_check(&reg, "man/artifact", "bare", OCI_MANIFEST, &bare).await;
}

/// A manifest of exactly `size` bytes (padded with an annotation) referencing existing blobs.
fn manifest_of_size(config: &serde_json::Value, size: usize) -> Vec<u8> {
    let base = ManifestBuilder::new(config.clone())
        .annotation("pad", "")
        .build();
    assert!(size >= base.len());
    let pad = "p".repeat(size - base.len());
    let body = ManifestBuilder::new(config.clone())
        .annotation("pad", &pad)
        .build();
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn manifest_size_limit_default_4mib() {
    let reg = TestRegistry::start().await;
    let (config, _) = blobs(&reg, "man/big").await;
    // At least 4 MB is accepted ("SHOULD expect ... at least 4 megabytes").
    let ok = manifest_of_size(&config, 4_000_000);
    push_and_check(&reg, "man/big", "ok", OCI_MANIFEST, &ok).await;
    // Over 4 MiB is refused with 413.
    let too_big = manifest_of_size(&config, 4 * 1024 * 1024 + 1024);
    let resp = reg
        .put_manifest("man/big", "big", OCI_MANIFEST, &too_big)
        .await;
    assert_eq!(resp.status(), 413, "manifest over 4 MiB");
    assert_eq!(get_status(&reg, "man/big", "big").await, 404);
}

#[tokio::test]
async fn manifest_size_limit_is_configurable() {
    let reg = TestRegistry::start_with(|c| c.max_manifest_size = 1024).await;
    let (config, _) = blobs(&reg, "man/limit").await;
    let ok = manifest_of_size(&config, 1000);
    reg.push_manifest("man/limit", "ok", OCI_MANIFEST, &ok)
        .await;
    let big = manifest_of_size(&config, 2000);
    let resp = reg
        .put_manifest("man/limit", "big", OCI_MANIFEST, &big)
        .await;
    assert_eq!(
        resp.status(),
        413,
        "2000-byte manifest with a 1024-byte limit"
    );
    assert_eq!(get_status(&reg, "man/limit", "big").await, 404);
}

#[tokio::test]
async fn multi_tag_push_by_digest() {
    let reg = TestRegistry::start().await;
    let body = image_manifest(&reg, "man/tags").await;
    let digest = sha256_digest(&body);
    // The spec asks for at least 10 tags per request: send 12.
    let mut want: Vec<String> = ["1.2.3", "1.2", "latest"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..9).map(|i| format!("extra{i}")))
        .collect();
    let query: Vec<String> = want.iter().map(|t| format!("tag={t}")).collect();
    let reference = format!("{digest}?{}", query.join("&"));
    let resp = reg
        .put_manifest("man/tags", &reference, OCI_MANIFEST, &body)
        .expect(201)
        .await;
    let mut tags = header_values(resp.headers(), "oci-tag");
    tags.sort();
    want.sort();
    assert_eq!(tags, want, "OCI-Tag header(s)");
    for t in &want {
        assert_manifest(&reg, "man/tags", t, OCI_MANIFEST, &body).await;
    }
    let v: serde_json::Value = reg.get("/v2/man/tags/tags/list").json().await;
    let mut listed: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
    listed.sort();
    assert_eq!(listed, want);
}

#[tokio::test]
async fn put_by_wrong_digest_is_digest_invalid() {
    let reg = TestRegistry::start().await;
    let body = image_manifest(&reg, "man/wrong").await;
    let wrong = sha256_digest(b"not the manifest");
    let codes = ["DIGEST_INVALID"];
    let target = format!("man/wrong:{wrong}");
    refused(&reg, &target, OCI_MANIFEST, &body, &codes).await;
    assert_eq!(
        get_status(&reg, "man/wrong", &sha256_digest(&body)).await,
        404
    );
}

#[tokio::test]
async fn delete_by_digest_removes_manifest_and_its_tags() {
    let reg = TestRegistry::start().await;
    let img = image_tagged(&reg, "man/del", ["one", "two"]).await;
    let keep = reg.push_image("man/del", Some("keep"), 1).await;

    reg.delete(format!("/v2/man/del/manifests/{}", img.digest))
        .expect(202)
        .await;
    for reference in [img.digest.as_str(), "one", "two"] {
        manifest_unknown(reg.get(format!("/v2/man/del/manifests/{reference}"))).await;
        let resp = reg.head(format!("/v2/man/del/manifests/{reference}")).await;
        assert_eq!(resp.status(), 404, "HEAD {reference} after delete");
    }
    // Tags of the deleted manifest are gone from the list; others stay.
    let v: serde_json::Value = reg.get("/v2/man/del/tags/list").json().await;
    assert_eq!(
        v["tags"],
        json!(["keep"]),
        "tags after deleting the manifest"
    );
    assert_manifest(&reg, "man/del", "keep", OCI_MANIFEST, &keep.manifest).await;
    // Deleting again: 404 MANIFEST_UNKNOWN.
    manifest_unknown(reg.delete(format!("/v2/man/del/manifests/{}", img.digest))).await;
}

#[tokio::test]
async fn delete_by_tag_removes_only_that_tag() {
    let reg = TestRegistry::start().await;
    let img = image_tagged(&reg, "man/untag", ["a", "b"]).await;
    let resp = reg.delete("/v2/man/untag/manifests/a").await;
    assert_eq!(resp.status(), 202, "DELETE by tag");
    manifest_unknown(reg.get("/v2/man/untag/manifests/a")).await;
    assert_manifest(&reg, "man/untag", "b", OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&reg, "man/untag", &img.digest, OCI_MANIFEST, &img.manifest).await;
    let v: serde_json::Value = reg.get("/v2/man/untag/tags/list").json().await;
    assert_eq!(v["tags"], json!(["b"]));
    // Deleting an unknown tag: 404.
    manifest_unknown(reg.delete("/v2/man/untag/manifests/a")).await;
}

#[tokio::test]
async fn unknown_manifest_is_404_manifest_unknown() {
    let reg = TestRegistry::start().await;
    reg.push_image("man/unknown", Some("present"), 1).await;
    for reference in ["absent".to_owned(), sha256_digest(b"no such manifest")] {
        let url = reg.url(&format!("/v2/man/unknown/manifests/{reference}"));
        reg.get(&url).error(404, &["MANIFEST_UNKNOWN"]).await;
        let resp = reg.head(&url).expect(404).await;
        assert!(resp.bytes().await.unwrap().is_empty());
        reg.delete(&url).error(404, &["MANIFEST_UNKNOWN"]).await;
    }
    // A repository that does not exist.
    reg.get("/v2/no/such/repo/manifests/latest")
        .error(404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"])
        .await;
    // A manifest from another repository is not served here.
    let other = reg.push_image("man/elsewhere", Some("x"), 1).await;
    manifest_unknown(reg.get(format!("/v2/man/unknown/manifests/{}", other.digest))).await;
}

#[tokio::test]
async fn retagging_moves_the_tag() {
    let reg = TestRegistry::start().await;
    let a = reg.push_image("man/retag", Some("latest"), 1).await;
    let b = reg.push_image("man/retag", Some("latest"), 1).await;
    assert_ne!(a.digest, b.digest);
    assert_manifest(&reg, "man/retag", "latest", OCI_MANIFEST, &b.manifest).await;
    // The old one is still there by digest.
    assert_manifest(&reg, "man/retag", &a.digest, OCI_MANIFEST, &a.manifest).await;
}

#[tokio::test]
async fn pushing_the_same_manifest_again_is_idempotent() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("man/again", Some("t"), 1).await;
    reg.put_manifest("man/again", "t", OCI_MANIFEST, &img.manifest)
        .expect(201)
        .await;
    reg.put_manifest("man/again", &img.digest, OCI_MANIFEST, &img.manifest)
        .expect(201)
        .await;
    assert_manifest(&reg, "man/again", "t", OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_manifest_all_succeed() {
    let reg = TestRegistry::start().await;
    let body = image_manifest(&reg, "man/race").await;
    let digest = sha256_digest(&body);
    let calls = (0..8)
        .map(|i| {
            let reference = if i % 2 == 0 { "same" } else { &digest };
            reg.put_manifest("man/race", reference, OCI_MANIFEST, &body)
        })
        .collect();
    for status in at_once(calls).await {
        assert_eq!(status, 201, "one of 8 concurrent manifest pushes failed");
    }
    assert_manifest(&reg, "man/race", "same", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn concurrent_pushes_of_different_tags() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("man/many", None, 1).await;
    let calls = (0..8)
        .map(|i| reg.put_manifest("man/many", &format!("t{i}"), OCI_MANIFEST, &img.manifest))
        .collect();
    for status in at_once(calls).await {
        assert_eq!(status, 201);
    }
    let v: serde_json::Value = reg.get("/v2/man/many/tags/list").json().await;
    let want: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    assert_eq!(v["tags"], json!(want));
}

#[tokio::test]
async fn bad_tags_are_rejected() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("man/badtag", None, 1).await;
    let long = "a".repeat(129);
    for bad in [".hidden", "-dash", "has:colon", "a+b", long.as_str()] {
        reg.put_manifest("man/badtag", bad, OCI_MANIFEST, &img.manifest)
            .error(400, &["MANIFEST_INVALID", "NAME_INVALID", "DIGEST_INVALID"])
            .await;
        let resp = reg.get(format!("/v2/man/badtag/manifests/{bad}")).await;
        let st = resp.status().as_u16();
        assert!(st == 400 || st == 404, "GET bad tag {bad}: {st}");
        expect_client_error(resp).await;
    }
    // 128 characters is the longest valid tag.
    let max = format!("_{}", "A".repeat(127));
    push_and_check(&reg, "man/badtag", &max, OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn manifest_survives_restart() {
    let mut reg = TestRegistry::start().await;
    let img = reg.push_image("man/persist", Some("v1"), 2).await;
    reg.restart().await;
    assert_manifest(&reg, "man/persist", "v1", OCI_MANIFEST, &img.manifest).await;
    let resp = reg
        .get(format!("/v2/man/persist/blobs/{}", img.config_digest))
        .await;
    assert_eq!(resp.bytes().await.unwrap(), img.config);
}

#[tokio::test]
async fn manifest_content_type_parameters_are_ignored() {
    let reg = TestRegistry::start().await;
    let body = image_manifest(&reg, "man/params").await;
    let resp = reg
        .put_manifest(
            "man/params",
            "t",
            &format!("{OCI_MANIFEST}; charset=utf-8"),
            &body,
        )
        .await;
    assert_eq!(resp.status(), 201, "Content-Type with a parameter");
    let resp = reg.get("/v2/man/params/manifests/t").await;
    let ct = header(resp.headers(), "content-type")
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        ct.split(';').next().unwrap().trim(),
        OCI_MANIFEST,
        "Content-Type of GET"
    );
}
