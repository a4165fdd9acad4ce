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

use conformance::{
    descriptor, error_codes, sha256_digest, IndexBuilder, ManifestBuilder, RawAnswer, TestRegistry,
    OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
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

/// A request with `Connection: close` and the given extra headers. `Content-Length` is added for
/// the body unless a header sets it (or Transfer-Encoding) already.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        let lk = k.to_ascii_lowercase();
        has_len |= lk == "content-length" || lk == "transfer-encoding";
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Sends `raw` and reads the answer until the server closes the connection. `Ok(None)` when it
/// closed without answering; `Err` when nothing happened within `limit` (a hang).
async fn exchange(addr: &str, raw: &[u8], limit: Duration) -> Result<Option<RawAnswer>, String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // The server may answer (and close) before reading the whole body: ignore write errors.
        let _ = s.write_all(raw).await;
        let mut buf = Vec::new();
        // A reset after a partial answer still leaves what arrived in `buf`.
        let _ = s.read_to_end(&mut buf).await;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no answer and no close within {limit:?}"))??;
    Ok(parse(&buf))
}

fn parse(buf: &[u8]) -> Option<RawAnswer> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw_body = &buf[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        let mut data = raw_body;
        while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&data[..eol])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .unwrap_or(0);
            data = &data[eol + 2..];
            if size == 0 || data.len() < size {
                break;
            }
            out.extend_from_slice(&data[..size]);
            data = &data[(size + 2).min(data.len())..];
        }
        out
    } else {
        raw_body.to_vec()
    };
    Some(RawAnswer {
        status,
        headers,
        body,
    })
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

    // ---- Valid setup: everything the cases refer to. ----
    let img = reg.push_image(REPO, Some("v1"), 2).await;
    let layer = sha256_digest(&img.layers[0]);
    reg.push_image(OTHER, Some("v1"), 1).await;
    // An upload holding 10 bytes, left open.
    let open = path_of(&reg.start_upload(REPO).await);
    let r = reg
        .client()
        .patch(reg.url(&open))
        .header("Content-Range", "0-9")
        .header("Content-Length", "10")
        .body(b"0123456789".to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202, "setup PATCH");
    let open_id = upload_id(&open);
    // An upload completed once.
    let done = path_of(&reg.start_upload(REPO).await);
    let done_blob = b"completed once".to_vec();
    let done_digest = sha256_digest(&done_blob);
    let r = reg
        .client()
        .put(reg.url(&format!("{done}?digest={done_digest}")))
        .body(done_blob.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "setup PUT");
    // Fresh uploads for the cases that may consume one.
    let mut fresh = Vec::new();
    for _ in 0..24 {
        fresh.push(path_of(&reg.start_upload(REPO).await));
    }
    let mut fresh = fresh.into_iter();
    let mut fresh = move || fresh.next().expect("enough fresh uploads");

    let before = snapshot(reg.storage_path());
    assert!(
        before.keys().any(|k| k.starts_with("blobs/")),
        "storage layout not as expected: {before:?}"
    );

    // ---- Content used by the cases. ----
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

    let mut cases: Vec<Case> = Vec::new();
    let mut add = |what: &str, raw: Vec<u8>, want: Want| {
        cases.push(Case {
            what: what.to_owned(),
            raw,
            want,
        })
    };
    let get = |p: &str| request("GET", p, &[], b"");
    let om = [("Content-Type", OCI_MANIFEST)];

    // ---- Names: traversal, encoded slashes, case, length. ----
    add(
        "name: ../ traversal",
        get("/v2/../../etc/passwd/tags/list"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: .. inside",
        get(&format!("/v2/{REPO}/../../x/manifests/v1")),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: %2e%2e",
        get("/v2/%2e%2e/%2e%2e/etc/tags/list"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: %2E%2E uppercase escape",
        get("/v2/hostile/%2E%2E/manifests/v1"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: encoded slash %2F",
        get("/v2/hostile%2Fapp/manifests/v1"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: encoded slash %2f in blob path",
        get(&format!("/v2/hostile%2f..%2f..%2fx/blobs/{layer}")),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: . component",
        get("/v2/hostile/./app/manifests/v1"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: empty component",
        get("/v2/hostile//app/tags/list"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: uppercase",
        get("/v2/Hostile/App/tags/list"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: 256 characters",
        get(&format!("/v2/{long_name}/tags/list")),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: 200 components (399 characters)",
        get(&format!("/v2/{deep_name}/manifests/v1")),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: encoded NUL",
        get("/v2/a%00b/tags/list"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: leading underscore (internal folder)",
        get(&format!("/v2/hostile/_layers/blobs/{layer}")),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: _manifests component",
        get("/v2/hostile/app/_manifests/tags/list"),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: traversal on PUT manifest",
        request("PUT", "/v2/../x/manifests/v1", &om, &good_manifest),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: traversal on POST upload",
        request("POST", "/v2/..%2f..%2fetc/blobs/uploads/", &[], b""),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: traversal on DELETE manifest",
        request("DELETE", "/v2/a/../hostile/app/manifests/v1", &[], b""),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: mount from a traversal name",
        request(
            "POST",
            &format!("/v2/{REPO}/blobs/uploads/?mount={layer}&from=../{OTHER}"),
            &[],
            b"",
        ),
        Want::Error(400, "NAME_INVALID"),
    );
    add(
        "name: HEAD with traversal (status only)",
        request("HEAD", "/v2/../x/manifests/v1", &[], b""),
        Want::Status(400),
    );

    // ---- Digests and algorithms. ----
    add(
        "digest: md5 algorithm",
        get(&format!("/v2/{REPO}/blobs/{md5}")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: sha256 too short",
        get(&format!("/v2/{REPO}/blobs/{short}")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: sha256 too long",
        get(&format!("/v2/{REPO}/blobs/{long_hex}")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: uppercase hex",
        get(&format!("/v2/{REPO}/blobs/{upper}")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: uppercase algorithm",
        get(&format!("/v2/{REPO}/blobs/SHA256:{h64}")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: no colon",
        get(&format!("/v2/{REPO}/blobs/sha256{h64}")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: empty hex",
        get(&format!("/v2/{REPO}/blobs/sha256:")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: sha512 with 64 hex",
        get(&format!("/v2/{REPO}/blobs/sha512:{h64}")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: HEAD bad digest (status only)",
        request("HEAD", &format!("/v2/{REPO}/blobs/{md5}"), &[], b""),
        Want::Status(400),
    );
    add(
        "digest: DELETE blob md5",
        request("DELETE", &format!("/v2/{REPO}/blobs/{md5}"), &[], b""),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: referrers with bad digest",
        get(&format!("/v2/{REPO}/referrers/sha256:zz")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: manifest by bad digest",
        get(&format!("/v2/{REPO}/manifests/sha256:xyz")),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: mount with md5",
        request(
            "POST",
            &format!("/v2/{REPO}/blobs/uploads/?mount={md5}&from={OTHER}"),
            &[],
            b"",
        ),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: monolithic POST with short digest",
        request(
            "POST",
            &format!("/v2/{REPO}/blobs/uploads/?digest={short}"),
            &[],
            b"data",
        ),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: monolithic POST whose body does not match",
        request(
            "POST",
            &format!("/v2/{REPO}/blobs/uploads/?digest={missing}"),
            &[],
            b"other bytes",
        ),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: PUT closing with md5",
        request("PUT", &format!("{}?digest={md5}", fresh()), &[], b"data"),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: PUT closing with a digest of other bytes",
        request(
            "PUT",
            &format!("{}?digest={missing}", fresh()),
            &[],
            b"hello",
        ),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: PUT closing without ?digest",
        request("PUT", &fresh(), &[], b"hello"),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: PUT closing with empty ?digest=",
        request("PUT", &format!("{}?digest=", fresh()), &[], b"hello"),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: unsupported digest-algorithm on POST",
        request(
            "POST",
            &format!("/v2/{REPO}/blobs/uploads/?digest-algorithm=md5"),
            &[],
            b"",
        ),
        Want::Error(400, "UNSUPPORTED"),
    );
    add(
        "digest: manifest PUT by a digest that does not match the body",
        request(
            "PUT",
            &format!("/v2/{REPO}/manifests/{missing}"),
            &om,
            &good_manifest,
        ),
        Want::Error(400, "DIGEST_INVALID"),
    );
    add(
        "digest: path traversal in the digest",
        get(&format!("/v2/{REPO}/blobs/sha256:..%2f..%2f{}", &h64[6..])),
        Want::Error(400, "DIGEST_INVALID"),
    );

    // ---- Content-Range on PATCH (the open upload holds 10 bytes). ----
    let ten = b"abcdefghij";
    let patch = |range: &str, body: &[u8]| {
        request(
            "PATCH",
            &open,
            &[
                ("Content-Range", range),
                ("Content-Type", "application/octet-stream"),
            ],
            body,
        )
    };
    add(
        "content-range: not numbers",
        patch("abc", ten),
        Want::Error(400, "BLOB_UPLOAD_INVALID"),
    );
    add(
        "content-range: open end",
        patch("10-", ten),
        Want::Error(400, "BLOB_UPLOAD_INVALID"),
    );
    add(
        "content-range: negative start",
        patch("-5-9", ten),
        Want::Error(400, "BLOB_UPLOAD_INVALID"),
    );
    add(
        "content-range: overflowing number",
        patch("10-99999999999999999999999", ten),
        Want::Error(400, "BLOB_UPLOAD_INVALID"),
    );
    add(
        "content-range: reversed",
        patch("19-10", ten),
        Want::Error(416, "BLOB_UPLOAD_INVALID"),
    );
    add(
        "content-range: gap after the offset",
        patch("20-29", ten),
        Want::Error(416, "BLOB_UPLOAD_INVALID"),
    );
    add(
        "content-range: overlaps what was received",
        patch("5-14", ten),
        Want::Error(416, "BLOB_UPLOAD_INVALID"),
    );
    add(
        "content-range: restarts at 0",
        patch("0-9", ten),
        Want::Error(416, "BLOB_UPLOAD_INVALID"),
    );
    add(
        "content-range: length differs from Content-Length",
        patch("10-19", b"abcde"),
        Want::Error(400, "SIZE_INVALID"),
    );
    add(
        "content-range: whole u64 span",
        patch("0-18446744073709551615", ten),
        Want::ErrorIn(&[400, 416], &["BLOB_UPLOAD_INVALID", "SIZE_INVALID"]),
    );
    add(
        "content-range: u64::MAX end at the offset",
        patch("10-18446744073709551615", ten),
        Want::ErrorIn(&[400, 416], &["BLOB_UPLOAD_INVALID", "SIZE_INVALID"]),
    );
    add(
        "upload: the open upload still holds 10 bytes",
        request("GET", &open, &[], b""),
        Want::Ok(204),
    );

    // ---- Upload sessions: unknown ids, ids of another repository, completed twice. ----
    let unknown = format!("/v2/{REPO}/blobs/uploads/00000000-0000-4000-8000-000000000000");
    add(
        "upload: PATCH unknown id",
        request("PATCH", &unknown, &[], ten),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: GET unknown id",
        get(&unknown),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: PUT unknown id",
        request(
            "PUT",
            &format!("{unknown}?digest={}", sha256_digest(ten)),
            &[],
            ten,
        ),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: DELETE unknown id",
        request("DELETE", &unknown, &[], b""),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: id '..'",
        get(&format!("/v2/{REPO}/blobs/uploads/..")),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: id '.'",
        request("PATCH", &format!("/v2/{REPO}/blobs/uploads/."), &[], ten),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: id with encoded traversal",
        get(&format!("/v2/{REPO}/blobs/uploads/..%2F..%2Fblobs")),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: DELETE id '..'",
        request("DELETE", &format!("/v2/{REPO}/blobs/uploads/.."), &[], b""),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    let foreign = format!("/v2/{OTHER}/blobs/uploads/{open_id}");
    add(
        "upload: PATCH with another repository's id",
        request("PATCH", &foreign, &[("Content-Range", "10-19")], ten),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: GET with another repository's id",
        get(&foreign),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: PUT with another repository's id",
        request(
            "PUT",
            &format!("{foreign}?digest={}", sha256_digest(b"0123456789")),
            &[],
            b"",
        ),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: DELETE with another repository's id",
        request("DELETE", &foreign, &[], b""),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: completing an upload twice",
        request(
            "PUT",
            &format!("{done}?digest={done_digest}"),
            &[],
            &done_blob,
        ),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: PATCH after completion",
        request("PATCH", &done, &[], ten),
        Want::Error(404, "BLOB_UPLOAD_UNKNOWN"),
    );
    add(
        "upload: the open upload is still there and untouched",
        request("GET", &open, &[], b""),
        Want::Ok(204),
    );

    // ---- Manifests: invalid JSON, wrong media types, missing blobs, size. ----
    let put_m = |reference: &str, ct: &str, body: &[u8]| {
        request(
            "PUT",
            &format!("/v2/{REPO}/manifests/{reference}"),
            &[("Content-Type", ct)],
            body,
        )
    };
    add(
        "manifest: truncated JSON",
        put_m("bad1", OCI_MANIFEST, b"{\"schemaVersion\":2,"),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: JSON array",
        put_m("bad2", OCI_MANIFEST, b"[]"),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: empty body",
        put_m("bad3", OCI_MANIFEST, b""),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: not UTF-8",
        put_m("bad4", OCI_MANIFEST, &not_utf8),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: 30000 nested arrays",
        put_m("bad5", OCI_MANIFEST, &deep),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: 5000 nested objects",
        put_m("bad6", OCI_MANIFEST, &deep_object),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: schema 1",
        put_m(
            "bad7",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            &schema1,
        ),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: config is a string",
        put_m("bad8", OCI_MANIFEST, &config_as_string),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: unknown mediaType",
        put_m("bad9", "application/x-evil", &unknown_type),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: Content-Type contradicts mediaType",
        put_m("bad10", OCI_INDEX, &good_manifest),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: text/plain Content-Type with an OCI body",
        put_m("bad11", "text/plain", &good_manifest),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: descriptor digest with traversal",
        put_m("bad12", OCI_MANIFEST, &bad_desc_digest),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: negative size",
        put_m("bad13", OCI_MANIFEST, &negative_size),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: invalid subject digest",
        put_m("bad14", OCI_MANIFEST, &bad_subject),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: missing layer blob",
        put_m("bad15", OCI_MANIFEST, &with_missing_layer),
        Want::Error(400, "MANIFEST_BLOB_UNKNOWN"),
    );
    add(
        "manifest: missing config blob",
        put_m("bad16", OCI_MANIFEST, &with_missing_config),
        Want::Error(400, "MANIFEST_BLOB_UNKNOWN"),
    );
    add(
        "manifest: index with a missing child",
        put_m("bad17", OCI_INDEX, &index_missing_child),
        Want::Error(400, "MANIFEST_BLOB_UNKNOWN"),
    );
    add(
        "manifest: 300 missing layers",
        put_m("bad18", OCI_MANIFEST, &many_missing),
        Want::Error(400, "MANIFEST_BLOB_UNKNOWN"),
    );
    add(
        "manifest: blob of another repository (not linked here)",
        request(
            "PUT",
            &format!("/v2/{OTHER}/manifests/bad19"),
            &om,
            &with_missing_config,
        ),
        Want::Error(400, "MANIFEST_BLOB_UNKNOWN"),
    );
    add(
        "manifest: oversize body (413)",
        put_m("bad20", OCI_MANIFEST, &oversize),
        Want::Error(413, "MANIFEST_INVALID"),
    );
    add(
        "manifest: oversize announced, body never sent (413, no hang)",
        request(
            "PUT",
            &format!("/v2/{REPO}/manifests/bad21"),
            &[
                ("Content-Type", OCI_MANIFEST),
                ("Content-Length", "999999999"),
            ],
            b"",
        ),
        Want::Error(413, "MANIFEST_INVALID"),
    );
    let mut chunked_oversize = format!("{:x}\r\n", oversize.len()).into_bytes();
    chunked_oversize.extend_from_slice(&oversize);
    chunked_oversize.extend_from_slice(b"\r\n0\r\n\r\n");
    add(
        "manifest: oversize chunked body without Content-Length (413)",
        request(
            "PUT",
            &format!("/v2/{REPO}/manifests/bad22"),
            &[
                ("Content-Type", OCI_MANIFEST),
                ("Transfer-Encoding", "chunked"),
            ],
            &chunked_oversize,
        ),
        Want::Error(413, "MANIFEST_INVALID"),
    );
    add(
        "manifest: invalid tag (leading dash)",
        put_m("-bad", OCI_MANIFEST, &good_manifest),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: tag of 129 characters",
        put_m(&"t".repeat(129), OCI_MANIFEST, &good_manifest),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: invalid ?tag= on push",
        request(
            "PUT",
            &format!(
                "/v2/{REPO}/manifests/{}?tag=..",
                sha256_digest(&good_manifest)
            ),
            &om,
            &good_manifest,
        ),
        Want::Error(400, "MANIFEST_INVALID"),
    );
    add(
        "manifest: 101 ?tag= parameters",
        request(
            "PUT",
            &format!(
                "/v2/{REPO}/manifests/{}?{tags_101}",
                sha256_digest(&good_manifest)
            ),
            &om,
            &good_manifest,
        ),
        Want::Error(414, "UNSUPPORTED"),
    );
    add(
        "manifest: unknown tag",
        get(&format!("/v2/{REPO}/manifests/nope")),
        Want::Error(404, "MANIFEST_UNKNOWN"),
    );
    add(
        "manifest: unknown digest",
        get(&format!("/v2/{REPO}/manifests/{missing}")),
        Want::Error(404, "MANIFEST_UNKNOWN"),
    );
    add(
        "manifest: DELETE unknown tag",
        request("DELETE", &format!("/v2/{REPO}/manifests/nope"), &[], b""),
        Want::Error(404, "MANIFEST_UNKNOWN"),
    );
    add(
        "manifest: the tag v1 still resolves",
        request("HEAD", &format!("/v2/{REPO}/manifests/v1"), &[], b""),
        Want::Ok(200),
    );

    // ---- Blobs, methods, routes, query parameters. ----
    add(
        "blob: unknown digest",
        get(&format!("/v2/{REPO}/blobs/{missing}")),
        Want::Error(404, "BLOB_UNKNOWN"),
    );
    add(
        "blob: layer of another repository",
        get(&format!("/v2/{OTHER}/blobs/{layer}")),
        Want::Error(404, "BLOB_UNKNOWN"),
    );
    add(
        "blob: DELETE unknown digest",
        request("DELETE", &format!("/v2/{REPO}/blobs/{missing}"), &[], b""),
        Want::Error(404, "BLOB_UNKNOWN"),
    );
    add(
        "blob: Range past the end",
        request(
            "GET",
            &format!("/v2/{REPO}/blobs/{layer}"),
            &[("Range", "bytes=99999999-")],
            b"",
        ),
        Want::Error(416, "BLOB_UNKNOWN"),
    );
    add(
        "route: POST a manifest",
        request("POST", &format!("/v2/{REPO}/manifests/v1"), &[], b""),
        Want::Error(405, "UNSUPPORTED"),
    );
    add(
        "route: TRACE /v2/",
        request("TRACE", "/v2/", &[], b""),
        Want::Error(405, "UNSUPPORTED"),
    );
    add(
        "route: GET the uploads collection",
        get(&format!("/v2/{REPO}/blobs/uploads/")),
        Want::Error(405, "UNSUPPORTED"),
    );
    add(
        "route: unknown endpoint under /v2/",
        get("/v2/nothing"),
        Want::Error(404, "UNSUPPORTED"),
    );
    add(
        "route: outside /v2/",
        get("/../v2/_catalog"),
        Want::ErrorIn(&[400, 404], &["UNSUPPORTED", "NAME_INVALID"]),
    );
    add(
        "query: n is not a number",
        get(&format!("/v2/{REPO}/tags/list?n=abc")),
        Want::Error(400, "UNSUPPORTED"),
    );
    add(
        "query: n is negative",
        get(&format!("/v2/{REPO}/tags/list?n=-1")),
        Want::Error(400, "UNSUPPORTED"),
    );
    add(
        "query: n overflows",
        get("/v2/_catalog?n=99999999999999999999999"),
        Want::Error(400, "UNSUPPORTED"),
    );

    // ---- The HTTP layer: huge and many headers, broken framing. ----
    let huge = "x".repeat(500 * 1024);
    add(
        "http: one 500 KiB header",
        request("GET", "/v2/", &[("X-Huge", &huge)], b""),
        Want::RefusedOrClosed(&[400, 431]),
    );
    let many: Vec<(String, String)> = (0..200)
        .map(|i| (format!("X-H{i}"), "v".to_owned()))
        .collect();
    let many_ref: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    add(
        "http: 200 headers",
        request("GET", "/v2/", &many_ref, b""),
        Want::RefusedOrClosed(&[400, 431]),
    );
    add(
        "http: 100 KiB request target",
        get(&format!("/v2/{}/tags/list", "a".repeat(100 * 1024))),
        Want::RefusedOrClosed(&[400, 414, 431]),
    );
    add(
        "http: garbage request line",
        b"GARBAGE\r\n\r\n".to_vec(),
        Want::RefusedOrClosed(&[400]),
    );
    add(
        "http: non-numeric Content-Length",
        request("PATCH", &open, &[("Content-Length", "ten")], ten),
        Want::RefusedOrClosed(&[400]),
    );
    add(
        "http: two different Content-Lengths",
        request(
            "PATCH",
            &open,
            &[("Content-Length", "10"), ("Content-Length", "5")],
            ten,
        ),
        Want::RefusedOrClosed(&[400]),
    );
    add(
        "http: Content-Length and chunked together",
        request(
            "PATCH",
            &open,
            &[("Content-Length", "10"), ("Transfer-Encoding", "chunked")],
            b"zz\r\n",
        ),
        Want::RefusedOrClosed(&[400]),
    );
    add(
        "http: bad chunk size",
        request(
            "PATCH",
            &open,
            &[("Transfer-Encoding", "chunked")],
            b"zz\r\nabc\r\n0\r\n\r\n",
        ),
        Want::RefusedOrClosed(&[400]),
    );
    add(
        "http: unknown HTTP version",
        b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        Want::RefusedOrClosed(&[400, 505]),
    );
    add(
        "upload: after the framing cases the open upload is untouched",
        request("GET", &open, &[], b""),
        Want::Ok(204),
    );

    let total = cases.len();
    assert!(total >= 60, "only {total} cases");
    let mut failures = Vec::new();
    for case in &cases {
        let t0 = Instant::now();
        let got = exchange(&addr, &case.raw, Duration::from_secs(15)).await;
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
    // The content pushed in setup is still served whole.
    let body = reg
        .client()
        .get(reg.url(&format!("/v2/{REPO}/manifests/v1")))
        .send()
        .await
        .expect("GET manifest")
        .bytes()
        .await
        .expect("body");
    if body.as_ref() != img.manifest.as_slice() {
        failures.push("the manifest tagged v1 changed".into());
    }
    for blob in img.layers.iter().chain([&img.config]) {
        let got = reg
            .client()
            .get(reg.url(&format!("/v2/{REPO}/blobs/{}", sha256_digest(blob))))
            .send()
            .await
            .expect("GET blob")
            .bytes()
            .await
            .expect("body");
        if got.as_ref() != blob.as_slice() {
            failures.push(format!("blob {} changed", sha256_digest(blob)));
        }
    }
    let tags: serde_json::Value = reg
        .client()
        .get(reg.url(&format!("/v2/{REPO}/tags/list")))
        .send()
        .await
        .expect("GET tags")
        .json()
        .await
        .expect("tags JSON");
    if tags["tags"] != json!(["v1"]) {
        failures.push(format!("tags of {REPO} changed: {tags}"));
    }

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
