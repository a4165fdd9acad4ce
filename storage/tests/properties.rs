//! Property tests ("fuzzing" on stable Rust) of the parsers that read client input: `Digest`,
//! `RepoName`, `Tag` and `Reference` (`FromStr`), and `manifest::parse`.
//!
//! Each property holds for arbitrary input (never a panic; whatever is accepted obeys the
//! grammar and prints back to the same text) and for inputs valid by construction (they parse,
//! to the parts they were built from).
//!
//! Case counts: `PROPTEST_CASES` (proptest's own variable, default 256 per property). For a long
//! run, `PROPTEST_SECONDS=600` repeats each property with fresh random seeds until that many
//! seconds have passed and prints how many cases ran:
//!
//! ```text
//! PROPTEST_SECONDS=600 cargo test --release -p storage --test properties digest -- --nocapture
//! ```

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use storage::manifest::{self, Kind};
use storage::{Algorithm, Digest, Reference, RepoName, Tag};

#[path = "properties/runner.rs"]
mod runner;
use runner::{check, words};

const HEX: &str = "0123456789abcdef";

/// Lowercase hex of exactly `len` characters.
fn hex_string(len: usize) -> impl Strategy<Value = String> {
    vec(0..16usize, len).prop_map(|v| v.into_iter().map(|i| HEX.as_bytes()[i] as char).collect())
}

/// A valid digest string and its parts.
fn valid_digest() -> impl Strategy<Value = (Algorithm, String)> {
    prop_oneof![
        hex_string(64).prop_map(|h| (Algorithm::Sha256, h)),
        hex_string(128).prop_map(|h| (Algorithm::Sha512, h)),
    ]
}

/// Strings near the digest grammar: algorithm-like words, a colon, hex-like text of lengths
/// around the valid ones, with occasional uppercase and stray characters.
fn digest_like() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        6 => words(&["sha256", "sha512", "SHA256", "md5", "sha384", ""]),
        1 => "[a-z0-9+._-]{0,12}",
    ];
    let hex = prop_oneof![
        "[0-9a-f]{62,66}",
        "[0-9a-fA-F]{64}",
        "[0-9a-f]{126,130}",
        "[0-9a-g./%]{0,130}",
    ];
    let sep = prop_oneof![Just(":"), Just(""), Just("::"), Just("/")];
    (alg, sep, hex).prop_map(|(a, s, h)| format!("{a}{s}{h}"))
}

/// Any string: arbitrary Unicode, or ASCII with the characters the grammars care about.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[ -~]{0,300}", "[a-zA-Z0-9/._:%+-]{0,300}",]
}

/// A repository name component built from the spec's grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component() -> impl Strategy<Value = String> {
    let sep = prop_oneof![3 => words(&[".", "_", "__"]), 1 => "-{1,3}"];
    ("[a-z0-9]{1,8}", vec((sep, "[a-z0-9]{1,8}"), 0..4)).prop_map(|(first, rest)| {
        let mut s = first;
        for (sep, part) in rest {
            s.push_str(&sep);
            s.push_str(&part);
        }
        s
    })
}

/// A valid repository name: 1 to 6 components, at most 255 characters.
fn valid_name() -> impl Strategy<Value = String> {
    vec(component(), 1..7)
        .prop_map(|c| c.join("/"))
        .prop_filter("at most 255 characters", |n| n.len() <= 255)
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separator runs between alphanumerics: '.', '_', '__' or '-'+.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let run: Vec<u8> = b[i..].iter().copied().take_while(|&x| !alnum(x)).collect();
        let ok = run == b"." || run == b"_" || run == b"__" || run.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
        i += run.len();
    }
    true
}

fn valid_tag() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
}

#[test]
fn digest_arbitrary_input() {
    check(
        "digest_arbitrary_input",
        prop_oneof![any_text(), digest_like()],
        |s| {
            if let Ok(d) = s.parse::<Digest>() {
                // Accepted: canonical text, the algorithm's length, lowercase hex only.
                prop_assert_eq!(d.to_string(), s.clone());
                prop_assert_eq!(d.hex().len(), d.algorithm().hex_len());
                prop_assert!(d.hex().bytes().all(|b| HEX.as_bytes().contains(&b)));
                prop_assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
            }
            Ok(())
        },
    );
}

#[test]
fn digest_valid_by_construction() {
    check(
        "digest_valid_by_construction",
        (valid_digest(), 0..200usize),
        |((alg, hex), pos)| {
            let text = format!("{alg}:{hex}");
            let d: Digest = text
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(d.algorithm(), alg);
            prop_assert_eq!(d.hex(), hex.as_str());
            prop_assert_eq!(d.to_string(), text.clone());
            // Breaking it in any one place gets it refused.
            let i = pos % hex.len();
            let mut upper = hex.clone().into_bytes();
            upper[i] = upper[i].to_ascii_uppercase();
            if upper != hex.as_bytes() {
                let s = format!("{alg}:{}", String::from_utf8(upper).expect("ascii"));
                prop_assert!(s.parse::<Digest>().is_err(), "uppercase accepted: {}", s);
            }
            let short = format!("{alg}:{}", &hex[..i]);
            prop_assert!(short.parse::<Digest>().is_err());
            let long = format!("{text}{}", &hex[i..=i]);
            prop_assert!(long.parse::<Digest>().is_err());
            let other = format!("md5:{hex}");
            prop_assert!(other.parse::<Digest>().is_err());
            Ok(())
        },
    );
}

