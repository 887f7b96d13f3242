//! Object ids: BLAKE3 digests, written `blake3:<64 lowercase hex>` everywhere.

use std::fmt;
use std::str::FromStr;

/// The textual prefix of every id.
pub const ID_PREFIX: &str = "blake3:";

/// The id of a blob (BLAKE3 of its raw bytes) or of a tree (BLAKE3 of its canonical encoding).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

/// A string that is not `blake3:` followed by 64 lowercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("invalid id {0:?}: expected blake3:<64 lowercase hex digits>")]
pub struct IdParseError(pub String);

impl Id {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps a finished BLAKE3 hash.
    pub fn from_hash(hash: blake3::Hash) -> Id {
        Id(*hash.as_bytes())
    }

    /// The 64 lowercase hex digits, without the prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// True if `s` has the shape of an id (so it is never read as a key).
    pub fn looks_like_id(s: &str) -> bool {
        s.parse::<Id>().is_ok()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ID_PREFIX}{}", self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Id {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Id, IdParseError> {
        let err = || IdParseError(s.to_string());
        let hex_part = s.strip_prefix(ID_PREFIX).ok_or_else(err)?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| err())?;
        Ok(Id(out))
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_b3sum_of_empty() {
        let id = Id::of(b"");
        assert_eq!(
            id.to_string(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(id.to_string().parse::<Id>().unwrap(), id);
    }

    #[test]
    fn rejects_bad_shapes() {
        for s in [
            "",
            "blake3:",
            "sha256:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "blake3:AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262",
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f326",
        ] {
            assert!(s.parse::<Id>().is_err(), "{s} accepted");
        }
    }
}
