//! Reading tar streams: picking a decompressor by magic bytes, and noticing a stream that ends
//! before the tar parser is done with it (a truncated archive).

use std::cell::Cell;
use std::io::{self, BufRead, Read};
use std::rc::Rc;

/// First bytes of a gzip member.
pub const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// First bytes of a zstd frame.
pub const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// `r` behind the decompressor its first bytes call for: gzip (every member, so a multi-member
/// file reads whole), zstd (every frame), or none.
pub fn decompressed<'a>(mut r: impl BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Notes whether the reader below a tar parser ran dry: the tar crate reports a stream that
/// ends without its end-of-archive marker as a normal end, so the caller checks [`EofWatch::hit`]
/// afterwards.
pub struct EofWatch<R> {
    inner: R,
    hit: Rc<Cell<bool>>,
}

impl<R> EofWatch<R> {
    /// Watches `inner`; the flag turns true once a read of it returns 0.
    pub fn new(inner: R) -> (EofWatch<R>, Rc<Cell<bool>>) {
        let hit = Rc::new(Cell::new(false));
        (
            EofWatch {
                inner,
                hit: hit.clone(),
            },
            hit,
        )
    }

    /// The watched reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
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
