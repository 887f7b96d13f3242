//! Archive ingest: a tar (plain, gzip or zstd, detected by magic bytes) into trees and blobs.
//!
//! Member contents are written to temp files as they stream past; once the whole archive has
//! parsed, one index lookup finds which blobs the store already has (those temp files are
//! dropped: a present blob is never rewritten) and the rest are renamed into place. Names are
//! checked before anything is recorded: absolute names, `..` components and names that are not valid entry names are
//! errors that name the entry, as is an archive that ends without its end-of-archive marker.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::blobs::{PendingBlob, SMALL_BLOB_MAX, Source, StoredBlob};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ingest::{self, Built, Content, IngestOptions, Node, normal_mode};
use crate::store::Store;
use crate::stream::{EofWatch, decompressed};
use crate::tree::{EntryKind, Meta, check_name};

/// Opens `archive` with the decompressor its first bytes call for.
fn open_decompressed(archive: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(archive).map_err(Error::io(archive))?;
    decompressed(BufReader::with_capacity(1 << 20, file)).map_err(Error::io(archive))
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
    let tar = TarOptions {
        ingest: *opts,
        ..TarOptions::default()
    };
    let parsed = ingest_reader(store, open_decompressed(archive)?, archive, &tar)?;
    Ok((parsed.built, parsed.stored))
}

/// How a tar stream is read into the store, beyond the metadata rules of [`IngestOptions`].
/// The defaults are those of `put --from-archive`; a caller that reads tar streams with other
/// rules (say, layers of a stack, whose hardlinks may point into a lower one) sets the rest.
#[derive(Clone, Debug, Default)]
pub struct TarOptions {
    /// Normalized or preserved metadata.
    pub ingest: IngestOptions,
    /// A hardlink is kept as a hardlink entry to its target path, which need not be in the
    /// stream (the caller resolves it); by default it must name an earlier regular file and
    /// becomes a file of the same content.
    pub open_hardlinks: bool,
    /// Most bytes the (decompressed) stream may hold: past it, ingest stops with an error (a
    /// decompression bomb). `None`: no limit.
    pub max_bytes: Option<u64>,
    /// zstd level of the stored contents, instead of the store's (for a cache written and read
    /// back at once, where speed matters more than size).
    pub level: Option<i32>,
    /// The stream is complete when it ends, with or without its end-of-archive marker, as long
    /// as it ends at a member boundary or inside the last member's padding (a member cut inside
    /// its data stays an error). For a stream whose completeness is proven otherwise, by a
    /// digest of the whole of it: some writers end a stream right after the last member's data.
    pub complete_at_end: bool,
    /// Entries whose own name this accepts are dropped, rather than refused, when a folder on
    /// their path is something else (a file or symlink an earlier entry of the stream made):
    /// for entries that only act on what lies below a path, which then holds nothing.
    pub skip_below_non_folder: Option<fn(&[u8]) -> bool>,
}

/// What [`ingest_reader`] built.
#[derive(Debug)]
pub struct TarTree {
    /// The tree of the stream's entries.
    pub tree: Id,
    /// Folders that no entry named, made only to hold an entry below them, as `/`-joined paths
    /// (the empty path is the root), sorted.
    pub implicit: Vec<Vec<u8>>,
}

/// What [`ingest_reader`] read, before it is committed.
pub(crate) struct Parsed {
    /// The trees and totals.
    pub built: Built,
    /// Blobs written, already durable.
    pub stored: Vec<StoredBlob>,
    /// See [`TarTree::implicit`].
    pub implicit: Vec<Vec<u8>>,
}

/// Counts the bytes read through it and fails past a limit.
struct Limit<R> {
    inner: R,
    left: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Limit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => self.left = left,
            None => {
                self.hit.set(true);
                return Err(io::Error::other("decompression limit reached"));
            }
        }
        Ok(n)
    }
}

/// Size of a tar block: headers and padded member data are whole blocks.
const TAR_BLOCK: u64 = 512;
/// The end-of-archive marker: two zero blocks.
const END_OF_ARCHIVE: u64 = 2 * TAR_BLOCK;

