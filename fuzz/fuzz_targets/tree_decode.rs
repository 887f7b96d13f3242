//! Trees both ways.
//! - `Tree::decode` is strict: whatever it accepts must re-encode to exactly the same bytes.
//! - The converse: a tree built from the same bytes that `encode` accepts must decode back to
//!   itself (an id the store computes must name bytes the store can read again).
#![no_main]

use cairn_store::{Entry, EntryKind, Id, Meta, Tree};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fn bytes(u: &mut Unstructured, min: usize, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(min..=max)?;
    Ok(u.bytes(n)?.to_vec())
}

/// A name that is usually valid: short, without '/' or NUL.
fn name(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut n = bytes(u, 1, 6)?;
    for b in &mut n {
        if *b == b'/' || *b == 0 {
            *b = b'a';
        }
    }
    Ok(n)
}

fn tree_from(u: &mut Unstructured) -> Result<Tree> {
    let count = u.int_in_range(0..=48)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let mut xattrs = Vec::new();
        for _ in 0..u.int_in_range(0..=2)? {
            xattrs.push((name(u)?, bytes(u, 0, 8)?));
        }
        xattrs.sort();
        xattrs.dedup_by(|a, b| a.0 == b.0);
        let meta = Meta {
            mode: u.arbitrary::<u32>()? & 0o7777,
            uid: u.arbitrary()?,
            gid: u.arbitrary()?,
            mtime: u.arbitrary()?,
            mtime_nsec: u.arbitrary::<u32>()? % 1_000_000_000,
            xattrs,
        };
        let id = |u: &mut Unstructured| -> Result<Id> { Ok(Id(u.arbitrary()?)) };
        let kind = match u.int_in_range(0u8..=6)? {
            0 => EntryKind::File {
                size: u.arbitrary()?,
                blob: id(u)?,
            },
            1 => EntryKind::Dir { tree: id(u)? },
            2 => EntryKind::Symlink {
                target: name(u)?,
            },
            3 => EntryKind::Hardlink {
                target: name(u)?,
            },
            4 => EntryKind::CharDevice {
                major: u.arbitrary()?,
                minor: u.arbitrary()?,
            },
            5 => EntryKind::BlockDevice {
                major: u.arbitrary()?,
                minor: u.arbitrary()?,
            },
            _ => EntryKind::Fifo,
        };
        entries.push(Entry {
            name: name(u)?,
            meta,
            kind,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.dedup_by(|a, b| a.name == b.name);
    Ok(Tree { entries })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data) {
        let again = tree
            .encode()
            .expect("a decoded tree must encode (decode validated it)");
        assert_eq!(again, data, "decode accepted a non-canonical encoding");
    }

    if let Ok(tree) = tree_from(&mut Unstructured::new(data))
        && let Ok(bytes) = tree.encode()
    {
        match Tree::decode(&bytes) {
            Ok(back) => assert_eq!(back, tree, "encode/decode changed the tree"),
            Err(e) => panic!(
                "encode produced bytes decode refuses: {e}\n{} entries, {} bytes: {}",
                tree.entries.len(),
                bytes.len(),
                hex(&bytes)
            ),
        }
    }
});

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
