//! The blob directory: file contents stored by id, raw or zstd-compressed, verified on read.
//!
//! A blob lives at `blobs/<first two hex digits>/<64 hex digits>` when stored raw (so a later
//! hardlink or reflink materialize mode can use the file as it is) or at the same path plus
//! `.zst` when compression pays. Writes go to `tmp/` and are renamed into place, so a blob path
//! only ever holds complete content; durability comes from one `syncfs` per batch ([`BlobDir::sync`]),
//! which callers issue before the index records the batch.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

mod codec;
mod hash;
mod verified;

pub use codec::{
    COMPRESS_IF_AT_MOST_TENTHS, MULTITHREAD_COMPRESS_MIN, PROBE_LEN, PROBE_LEVEL, compress_frame,
    decompress_exact,
};
pub use hash::{hash_file, hash_file_sized};
pub use verified::{VerifiedReader, copy_verified};

use codec::{MIN_COMPRESS_LEN, MT_JOB_SIZE, MtToken, compress, compress_small};
use verified::{check_content, decode_checked};

use crate::id::Id;
use crate::packs::{OpenPack, PackId, PackSlot, Packer};

/// Blobs up to this size are compressed and decompressed whole in memory, with a per-thread
/// reusable zstd context, and kept in pack files; larger ones stream, each to a file of its own.
pub const SMALL_BLOB_MAX: u64 = 1024 * 1024;

/// Name prefix of temp files inside the fan-out folders (never a blob name).
pub const TEMP_PREFIX: &str = ".tmp-";

/// Size of the copy buffer for streaming blobs in and out.
const IO_BUF_LEN: usize = 256 * 1024;

/// How a blob's bytes are kept on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The content as it is.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Encoding {
    /// The index's one-byte code for this encoding.
    pub fn code(self) -> u8 {
        self as u8
    }
    /// The encoding for an index code.
    pub fn from_code(c: u8) -> Option<Encoding> {
        match c {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

/// What was written for one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its id.
    pub id: Id,
    /// Content length.
    pub size: u64,
    /// Bytes on disk.
    pub stored_size: u64,
    /// How it is kept.
    pub encoding: Encoding,
    /// The pack holding it, for a small blob (see `packs`); `None` for a blob file.
    pub pack: Option<PackSlot>,
}

/// Where and how the index says a blob is kept: what a reader needs to find it in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// How its bytes are stored.
    pub encoding: Encoding,
    /// Bytes on disk.
    pub stored_size: u64,
    /// Its place in a pack, or `None` for a blob file.
    pub pack: Option<PackSlot>,
}

impl StoredBlob {
    /// Where this blob is kept.
    pub fn placement(&self) -> Placement {
        Placement {
            encoding: self.encoding,
            stored_size: self.stored_size,
            pack: self.pack,
        }
    }
}

