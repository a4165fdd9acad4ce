//! What the official OCI conformance suites check beyond the sections above: references that
//! cannot name a manifest (v1.1.1 asks for `.INVALID_MANIFEST_NAME`), sparse manifests (the
//! redesigned suite's "sparse" data set, behind a per-repository setting), paginated referrers,
//! and HEAD answering with exactly the headers of GET for every manifest type and `Accept` list.

use conformance::{
    descriptor, empty_descriptor, expect_header, header, next_link, random_bytes, sha256_digest,
    Call, IndexBuilder, ManifestBuilder, TestRegistry, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST,
    DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use registry::config::SparseRule;
use serde_json::{json, Value};

/// References that are not valid tags (nor digest-shaped).
fn unnameable() -> Vec<String> {
    vec![
        ".INVALID_MANIFEST_NAME".into(),
        "-dash".into(),
        "a+b".into(),
        "a".repeat(129),
    ]
}

#[tokio::test]
async fn a_reference_that_names_nothing_is_manifest_unknown_on_get_and_head() {
    let reg = TestRegistry::start().await;
    reg.push_image("off/invalid", Some("real"), 1).await;
    for repo in ["off/invalid", "off/never-pushed"] {
        for bad in unnameable() {
            let url = reg.url(&format!("/v2/{repo}/manifests/{bad}"));
            reg.get(&url).error(404, &["MANIFEST_UNKNOWN"]).await;
            let resp = reg.head(&url).await;
            assert_eq!(resp.status(), 404, "HEAD {url}");
            assert!(resp.bytes().await.unwrap().is_empty(), "HEAD {url} body");
        }
        // A malformed digest is said to be one, as on every other endpoint.
        for bad in ["sha256:xyz", "sha256:"] {
            let url = reg.url(&format!("/v2/{repo}/manifests/{bad}"));
            reg.get(&url).error(400, &["DIGEST_INVALID"]).await;
        }
    }
}

#[tokio::test]
async fn a_manifest_put_under_an_invalid_tag_stays_a_bad_request() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("off/badput", None, 1).await;
    for bad in [".INVALID_MANIFEST_NAME", "-dash", "a+b"] {
        reg.put_manifest("off/badput", bad, OCI_MANIFEST, &img.manifest)
            .error(400, &["MANIFEST_INVALID", "TAG_INVALID", "NAME_INVALID"])
            .await;
    }
}

/// An image manifest whose config is pushed and whose second layer is not; returns (manifest
/// bytes, the missing layer's digest).
async fn image_missing_a_layer(reg: &TestRegistry, repo: &str) -> (Vec<u8>, String) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"n":"{}"}}"#,
        conformance::random_suffix()
    );
    reg.push_blob(repo, config.as_bytes()).await;
    let present = random_bytes(1500);
    reg.push_blob(repo, &present).await;
    let missing = random_bytes(1700);
    let body = ManifestBuilder::new(descriptor(OCI_CONFIG, config.as_bytes()))
        .layer(descriptor(OCI_LAYER, &present))
        .layer(descriptor(OCI_LAYER, &missing))
        .build();
    (body, sha256_digest(&missing))
}

