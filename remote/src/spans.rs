//! Which bytes of a pack a key record uses: the `spans` of a remote key record.
//!
//! A record names packs, and a pack often holds objects of several keys (a push of many keys
//! fills shared packs; a later push relies on an earlier one's packs). To tell how much of a
//! pack is still live without reading any tree, each record lists, per pack it names, the byte
//! ranges of the objects its closure uses there. The union over every record naming a pack is
//! the pack's live bytes; `repack` copies those and nothing else.
//!
//! Encoded in the record as a flat list of numbers, two per span: the gap since the end of the
//! previous span (for the first, its offset in the pack), then its length. A span of length 0
//! stands for an empty object (stored as zero bytes) and is kept, so every object a record uses
//! lies inside one of its spans.

use serde::{Deserialize, Serialize};

/// A stored object's place in a pack: its offset and stored length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// Byte offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub len: u64,
}

impl Span {
    /// The span's end (exclusive).
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Disjoint spans of one pack, sorted by offset; neighbours that touch are merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u64>", into = "Vec<u64>")]
pub struct Spans(Vec<Span>);

impl Spans {
    /// The smallest set of spans covering `spans` (in any order, overlapping or not).
    pub fn of(spans: impl IntoIterator<Item = Span>) -> Spans {
        let mut all: Vec<Span> = spans.into_iter().collect();
        all.sort();
        let mut out: Vec<Span> = Vec::with_capacity(all.len());
        for s in all {
            match out.last_mut() {
                // Touching or overlapping (an empty span at either end of another included).
                Some(last) if s.offset <= last.end() => {
                    let end = last.end().max(s.end());
                    last.len = end - last.offset;
                }
                _ => out.push(s),
            }
        }
        Spans(out)
    }

    /// These spans and `other`'s.
    pub fn union(&self, other: &Spans) -> Spans {
        Spans::of(self.0.iter().chain(other.0.iter()).copied())
    }

    /// The bytes covered.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|s| s.len).sum()
    }

    /// True if the object stored at `s` lies inside one span.
    pub fn contains(&self, s: Span) -> bool {
        // The last span starting at or before `s`.
        let i = self.0.partition_point(|x| x.offset <= s.offset);
        i > 0 && self.0[i - 1].end() >= s.end()
    }

    /// The spans, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Span> {
        self.0.iter()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Spans> for Vec<u64> {
    fn from(s: Spans) -> Vec<u64> {
        let mut out = Vec::with_capacity(s.0.len() * 2);
        let mut at = 0;
        for x in s.0 {
            out.push(x.offset - at);
            out.push(x.len);
            at = x.end();
        }
        out
    }
}

impl TryFrom<Vec<u64>> for Spans {
    type Error = String;
    fn try_from(v: Vec<u64>) -> Result<Spans, String> {
        if !v.len().is_multiple_of(2) {
            return Err(format!("{} numbers: spans come in pairs", v.len()));
        }
        let mut out = Vec::with_capacity(v.len() / 2);
        let mut at: u64 = 0;
        for pair in v.chunks_exact(2) {
            let offset = at.checked_add(pair[0]).ok_or("span offset overflows")?;
            let end = offset.checked_add(pair[1]).ok_or("span length overflows")?;
            out.push(Span {
                offset,
                len: pair[1],
            });
            at = end;
        }
        // Written merged: anything else was not written by cairn, but still means the same.
        Ok(Spans::of(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(offset: u64, len: u64) -> Span {
        Span { offset, len }
    }

    #[test]
    fn merges_and_round_trips() {
        let s = Spans::of([
            sp(30, 5),
            sp(11, 4),
            sp(15, 5),
            sp(40, 0),
            sp(35, 0),
            sp(50, 2),
        ]);
        assert_eq!(s.0, vec![sp(11, 9), sp(30, 5), sp(40, 0), sp(50, 2)]);
        assert_eq!(s.bytes(), 16);
        let v: Vec<u64> = s.clone().into();
        assert_eq!(v, vec![11, 9, 10, 5, 5, 0, 10, 2]);
        assert_eq!(Spans::try_from(v).unwrap(), s);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "[11,9,10,5,5,0,10,2]");
        assert_eq!(serde_json::from_str::<Spans>(&json).unwrap(), s);
    }

    #[test]
    fn containment_of_objects() {
        let s = Spans::of([sp(11, 9), sp(30, 5), sp(40, 0)]);
        assert!(s.contains(sp(11, 4)));
        assert!(s.contains(sp(15, 5)));
        assert!(s.contains(sp(20, 0)), "an empty object at a span's end");
        assert!(s.contains(sp(40, 0)));
        assert!(!s.contains(sp(41, 0)));
        assert!(!s.contains(sp(18, 4)), "runs past the span");
        assert!(!s.contains(sp(25, 2)));
    }

    #[test]
    fn refuses_what_cannot_be_spans() {
        assert!(Spans::try_from(vec![1, 2, 3]).is_err());
        assert!(Spans::try_from(vec![u64::MAX, 2]).is_err());
        assert!(Spans::try_from(vec![5, u64::MAX]).is_err());
    }
}
