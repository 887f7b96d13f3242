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

use crate::id::Id;
use crate::packs::{OpenPack, PackId, PackSlot, Packer};

/// Bytes read from the start of a blob to decide whether compressing it pays.
pub const PROBE_LEN: usize = 128 * 1024;

/// Compression must shrink the probe to at most this many tenths of its size to be used.
pub const COMPRESS_IF_AT_MOST_TENTHS: usize = 9;

/// zstd level of the compression probe (capped by the store's level).
pub const PROBE_LEVEL: i32 = 3;

/// Files at least this large are compressed with zstd's worker threads as well.
pub const MULTITHREAD_COMPRESS_MIN: u64 = 32 * 1024 * 1024;

/// Bytes per job of a multithreaded compression. zstd's default at level 3 (8 MiB) keeps
/// several jobs' input and output buffers alive at once (about 60 MB with two workers); 2 MiB
/// jobs keep two cores just as busy with about a quarter of that.
const MT_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// Blobs up to this size are compressed and decompressed whole in memory, with a per-thread
/// reusable zstd context; larger ones stream.
pub const SMALL_BLOB_MAX: u64 = 1024 * 1024;

/// Below this size compression is never tried (a zstd frame's overhead would eat any gain).
const MIN_COMPRESS_LEN: usize = 64;

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

/// Decompresses a zstd small blob and checks it against `id` and `size`.
fn decode_checked(id: &Id, size: u64, frame: &[u8]) -> Result<Vec<u8>, BlobError> {
    let content = decompress_exact(frame, size).map_err(|e| BlobError::Corrupt {
        id: *id,
        reason: format!("does not decompress to {size} bytes: {e}"),
    })?;
    check_content(id, size, &content)?;
    Ok(content)
}

