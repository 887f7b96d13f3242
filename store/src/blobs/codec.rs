//! Compression of stored blobs: the raw-or-zstd decision (made from a blob's first bytes, so
//! every writer of a blob picks the same encoding), per-thread zstd contexts, and the one
//! multithreaded compression allowed at a time.

use std::io;

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
pub(crate) const MT_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// Below this size compression is never tried (a zstd frame's overhead would eat any gain).
pub(crate) const MIN_COMPRESS_LEN: usize = 64;

/// Permission to run one multithreaded zstd compression (its workers and buffers take tens of
/// MB; with one per rayon thread, peak memory would grow with the core count).
pub(crate) struct MtToken;

static MT_BUSY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl MtToken {
    pub(crate) fn take() -> Option<MtToken> {
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
pub(crate) fn compress_small(content: &[u8], level: i32) -> io::Result<Option<Vec<u8>>> {
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
pub(crate) fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
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
