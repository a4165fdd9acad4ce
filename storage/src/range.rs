//! Byte ranges as clients write them, parsed once in `FromStr` like the other newtypes:
//! [`ContentRange`] (the `Content-Range` of an upload chunk) and [`ByteRange`] (the `Range` of a
//! blob download), and the header values of a 416 answer ([`upload_range`],
//! [`unsatisfied_range`]). Text only: this crate knows nothing of HTTP types.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// Why a range header was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed range {0:?}")]
pub struct RangeSyntax(pub String);

/// The `Content-Range` of an upload chunk: `<start>-<end>`, both inclusive, optionally written
/// `bytes <start>-<end>/<total>` or `bytes=<start>-<end>`. Parsing checks the syntax only; an end
/// before the start parses and is refused by [`ContentRange::len`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte of the chunk.
    pub start: u64,
    /// Last byte of the chunk (inclusive).
    pub end: u64,
}

impl ContentRange {
    /// The number of bytes the range covers; `None` when it ends before it starts or covers more
    /// bytes than a `u64` counts.
    pub fn len(&self) -> Option<u64> {
        self.end.checked_sub(self.start)?.checked_add(1)
    }

    /// Whether the range is empty (it never is: a range covers at least its start).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for ContentRange {
    type Err = RangeSyntax;
    fn from_str(v: &str) -> Result<Self, RangeSyntax> {
        let bad = || RangeSyntax(v.to_owned());
        let t = v.trim();
        let t = t
            .strip_prefix("bytes ")
            .or_else(|| t.strip_prefix("bytes="))
            .unwrap_or(t);
        let t = t.split('/').next().ok_or_else(bad)?;
        let (a, b) = t.split_once('-').ok_or_else(bad)?;
        let start = a.trim().parse().map_err(|_| bad())?;
        let end = b.trim().parse().map_err(|_| bad())?;
        Ok(ContentRange { start, end })
    }
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A single-range `Range` request of a blob (`bytes=<first>-<last>`, `bytes=<first>-`,
/// `bytes=-<suffix length>`). Forms this server ignores (other units, several ranges, a last
/// byte before the first) do not parse, and the whole blob is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// From `first` to `last` (inclusive), or to the end when `last` is `None`.
    From {
        /// First byte.
        first: u64,
        /// Last byte, inclusive.
        last: Option<u64>,
    },
    /// The last `n` bytes.
    Suffix(u64),
}

/// A range that selects no byte of the blob (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the range selects no byte of the blob")]
pub struct Unsatisfiable;

impl ByteRange {
    /// The bytes to send from a blob of `size` bytes: never empty, never past the end.
    pub fn resolve(self, size: u64) -> Result<Range<u64>, Unsatisfiable> {
        match self {
            ByteRange::Suffix(n) if n == 0 || size == 0 => Err(Unsatisfiable),
            ByteRange::Suffix(n) => Ok(size.saturating_sub(n)..size),
            ByteRange::From { first, .. } if first >= size => Err(Unsatisfiable),
            ByteRange::From { first, last } => {
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                Ok(first..end)
            }
        }
    }
}

impl FromStr for ByteRange {
    type Err = RangeSyntax;
    fn from_str(v: &str) -> Result<Self, RangeSyntax> {
        let bad = || RangeSyntax(v.to_owned());
        let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
        if spec.contains(',') {
            return Err(bad());
        }
        let (a, b) = spec.split_once('-').ok_or_else(bad)?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return b.parse().map(ByteRange::Suffix).map_err(|_| bad());
        }
        let first: u64 = a.parse().map_err(|_| bad())?;
        let last = match b {
            "" => None,
            b => Some(b.parse::<u64>().map_err(|_| bad())?),
        };
        if last.is_some_and(|l| l < first) {
            return Err(bad());
        }
        Ok(ByteRange::From { first, last })
    }
}

/// The `Range` header of an upload holding `offset` bytes (`0-<last byte>`; `0-0` when empty, as
/// clients expect), sent with every upload answer and with a 416 for a chunk out of place.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// The `Content-Range` of a 416 answer to a blob `Range` request (`bytes */<size>`).
pub fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// The `Content-Range` of a 206 answer carrying `range` of a blob of `size` bytes.
pub fn partial_range(range: &Range<u64>, size: u64) -> String {
    format!("bytes {}-{}/{size}", range.start, range.end - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        let good = [
            ("0-99", (0, 99)),
            ("bytes 100-199/1000", (100, 199)),
            ("bytes 100-199/*", (100, 199)),
            ("bytes=5-6", (5, 6)),
            (" 7 - 8 ", (7, 8)),
            ("9-3", (9, 3)),
        ];
        for (text, (start, end)) in good {
            assert_eq!(text.parse(), Ok(ContentRange { start, end }), "{text}");
        }
        for bad in [
            "",
            "-5",
            "5-",
            "a-b",
            "5",
            "bytes 1-x/3",
            "1-99999999999999999999",
        ] {
            assert!(bad.parse::<ContentRange>().is_err(), "{bad}");
        }
        let len = |s: &str| s.parse::<ContentRange>().unwrap().len();
        assert_eq!(len("0-0"), Some(1));
        assert_eq!(len("10-19"), Some(10));
        assert_eq!(len("9-3"), None);
        assert_eq!(len(&format!("0-{}", u64::MAX)), None);
        assert_eq!(ContentRange { start: 1, end: 2 }.to_string(), "1-2");
    }

    #[test]
    fn byte_ranges() {
        let r = |s: &str, size| s.parse::<ByteRange>().ok().map(|b| b.resolve(size));
        assert_eq!(r("bytes=0-9", 100), Some(Ok(0..10)));
        assert_eq!(r("bytes=90-", 100), Some(Ok(90..100)));
        assert_eq!(r("bytes=90-200", 100), Some(Ok(90..100)));
        assert_eq!(r("bytes=-10", 100), Some(Ok(90..100)));
        assert_eq!(r("bytes=-1000", 100), Some(Ok(0..100)));
        assert_eq!(r(" bytes= 3 - 4 ", 100), Some(Ok(3..5)));
        assert_eq!(r("bytes=100-", 100), Some(Err(Unsatisfiable)));
        assert_eq!(r("bytes=-0", 100), Some(Err(Unsatisfiable)));
        assert_eq!(r("bytes=-5", 0), Some(Err(Unsatisfiable)));
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=x-1",
            "bytes=1-x",
            "bytes=-",
            "bytes=",
            "0-1",
            "",
        ] {
            assert!(ignored.parse::<ByteRange>().is_err(), "{ignored}");
        }
    }

    #[test]
    fn answer_headers() {
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
        assert_eq!(unsatisfied_range(42), "bytes */42");
        assert_eq!(partial_range(&(5..10), 42), "bytes 5-9/42");
    }
}
