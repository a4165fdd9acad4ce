//! Globs over repository names and tags, as retention and sparse rules write them.

/// A glob over repository names or tags: `*` matches within one path component, `**` across
/// components, `?` one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern from its text.
    pub fn new(p: impl Into<String>) -> Self {
        Pattern(p.into())
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        glob(self.0.as_bytes(), text.as_bytes())
    }
}

fn glob(p: &[u8], t: &[u8]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            (0..=t.len()).any(|i| glob(rest, &t[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if glob(rest, &t[i..]) {
                    return true;
                }
                if i < t.len() && t[i] == b'/' {
                    return false;
                }
            }
            false
        }
        Some(b'?') => !t.is_empty() && t[0] != b'/' && glob(&p[1..], &t[1..]),
        Some(&c) => t.first() == Some(&c) && glob(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let p = |s: &str| Pattern::new(s);
        assert!(p("builds/*").matches("builds/app"));
        assert!(!p("builds/*").matches("builds/a/b"));
        assert!(p("builds/**").matches("builds/a/b"));
        assert!(p("**").matches("anything/at/all"));
        assert!(p("v?").matches("v1"));
        assert!(!p("v?").matches("v10"));
        assert!(p("release-*").matches("release-1.2"));
        assert!(!p("release-*").matches("main"));
        assert!(p("exact").matches("exact"));
    }
}