#[test]
fn name_arbitrary_input() {
    check("name_arbitrary_input", any_text(), |s| {
        if let Ok(n) = s.parse::<RepoName>() {
            prop_assert_eq!(n.as_str(), s.as_str());
            prop_assert_eq!(n.to_string(), s.clone());
            prop_assert!(s.len() <= 255);
            prop_assert!(s.split('/').all(component_ok), "bad component in {:?}", s);
            prop_assert!(!s.split('/').any(|c| c == ".." || c == "."));
        }
        Ok(())
    });
}

#[test]
fn name_valid_by_construction() {
    check(
        "name_valid_by_construction",
        (
            valid_name(),
            0..8usize,
            prop_oneof![
                Just(".."),
                Just("."),
                Just(""),
                Just("A"),
                Just("%2e%2e"),
                Just("_x")
            ],
        ),
        |(name, pos, evil)| {
            let n: RepoName = name
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
            prop_assert_eq!(n.to_string().parse::<RepoName>().ok(), Some(n));
            // Inserting a bad component anywhere gets the name refused.
            let mut parts: Vec<&str> = name.split('/').collect();
            let at = pos % (parts.len() + 1);
            parts.insert(at, evil);
            let bad = parts.join("/");
            prop_assert!(bad.parse::<RepoName>().is_err(), "accepted {:?}", bad);
            Ok(())
        },
    );
}

#[test]
fn name_length_limit() {
    check(
        "name_length_limit",
        (component(), 200..400usize),
        |(c, len)| {
            // Repeat valid components up to `len` characters (cutting at a component boundary).
            let mut s = c.clone();
            while s.len() + 1 + c.len() <= len {
                s.push('/');
                s.push_str(&c);
            }
            prop_assert_eq!(
                s.parse::<RepoName>().is_ok(),
                s.len() <= 255,
                "{} chars",
                s.len()
            );
            Ok(())
        },
    );
}

#[test]
fn tag_arbitrary_and_valid() {
    check("tag_arbitrary_input", any_text(), |s| {
        if let Ok(t) = s.parse::<Tag>() {
            prop_assert_eq!(t.as_str(), s.as_str());
            prop_assert!((1..=128).contains(&s.len()));
            prop_assert!(!s.starts_with('.') && !s.starts_with('-'));
            prop_assert!(s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        }
        Ok(())
    });
    check("tag_valid_by_construction", valid_tag(), |s| {
        let t: Tag = s
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
        prop_assert_eq!(t.to_string(), s.clone());
        let long = format!("{s}{}", "a".repeat(129 - s.len()));
        prop_assert!(long.parse::<Tag>().is_err());
        for prefix in [".", "-", "/", ":"] {
            let bad = format!("{prefix}{s}");
            prop_assert!(bad.parse::<Tag>().is_err(), "accepted {:?}", bad);
        }
        Ok(())
    });
}

#[test]
fn reference_arbitrary_and_valid() {
    check(
        "reference_arbitrary_input",
        prop_oneof![any_text(), digest_like()],
        |s| {
            if let Ok(r) = s.parse::<Reference>() {
                prop_assert_eq!(r.to_string(), s.clone());
                prop_assert_eq!(r.to_string().parse::<Reference>().ok(), Some(r.clone()));
                match r {
                    Reference::Tag(_) => prop_assert!(!s.contains(':')),
                    Reference::Digest(_) => prop_assert!(s.contains(':')),
                }
            }
            Ok(())
        },
    );
    check(
        "reference_valid_by_construction",
        prop_oneof![
            valid_tag().prop_map(|t| (t, false)),
            valid_digest().prop_map(|(a, h)| (format!("{a}:{h}"), true)),
        ],
        |(s, is_digest)| {
            let r: Reference = s
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            prop_assert_eq!(matches!(r, Reference::Digest(_)), is_digest);
            prop_assert_eq!(r.to_string(), s);
            Ok(())
        },
    );
}

/// Arbitrary JSON values, a few levels deep, with the manifest's field names as likely keys.
fn json_value() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "schemaVersion",
        "mediaType",
        "config",
        "layers",
        "manifests",
        "subject",
        "digest",
        "size",
        "urls",
        "artifactType",
        "annotations",
    ];
    let key = prop_oneof![11 => words(KEYS), 1 => "[a-z]{1,6}"];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(2)),
        Just(json!(manifest::OCI_MANIFEST)),
        Just(json!(manifest::OCI_INDEX)),
        valid_digest().prop_map(|(a, h)| json!(format!("{a}:{h}"))),
        any_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key.clone(), inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn any_content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(manifest::OCI_MANIFEST.to_owned())),
        Just(Some(manifest::OCI_INDEX.to_owned())),
        Just(Some(manifest::DOCKER_MANIFEST.to_owned())),
        Just(Some(manifest::DOCKER_LIST.to_owned())),
        Just(Some(format!("{}; charset=utf-8", manifest::OCI_MANIFEST))),
        any_text().prop_map(Some),
    ]
}

