//! Property tests ("fuzzing" on stable Rust) of the HTTP layer's parsers of client input: the
//! endpoint parser (`Endpoint::parse`), the upload `Content-Range` parser (`ContentRange`) and
//! the blob `Range` parser (`ByteRange`).
//!
//! Each property holds for arbitrary input (never a panic; results within bounds) and for inputs
//! valid by construction (they parse to the parts they were built from).
//!
//! Case counts: `PROPTEST_CASES` (proptest's own variable, default 256 per property). For a long
//! run, `PROPTEST_SECONDS=600` repeats each property with fresh random seeds until that many
//! seconds have passed and prints how many cases ran:
//!
//! ```text
//! PROPTEST_SECONDS=600 cargo test --release -p registry --test properties endpoint -- --nocapture
//! ```

use http::Method;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use registry::endpoint::{Endpoint, RouteError};
use storage::range::{ByteRange, ContentRange};
use storage::{Digest, Reference, RepoName};

/// An upload chunk's `Content-Range` as its start and end, `None` when it does not parse.
fn parse_content_range(s: &str) -> Option<(u64, u64)> {
    s.parse::<ContentRange>().ok().map(|r| (r.start, r.end))
}

/// A blob `Range` resolved against `size`: `None` when ignored (whole blob), `Some(Err)` when
/// unsatisfiable.
fn parse_range(s: &str, size: u64) -> Option<Result<std::ops::Range<u64>, ()>> {
    let asked = s.parse::<ByteRange>().ok()?;
    Some(asked.resolve(size).map_err(|_| ()))
}

#[path = "../../storage/tests/properties/runner.rs"]
mod runner;
use runner::{check, words};

fn any_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::PUT),
        Just(Method::POST),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
        Just(Method::TRACE),
        "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).expect("token")),
    ]
}

fn valid_digest() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
        "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
    ]
}

/// A component of the spec's name grammar, sometimes one of the API's keywords.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]{1,6}((\\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}",
        1 => words(&["blobs", "uploads", "manifests", "tags", "list", "referrers"]),
    ]
}

fn valid_name() -> impl Strategy<Value = String> {
    vec(component(), 1..5).prop_map(|c| c.join("/"))
}

/// A path segment: valid pieces, keywords, and hostile ones.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => component(),
        1 => valid_digest(),
        7 => words(&["", "..", ".", "%2e%2e", "%2F", "_catalog", "latest"]),
        1 => "[ -~]{0,20}",
        1 => any::<String>(),
    ]
}

/// Paths after `/v2/`: arbitrary text, or sequences of plausible and hostile segments.
fn any_rest() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,300}",
        vec(segment(), 0..10).prop_map(|s| s.join("/")),
    ]
}

#[test]
fn endpoint_arbitrary_input() {
    check(
        "endpoint_arbitrary_input",
        (any_method(), any_rest()),
        |(m, rest)| {
            match Endpoint::parse(&m, &rest) {
                Ok(ep) => {
                    // Whatever is accepted names only valid parts, and the path is exactly the
                    // name followed by the endpoint's suffix.
                    // The name, and the suffix after it when the endpoint has one to check here.
                    let parts: Option<(&RepoName, Option<String>)> = match &ep {
                        Endpoint::Base => {
                            prop_assert!(rest.is_empty());
                            None
                        }
                        Endpoint::Catalog => {
                            prop_assert_eq!(rest.as_str(), "_catalog");
                            None
                        }
                        Endpoint::ListTags { name } => Some((name, Some("tags/list".to_owned()))),
                        Endpoint::StartUpload { name } => {
                            let suffix = rest.strip_prefix(name.as_str()).unwrap_or("");
                            prop_assert!(
                                suffix == "/blobs/uploads/" || suffix == "/blobs/uploads",
                                "{:?}",
                                rest
                            );
                            Some((name, None))
                        }
                        Endpoint::GetManifest { name, reference }
                        | Endpoint::HeadManifest { name, reference }
                        | Endpoint::PutManifest { name, reference }
                        | Endpoint::DeleteManifest { name, reference } => {
                            Some((name, Some(format!("manifests/{reference}"))))
                        }
                        Endpoint::GetBlob { name, digest }
                        | Endpoint::HeadBlob { name, digest }
                        | Endpoint::DeleteBlob { name, digest } => {
                            Some((name, Some(format!("blobs/{digest}"))))
                        }
                        Endpoint::Referrers { name, digest } => {
                            Some((name, Some(format!("referrers/{digest}"))))
                        }
                        Endpoint::GetUpload { name, id }
                        | Endpoint::PatchUpload { name, id }
                        | Endpoint::PutUpload { name, id }
                        | Endpoint::DeleteUpload { name, id } => {
                            prop_assert!(!id.contains('/') && !id.is_empty());
                            Some((name, Some(format!("blobs/uploads/{id}"))))
                        }
                    };
                    if let Some((name, suffix)) = parts {
                        if let Some(suffix) = suffix {
                            let whole = format!("{name}/{suffix}");
                            prop_assert_eq!(&rest, &whole);
                        }
                        prop_assert_eq!(name.as_str().parse::<RepoName>().ok(), Some(name.clone()));
                        prop_assert!(!name.as_str().split('/').any(|c| c == ".." || c == "."));
                        prop_assert!(!name.as_str().contains('%'));
                    }
                }
                Err(RouteError::MethodNotAllowed(allow)) => prop_assert!(!allow.is_empty()),
                Err(RouteError::NotFound | RouteError::Invalid(_)) => {}
                Err(RouteError::ManifestUnknown(reference)) => {
                    // Only GET and HEAD of a manifest, by a reference that is not one.
                    prop_assert!(m == Method::GET || m == Method::HEAD);
                    let suffix = format!("/manifests/{reference}");
                    prop_assert!(rest.ends_with(&suffix));
                    prop_assert!(reference.parse::<storage::Tag>().is_err());
                    prop_assert!(!reference.contains(':'));
                }
            }
            Ok(())
        },
    );
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Tags,
    Manifest,
    Blob,
    Start,
    Upload,
    Referrers,
}

