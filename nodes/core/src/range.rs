//! HTTP `Range` requests on blobs (RFC 9110 §14), single ranges only.

/// An inclusive byte range already resolved against the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` value for a 206 answer.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, size)
    }
}

/// How a `Range` header applies to a blob of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: answer 200 with the whole blob. RFC 9110 lets a server ignore a
    /// malformed or multi-range header, which is what clients expect from registries.
    Full,
    Partial(ByteRange),
    /// Syntactically fine but outside the blob: 416.
    Unsatisfiable,
}

/// Just the syntax, before the size is known: `bytes=a-b`, `bytes=a-`, `bytes=-n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    FromTo(u64, Option<u64>),
    Suffix(u64),
}

impl RangeSpec {
    /// `None` for anything not a single well-formed byte range (then ignored).
    pub fn parse(header: &str) -> Option<RangeSpec> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(RangeSpec::Suffix(b.parse().ok()?));
        }
        let start: u64 = a.parse().ok()?;
        if b.is_empty() {
            return Some(RangeSpec::FromTo(start, None));
        }
        let end: u64 = b.parse().ok()?;
        (end >= start).then_some(RangeSpec::FromTo(start, Some(end)))
    }

    pub fn resolve(self, size: u64) -> RangeRequest {
        match self {
            RangeSpec::FromTo(start, _) if start >= size => RangeRequest::Unsatisfiable,
            RangeSpec::FromTo(start, end) => {
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                RangeRequest::Partial(ByteRange { start, end })
            }
            RangeSpec::Suffix(0) => RangeRequest::Unsatisfiable,
            RangeSpec::Suffix(_) if size == 0 => RangeRequest::Unsatisfiable,
            RangeSpec::Suffix(n) => RangeRequest::Partial(ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }),
        }
    }
}

/// Parse and resolve in one step.
pub fn resolve(header: Option<&str>, size: u64) -> RangeRequest {
    match header.and_then(RangeSpec::parse) {
        None => RangeRequest::Full,
        Some(spec) => spec.resolve(size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn resolves_ranges() {
        assert_eq!(resolve(None, 10), RangeRequest::Full);
        assert_eq!(resolve(Some("bytes=0-0"), 10), part(0, 0));
        assert_eq!(resolve(Some("bytes=2-"), 10), part(2, 9));
        assert_eq!(resolve(Some("bytes=2-100"), 10), part(2, 9));
        assert_eq!(resolve(Some("bytes=-3"), 10), part(7, 9));
        assert_eq!(resolve(Some("bytes=-30"), 10), part(0, 9));
        assert_eq!(resolve(Some("bytes=10-"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-0"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-"), 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn ignores_what_it_cannot_parse() {
        for h in [
            "bytes=5-2",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
        ] {
            assert_eq!(resolve(Some(h), 10), RangeRequest::Full, "{h}");
        }
    }
}