/// Errors reading or writing blobs; each names the blob or the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No file holds the blob.
    #[error("blob {0} is missing from the store")]
    Missing(Id),
    /// The bytes on disk do not hash to the id (or do not decompress).
    #[error("blob {id} is corrupt: {reason}")]
    Corrupt {
        /// The blob.
        id: Id,
        /// What was found.
        reason: String,
    },
    /// A source file changed while it was being stored.
    #[error("{}: file changed while it was being stored", path.display())]
    Changed {
        /// The source file.
        path: PathBuf,
    },
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An I/O error writing the blob's content to its destination.
    #[error("writing blob {id}: {source}")]
    Sink {
        /// The blob.
        id: Id,
        /// The error.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A blob's stored bytes as [`BlobDir::find`] found them.
enum Found {
    /// Its own file, open at the start.
    File(File, Encoding, PathBuf),
    /// Read whole from a pack.
    Packed(Vec<u8>, Encoding),
}

/// A blob file found by [`BlobDir::list`]: its id, encoding and size on disk.
pub type BlobFile = (Id, Encoding, u64);

/// A blob written but not yet in place: in a temp file, or appended to a pack still being
/// written. Dropping it deletes the temp file (a dropped packed blob is dead bytes in its pack,
/// which gc reclaims; a pack none of whose blobs is persisted is deleted whole).
#[derive(Debug)]
pub struct PendingBlob {
    /// What it holds.
    pub blob: StoredBlob,
    place: Pending,
}

#[derive(Debug)]
enum Pending {
    File(tempfile::TempPath),
    Packed(std::sync::Arc<OpenPack>),
}

impl PendingBlob {
    /// Wraps a temp file (in the store's temp folder) that holds `blob` in its stored form.
    pub fn adopt(blob: StoredBlob, temp: tempfile::TempPath) -> PendingBlob {
        PendingBlob {
            blob: StoredBlob { pack: None, ..blob },
            place: Pending::File(temp),
        }
    }

    /// Puts the blob in place in `dir`: renames its file, or marks its pack as kept. Not yet
    /// durable, nor (for a packed blob) under its pack's final name: see [`BlobDir::sync`].
    pub fn persist(self, dir: &BlobDir) -> Result<StoredBlob, BlobError> {
        match self.place {
            Pending::File(temp) => {
                let dest = dir.path(&self.blob.id, self.blob.encoding);
                temp.persist(&dest).map_err(|e| BlobError::Io {
                    path: dest,
                    source: e.error,
                })?;
            }
            Pending::Packed(pack) => pack.keep(),
        }
        Ok(self.blob)
    }
}

/// Where the content of a blob being written comes from (see [`BlobDir::write`]).
pub enum Source<'a> {
    /// Content in memory, at most [`SMALL_BLOB_MAX`] bytes, whose id the caller has just
    /// computed from exactly these bytes (so it is not hashed again).
    Content {
        /// BLAKE3 of `content`.
        id: Id,
        /// The bytes.
        content: Vec<u8>,
    },
    /// A stream (an archive member, a download), hashed as it is written.
    Stream {
        /// The content.
        reader: Box<dyn Read + 'a>,
        /// Expected length (0 if unknown); it only picks the strategy.
        size_hint: u64,
        /// Names the source in errors.
        origin: &'a Path,
    },
    /// A file that hashed to `expect` beforehand. It is hashed again as it is copied, so a
    /// file that changed in between is [`BlobError::Changed`], never a blob under the wrong id.
    File {
        /// The file.
        path: &'a Path,
        /// Its id when it was hashed.
        expect: Id,
        /// Its length then (it only picks the strategy).
        len: u64,
    },
    /// A blob in a stored form that the caller has checked against `id` and `size`.
    Encoded {
        /// Its id.
        id: Id,
        /// Its content size.
        size: u64,
        /// How `bytes` encode it.
        encoding: Encoding,
        /// The stored form.
        bytes: &'a [u8],
    },
}

/// The blob directory of a store, its pack folder and its temporary directory (all on the same
/// filesystem).
#[derive(Clone, Debug)]
pub struct BlobDir {
    root: PathBuf,
    tmp: PathBuf,
    level: i32,
    packer: std::sync::Arc<Packer>,
    /// Pack files open for reading, shared by threads (`pread` needs no seek position): a
    /// restore reads thousands of blobs from a few packs, and an `open` each doubled its
    /// system time.
    pack_files: std::sync::Arc<std::sync::Mutex<HashMap<PackId, std::sync::Arc<File>>>>,
}

/// Pack files [`BlobDir`] keeps open for reading at most (the cache is emptied when full).
const MAX_OPEN_PACKS: usize = 64;

