//! Error answers: body format, codes for invalid names, digests and references, and the rule
//! that a client's mistake never gets a 5xx.

use conformance::{
    error_codes, expect_client_error, expect_error, raw_request, sha256_digest, TestRegistry,
    OCI_MANIFEST,
};

const BAD_NAMES: &[&str] = &[
    "Upper/case",
    "UPPER",
    "a//b",
    "a/../b",
    "..",
    "a/./b",
    "-lead",
    "trail-",
    "a___b",
    "a..b",
    "a/.hidden",
    "a/_under",
    "sp%20ace",
    "a:b",
];

#[tokio::test]
async fn invalid_repository_names_are_name_invalid() {
    let reg = TestRegistry::start().await;
    let digest = sha256_digest(b"x");
    for name in BAD_NAMES {
        // Written by hand so no client library normalises `..`, `.` or `//` away.
        let cases: Vec<(&str, String, &[u8])> = vec![
            ("GET", format!("/v2/{name}/tags/list"), b""),
            ("GET", format!("/v2/{name}/manifests/latest"), b""),
            ("PUT", format!("/v2/{name}/manifests/latest"), b"{}"),
            ("DELETE", format!("/v2/{name}/manifests/latest"), b""),
            ("GET", format!("/v2/{name}/blobs/{digest}"), b""),
            ("DELETE", format!("/v2/{name}/blobs/{digest}"), b""),
            ("POST", format!("/v2/{name}/blobs/uploads/"), b""),
            ("GET", format!("/v2/{name}/referrers/{digest}"), b""),
        ];
        for (method, path, body) in cases {
            let r = raw_request(reg.base_url(), method, &path, body).await;
            let text = String::from_utf8_lossy(&r.body);
            assert_eq!(
                r.status, 400,
                "{method} {path}: want 400 NAME_INVALID, got {}: {text}",
                r.status
            );
            let codes = error_codes(&r.body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert!(
                codes.iter().any(|c| c == "NAME_INVALID"),
                "{method} {path}: want NAME_INVALID, got {codes:?}"
            );
        }
        // HEAD: the status alone.
        let r = raw_request(
            reg.base_url(),
            "HEAD",
            &format!("/v2/{name}/manifests/latest"),
            b"",
        )
        .await;
        assert_eq!(r.status, 400, "HEAD manifests of {name:?}");
    }
}

#[tokio::test]
async fn valid_but_unusual_names_work() {
    let reg = TestRegistry::start().await;
    for name in [
        "a",
        "0",
        "a__b",
        "a--b",
        "a.b",
        "a_b/c-d/e.f",
        "x1/y2/z3/w4/v5",
    ] {
        let img = reg.push_image(name, Some("t"), 1).await;
        let resp = reg.get(format!("/v2/{name}/manifests/t")).await;
        assert_eq!(resp.status(), 200, "name {name:?}");
        assert_eq!(resp.bytes().await.unwrap(), img.manifest);
    }
}

#[tokio::test]
async fn malformed_digest_on_blob_endpoints() {
    let reg = TestRegistry::start().await;
    reg.push_blob("err/digest", b"exists").await;
    for bad in [
        "sha256:xyz",
        "notadigest",
        "sha256:",
        "sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let resp = reg
                .client()
                .request(
                    method.clone(),
                    reg.url(&format!("/v2/err/digest/blobs/{bad}")),
                )
                .send()
                .await
                .unwrap();
            let st = resp.status().as_u16();
            match st {
                400 => {
                    expect_error(resp, 400, &["DIGEST_INVALID"]).await;
                }
                404 => {
                    expect_error(resp, 404, &["BLOB_UNKNOWN", "DIGEST_INVALID"]).await;
                }
                _ => panic!("{method} blob {bad:?}: want 400 or 404, got {st}"),
            }
        }
        let resp = reg.head(format!("/v2/err/digest/blobs/{bad}")).await;
        let st = resp.status().as_u16();
        assert!(st == 400 || st == 404, "HEAD blob {bad:?}: {st}");
    }
}

#[tokio::test]
async fn malformed_digest_as_manifest_reference() {
    let reg = TestRegistry::start().await;
    reg.push_image("err/mref", Some("t"), 1).await;
    for bad in ["sha256:xyz", "sha256:", "sha256:ABCDEF"] {
        let resp = reg.get(format!("/v2/err/mref/manifests/{bad}")).await;
        let st = expect_client_error(resp).await;
        assert!(st == 400 || st == 404, "GET manifest {bad:?}: {st}");
        let resp = reg.put_manifest("err/mref", bad, OCI_MANIFEST, b"{}").await;
        let st = expect_client_error(resp).await;
        assert_eq!(st, 400, "PUT manifest {bad:?}");
    }
}

