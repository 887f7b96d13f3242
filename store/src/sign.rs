//! Signing key records: ed25519 keys in Nix's text format, the record fingerprint that
//! signatures cover (byte-exact in `docs/format.md`), and the trust check a pull applies.

use std::fmt::Write as _;
use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::key::{KeyRecord, Root};

/// First line of every fingerprint; changing the format means a new version here.
pub const FINGERPRINT_HEADER: &str = "cairn-record-signature-v1";

/// A signature on a key record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Signature {
    /// Name of the signing key (the part before `:` of its public key line).
    pub key: String,
    /// The 64-byte ed25519 signature of the record's fingerprint, base64 (standard, padded).
    pub sig: String,
}

/// Why a key or signature can't be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// A key file or line that is not `NAME:BASE64` of the right length.
    #[error("invalid {what}: {reason}")]
    BadKey {
        /// "secret key" or "public key".
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A record without a valid signature by a trusted key.
    #[error("key {key}: no valid signature by a trusted key (signatures found: {found})")]
    Untrusted {
        /// The key whose record was refused.
        key: String,
        /// The signers found and what was wrong with each.
        found: String,
    },
}

/// A secret signing key with its name.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

/// A public key with its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

fn check_key_name(name: &str, what: &'static str) -> Result<(), SignError> {
    if name.is_empty()
        || name.len() > 256
        || name.contains(':')
        || name.chars().any(char::is_whitespace)
    {
        return Err(SignError::BadKey {
            what,
            reason: format!("key name {name:?} must be 1-256 characters without ':' or spaces"),
        });
    }
    Ok(())
}

fn split_line<'a>(text: &'a str, what: &'static str) -> Result<(&'a str, Vec<u8>), SignError> {
    let line = text.trim();
    let (name, b64) = line.split_once(':').ok_or_else(|| SignError::BadKey {
        what,
        reason: "expected NAME:BASE64".into(),
    })?;
    check_key_name(name, what)?;
    let bytes = B64.decode(b64).map_err(|e| SignError::BadKey {
        what,
        reason: format!("base64: {e}"),
    })?;
    Ok((name, bytes))
}

impl SecretKey {
    /// A new random key called `name`.
    pub fn generate(name: &str) -> std::io::Result<SecretKey> {
        check_key_name(name, "secret key").map_err(std::io::Error::other)?;
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(SecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `NAME:BASE64(64-byte secret||public)`, Nix's secret key format.
    pub fn parse(text: &str) -> Result<SecretKey, SignError> {
        let (name, bytes) = split_line(text, "secret key")?;
        let arr: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| SignError::BadKey {
            what: "secret key",
            reason: format!("{} bytes, expected 64", b.len()),
        })?;
        let key = SigningKey::from_keypair_bytes(&arr).map_err(|e| SignError::BadKey {
            what: "secret key",
            reason: e.to_string(),
        })?;
        Ok(SecretKey {
            name: name.to_string(),
            key,
        })
    }

    /// The key's line, as written to its file.
    pub fn to_line(&self) -> String {
        format!("{}:{}", self.name, B64.encode(self.key.to_keypair_bytes()))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `rec`'s fingerprint.
    pub fn sign(&self, rec: &KeyRecord) -> Signature {
        let sig = self.key.sign(&fingerprint(rec));
        Signature {
            key: self.name.clone(),
            sig: B64.encode(sig.to_bytes()),
        }
    }
}

impl PublicKey {
    /// Parses `NAME:BASE64(32 bytes)`, Nix's public key format.
    pub fn parse(text: &str) -> Result<PublicKey, SignError> {
        let (name, bytes) = split_line(text, "public key")?;
        let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| SignError::BadKey {
            what: "public key",
            reason: format!("{} bytes, expected 32", b.len()),
        })?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|e| SignError::BadKey {
            what: "public key",
            reason: e.to_string(),
        })?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }

