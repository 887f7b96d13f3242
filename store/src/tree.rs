//! Trees: the canonical, versioned encoding of one directory (see `docs/format.md`).
//!
//! A tree is a list of entries sorted by name bytes. Its id is BLAKE3 of [`Tree::encode`]. The
//! decoder is strict (every accepted byte string is the encoding of exactly one tree, and
//! re-encodes to itself), so an id names one directory and nothing else.

use crate::id::Id;

/// First bytes of every encoded tree: a magic string and the format version.
pub const TREE_MAGIC: &[u8; 11] = b"cairn-tree\x01";

/// Longest entry name, in bytes: Linux's `NAME_MAX`, since a longer name can't be materialized.
pub const MAX_NAME_LEN: usize = 255;

/// Longest symlink or hardlink target, in bytes: Linux's `PATH_MAX` less its NUL.
pub const MAX_TARGET_LEN: usize = 4095;

/// Deepest nesting of folders an archive entry may name. Far past any real tree (Linux's
/// `PATH_MAX` holds at most 2048 one-letter levels), and low enough that the recursive walks over
/// a tree (building, encoding, dropping, materializing) stay well within a thread's stack: an
/// archive naming a path 100,000 folders deep overflowed it.
pub const MAX_DEPTH: usize = 1024;

/// Longest extended-attribute name (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME_LEN: usize = 255;

/// Largest extended-attribute value (`XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE_LEN: usize = 65536;

/// The smallest encoded entry: a fifo with a 1-byte name and no xattrs (name length 2, name 1,
/// kind 1, mode/uid/gid 12, mtime 8 + 4, xattr count 4).
const MIN_ENTRY_LEN: usize = 2 + 1 + 1 + 12 + 8 + 4 + 4;

/// The permission bits an entry may carry: rwx for all three classes, setuid, setgid, sticky.
pub const MODE_MASK: u32 = 0o7777;

/// One directory: entries in strictly increasing order of name bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries, sorted by name bytes, names unique.
    pub entries: Vec<Entry>,
}

/// One named entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The file name: 1 to [`MAX_NAME_LEN`] bytes, no `/` or NUL, not `.` or `..`.
    pub name: Vec<u8>,
    /// Permission bits, owner, mtime and xattrs.
    pub meta: Meta,
    /// What the entry is, with what that kind needs.
    pub kind: EntryKind,
}

/// Metadata every entry carries. Normalized ingest fixes all of it (see `ingest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits within [`MODE_MASK`].
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time, below 1e9.
    pub mtime_nsec: u32,
    /// Extended attributes, sorted by name, names unique.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The kinds of entry, each with its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file whose content is the blob `blob` of `size` bytes.
    File {
        /// Content length in bytes.
        size: u64,
        /// BLAKE3 of the content.
        blob: Id,
    },
    /// A directory whose listing is the tree `tree`.
    Dir {
        /// Id of the child tree.
        tree: Id,
    },
    /// A symbolic link; its target is stored, never followed.
    Symlink {
        /// The link target bytes, 1 to [`MAX_TARGET_LEN`] bytes, no NUL.
        target: Vec<u8>,
    },
    /// A second name for a regular file that comes earlier in the tree's depth-first order.
    Hardlink {
        /// `/`-separated path of that file, from the root of the tree being materialized.
        target: Vec<u8>,
    },
    /// A character device node.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// Kind tags in the encoding.
mod tag {
    pub const FILE: u8 = 1;
    pub const DIR: u8 = 2;
    pub const SYMLINK: u8 = 3;
    pub const HARDLINK: u8 = 4;
    pub const CHAR_DEVICE: u8 = 5;
    pub const BLOCK_DEVICE: u8 = 6;
    pub const FIFO: u8 = 7;
}

/// Why bytes are not a canonical tree encoding, or a tree can't be encoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid tree encoding at byte {offset}: {reason}")]
pub struct TreeFormatError {
    /// Byte offset where decoding stopped (0 for encode-side checks).
    pub offset: usize,
    /// What was wrong there.
    pub reason: String,
}

/// Why a name can't be an entry name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Zero bytes long.
    #[error("empty name")]
    Empty,
    /// `.` or `..`.
    #[error("name {0:?} is reserved")]
    Dot(String),
    /// Contains `/` or NUL.
    #[error("name {0:?} contains '/' or NUL")]
    BadByte(String),
    /// Longer than [`MAX_NAME_LEN`].
    #[error("name of {0} bytes is longer than {MAX_NAME_LEN}")]
    TooLong(usize),
}