/// An index of one pushed image and one child manifest that was never pushed; returns (index
/// bytes, the pushed child's digest, the missing child's digest).
async fn index_missing_a_child(reg: &TestRegistry, repo: &str) -> (Vec<u8>, String, String) {
    let img = reg.push_image(repo, None, 1).await;
    let mut present = img.descriptor();
    present["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let ghost_bytes = random_bytes(1024);
    let mut ghost = descriptor(OCI_MANIFEST, &ghost_bytes);
    ghost["platform"] = json!({"architecture": "arm64", "os": "linux"});
    let body = IndexBuilder::new()
        .manifest(present)
        .manifest(ghost)
        .build();
    (body, img.digest, sha256_digest(&ghost_bytes))
}

/// Asserts a 400 MANIFEST_BLOB_UNKNOWN whose body names `missing`.
async fn refused_naming(put: Call, missing: &str) {
    let body = put.error(400, &["MANIFEST_BLOB_UNKNOWN"]).await;
    assert!(
        body.to_string().contains(missing),
        "the refusal should name the missing digest {missing}: {body}"
    );
}

/// An image manifest whose layer is missing, PUT as `repo:tag`, is refused naming the layer.
async fn sparse_image_refused(reg: &TestRegistry, repo: &str, tag: &str) {
    let (image, missing_layer) = image_missing_a_layer(reg, repo).await;
    let put = reg.put_manifest(repo, tag, OCI_MANIFEST, &image);
    refused_naming(put, &missing_layer).await;
}

/// An index whose child is missing, PUT as `repo:tag`, is refused naming the child.
async fn sparse_index_refused(reg: &TestRegistry, repo: &str, tag: &str) {
    let (index, _, missing_child) = index_missing_a_child(reg, repo).await;
    let put = reg.put_manifest(repo, tag, OCI_INDEX, &index);
    refused_naming(put, &missing_child).await;
}

#[tokio::test]
async fn sparse_manifests_are_refused_by_default_naming_what_is_missing() {
    let reg = TestRegistry::start().await;
    sparse_image_refused(&reg, "conformance/repo1", "sparse-image").await;
    sparse_index_refused(&reg, "conformance/repo1", "sparse-index").await;
    // Nothing was stored under either tag.
    let tags: Value = reg.get("/v2/conformance/repo1/tags/list").json().await;
    assert_eq!(tags["tags"], json!([]), "{tags}");
}

fn sparse(pattern: &str, index_children: bool, image_layers: bool) -> Vec<SparseRule> {
    vec![SparseRule::new(pattern, index_children, image_layers)]
}

/// GET and HEAD of `reference` answer 200 with `body`, its digest, type and length.
async fn serves(reg: &TestRegistry, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let url = reg.url(&format!("/v2/{repo}/manifests/{reference}"));
    let digest = sha256_digest(body);
    for head in [false, true] {
        let req = if head {
            reg.client().head(&url)
        } else {
            reg.client().get(&url)
        };
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.status(),
            200,
            "{} {url}",
            if head { "HEAD" } else { "GET" }
        );
        let h = resp.headers().clone();
        assert_eq!(header(&h, "docker-content-digest"), Some(digest.as_str()));
        assert_eq!(header(&h, "content-type"), Some(media_type));
        assert_eq!(
            header(&h, "content-length"),
            Some(body.len().to_string().as_str())
        );
        if !head {
            assert_eq!(&resp.bytes().await.unwrap()[..], body);
        }
    }
}

#[tokio::test]
async fn the_official_sparse_data_set_passes_with_the_setting_on() {
    let reg = TestRegistry::start_with(|c| c.sparse = sparse("conformance/**", true, true)).await;
    let repo = "conformance/repo1";
    let (image, missing_layer) = image_missing_a_layer(&reg, repo).await;
    let image_digest = reg
        .push_manifest(repo, "sparse-image", OCI_MANIFEST, &image)
        .await;
    let (index, child, missing_child) = index_missing_a_child(&reg, repo).await;
    let index_digest = reg
        .push_manifest(repo, "sparse-index", OCI_INDEX, &index)
        .await;
    serves(&reg, repo, "sparse-image", OCI_MANIFEST, &image).await;
    serves(&reg, repo, &image_digest, OCI_MANIFEST, &image).await;
    serves(&reg, repo, "sparse-index", OCI_INDEX, &index).await;
    serves(&reg, repo, &index_digest, OCI_INDEX, &index).await;
    let tags: Value = reg.get(format!("/v2/{repo}/tags/list")).json().await;
    assert_eq!(tags["tags"], json!(["sparse-image", "sparse-index"]));
    // What was never pushed is still unknown; the child that was pushed is served.
    reg.get(format!("/v2/{repo}/blobs/{missing_layer}"))
        .error(404, &["BLOB_UNKNOWN"])
        .await;
    reg.get(format!("/v2/{repo}/manifests/{missing_child}"))
        .error(404, &["MANIFEST_UNKNOWN"])
        .await;
    reg.get(format!("/v2/{repo}/manifests/{child}"))
        .expect(200)
        .await;
    // Deletion works as for any manifest.
    for d in [&index_digest, &image_digest] {
        let resp = reg.delete(format!("/v2/{repo}/manifests/{d}")).await;
        assert_eq!(resp.status(), 202, "DELETE {d}");
        reg.get(format!("/v2/{repo}/manifests/{d}"))
            .error(404, &["MANIFEST_UNKNOWN"])
            .await;
    }
}