/// Checks content (a raw blob's stored bytes, or a decoded frame) against `id` and `size`.
fn check_content(id: &Id, size: u64, content: &[u8]) -> Result<(), BlobError> {
    let corrupt = |reason: String| BlobError::Corrupt { id: *id, reason };
    if content.len() as u64 != size {
        return Err(corrupt(format!(
            "{} bytes where {size} were recorded",
            content.len()
        )));
    }
    let got = Id::of(content);
    if got != *id {
        return Err(corrupt(format!("content hashes to {got}")));
    }
    Ok(())
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
    pub fn open(root: PathBuf, packs: PathBuf, tmp: PathBuf, level: i32) -> io::Result<BlobDir> {
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

    /// Stores the file at `src`, which was hashed to `expect` beforehand. The content is hashed
    /// again as it is copied, so a file that changed in between is an error, never a blob under
    /// the wrong id.
    pub fn write_file(&self, src: &Path, expect: Id) -> Result<StoredBlob, BlobError> {
        let len = fs::metadata(src).map_err(io_at(src))?.len();
        self.write_file_sized(src, expect, len)
    }

    /// [`BlobDir::write_file`] for a file whose length the caller has just read (it only picks
    /// the strategy: the content is hashed and checked whatever its length turns out to be).
    pub fn write_file_sized(
        &self,
        src: &Path,
        expect: Id,
        len: u64,
    ) -> Result<StoredBlob, BlobError> {
        let file = File::open(src).map_err(io_at(src))?;
        let pending = self.write_reader(file, len, src, self.level)?;
        if pending.blob.id != expect {
            // Dropping the pending blob deletes its temp file.
            return Err(BlobError::Changed {
                path: src.to_path_buf(),
            });
        }
        pending.persist(self)
    }

    /// The zstd level blobs are compressed at.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Writes whatever `reader` yields (for example an archive member) to a temp file and
    /// returns it as a [`PendingBlob`]: the caller persists it, or drops it if the store already
    /// has that blob (a present blob is never rewritten). `origin` names the source in errors.
    /// `size_hint` is the expected length (0 if unknown); it only picks the strategy.
    pub fn write_stream(
        &self,
        reader: impl Read,
        size_hint: u64,
        origin: &Path,
    ) -> Result<PendingBlob, BlobError> {
        self.write_reader(reader, size_hint, origin, self.level)
    }

    /// [`BlobDir::write_stream`] compressing at `level` instead of the store's level (the
    /// raw-or-zstd decision is the same: it is made at the store's level). For derived data that
    /// is written often and read back soon, such as decomposed image layers.
    pub fn write_stream_at(
        &self,
        reader: impl Read,
        size_hint: u64,
        origin: &Path,
        level: i32,
    ) -> Result<PendingBlob, BlobError> {
        self.write_reader(reader, size_hint, origin, level)
    }

    fn write_reader(
        &self,
        mut reader: impl Read,
        size_hint: u64,
        origin: &Path,
        level: i32,
    ) -> Result<PendingBlob, BlobError> {
        if size_hint > 0 && size_hint <= SMALL_BLOB_MAX {
            let mut buf = Vec::with_capacity(size_hint as usize + 1);
            (&mut reader)
                .take(SMALL_BLOB_MAX + 1)
                .read_to_end(&mut buf)
                .map_err(io_at(origin))?;
            if buf.len() as u64 <= SMALL_BLOB_MAX {
                return self.write_small(buf, level);
            }
            // It grew past the small limit while we read it: stream what we have and the rest.
            return self.write_streaming(
                io::Cursor::new(buf).chain(reader),
                size_hint,
                origin,
                level,
            );
        }
        self.write_streaming(reader, size_hint, origin, level)
    }

    /// Stores a blob held in memory: one compression with a reused context, one write.
    fn write_small(&self, content: Vec<u8>, level: i32) -> Result<PendingBlob, BlobError> {
        let id = Id::of(&content);
        self.write_small_hashed(id, content, level)
    }

    /// Stores a small blob (at most [`SMALL_BLOB_MAX`] bytes) held in memory whose id the caller
    /// has just computed from exactly these bytes (so it is not hashed again).
    pub fn write_content(&self, id: Id, content: Vec<u8>) -> Result<PendingBlob, BlobError> {
        self.write_content_at(id, content, self.level)
    }

    /// [`BlobDir::write_content`] at zstd level `level` (see [`BlobDir::write_stream_at`]).
    pub fn write_content_at(
        &self,
        id: Id,
        content: Vec<u8>,
        level: i32,
    ) -> Result<PendingBlob, BlobError> {
        debug_assert!(content.len() as u64 <= SMALL_BLOB_MAX);
        self.write_small_hashed(id, content, level)
    }

    fn write_small_hashed(
        &self,
        id: Id,
        content: Vec<u8>,
        level: i32,
    ) -> Result<PendingBlob, BlobError> {
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
    pub fn locate_hinted(
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

    /// Opens `id` for reading through a [`VerifiedReader`].
    pub fn open_verified(
        &self,
        id: &Id,
        expect_size: Option<u64>,
    ) -> Result<VerifiedReader, BlobError> {
        self.open_verified_hinted(id, expect_size, None)
    }

    /// [`BlobDir::open_verified`] at the place the index records (`hint`).
    pub fn open_verified_hinted(
        &self,
        id: &Id,
        expect_size: Option<u64>,
        hint: Option<Placement>,
    ) -> Result<VerifiedReader, BlobError> {
        let (raw, enc): (Box<dyn Read + Send>, Encoding) = match self.find(id, hint)? {
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
        Ok(VerifiedReader {
            id: *id,
            inner,
            hasher: blake3::Hasher::new(),
            size: 0,
            expect_size,
            failure: None,
            done: false,
        })
    }

    /// Streams the content of `id` into `sink`, hashing it on the way. Returns the size. If the
    /// content does not hash to `id`, or is not `expect_size` bytes when that is given, the
    /// result is [`BlobError::Corrupt`]: the caller must then discard what `sink` received.
    pub fn read_verified(
        &self,
        id: &Id,
        expect_size: Option<u64>,
        sink: &mut dyn Write,
    ) -> Result<u64, BlobError> {
        self.read_verified_hinted(id, expect_size, None, sink)
    }

    /// [`BlobDir::read_verified`] at the place the index records (`hint`).
    pub fn read_verified_hinted(
        &self,
        id: &Id,
        expect_size: Option<u64>,
        hint: Option<Placement>,
        sink: &mut dyn Write,
    ) -> Result<u64, BlobError> {
        if let Some(size) = expect_size.filter(|s| *s <= SMALL_BLOB_MAX) {
            let content = self.read_small(id, size, hint)?;
            sink.write_all(&content)
                .map_err(|source| BlobError::Sink { id: *id, source })?;
            return Ok(size);
        }
        let mut reader = self.open_verified_hinted(id, expect_size, hint)?;
        let mut buf = vec![0u8; IO_BUF_LEN];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(reader.size),
                Ok(n) => n,
                Err(e) => return Err(reader.into_error(e)),
            };
            sink.write_all(&buf[..n])
                .map_err(|source| BlobError::Sink { id: *id, source })?;
        }
    }

    /// The stored bytes of a small blob and their encoding, after checking that they decode to
    /// `size` bytes hashing to `id` (so a zstd-stored blob can be shipped without recompressing).
    pub fn read_encoded(
        &self,
        id: &Id,
        size: u64,
        hint: Option<Placement>,
    ) -> Result<(Encoding, Vec<u8>), BlobError> {
        let (raw, enc) = self.read_stored(id, size, hint)?;
        if enc == Encoding::Raw {
            check_content(id, size, &raw)?;
        } else {
            decode_checked(id, size, &raw)?;
        }
        Ok((enc, raw))
    }

    /// Writes a blob whose content the caller has already checked against `id`, in the given
    /// stored form: appended to a pack if it is small, else to a temp file.
    pub fn write_encoded(
        &self,
        id: Id,
        size: u64,
        encoding: Encoding,
        bytes: &[u8],
    ) -> Result<PendingBlob, BlobError> {
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

    /// Reads the stored bytes of a blob of known small `size`, never more than a valid encoding
    /// of `size` bytes could take.
    fn read_stored(
        &self,
        id: &Id,
        size: u64,
        hint: Option<Placement>,
    ) -> Result<(Vec<u8>, Encoding), BlobError> {
        match self.find(id, hint)? {
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
        hint: Option<Placement>,
    ) -> Result<Vec<u8>, BlobError> {
        let (raw, enc) = self.read_stored(id, size, hint)?;
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

/// Reads a blob's content, hashing it as it goes. At the end of the content it checks the hash
/// (and the expected size): a mismatch is an `InvalidData` error from `read`, and
/// [`VerifiedReader::into_error`] turns it into the typed [`BlobError`]. Until that final `read`
/// returns 0, the bytes handed out are unverified: consumers must be able to discard them.
pub struct VerifiedReader {
    id: Id,
    inner: Box<dyn Read + Send>,
    hasher: blake3::Hasher,
    size: u64,
    expect_size: Option<u64>,
    failure: Option<BlobError>,
    done: bool,
}

impl VerifiedReader {
    fn fail(&mut self, reason: String) -> io::Error {
        let err = BlobError::Corrupt {
            id: self.id,
            reason,
        };
        let io = io::Error::new(io::ErrorKind::InvalidData, err.to_string());
        self.failure = Some(err);
        io
    }

    /// The typed error behind an `io::Error` this reader returned.
    pub fn into_error(mut self, e: io::Error) -> BlobError {
        self.failure.take().unwrap_or(BlobError::Corrupt {
            id: self.id,
            reason: format!("unreadable: {e}"),
        })
    }
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(format!("unreadable: {e}"))),
            }
        };
        if n == 0 {
            if let Some(want) = self.expect_size
                && self.size != want
            {
                return Err(self.fail(format!("{} bytes where {want} were recorded", self.size)));
            }
            let got = Id::from_hash(self.hasher.finalize());
            if got != self.id {
                return Err(self.fail(format!("content hashes to {got}")));
            }
            self.done = true;
            return Ok(0);
        }
        self.size += n as u64;
        if let Some(max) = self.expect_size
            && self.size > max
        {
            return Err(self.fail(format!("longer than its recorded {max} bytes")));
        }
        if n >= 128 * 1024 {
            self.hasher.update_rayon(&buf[..n]);
        } else {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Permission to run one multithreaded zstd compression (its workers and buffers take tens of
/// MB; with one per rayon thread, peak memory would grow with the core count).
struct MtToken;

static MT_BUSY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl MtToken {
    fn take() -> Option<MtToken> {
        use std::sync::atomic::Ordering;
        MT_BUSY
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(MtToken)
    }
}

impl Drop for MtToken {
    fn drop(&mut self) {
        MT_BUSY.store(false, std::sync::atomic::Ordering::Release);
    }
}

thread_local! {
    /// One zstd compression context per thread and level, reused across blobs (creating a
    /// context costs more than compressing a small file).
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// One zstd streaming compression context per thread, for [`compress_small`].
    static STREAM_COMPRESSOR: std::cell::RefCell<Option<zstd::zstd_safe::CCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// One zstd decompression context per thread.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses a small blob held in memory into one zstd frame at `level`, in one pass: the
/// frame is flushed after the first [`PROBE_LEN`] bytes, and if those did not shrink to at most
/// [`COMPRESS_IF_AT_MOST_TENTHS`] tenths, compression stops and `None` says "store it raw". (A
/// separate probe compressed those bytes twice: 8% of all compression work on a typical tree.)
fn compress_small(content: &[u8], level: i32) -> io::Result<Option<Vec<u8>>> {
    use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::{ZSTD_e_end, ZSTD_e_flush};
    use zstd::zstd_safe::{self, CParameter, InBuffer, OutBuffer, ResetDirective};
    if content.len() < MIN_COMPRESS_LEN {
        return Ok(None);
    }
    let zerr = |code: usize| io::Error::other(zstd_safe::get_error_name(code));
    STREAM_COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let cctx = c.get_or_insert_with(zstd_safe::CCtx::create);
        cctx.reset(ResetDirective::SessionOnly).map_err(zerr)?;
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .map_err(zerr)?;
        cctx.set_pledged_src_size(Some(content.len() as u64))
            .map_err(zerr)?;
        let mut out: Vec<u8> = Vec::with_capacity(zstd_safe::compress_bound(content.len()));
        let mut output = OutBuffer::around(&mut out);
        let probe_len = content.len().min(PROBE_LEN);
        let parts: [(&[u8], _); 2] = [
            (
                &content[..probe_len],
                if probe_len == content.len() {
                    ZSTD_e_end
                } else {
                    ZSTD_e_flush
                },
            ),
            (&content[probe_len..], ZSTD_e_end),
        ];
        for (n, (part, directive)) in parts.into_iter().enumerate() {
            let mut input = InBuffer::around(part);
            loop {
                let left = cctx
                    .compress_stream2(&mut output, &mut input, directive)
                    .map_err(zerr)?;
                if left == 0 && input.pos == part.len() {
                    break;
                }
            }
            if n == 0 {
                if output.pos() * 10 > probe_len * COMPRESS_IF_AT_MOST_TENTHS {
                    return Ok(None);
                }
                if probe_len == content.len() {
                    break;
                }
            }
        }
        Ok(Some(out))
    })
}

/// Compresses `data` into one zstd frame at `level`, with this thread's context for that level.
fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    COMPRESSORS.with(|c| {
        let mut c = c.borrow_mut();
        let i = match c.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                c.push((level, zstd::bulk::Compressor::new(level)?));
                c.len() - 1
            }
        };
        c[i].1.compress(data)
    })
}

/// Decompresses one zstd frame that must hold at most `size` bytes, with this thread's context.
pub fn decompress_exact(frame: &[u8], size: u64) -> io::Result<Vec<u8>> {
    let out = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let d = match &mut *d {
            Some(d) => d,
            None => d.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(frame, size as usize)
    })?;
    if out.len() as u64 != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes where {size} were expected", out.len()),
        ));
    }
    Ok(out)
}

