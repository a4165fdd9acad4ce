//! `/v2/_catalog`: every repository, sorted, with `n`/`last`/`Link` pagination.

use conformance::{expect_next_page, TestRegistry};

async fn catalog(reg: &TestRegistry, url: &str) -> (Vec<String>, Option<String>) {
    let (repos, link, _) = reg.list_page(url, "repositories").await;
    (repos, link)
}

const REPOS: &[&str] = &[
    "alpha",
    "alpha/one",
    "alpha/two",
    "beta",
    "gamma/x/y",
    "zeta",
    "a-b",
];

#[tokio::test]
async fn catalog_lists_repositories_sorted_and_paginates() {
    let reg = TestRegistry::start().await;
    let (empty, link) = catalog(&reg, &reg.url("/v2/_catalog")).await;
    assert!(empty.is_empty(), "fresh registry catalog: {empty:?}");
    assert!(link.is_none());

    for r in REPOS {
        reg.push_image(r, Some("t"), 1).await;
    }
    // A repository that only holds a blob also exists as far as the catalog may tell; we do not
    // require either answer for it, so use only repositories with manifests above.
    let mut want: Vec<String> = REPOS.iter().map(|s| s.to_string()).collect();
    want.sort();

    let (all, link) = catalog(&reg, &reg.url("/v2/_catalog")).await;
    assert_eq!(all, want);
    assert!(link.is_none());

    let mut url = reg.url("/v2/_catalog?n=2");
    let mut collected = Vec::new();
    for page in 0.. {
        assert!(page < 10, "catalog pagination does not end");
        let (repos, link) = catalog(&reg, &url).await;
        collected.extend(repos.clone());
        match link {
            Some(link) => {
                assert_eq!(repos.len(), 2);
                let last = repos.last().unwrap();
                url = expect_next_page(&reg.url("/"), &link, "/v2/_catalog", 2, last);
            }
            None => break,
        }
    }
    assert_eq!(collected, want);

    let (repos, link) = catalog(&reg, &reg.url("/v2/_catalog?n=0")).await;
    assert!(repos.is_empty());
    assert!(link.is_none(), "n=0 must not have a Link");

    let (repos, link) = catalog(&reg, &reg.url(&format!("/v2/_catalog?n={}", want.len()))).await;
    assert_eq!(repos, want);
    assert!(link.is_none());

    let (repos, _) = catalog(&reg, &reg.url("/v2/_catalog?last=alpha/one")).await;
    assert_eq!(
        repos,
        want[want.iter().position(|r| r == "alpha/one").unwrap() + 1..]
    );
    let (repos, _) = catalog(&reg, &reg.url("/v2/_catalog?n=1&last=alpha")).await;
    assert_eq!(repos, vec!["alpha/one".to_owned()]);
}

#[tokio::test]
async fn catalog_survives_restart() {
    let mut reg = TestRegistry::start().await;
    reg.push_image("persist/one", Some("t"), 1).await;
    reg.push_image("persist/two", Some("t"), 1).await;
    reg.restart().await;
    let (repos, _) = catalog(&reg, &reg.url("/v2/_catalog")).await;
    assert_eq!(
        repos,
        vec!["persist/one".to_owned(), "persist/two".to_owned()]
    );
}