#[test]
fn manifest_arbitrary_input() {
    check(
        "manifest_arbitrary_bytes",
        (vec(any::<u8>(), 0..2048), any_content_type()),
        |(bytes, ct)| {
            let _ = manifest::parse(&bytes, ct.as_deref());
            Ok(())
        },
    );
    check(
        "manifest_arbitrary_json",
        (json_value(), any_content_type()),
        |(v, ct)| {
            let bytes = serde_json::to_vec(&v).expect("serialise");
            if let Ok(p) = manifest::parse(&bytes, ct.as_deref()) {
                // Whatever is accepted has a supported type and schemaVersion 2.
                prop_assert!(manifest::kind_of(&p.media_type) == Some(p.kind));
                prop_assert_eq!(v.get("schemaVersion"), Some(&json!(2)));
            }
            Ok(())
        },
    );
}

fn descriptor(media_type: &str, alg: Algorithm, hex: &str, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": format!("{alg}:{hex}"), "size": size})
}

#[test]
fn manifest_valid_by_construction() {
    let layer = (valid_digest(), 0..1_000_000u64, any::<bool>());
    check(
        "manifest_image_valid_by_construction",
        (
            valid_digest(),
            vec(layer, 0..8),
            proptest::option::of(valid_digest()),
            prop_oneof![
                Just(manifest::OCI_MANIFEST),
                Just(manifest::DOCKER_MANIFEST)
            ],
            any::<bool>(),
        ),
        |((calg, chex), layers, subject, mt, with_media_type)| {
            let mut m = json!({
                "schemaVersion": 2,
                "config": descriptor("application/vnd.oci.image.config.v1+json", calg, &chex, 7),
                "layers": layers.iter().map(|((a, h), size, foreign)| {
                    let mut d = descriptor("application/vnd.oci.image.layer.v1.tar", *a, h, *size);
                    if *foreign {
                        d["urls"] = json!(["https://example.invalid/layer"]);
                    }
                    d
                }).collect::<Vec<_>>(),
            });
            if with_media_type {
                m["mediaType"] = json!(mt);
            }
            if let Some((a, h)) = &subject {
                m["subject"] = descriptor(manifest::OCI_MANIFEST, *a, h, 100);
            }
            let bytes = serde_json::to_vec(&m).expect("serialise");
            let p = manifest::parse(&bytes, Some(mt))
                .map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(p.kind, Kind::Image);
            prop_assert_eq!(p.media_type.as_str(), mt);
            let mut want = vec![format!("{calg}:{chex}")];
            want.extend(
                layers
                    .iter()
                    .filter(|(_, _, foreign)| !foreign)
                    .map(|((a, h), _, _)| format!("{a}:{h}")),
            );
            let got: Vec<String> = p.refs.iter().map(|r| r.digest.to_string()).collect();
            prop_assert_eq!(got, want);
            prop_assert!(p
                .refs
                .iter()
                .all(|r| r.role != storage::manifest::Role::Child));
            prop_assert_eq!(
                p.subject.map(|d| d.to_string()),
                subject.map(|(a, h)| format!("{a}:{h}"))
            );
            // The other family's type in Content-Type conflicts with an explicit mediaType.
            if with_media_type {
                prop_assert!(manifest::parse(&bytes, Some(manifest::OCI_INDEX)).is_err());
            }
            // A schemaVersion other than 2 is refused.
            let mut v1 = m.clone();
            v1["schemaVersion"] = json!(1);
            prop_assert!(
                manifest::parse(&serde_json::to_vec(&v1).expect("json"), Some(mt)).is_err()
            );
            Ok(())
        },
    );
    check(
        "manifest_index_valid_by_construction",
        (
            vec(valid_digest(), 0..8),
            prop_oneof![Just(manifest::OCI_INDEX), Just(manifest::DOCKER_LIST)],
        ),
        |(children, mt)| {
            let m = json!({
                "schemaVersion": 2,
                "mediaType": mt,
                "manifests": children.iter().map(|(a, h)| descriptor(manifest::OCI_MANIFEST, *a, h, 500)).collect::<Vec<_>>(),
            });
            let bytes = serde_json::to_vec(&m).expect("serialise");
            let p =
                manifest::parse(&bytes, None).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(p.kind, Kind::Index);
            prop_assert_eq!(p.media_type.as_str(), mt);
            let got: Vec<String> = p.refs.iter().map(|r| r.digest.to_string()).collect();
            let want: Vec<String> = children.iter().map(|(a, h)| format!("{a}:{h}")).collect();
            prop_assert_eq!(got, want);
            prop_assert!(p
                .refs
                .iter()
                .all(|r| r.role == storage::manifest::Role::Child));
            Ok(())
        },
    );
}
