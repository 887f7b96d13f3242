//! Archive ingest: a tar (plain, gzip or zstd, detected by magic bytes) into trees and blobs.
//!
//! Member contents are written to temp files as they stream past; once the whole archive has
//! parsed, one index lookup finds which blobs the store already has (those temp files are
//! dropped: a present blob is never rewritten) and the rest are renamed into place. Names are
//! checked before anything is recorded: absolute names, `..` components and names that are not valid entry names are
//! errors that name the entry, as is an archive that ends without its end-of-archive marker.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use std::collections::HashMap;

use crate::blobs::{PendingBlob, StoredBlob};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ingest::{self, Built, Content, IngestOptions, Node, normal_mode};
use crate::store::Store;
use crate::tree::{EntryKind, Meta, check_name};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Notes whether the reader below the tar parser ran dry.
struct EofWatch<R> {
    inner: R,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for EofWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit.set(true);
        }
        Ok(n)
    }
}

/// Opens `archive` with the decompressor its first bytes call for.
fn open_decompressed(archive: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(archive).map_err(Error::io(archive))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let head = r.fill_buf().map_err(Error::io(archive))?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::Decoder::with_buffer(r).map_err(Error::io(archive))?)
    } else {
        Box::new(r)
    })
}

/// Splits an entry name into checked segments; `./` prefixes and `.` segments are dropped.
fn segments(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if raw.starts_with(b"/") {
        return Err("absolute names are refused".into());
    }
    let mut out = Vec::new();
    for seg in raw.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => continue,
            b".." => return Err("'..' components are refused".into()),
            s => {
                check_name(s).map_err(|e| e.to_string())?;
                out.push(s.to_vec());
                if out.len() > crate::tree::MAX_DEPTH {
                    return Err(format!(
                        "nested more than {} folders deep",
                        crate::tree::MAX_DEPTH
                    ));
                }
            }
        }
    }
    Ok(out)
}

fn normal_dir_meta(opts: &IngestOptions) -> Meta {
    Meta {
        mode: normal_mode::EXEC,
        mtime: opts.epoch,
        ..Meta::default()
    }
}

