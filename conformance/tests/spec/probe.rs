//! The node probe image the registry serves from memory (`registry-node-setup/probe:1`): an
//! index a runtime of any common architecture can pull, nothing stored.

use conformance::{check::header, oci::sha256_digest as sha256, TestRegistry};

const REPO: &str = "registry-node-setup/probe";

async fn bytes(
    reg: &TestRegistry,
    path: &str,
    accept: &str,
) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let resp = reg.get(path).header("accept", accept).expect(200).await;
    let h = resp.headers().clone();
    (h, resp.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn the_probe_image_is_served_whole_without_a_push() {
    let reg = TestRegistry::start().await;
    let index_type = "application/vnd.oci.image.index.v1+json";
    let (h, index) = bytes(&reg, &format!("/v2/{REPO}/manifests/1"), index_type).await;
    assert_eq!(header(&h, "content-type"), Some(index_type));
    assert_eq!(
        header(&h, "docker-content-digest"),
        Some(sha256(&index).as_str())
    );
    let head = reg
        .head(format!("/v2/{REPO}/manifests/1"))
        .expect(200)
        .await;
    assert_eq!(
        header(head.headers(), "content-length"),
        Some(index.len().to_string().as_str())
    );

    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let children = index["manifests"].as_array().unwrap();
    let archs: Vec<&str> = children
        .iter()
        .map(|c| c["platform"]["architecture"].as_str().unwrap())
        .collect();
    for want in ["amd64", "arm64", "arm", "ppc64le", "s390x"] {
        assert!(archs.contains(&want), "{want} missing from {archs:?}");
    }
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let (_, m) = bytes(
            &reg,
            &format!("/v2/{REPO}/manifests/{digest}"),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await;
        assert_eq!(sha256(&m), digest);
        assert_eq!(child["size"], m.len());
        let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
        let config = m["config"]["digest"].as_str().unwrap();
        let (_, c) = bytes(&reg, &format!("/v2/{REPO}/blobs/{config}"), "*/*").await;
        assert_eq!(sha256(&c), config);
        let c: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(c["architecture"], child["platform"]["architecture"]);
        let layer = m["layers"][0]["digest"].as_str().unwrap();
        let (_, l) = bytes(&reg, &format!("/v2/{REPO}/blobs/{layer}"), "*/*").await;
        assert_eq!((sha256(&l).as_str(), l.len()), (layer, 1024));
        let part = reg
            .get(format!("/v2/{REPO}/blobs/{layer}"))
            .header("range", "bytes=0-9")
            .expect(206)
            .await;
        assert_eq!(part.bytes().await.unwrap().len(), 10);
    }
    // Nothing was stored: the catalog stays empty, and other names in the repository are unknown.
    let cat = reg.get("/v2/_catalog").expect(200).json().await;
    assert_eq!(cat["repositories"], serde_json::json!([]));
    reg.get(format!("/v2/{REPO}/manifests/2"))
        .error(404, &["MANIFEST_UNKNOWN"])
        .await;
}