/// A tar stream completed where its writer stopped short (see
/// [`TarOptions::complete_at_end`]): when the stream ends, this supplies the missing padding and
/// end-of-archive marker as zeros and records where the real bytes ended; the reader then
/// refuses the stream if any member's header or data reaches past that point (a member cut
/// inside its data stays an error).
struct EndPad<R> {
    inner: R,
    /// Real bytes read so far.
    pos: u64,
    /// Zero bytes still to supply, once the stream has ended.
    fill: u64,
    /// Where the real bytes ended, once they have.
    end: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for EndPad<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.end.get().is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            self.end.set(Some(self.pos));
            self.fill = (TAR_BLOCK - self.pos % TAR_BLOCK) % TAR_BLOCK + END_OF_ARCHIVE;
        }
        let n = buf
            .len()
            .min(usize::try_from(self.fill).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.fill -= n as u64;
        Ok(n)
    }
}

/// Entry types that carry no data (POSIX: "no data logical records are stored" for links,
/// folders, devices and FIFOs). The tar crate would still skip `size` bytes after such a
/// header where other readers (Go's archive/tar, GNU tar) read the next header, so a non-zero
/// size field would make them see different files: it is refused.
fn header_only(t: tar::EntryType) -> bool {
    matches!(
        t,
        tar::EntryType::Link
            | tar::EntryType::Symlink
            | tar::EntryType::Directory
            | tar::EntryType::Char
            | tar::EntryType::Block
            | tar::EntryType::Fifo
    )
}

