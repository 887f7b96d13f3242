//! Keys (the action cache): caller-chosen names bound to a root object.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// A validated key: `/`-separated segments of `[A-Za-z0-9._@+=:-]`, at most [`MAX_KEY_LEN`]
/// bytes, no empty, `.` or `..` segment, and not of the shape of an id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

/// Why a string is not a valid key.
#[derive(Debug, thiserror::Error)]
#[error("invalid key {key:?}: {reason}")]
pub struct KeyError {
    /// The rejected string.
    pub key: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

impl Key {
    /// Validates `s` as a key.
    pub fn new(s: &str) -> Result<Key, KeyError> {
        let fail = |reason| {
            Err(KeyError {
                key: s.to_string(),
                reason,
            })
        };
        if s.is_empty() {
            return fail("empty");
        }
        if s.len() > MAX_KEY_LEN {
            return fail("longer than 512 bytes");
        }
        if Id::looks_like_id(s) {
            return fail("has the shape of an object id");
        }
        for seg in s.split('/') {
            if seg.is_empty() {
                return fail("empty segment (leading, trailing or doubled '/')");
            }
            if seg == "." || seg == ".." {
                return fail("'.' or '..' segment");
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._@+=:-".contains(&b))
            {
                return fail("characters outside [A-Za-z0-9._@+=:-] and '/'");
            }
        }
        Ok(Key(s.to_string()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Key {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Key, KeyError> {
        Key::new(&s)
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key or an `add` points at: a directory tree or a single file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Root {
    /// A directory: the id of its tree.
    Tree {
        /// Tree id.
        id: Id,
    },
    /// A single regular file.
    File {
        /// Blob id.
        id: Id,
        /// Whether it is materialized with mode 0755 rather than 0644.
        executable: bool,
    },
}

impl Root {
    /// The id of the root object.
    pub fn id(&self) -> Id {
        match self {
            Root::Tree { id } | Root::File { id, .. } => *id,
        }
    }
}

/// A key's current binding, as stored in the index and printed by `show --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key.
    pub key: Key,
    /// What it is bound to.
    pub root: Root,
    /// When it was bound, seconds since the Unix epoch.
    pub created: u64,
    /// Total bytes of regular-file content in the closure (each file counted once per path).
    pub size: u64,
    /// Number of regular files (and hardlinks) in the closure.
    pub files: u64,
    /// Free-form labels given with `--label k=v`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Files stored next to the output (provenance, SBOMs, logs), by name. Part of the closure.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attachments: BTreeMap<AttachmentName, Attachment>,
    /// Signatures of the record's fingerprint (see `sign`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<crate::sign::Signature>,
}

/// A file attached to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Blob id of its content.
    pub id: Id,
    /// Its size in bytes.
    pub size: u64,
}

/// Longest attachment name, in bytes.
pub const MAX_ATTACHMENT_NAME_LEN: usize = 128;

/// A validated attachment name: 1 to [`MAX_ATTACHMENT_NAME_LEN`] characters of
/// `[A-Za-z0-9._-]`, not starting with `.`.
///
/// Validated whenever one is made, deserialization included: a record's signature covers its
/// attachments as `attachment.NAME=…` lines (`sign::fingerprint`), and a name holding `=` or a
/// newline could make two different records print the same lines.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AttachmentName(String);

/// Why a string is not a valid attachment name.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid attachment name {name:?}: use 1-128 characters of [A-Za-z0-9._-], not starting with '.'"
)]
pub struct AttachmentNameError {
    /// The rejected string.
    pub name: String,
}

impl AttachmentName {
    /// Validates `s` as an attachment name.
    pub fn new(s: &str) -> Result<AttachmentName, AttachmentNameError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_ATTACHMENT_NAME_LEN
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(AttachmentNameError {
                name: s.to_string(),
            });
        }
        Ok(AttachmentName(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AttachmentName {
    type Error = AttachmentNameError;
    fn try_from(s: String) -> Result<AttachmentName, AttachmentNameError> {
        AttachmentName::new(&s)
    }
}

impl From<AttachmentName> for String {
    fn from(n: AttachmentName) -> String {
        n.0
    }
}

impl fmt::Display for AttachmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl KeyRecord {
    /// Every root the record keeps alive: its output and its attachments.
    pub fn roots(&self) -> Vec<Root> {
        let mut out = vec![self.root];
        out.extend(self.attachments.values().map(|a| Root::File {
            id: a.id,
            executable: false,
        }));
        out
    }
}

/// What happened to a key, for `cairn log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogAction {
    /// First binding.
    Bind,
    /// Bound again, to the same or another root.
    Rebind,
    /// Removed with `cairn rm`.
    Remove,
}

/// One line of a key's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// What happened.
    pub action: LogAction,
    /// The root after the change (absent for a removal).
    pub root: Option<Root>,
    /// The root before the change (absent for a first binding).
    pub previous: Option<Root>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["app", "app/linux-amd64@3f2a", "a.b/c_d+e=f:g-h", "v1.2.3"] {
            Key::new(ok).unwrap();
        }
        let long = "a".repeat(513);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "..",
            "./a",
            "a b",
            "a\\b",
            "é",
            long.as_str(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        ] {
            assert!(Key::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// A forged record that moves fingerprint lines into an attachment name is refused when it
    /// is read, so it never reaches a signature check (see `sign::fingerprint`).
    #[test]
    fn attachment_names_are_checked_when_a_record_is_read() {
        let x = Id::of(b"x");
        let y = Id::of(b"y");
        let base = |attachments: String| {
            format!(
                r#"{{"key":"app/v1","root":{{"kind":"tree","id":"{x}"}},"created":1,"size":2,"files":3,"labels":{{}},"attachments":{attachments}}}"#
            )
        };
        let honest = base(format!(
            r#"{{"a":{{"id":"{x}","size":1}},"b":{{"id":"{y}","size":2}}}}"#
        ));
        let rec: KeyRecord = serde_json::from_str(&honest).unwrap();
        assert_eq!(rec.attachments.len(), 2);
        let forged = base(format!(
            r#"{{"a={x}:1\nattachment.b":{{"id":"{y}","size":2}}}}"#
        ));
        let err = serde_json::from_str::<KeyRecord>(&forged).unwrap_err();
        assert!(err.to_string().contains("invalid attachment name"), "{err}");
        for bad in ["", ".hidden", "a=b", "a\nb", "a b", "é"] {
            assert!(AttachmentName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(AttachmentName::new(&"a".repeat(129)).is_err());
        AttachmentName::new("sbom.spdx-json_1").unwrap();
    }
}