/// Status below 500, and when 4xx, a spec error body (unless HEAD).
async fn not_a_server_error(resp: reqwest::Response, what: &str) -> u16 {
    let st = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    assert!(
        st < 500,
        "{what}: a client mistake got {st}: {}",
        String::from_utf8_lossy(&body)
    );
    if st >= 400 {
        if let Err(e) = error_codes(&body) {
            panic!("{what} ({st}): {e}");
        }
    }
    st
}

#[tokio::test]
async fn client_mistakes_never_get_5xx() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("err/misc", Some("t"), 1).await;

    for q in [
        "n=abc",
        "n=-1",
        "n=99999999999999999999999",
        "last=",
        "n=",
        "n=1&n=2",
    ] {
        let resp = reg.get(format!("/v2/err/misc/tags/list?{q}")).await;
        not_a_server_error(resp, &format!("tags/list?{q}")).await;
        let resp = reg.get(format!("/v2/_catalog?{q}")).await;
        not_a_server_error(resp, &format!("_catalog?{q}")).await;
    }

    // Empty and non-JSON manifests, odd content types.
    let resp = reg.put("/v2/err/misc/manifests/x").await;
    let st = not_a_server_error(resp, "PUT empty manifest without Content-Type").await;
    assert_eq!(st, 400);
    let resp = reg
        .put("/v2/err/misc/manifests/x")
        .header("content-type", "application/x-unknown")
        .body(b"{\"schemaVersion\":2}".to_vec())
        .await;
    not_a_server_error(resp, "PUT manifest of unknown type").await;
    let resp = reg
        .put("/v2/err/misc/manifests/x")
        .header("content-type", OCI_MANIFEST)
        .body(vec![0xff, 0xfe, 0x00, 0x01])
        .await;
    assert_eq!(not_a_server_error(resp, "PUT binary manifest").await, 400);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let wrong_types = serde_json::json!({
        "schemaVersion": "two", "mediaType": OCI_MANIFEST,
        "config": "not a descriptor", "layers": {"not": "a list"}
    });
    let negative = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": img.config_digest, "size": -5},
        "layers": []
    });
    for (what, body) in [
        ("PUT deeply nested JSON", deep.into_bytes()),
        (
            "PUT manifest with wrong field types",
            serde_json::to_vec(&wrong_types).unwrap(),
        ),
        (
            "PUT manifest with a negative size",
            serde_json::to_vec(&negative).unwrap(),
        ),
    ] {
        let resp = reg
            .put("/v2/err/misc/manifests/x")
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .await;
        assert_eq!(not_a_server_error(resp, what).await, 400);
    }

    // Wrong methods and unknown paths.
    let cases: Vec<(reqwest::Method, String)> = vec![
        (reqwest::Method::POST, "/v2/err/misc/manifests/t".into()),
        (reqwest::Method::PATCH, "/v2/err/misc/manifests/t".into()),
        (
            reqwest::Method::PUT,
            format!("/v2/err/misc/blobs/{}", img.config_digest),
        ),
        (
            reqwest::Method::POST,
            format!("/v2/err/misc/blobs/{}", img.config_digest),
        ),
        (reqwest::Method::PATCH, "/v2/err/misc/blobs/uploads/".into()),
        (reqwest::Method::PUT, "/v2/err/misc/blobs/uploads/".into()),
        (reqwest::Method::GET, "/v2/err/misc/blobs/uploads/".into()),
        (reqwest::Method::DELETE, "/v2/err/misc/tags/list".into()),
        (reqwest::Method::GET, "/v2/err/misc/unknown/endpoint".into()),
        (reqwest::Method::GET, "/v2/err/misc".into()),
        (reqwest::Method::GET, "/v2/err/misc/manifests/".into()),
        (reqwest::Method::GET, "/v2/err/misc/blobs/".into()),
        (reqwest::Method::DELETE, "/v2/".into()),
        (reqwest::Method::GET, "/v2/err/misc/referrers/".into()),
    ];
    for (m, p) in cases {
        let resp = reg.request(m.clone(), &p).await;
        let st = not_a_server_error(resp, &format!("{m} {p}")).await;
        assert!(st >= 400, "{m} {p}: got {st}");
    }

    // Nothing of the above changed the repository.
    reg.get("/v2/err/misc/manifests/t").expect(200).await;
    reg.get("/v2/err/misc/manifests/x").expect(404).await;
}

#[tokio::test]
async fn error_bodies_have_the_spec_shape() {
    let reg = TestRegistry::start().await;
    let body = expect_error(reg.get("/v2/err/shape/manifests/latest").await, 404, &[]).await;
    let e = &body["errors"][0];
    assert!(e["code"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c.is_ascii_uppercase() || c == '_'));
    assert!(e["message"].is_string());
}
