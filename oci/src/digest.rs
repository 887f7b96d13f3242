//! OCI digests (`sha256:<hex>`, `sha512:<hex>`) and a reader that hashes what passes through.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256, Sha512};

use crate::MAX_JSON;

/// The digest algorithms cairn accepts (the two the OCI image spec registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alg {
    /// SHA-256, 64 hex digits.
    Sha256,
    /// SHA-512, 128 hex digits.
    Sha512,
}

impl Alg {
    /// The name in digests and in `blobs/<alg>/`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Sha256 => "sha256",
            Alg::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Alg::Sha256 => 64,
            Alg::Sha512 => 128,
        }
    }

    /// The algorithm named `name`, if cairn supports it.
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "sha256" => Some(Alg::Sha256),
            "sha512" => Some(Alg::Sha512),
            _ => None,
        }
    }
}

/// A parsed digest: a supported algorithm and exactly its number of lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OciDigest {
    /// The algorithm.
    pub alg: Alg,
    /// The lowercase hex value.
    pub hex: String,
}

impl OciDigest {
    /// Parses `alg:hex` strictly.
    pub fn parse(s: &str) -> Result<OciDigest, String> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {s:?} has no algorithm"))?;
        let alg = Alg::from_name(alg)
            .ok_or_else(|| format!("digest {s:?}: unsupported algorithm (sha256 or sha512)"))?;
        OciDigest::from_parts(alg, hex)
            .ok_or_else(|| format!("digest {s:?}: want {} lowercase hex digits", alg.hex_len()))
    }

    /// A digest from an algorithm and a hex string, if the hex is well formed.
    pub fn from_parts(alg: Alg, hex: &str) -> Option<OciDigest> {
        (hex.len() == alg.hex_len() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| OciDigest {
                alg,
                hex: hex.to_string(),
            })
    }

    /// The blob's path in a layout.
    pub fn path(&self) -> String {
        format!("blobs/{}/{}", self.alg.name(), self.hex)
    }
}

impl fmt::Display for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.hex)
    }
}

/// The sha256 digest of `bytes`.
pub(crate) fn sha256_of(bytes: &[u8]) -> OciDigest {
    OciDigest {
        alg: Alg::Sha256,
        hex: hex::encode(Sha256::digest(bytes)),
    }
}

/// Passes bytes through while hashing them (sha256 always, sha512 on request), counting them,
/// remembering the first four (for magic numbers) and keeping a copy of documents that may be
/// JSON (first non-blank byte `{` or `[`, at most [`MAX_JSON`] bytes).
pub(crate) struct Tap<R> {
    inner: R,
    sha256: Sha256,
    sha512: Option<Sha512>,
    pub(crate) size: u64,
    pub(crate) head: Vec<u8>,
    keep: Option<Vec<u8>>,
    decided: bool,
}

impl<R: Read> Tap<R> {
    pub(crate) fn new(inner: R, sha512: bool) -> Tap<R> {
        Tap {
            inner,
            sha256: Sha256::new(),
            sha512: sha512.then(Sha512::new),
            size: 0,
            head: Vec::with_capacity(4),
            keep: Some(Vec::new()),
            decided: false,
        }
    }

    /// The digest of what passed, in `alg` (which must have been hashed).
    pub(crate) fn digest(&self, alg: Alg) -> OciDigest {
        let hex = match alg {
            Alg::Sha256 => hex::encode(self.sha256.clone().finalize()),
            Alg::Sha512 => hex::encode(
                self.sha512
                    .clone()
                    .expect("sha512 requested up front")
                    .finalize(),
            ),
        };
        OciDigest { alg, hex }
    }

    /// The content, if it may be a JSON document.
    pub(crate) fn json(self) -> Option<Vec<u8>> {
        self.keep.filter(|_| self.decided)
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        self.sha256.update(got);
        if let Some(h) = &mut self.sha512 {
            h.update(got);
        }
        self.size += n as u64;
        if self.head.len() < 4 {
            let take = (4 - self.head.len()).min(n);
            self.head.extend_from_slice(&got[..take]);
        }
        if let Some(keep) = &mut self.keep {
            if !self.decided
                && let Some(b) = got.iter().find(|b| !b.is_ascii_whitespace())
            {
                self.decided = true;
                if *b != b'{' && *b != b'[' {
                    self.keep = None;
                    return Ok(n);
                }
            }
            if keep.len() + n > MAX_JSON {
                self.keep = None;
            } else {
                keep.extend_from_slice(got);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strictly() {
        let h = "a".repeat(64);
        assert!(OciDigest::parse(&format!("sha256:{h}")).is_ok());
        assert!(OciDigest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(OciDigest::parse(&format!("sha512:{h}")).is_err());
        assert!(OciDigest::parse(&format!("md5:{h}")).is_err());
        assert!(OciDigest::parse(&h).is_err());
    }

    #[test]
    fn tap_hashes_and_keeps_json_only() {
        let mut t = Tap::new(&b" {\"a\":1}"[..], true);
        io::copy(&mut t, &mut io::sink()).unwrap();
        assert_eq!(t.digest(Alg::Sha256), sha256_of(b" {\"a\":1}"));
        assert_eq!(t.size, 8);
        assert_eq!(t.json().unwrap(), b" {\"a\":1}");
        let mut t = Tap::new(&b"\x1f\x8b rest"[..], false);
        io::copy(&mut t, &mut io::sink()).unwrap();
        assert_eq!(t.head, b"\x1f\x8b r");
        assert!(t.json().is_none());
    }
}
