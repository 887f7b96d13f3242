//! Registry names and how they map onto store keys (documented in `docs/cli.md`, "cairn serve").
//!
//! | registry                         | store key                                   |
//! |----------------------------------|---------------------------------------------|
//! | repository `app`, tag `1`        | `app:1`                                     |
//! | repository `team/app`, tag `v2`  | `team/app:v2`                               |
//! | manifest pushed by digest        | `app@sha256:<hex>`                          |
//! | blob pushed, not yet referenced  | `_cairn-serve/pin/app/sha256:<hex>` (a pin) |
//!
//! Repository components must start with a lowercase letter or digit, so no repository can
//! ever map to a key under the reserved `_cairn-serve/` prefix; and every image key's last
//! segment holds a `:` (tag) or an `@` (digest), which plain build-output keys need not.

use cairn_oci::OciDigest;
use cairn_store::Key;

/// Longest repository name accepted (distribution's limit), so that every derived key,
/// the pin keys included, stays under the store's key length limit.
pub const MAX_REPO_LEN: usize = 255;
/// Longest tag (distribution-spec: 128 characters).
pub const MAX_TAG_LEN: usize = 128;
/// The reserved key prefix of the server's own bookkeeping keys.
pub const RESERVED_PREFIX: &str = "_cairn-serve/";
/// Prefix of pin keys: `_cairn-serve/pin/<repository>/<digest>`.
pub const PIN_PREFIX: &str = "_cairn-serve/pin/";

/// A validated repository name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repo(String);

impl Repo {
    /// Parses a repository name: `/`-separated components, each
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most [`MAX_REPO_LEN`] bytes in all.
    pub fn parse(s: &str) -> Option<Repo> {
        if s.is_empty() || s.len() > MAX_REPO_LEN {
            return None;
        }
        s.split('/').all(component_ok).then(|| Repo(s.to_string()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component of a repository name: alphanumeric runs joined by `.`, `_`, `__` or a
/// run of `-`.
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__`, or one or more `-`; always followed by an alphanumeric.
        let sep_ok = match b[i] {
            b'.' => {
                i += 1;
                true
            }
            b'_' => {
                i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 };
                true
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
                true
            }
            _ => false,
        };
        if !sep_ok || !b.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// Whether `t` is a valid tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A manifest reference: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// A tag.
    Tag(String),
    /// A content digest.
    Digest(OciDigest),
}

/// Why a reference was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ReferenceError {
    /// It holds a `:` but is no supported digest.
    Digest(String),
    /// It is no valid tag.
    Tag,
}

impl Reference {
    /// Parses a tag or a digest (`alg:hex`).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            return OciDigest::parse(s)
                .map(Reference::Digest)
                .map_err(ReferenceError::Digest);
        }
        if tag_ok(s) {
            Ok(Reference::Tag(s.to_string()))
        } else {
            Err(ReferenceError::Tag)
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// The store key of a tag (`repo:tag`) or of a manifest pushed by digest (`repo@alg:hex`).
/// `None` only for the one name the store refuses: repository `blake3` with a tag of 64 hex
/// digits, which has the shape of a store id.
pub fn image_key(repo: &Repo, reference: &Reference) -> Option<Key> {
    let s = match reference {
        Reference::Tag(t) => format!("{repo}:{t}"),
        Reference::Digest(d) => format!("{repo}@{d}"),
    };
    Key::new(&s).ok()
}

/// The pin key that keeps a pushed blob of `repo` through gc's grace period.
pub fn pin_key(repo: &Repo, digest: &OciDigest) -> Key {
    Key::new(&format!("{PIN_PREFIX}{repo}/{digest}")).expect("valid key text")
}

/// The repository and reference an image key names, if it is one.
pub fn parse_image_key(key: &str) -> Option<(Repo, Reference)> {
    if key.starts_with(RESERVED_PREFIX) {
        return None;
    }
    let (head, last) = match key.rsplit_once('/') {
        Some((h, l)) => (Some(h), l),
        None => (None, key),
    };
    let join = |name: &str| match head {
        Some(h) => format!("{h}/{name}"),
        None => name.to_string(),
    };
    if let Some((name, digest)) = last.split_once('@') {
        let repo = Repo::parse(&join(name))?;
        return Some((repo, Reference::Digest(OciDigest::parse(digest).ok()?)));
    }
    let (name, tag) = last.split_once(':')?;
    let repo = Repo::parse(&join(name))?;
    tag_ok(tag).then(|| (repo, Reference::Tag(tag.to_string())))
}

/// The repository and digest a pin key names, if it is one.
pub fn parse_pin_key(key: &str) -> Option<(Repo, OciDigest)> {
    let rest = key.strip_prefix(PIN_PREFIX)?;
    let (repo, digest) = rest.rsplit_once('/')?;
    Some((Repo::parse(repo)?, OciDigest::parse(digest).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec() {
        for ok in [
            "a", "app", "team/app", "a.b", "a_b", "a__b", "a--b", "x/y/z9", "0",
        ] {
            assert!(Repo::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "App", "a/", "/a", "a//b", "..", "a/../b", "%2e%2e", "a..b", "a___b", "-a", "a-",
            "a_", ".a", "a b", "a:b", "a@b",
        ] {
            assert!(Repo::parse(bad).is_none(), "{bad}");
        }
        assert!(Repo::parse(&"a".repeat(MAX_REPO_LEN)).is_some());
        assert!(Repo::parse(&"a".repeat(MAX_REPO_LEN + 1)).is_none());
    }

    #[test]
    fn references_and_keys_round_trip() {
        let repo = Repo::parse("team/app").unwrap();
        let tag = Reference::parse("v1.2_x-y").unwrap();
        let key = image_key(&repo, &tag).unwrap();
        assert_eq!(key.as_str(), "team/app:v1.2_x-y");
        assert_eq!(parse_image_key(key.as_str()), Some((repo.clone(), tag)));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&d).unwrap();
        let key = image_key(&repo, &r).unwrap();
        assert_eq!(key.as_str(), format!("team/app@{d}"));
        assert_eq!(parse_image_key(key.as_str()), Some((repo.clone(), r)));
        let pin = pin_key(&repo, &OciDigest::parse(&d).unwrap());
        assert_eq!(parse_image_key(pin.as_str()), None);
        assert_eq!(
            parse_pin_key(pin.as_str()),
            Some((repo, OciDigest::parse(&d).unwrap()))
        );
        assert_eq!(parse_image_key("plain/build-output"), None);
        let id_like = Reference::parse(&"a".repeat(64)).unwrap();
        assert!(image_key(&Repo::parse("blake3").unwrap(), &id_like).is_none());
        assert_eq!(parse_image_key("App:1"), None);
        assert!(matches!(
            Reference::parse("sha256:xyz"),
            Err(ReferenceError::Digest(_))
        ));
        assert_eq!(Reference::parse("-x"), Err(ReferenceError::Tag));
        assert_eq!(Reference::parse(&"a".repeat(129)), Err(ReferenceError::Tag));
    }
}
