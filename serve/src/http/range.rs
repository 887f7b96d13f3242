//! `Range` requests on blobs (RFC 9110, one range of bytes): `a-b`, `a-`, `-n`; an end past the
//! blob is clamped; a range that selects nothing is unsatisfiable (416).

/// What a `Range` header asks of a blob of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranged {
    /// No usable range: answer the whole blob (200). Headers that are not `bytes=` or hold
    /// several ranges are ignored, as RFC 9110 allows.
    Whole,
    /// Bytes `start..=end` (206).
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Nothing of the blob (416).
    Unsatisfiable,
}

/// Interprets `header` for a blob of `len` bytes.
pub fn parse(header: Option<&str>, len: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => Ranged::Whole,
        },
        (a, "") => match num(a) {
            Some(a) if a < len => Ranged::Part {
                start: a,
                end: len - 1,
            },
            Some(_) => Ranged::Unsatisfiable,
            None => Ranged::Whole,
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a > b => Ranged::Whole,
            (Some(a), Some(_)) if a >= len => Ranged::Unsatisfiable,
            (Some(a), Some(b)) => Ranged::Part {
                start: a,
                end: b.min(len - 1),
            },
            _ => Ranged::Whole,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = |h: &str| parse(Some(h), 10);
        assert_eq!(parse(None, 10), Ranged::Whole);
        assert_eq!(p("bytes=0-4"), Ranged::Part { start: 0, end: 4 });
        assert_eq!(p("bytes=5-"), Ranged::Part { start: 5, end: 9 });
        assert_eq!(p("bytes=-3"), Ranged::Part { start: 7, end: 9 });
        assert_eq!(p("bytes=-30"), Ranged::Part { start: 0, end: 9 });
        assert_eq!(p("bytes=8-100"), Ranged::Part { start: 8, end: 9 });
        assert_eq!(p("bytes=10-"), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=10-12"), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Ranged::Unsatisfiable);
        assert_eq!(p("bytes=4-2"), Ranged::Whole);
        assert_eq!(p("bytes=0-1,3-4"), Ranged::Whole);
        assert_eq!(p("items=0-1"), Ranged::Whole);
        assert_eq!(p("bytes=x-1"), Ranged::Whole);
        assert_eq!(parse(Some("bytes=0-"), 0), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), Ranged::Unsatisfiable);
    }
}
