//! Pack files and their indexes (see `docs/format.md`, "Remote layout").
//!
//! A pack is `cairn-pack\x01` followed by objects, each stored as a zstd frame or raw. Its index
//! (a separate, small, zstd-compressed file) lists every object: id, kind, encoding, offset,
//! stored length and content size. The pack's id is BLAKE3 of the whole pack file. Readers check
//! every object against its own id, so a lying index can cause a failure, never bad data.

use cairn_store::Id;
use cairn_store::blobs::Encoding;

/// First bytes of every pack.
pub const PACK_MAGIC: &[u8; 11] = b"cairn-pack\x01";
/// First bytes of every (decompressed) pack index.
pub const INDEX_MAGIC: &[u8; 10] = b"cairn-idx\x01";
/// A pack is sealed once it holds at least this many bytes.
pub const PACK_TARGET: usize = 16 * 1024 * 1024;
/// Blobs larger than this are uploaded on their own (`blobs/…`), streamed and in parts.
pub const PACKED_MAX: u64 = 8 * 1024 * 1024;
/// Part size of multipart uploads.
pub const MULTIPART_PART: usize = 16 * 1024 * 1024;
/// Bytes of one index entry.
const ENTRY_LEN: usize = 32 + 1 + 1 + 8 + 8 + 8;
/// An index larger than this (decompressed) is refused as hostile.
const MAX_INDEX_LEN: usize = 256 * 1024 * 1024;
/// A tree larger than this is refused as hostile (a directory of ~100,000 entries is ~10 MiB).
const MAX_TREE_LEN: u64 = 64 * 1024 * 1024;

/// What an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// File content.
    Blob = 1,
    /// A tree encoding.
    Tree = 2,
}

/// One object in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Its id.
    pub id: Id,
    /// Blob or tree.
    pub kind: ObjectKind,
    /// Raw or zstd.
    pub encoding: Encoding,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Stored length in the pack.
    pub len: u64,
    /// Content length.
    pub size: u64,
}

/// A pack being filled.
#[derive(Debug)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<IndexEntry>,
}

/// A finished pack: its id, bytes and index entries.
#[derive(Debug)]
pub struct SealedPack {
    /// BLAKE3 of `bytes`.
    pub id: Id,
    /// The pack file.
    pub bytes: bytes::Bytes,
    /// Its entries, sorted by id.
    pub entries: Vec<IndexEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    /// An empty pack.
    pub fn new() -> PackBuilder {
        let mut buf = Vec::with_capacity(PACK_TARGET + 1024 * 1024);
        buf.extend_from_slice(PACK_MAGIC);
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }
    /// Appends an object in its stored form.
    pub fn add(&mut self, id: Id, kind: ObjectKind, encoding: Encoding, stored: &[u8], size: u64) {
        self.entries.push(IndexEntry {
            id,
            kind,
            encoding,
            offset: self.buf.len() as u64,
            len: stored.len() as u64,
            size,
        });
        self.buf.extend_from_slice(stored);
    }
    /// Adds a small blob of bytes unique to this process, this moment and `serial`, so the pack
    /// never gets the name of an earlier pack (one a remote gc tombstoned, say) whatever else
    /// it holds. No record uses the blob.
    pub fn add_salt(&mut self, serial: u64) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let bytes = format!("cairn-salt {} {nanos} {serial}", std::process::id());
        self.add(
            Id::of(bytes.as_bytes()),
            ObjectKind::Blob,
            Encoding::Raw,
            bytes.as_bytes(),
            bytes.len() as u64,
        );
    }
    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// True if no object was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Seals the pack.
    pub fn finish(mut self) -> SealedPack {
        self.entries.sort_by_key(|e| e.id);
        SealedPack {
            id: Id::of(&self.buf),
            bytes: self.buf.into(),
            entries: self.entries,
        }
    }
}

/// The index file for `pack`.
pub fn encode_index(pack: &SealedPack) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + pack.entries.len() * ENTRY_LEN);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&pack.id.0);
    out.extend_from_slice(&(pack.bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&(pack.entries.len() as u32).to_le_bytes());
    for e in &pack.entries {
        out.extend_from_slice(&e.id.0);
        out.push(e.kind as u8);
        out.push(e.encoding.code());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
    }
    zstd::bulk::compress(&out, 3).expect("compressing to memory cannot fail")
}