/// Checks that `name` can be an entry name.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    let shown = || String::from_utf8_lossy(name).into_owned();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == b"." || name == b".." {
        return Err(NameError::Dot(shown()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.iter().any(|&b| b == b'/' || b == 0) {
        return Err(NameError::BadByte(shown()));
    }
    Ok(())
}

/// Checks a hardlink target: a non-empty `/`-separated relative path of valid names.
pub fn check_link_path(path: &[u8]) -> Result<(), NameError> {
    if path.len() > MAX_TARGET_LEN {
        return Err(NameError::TooLong(path.len()));
    }
    path.split(|&b| b == b'/').try_for_each(check_name)
}

impl Tree {
    /// The canonical encoding, or an error if the tree breaks a rule the decoder enforces.
    pub fn encode(&self) -> Result<Vec<u8>, TreeFormatError> {
        self.validate()?;
        let mut out = Vec::with_capacity(16 + self.entries.len() * 96);
        out.extend_from_slice(TREE_MAGIC);
        put_u32(&mut out, self.entries.len() as u32);
        for e in &self.entries {
            put_u16(&mut out, e.name.len() as u16);
            out.extend_from_slice(&e.name);
            out.push(e.kind.tag());
            put_u32(&mut out, e.meta.mode);
            put_u32(&mut out, e.meta.uid);
            put_u32(&mut out, e.meta.gid);
            out.extend_from_slice(&e.meta.mtime.to_le_bytes());
            put_u32(&mut out, e.meta.mtime_nsec);
            put_u32(&mut out, e.meta.xattrs.len() as u32);
            for (k, v) in &e.meta.xattrs {
                put_u16(&mut out, k.len() as u16);
                out.extend_from_slice(k);
                put_u32(&mut out, v.len() as u32);
                out.extend_from_slice(v);
            }
            match &e.kind {
                EntryKind::File { size, blob } => {
                    out.extend_from_slice(&size.to_le_bytes());
                    out.extend_from_slice(&blob.0);
                }
                EntryKind::Dir { tree } => out.extend_from_slice(&tree.0),
                EntryKind::Symlink { target } | EntryKind::Hardlink { target } => {
                    put_u32(&mut out, target.len() as u32);
                    out.extend_from_slice(target);
                }
                EntryKind::CharDevice { major, minor }
                | EntryKind::BlockDevice { major, minor } => {
                    put_u32(&mut out, *major);
                    put_u32(&mut out, *minor);
                }
                EntryKind::Fifo => {}
            }
        }
        Ok(out)
    }

    /// The encoding and its id.
    pub fn encode_with_id(&self) -> Result<(Id, Vec<u8>), TreeFormatError> {
        let bytes = self.encode()?;
        Ok((Id::of(&bytes), bytes))
    }

    /// Parses a canonical encoding; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<Tree, TreeFormatError> {
        let mut r = Reader { bytes, pos: 0 };
        let magic = r.take(TREE_MAGIC.len())?;
        if magic != TREE_MAGIC {
            return Err(r.fail("not a cairn tree (bad magic or unknown version)"));
        }
        let count = r.u32()? as usize;
        // Each entry takes at least MIN_ENTRY_LEN bytes, so a larger count is a lie about the
        // length (checked before allocating for it).
        if count > bytes.len() / MIN_ENTRY_LEN {
            return Err(r.fail(format!(
                "entry count {count} exceeds what the bytes can hold"
            )));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = r.u16()? as usize;
            let name = r.take(name_len)?.to_vec();
            let tag = r.u8()?;
            let mode = r.u32()?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let mtime = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
            let mtime_nsec = r.u32()?;
            let xattr_count = r.u32()? as usize;
            if xattr_count > r.remaining() / 6 {
                return Err(r.fail(format!("xattr count {xattr_count} exceeds the bytes left")));
            }
            let mut xattrs = Vec::with_capacity(xattr_count);
            for _ in 0..xattr_count {
                let klen = r.u16()? as usize;
                let k = r.take(klen)?.to_vec();
                let vlen = r.u32()? as usize;
                let v = r.take(vlen)?.to_vec();
                xattrs.push((k, v));
            }
            let kind = match tag {
                tag::FILE => {
                    let size = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
                    EntryKind::File {
                        size,
                        blob: r.id()?,
                    }
                }
                tag::DIR => EntryKind::Dir { tree: r.id()? },
                tag::SYMLINK | tag::HARDLINK => {
                    let len = r.u32()? as usize;
                    let target = r.take(len)?.to_vec();
                    if tag == tag::SYMLINK {
                        EntryKind::Symlink { target }
                    } else {
                        EntryKind::Hardlink { target }
                    }
                }
                tag::CHAR_DEVICE | tag::BLOCK_DEVICE => {
                    let (major, minor) = (r.u32()?, r.u32()?);
                    if tag == tag::CHAR_DEVICE {
                        EntryKind::CharDevice { major, minor }
                    } else {
                        EntryKind::BlockDevice { major, minor }
                    }
                }
                tag::FIFO => EntryKind::Fifo,
                other => return Err(r.fail(format!("unknown entry kind {other}"))),
            };
            entries.push(Entry {
                name,
                meta: Meta {
                    mode,
                    uid,
                    gid,
                    mtime,
                    mtime_nsec,
                    xattrs,
                },
                kind,
            });
        }
        if r.remaining() != 0 {
            return Err(r.fail(format!("{} trailing bytes", r.remaining())));
        }
        let tree = Tree { entries };
        tree.validate().map_err(|e| TreeFormatError {
            offset: bytes.len(),
            reason: e.reason,
        })?;
        Ok(tree)
    }

    /// Checks the rules that make the encoding canonical.
    pub fn validate(&self) -> Result<(), TreeFormatError> {
        let fail = |reason: String| TreeFormatError { offset: 0, reason };
        for (i, e) in self.entries.iter().enumerate() {
            let shown = String::from_utf8_lossy(&e.name);
            check_name(&e.name).map_err(|err| fail(err.to_string()))?;
            if i > 0 && self.entries[i - 1].name >= e.name {
                return Err(fail(format!(
                    "entry {shown:?} is out of order or duplicated"
                )));
            }
            let m = &e.meta;
            if m.mode & !MODE_MASK != 0 {
                return Err(fail(format!(
                    "entry {shown:?} has mode bits {:o} beyond 7777",
                    m.mode
                )));
            }
            if m.mtime_nsec >= 1_000_000_000 {
                return Err(fail(format!(
                    "entry {shown:?} has mtime nanoseconds {}",
                    m.mtime_nsec
                )));
            }
            for (j, (k, v)) in m.xattrs.iter().enumerate() {
                if k.is_empty() || k.len() > MAX_XATTR_NAME_LEN || k.contains(&0) {
                    return Err(fail(format!("entry {shown:?} has an invalid xattr name")));
                }
                if v.len() > MAX_XATTR_VALUE_LEN {
                    return Err(fail(format!(
                        "entry {shown:?} has an xattr value over 64 KiB"
                    )));
                }
                if j > 0 && m.xattrs[j - 1].0 >= *k {
                    return Err(fail(format!(
                        "entry {shown:?} has unsorted or duplicate xattrs"
                    )));
                }
            }
            match &e.kind {
                EntryKind::Symlink { target }
                    if target.is_empty()
                        || target.len() > MAX_TARGET_LEN
                        || target.contains(&0) =>
                {
                    return Err(fail(format!("symlink {shown:?} has an invalid target")));
                }
                EntryKind::Hardlink { target } => {
                    check_link_path(target)
                        .map_err(|err| fail(format!("hardlink {shown:?}: {err}")))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The entry called `name`, by binary search.
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

impl EntryKind {
    fn tag(&self) -> u8 {
        match self {
            EntryKind::File { .. } => tag::FILE,
            EntryKind::Dir { .. } => tag::DIR,
            EntryKind::Symlink { .. } => tag::SYMLINK,
            EntryKind::Hardlink { .. } => tag::HARDLINK,
            EntryKind::CharDevice { .. } => tag::CHAR_DEVICE,
            EntryKind::BlockDevice { .. } => tag::BLOCK_DEVICE,
            EntryKind::Fifo => tag::FIFO,
        }
    }

    /// A short lowercase name for listings: `file`, `dir`, `symlink`, `hardlink`, `char`,
    /// `block`, `fifo`.
    pub fn type_name(&self) -> &'static str {
        match self {
            EntryKind::File { .. } => "file",
            EntryKind::Dir { .. } => "dir",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Hardlink { .. } => "hardlink",
            EntryKind::CharDevice { .. } => "char",
            EntryKind::BlockDevice { .. } => "block",
            EntryKind::Fifo => "fifo",
        }
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fail(&self, reason: impl Into<String>) -> TreeFormatError {
        TreeFormatError {
            offset: self.pos,
            reason: reason.into(),
        }
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TreeFormatError> {
        if self.remaining() < n {
            return Err(self.fail(format!(
                "truncated: need {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TreeFormatError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TreeFormatError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, TreeFormatError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn id(&mut self) -> Result<Id, TreeFormatError> {
        Ok(Id(self.take(32)?.try_into().expect("32 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 1..20)
            .prop_filter("valid name", |n| check_name(n).is_ok())
    }

    fn arb_kind() -> impl Strategy<Value = EntryKind> {
        prop_oneof![
            (any::<u64>(), any::<[u8; 32]>())
                .prop_map(|(size, b)| EntryKind::File { size, blob: Id(b) }),
            any::<[u8; 32]>().prop_map(|b| EntryKind::Dir { tree: Id(b) }),
            proptest::collection::vec(1u8..=255, 1..50)
                .prop_map(|target| EntryKind::Symlink { target }),
            proptest::collection::vec(arb_name(), 1..4).prop_map(|segs| EntryKind::Hardlink {
                target: segs.join(&b'/')
            }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(major, minor)| EntryKind::CharDevice { major, minor }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(major, minor)| EntryKind::BlockDevice { major, minor }),
            Just(EntryKind::Fifo),
        ]
    }

    fn arb_meta() -> impl Strategy<Value = Meta> {
        (
            0u32..=MODE_MASK,
            any::<u32>(),
            any::<u32>(),
            any::<i64>(),
            0u32..1_000_000_000,
            proptest::collection::btree_map(
                proptest::collection::vec(1u8..=255, 1..10),
                proptest::collection::vec(any::<u8>(), 0..20),
                0..3,
            ),
        )
            .prop_map(|(mode, uid, gid, mtime, mtime_nsec, x)| Meta {
                mode,
                uid,
                gid,
                mtime,
                mtime_nsec,
                xattrs: x.into_iter().collect(),
            })
    }

    fn arb_tree() -> impl Strategy<Value = Tree> {
        proptest::collection::btree_map(arb_name(), (arb_meta(), arb_kind()), 0..12).prop_map(|m| {
            Tree {
                entries: m
                    .into_iter()
                    .map(|(name, (meta, kind))| Entry { name, meta, kind })
                    .collect(),
            }
        })
    }

    proptest! {
        #[test]
        fn encoding_round_trips(tree in arb_tree()) {
            let bytes = tree.encode().unwrap();
            let back = Tree::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &tree);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn decoder_never_panics_and_accepts_only_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(t) = Tree::decode(&bytes) {
                prop_assert_eq!(t.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn truncation_is_always_an_error(tree in arb_tree(), cut in any::<prop::sample::Index>()) {
            let bytes = tree.encode().unwrap();
            let n = cut.index(bytes.len());
            prop_assert!(Tree::decode(&bytes[..n]).is_err());
        }
    }

    /// Found by fuzzing: the decoder's length bound once refused valid trees of short fifos.
    #[test]
    fn smallest_entries_round_trip() {
        let tree = Tree {
            entries: (b'a'..=b'z')
                .map(|c| Entry {
                    name: vec![c],
                    meta: Meta::default(),
                    kind: EntryKind::Fifo,
                })
                .collect(),
        };
        let bytes = tree.encode().unwrap();
        assert_eq!(bytes.len(), 15 + 26 * MIN_ENTRY_LEN);
        assert_eq!(Tree::decode(&bytes).unwrap(), tree);
    }

    #[test]
    fn rejects_bad_names_and_order() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(check_name(bad).is_err());
        }
        assert!(check_name(&[b'x'; 256]).is_err());
        let e = |n: &[u8]| Entry {
            name: n.to_vec(),
            meta: Meta::default(),
            kind: EntryKind::Fifo,
        };
        let unsorted = Tree {
            entries: vec![e(b"b"), e(b"a")],
        };
        assert!(unsorted.encode().is_err());
        let dup = Tree {
            entries: vec![e(b"a"), e(b"a")],
        };
        assert!(dup.encode().is_err());
    }

    /// Pins the encoding: changing it changes every id, so it must be deliberate.
    #[test]
    fn golden_encoding() {
        let tree = Tree {
            entries: vec![Entry {
                name: b"hello".to_vec(),
                meta: Meta {
                    mode: 0o644,
                    ..Meta::default()
                },
                kind: EntryKind::File {
                    size: 0,
                    blob: Id::of(b""),
                },
            }],
        };
        let bytes = tree.encode().unwrap();
        assert_eq!(bytes.len(), 11 + 4 + 2 + 5 + 1 + 4 * 3 + 8 + 4 + 4 + 8 + 32);
        assert_eq!(
            hex::encode(&bytes[..23]),
            "636169726e2d7472656501010000000500".to_string() + "68656c6c6f01"
        );
        assert_eq!(
            Id::of(&bytes).to_string(),
            "blake3:8cb19b3b6803795c7bb989b9180c6864e38125a066b344aec83a0d6eb5a8f620"
        );
    }
}
