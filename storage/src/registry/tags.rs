//! Listings: a repository's tags and the catalog of repositories, in pages.

use super::{Page, Registry};
use crate::error::{Error, Result};
use crate::layout;
use crate::types::RepoName;

fn paginate(mut names: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    if let Some(last) = last {
        names.retain(|t| t.as_str() > last);
    }
    match n {
        Some(n) if names.len() > n => {
            names.truncate(n);
            Page {
                items: names,
                more: n > 0,
            }
        }
        _ => Page {
            items: names,
            more: false,
        },
    }
}

impl Registry {
    /// A page of the repository's tags in lexical order, after `last`, at most `n`.
    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let names = self.backend.list_dir(&layout::tags_dir(repo)).await?;
        if names.is_empty() && !self.repo_exists(repo).await? {
            return Err(Error::NameUnknown(repo.to_string()));
        }
        Ok(paginate(names, n, last))
    }

    /// A page of repository names in lexical order.
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let mut names: Vec<String> = self
            .backend
            .list(layout::CATALOG)
            .await?
            .into_iter()
            .filter_map(|m| layout::catalog_name(&m.key).map(str::to_owned))
            .collect();
        names.sort();
        Ok(paginate(names, n, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = names(&["a", "b", "c"]);
        assert_eq!(paginate(all.clone(), None, None).items, all);
        let p = paginate(all.clone(), Some(2), None);
        assert_eq!((p.items, p.more), (names(&["a", "b"]), true));
        let p = paginate(all.clone(), Some(2), Some("b"));
        assert_eq!((p.items, p.more), (names(&["c"]), false));
        let p = paginate(all.clone(), Some(0), None);
        assert_eq!((p.items, p.more), (vec![], false));
        let p = paginate(all.clone(), Some(3), None);
        assert!(!p.more);
    }
}
