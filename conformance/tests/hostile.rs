//! Hostile input: a table of malformed and hostile requests, each with the status and error code
//! it must get, against a real server on 127.0.0.1, then a check that stored state is unchanged.
//!
//! Requests are written by hand on raw TCP so no client library normalises them (`..`, `%2e%2e`,
//! `%2F`, bad `Content-Range`, lying `Content-Length`, huge headers). Cases that the HTTP layer
//! itself refuses (huge or too many headers, garbage request lines, slow clients) must end in a
//! 4xx or a closed connection: never a hang, a 2xx or a 5xx.
//!
//! After every case, the storage folder (paths and sizes, except `uploads/`, where upload
//! sessions live) must be exactly what the valid setup requests left.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use conformance::raw::{exchange, parse, request};
use conformance::{
    descriptor, error_codes, sha256_digest, Image, IndexBuilder, ManifestBuilder, RawAnswer,
    TestRegistry, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REPO: &str = "hostile/app";
const OTHER: &str = "hostile/other";
/// The server under test accepts manifests up to this size.
const MAX_MANIFEST: usize = 64 * 1024;
/// Header read timeout given to the server, in seconds.
const HEADER_TIMEOUT: u64 = 2;

/// What a case must get.
#[derive(Debug, Clone)]
enum Want {
    /// This status and a spec error body holding this code.
    Error(u16, &'static str),
    /// One of these statuses and a spec error body holding one of these codes.
    ErrorIn(&'static [u16], &'static [&'static str]),
    /// This status; no body to check (HEAD).
    Status(u16),
    /// Refused by the HTTP layer: one of these 4xx statuses, or the connection closed without
    /// an answer. Never a 2xx or 5xx, never a hang.
    RefusedOrClosed(&'static [u16]),
    /// A positive control: this success status (checks the setup is what the cases assume).
    Ok(u16),
}

#[derive(Debug, Clone)]
struct Case {
    what: String,
    /// The whole request as sent, head and body.
    raw: Vec<u8>,
    want: Want,
}

/// Checks one answer against what the case wants; `Err` describes the mismatch.
fn judge(case: &Case, got: Result<Option<RawAnswer>, String>) -> Result<(), String> {
    let got = got?;
    let describe = |a: &RawAnswer| {
        format!(
            "{} {}",
            a.status,
            String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
        )
    };
    let check_body = |a: &RawAnswer, code: &str| -> Result<(), String> {
        let codes = error_codes(&a.body).map_err(|e| format!("{e} (answer {})", describe(a)))?;
        if !codes.iter().any(|c| c == code) {
            return Err(format!("want code {code}, got {codes:?}: {}", describe(a)));
        }
        match a.header("content-type") {
            Some(ct) if ct.starts_with("application/json") => Ok(()),
            ct => Err(format!("error body with Content-Type {ct:?}")),
        }
    };
    match (&case.want, got) {
        (Want::Error(status, code), Some(a)) => {
            if a.status != *status {
                return Err(format!("want {status} {code}, got {}", describe(&a)));
            }
            check_body(&a, code)
        }
        (Want::ErrorIn(statuses, codes), Some(a)) => {
            if !statuses.contains(&a.status) {
                return Err(format!(
                    "want one of {statuses:?} {codes:?}, got {}",
                    describe(&a)
                ));
            }
            let errs: Vec<String> = codes
                .iter()
                .filter_map(|c| check_body(&a, c).err())
                .collect();
            if errs.len() == codes.len() {
                return Err(errs.join("; "));
            }
            Ok(())
        }
        (Want::Status(status), Some(a)) | (Want::Ok(status), Some(a)) => {
            if a.status != *status {
                return Err(format!("want {status}, got {}", describe(&a)));
            }
            Ok(())
        }
        (Want::RefusedOrClosed(statuses), Some(a)) => {
            if statuses.contains(&a.status) {
                Ok(())
            } else {
                Err(format!(
                    "want one of {statuses:?} or a closed connection, got {}",
                    describe(&a)
                ))
            }
        }
        (Want::RefusedOrClosed(_), None) => Ok(()),
        (want, None) => Err(format!(
            "want {want:?}, but the server closed the connection without answering"
        )),
    }
}

/// Every file under `root` (relative path -> size), except upload sessions.
fn snapshot(root: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if rel == "uploads" || rel.starts_with("uploads/") {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, meta.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => out.push(format!("added {k} ({v} bytes)")),
            Some(b) if b != v => out.push(format!("changed {k}: {b} -> {v} bytes")),
            _ => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.push(format!("removed {k}"));
        }
    }
    out
}

/// The path part of an absolute or relative upload location.
fn path_of(location: &str) -> String {
    match location.find("/v2/") {
        Some(i) => location[i..].to_owned(),
        None => location.to_owned(),
    }
}

fn upload_id(path: &str) -> String {
    path.rsplit('/')
        .next()
        .expect("id")
        .split('?')
        .next()
        .expect("id")
        .to_owned()
}

/// What the valid setup left for the cases to refer to.
struct Setup {
    img: Image,
    /// Digest of the first layer of `img`.
    layer: String,
    /// Path of an upload holding 10 bytes, left open.
    open: String,
    open_id: String,
    /// Path of an upload completed once, its bytes and their digest.
    done: String,
    done_blob: Vec<u8>,
    done_digest: String,
    /// Paths of fresh uploads for the cases that may consume one.
    fresh: Vec<String>,
}

/// Pushes what the cases refer to: an image tagged v1 in each repository, an open upload, a
/// completed one, and fresh ones.
async fn setup(reg: &TestRegistry) -> Setup {
    let img = reg.push_image(REPO, Some("v1"), 2).await;
    let layer = sha256_digest(&img.layers[0]);
    reg.push_image(OTHER, Some("v1"), 1).await;
    // An upload holding 10 bytes, left open.
    let open = path_of(&reg.start_upload(REPO).await);
    let r = reg
        .patch(&open)
        .header("Content-Range", "0-9")
        .header("Content-Length", "10")
        .body(b"0123456789".to_vec())
        .await;
    assert_eq!(r.status(), 202, "setup PATCH");
    let open_id = upload_id(&open);
    // An upload completed once.
    let done = path_of(&reg.start_upload(REPO).await);
    let done_blob = b"completed once".to_vec();
    let done_digest = sha256_digest(&done_blob);
    reg.put(format!("{done}?digest={done_digest}"))
        .body(done_blob.clone())
        .expect(201)
        .await;
    // Fresh uploads for the cases that may consume one.
    let mut fresh = Vec::new();
    for _ in 0..24 {
        fresh.push(path_of(&reg.start_upload(REPO).await));
    }
    Setup {
        img,
        layer,
        open,
        open_id,
        done,
        done_blob,
        done_digest,
        fresh,
    }
}

fn err(status: u16, code: &'static str) -> Want {
    Want::Error(status, code)
}

fn case(want: Want, what: &str, raw: Vec<u8>) -> Case {
    Case {
        what: what.to_owned(),
        raw,
        want,
    }
}

/// The cases, in the order they run: one row each, what it must get, what it is, the request.
fn cases(s: &Setup) -> Vec<Case> {
    let (img, layer, open_id) = (&s.img, &s.layer, &s.open_id);
    let (open, done) = (s.open.as_str(), s.done.as_str());
    let (done_blob, done_digest) = (&s.done_blob, &s.done_digest);
    let mut fresh = s.fresh.iter();
    let mut fresh = move || fresh.next().expect("enough fresh uploads").clone();
    let h64 = &img.digest["sha256:".len()..];
    let missing = sha256_digest(b"never uploaded");
    let upper = format!("sha256:{}", h64.to_uppercase());
    let short = format!("sha256:{}", &h64[1..]);
    let long_hex = format!("sha256:{h64}0");
    let md5 = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let config_desc = descriptor(OCI_CONFIG, &img.config);
    let layer_desc = descriptor(OCI_LAYER, &img.layers[0]);
    let missing_desc = json!({"mediaType": OCI_LAYER, "digest": missing, "size": 14});
    let with_missing_layer = ManifestBuilder::new(config_desc.clone())
        .layer(layer_desc.clone())
        .layer(missing_desc.clone())
        .build();
    let with_missing_config =
        ManifestBuilder::new(json!({"mediaType": OCI_CONFIG, "digest": missing, "size": 14}))
            .layer(layer_desc.clone())
            .build();
    let index_missing_child = IndexBuilder::new()
        .manifest(json!({"mediaType": OCI_MANIFEST, "digest": missing, "size": 500}))
        .build();
    let good_manifest = ManifestBuilder::new(config_desc.clone())
        .layer(layer_desc.clone())
        .annotation("case", "good")
        .build();
    let oversize = ManifestBuilder::new(config_desc.clone())
        .layer(layer_desc.clone())
        .annotation("pad", &"x".repeat(MAX_MANIFEST))
        .build();
    let many_missing = {
        let mut b = ManifestBuilder::new(config_desc.clone());
        for i in 0..300 {
            b = b.layer(json!({"mediaType": OCI_LAYER, "digest": sha256_digest(format!("m{i}").as_bytes()), "size": 1}));
        }
        b.build()
    };
    let bad_desc_digest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:../../etc/passwd", "size": 1},
        "layers": []
    }))
    .expect("json");
    let negative_size = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": img.config_digest, "size": -1},
        "layers": []
    }))
    .expect("json");
    let schema1 = br#"{"schemaVersion":1,"name":"hostile/app","tag":"v9","fsLayers":[]}"#.to_vec();
    let config_as_string = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": "nope", "layers": []
    }))
    .expect("json");
    let unknown_type = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/x-evil", "config": config_desc, "layers": []
    }))
    .expect("json");
    let bad_subject = ManifestBuilder::new(config_desc.clone())
        .layer(layer_desc.clone())
        .subject(json!({"mediaType": OCI_MANIFEST, "digest": "sha256:abc", "size": 1}))
        .build();
    // 60000 bytes: under the size limit, far over serde_json's nesting limit.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes();
    let deep_object = {
        let mut s = String::from("{\"schemaVersion\":2,\"annotations\":");
        s.push_str(&"{\"a\":".repeat(5000));
        s.push('1');
        s.push_str(&"}".repeat(5000));
        s.push('}');
        s.into_bytes()
    };
    let not_utf8: Vec<u8> = vec![b'{', 0xff, 0xfe, 0x00, b'}'];
    let long_name = "a".repeat(256);
    let deep_name = vec!["a"; 200].join("/");
    let tags_101: String = (0..101)
        .map(|i| format!("tag=t{i}"))
        .collect::<Vec<_>>()
        .join("&");

    let get = |p: &str| request("GET", p, &[], b"");
    let om = [("Content-Type", OCI_MANIFEST)];
    let ten = b"abcdefghij";
    let patch = |range: &str, body: &[u8]| {
        request(
            "PATCH",
            open,
            &[
                ("Content-Range", range),
                ("Content-Type", "application/octet-stream"),
            ],
            body,
        )
    };
    let unknown = format!("/v2/{REPO}/blobs/uploads/00000000-0000-4000-8000-000000000000");
    let foreign = format!("/v2/{OTHER}/blobs/uploads/{open_id}");
    let put_m = |reference: &str, ct: &str, body: &[u8]| {
        request(
            "PUT",
            &format!("/v2/{REPO}/manifests/{reference}"),
            &[("Content-Type", ct)],
            body,
        )
    };
    let mut chunked_oversize = format!("{:x}\r\n", oversize.len()).into_bytes();
    chunked_oversize.extend_from_slice(&oversize);
    chunked_oversize.extend_from_slice(b"\r\n0\r\n\r\n");
    let huge = "x".repeat(500 * 1024);
    let many: Vec<(String, String)> = (0..200)
        .map(|i| (format!("X-H{i}"), "v".to_owned()))
        .collect();
    let many_ref: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    #[rustfmt::skip]
    let cases = vec![
        // ---- Names: traversal, encoded slashes, case, length. ----
        case(err(400, "NAME_INVALID"), "name: ../ traversal", get("/v2/../../etc/passwd/tags/list")),
        case(err(400, "NAME_INVALID"), "name: .. inside", get(&format!("/v2/{REPO}/../../x/manifests/v1"))),
        case(err(400, "NAME_INVALID"), "name: %2e%2e", get("/v2/%2e%2e/%2e%2e/etc/tags/list")),
        case(err(400, "NAME_INVALID"), "name: %2E%2E uppercase escape", get("/v2/hostile/%2E%2E/manifests/v1")),
        case(err(400, "NAME_INVALID"), "name: encoded slash %2F", get("/v2/hostile%2Fapp/manifests/v1")),
        case(err(400, "NAME_INVALID"), "name: encoded slash %2f in blob path", get(&format!("/v2/hostile%2f..%2f..%2fx/blobs/{layer}"))),
        case(err(400, "NAME_INVALID"), "name: . component", get("/v2/hostile/./app/manifests/v1")),
        case(err(400, "NAME_INVALID"), "name: empty component", get("/v2/hostile//app/tags/list")),
        case(err(400, "NAME_INVALID"), "name: uppercase", get("/v2/Hostile/App/tags/list")),
        case(err(400, "NAME_INVALID"), "name: 256 characters", get(&format!("/v2/{long_name}/tags/list"))),
        case(err(400, "NAME_INVALID"), "name: 200 components (399 characters)", get(&format!("/v2/{deep_name}/manifests/v1"))),
        case(err(400, "NAME_INVALID"), "name: encoded NUL", get("/v2/a%00b/tags/list")),
        case(err(400, "NAME_INVALID"), "name: leading underscore (internal folder)", get(&format!("/v2/hostile/_layers/blobs/{layer}"))),
        case(err(400, "NAME_INVALID"), "name: _manifests component", get("/v2/hostile/app/_manifests/tags/list")),
        case(err(400, "NAME_INVALID"), "name: traversal on PUT manifest", request("PUT", "/v2/../x/manifests/v1", &om, &good_manifest)),
        case(err(400, "NAME_INVALID"), "name: traversal on POST upload", request("POST", "/v2/..%2f..%2fetc/blobs/uploads/", &[], b"")),
        case(err(400, "NAME_INVALID"), "name: traversal on DELETE manifest", request("DELETE", "/v2/a/../hostile/app/manifests/v1", &[], b"")),
        case(err(400, "NAME_INVALID"), "name: mount from a traversal name", request("POST", &format!("/v2/{REPO}/blobs/uploads/?mount={layer}&from=../{OTHER}"), &[], b"")),
        case(Want::Status(400), "name: HEAD with traversal (status only)", request("HEAD", "/v2/../x/manifests/v1", &[], b"")),
        // ---- Digests and algorithms. ----
        case(err(400, "DIGEST_INVALID"), "digest: md5 algorithm", get(&format!("/v2/{REPO}/blobs/{md5}"))),
        case(err(400, "DIGEST_INVALID"), "digest: sha256 too short", get(&format!("/v2/{REPO}/blobs/{short}"))),
        case(err(400, "DIGEST_INVALID"), "digest: sha256 too long", get(&format!("/v2/{REPO}/blobs/{long_hex}"))),
        case(err(400, "DIGEST_INVALID"), "digest: uppercase hex", get(&format!("/v2/{REPO}/blobs/{upper}"))),
        case(err(400, "DIGEST_INVALID"), "digest: uppercase algorithm", get(&format!("/v2/{REPO}/blobs/SHA256:{h64}"))),
        case(err(400, "DIGEST_INVALID"), "digest: no colon", get(&format!("/v2/{REPO}/blobs/sha256{h64}"))),
        case(err(400, "DIGEST_INVALID"), "digest: empty hex", get(&format!("/v2/{REPO}/blobs/sha256:"))),
        case(err(400, "DIGEST_INVALID"), "digest: sha512 with 64 hex", get(&format!("/v2/{REPO}/blobs/sha512:{h64}"))),
        case(Want::Status(400), "digest: HEAD bad digest (status only)", request("HEAD", &format!("/v2/{REPO}/blobs/{md5}"), &[], b"")),
        case(err(400, "DIGEST_INVALID"), "digest: DELETE blob md5", request("DELETE", &format!("/v2/{REPO}/blobs/{md5}"), &[], b"")),
        case(err(400, "DIGEST_INVALID"), "digest: referrers with bad digest", get(&format!("/v2/{REPO}/referrers/sha256:zz"))),
        case(err(400, "DIGEST_INVALID"), "digest: manifest by bad digest", get(&format!("/v2/{REPO}/manifests/sha256:xyz"))),
        case(err(400, "DIGEST_INVALID"), "digest: mount with md5", request("POST", &format!("/v2/{REPO}/blobs/uploads/?mount={md5}&from={OTHER}"), &[], b"")),
        case(err(400, "DIGEST_INVALID"), "digest: monolithic POST with short digest", request("POST", &format!("/v2/{REPO}/blobs/uploads/?digest={short}"), &[], b"data")),
        case(err(400, "DIGEST_INVALID"), "digest: monolithic POST whose body does not match", request("POST", &format!("/v2/{REPO}/blobs/uploads/?digest={missing}"), &[], b"other bytes")),
        case(err(400, "DIGEST_INVALID"), "digest: PUT closing with md5", request("PUT", &format!("{}?digest={md5}", fresh()), &[], b"data")),
        case(err(400, "DIGEST_INVALID"), "digest: PUT closing with a digest of other bytes", request("PUT", &format!("{}?digest={missing}", fresh()), &[], b"hello")),
        case(err(400, "DIGEST_INVALID"), "digest: PUT closing without ?digest", request("PUT", &fresh(), &[], b"hello")),
        case(err(400, "DIGEST_INVALID"), "digest: PUT closing with empty ?digest=", request("PUT", &format!("{}?digest=", fresh()), &[], b"hello")),
        case(err(400, "UNSUPPORTED"), "digest: unsupported digest-algorithm on POST", request("POST", &format!("/v2/{REPO}/blobs/uploads/?digest-algorithm=md5"), &[], b"")),
        case(err(400, "DIGEST_INVALID"), "digest: manifest PUT by a digest that does not match the body", request("PUT", &format!("/v2/{REPO}/manifests/{missing}"), &om, &good_manifest)),
        case(err(400, "DIGEST_INVALID"), "digest: path traversal in the digest", get(&format!("/v2/{REPO}/blobs/sha256:..%2f..%2f{}", &h64[6..]))),
        // ---- Content-Range on PATCH (the open upload holds 10 bytes). ----
        case(err(400, "BLOB_UPLOAD_INVALID"), "content-range: not numbers", patch("abc", ten)),
        case(err(400, "BLOB_UPLOAD_INVALID"), "content-range: open end", patch("10-", ten)),
        case(err(400, "BLOB_UPLOAD_INVALID"), "content-range: negative start", patch("-5-9", ten)),
        case(err(400, "BLOB_UPLOAD_INVALID"), "content-range: overflowing number", patch("10-99999999999999999999999", ten)),
        case(err(416, "BLOB_UPLOAD_INVALID"), "content-range: reversed", patch("19-10", ten)),
        case(err(416, "BLOB_UPLOAD_INVALID"), "content-range: gap after the offset", patch("20-29", ten)),
        case(err(416, "BLOB_UPLOAD_INVALID"), "content-range: overlaps what was received", patch("5-14", ten)),
        case(err(416, "BLOB_UPLOAD_INVALID"), "content-range: restarts at 0", patch("0-9", ten)),
        case(err(400, "SIZE_INVALID"), "content-range: length differs from Content-Length", patch("10-19", b"abcde")),
        case(Want::ErrorIn(&[400, 416], &["BLOB_UPLOAD_INVALID", "SIZE_INVALID"]), "content-range: whole u64 span", patch("0-18446744073709551615", ten)),
        case(Want::ErrorIn(&[400, 416], &["BLOB_UPLOAD_INVALID", "SIZE_INVALID"]), "content-range: u64::MAX end at the offset", patch("10-18446744073709551615", ten)),
        case(Want::Ok(204), "upload: the open upload still holds 10 bytes", request("GET", open, &[], b"")),
        // ---- Upload sessions: unknown ids, ids of another repository, completed twice. ----
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: PATCH unknown id", request("PATCH", &unknown, &[], ten)),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: GET unknown id", get(&unknown)),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: PUT unknown id", request("PUT", &format!("{unknown}?digest={}", sha256_digest(ten)), &[], ten)),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: DELETE unknown id", request("DELETE", &unknown, &[], b"")),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: id '..'", get(&format!("/v2/{REPO}/blobs/uploads/.."))),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: id '.'", request("PATCH", &format!("/v2/{REPO}/blobs/uploads/."), &[], ten)),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: id with encoded traversal", get(&format!("/v2/{REPO}/blobs/uploads/..%2F..%2Fblobs"))),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: DELETE id '..'", request("DELETE", &format!("/v2/{REPO}/blobs/uploads/.."), &[], b"")),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: PATCH with another repository's id", request("PATCH", &foreign, &[("Content-Range", "10-19")], ten)),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: GET with another repository's id", get(&foreign)),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: PUT with another repository's id", request("PUT", &format!("{foreign}?digest={}", sha256_digest(b"0123456789")), &[], b"")),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: DELETE with another repository's id", request("DELETE", &foreign, &[], b"")),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: completing an upload twice", request("PUT", &format!("{done}?digest={done_digest}"), &[], done_blob)),
        case(err(404, "BLOB_UPLOAD_UNKNOWN"), "upload: PATCH after completion", request("PATCH", done, &[], ten)),
        case(Want::Ok(204), "upload: the open upload is still there and untouched", request("GET", open, &[], b"")),
        // ---- Manifests: invalid JSON, wrong media types, missing blobs, size. ----
        case(err(400, "MANIFEST_INVALID"), "manifest: truncated JSON", put_m("bad1", OCI_MANIFEST, b"{\"schemaVersion\":2,")),
        case(err(400, "MANIFEST_INVALID"), "manifest: JSON array", put_m("bad2", OCI_MANIFEST, b"[]")),
        case(err(400, "MANIFEST_INVALID"), "manifest: empty body", put_m("bad3", OCI_MANIFEST, b"")),
        case(err(400, "MANIFEST_INVALID"), "manifest: not UTF-8", put_m("bad4", OCI_MANIFEST, &not_utf8)),
        case(err(400, "MANIFEST_INVALID"), "manifest: 30000 nested arrays", put_m("bad5", OCI_MANIFEST, &deep)),
        case(err(400, "MANIFEST_INVALID"), "manifest: 5000 nested objects", put_m("bad6", OCI_MANIFEST, &deep_object)),
        case(err(400, "MANIFEST_INVALID"), "manifest: schema 1", put_m("bad7", "application/vnd.docker.distribution.manifest.v1+prettyjws", &schema1)),
        case(err(400, "MANIFEST_INVALID"), "manifest: config is a string", put_m("bad8", OCI_MANIFEST, &config_as_string)),
        case(err(400, "MANIFEST_INVALID"), "manifest: unknown mediaType", put_m("bad9", "application/x-evil", &unknown_type)),
        case(err(400, "MANIFEST_INVALID"), "manifest: Content-Type contradicts mediaType", put_m("bad10", OCI_INDEX, &good_manifest)),
        case(err(400, "MANIFEST_INVALID"), "manifest: text/plain Content-Type with an OCI body", put_m("bad11", "text/plain", &good_manifest)),
        case(err(400, "MANIFEST_INVALID"), "manifest: descriptor digest with traversal", put_m("bad12", OCI_MANIFEST, &bad_desc_digest)),
        case(err(400, "MANIFEST_INVALID"), "manifest: negative size", put_m("bad13", OCI_MANIFEST, &negative_size)),
        case(err(400, "MANIFEST_INVALID"), "manifest: invalid subject digest", put_m("bad14", OCI_MANIFEST, &bad_subject)),
        case(err(400, "MANIFEST_BLOB_UNKNOWN"), "manifest: missing layer blob", put_m("bad15", OCI_MANIFEST, &with_missing_layer)),
        case(err(400, "MANIFEST_BLOB_UNKNOWN"), "manifest: missing config blob", put_m("bad16", OCI_MANIFEST, &with_missing_config)),
        case(err(400, "MANIFEST_BLOB_UNKNOWN"), "manifest: index with a missing child", put_m("bad17", OCI_INDEX, &index_missing_child)),
        case(err(400, "MANIFEST_BLOB_UNKNOWN"), "manifest: 300 missing layers", put_m("bad18", OCI_MANIFEST, &many_missing)),
        case(err(400, "MANIFEST_BLOB_UNKNOWN"), "manifest: blob of another repository (not linked here)", request("PUT", &format!("/v2/{OTHER}/manifests/bad19"), &om, &with_missing_config)),
        case(err(413, "MANIFEST_INVALID"), "manifest: oversize body (413)", put_m("bad20", OCI_MANIFEST, &oversize)),
        case(err(413, "MANIFEST_INVALID"), "manifest: oversize announced, body never sent (413, no hang)", request("PUT", &format!("/v2/{REPO}/manifests/bad21"), &[("Content-Type", OCI_MANIFEST), ("Content-Length", "999999999")], b"")),
        case(err(413, "MANIFEST_INVALID"), "manifest: oversize chunked body without Content-Length (413)", request("PUT", &format!("/v2/{REPO}/manifests/bad22"), &[("Content-Type", OCI_MANIFEST), ("Transfer-Encoding", "chunked")], &chunked_oversize)),
        case(err(400, "MANIFEST_INVALID"), "manifest: invalid tag (leading dash)", put_m("-bad", OCI_MANIFEST, &good_manifest)),
        case(err(400, "MANIFEST_INVALID"), "manifest: tag of 129 characters", put_m(&"t".repeat(129), OCI_MANIFEST, &good_manifest)),
        case(err(400, "MANIFEST_INVALID"), "manifest: invalid ?tag= on push", request("PUT", &format!("/v2/{REPO}/manifests/{}?tag=..", sha256_digest(&good_manifest)), &om, &good_manifest)),
        case(err(414, "UNSUPPORTED"), "manifest: 101 ?tag= parameters", request("PUT", &format!("/v2/{REPO}/manifests/{}?{tags_101}", sha256_digest(&good_manifest)), &om, &good_manifest)),
        case(err(404, "MANIFEST_UNKNOWN"), "manifest: unknown tag", get(&format!("/v2/{REPO}/manifests/nope"))),
        case(err(404, "MANIFEST_UNKNOWN"), "manifest: unknown digest", get(&format!("/v2/{REPO}/manifests/{missing}"))),
        case(err(404, "MANIFEST_UNKNOWN"), "manifest: DELETE unknown tag", request("DELETE", &format!("/v2/{REPO}/manifests/nope"), &[], b"")),
        case(Want::Ok(200), "manifest: the tag v1 still resolves", request("HEAD", &format!("/v2/{REPO}/manifests/v1"), &[], b"")),
        // ---- Blobs, methods, routes, query parameters. ----
        case(err(404, "BLOB_UNKNOWN"), "blob: unknown digest", get(&format!("/v2/{REPO}/blobs/{missing}"))),
        case(err(404, "BLOB_UNKNOWN"), "blob: layer of another repository", get(&format!("/v2/{OTHER}/blobs/{layer}"))),
        case(err(404, "BLOB_UNKNOWN"), "blob: DELETE unknown digest", request("DELETE", &format!("/v2/{REPO}/blobs/{missing}"), &[], b"")),
        case(err(416, "BLOB_UNKNOWN"), "blob: Range past the end", request("GET", &format!("/v2/{REPO}/blobs/{layer}"), &[("Range", "bytes=99999999-")], b"")),
        case(err(405, "UNSUPPORTED"), "route: POST a manifest", request("POST", &format!("/v2/{REPO}/manifests/v1"), &[], b"")),
        case(err(405, "UNSUPPORTED"), "route: TRACE /v2/", request("TRACE", "/v2/", &[], b"")),
        case(err(405, "UNSUPPORTED"), "route: GET the uploads collection", get(&format!("/v2/{REPO}/blobs/uploads/"))),
        case(err(404, "UNSUPPORTED"), "route: unknown endpoint under /v2/", get("/v2/nothing")),
        case(Want::ErrorIn(&[400, 404], &["UNSUPPORTED", "NAME_INVALID"]), "route: outside /v2/", get("/../v2/_catalog")),
        case(err(400, "UNSUPPORTED"), "query: n is not a number", get(&format!("/v2/{REPO}/tags/list?n=abc"))),
        case(err(400, "UNSUPPORTED"), "query: n is negative", get(&format!("/v2/{REPO}/tags/list?n=-1"))),
        case(err(400, "UNSUPPORTED"), "query: n overflows", get("/v2/_catalog?n=99999999999999999999999")),
        // ---- The HTTP layer: huge and many headers, broken framing. ----
        case(Want::RefusedOrClosed(&[400, 431]), "http: one 500 KiB header", request("GET", "/v2/", &[("X-Huge", &huge)], b"")),
        case(Want::RefusedOrClosed(&[400, 431]), "http: 200 headers", request("GET", "/v2/", &many_ref, b"")),
        case(Want::RefusedOrClosed(&[400, 414, 431]), "http: 100 KiB request target", get(&format!("/v2/{}/tags/list", "a".repeat(100 * 1024)))),
        case(Want::RefusedOrClosed(&[400]), "http: garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        case(Want::RefusedOrClosed(&[400]), "http: non-numeric Content-Length", request("PATCH", open, &[("Content-Length", "ten")], ten)),
        case(Want::RefusedOrClosed(&[400]), "http: two different Content-Lengths", request("PATCH", open, &[("Content-Length", "10"), ("Content-Length", "5")], ten)),
        case(Want::RefusedOrClosed(&[400]), "http: Content-Length and chunked together", request("PATCH", open, &[("Content-Length", "10"), ("Transfer-Encoding", "chunked")], b"zz\r\n")),
        case(Want::RefusedOrClosed(&[400]), "http: bad chunk size", request("PATCH", open, &[("Transfer-Encoding", "chunked")], b"zz\r\nabc\r\n0\r\n\r\n")),
        case(Want::RefusedOrClosed(&[400, 505]), "http: unknown HTTP version", b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        case(Want::Ok(204), "upload: after the framing cases the open upload is untouched", request("GET", open, &[], b"")),
    ];
    cases
}

