//! The referrers API: `GET /v2/<name>/referrers/<digest>`, `artifactType` filtering, updates on
//! push and delete, `OCI-Subject` on push.

use conformance::{
    descriptor, empty_descriptor, expect_client_error, expect_header, header, random_bytes,
    sha256_digest, Image, IndexBuilder, ManifestBuilder, TestRegistry, OCI_INDEX, OCI_MANIFEST,
};
use serde_json::{json, Value};

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG: &str = "application/vnd.example.signature.v1";
const CUSTOM_CONFIG: &str = "application/vnd.example.config.v1+json";

/// GETs the referrers of `digest` in `repo` (with an optional filter); asserts 200 and the index
/// shape; returns (descriptors, the `OCI-Filters-Applied` header).
async fn referrers(
    reg: &TestRegistry,
    repo: &str,
    digest: &str,
    artifact_type: Option<&str>,
) -> (Vec<Value>, Option<String>) {
    let mut url = reg.url(&format!("/v2/{repo}/referrers/{digest}"));
    if let Some(at) = artifact_type {
        // Percent-encode `+` as a form-encoding client does (`+` alone would mean a space).
        url = format!("{url}?artifactType={}", at.replace('+', "%2B"));
    }
    let resp = reg.get(&url).await;
    assert_eq!(resp.status(), 200, "GET {url}");
    let ct = header(resp.headers(), "content-type").map(str::to_owned);
    assert_eq!(ct.as_deref(), Some(OCI_INDEX), "referrers Content-Type");
    let filters = header(resp.headers(), "oci-filters-applied").map(str::to_owned);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2, "{v}");
    assert_eq!(v["mediaType"], OCI_INDEX, "{v}");
    let list = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("\"manifests\" must be a list (empty when none): {v}"))
        .clone();
    (list, filters)
}

fn find<'a>(list: &'a [Value], digest: &str) -> &'a Value {
    list.iter()
        .find(|d| d["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not among referrers {list:?}"))
}

/// Pushes an artifact manifest (by digest) with `subject`; returns (bytes, digest).
async fn push_referrer(
    reg: &TestRegistry,
    repo: &str,
    subject: &Value,
    artifact_type: Option<&str>,
    annotations: &[(&str, &str)],
) -> (Vec<u8>, String) {
    let payload = random_bytes(200);
    reg.push_blob(repo, &payload).await;
    let mut b = match artifact_type {
        Some(at) => ManifestBuilder::artifact(at),
        None => {
            // No artifactType: a config with its own media type (the fallback).
            let cfg = format!("{{\"c\":\"{}\"}}", conformance::random_suffix());
            reg.push_blob(repo, cfg.as_bytes()).await;
            ManifestBuilder::new(descriptor(CUSTOM_CONFIG, cfg.as_bytes()))
        }
    };
    b = b
        .layer(descriptor("application/vnd.example.payload", &payload))
        .subject(subject.clone());
    for (k, v) in annotations {
        b = b.annotation(k, v);
    }
    let body = b.build();
    let digest = sha256_digest(&body);
    let resp = reg.put_manifest(repo, &digest, OCI_MANIFEST, &body).await;
    assert_eq!(resp.status(), 201, "push referrer");
    assert_eq!(
        header(resp.headers(), "oci-subject"),
        subject["digest"].as_str(),
        "OCI-Subject on a push with subject"
    );
    (body, digest)
}

/// The empty config blob artifacts point at, and an image tagged `v1` to be their subject, in
/// `repo`.
async fn subject_image(reg: &TestRegistry, repo: &str) -> Image {
    reg.push_blob(repo, b"{}").await;
    reg.push_image(repo, Some("v1"), 1).await
}

#[tokio::test]
async fn referrers_empty_when_nothing_refers() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("ref/none", Some("v1"), 1).await;
    let (list, _) = referrers(&reg, "ref/none", &img.digest, None).await;
    assert!(list.is_empty());
    // A digest the repository does not have at all.
    let (list, _) = referrers(&reg, "ref/none", &sha256_digest(b"nothing"), None).await;
    assert!(list.is_empty());
    // A filter on an empty list.
    let (list, _) = referrers(&reg, "ref/none", &img.digest, Some(SBOM)).await;
    assert!(list.is_empty());
}