#[tokio::test]
async fn sparse_rules_are_per_kind_and_per_repository() {
    let reg = TestRegistry::start_with(|c| c.sparse = sparse("mirror/**", true, false)).await;
    // Index children may be missing under mirror/**, image layers may not.
    let (index, _, _) = index_missing_a_child(&reg, "mirror/a").await;
    reg.push_manifest("mirror/a", "idx", OCI_INDEX, &index)
        .await;
    sparse_image_refused(&reg, "mirror/a", "img").await;
    // Outside the pattern nothing may be missing.
    sparse_index_refused(&reg, "builds/a", "idx").await;

    let reg = TestRegistry::start_with(|c| c.sparse = sparse("mirror/**", false, true)).await;
    let (image, _) = image_missing_a_layer(&reg, "mirror/b").await;
    reg.push_manifest("mirror/b", "img", OCI_MANIFEST, &image)
        .await;
    sparse_index_refused(&reg, "mirror/b", "idx").await;
    // Missing layers are allowed, a missing config is not: nothing could run the image.
    let layer = random_bytes(900);
    reg.push_blob("mirror/b", &layer).await;
    let ghost_config = br#"{"architecture":"amd64","os":"linux","ghost":true}"#;
    let body = ManifestBuilder::new(descriptor(OCI_CONFIG, ghost_config))
        .layer(descriptor(OCI_LAYER, &layer))
        .build();
    let put = reg.put_manifest("mirror/b", "noconfig", OCI_MANIFEST, &body);
    refused_naming(put, &sha256_digest(ghost_config)).await;
}

/// Pushes `n` artifacts whose subject is `subject`, alternating two artifact types; returns
/// their digests.
async fn push_referrers(reg: &TestRegistry, repo: &str, subject: &Value, n: usize) -> Vec<String> {
    reg.push_blob(repo, b"{}").await;
    let mut digests = Vec::new();
    for i in 0..n {
        let at = if i % 2 == 0 {
            "application/vnd.example.sig"
        } else {
            "application/vnd.example.sbom"
        };
        let body = ManifestBuilder::artifact(at)
            .layer(empty_descriptor())
            .subject(subject.clone())
            .annotation("n", &i.to_string())
            .build();
        let d = sha256_digest(&body);
        reg.push_manifest(repo, &d, OCI_MANIFEST, &body).await;
        digests.push(d);
    }
    digests
}

/// Follows the referrers pages from `first`; returns each page's digests and whether it carried
/// `OCI-Filters-Applied`.
async fn referrer_pages(reg: &TestRegistry, first: String) -> Vec<(Vec<String>, bool)> {
    let mut pages = Vec::new();
    let mut next = Some(first);
    while let Some(url) = next.take() {
        assert!(pages.len() < 50, "referrers pagination does not end");
        let resp = reg.get(reg.resolve(&url)).await;
        assert_eq!(resp.status(), 200, "GET {url}");
        expect_header(resp.headers(), "content-type", OCI_INDEX);
        let filtered = header(resp.headers(), "oci-filters-applied") == Some("artifactType");
        next = next_link(resp.headers());
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["mediaType"], OCI_INDEX);
        let digests = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_owned())
            .collect();
        pages.push((digests, filtered));
    }
    pages
}

#[tokio::test]
async fn referrers_are_paginated_with_link_and_a_bounded_page() {
    let reg = TestRegistry::start_with(|c| c.referrers_page_size = 4).await;
    let repo = "off/referrers";
    let subject = reg.push_image(repo, Some("s"), 1).await;
    let mut pushed = push_referrers(&reg, repo, &subject.descriptor(), 11).await;
    pushed.sort();
    let base = format!("/v2/{repo}/referrers/{}", subject.digest);

    // No `n`: pages of the configured bound, in digest order, each referrer exactly once.
    let pages = referrer_pages(&reg, base.clone()).await;
    let sizes: Vec<usize> = pages.iter().map(|(p, _)| p.len()).collect();
    assert_eq!(sizes, vec![4, 4, 3], "{pages:?}");
    let all: Vec<String> = pages.into_iter().flat_map(|(p, _)| p).collect();
    assert_eq!(all, pushed);

    // A smaller `n` is honoured, a larger one is capped at the bound.
    let sizes: Vec<usize> = referrer_pages(&reg, format!("{base}?n=5"))
        .await
        .iter()
        .map(|(p, _)| p.len())
        .collect();
    assert_eq!(sizes, vec![4, 4, 3]);
    let sizes: Vec<usize> = referrer_pages(&reg, format!("{base}?n=2"))
        .await
        .iter()
        .map(|(p, _)| p.len())
        .collect();
    assert_eq!(sizes, vec![2, 2, 2, 2, 2, 1]);

    // The filter is carried from page to page and said on each.
    let pages = referrer_pages(
        &reg,
        format!("{base}?artifactType=application/vnd.example.sig&n=2"),
    )
    .await;
    assert!(
        pages.iter().all(|(_, f)| *f),
        "OCI-Filters-Applied on every page"
    );
    let sigs: Vec<String> = pages.into_iter().flat_map(|(p, _)| p).collect();
    assert_eq!(sigs.len(), 6, "{sigs:?}");
    let mut want: Vec<String> = pushed
        .iter()
        .filter(|d| sigs.contains(d))
        .cloned()
        .collect();
    want.sort();
    assert_eq!(sigs, want);

    // A bad page size is refused.
    reg.get(format!("{base}?n=x")).error(400, &[]).await;
}

