//! The official OCI conformance suite's four workflows (Pull, Push, Content Discovery,
//! Content Management), run end to end in their order against one server.

use conformance::{
    descriptor, empty_descriptor, expect_header, header, header_values, location, next_link,
    random_bytes, sha256_digest, with_query, IndexBuilder, ManifestBuilder, TestRegistry,
    OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use serde_json::{json, Value};

#[tokio::test]
async fn pull_workflow() {
    let reg = TestRegistry::start().await;
    let repo = "conformance/pull";
    // Setup as the official suite does: config, layer, manifest by tag; then an index.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = random_bytes(10_000);
    reg.push_blob(repo, config).await;
    let layer_d = reg.push_blob(repo, &layer).await;
    let manifest = ManifestBuilder::new(descriptor(OCI_CONFIG, config))
        .layer(descriptor(OCI_LAYER, &layer))
        .build();
    let md = reg
        .push_manifest(repo, "tagtest0", OCI_MANIFEST, &manifest)
        .await;
    let index = IndexBuilder::new()
        .manifest(descriptor(OCI_MANIFEST, &manifest))
        .build();
    let idx_d = reg.push_manifest(repo, "index", OCI_INDEX, &index).await;

    // Blobs.
    let missing = sha256_digest(b"missing blob");
    reg.request(reqwest::Method::HEAD, format!("/v2/{repo}/blobs/{missing}"))
        .expect(404)
        .await;
    reg.request(reqwest::Method::HEAD, format!("/v2/{repo}/blobs/{layer_d}"))
        .expect(200)
        .await;
    reg.get(format!("/v2/{repo}/blobs/{missing}"))
        .error(404, &["BLOB_UNKNOWN"])
        .await;
    let resp = reg
        .get(format!("/v2/{repo}/blobs/{layer_d}"))
        .expect(200)
        .await;
    assert_eq!(resp.bytes().await.unwrap(), layer);

    // Manifests.
    reg.request(
        reqwest::Method::HEAD,
        format!("/v2/{repo}/manifests/nonexistent"),
    )
    .expect(404)
    .await;
    for reference in ["tagtest0", md.as_str()] {
        let resp = reg
            .head(format!("/v2/{repo}/manifests/{reference}"))
            .expect(200)
            .await;
        expect_header(resp.headers(), "docker-content-digest", md.as_str());
        expect_header(
            resp.headers(),
            "content-length",
            manifest.len().to_string().as_str(),
        );
        let resp = reg
            .get(format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", OCI_MANIFEST)
            .expect(200)
            .await;
        assert_eq!(resp.bytes().await.unwrap(), manifest);
    }
    let resp = reg
        .get(format!("/v2/{repo}/manifests/{idx_d}"))
        .header("accept", OCI_INDEX)
        .expect(200)
        .await;
    expect_header(resp.headers(), "content-type", OCI_INDEX);
    assert_eq!(resp.bytes().await.unwrap(), index);
    reg.get(format!("/v2/{repo}/manifests/nonexistent"))
        .error(404, &["MANIFEST_UNKNOWN"])
        .await;
    // Nonexistent repository.
    reg.get("/v2/conformance/nope/manifests/tagtest0")
        .expect(404)
        .await;
}

#[tokio::test]
async fn push_workflow() {
    let reg = TestRegistry::start().await;
    let repo = "conformance/push";

    // Streamed: POST, PATCH (no Content-Range), PUT.
    let streamed = random_bytes(65_536);
    let loc = reg.start_upload(repo).await;
    let resp = reg.patch(&loc).octets(streamed.clone()).expect(202).await;
    expect_header(resp.headers(), "range", "0-65535");
    let loc = location(&resp);
    let resp = reg
        .put(with_query(&loc, "digest", &sha256_digest(&streamed)))
        .expect(201)
        .await;
    assert!(header(resp.headers(), "location").is_some());

    // Monolithic: POST+PUT, then single POST; an invalid digest is refused.
    let mono = random_bytes(4000);
    reg.push_blob(repo, &mono).await;
    let single = random_bytes(4001);
    let resp = reg
        .post(format!(
            "/v2/{repo}/blobs/uploads/?digest={}",
            sha256_digest(&single)
        ))
        .octets(single.clone())
        .expect(201)
        .await;
    assert!(header(resp.headers(), "location").is_some());
    let loc = reg.start_upload(repo).await;
    reg.put(with_query(&loc, "digest", "sha256:totallywrong"))
        .body(mono.clone())
        .expect(400)
        .await;

    // Chunked: out-of-order first chunk is 416; in order works; status is 204.
    let chunked = random_bytes(30_000);
    let loc = reg.start_upload(repo).await;
    reg.patch(&loc)
        .header("content-range", "10000-19999")
        .body(chunked[10_000..20_000].to_vec())
        .expect(416)
        .await;
    let resp = reg
        .patch(&loc)
        .header("content-range", "0-9999")
        .body(chunked[..10_000].to_vec())
        .expect(202)
        .await;
    expect_header(resp.headers(), "range", "0-9999");
    let loc = location(&resp);
    let resp = reg.get(&loc).expect(204).await;
    expect_header(resp.headers(), "range", "0-9999");
    let loc = location(&resp);
    let resp = reg
        .patch(&loc)
        .header("content-range", "10000-19999")
        .body(chunked[10_000..20_000].to_vec())
        .expect(202)
        .await;
    let loc = location(&resp);
    reg.put(with_query(&loc, "digest", &sha256_digest(&chunked)))
        .header("content-range", "20000-29999")
        .body(chunked[20_000..].to_vec())
        .expect(201)
        .await;

    // Cross-repository mount.
    let other = "conformance/push-other";
    let md = sha256_digest(&mono);
    let resp = reg
        .post(format!("/v2/{other}/blobs/uploads/?mount={md}&from={repo}"))
        .expect(201)
        .await;
    expect_header(resp.headers(), "docker-content-digest", md.as_str());
    reg.post(format!(
        "/v2/{other}/blobs/uploads/?mount={}&from={repo}",
        sha256_digest(b"nope")
    ))
    .expect(202)
    .await;
    reg.post(format!("/v2/{other}-auto/blobs/uploads/?mount={md}"))
        .expect(201)
        .await;

    // Manifest upload.
    reg.get(format!("/v2/{repo}/manifests/tagtest0"))
        .expect(404)
        .await;
    let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
    reg.push_blob(repo, cfg).await;
    let m = ManifestBuilder::new(descriptor(OCI_CONFIG, cfg))
        .layer(descriptor(OCI_LAYER, &streamed))
        .layer(descriptor(OCI_LAYER, &chunked))
        .build();
    let resp = reg
        .put_manifest(repo, "tagtest0", OCI_MANIFEST, &m)
        .expect(201)
        .await;
    expect_header(
        resp.headers(),
        "docker-content-digest",
        sha256_digest(&m).as_str(),
    );
    assert!(header(resp.headers(), "location").is_some());
    // A manifest with no layers (an artifact) is accepted.
    reg.push_blob(repo, b"{}").await;
    let bare = ManifestBuilder::artifact("application/vnd.oci.conformance").build();
    reg.put_manifest(repo, "bare", OCI_MANIFEST, &bare)
        .expect(201)
        .await;
    // Multi-tag push by digest.
    let reference = format!("{}?tag=t1&tag=t2", sha256_digest(&m));
    let resp = reg
        .put_manifest(repo, &reference, OCI_MANIFEST, &m)
        .expect(201)
        .await;
    let mut t = header_values(resp.headers(), "oci-tag");
    t.sort();
    assert_eq!(t, vec!["t1", "t2"]);
    let resp = reg
        .get(format!("/v2/{repo}/manifests/{}", sha256_digest(&m)))
        .expect(200)
        .await;
    assert_eq!(resp.bytes().await.unwrap(), m);
}

#[tokio::test]
async fn content_discovery_workflow() {
    let reg = TestRegistry::start().await;
    let repo = "conformance/discovery";
    let img = reg.push_image(repo, None, 1).await;
    let tags: Vec<String> = (0..4).map(|i| format!("test{i}")).collect();
    for t in &tags {
        reg.push_manifest(repo, t, OCI_MANIFEST, &img.manifest)
            .await;
    }
    let resp = reg.get(format!("/v2/{repo}/tags/list")).expect(200).await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["tags"], json!(tags));

    let resp = reg
        .get(format!("/v2/{repo}/tags/list?n=2"))
        .expect(200)
        .await;
    assert!(next_link(resp.headers()).is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["tags"], json!(["test0", "test1"]));
    let resp = reg
        .get(format!("/v2/{repo}/tags/list?n=2&last=test1"))
        .await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["tags"], json!(["test2", "test3"]));

    // Referrers: two artifacts and an index refer to the image.
    reg.push_blob(repo, b"{}").await;
    let mut refs = Vec::new();
    for at in [
        "application/vnd.oci.conformance.a",
        "application/vnd.oci.conformance.b",
    ] {
        let a = ManifestBuilder::artifact(at)
            .layer(empty_descriptor())
            .subject(img.descriptor())
            .annotation("org.opencontainers.conformance.test", "true")
            .build();
        let d = sha256_digest(&a);
        let resp = reg
            .put_manifest(repo, &d, OCI_MANIFEST, &a)
            .expect(201)
            .await;
        expect_header(resp.headers(), "oci-subject", img.digest.as_str());
        refs.push(d);
    }
    let resp = reg
        .get(format!("/v2/{repo}/referrers/{}", img.digest))
        .expect(200)
        .await;
    expect_header(resp.headers(), "content-type", OCI_INDEX);
    let v: Value = resp.json().await.unwrap();
    let mut got: Vec<String> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    refs.sort();
    assert_eq!(got, refs);
    let resp = reg
        .get(format!(
            "/v2/{repo}/referrers/{}?artifactType=application/vnd.oci.conformance.a",
            img.digest
        ))
        .await;
    expect_header(resp.headers(), "oci-filters-applied", "artifactType");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.oci.conformance.a"
    );
}