#[tokio::test]
async fn referrers_of_unknown_repository() {
    let reg = TestRegistry::start().await;
    let resp = reg
        .get(format!("/v2/ref/nowhere/referrers/{}", sha256_digest(b"x")))
        .await;
    let st = resp.status().as_u16();
    if st == 200 {
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["manifests"], json!([]));
    } else {
        conformance::expect_error(resp, 404, &["NAME_UNKNOWN"]).await;
    }
}

#[tokio::test]
async fn referrers_list_descriptors_with_artifact_type_and_annotations() {
    let reg = TestRegistry::start().await;
    let img = subject_image(&reg, "ref/list").await;
    let subject = img.descriptor();

    let (sbom, sbom_d) = push_referrer(
        &reg,
        "ref/list",
        &subject,
        Some(SBOM),
        &[
            ("org.example.sbom.format", "json"),
            ("org.opencontainers.image.created", "2024-01-01T00:00:00Z"),
        ],
    )
    .await;
    let (sig, sig_d) = push_referrer(
        &reg,
        "ref/list",
        &subject,
        Some(SIG),
        &[("org.example.fingerprint", "abcd")],
    )
    .await;
    let (plain, plain_d) = push_referrer(&reg, "ref/list", &subject, None, &[]).await;

    // An index with a subject and no artifactType.
    let idx = IndexBuilder::new()
        .manifest(descriptor(OCI_MANIFEST, &sbom))
        .subject(subject.clone())
        .annotation("org.example.kind", "bundle")
        .build();
    let idx_d = sha256_digest(&idx);
    let resp = reg
        .put_manifest("ref/list", &idx_d, OCI_INDEX, &idx)
        .expect(201)
        .await;
    expect_header(resp.headers(), "oci-subject", img.digest.as_str());

    let (list, _) = referrers(&reg, "ref/list", &img.digest, None).await;
    assert_eq!(list.len(), 4, "{list:?}");

    let d = find(&list, &sbom_d);
    assert_eq!(d["mediaType"], OCI_MANIFEST);
    assert_eq!(d["size"], sbom.len());
    assert_eq!(d["artifactType"], SBOM);
    assert_eq!(
        d["annotations"],
        json!({"org.example.sbom.format": "json", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    );

    let d = find(&list, &sig_d);
    assert_eq!(d["size"], sig.len());
    assert_eq!(d["artifactType"], SIG);
    assert_eq!(d["annotations"], json!({"org.example.fingerprint": "abcd"}));

    let d = find(&list, &plain_d);
    assert_eq!(d["size"], plain.len());
    assert_eq!(
        d["artifactType"], CUSTOM_CONFIG,
        "artifactType falls back to the config media type"
    );
    assert!(
        d.get("annotations").is_none() || d["annotations"] == json!({}),
        "no annotations to copy: {d}"
    );

    let d = find(&list, &idx_d);
    assert_eq!(d["mediaType"], OCI_INDEX);
    assert_eq!(d["size"], idx.len());
    assert!(
        d.get("artifactType").is_none(),
        "index without artifactType: {d}"
    );
    assert_eq!(d["annotations"], json!({"org.example.kind": "bundle"}));

    // Filter by artifactType.
    let (list, filters) = referrers(&reg, "ref/list", &img.digest, Some(SBOM)).await;
    assert_eq!(
        filters.as_deref(),
        Some("artifactType"),
        "OCI-Filters-Applied"
    );
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], sbom_d);
    let (list, filters) = referrers(&reg, "ref/list", &img.digest, Some(CUSTOM_CONFIG)).await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], plain_d);
    let (list, filters) = referrers(
        &reg,
        "ref/list",
        &img.digest,
        Some("application/vnd.example.none"),
    )
    .await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert!(list.is_empty());

    // Referrers of one subject are not listed for another.
    let other = reg.push_image("ref/list", Some("v2"), 1).await;
    let (list, _) = referrers(&reg, "ref/list", &other.digest, None).await;
    assert!(list.is_empty());
}

