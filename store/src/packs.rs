//! Local pack files: small blobs appended to a few large files instead of one file each.
//!
//! Creating a file is the dominant cost of storing many small blobs (an inode, a directory
//! entry and a rename each; on this project's ext4 about as much kernel time as compressing the
//! content). So every blob of at most [`crate::blobs::SMALL_BLOB_MAX`] bytes is appended to the
//! writing process's current pack, `packs/<32 hex>.pack`, and the index records where it is
//! (the `packed` table). Large blobs keep a file of their own, so a later hardlink or reflink
//! materialize mode can still use them as they are.
//!
//! A pack is written under a temp name (`packs/.tmp-<32 hex>`), appended to by one process
//! only, and renamed to its final name by [`Packer::finish`], which the writer calls before the
//! `syncfs` that makes the batch durable, that is before the index commit that first points into
//! it. Packs are never modified after that: gc deletes a pack no index row points into, and
//! rewrites ("repacks") one whose live bytes have fallen below half its size. The byte format is
//! in `docs/format.md`, "Pack files".

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::blobs::Encoding;
use crate::id::Id;

/// A pack is closed, and the next blob starts a new one, once it holds this many bytes. Large
/// enough that a 1 GB tree of small files makes a few dozen packs, small enough that gc can
/// rewrite a partly dead one cheaply.
pub const PACK_TARGET_BYTES: u64 = 32 * 1024 * 1024;

/// First bytes of every pack file: a name and the format version (1).
pub const PACK_MAGIC: &[u8; 16] = b"cairn-pack\n\0\0\0\0\x01";

/// Bytes before each blob's stored bytes in a pack: id (32), encoding (1), content size (8),
/// stored size (8).
pub const ENTRY_HEADER_LEN: u64 = 32 + 1 + 8 + 8;

/// Buffer of the pack being written (appends are small; the buffer turns them into few writes).
const WRITE_BUF_LEN: usize = 1024 * 1024;

/// Name prefix of packs being written.
const TEMP_PREFIX: &str = ".tmp-";

/// A pack's name: 128 random bits, written as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub u128);

impl PackId {
    fn random() -> io::Result<PackId> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(io::Error::other)?;
        Ok(PackId(u128::from_le_bytes(b)))
    }

    /// The 32 hex digits of the pack's file name.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parses a pack file name (`<32 hex>.pack`).
    pub fn from_file_name(name: &str) -> Option<PackId> {
        let hex = name.strip_suffix(".pack")?;
        if hex.len() != 32
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return None;
        }
        u128::from_str_radix(hex, 16).ok().map(PackId)
    }
}

impl std::fmt::Display for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pack {}", self.to_hex())
    }
}

/// Where a packed blob's stored bytes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackSlot {
    /// The pack.
    pub pack: PackId,
    /// Offset of the stored bytes (after the entry header) in the pack file.
    pub offset: u64,
}

/// A pack being written, shared by the blobs appended to it until they are persisted.
#[derive(Debug)]
pub(crate) struct OpenPack {
    id: PackId,
    temp: PathBuf,
    dest: PathBuf,
    inner: Mutex<PackInner>,
}

#[derive(Debug)]
struct PackInner {
    out: BufWriter<File>,
    len: u64,
    /// Some blob in it was persisted: the pack must reach its final name at the next finish.
    keep: bool,
    renamed: bool,
}

impl OpenPack {
    /// The pack's id.
    pub(crate) fn id(&self) -> PackId {
        self.id
    }

    /// Marks the pack as holding a blob that will be recorded.
    pub(crate) fn keep(&self) {
        self.inner.lock().expect("pack lock").keep = true;
    }

    /// Flushes what was appended and, if a blob in it is kept, renames it to its final name.
    /// Returns whether it now has its final name.
    fn finish(&self) -> io::Result<bool> {
        let mut inner = self.inner.lock().expect("pack lock");
        inner.out.flush()?;
        if inner.keep && !inner.renamed {
            fs::rename(&self.temp, &self.dest)?;
            inner.renamed = true;
        }
        Ok(inner.renamed)
    }
}