impl BlobDir {
    /// Opens (and creates, if needed) the blob directory `root` with its fan-out folders,
    /// using `packs` for pack files, `tmp` for writes in progress and zstd level `level`.
    pub fn at(root: PathBuf, packs: PathBuf, tmp: PathBuf, level: i32) -> io::Result<BlobDir> {
        if !root.join("ff").is_dir() {
            for i in 0..=255u8 {
                fs::create_dir_all(root.join(format!("{i:02x}")))?;
            }
        }
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&packs)?;
        Ok(BlobDir {
            root,
            tmp,
            level,
            packer: std::sync::Arc::new(Packer::new(packs)),
            pack_files: Default::default(),
        })
    }

    /// The pack folder.
    pub fn packs(&self) -> &Path {
        self.packer.dir()
    }

    /// Where pack `id` lives.
    pub fn pack_path(&self, id: crate::packs::PackId) -> PathBuf {
        self.packer.path(id)
    }

    /// Appends a small blob's stored bytes to the current pack.
    fn append_packed(
        &self,
        id: Id,
        size: u64,
        encoding: Encoding,
        bytes: &[u8],
    ) -> Result<PendingBlob, BlobError> {
        let (pack, offset) = self
            .packer
            .append(&id, encoding, size, bytes)
            .map_err(io_at(self.packer.dir()))?;
        Ok(PendingBlob {
            blob: StoredBlob {
                id,
                size,
                stored_size: bytes.len() as u64,
                encoding,
                pack: Some(PackSlot {
                    pack: pack.id(),
                    offset,
                }),
            },
            place: Pending::Packed(pack),
        })
    }

    /// Where the blob `id` lives in `encoding`.
    pub fn path(&self, id: &Id, encoding: Encoding) -> PathBuf {
        let hex = id.to_hex();
        let mut p = self.root.join(&hex[..2]);
        match encoding {
            Encoding::Raw => p.push(hex),
            Encoding::Zstd => p.push(format!("{hex}.zst")),
        }
        p
    }

    /// A new temp file for blob `id`, in the fan-out folder it will be renamed into: the rename
    /// stays within one folder, and file creation is spread over 256 folders instead of one
    /// (on ext4, creating tens of thousands of files in one folder right after mass deletions is
    /// slow: see `docs/benchmarks.md`). Leftovers are named `.tmp-*` and deleted by gc.
    fn temp_for(&self, id: &Id) -> Result<tempfile::NamedTempFile, BlobError> {
        let dir = self.root.join(&id.to_hex()[..2]);
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(io_at(&dir))
    }

    /// The blob directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The temporary directory.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The zstd level blobs are compressed at.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Writes a blob from `src` as a [`PendingBlob`]: the caller persists it, or drops it if
    /// the store already has that blob (a present blob is never rewritten). Small blobs go to
    /// the current pack, large ones to a temp file. `level` overrides the store's zstd level
    /// (the raw-or-zstd decision is the same either way: it is made at the store's level).
    pub fn write(&self, src: Source<'_>, level: Option<i32>) -> Result<PendingBlob, BlobError> {
        let level = level.unwrap_or(self.level);
        match src {
            Source::Content { id, content } => {
                debug_assert!(content.len() as u64 <= SMALL_BLOB_MAX);
                debug_assert_eq!(id, Id::of(&content));
                self.write_small(id, content, level)
            }
            Source::Stream {
                mut reader,
                size_hint,
                origin,
            } => {
                if size_hint > 0 && size_hint <= SMALL_BLOB_MAX {
                    let mut buf = Vec::with_capacity(size_hint as usize + 1);
                    (&mut reader)
                        .take(SMALL_BLOB_MAX + 1)
                        .read_to_end(&mut buf)
                        .map_err(io_at(origin))?;
                    if buf.len() as u64 <= SMALL_BLOB_MAX {
                        return self.write_small(Id::of(&buf), buf, level);
                    }
                    // It grew past the small limit while we read it: stream what we have and
                    // the rest.
                    return self.write_streaming(
                        io::Cursor::new(buf).chain(reader),
                        size_hint,
                        origin,
                        level,
                    );
                }
                self.write_streaming(reader, size_hint, origin, level)
            }
            Source::File { path, expect, len } => {
                let file = File::open(path).map_err(io_at(path))?;
                let pending = self.write(
                    Source::Stream {
                        reader: Box::new(file),
                        size_hint: len,
                        origin: path,
                    },
                    Some(level),
                )?;
                if pending.blob.id != expect {
                    // Dropping the pending blob deletes its temp file.
                    return Err(BlobError::Changed {
                        path: path.to_path_buf(),
                    });
                }
                Ok(pending)
            }
            Source::Encoded {
                id,
                size,
                encoding,
                bytes,
            } => {
                if size <= SMALL_BLOB_MAX {
                    return self.append_packed(id, size, encoding, bytes);
                }
                let mut tmp = self.temp_for(&id)?;
                tmp.as_file_mut()
                    .write_all(bytes)
                    .map_err(io_at(tmp.path()))?;
                Ok(PendingBlob {
                    blob: StoredBlob {
                        id,
                        size,
                        stored_size: bytes.len() as u64,
                        encoding,
                        pack: None,
                    },
                    place: Pending::File(tmp.into_temp_path()),
                })
            }
        }
    }

    /// Stores a small blob held in memory: one compression with a reused context, one append.
    fn write_small(&self, id: Id, content: Vec<u8>, level: i32) -> Result<PendingBlob, BlobError> {
        let size = content.len() as u64;
        let (encoding, bytes) = match compress_small(&content, level).map_err(io_at(&self.tmp))? {
            Some(c) => (Encoding::Zstd, c),
            None => (Encoding::Raw, content),
        };
        self.append_packed(id, size, encoding, &bytes)
    }

    fn write_streaming(
        &self,
        mut reader: impl Read,
        size_hint: u64,
        origin: &Path,
        level: i32,
    ) -> Result<PendingBlob, BlobError> {
        let mut probe = Vec::with_capacity(PROBE_LEN.min(size_hint as usize + 1));
        (&mut reader)
            .take(PROBE_LEN as u64)
            .read_to_end(&mut probe)
            .map_err(io_at(origin))?;
        let encoding = if self.probe(&probe).is_some() {
            Encoding::Zstd
        } else {
            Encoding::Raw
        };
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .map_err(io_at(&self.tmp))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        // Held until the encoder is finished: at most one multithreaded compression at a time.
        let mut mt_token: Option<MtToken> = None;
        {
            let out = io::BufWriter::with_capacity(IO_BUF_LEN, tmp.as_file());
            let tmp_path = tmp.path().to_path_buf();
            let mut sink: Box<dyn Write> = match encoding {
                Encoding::Raw => Box::new(out),
                Encoding::Zstd => {
                    let mut enc = zstd::Encoder::new(out, level).map_err(io_at(&tmp_path))?;
                    if size_hint >= MULTITHREAD_COMPRESS_MIN {
                        mt_token = MtToken::take();
                    }
                    if mt_token.is_some() {
                        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                        enc.multithread(threads as u32).map_err(io_at(&tmp_path))?;
                        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(MT_JOB_SIZE))
                            .map_err(io_at(&tmp_path))?;
                    }
                    Box::new(enc.auto_finish())
                }
            };
            hasher.update(&probe);
            size += probe.len() as u64;
            sink.write_all(&probe).map_err(io_at(&tmp_path))?;
            let mut buf = vec![0u8; IO_BUF_LEN];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_at(origin)(e)),
                };
                hasher.update(&buf[..n]);
                size += n as u64;
                sink.write_all(&buf[..n]).map_err(io_at(&tmp_path))?;
            }
            sink.flush().map_err(io_at(&tmp_path))?;
        }
        drop(mt_token);
        let id = Id::from_hash(hasher.finalize());
        let stored_size = tmp.as_file().metadata().map_err(io_at(tmp.path()))?.len();
        Ok(PendingBlob {
            blob: StoredBlob {
                id,
                size,
                stored_size,
                encoding,
                pack: None,
            },
            place: Pending::File(tmp.into_temp_path()),
        })
    }

    /// Decides whether compression pays for a blob that starts with `probe` (its first
    /// [`PROBE_LEN`] bytes, or all of it): compresses the probe at [`PROBE_LEVEL`] (or the
    /// store's level, if lower) and returns the compressed probe if it pays. The decision depends
    /// only on the bytes, so every writer of a blob picks the same encoding.
    fn probe(&self, probe: &[u8]) -> Option<Vec<u8>> {
        if probe.len() < MIN_COMPRESS_LEN {
            return None;
        }
        let c = compress(probe, self.level.min(PROBE_LEVEL)).ok()?;
        (c.len() * 10 <= probe.len() * COMPRESS_IF_AT_MOST_TENTHS).then_some(c)
    }

    /// Finds the file holding `id`, and its encoding.
    pub fn locate(&self, id: &Id) -> Result<(File, Encoding, PathBuf), BlobError> {
        for enc in [Encoding::Zstd, Encoding::Raw] {
            let p = self.path(id, enc);
            match File::open(&p) {
                Ok(f) => return Ok((f, enc, p)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(&p)(e)),
            }
        }
        Err(BlobError::Missing(*id))
    }

    /// Finds the file holding `id`, trying `hint` (the encoding the index records) first, so a
    /// read costs one `open`.
    fn locate_hinted(
        &self,
        id: &Id,
        hint: Option<Encoding>,
    ) -> Result<(File, Encoding, PathBuf), BlobError> {
        if let Some(enc) = hint {
            let p = self.path(id, enc);
            match File::open(&p) {
                Ok(f) => return Ok((f, enc, p)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&p)(e)),
            }
        }
        self.locate(id)
    }

    /// Finds the stored bytes of `id`: at the pack slot `hint` names (read whole: packed blobs
    /// are small), or in the blob's own file (trying `hint`'s encoding first).
    fn find(&self, id: &Id, hint: Option<Placement>) -> Result<Found, BlobError> {
        if let Some(Placement {
            encoding,
            stored_size,
            pack: Some(slot),
        }) = hint
        {
            let path = self.pack_path(slot.pack);
            // Never trust a length beyond what a valid encoding of a small blob can take.
            let max = zstd::zstd_safe::compress_bound(SMALL_BLOB_MAX as usize) as u64;
            if stored_size > max {
                return Err(BlobError::Corrupt {
                    id: *id,
                    reason: format!("index records {stored_size} stored bytes in {}", slot.pack),
                });
            }
            return match self
                .pack_file(slot.pack, &path)
                .and_then(|f| crate::packs::read_at(&f, slot.offset, stored_size))
            {
                Ok(bytes) => Ok(Found::Packed(bytes, encoding)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::Missing(*id)),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(BlobError::Corrupt {
                    id: *id,
                    reason: format!("{}: {e}", path.display()),
                }),
                Err(e) => Err(io_at(&path)(e)),
            };
        }
        let (file, enc, path) = self.locate_hinted(id, hint.map(|h| h.encoding))?;
        Ok(Found::File(file, enc, path))
    }

    /// Pack `id` (at `path`) open for reading, from the cache or opened now.
    fn pack_file(&self, id: PackId, path: &Path) -> io::Result<std::sync::Arc<File>> {
        if let Some(f) = self.pack_files.lock().expect("not poisoned").get(&id) {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(File::open(path)?);
        let mut cache = self.pack_files.lock().expect("not poisoned");
        if cache.len() >= MAX_OPEN_PACKS {
            cache.clear();
        }
        cache.insert(id, f.clone());
        Ok(f)
    }

    /// A reader of blob `id`'s content that checks it against `id` (and `size`, when given) by
    /// the time it reports the end. `place` is where the index keeps it (`None`: look for its
    /// file). A small blob of known size is read and checked whole before the reader is
    /// returned.
    pub fn open(
        &self,
        id: &Id,
        size: Option<u64>,
        place: Option<Placement>,
    ) -> Result<VerifiedReader, BlobError> {
        if let Some(size) = size.filter(|s| *s <= SMALL_BLOB_MAX) {
            let content = self.read_small(id, size, place)?;
            return Ok(VerifiedReader::checked(*id, content));
        }
        let (raw, enc): (Box<dyn Read + Send>, Encoding) = match self.find(id, place)? {
            Found::File(file, enc, _) => {
                (Box::new(BufReader::with_capacity(IO_BUF_LEN, file)), enc)
            }
            Found::Packed(bytes, enc) => (Box::new(io::Cursor::new(bytes)), enc),
        };
        let inner: Box<dyn Read + Send> = match enc {
            Encoding::Raw => raw,
            Encoding::Zstd => Box::new(zstd::Decoder::with_buffer(BufReader::new(raw)).map_err(
                |e| BlobError::Corrupt {
                    id: *id,
                    reason: format!("bad zstd frame: {e}"),
                },
            )?),
        };
        Ok(VerifiedReader::new(*id, inner, size))
    }

    /// The stored bytes of a small blob and their encoding, after checking that they decode to
    /// `size` bytes hashing to `id` (so a zstd-stored blob can be shipped without recompressing).
    pub fn read_stored(
        &self,
        id: &Id,
        size: u64,
        place: Option<Placement>,
    ) -> Result<(Encoding, Vec<u8>), BlobError> {
        let (raw, enc) = self.read_raw(id, size, place)?;
        if enc == Encoding::Raw {
            check_content(id, size, &raw)?;
        } else {
            decode_checked(id, size, &raw)?;
        }
        Ok((enc, raw))
    }

    /// Reads the stored bytes of a blob of known small `size`, never more than a valid encoding
    /// of `size` bytes could take.
    fn read_raw(
        &self,
        id: &Id,
        size: u64,
        place: Option<Placement>,
    ) -> Result<(Vec<u8>, Encoding), BlobError> {
        match self.find(id, place)? {
            Found::Packed(bytes, enc) => Ok((bytes, enc)),
            Found::File(mut file, enc, path) => {
                let mut raw = Vec::with_capacity(size as usize + 1);
                let limit = zstd::zstd_safe::compress_bound(size as usize) as u64 + 1;
                (&mut file)
                    .take(limit.max(size + 1))
                    .read_to_end(&mut raw)
                    .map_err(io_at(&path))?;
                Ok((raw, enc))
            }
        }
    }

    /// Reads and checks a blob of known small `size` whole, with a reused zstd context.
    fn read_small(
        &self,
        id: &Id,
        size: u64,
        place: Option<Placement>,
    ) -> Result<Vec<u8>, BlobError> {
        let (raw, enc) = self.read_raw(id, size, place)?;
        match enc {
            Encoding::Raw => {
                check_content(id, size, &raw)?;
                Ok(raw)
            }
            Encoding::Zstd => decode_checked(id, size, &raw),
        }
    }

    /// Makes every blob written and persisted so far durable: packs holding persisted blobs get
    /// their final names, then one `syncfs` of the store's filesystem.
    pub fn sync(&self) -> io::Result<()> {
        self.packer.finish()?;
        let dir = File::open(&self.root)?;
        rustix::fs::syncfs(&dir)?;
        Ok(())
    }

    /// Deletes the files of `id` in any encoding; returns the bytes freed.
    pub fn remove(&self, id: &Id) -> io::Result<u64> {
        let mut freed = 0;
        for enc in [Encoding::Zstd, Encoding::Raw] {
            let p = self.path(id, enc);
            if let Ok(m) = fs::symlink_metadata(&p) {
                match fs::remove_file(&p) {
                    Ok(()) => freed += m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(freed)
    }

    /// Every blob file present, with its id, encoding and size on disk. Files whose names are
    /// not blob names are skipped.
    pub fn list(&self) -> io::Result<Vec<(Id, Encoding, u64)>> {
        Ok(self.list_with_temps()?.0)
    }

    /// [`BlobDir::list`], plus the leftover temp files (`.tmp-*`) in the fan-out folders.
    pub fn list_with_temps(&self) -> io::Result<(Vec<BlobFile>, Vec<PathBuf>)> {
        let mut out = Vec::new();
        let mut temps = Vec::new();
        for i in 0..=255u8 {
            let dir = self.root.join(format!("{i:02x}"));
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for ent in rd {
                let ent = ent?;
                let name = ent.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TEMP_PREFIX) {
                    temps.push(ent.path());
                    continue;
                }
                let (hex, enc) = match name.strip_suffix(".zst") {
                    Some(h) => (h, Encoding::Zstd),
                    None => (name, Encoding::Raw),
                };
                let Ok(id) = format!("{}{hex}", crate::id::ID_PREFIX).parse::<Id>() else {
                    continue;
                };
                out.push((id, enc, ent.metadata()?.len()));
            }
        }
        Ok((out, temps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl BlobDir {
        fn write_stream_test(
            &self,
            data: &[u8],
            size_hint: u64,
            origin: &Path,
        ) -> Result<PendingBlob, BlobError> {
            self.write(
                Source::Stream {
                    reader: Box::new(data),
                    size_hint,
                    origin,
                },
                None,
            )
        }

        fn read_verified_test(
            &self,
            id: &Id,
            size: Option<u64>,
            place: Option<Placement>,
            sink: &mut dyn Write,
        ) -> Result<u64, BlobError> {
            copy_verified(self.open(id, size, place)?, sink)
        }
    }

    fn dir() -> (tempfile::TempDir, BlobDir) {
        let t = tempfile::tempdir().unwrap();
        let b = BlobDir::at(
            t.path().join("blobs"),
            t.path().join("packs"),
            t.path().join("tmp"),
            3,
        )
        .unwrap();
        (t, b)
    }

    #[test]
    fn stores_compressible_and_random_and_reads_back() {
        let (_t, b) = dir();
        let text = b"hello world ".repeat(10_000);
        let s = b
            .write_stream_test(&text[..], 0, Path::new("text"))
            .unwrap()
            .persist(&b)
            .unwrap();
        assert_eq!(s.encoding, Encoding::Zstd);
        assert_eq!(s.id, Id::of(&text));
        let mut out = Vec::new();
        b.read_verified_test(&s.id, Some(text.len() as u64), None, &mut out)
            .unwrap();
        assert_eq!(out, text);

        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let s = b
            .write_stream_test(&noise[..], 0, Path::new("noise"))
            .unwrap()
            .persist(&b)
            .unwrap();
        assert_eq!(s.encoding, Encoding::Raw);
        let mut out = Vec::new();
        b.read_verified_test(&s.id, None, None, &mut out).unwrap();
        assert_eq!(out, noise);
    }

    #[test]
    fn small_and_streamed_writes_agree() {
        let (_t, b) = dir();
        for len in [0usize, 10, 100, 5000, 200_000, 2_000_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 / 3).collect();
            let small = b
                .write_stream_test(&data[..], len as u64, Path::new("s"))
                .unwrap()
                .persist(&b)
                .unwrap();
            let streamed = b
                .write_stream_test(&data[..], 0, Path::new("s"))
                .unwrap()
                .persist(&b)
                .unwrap();
            assert_eq!(small.id, streamed.id);
            assert_eq!(small.encoding, streamed.encoding, "len {len}");
            assert_eq!(small.id, Id::of(&data));
            b.sync().unwrap();
            let place = Some(small.placement());
            let mut out = Vec::new();
            b.read_verified_test(&small.id, Some(len as u64), place, &mut out)
                .unwrap();
            assert_eq!(out, data);
            // A wrong recorded size is corruption, on both read paths.
            assert!(
                b.read_verified_test(&small.id, Some(len as u64 + 1), place, &mut io::sink())
                    .is_err()
            );
        }
    }

    /// Where `s`'s stored bytes are: its own file, or its range of a pack (after a sync).
    fn stored_range(b: &BlobDir, s: &StoredBlob) -> (PathBuf, u64) {
        match s.pack {
            Some(slot) => (b.pack_path(slot.pack), slot.offset),
            None => (b.path(&s.id, s.encoding), 0),
        }
    }

    #[test]
    fn small_blobs_go_to_a_pack_that_is_named_at_sync() {
        let (t, b) = dir();
        let s = b
            .write_stream_test(&b"packed content"[..], 14, Path::new("x"))
            .unwrap()
            .persist(&b)
            .unwrap();
        let slot = s.pack.expect("a small blob is packed");
        assert!(!b.pack_path(slot.pack).exists(), "named before the sync");
        b.sync().unwrap();
        let entries = crate::packs::entries(&b.pack_path(slot.pack)).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].id, entries[0].offset), (s.id, slot.offset));
        let mut out = Vec::new();
        b.read_verified_test(&s.id, Some(14), Some(s.placement()), &mut out)
            .unwrap();
        assert_eq!(out, b"packed content");
        // A pack none of whose blobs is persisted leaves nothing behind.
        let dropped = b
            .write_stream_test(&b"never kept"[..], 10, Path::new("y"))
            .unwrap();
        let other = dropped.blob.pack.unwrap().pack;
        assert_eq!(other, slot.pack, "appended to the same open pack");
        drop(dropped);
        drop(b);
        let left: Vec<_> = fs::read_dir(t.path().join("packs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn corrupt_zstd_small_blob_is_detected() {
        let (_t, b) = dir();
        let text = b"abcabcabc".repeat(1000);
        let s = b
            .write_stream_test(&text[..], text.len() as u64, Path::new("t"))
            .unwrap()
            .persist(&b)
            .unwrap();
        b.sync().unwrap();
        assert_eq!(s.encoding, Encoding::Zstd);
        let (p, off) = stored_range(&b, &s);
        let mut bytes = fs::read(&p).unwrap();
        let mid = off as usize + s.stored_size as usize / 2;
        bytes[mid] ^= 0x40;
        fs::write(&p, &bytes).unwrap();
        let err = b
            .read_verified_test(
                &s.id,
                Some(text.len() as u64),
                Some(s.placement()),
                &mut io::sink(),
            )
            .unwrap_err();
        assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn detects_corruption_and_absence() {
        let (_t, b) = dir();
        for hint in [0, 17] {
            let s = b
                .write_stream_test(&b"some content here"[..], hint, Path::new("x"))
                .unwrap()
                .persist(&b)
                .unwrap();
            b.sync().unwrap();
            assert_eq!(s.pack.is_some(), hint > 0);
            let place = Some(s.placement());
            let (p, off) = stored_range(&b, &s);
            let mut bytes = fs::read(&p).unwrap();
            bytes[off as usize + 13..off as usize + 17].copy_from_slice(b"HERE");
            fs::write(&p, &bytes).unwrap();
            let err = b
                .read_verified_test(&s.id, None, place, &mut io::sink())
                .unwrap_err();
            assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
            // The small-blob path (size known) catches it too.
            let err = b
                .read_verified_test(&s.id, Some(17), place, &mut io::sink())
                .unwrap_err();
            assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
            // A pack cut short is corruption; a missing file or pack is absence.
            if off > 0 {
                fs::write(&p, &bytes[..off as usize + 5]).unwrap();
                let err = b
                    .read_verified_test(&s.id, Some(17), place, &mut io::sink())
                    .unwrap_err();
                assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
            }
            fs::remove_file(&p).unwrap();
            // A fresh handle: this one keeps the pack it read open (only gc deletes packs, and
            // never while another command runs).
            let b = BlobDir::at(b.root.clone(), b.packs().to_path_buf(), b.tmp.clone(), 3).unwrap();
            let err = b
                .read_verified_test(&s.id, None, place, &mut io::sink())
                .unwrap_err();
            assert!(matches!(err, BlobError::Missing(_)), "{err}");
        }
    }
}