/// Ingests the tar stream `reader` (already decompressed) by the rules of `tar`. `origin`
/// names the source in errors.
pub(crate) fn ingest_reader(
    store: &Store,
    reader: Box<dyn Read + '_>,
    origin: &Path,
    tar: &TarOptions,
) -> Result<Parsed> {
    let archive = origin;
    let opts = &tar.ingest;
    let level = tar.level.unwrap_or(store.blobs.level());
    let hit_limit = Rc::new(Cell::new(false));
    let limited: Box<dyn Read + '_> = match tar.max_bytes {
        Some(max) => Box::new(Limit {
            inner: reader,
            left: max,
            hit: hit_limit.clone(),
        }),
        None => reader,
    };
    let real_end: Rc<Cell<Option<u64>>> = Rc::new(Cell::new(None));
    let limited: Box<dyn Read + '_> = match tar.complete_at_end {
        true => Box::new(EndPad {
            inner: limited,
            pos: 0,
            fill: 0,
            end: real_end.clone(),
        }),
        false => limited,
    };
    let (reader, hit_eof) = EofWatch::new(limited);
    let mut ar = tar::Archive::new(reader);
    let mut root = Node::Dir {
        meta: normal_dir_meta(opts),
        children: Vec::new(),
    };
    let mut implicit: HashSet<Vec<u8>> = HashSet::new();
    implicit.insert(Vec::new());
    let mut pending: HashMap<Id, PendingBlob> = HashMap::new();
    // Small files read but not yet written (see below), their ids, and their bytes.
    let mut batch: Vec<(Id, Vec<u8>)> = Vec::new();
    let mut queued: HashSet<Id> = HashSet::new();
    let mut batch_bytes = 0usize;
    let mut next_group = 0u64;
    let limit_reason = || {
        format!(
            "expands past the limit of {} bytes (a decompression bomb?)",
            tar.max_bytes.unwrap_or(u64::MAX)
        )
    };
    let malformed = |entry: Option<String>, reason: String| Error::Archive {
        archive: archive.to_path_buf(),
        entry,
        reason: if hit_limit.get() {
            limit_reason()
        } else {
            reason
        },
    };
    let entries = ar
        .entries()
        .map_err(|e| malformed(None, format!("malformed archive: {e}")))?;
    // The previous member: where its data ends in the stream, and its name (see `EndPad`).
    let mut previous: Option<(u64, String)> = None;
    let cut = |previous: &Option<(u64, String)>| match (previous, real_end.get()) {
        (Some((data_end, name)), Some(end)) if *data_end > end => Err(malformed(
            Some(name.clone()),
            format!(
                "truncated: the tar stream ends at byte {end}, inside this member, whose data \
                 runs to byte {data_end}"
            ),
        )),
        _ => Ok(()),
    };
    for entry in entries {
        cut(&previous)?;
        let mut entry =
            entry.map_err(|e| malformed(None, format!("malformed or truncated archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        previous = Some((entry.raw_file_position() + entry.size(), shown.clone()));
        let bad = |reason: String| malformed(Some(shown.clone()), reason);
        let segs = segments(&raw).map_err(bad)?;
        let h = entry.header().clone();
        let etype = h.entry_type();
        if header_only(etype) && entry.size() != 0 {
            return Err(bad(format!(
                "a {etype:?} entry whose size field says {} bytes: such entries carry no data",
                entry.size()
            )));
        }
        if let Some(skip) = tar.skip_below_non_folder
            && segs.last().is_some_and(|name| skip(name))
            && below_non_folder(&root, &segs)
        {
            continue;
        }
        let mut meta = if opts.preserve {
            Meta {
                mode: numeric(h.mode().map(u64::from), &h.as_old().mode).map_err(&bad)? as u32
                    & crate::tree::MODE_MASK,
                uid: numeric(h.uid(), &h.as_old().uid).map_err(&bad)? as u32,
                gid: numeric(h.gid(), &h.as_old().gid).map_err(&bad)? as u32,
                mtime: numeric(h.mtime(), &h.as_old().mtime).map_err(&bad)? as i64,
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
                implicit.remove(&Vec::new());
                continue;
            }
            return Err(bad("only a directory may name the archive root".into()));
        }
        let node = match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let want = entry.size();
                let (id, size) = if want > 0 && want <= SMALL_BLOB_MAX {
                    // Small files are read whole and hashed here, and compressed and written
                    // on the thread pool, a batch at a time: the tar stream is sequential,
                    // compression need not be.
                    let mut buf = Vec::with_capacity(want as usize);
                    entry
                        .read_to_end(&mut buf)
                        .map_err(|e| bad(format!("malformed or truncated archive: {e}")))?;
                    let id = Id::of(&buf);
                    let size = buf.len() as u64;
                    if size == want && !pending.contains_key(&id) && queued.insert(id) {
                        batch_bytes += buf.len();
                        batch.push((id, buf));
                        if batch_bytes >= BATCH_BYTES {
                            write_batch(store, &mut batch, &mut pending, level)?;
                            queued.clear();
                            batch_bytes = 0;
                        }
                    }
                    (id, size)
                } else {
                    let p = store
                        .blobs
                        .write(
                            Source::Stream {
                                reader: Box::new(&mut entry),
                                size_hint: want,
                                origin: archive,
                            },
                            Some(level),
                        )
                        .map_err(|e| {
                            if hit_limit.get() {
                                bad(String::new())
                            } else {
                                e.into()
                            }
                        })?;
                    let (id, size) = (p.blob.id, p.blob.size);
                    pending.entry(id).or_insert(p);
                    (id, size)
                };
                if size != want {
                    return Err(bad(format!("truncated: {size} of {want} bytes")));
                }
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
                if tar.open_hardlinks {
                    // The target may lie outside the stream: the caller resolves it.
                    if tsegs.is_empty() {
                        return Err(bad("hardlink to the root".into()));
                    }
                    let node = Node::Other {
                        meta,
                        kind: EntryKind::Hardlink {
                            target: tsegs.join(&b'/'),
                        },
                    };
                    insert(&mut root, &segs, node, opts).map_err(bad)?;
                    forget_implicit(&mut implicit, &segs);
                    continue;
                }
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
        let is_dir = matches!(node, Node::Dir { .. });
        note_implicit(&root, &mut implicit, &segs);
        insert(&mut root, &segs, node, opts).map_err(bad)?;
        forget_implicit(&mut implicit, &segs);
        if !is_dir {
            // Folders that were below a replaced one are gone with it.
            let mut below = segs.join(&b'/');
            below.push(b'/');
            implicit.retain(|p| !p.starts_with(&below));
        }
    }
    if hit_limit.get() {
        return Err(malformed(None, limit_reason()));
    }
    cut(&previous)?;
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
    write_batch(store, &mut batch, &mut pending, level)?;
    let ids: Vec<Id> = pending.keys().copied().collect();
    let present = store.has_blobs(&ids)?;
    let stored = pending
        .into_values()
        .filter(|p| !present.contains(&p.blob.id))
        .map(|p| p.persist(&store.blobs))
        .collect::<Result<Vec<_>, _>>()?;
    if !stored.is_empty() {
        store.blobs.sync().map_err(Error::io(store.blobs.root()))?;
    }
    let built = ingest::build(&root, &[], opts.preserve, archive)?;
    let mut implicit: Vec<Vec<u8>> = implicit.into_iter().collect();
    implicit.sort();
    Ok(Parsed {
        built,
        stored,
        implicit,
    })
}

/// Bytes of small files an archive ingest holds in memory before writing them as one batch.
const BATCH_BYTES: usize = 16 << 20;

/// Writes the small file contents of a batch (already hashed) that the index lacks as pending
/// blobs, in parallel. Those it has are not written at all: a pack keeps whatever is appended
/// to it, so writing first and checking at the end (as for large members) would leave dead
/// copies in the pack until gc.
fn write_batch(
    store: &Store,
    batch: &mut Vec<(Id, Vec<u8>)>,
    pending: &mut HashMap<Id, PendingBlob>,
    level: i32,
) -> Result<()> {
    let batch = std::mem::take(batch);
    let ids: Vec<Id> = batch.iter().map(|(id, _)| *id).collect();
    let present = store.has_blobs(&ids)?;
    let written = batch
        .into_par_iter()
        .filter(|(id, _)| !present.contains(id))
        .map(|(id, content)| {
            store
                .blobs
                .write(Source::Content { id, content }, Some(level))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for p in written {
        pending.entry(p.blob.id).or_insert(p);
    }
    Ok(())
}

/// A header's numeric field; one left blank (NULs or spaces, as some writers leave an owner
/// they do not know) reads as 0, as GNU tar and Go's archive/tar read it.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Result<u64, String> {
    match parsed {
        Ok(n) => Ok(n),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether one of the parent folders of `segs` is, so far, something other than a folder.
fn below_non_folder(root: &Node, segs: &[Vec<u8>]) -> bool {
    let mut cur = root;
    for seg in &segs[..segs.len() - 1] {
        let Node::Dir { children, .. } = cur else {
            return true;
        };
        match children.binary_search_by(|(n, _)| n.as_slice().cmp(seg)) {
            Ok(i) => cur = &children[i].1,
            Err(_) => return false,
        }
    }
    !matches!(cur, Node::Dir { .. })
}

/// Records, before `segs` is inserted, which of its parent folders the insert will make.
fn note_implicit(root: &Node, implicit: &mut HashSet<Vec<u8>>, segs: &[Vec<u8>]) {
    let mut cur = Some(root);
    for (i, seg) in segs[..segs.len() - 1].iter().enumerate() {
        cur = match cur {
            Some(Node::Dir { children, .. }) => children
                .binary_search_by(|(n, _)| n.as_slice().cmp(seg))
                .ok()
                .map(|j| &children[j].1),
            _ => None,
        };
        if cur.is_none() {
            implicit.insert(segs[..=i].join(&b'/'));
        }
    }
}

/// An entry named `segs` makes that path explicit.
fn forget_implicit(implicit: &mut HashSet<Vec<u8>>, segs: &[Vec<u8>]) {
    if !implicit.is_empty() {
        implicit.remove(&segs.join(&b'/'));
    }
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