/// The `Accept` lists clients send when they resolve a reference: containerd 1.6/1.7, containerd
/// 2.x, and lists naming one type only.
fn accept_lists(media_type: &str) -> Vec<String> {
    vec![
        format!("{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*"),
        format!("{OCI_INDEX}, {DOCKER_LIST}, {OCI_MANIFEST}, {DOCKER_MANIFEST}"),
        media_type.to_owned(),
        // A narrow list that does not name the stored type: served as stored, on HEAD and GET.
        if media_type == DOCKER_MANIFEST {
            OCI_MANIFEST.to_owned()
        } else {
            DOCKER_MANIFEST.to_owned()
        },
    ]
}

#[tokio::test]
async fn head_answers_with_the_headers_of_get_for_every_manifest_type() {
    let reg = TestRegistry::start().await;
    let repo = "off/head";
    let oci = reg.push_image(repo, Some("oci"), 1).await;

    let dconfig =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    reg.push_blob(repo, dconfig).await;
    let dlayer = random_bytes(3000);
    reg.push_blob(repo, &dlayer).await;
    let docker = ManifestBuilder::new(descriptor(DOCKER_CONFIG, dconfig))
        .media_type(Some(DOCKER_MANIFEST))
        .layer(descriptor(DOCKER_LAYER, &dlayer))
        .build();
    let docker_digest = reg
        .push_manifest(repo, "docker", DOCKER_MANIFEST, &docker)
        .await;
    let mut child = descriptor(DOCKER_MANIFEST, &docker);
    child["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let list = IndexBuilder::new()
        .media_type(Some(DOCKER_LIST))
        .manifest(child)
        .build();
    let list_digest = reg.push_manifest(repo, "list", DOCKER_LIST, &list).await;
    let mut ochild = oci.descriptor();
    ochild["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let index = IndexBuilder::new().manifest(ochild).build();
    let index_digest = reg.push_manifest(repo, "index", OCI_INDEX, &index).await;

    let cases = [
        ("oci", oci.digest.as_str(), OCI_MANIFEST, &oci.manifest),
        ("docker", docker_digest.as_str(), DOCKER_MANIFEST, &docker),
        ("list", list_digest.as_str(), DOCKER_LIST, &list),
        ("index", index_digest.as_str(), OCI_INDEX, &index),
    ];
    for (tag, digest, media_type, body) in cases {
        for reference in [tag, digest] {
            let url = reg.url(&format!("/v2/{repo}/manifests/{reference}"));
            for accept in accept_lists(media_type) {
                let get = reg.get(&url).header("accept", &accept).await;
                let head = reg.head(&url).header("accept", &accept).await;
                assert_eq!(get.status(), 200, "GET {url} Accept {accept}");
                assert_eq!(head.status(), 200, "HEAD {url} Accept {accept}");
                for name in [
                    "content-type",
                    "docker-content-digest",
                    "content-length",
                    "etag",
                ] {
                    assert_eq!(
                        header(head.headers(), name),
                        header(get.headers(), name),
                        "{name} of HEAD and GET {url} with Accept {accept}"
                    );
                }
                expect_header(get.headers(), "content-type", media_type);
                expect_header(get.headers(), "docker-content-digest", digest);
                assert_eq!(&get.bytes().await.unwrap()[..], &body[..]);
            }
        }
    }
}