    /// The single line `NAME:BASE64`.
    pub fn to_line(&self) -> String {
        format!("{}:{}", self.name, B64.encode(self.key.to_bytes()))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if `sig` is this key's valid signature of `rec`.
    pub fn verifies(&self, rec: &KeyRecord, sig: &Signature) -> bool {
        if sig.key != self.name {
            return false;
        }
        let Ok(bytes) = B64.decode(&sig.sig) else {
            return false;
        };
        let Ok(arr) = <[u8; 64]>::try_from(bytes) else {
            return false;
        };
        let s = ed25519_dalek::Signature::from_bytes(&arr);
        self.key.verify_strict(&fingerprint(rec), &s).is_ok()
    }
}

/// Percent-encodes `%`, newline, and (in label names) `=`.
fn escape(s: &str, also_eq: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\n' => out.push_str("%0A"),
            '=' if also_eq => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// The bytes a signature covers: every field of the record that matters, one `name=value` line
/// each, in a fixed order (see `docs/format.md`). Signatures themselves are not covered.
pub fn fingerprint(rec: &KeyRecord) -> Vec<u8> {
    let mut s = String::new();
    let (kind, id, exec) = match rec.root {
        Root::Tree { id } => ("tree", id, false),
        Root::File { id, executable } => ("file", id, executable),
    };
    let _ = writeln!(s, "{FINGERPRINT_HEADER}");
    let _ = writeln!(s, "key={}", rec.key);
    let _ = writeln!(s, "root.kind={kind}");
    let _ = writeln!(s, "root.id={id}");
    let _ = writeln!(s, "root.executable={}", u8::from(exec));
    let _ = writeln!(s, "size={}", rec.size);
    let _ = writeln!(s, "files={}", rec.files);
    let _ = writeln!(s, "created={}", rec.created);
    for (k, v) in &rec.labels {
        let _ = writeln!(s, "label.{}={}", escape(k, true), escape(v, false));
    }
    for (name, a) in &rec.attachments {
        let _ = writeln!(s, "attachment.{name}={}:{}", a.id, a.size);
    }
    s.into_bytes()
}

/// Checks that `rec` carries a valid signature by one of `trusted`. Returns the names of the
/// trusted keys whose signatures verify; an error names the record's key and every signer found.
pub fn check_trusted(rec: &KeyRecord, trusted: &[PublicKey]) -> Result<Vec<String>, SignError> {
    let mut good = Vec::new();
    let mut found = Vec::new();
    for sig in &rec.signatures {
        match trusted.iter().find(|k| k.name == sig.key) {
            Some(k) if k.verifies(rec, sig) => good.push(sig.key.clone()),
            Some(_) => found.push(format!("{} (invalid)", sig.key)),
            None => found.push(format!("{} (not trusted)", sig.key)),
        }
    }
    if good.is_empty() {
        return Err(SignError::Untrusted {
            key: rec.key.to_string(),
            found: if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            },
        });
    }
    Ok(good)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::key::Key;

    fn record() -> KeyRecord {
        KeyRecord {
            key: Key::new("app/v1").unwrap(),
            root: Root::Tree { id: Id::of(b"x") },
            created: 1,
            size: 2,
            files: 3,
            labels: [("a=b".to_string(), "c\nd%".to_string())].into(),
            signatures: vec![],
            attachments: Default::default(),
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let sk = SecretKey::generate("ci-1").unwrap();
        let back = SecretKey::parse(&sk.to_line()).unwrap();
        assert_eq!(back.public(), sk.public());
        let pk = PublicKey::parse(&sk.public().to_line()).unwrap();
        let mut rec = record();
        let sig = sk.sign(&rec);
        assert!(pk.verifies(&rec, &sig));
        rec.signatures.push(sig.clone());
        assert_eq!(
            check_trusted(&rec, std::slice::from_ref(&pk)).unwrap(),
            vec!["ci-1"]
        );
        // Any covered field changed: the signature no longer verifies.
        let mut t = rec.clone();
        t.root = Root::Tree { id: Id::of(b"y") };
        assert!(!pk.verifies(&t, &sig));
        let err = check_trusted(&t, std::slice::from_ref(&pk)).unwrap_err();
        assert!(err.to_string().contains("ci-1 (invalid)"), "{err}");
        // An untrusted signer is named.
        let other = SecretKey::generate("evil").unwrap();
        let mut u = record();
        u.signatures.push(other.sign(&u));
        let err = check_trusted(&u, &[pk]).unwrap_err();
        assert!(err.to_string().contains("evil (not trusted)"), "{err}");
    }

    #[test]
    fn fingerprint_is_pinned() {
        let text = String::from_utf8(fingerprint(&record())).unwrap();
        assert_eq!(
            text,
            format!(
                "cairn-record-signature-v1\nkey=app/v1\nroot.kind=tree\nroot.id={}\nroot.executable=0\nsize=2\nfiles=3\ncreated=1\nlabel.a%3Db=c%0Ad%25\n",
                Id::of(b"x")
            )
        );
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in ["", "nocolon", "a:!!!", "a:AAAA", "a b:AAAA", ":AAAA"] {
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
    }
}