/// Compresses `data` as the store would (one zstd frame at `level`), with this thread's context.
pub fn compress_frame(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    compress(data, level)
}

/// Hashes the file at `path` without storing it; returns its id and length.
pub fn hash_file(path: &Path) -> io::Result<(Id, u64)> {
    let len = fs::metadata(path)?.len();
    hash_file_sized(path, len)
}

/// Files at least this large are hashed in chunks of this size with BLAKE3's multithreaded
/// mode; smaller ones are read whole.
const HASH_CHUNK: usize = 1024 * 1024;

thread_local! {
    /// A reused read buffer per thread for hashing.
    static HASH_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`hash_file`] for a file whose length `len_hint` the caller has just read (it only sizes the
/// reads). The file is read with plain `read`s into a fixed per-thread buffer: no memory map, so
/// the process's resident memory does not grow with the file (a mapped file's touched pages
/// count as its RSS).
pub fn hash_file_sized(path: &Path, len_hint: u64) -> io::Result<(Id, u64)> {
    let mut file = File::open(path)?;
    HASH_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let want = if len_hint < HASH_CHUNK as u64 {
            len_hint as usize + 1
        } else {
            HASH_CHUNK
        };
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        loop {
            // Fill the buffer (a short read is not the end of the file).
            let mut filled = 0;
            while filled < want {
                match file.read(&mut buf[filled..want]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled >= 128 * 1024 {
                hasher.update_rayon(&buf[..filled]);
            } else {
                hasher.update(&buf[..filled]);
            }
            total += filled as u64;
            if filled < want {
                break;
            }
        }
        Ok((Id::from_hash(hasher.finalize()), total))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, BlobDir) {
        let t = tempfile::tempdir().unwrap();
        let b = BlobDir::open(
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
            .write_stream(&text[..], 0, Path::new("text"))
            .unwrap()
            .persist(&b)
            .unwrap();
        assert_eq!(s.encoding, Encoding::Zstd);
        assert_eq!(s.id, Id::of(&text));
        let mut out = Vec::new();
        b.read_verified(&s.id, Some(text.len() as u64), &mut out)
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
            .write_stream(&noise[..], 0, Path::new("noise"))
            .unwrap()
            .persist(&b)
            .unwrap();
        assert_eq!(s.encoding, Encoding::Raw);
        let mut out = Vec::new();
        b.read_verified(&s.id, None, &mut out).unwrap();
        assert_eq!(out, noise);
    }

    #[test]
    fn small_and_streamed_writes_agree() {
        let (_t, b) = dir();
        for len in [0usize, 10, 100, 5000, 200_000, 2_000_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 / 3).collect();
            let small = b
                .write_stream(&data[..], len as u64, Path::new("s"))
                .unwrap()
                .persist(&b)
                .unwrap();
            let streamed = b
                .write_stream(&data[..], 0, Path::new("s"))
                .unwrap()
                .persist(&b)
                .unwrap();
            assert_eq!(small.id, streamed.id);
            assert_eq!(small.encoding, streamed.encoding, "len {len}");
            assert_eq!(small.id, Id::of(&data));
            b.sync().unwrap();
            let place = Some(small.placement());
            let mut out = Vec::new();
            b.read_verified_hinted(&small.id, Some(len as u64), place, &mut out)
                .unwrap();
            assert_eq!(out, data);
            // A wrong recorded size is corruption, on both read paths.
            assert!(
                b.read_verified_hinted(&small.id, Some(len as u64 + 1), place, &mut io::sink())
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
            .write_stream(&b"packed content"[..], 14, Path::new("x"))
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
        b.read_verified_hinted(&s.id, Some(14), Some(s.placement()), &mut out)
            .unwrap();
        assert_eq!(out, b"packed content");
        // A pack none of whose blobs is persisted leaves nothing behind.
        let dropped = b
            .write_stream(&b"never kept"[..], 10, Path::new("y"))
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
            .write_stream(&text[..], text.len() as u64, Path::new("t"))
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
            .read_verified_hinted(
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
                .write_stream(&b"some content here"[..], hint, Path::new("x"))
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
                .read_verified_hinted(&s.id, None, place, &mut io::sink())
                .unwrap_err();
            assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
            // The small-blob path (size known) catches it too.
            let err = b
                .read_verified_hinted(&s.id, Some(17), place, &mut io::sink())
                .unwrap_err();
            assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
            // A pack cut short is corruption; a missing file or pack is absence.
            if off > 0 {
                fs::write(&p, &bytes[..off as usize + 5]).unwrap();
                let err = b
                    .read_verified_hinted(&s.id, Some(17), place, &mut io::sink())
                    .unwrap_err();
                assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
            }
            fs::remove_file(&p).unwrap();
            // A fresh handle: this one keeps the pack it read open (only gc deletes packs, and
            // never while another command runs).
            let b =
                BlobDir::open(b.root.clone(), b.packs().to_path_buf(), b.tmp.clone(), 3).unwrap();
            let err = b
                .read_verified_hinted(&s.id, None, place, &mut io::sink())
                .unwrap_err();
            assert!(matches!(err, BlobError::Missing(_)), "{err}");
        }
    }
}
