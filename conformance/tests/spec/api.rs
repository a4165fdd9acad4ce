//! `/v2/` (determining support), health endpoints, unknown query parameters and `ns`.

use conformance::{expect_header, header, TestRegistry};

#[tokio::test]
async fn v2_root_answers_200_with_api_version_header() {
    let reg = TestRegistry::start().await;
    let resp = reg.get("/v2/").expect(200).await;
    expect_header(
        resp.headers(),
        "docker-distribution-api-version",
        "registry/2.0",
    );
    // Without the trailing slash too: clients probe both.
    let resp = reg.get("/v2").await;
    assert_eq!(resp.status(), 200, "GET /v2 (no trailing slash)");
    // HEAD /v2/ answers the same status with no body.
    let resp = reg.head("/v2/").expect(200).await;
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn health_endpoints_answer_200() {
    let reg = TestRegistry::start().await;
    for path in ["/livez", "/readyz"] {
        let resp = reg.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
    }
}

#[tokio::test]
async fn unknown_query_parameters_are_accepted_and_ns_is_echoed() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("ns/app", Some("v1"), 1).await;

    for reference in ["v1", img.digest.as_str()] {
        let path = format!("/v2/ns/app/manifests/{reference}?ns=example.com");
        let resp = reg.get(&path).await;
        assert_eq!(
            resp.status(),
            200,
            "GET manifest {reference}?ns=example.com"
        );
        assert_eq!(
            header(resp.headers(), "oci-namespace"),
            Some("example.com"),
            "OCI-Namespace must echo the ns parameter"
        );
        assert_eq!(resp.bytes().await.unwrap(), img.manifest);
        let resp = reg.head(&path).await;
        assert_eq!(
            resp.status(),
            200,
            "HEAD manifest {reference}?ns=example.com"
        );
    }

    // Blob pulls with ns (containerd adds it to every request of a mirror).
    let resp = reg
        .get(format!(
            "/v2/ns/app/blobs/{}?ns=example.com",
            img.config_digest
        ))
        .expect(200)
        .await;
    expect_header(resp.headers(), "oci-namespace", "example.com");
    assert_eq!(resp.bytes().await.unwrap(), img.config);

    // An unrelated unknown parameter changes nothing, and no OCI-Namespace without ns.
    let resp = reg
        .get("/v2/ns/app/manifests/v1?foo=bar&x")
        .expect(200)
        .await;
    assert!(header(resp.headers(), "oci-namespace").is_none());
    assert_eq!(resp.bytes().await.unwrap(), img.manifest);

    // Uploads with ns work too.
    let data = conformance::random_bytes(100);
    let digest = conformance::sha256_digest(&data);
    let resp = reg
        .post(format!(
            "/v2/ns/app/blobs/uploads/?ns=example.com&digest={digest}"
        ))
        .octets(data.clone())
        .await;
    assert_eq!(resp.status(), 201, "single POST upload with ns");
    reg.get("/v2/ns/app/tags/list?ns=example.com")
        .expect(200)
        .await;
}