/// What changed in the content the setup pushed to `REPO`, as seen by a client.
async fn served_content_changes(reg: &TestRegistry, img: &Image) -> Vec<String> {
    let mut failures = Vec::new();
    // The content pushed in setup is still served whole.
    let body = reg
        .get(format!("/v2/{REPO}/manifests/v1"))
        .await
        .bytes()
        .await
        .expect("body");
    if body.as_ref() != img.manifest.as_slice() {
        failures.push("the manifest tagged v1 changed".into());
    }
    for blob in img.layers.iter().chain([&img.config]) {
        let got = reg
            .get(format!("/v2/{REPO}/blobs/{}", sha256_digest(blob)))
            .await
            .bytes()
            .await
            .expect("body");
        if got.as_ref() != blob.as_slice() {
            failures.push(format!("blob {} changed", sha256_digest(blob)));
        }
    }
    let tags: serde_json::Value = reg
        .get(format!("/v2/{REPO}/tags/list"))
        .await
        .json()
        .await
        .expect("tags JSON");
    if tags["tags"] != json!(["v1"]) {
        failures.push(format!("tags of {REPO} changed: {tags}"));
    }
    failures
}

#[tokio::test]
async fn hostile_requests_get_spec_errors_and_change_nothing() {
    let reg = TestRegistry::start_with(|c| {
        c.max_manifest_size = MAX_MANIFEST;
        c.header_read_timeout = HEADER_TIMEOUT;
    })
    .await;
    let addr = reg
        .base_url()
        .strip_prefix("http://")
        .expect("http base")
        .to_owned();

    let s = setup(&reg).await;
    let before = snapshot(reg.storage_path());
    assert!(
        before.keys().any(|k| k.starts_with("blobs/")),
        "storage layout not as expected: {before:?}"
    );
    let cases = cases(&s);
    let total = cases.len();
    assert!(total >= 60, "only {total} cases");
    let mut failures = Vec::new();
    for case in &cases {
        let t0 = Instant::now();
        let got = exchange(&addr, &case.raw, Duration::from_secs(15), false).await;
        let seen = match &got {
            Ok(Some(a)) => a.status.to_string(),
            Ok(None) => "closed".to_owned(),
            Err(_) => "hang".to_owned(),
        };
        let verdict = judge(case, got);
        eprintln!(
            "{} {} -> {seen} ({} ms)",
            if verdict.is_ok() { "ok  " } else { "FAIL" },
            case.what,
            t0.elapsed().as_millis()
        );
        if let Err(e) = verdict {
            failures.push(format!("{}: {e}", case.what));
        }
    }

    // ---- Slow clients: headers that never finish are cut off after the header timeout. ----
    for (what, trickle) in [
        ("slow client: half a request line, then silence", false),
        (
            "slow client: a header byte every 300 ms, never finishing",
            true,
        ),
    ] {
        match slow_client(&addr, trickle).await {
            Ok(secs) => eprintln!("ok   {what} (closed after {secs:.1} s)"),
            Err(e) => {
                eprintln!("FAIL {what}");
                failures.push(format!("{what}: {e}"));
            }
        }
    }

    // ---- Stored state: exactly what the setup left. ----
    let after = snapshot(reg.storage_path());
    let changes = diff(&before, &after);
    if !changes.is_empty() {
        failures.push(format!(
            "storage changed by rejected requests:\n    {}",
            changes.join("\n    ")
        ));
    }
    failures.extend(served_content_changes(&reg, &s.img).await);

    eprintln!(
        "{} cases + 2 slow clients + state check: {} failed",
        total,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases failed:\n  {}",
        failures.len(),
        total + 3,
        failures.join("\n  ")
    );
}

/// Opens a connection and sends the start of a request but never the end of its headers.
/// `Ok(seconds)` when the server closed the connection within the expected window (the header
/// timeout plus slack), `Err` when it kept it open longer or answered with a success.
async fn slow_client(addr: &str, trickle: bool) -> Result<f64, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(HEADER_TIMEOUT + 8);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if t0.elapsed() > limit {
            return Err(format!(
                "connection still open after {:?} (header timeout {HEADER_TIMEOUT} s)",
                t0.elapsed()
            ));
        }
        if trickle {
            // A write after the server closed may fail: that counts as closed.
            if s.write_all(b"a").await.is_err() {
                break;
            }
        }
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if secs < (HEADER_TIMEOUT as f64) - 0.5 {
        return Err(format!(
            "closed after {secs:.1} s, before the header timeout"
        ));
    }
    if let Some(a) = parse(&buf) {
        if a.status < 400 || a.status >= 500 && a.status != 408 {
            return Err(format!("answered {} to an unfinished request", a.status));
        }
    }
    Ok(secs)
}