#[tokio::test]
async fn content_management_workflow() {
    let reg = TestRegistry::start().await;
    let repo = "conformance/management";
    let img = reg.push_image(repo, Some("tagtest0"), 1).await;
    reg.push_manifest(repo, "tagtest1", OCI_MANIFEST, &img.manifest)
        .await;

    // Delete a tag; the other tag and the digest still resolve.
    reg.delete(format!("/v2/{repo}/manifests/tagtest0"))
        .expect(202)
        .await;
    for (tag, status) in [("tagtest0", 404), ("tagtest1", 200)] {
        let path = format!("/v2/{repo}/manifests/{tag}");
        reg.get(path).expect(status).await;
    }
    let v: Value = reg.get(format!("/v2/{repo}/tags/list")).json().await;
    assert_eq!(v["tags"], json!(["tagtest1"]));

    // Delete the manifest by digest: digest and remaining tag are gone.
    reg.delete(format!("/v2/{repo}/manifests/{}", img.digest))
        .expect(202)
        .await;
    for r in [img.digest.as_str(), "tagtest1"] {
        reg.get(format!("/v2/{repo}/manifests/{r}"))
            .error(404, &["MANIFEST_UNKNOWN"])
            .await;
    }

    // Delete the blobs.
    let layer_d = sha256_digest(&img.layers[0]);
    for d in [img.config_digest.as_str(), layer_d.as_str()] {
        reg.delete(format!("/v2/{repo}/blobs/{d}"))
            .expect(202)
            .await;
        reg.get(format!("/v2/{repo}/blobs/{d}"))
            .error(404, &["BLOB_UNKNOWN"])
            .await;
    }
    // Deleting from a repository that does not exist: 404.
    reg.delete(format!("/v2/conformance/none/manifests/{}", img.digest))
        .expect(404)
        .await;
}