/// Ingests `archive` into `store`'s blob directory and returns the built trees and the blobs
/// written (already durable).
pub(crate) fn ingest(
    store: &Store,
    archive: &Path,
    opts: &IngestOptions,
) -> Result<(Built, Vec<StoredBlob>)> {
    let hit_eof = Rc::new(Cell::new(false));
    let reader = EofWatch {
        inner: open_decompressed(archive)?,
        hit: hit_eof.clone(),
    };
    let mut ar = tar::Archive::new(reader);
    let mut root = Node::Dir {
        meta: normal_dir_meta(opts),
        children: Vec::new(),
    };
    let mut pending: HashMap<Id, PendingBlob> = HashMap::new();
    let mut next_group = 0u64;
    let malformed = |entry: Option<String>, reason: String| Error::Archive {
        archive: archive.to_path_buf(),
        entry,
        reason,
    };
    let entries = ar
        .entries()
        .map_err(|e| malformed(None, format!("malformed archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| malformed(None, format!("malformed or truncated archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason: String| malformed(Some(shown.clone()), reason);
        let segs = segments(&raw).map_err(bad)?;
        let h = entry.header().clone();
        let etype = h.entry_type();
        let mut meta = if opts.preserve {
            Meta {
                mode: h.mode().map_err(|e| bad(e.to_string()))? & crate::tree::MODE_MASK,
                uid: h.uid().map_err(|e| bad(e.to_string()))? as u32,
                gid: h.gid().map_err(|e| bad(e.to_string()))? as u32,
                mtime: h.mtime().map_err(|e| bad(e.to_string()))? as i64,
                ..Meta::default()
            }
        } else {
            let exec = h.mode().map(|m| m & 0o100 != 0).unwrap_or(false);
            Meta {
                mode: match etype {
                    tar::EntryType::Directory => normal_mode::EXEC,
                    tar::EntryType::Symlink => normal_mode::SYMLINK,
                    _ if exec => normal_mode::EXEC,
                    _ => normal_mode::FILE,
                },
                mtime: opts.epoch,
                ..Meta::default()
            }
        };
        if opts.preserve
            && let Some(exts) = entry.pax_extensions().map_err(|e| bad(e.to_string()))?
        {
            for ext in exts {
                let ext = ext.map_err(|e| bad(e.to_string()))?;
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs
                        .push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
            meta.xattrs.sort();
            meta.xattrs.dedup_by(|a, b| a.0 == b.0);
        }
        if segs.is_empty() {
            // The archive's own root ("./").
            if etype == tar::EntryType::Directory
                && let Node::Dir { meta: m, .. } = &mut root
            {
                *m = meta;
                continue;
            }
            return Err(bad("only a directory may name the archive root".into()));
        }
        let node = match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let want = entry.size();
                let p = store.blobs.write_stream(&mut entry, want, archive)?;
                let (id, size) = (p.blob.id, p.blob.size);
                if size != want {
                    return Err(bad(format!("truncated: {size} of {want} bytes")));
                }
                pending.entry(id).or_insert(p);
                Node::File {
                    meta,
                    content: Content::Stored { id, size },
                    link_group: None,
                }
            }
            tar::EntryType::Directory => Node::Dir {
                meta,
                children: Vec::new(),
            },
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("symlink without a target".into()))?
                    .into_owned();
                if target.is_empty() || target.contains(&0) {
                    return Err(bad("symlink with an empty or invalid target".into()));
                }
                Node::Other {
                    meta,
                    kind: EntryKind::Symlink { target },
                }
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("hardlink without a target".into()))?
                    .into_owned();
                let tsegs = segments(&target).map_err(|r| bad(format!("hardlink target: {r}")))?;
                let target_node = lookup_mut(&mut root, &tsegs).ok_or_else(|| {
                    bad(format!(
                        "hardlink target {:?} is not an earlier regular file",
                        String::from_utf8_lossy(&target)
                    ))
                })?;
                match target_node {
                    Node::File {
                        content,
                        link_group,
                        meta: tmeta,
                    } => {
                        let group = *link_group.get_or_insert_with(|| {
                            next_group += 1;
                            next_group
                        });
                        Node::File {
                            meta: tmeta.clone(),
                            content: content.clone(),
                            link_group: Some(group),
                        }
                    }
                    _ => return Err(bad("hardlink target is not a regular file".into())),
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                Node::Other {
                    meta,
                    kind: if etype == tar::EntryType::Char {
                        EntryKind::CharDevice { major, minor }
                    } else {
                        EntryKind::BlockDevice { major, minor }
                    },
                }
            }
            tar::EntryType::Fifo => Node::Other {
                meta,
                kind: EntryKind::Fifo,
            },
            other => return Err(bad(format!("unsupported entry type {other:?}"))),
        };
        insert(&mut root, &segs, node, opts).map_err(bad)?;
    }
    if hit_eof.get() {
        return Err(malformed(
            None,
            "truncated: the archive ends without an end-of-archive marker".into(),
        ));
    }
    // Read past the end-of-archive marker to the end of the stream, so that a gzip trailer
    // (CRC and length) or a zstd checksum is checked too: a corrupt or cut compressed stream is
    // refused even when the tar inside looks complete.
    std::io::copy(&mut ar.into_inner(), &mut std::io::sink())
        .map_err(|e| malformed(None, format!("corrupt or truncated compressed stream: {e}")))?;
    let ids: Vec<Id> = pending.keys().copied().collect();
    let present = store.present_blobs(&ids)?;
    let stored = pending
        .into_values()
        .filter(|p| !present.contains(&p.blob.id))
        .map(|p| p.persist(&store.blobs))
        .collect::<Result<Vec<_>, _>>()?;
    if !stored.is_empty() {
        store.blobs.sync().map_err(Error::io(store.blobs.root()))?;
    }
    let built = ingest::build(&root, &[], opts.preserve, archive)?;
    Ok((built, stored))
}

fn lookup_mut<'a>(mut node: &'a mut Node, segs: &[Vec<u8>]) -> Option<&'a mut Node> {
    for seg in segs {
        let Node::Dir { children, .. } = node else {
            return None;
        };
        let i = children
            .binary_search_by(|(n, _)| n.as_slice().cmp(seg))
            .ok()?;
        node = &mut children[i].1;
    }
    Some(node)
}

/// Puts `node` at `segs`, creating missing parent folders. A later entry replaces an earlier
/// one of the same name, as tar does; a folder entry over an existing folder only updates its
/// metadata.
fn insert(
    root: &mut Node,
    segs: &[Vec<u8>],
    node: Node,
    opts: &IngestOptions,
) -> Result<(), String> {
    let (last, parents) = segs.split_last().expect("non-empty");
    let mut cur = root;
    for seg in parents {
        let Node::Dir { children, .. } = cur else {
            unreachable!("only folders are descended into");
        };
        let i = match children.binary_search_by(|(n, _)| n.as_slice().cmp(seg)) {
            Ok(i) => i,
            Err(i) => {
                children.insert(
                    i,
                    (
                        seg.clone(),
                        Node::Dir {
                            meta: normal_dir_meta(opts),
                            children: Vec::new(),
                        },
                    ),
                );
                i
            }
        };
        cur = &mut children[i].1;
        if !matches!(cur, Node::Dir { .. }) {
            return Err(format!(
                "parent {:?} is not a directory",
                String::from_utf8_lossy(seg)
            ));
        }
    }
    let Node::Dir { children, .. } = cur else {
        unreachable!("checked above");
    };
    match children.binary_search_by(|(n, _)| n.as_slice().cmp(last)) {
        Ok(i) => match (&mut children[i].1, node) {
            (Node::Dir { meta, .. }, Node::Dir { meta: new, .. }) => *meta = new,
            (slot, node) => *slot = node,
        },
        Err(i) => children.insert(i, (last.clone(), node)),
    }
    Ok(())
}
