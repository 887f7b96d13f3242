//! Hashing files without storing them, in bounded memory.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use crate::id::Id;

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
