//! Validated newtypes for everything a client names: digests, repositories, tags and references.
//!
//! Each type checks its input once, in `FromStr`, so the rest of the code can trust it: a
//! `RepoName` never contains `..` or an empty component, a `Digest` always has a supported
//! algorithm and a hex string of the right length. These rules come from the OCI distribution
//! spec ("Pulling manifests") and the image spec ("Digests").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a client-supplied string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The digest is not `algorithm:hex` with a supported algorithm and the right length.
    #[error("invalid digest {0:?}: {1}")]
    Digest(String, &'static str),
    /// The repository name breaks the spec's grammar.
    #[error("invalid repository name {0:?}: {1}")]
    Name(String, &'static str),
    /// The tag breaks the spec's grammar.
    #[error("invalid tag {0:?}: tags are 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    Tag(String),
}

/// A digest algorithm this registry can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default of every client.
    Sha256,
    /// SHA-512, registered by the image spec.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as written in digests.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl FromStr for Algorithm {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(ParseError::Digest(s.to_owned(), "unsupported algorithm")),
        }
    }
}

/// `Display` as the text itself and `Debug` as the quoted text, for a newtype over `String`.
macro_rules! text_fmt {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A content digest such as `sha256:9f86d0...`, always lowercase hex of the algorithm's length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a digest from raw hash output.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Self {
        Digest {
            algorithm,
            hex: hex::encode(bytes),
        }
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| ParseError::Digest(s.to_owned(), why);
        let (alg, hex) = s.split_once(':').ok_or_else(|| bad("missing ':'"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                let grammar_ok = !alg.is_empty()
                    && alg.split(['+', '.', '_', '-']).all(|p| {
                        !p.is_empty()
                            && p.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    });
                return Err(bad(if grammar_ok {
                    "unsupported algorithm (sha256 and sha512 are supported)"
                } else {
                    "malformed algorithm"
                }));
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(bad("wrong length for the algorithm"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("encoded part must be lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Longest repository name accepted. Clients cap `host/name` at 255 characters.
pub const MAX_NAME_LEN: usize = 255;

/// A repository name: slash-separated components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn component_ok(c: &str) -> Result<(), &'static str> {
    let b = c.as_bytes();
    if b.is_empty() {
        return Err("empty path component");
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("components must start and end with [a-z0-9]");
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return Err("only [a-z0-9._-] may appear in a component"),
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return Err("separators must sit between [a-z0-9] characters");
        }
    }
    Ok(())
}

impl FromStr for RepoName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseError::Name(s.to_owned(), "empty name"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(ParseError::Name(s.to_owned(), "longer than 255 characters"));
        }
        for c in s.split('/') {
            component_ok(c).map_err(|why| ParseError::Name(s.to_owned(), why))?;
        }
        Ok(RepoName(s.to_owned()))
    }
}

text_fmt!(RepoName);

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        if !first_ok || !rest_ok || b.len() > 128 {
            return Err(ParseError::Tag(s.to_owned()));
        }
        Ok(Tag(s.to_owned()))
    }
}

text_fmt!(Tag);

/// What follows `/manifests/`: a tag or a digest. Anything with a ':' is read as a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable digest.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse().map(Reference::Digest)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H64: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn digests() {
        let good = [format!("sha256:{H64}"), format!("sha512:{H64}{H64}")];
        for g in &good {
            let d: Digest = g.parse().unwrap();
            assert_eq!(&d.to_string(), g);
        }
        let bad = [
            String::new(),
            "sha256".into(),
            format!("sha256{H64}"),
            format!("sha256:{}", &H64[1..]),
            format!("sha256:{H64}0"),
            format!("sha256:{}", H64.to_uppercase()),
            format!("sha512:{H64}"),
            format!("md5:{H64}"),
            format!("SHA256:{H64}"),
            format!("sha256:{}g", &H64[1..]),
            format!("sha256:../{}", &H64[3..]),
            format!(":{H64}"),
        ];
        for b in &bad {
            assert!(b.parse::<Digest>().is_err(), "{b:?} should be rejected");
        }
    }

    #[test]
    fn names() {
        for g in [
            "a",
            "library/busybox",
            "a/b/c/d",
            "my-repo",
            "my--repo",
            "my_repo",
            "my__repo",
            "my.repo",
            "0/1",
            "builds.registry/x",
        ] {
            assert!(g.parse::<RepoName>().is_ok(), "{g:?} should be accepted");
        }
        let long = "a".repeat(256);
        for b in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            "-a",
            "a-",
            "a___b",
            "a._b",
            "a%2fb",
            "a b",
            "_a",
            "a/_tags",
            long.as_str(),
        ] {
            assert!(b.parse::<RepoName>().is_err(), "{b:?} should be rejected");
        }
    }

    #[test]
    fn tags() {
        let max = "a".repeat(128);
        for g in ["latest", "v1.2.3", "_x", "A-b_c.d", "0", max.as_str()] {
            assert!(g.parse::<Tag>().is_ok(), "{g:?} should be accepted");
        }
        let long = "a".repeat(129);
        for b in ["", ".a", "-a", "a/b", "a:b", "a b", "ä", long.as_str()] {
            assert!(b.parse::<Tag>().is_err(), "{b:?} should be rejected");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        assert!(matches!(
            format!("sha256:{H64}").parse(),
            Ok(Reference::Digest(_))
        ));
        assert!("sha256:abc".parse::<Reference>().is_err());
    }
}
