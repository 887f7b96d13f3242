//! Verified reads: every byte of a blob is checked against its id (and recorded size) before
//! a reader reports success.

use std::io::{self, Read, Write};

use super::BlobError;
use super::codec::decompress_exact;
use crate::id::Id;

/// Decompresses a zstd small blob and checks it against `id` and `size`.
pub(crate) fn decode_checked(id: &Id, size: u64, frame: &[u8]) -> Result<Vec<u8>, BlobError> {
    let content = decompress_exact(frame, size).map_err(|e| BlobError::Corrupt {
        id: *id,
        reason: format!("does not decompress to {size} bytes: {e}"),
    })?;
    check_content(id, size, &content)?;
    Ok(content)
}

/// Checks content (a raw blob's stored bytes, or a decoded frame) against `id` and `size`.
pub(crate) fn check_content(id: &Id, size: u64, content: &[u8]) -> Result<(), BlobError> {
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

/// Reads a blob's content, hashing it as it goes. At the end of the content it checks the hash
/// (and the expected size): a mismatch is an `InvalidData` error from `read`, and
/// [`VerifiedReader::into_error`] turns it into the typed [`BlobError`]. Until that final `read`
/// returns 0, the bytes handed out are unverified: consumers must be able to discard them.
pub struct VerifiedReader {
    id: Id,
    inner: Box<dyn Read + Send>,
    /// `None` for content checked before the reader was made.
    hasher: Option<blake3::Hasher>,
    size: u64,
    expect_size: Option<u64>,
    /// The content's size when known (recorded or already in memory): sizes copy buffers.
    len_hint: Option<u64>,
    failure: Option<BlobError>,
    done: bool,
}

impl VerifiedReader {
    /// Reads `inner`, the content of blob `id`, checking it as it goes.
    pub(crate) fn new(id: Id, inner: Box<dyn Read + Send>, expect_size: Option<u64>) -> Self {
        VerifiedReader {
            id,
            inner,
            hasher: Some(blake3::Hasher::new()),
            size: 0,
            expect_size,
            len_hint: expect_size,
            failure: None,
            done: false,
        }
    }

    /// Reads `content`, already checked against `id`.
    pub(crate) fn checked(id: Id, content: Vec<u8>) -> Self {
        let len_hint = Some(content.len() as u64);
        VerifiedReader {
            id,
            inner: Box::new(io::Cursor::new(content)),
            hasher: None,
            size: 0,
            expect_size: None,
            len_hint,
            failure: None,
            done: false,
        }
    }

    /// The blob being read.
    pub fn id(&self) -> Id {
        self.id
    }

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
        let Some(hasher) = &mut self.hasher else {
            // Checked before this reader was made.
            self.done = n == 0 && !buf.is_empty();
            return Ok(n);
        };
        if n == 0 {
            let got = Id::from_hash(hasher.finalize());
            if let Some(want) = self.expect_size
                && self.size != want
            {
                return Err(self.fail(format!("{} bytes where {want} were recorded", self.size)));
            }
            if got != self.id {
                return Err(self.fail(format!("content hashes to {got}")));
            }
            self.done = true;
            return Ok(0);
        }
        if n >= 128 * 1024 {
            hasher.update_rayon(&buf[..n]);
        } else {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        if let Some(max) = self.expect_size
            && self.size > max
        {
            return Err(self.fail(format!("longer than its recorded {max} bytes")));
        }
        Ok(n)
    }
}

/// Largest buffer [`copy_verified`] reads through.
const COPY_BUF_LEN: usize = 256 * 1024;

/// Copies what `reader` yields to `sink`, returning the content's size once it has been
/// verified in full. On [`BlobError::Corrupt`] the caller must discard what `sink` received;
/// a failed write to `sink` is [`BlobError::Sink`].
pub fn copy_verified(mut reader: VerifiedReader, sink: &mut dyn Write) -> Result<u64, BlobError> {
    // A buffer no larger than the content (plus the byte that sees its end): most blobs are
    // small, and zeroing a full-sized buffer for each one cost verify and get a fifth of their
    // CPU time on a tree of small files.
    let len = reader.len_hint.map_or(COPY_BUF_LEN, |n| {
        usize::try_from(n)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .min(COPY_BUF_LEN)
    });
    let mut buf = vec![0u8; len];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) => return Err(reader.into_error(e)),
        };
        sink.write_all(&buf[..n])
            .map_err(|source| BlobError::Sink {
                id: reader.id,
                source,
            })?;
        total += n as u64;
    }
}
