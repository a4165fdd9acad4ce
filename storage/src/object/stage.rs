//! The saved state of a staged upload (`uploads/<id>/staged`): its parts, its tail, the state
//! before the latest append, and which prefix of the bytes an append may restart from.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One uploaded part of the multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Part {
    pub(super) size: u64,
    /// The store's id for the part (the ETag on S3).
    pub(super) id: String,
}

/// Bytes after the last part: the first `len` bytes of object `uploads/<id>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Tail {
    pub(super) name: String,
    pub(super) len: u64,
}

/// The state before the latest append: the first `parts` parts, then `tail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub(super) parts: usize,
    pub(super) tail: Option<Tail>,
}

/// What `uploads/<id>/staged` records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stage {
    /// The open multipart upload at `uploads/<id>/data`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) upload: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) tail: Option<Tail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) prev: Option<Snapshot>,
    /// Set once the upload is completed: `uploads/<id>/data` holds this many bytes, and `upload`,
    /// `parts`, `tail` and `prev` are empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) completed: Option<u64>,
}

/// Where an append at some offset starts from.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Base {
    /// These parts, then the first bytes of this tail.
    Parts {
        parts: Vec<Part>,
        tail: Option<Tail>,
    },
    /// The first `len` bytes of the completed `data` object.
    Data { len: u64 },
}

fn sum(parts: &[Part]) -> u64 {
    parts.iter().map(|p| p.size).sum()
}

impl Stage {
    pub(super) fn len(&self) -> u64 {
        match self.completed {
            Some(n) => n,
            None => sum(&self.parts) + self.tail.as_ref().map_or(0, |t| t.len),
        }
    }

    /// The state holding exactly the first `offset` staged bytes.
    pub(super) fn base_at(&self, id: &str, offset: u64) -> Result<Base> {
        let len = self.len();
        if offset > len {
            return Err(Error::Corrupt(format!(
                "upload {id} holds {len} bytes, its state says {offset}"
            )));
        }
        if self.completed.is_some() {
            return Ok(Base::Data { len: offset });
        }
        let cut = |parts: &[Part], tail: &Option<Tail>| {
            let in_parts = sum(parts);
            let in_tail = tail.as_ref().map_or(0, |t| t.len);
            (in_parts <= offset && offset <= in_parts + in_tail).then(|| Base::Parts {
                parts: parts.to_vec(),
                tail: tail
                    .as_ref()
                    .map(|t| Tail {
                        name: t.name.clone(),
                        len: offset - in_parts,
                    })
                    .filter(|t| t.len > 0),
            })
        };
        if let Some(base) = cut(&self.parts, &self.tail) {
            return Ok(base);
        }
        if let Some(prev) = &self.prev {
            if let Some(base) = cut(&self.parts[..prev.parts.min(self.parts.len())], &prev.tail) {
                return Ok(base);
            }
        }
        Err(Error::Corrupt(format!(
            "upload {id} cannot be rewound from {len} to {offset} bytes"
        )))
    }

    /// Names of the tail objects this state still needs.
    pub(super) fn tails(&self) -> HashSet<&str> {
        let prev = self.prev.as_ref().and_then(|p| p.tail.as_ref());
        self.tail
            .iter()
            .chain(prev)
            .map(|t| t.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(size: u64) -> Part {
        Part {
            size,
            id: String::new(),
        }
    }

    fn tail(name: &str, len: u64) -> Option<Tail> {
        Some(Tail {
            name: name.into(),
            len,
        })
    }

    #[test]
    fn rewinds_within_the_tail_or_to_the_previous_state() {
        let s = Stage {
            upload: Some("u".into()),
            parts: vec![part(10), part(10), part(10)],
            tail: tail("t2", 4),
            prev: Some(Snapshot {
                parts: 1,
                tail: tail("t1", 7),
            }),
            completed: None,
        };
        assert_eq!(s.len(), 34);
        // At the end, and inside the tail.
        assert_eq!(
            s.base_at("x", 34).unwrap(),
            Base::Parts {
                parts: s.parts.clone(),
                tail: tail("t2", 4)
            }
        );
        assert_eq!(
            s.base_at("x", 31).unwrap(),
            Base::Parts {
                parts: s.parts.clone(),
                tail: tail("t2", 1)
            }
        );
        assert_eq!(
            s.base_at("x", 30).unwrap(),
            Base::Parts {
                parts: s.parts.clone(),
                tail: None
            }
        );
        // Back to the state before the last append, or inside its tail.
        assert_eq!(
            s.base_at("x", 17).unwrap(),
            Base::Parts {
                parts: vec![part(10)],
                tail: tail("t1", 7)
            }
        );
        assert_eq!(
            s.base_at("x", 12).unwrap(),
            Base::Parts {
                parts: vec![part(10)],
                tail: tail("t1", 2)
            }
        );
        // Neither: inside a part that is no longer a prefix of any recorded state.
        assert!(matches!(s.base_at("x", 25), Err(Error::Corrupt(_))));
        assert!(matches!(s.base_at("x", 5), Err(Error::Corrupt(_))));
        // Past the end.
        assert!(matches!(s.base_at("x", 35), Err(Error::Corrupt(_))));
        assert_eq!(s.tails(), HashSet::from(["t1", "t2"]));
    }

    #[test]
    fn completed_state_serves_any_prefix() {
        let s = Stage {
            completed: Some(100),
            ..Stage::default()
        };
        assert_eq!(s.base_at("x", 40).unwrap(), Base::Data { len: 40 });
        assert!(s.base_at("x", 101).is_err());
        let raw = serde_json::to_string(&s).unwrap();
        assert_eq!(raw, r#"{"completed":100}"#);
        assert_eq!(serde_json::from_str::<Stage>(&raw).unwrap(), s);
        assert_eq!(
            Stage::default().base_at("x", 0).unwrap(),
            Base::Parts {
                parts: vec![],
                tail: None
            }
        );
    }
}
