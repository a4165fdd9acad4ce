//! Listing tags: order, `n`, `last`, `Link` pagination, unknown repositories.

use conformance::{expect_next_page, next_link, TestRegistry, OCI_MANIFEST};
use serde_json::Value;

/// Tags in "ASCIIbetical" order or in case-insensitive order: the spec allows either.
pub(crate) fn sorted_either_way(tags: &[String]) -> bool {
    let mut ascii = tags.to_vec();
    ascii.sort();
    let mut folded = tags.to_vec();
    folded.sort_by_key(|t| t.to_lowercase());
    tags == ascii.as_slice() || tags == folded.as_slice()
}

async fn list(reg: &TestRegistry, url: &str) -> (Vec<String>, Option<String>, Value) {
    reg.list_page(url, "tags").await
}

const TAGS: &[&str] = &[
    "latest", "v1", "v10", "v2", "1.0", "A-upper", "_under", "beta", "Beta2", "z", "0",
];

async fn tagged_repo(reg: &TestRegistry, repo: &str) -> Vec<String> {
    let img = reg.push_image(repo, None, 1).await;
    for t in TAGS {
        reg.push_manifest(repo, t, OCI_MANIFEST, &img.manifest)
            .await;
    }
    let mut want: Vec<String> = TAGS.iter().map(|s| s.to_string()).collect();
    want.sort();
    want
}

#[tokio::test]
async fn tags_list_is_complete_and_sorted() {
    let reg = TestRegistry::start().await;
    let mut want = tagged_repo(&reg, "tags/all").await;
    let (tags, link, v) = list(&reg, &reg.url("/v2/tags/all/tags/list")).await;
    assert_eq!(v["name"], "tags/all");
    assert!(link.is_none(), "no Link when everything is returned");
    assert!(
        sorted_either_way(&tags),
        "tags not in lexical order: {tags:?}"
    );
    let mut got = tags.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn tags_pagination_with_n_last_and_link() {
    let reg = TestRegistry::start().await;
    tagged_repo(&reg, "tags/page").await;
    let (full, _, _) = list(&reg, &reg.url("/v2/tags/page/tags/list")).await;
    assert_eq!(full.len(), TAGS.len());

    // Follow Link headers with n=3: 3, 3, 3, 2.
    let mut url = reg.url("/v2/tags/page/tags/list?n=3");
    let mut collected = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 10, "pagination does not end");
        let (tags, link, v) = list(&reg, &url).await;
        assert_eq!(v["name"], "tags/page");
        collected.extend(tags.clone());
        match link {
            Some(link) => {
                assert_eq!(tags.len(), 3, "a page with a Link has n entries");
                let last = tags.last().unwrap();
                let path = "/v2/tags/page/tags/list";
                url = expect_next_page(&reg.url("/"), &link, path, 3, last);
            }
            None => {
                assert!(tags.len() <= 3);
                break;
            }
        }
    }
    assert_eq!(pages, 4, "11 tags in pages of 3");
    assert_eq!(collected, full, "pages joined must equal the full list");

    // n equal to the number of tags: all of them, no Link.
    let (tags, link, _) = list(
        &reg,
        &reg.url(&format!("/v2/tags/page/tags/list?n={}", TAGS.len())),
    )
    .await;
    assert_eq!(tags, full);
    assert!(
        link.is_none(),
        "no Link when the last page is full and nothing follows"
    );

    // n larger than the number of tags.
    let (tags, link, _) = list(&reg, &reg.url("/v2/tags/page/tags/list?n=1000")).await;
    assert_eq!(tags, full);
    assert!(link.is_none());

    // last without n: everything after it.
    let last = &full[4];
    let (tags, _, _) = list(
        &reg,
        &reg.url(&format!("/v2/tags/page/tags/list?last={last}")),
    )
    .await;
    assert_eq!(tags, full[5..].to_vec(), "last={last}");

    // n and last together.
    let (tags, _, _) = list(
        &reg,
        &reg.url(&format!("/v2/tags/page/tags/list?n=2&last={last}")),
    )
    .await;
    assert_eq!(tags, full[5..7].to_vec(), "n=2&last={last}");

    // last = the final tag: empty.
    let (tags, link, _) = list(
        &reg,
        &reg.url(&format!(
            "/v2/tags/page/tags/list?n=5&last={}",
            full.last().unwrap()
        )),
    )
    .await;
    assert!(tags.is_empty());
    assert!(link.is_none());
}

#[tokio::test]
async fn tags_n_zero_is_empty_without_link() {
    let reg = TestRegistry::start().await;
    tagged_repo(&reg, "tags/zero").await;
    let resp = reg.get("/v2/tags/zero/tags/list?n=0").expect(200).await;
    assert!(
        next_link(resp.headers()).is_none(),
        "n=0 must not have a Link"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!([]), "n=0: {v}");
}

#[tokio::test]
async fn tags_of_unknown_repository_is_name_unknown() {
    let reg = TestRegistry::start().await;
    reg.push_image("tags/exists", Some("t"), 1).await;
    reg.get("/v2/tags/missing/tags/list")
        .error(404, &["NAME_UNKNOWN"])
        .await;
    // A prefix of an existing repository is not itself a repository.
    reg.get("/v2/tags/tags/list")
        .error(404, &["NAME_UNKNOWN"])
        .await;
}

#[tokio::test]
async fn tags_in_deep_repository_names() {
    let reg = TestRegistry::start().await;
    let repo = "a/b/c/d-e_f.g/h__i";
    reg.push_image(repo, Some("deep"), 1).await;
    let (tags, _, v) = list(&reg, &reg.url(&format!("/v2/{repo}/tags/list"))).await;
    assert_eq!(v["name"], repo);
    assert_eq!(tags, vec!["deep".to_owned()]);
    // A repository whose last component looks like an endpoint word.
    let tricky = "x/manifests/tags";
    reg.push_image(tricky, Some("t1"), 1).await;
    let (tags, _, v) = list(&reg, &reg.url(&format!("/v2/{tricky}/tags/list"))).await;
    assert_eq!(v["name"], tricky);
    assert_eq!(tags, vec!["t1".to_owned()]);
    reg.get(format!("/v2/{tricky}/manifests/t1"))
        .expect(200)
        .await;
}