impl Drop for OpenPack {
    fn drop(&mut self) {
        // Nothing in a pack that never got its final name can be recorded in the index.
        if let Ok(inner) = self.inner.get_mut()
            && !inner.renamed
        {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The packs one process is writing into a store's `packs/` folder.
#[derive(Debug)]
pub(crate) struct Packer {
    dir: PathBuf,
    state: Mutex<PackerState>,
}

#[derive(Debug, Default)]
struct PackerState {
    /// The pack new blobs go to.
    current: Option<Arc<OpenPack>>,
    /// Packs closed since the last finish that may still need their final name.
    closed: Vec<Arc<OpenPack>>,
}

impl Packer {
    pub(crate) fn new(dir: PathBuf) -> Packer {
        Packer {
            dir,
            state: Mutex::new(PackerState::default()),
        }
    }

    /// The `packs/` folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where pack `id` lives.
    pub(crate) fn path(&self, id: PackId) -> PathBuf {
        self.dir.join(format!("{}.pack", id.to_hex()))
    }

    /// Appends one blob's stored bytes to the current pack (starting a new one when it is full)
    /// and returns the pack and where the bytes start. Not durable, and not under the pack's
    /// final name, until [`Packer::finish`] after [`OpenPack::keep`].
    pub(crate) fn append(
        &self,
        id: &Id,
        encoding: Encoding,
        size: u64,
        bytes: &[u8],
    ) -> io::Result<(Arc<OpenPack>, u64)> {
        let mut state = self.state.lock().expect("packer lock");
        let full = state
            .current
            .as_ref()
            .is_some_and(|p| p.inner.lock().expect("pack lock").len >= PACK_TARGET_BYTES);
        if full && let Some(old) = state.current.take() {
            state.closed.push(old);
        }
        let pack = match &state.current {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(self.create()?);
                state.current = Some(p.clone());
                p
            }
        };
        let mut inner = pack.inner.lock().expect("pack lock");
        let mut header = [0u8; ENTRY_HEADER_LEN as usize];
        header[..32].copy_from_slice(&id.0);
        header[32] = encoding.code();
        header[33..41].copy_from_slice(&size.to_le_bytes());
        header[41..49].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        inner.out.write_all(&header)?;
        inner.out.write_all(bytes)?;
        let offset = inner.len + ENTRY_HEADER_LEN;
        inner.len = offset + bytes.len() as u64;
        drop(inner);
        Ok((pack, offset))
    }

    fn create(&self) -> io::Result<OpenPack> {
        fs::create_dir_all(&self.dir)?;
        loop {
            let id = PackId::random()?;
            let temp = self.dir.join(format!("{TEMP_PREFIX}{}", id.to_hex()));
            let file = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            let dest = self.path(id);
            if dest.exists() {
                let _ = fs::remove_file(&temp);
                continue;
            }
            let mut out = BufWriter::with_capacity(WRITE_BUF_LEN, file);
            out.write_all(PACK_MAGIC)?;
            return Ok(OpenPack {
                id,
                temp,
                dest,
                inner: Mutex::new(PackInner {
                    out,
                    len: PACK_MAGIC.len() as u64,
                    keep: false,
                    renamed: false,
                }),
            });
        }
    }

    /// Flushes every pack written since the last call and gives those holding kept blobs their
    /// final names. Callers then `syncfs` before the index records any of those blobs.
    pub(crate) fn finish(&self) -> io::Result<()> {
        let mut state = self.state.lock().expect("packer lock");
        if let Some(p) = &state.current {
            p.finish()?;
        }
        let mut still_open = Vec::new();
        for p in state.closed.drain(..) {
            let renamed = p.finish()?;
            // A closed pack that is not yet kept may still be by a pending blob that holds it.
            if !renamed && Arc::strong_count(&p) > 1 {
                still_open.push(p);
            }
        }
        state.closed = still_open;
        Ok(())
    }
}

/// Reads `len` stored bytes at `offset` of an open pack file (the whole range, or an error).
pub(crate) fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("pack ends before byte {}", offset + len),
            )
        } else {
            e
        }
    })?;
    Ok(buf)
}

/// One entry of a pack file, as its header describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// The blob.
    pub id: Id,
    /// How its bytes are stored.
    pub encoding: Encoding,
    /// Content size.
    pub size: u64,
    /// Stored size.
    pub stored_size: u64,
    /// Offset of the stored bytes.
    pub offset: u64,
}

/// Walks the entry headers of a pack file (for gc's repack and for audits without the index).
/// Stops at the first incomplete entry: a pack's tail may hold a write a crash interrupted.
pub fn entries(path: &Path) -> io::Result<Vec<PackEntry>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut magic = [0u8; 16];
    file.read_exact_at(&mut magic, 0)?;
    if &magic != PACK_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a cairn pack (bad magic)",
        ));
    }
    let mut out = Vec::new();
    let mut pos = PACK_MAGIC.len() as u64;
    let mut h = [0u8; ENTRY_HEADER_LEN as usize];
    while pos + ENTRY_HEADER_LEN <= len {
        file.read_exact_at(&mut h, pos)?;
        let id = Id(h[..32].try_into().expect("32 bytes"));
        let Some(encoding) = Encoding::from_code(h[32]) else {
            break;
        };
        let size = u64::from_le_bytes(h[33..41].try_into().expect("8 bytes"));
        let stored_size = u64::from_le_bytes(h[41..49].try_into().expect("8 bytes"));
        let offset = pos + ENTRY_HEADER_LEN;
        if offset + stored_size > len {
            break;
        }
        out.push(PackEntry {
            id,
            encoding,
            size,
            stored_size,
            offset,
        });
        pos = offset + stored_size;
    }
    Ok(out)
}

/// Pack files with their sizes, and temp files of packs never finished.
pub(crate) type PackListing = (Vec<(PackId, u64)>, Vec<PathBuf>);

/// Every pack file in `dir` with its size, plus the temp files of packs never finished.
pub(crate) fn list(dir: &Path) -> io::Result<PackListing> {
    let mut packs = Vec::new();
    let mut temps = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((packs, temps)),
        Err(e) => return Err(e),
    };
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TEMP_PREFIX) {
            temps.push(ent.path());
        } else if let Some(id) = PackId::from_file_name(name) {
            packs.push((id, ent.metadata()?.len()));
        }
    }
    Ok((packs, temps))
}
