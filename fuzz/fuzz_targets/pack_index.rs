//! Pack indexes and packed objects from a hostile remote: `decode_index` and `decode_object`
//! must never panic, and what they accept must hold what they promise.
//!
//! Input: byte 0 holds flags, bytes 1..3 the index length `n` (u16 LE), then `n` bytes of index,
//! then the pack bytes the entries are cut from.
//! - flag bit 0: the index bytes are the *decompressed* index; the harness zstd-compresses them
//!   (so mutations reach the parser instead of dying in zstd).
//! - flag bit 1: the expected pack id is the one the index names in its header (so the id check
//!   passes); otherwise it is BLAKE3 of the pack bytes, as when a real pack is fetched.
#![no_main]

use cairn_remote::pack::{self, INDEX_MAGIC, ObjectKind, PACK_MAGIC, SealedPack};
use cairn_store::Id;
use libfuzzer_sys::fuzz_target;

/// Round-trip accepted indexes through `encode_index` when the pack is at most this long.
const REENCODE_MAX_PACK: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let flags = data[0];
    let n = (u16::from_le_bytes([data[1], data[2]]) as usize).min(data.len() - 3);
    let (index_part, pack_bytes) = data[3..].split_at(n);
    let index: Vec<u8> = if flags & 1 != 0 {
        zstd::bulk::compress(index_part, 1).unwrap()
    } else {
        index_part.to_vec()
    };
    let pack_id = if flags & 2 != 0 {
        let raw = zstd::bulk::decompress(&index, 1 << 20).unwrap_or_default();
        let at = INDEX_MAGIC.len();
        match raw.get(at..at + 32) {
            Some(b) => Id(b.try_into().unwrap()),
            None => Id::of(pack_bytes),
        }
    } else {
        Id::of(pack_bytes)
    };

    let Ok((entries, pack_len)) = pack::decode_index(&index, &pack_id) else {
        return;
    };
    for e in &entries {
        let end = e.offset.checked_add(e.len).expect("accepted entry overflows");
        assert!(end <= pack_len, "accepted entry {e:?} ends past the pack ({pack_len})");
        assert!(e.offset >= PACK_MAGIC.len() as u64, "accepted entry {e:?} overlaps the magic");
        if e.kind == ObjectKind::Tree {
            assert!(e.size <= 256 * 1024 * 1024, "accepted tree {e:?} over the limit");
        }
    }
    if pack_len <= REENCODE_MAX_PACK {
        let sealed = SealedPack {
            id: pack_id,
            bytes: vec![0u8; pack_len as usize].into(),
            entries: entries.clone(),
        };
        let again = pack::encode_index(&sealed);
        let (back, back_len) =
            pack::decode_index(&again, &pack_id).expect("a re-encoded index must decode");
        assert_eq!(back, entries);
        assert_eq!(back_len, pack_len);
    }
    for e in &entries {
        // The stored bytes as the pull path cuts them; where the fuzzer's pack is too short,
        // whatever part of it is there.
        let start = (e.offset as usize).min(pack_bytes.len());
        let stop = (e.offset.saturating_add(e.len) as usize)
            .min(pack_bytes.len())
            .max(start);
        for stored in [&pack_bytes[start..stop], pack_bytes] {
            if let Ok(content) = pack::decode_object(e, stored) {
                assert_eq!(content.len() as u64, e.size);
                assert_eq!(Id::of(&content), e.id);
            }
        }
    }
});