#[test]
fn endpoint_valid_by_construction() {
    let shape = prop_oneof![
        Just(Shape::Tags),
        Just(Shape::Manifest),
        Just(Shape::Blob),
        Just(Shape::Start),
        Just(Shape::Upload),
        Just(Shape::Referrers),
    ];
    let reference = prop_oneof![valid_digest(), "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"];
    check(
        "endpoint_valid_by_construction",
        (
            shape,
            valid_name(),
            valid_digest(),
            reference,
            "[A-Za-z0-9_-]{1,40}",
            any_method(),
        ),
        |(shape, name, digest, reference, id, m)| {
            let n: RepoName = name.parse().expect("valid name");
            let d: Digest = digest.parse().expect("valid digest");
            let r: Reference = reference.parse().expect("valid reference");
            let (rest, want): (String, Option<Endpoint>) = match shape {
                Shape::Tags => (
                    format!("{name}/tags/list"),
                    matches!(m, Method::GET | Method::HEAD)
                        .then(|| Endpoint::ListTags { name: n.clone() }),
                ),
                Shape::Manifest => (
                    format!("{name}/manifests/{reference}"),
                    match m {
                        Method::GET => Some(Endpoint::GetManifest {
                            name: n.clone(),
                            reference: r,
                        }),
                        Method::HEAD => Some(Endpoint::HeadManifest {
                            name: n.clone(),
                            reference: r,
                        }),
                        Method::PUT => Some(Endpoint::PutManifest {
                            name: n.clone(),
                            reference: r,
                        }),
                        Method::DELETE => Some(Endpoint::DeleteManifest {
                            name: n.clone(),
                            reference: r,
                        }),
                        _ => None,
                    },
                ),
                Shape::Blob => (
                    format!("{name}/blobs/{digest}"),
                    match m {
                        Method::GET => Some(Endpoint::GetBlob {
                            name: n.clone(),
                            digest: d,
                        }),
                        Method::HEAD => Some(Endpoint::HeadBlob {
                            name: n.clone(),
                            digest: d,
                        }),
                        Method::DELETE => Some(Endpoint::DeleteBlob {
                            name: n.clone(),
                            digest: d,
                        }),
                        _ => None,
                    },
                ),
                Shape::Start => (
                    format!("{name}/blobs/uploads/"),
                    (m == Method::POST).then(|| Endpoint::StartUpload { name: n.clone() }),
                ),
                Shape::Upload => (
                    format!("{name}/blobs/uploads/{id}"),
                    match m {
                        Method::GET | Method::HEAD => Some(Endpoint::GetUpload {
                            name: n.clone(),
                            id: id.clone(),
                        }),
                        Method::PATCH => Some(Endpoint::PatchUpload {
                            name: n.clone(),
                            id: id.clone(),
                        }),
                        Method::PUT => Some(Endpoint::PutUpload {
                            name: n.clone(),
                            id: id.clone(),
                        }),
                        Method::DELETE => Some(Endpoint::DeleteUpload {
                            name: n.clone(),
                            id: id.clone(),
                        }),
                        _ => None,
                    },
                ),
                Shape::Referrers => (
                    format!("{name}/referrers/{digest}"),
                    matches!(m, Method::GET | Method::HEAD).then(|| Endpoint::Referrers {
                        name: n.clone(),
                        digest: d,
                    }),
                ),
            };
            // An upload id that happens to read as "uploads" turns the path into a new-session one.
            if matches!(shape, Shape::Upload) && id == "uploads" {
                return Ok(());
            }
            match (Endpoint::parse(&m, &rest), want) {
                (Ok(got), Some(want)) => prop_assert_eq!(got, want),
                (Err(RouteError::MethodNotAllowed(_)), None) => {}
                (got, want) => {
                    return Err(TestCaseError::fail(format!(
                        "{m} {rest}: got {got:?}, want {want:?}"
                    )))
                }
            }
            // The same path with a hostile name is refused as invalid, whatever the method.
            for evil in ["..", "%2e%2e", "a%2Fb", "A", "", "."] {
                let bad = format!("{evil}/{rest}");
                if let Ok(ep) = Endpoint::parse(&m, &bad) {
                    return Err(TestCaseError::fail(format!("{m} {bad} accepted as {ep:?}")));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn content_range_arbitrary_input() {
    check(
        "content_range_arbitrary_input",
        prop_oneof![
            any::<String>(),
            "[ -~]{0,60}",
            "(bytes[ =])?[0-9+ -]{0,30}(/[0-9*]{0,20})?",
        ],
        |s| {
            if let Some((a, b)) = parse_content_range(&s) {
                // Both numbers are written in the text (possibly with leading zeros), start first.
                let numbers: Vec<u64> = s
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|run| run.parse().ok())
                    .collect();
                let ia = numbers.iter().position(|&n| n == a);
                let ib = numbers.iter().rposition(|&n| n == b);
                prop_assert!(
                    matches!((ia, ib), (Some(x), Some(y)) if x < y),
                    "{:?} read as {}-{}",
                    s,
                    a,
                    b
                );
            }
            Ok(())
        },
    );
}

#[test]
fn content_range_valid_by_construction() {
    check(
        "content_range_valid_by_construction",
        (
            any::<u64>(),
            any::<u64>(),
            prop_oneof![Just(0u8), Just(1), Just(2), Just(3)],
            any::<u64>(),
        ),
        |(a, b, form, total)| {
            let text = match form {
                0 => format!("{a}-{b}"),
                1 => format!("bytes {a}-{b}/{total}"),
                2 => format!("bytes={a}-{b}"),
                _ => format!(" {a}-{b}/* "),
            };
            prop_assert_eq!(parse_content_range(&text), Some((a, b)), "{}", text);
            // Round trip through the canonical form.
            prop_assert_eq!(parse_content_range(&format!("{a}-{b}")), Some((a, b)));
            // Broken forms are refused.
            for bad in [
                format!("{a}"),
                format!("-{b}"),
                format!("{a}-"),
                format!("{a}x-{b}"),
                format!("{a}-{b}{b}9999999999999999999999"),
            ] {
                prop_assert_eq!(parse_content_range(&bad), None, "{}", bad);
            }
            Ok(())
        },
    );
}

#[test]
fn range_arbitrary_input() {
    check(
        "range_arbitrary_input",
        (
            prop_oneof![
                any::<String>(),
                "[ -~]{0,60}",
                "bytes=[0-9]{0,20}-[0-9]{0,20}",
                "(bytes=)?[0-9, -]{0,40}",
            ],
            prop_oneof![Just(0u64), 0..10u64, any::<u64>()],
        ),
        |(s, size)| {
            if let Some(Ok(r)) = parse_range(&s, size) {
                // A range to serve is never empty and never past the end.
                prop_assert!(r.start < r.end, "{:?} from {:?} size {}", r, s, size);
                prop_assert!(r.end <= size, "{:?} from {:?} size {}", r, s, size);
            }
            Ok(())
        },
    );
}

#[test]
fn range_valid_by_construction() {
    check(
        "range_valid_by_construction",
        (0..1_000_000u64, 0..1_100_000u64, 0..1_100_000u64),
        |(size, a, len)| {
            let b = a.saturating_add(len);
            let got = parse_range(&format!("bytes={a}-{b}"), size);
            if a < size {
                prop_assert_eq!(got, Some(Ok(a..(b + 1).min(size))));
            } else {
                prop_assert_eq!(got, Some(Err(())));
            }
            // Open-ended and suffix forms.
            let open = parse_range(&format!("bytes={a}-"), size);
            if a < size {
                prop_assert_eq!(open, Some(Ok(a..size)));
            } else {
                prop_assert_eq!(open, Some(Err(())));
            }
            let suffix = parse_range(&format!("bytes=-{len}"), size);
            if len == 0 || size == 0 {
                prop_assert_eq!(suffix, Some(Err(())));
            } else {
                prop_assert_eq!(suffix, Some(Ok(size.saturating_sub(len)..size)));
            }
            // Without the unit, or with several ranges, the header is ignored (whole blob).
            prop_assert_eq!(parse_range(&format!("{a}-{b}"), size), None);
            prop_assert_eq!(parse_range(&format!("bytes={a}-{b},0-1"), size), None);
            Ok(())
        },
    );
}