/// Parses an index file, which must describe `pack`. Returns the entries and the pack length.
pub fn decode_index(bytes: &[u8], pack: &Id) -> Result<(Vec<IndexEntry>, u64), String> {
    let raw = zstd::bulk::decompress(bytes, MAX_INDEX_LEN).map_err(|e| format!("not zstd: {e}"))?;
    let head = INDEX_MAGIC.len() + 32 + 8 + 4;
    if raw.len() < head || &raw[..INDEX_MAGIC.len()] != INDEX_MAGIC {
        return Err("bad magic".into());
    }
    let mut p = INDEX_MAGIC.len();
    let named = Id(raw[p..p + 32].try_into().expect("32"));
    if named != *pack {
        return Err(format!("describes pack {named}"));
    }
    p += 32;
    let pack_len = u64::from_le_bytes(raw[p..p + 8].try_into().expect("8"));
    p += 8;
    let count = u32::from_le_bytes(raw[p..p + 4].try_into().expect("4")) as usize;
    p += 4;
    if raw.len() != head + count * ENTRY_LEN {
        return Err(format!("{count} entries do not fit {} bytes", raw.len()));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let id = Id(raw[p..p + 32].try_into().expect("32"));
        let kind = match raw[p + 32] {
            1 => ObjectKind::Blob,
            2 => ObjectKind::Tree,
            k => return Err(format!("unknown object kind {k}")),
        };
        let encoding = Encoding::from_code(raw[p + 33]).ok_or("unknown encoding")?;
        let num = |o: usize| u64::from_le_bytes(raw[p + o..p + o + 8].try_into().expect("8"));
        let (offset, len, size) = (num(34), num(42), num(50));
        if offset.checked_add(len).is_none_or(|end| end > pack_len)
            || offset < PACK_MAGIC.len() as u64
        {
            return Err(format!("object {id} lies outside the pack"));
        }
        // Sizes bound the buffers a reader allocates: refuse claims no push makes.
        let max = match kind {
            ObjectKind::Tree => MAX_TREE_LEN,
            ObjectKind::Blob => PACKED_MAX,
        };
        if size > max {
            return Err(format!(
                "object {id} claims {size} bytes, more than a pack holds"
            ));
        }
        entries.push(IndexEntry {
            id,
            kind,
            encoding,
            offset,
            len,
            size,
        });
        p += ENTRY_LEN;
    }
    Ok((entries, pack_len))
}

/// The content of one stored object, checked against its id and size.
pub fn decode_object(e: &IndexEntry, stored: &[u8]) -> Result<Vec<u8>, String> {
    let content = match e.encoding {
        Encoding::Raw => stored.to_vec(),
        Encoding::Zstd => {
            cairn_store::blobs::decompress_exact(stored, e.size).map_err(|x| x.to_string())?
        }
    };
    if content.len() as u64 != e.size {
        return Err(format!(
            "{} bytes where {} were indexed",
            content.len(),
            e.size
        ));
    }
    let got = Id::of(&content);
    if got != e.id {
        return Err(format!("content hashes to {got}"));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_rejects_lies() {
        let mut b = PackBuilder::new();
        let content = b"hello world hello world hello world".to_vec();
        let frame = zstd::bulk::compress(&content, 3).unwrap();
        b.add(
            Id::of(&content),
            ObjectKind::Blob,
            Encoding::Zstd,
            &frame,
            content.len() as u64,
        );
        b.add(Id::of(b"raw"), ObjectKind::Tree, Encoding::Raw, b"raw", 3);
        let pack = b.finish();
        assert_eq!(pack.id, Id::of(&pack.bytes));
        let idx = encode_index(&pack);
        let (entries, len) = decode_index(&idx, &pack.id).unwrap();
        assert_eq!(entries, pack.entries);
        assert_eq!(len, pack.bytes.len() as u64);
        for e in &entries {
            let stored = &pack.bytes[e.offset as usize..(e.offset + e.len) as usize];
            decode_object(e, stored).unwrap();
        }
        assert!(decode_index(&idx, &Id::of(b"other")).is_err());
        // A tampered object fails its own check.
        let e = entries[0];
        let mut stored = pack.bytes[e.offset as usize..(e.offset + e.len) as usize].to_vec();
        let last = stored.len() - 1;
        stored[last] ^= 1;
        assert!(decode_object(&e, &stored).is_err());
    }
}