#[tokio::test]
async fn referrer_pushed_before_its_subject() {
    let reg = TestRegistry::start().await;
    reg.push_blob("ref/early", b"{}").await;
    // Build the image first without pushing its manifest.
    let cfg = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    reg.push_blob("ref/early", &cfg).await;
    let manifest = ManifestBuilder::new(descriptor(conformance::OCI_CONFIG, &cfg)).build();
    let subject = descriptor(OCI_MANIFEST, &manifest);
    let (_, ref_d) = push_referrer(&reg, "ref/early", &subject, Some(SIG), &[]).await;
    let subject_d = sha256_digest(&manifest);
    let (list, _) = referrers(&reg, "ref/early", &subject_d, None).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], ref_d);
    // Then the subject arrives; the referrer is still listed.
    reg.push_manifest("ref/early", "v1", OCI_MANIFEST, &manifest)
        .await;
    let (list, _) = referrers(&reg, "ref/early", &subject_d, None).await;
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn deleted_referrer_disappears() {
    let reg = TestRegistry::start().await;
    let img = subject_image(&reg, "ref/del").await;
    let subject = img.descriptor();
    let (_, a) = push_referrer(&reg, "ref/del", &subject, Some(SBOM), &[]).await;
    let (_, b) = push_referrer(&reg, "ref/del", &subject, Some(SIG), &[]).await;
    let (list, _) = referrers(&reg, "ref/del", &img.digest, None).await;
    assert_eq!(list.len(), 2);
    reg.delete(format!("/v2/ref/del/manifests/{a}"))
        .expect(202)
        .await;
    let (list, _) = referrers(&reg, "ref/del", &img.digest, None).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], b);
}

#[tokio::test]
async fn referrers_are_per_repository() {
    let reg = TestRegistry::start().await;
    let img = subject_image(&reg, "ref/one").await;
    push_referrer(&reg, "ref/one", &img.descriptor(), Some(SBOM), &[]).await;
    reg.push_manifest("ref/two", "v1", OCI_MANIFEST, &{
        // Same image in another repository (blobs first).
        reg.push_blob("ref/two", &img.config).await;
        for l in &img.layers {
            reg.push_blob("ref/two", l).await;
        }
        img.manifest.clone()
    })
    .await;
    let (list, _) = referrers(&reg, "ref/two", &img.digest, None).await;
    assert!(
        list.is_empty(),
        "referrers leaked across repositories: {list:?}"
    );
}

#[tokio::test]
async fn referrers_survive_restart() {
    let mut reg = TestRegistry::start().await;
    let img = subject_image(&reg, "ref/persist").await;
    let (_, d) = push_referrer(
        &reg,
        "ref/persist",
        &img.descriptor(),
        Some(SBOM),
        &[("k", "v")],
    )
    .await;
    reg.restart().await;
    let (list, _) = referrers(&reg, "ref/persist", &img.digest, None).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], d);
    assert_eq!(list[0]["annotations"], json!({"k": "v"}));
}

#[tokio::test]
async fn referrers_with_malformed_digest_is_400() {
    let reg = TestRegistry::start().await;
    reg.push_image("ref/bad", Some("v1"), 1).await;
    for bad in ["sha256:nothex", "notadigest", "sha256:abc", "latest"] {
        let resp = reg.get(format!("/v2/ref/bad/referrers/{bad}")).await;
        let st = expect_client_error(resp).await;
        assert_eq!(st, 400, "referrers of {bad:?}");
    }
}

#[tokio::test]
async fn referrer_with_empty_layers_and_subject() {
    // An attestation-like artifact: empty config, one empty layer, subject.
    let reg = TestRegistry::start().await;
    let img = subject_image(&reg, "ref/att").await;
    let body = ManifestBuilder::artifact("application/vnd.example.att")
        .layer(empty_descriptor())
        .subject(img.descriptor())
        .build();
    // Pushed by tag this time: the subject is processed the same way.
    let resp = reg
        .put_manifest("ref/att", "attestation", OCI_MANIFEST, &body)
        .expect(201)
        .await;
    expect_header(resp.headers(), "oci-subject", img.digest.as_str());
    let d = sha256_digest(&body);
    let (list, _) = referrers(&reg, "ref/att", &img.digest, None).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], d);
    assert_eq!(list[0]["artifactType"], "application/vnd.example.att");
}
