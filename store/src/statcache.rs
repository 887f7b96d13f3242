//! The stat cache: the blob id of each file an earlier `put`/`add` of the same folder hashed,
//! keyed by the file's path and inode metadata, so that re-ingesting a mostly unchanged folder
//! costs an `lstat` per unchanged file instead of a read and a hash (as git's index does).
//!
//! It is a cache, never a source of truth:
//! - An entry is used only if the file's device, inode, size, mtime and ctime (both to the
//!   nanosecond) all equal the recorded ones. ctime cannot be set by user space, and every
//!   write, truncate, rename-over or `utimes` moves it forward, so a file whose content changed
//!   since it was hashed fails the comparison.
//! - Racy timestamps (git's "racy clean" problem): a file modified in the same filesystem clock
//!   tick as the one its stat was taken in would keep its mtime and ctime. So an entry is
//!   recorded only if the file's mtime and ctime are older than the start of the scan that
//!   hashed it by more than [`RACY_MARGIN`]; any later change then gets a newer ctime. Files
//!   changed more recently are simply hashed again next time.
//! - The file carries a BLAKE3 checksum of its bytes; a torn, truncated or foreign file fails it
//!   and is ignored (everything is hashed), as is any other version or a file for another root.
//! - A blob named by an entry but no longer in the store (collected by gc) is stored again from
//!   the file, re-hashed as it is copied: a mismatch fails the put instead of storing content
//!   under the wrong id.
//!
//! Layout: `STORE/statcache/<first 32 hex digits of BLAKE3(canonical root path)>`, written to a
//! temp name in the same folder and renamed into place, not fsynced (losing it costs a rehash).
//! The byte format is in `docs/format.md`. Deleting the folder is always safe.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::id::Id;

/// File magic, then a little-endian `u32` version.
const MAGIC: &[u8; 16] = b"cairn-statcache\n";
/// Format version.
const VERSION: u32 = 1;
/// How much older than the scan's start a file's mtime and ctime must be for its entry to be
/// recorded. Generous against coarse filesystem clocks (jiffies, 2 s on FAT) and clock skew.
pub(crate) const RACY_MARGIN: Duration = Duration::from_secs(2);

/// The inode metadata an entry is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
}

impl Stat {
    /// The cache key of a file's `lstat`.
    pub(crate) fn of(md: &fs::Metadata) -> Stat {
        Stat {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            ctime: md.ctime(),
            ctime_nsec: md.ctime_nsec() as u32,
        }
    }

    /// Nanoseconds since the epoch of the later of mtime and ctime.
    fn newest_ns(&self) -> i128 {
        let m = self.mtime as i128 * 1_000_000_000 + self.mtime_nsec as i128;
        let c = self.ctime as i128 * 1_000_000_000 + self.ctime_nsec as i128;
        m.max(c)
    }
}

/// The stat cache of one ingest root, loaded from and saved to `STORE/statcache/`.
#[derive(Debug)]
pub(crate) struct StatCache {
    file: PathBuf,
    root: Vec<u8>,
    /// By [`path_key`] of the relative path.
    entries: HashMap<u128, (Stat, Id)>,
    /// Nanoseconds since the epoch at which this scan started.
    scan_start_ns: i128,
}

impl StatCache {
    /// Loads the cache for `root` (the path as given to put) from `dir`. Any problem (no file,
    /// bad checksum, other version, other root, unresolvable path) gives an empty cache, or
    /// `None` if the root cannot be canonicalized (then nothing is cached).
    pub(crate) fn load(dir: &Path, root: &Path) -> Option<StatCache> {
        let scan_start_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let canon = fs::canonicalize(root).ok()?;
        let root = canon.as_os_str().as_bytes().to_vec();
        let name = &blake3::hash(&root).to_hex()[..32];
        let file = dir.join(name);
        let entries = fs::read(&file)
            .ok()
            .and_then(|bytes| decode(&bytes, &root))
            .unwrap_or_default();
        Some(StatCache {
            file,
            root,
            entries,
            scan_start_ns,
        })
    }

    /// The recorded id of the file at `rel` (relative to the root, `/`-separated; empty for a
    /// single-file root) if its current `stat` equals the recorded one.
    pub(crate) fn lookup(&self, rel: &[u8], stat: &Stat) -> Option<Id> {
        match self.entries.get(&path_key(rel)) {
            Some((s, id)) if s == stat => Some(*id),
            _ => None,
        }
    }

    /// True if an entry for a file with this stat may be recorded (see the module doc).
    pub(crate) fn settled(&self, stat: &Stat) -> bool {
        stat.newest_ns() < self.scan_start_ns - RACY_MARGIN.as_nanos() as i128
    }

    /// Replaces the cache file with `entries` (relative path, stat, id), keeping only settled
    /// ones. Errors are logged and ignored: the cache is an optimization.
    pub(crate) fn save<'a>(&self, entries: impl Iterator<Item = (&'a [u8], Stat, Id)> + Clone) {
        if let Err(e) = self.write(entries) {
            tracing::debug!("{}: stat cache not saved: {e}", self.file.display());
        }
    }

    /// Streams the cache file to a temp file and renames it into place. Two passes over
    /// `entries` (the count comes first in the format), so the file is never built in memory:
    /// for a tree of 200,000 files that was 30-60 MB of peak memory.
    fn write<'a>(
        &self,
        entries: impl Iterator<Item = (&'a [u8], Stat, Id)> + Clone,
    ) -> std::io::Result<()> {
        let n = entries.clone().filter(|(_, s, _)| self.settled(s)).count() as u64;
        let dir = self.file.parent().expect("cache file has a folder");
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        {
            let mut out = Hashed {
                inner: std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut()),
                hasher: blake3::Hasher::new(),
            };
            out.write_all(MAGIC)?;
            out.write_all(&VERSION.to_le_bytes())?;
            out.write_all(&(self.root.len() as u32).to_le_bytes())?;
            out.write_all(&self.root)?;
            out.write_all(&n.to_le_bytes())?;
            for (rel, s, id) in entries {
                if !self.settled(&s) {
                    continue;
                }
                out.write_all(&(rel.len() as u32).to_le_bytes())?;
                out.write_all(rel)?;
                for v in [s.dev, s.ino, s.size] {
                    out.write_all(&v.to_le_bytes())?;
                }
                out.write_all(&s.mtime.to_le_bytes())?;
                out.write_all(&s.mtime_nsec.to_le_bytes())?;
                out.write_all(&s.ctime.to_le_bytes())?;
                out.write_all(&s.ctime_nsec.to_le_bytes())?;
                out.write_all(&id.0)?;
            }
            let sum = out.hasher.finalize();
            out.inner.write_all(sum.as_bytes())?;
            out.inner.flush()?;
        }
        tmp.persist(&self.file).map_err(|e| e.error)?;
        Ok(())
    }
}

/// A writer that also hashes what passes through it.
struct Hashed<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Fixed bytes of an entry after its path: dev, ino, size, mtime, mtime_nsec, ctime,
/// ctime_nsec, id.
const ENTRY_FIXED: usize = 8 + 8 + 8 + 8 + 4 + 8 + 4 + 32;

/// The in-memory key of a relative path: 128 bits of its BLAKE3 (a third of the memory of the
/// path itself, for trees of hundreds of thousands of files). A collision could not give a
/// wrong id: an entry is used only if dev and inode match too, that is for the same file.
fn path_key(rel: &[u8]) -> u128 {
    let h = blake3::hash(rel);
    u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"))
}

fn decode(bytes: &[u8], root: &[u8]) -> Option<HashMap<u128, (Stat, Id)>> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(16)? != MAGIC || r.u32()? != VERSION {
        return None;
    }
    let root_len = r.u32()? as usize;
    if r.take(root_len)? != root {
        return None;
    }
    let n = r.u64()?;
    let mut out = HashMap::with_capacity(n.min(body.len() as u64 / ENTRY_FIXED as u64) as usize);
    for _ in 0..n {
        let len = r.u32()? as usize;
        let rel = path_key(r.take(len)?);
        let stat = Stat {
            dev: r.u64()?,
            ino: r.u64()?,
            size: r.u64()?,
            mtime: r.u64()? as i64,
            mtime_nsec: r.u32()?,
            ctime: r.u64()? as i64,
            ctime_nsec: r.u32()?,
        };
        let id = Id(r.take(32)?.try_into().ok()?);
        out.insert(rel, (stat, id));
    }
    r.0.is_empty().then_some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_changes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("in");
        fs::create_dir(&root).unwrap();
        let f = root.join("a");
        fs::write(&f, b"x").unwrap();
        let stat = Stat::of(&fs::symlink_metadata(&f).unwrap());
        let cache_dir = t.path().join("statcache");
        let mut c = StatCache::load(&cache_dir, &root).unwrap();
        // Just written: racy, not recorded.
        assert!(!c.settled(&stat));
        c.scan_start_ns += 10 * 1_000_000_000;
        assert!(c.settled(&stat));
        let id = Id::of(b"x");
        c.save([(&b"a"[..], stat, id)].into_iter());
        let c2 = StatCache::load(&cache_dir, &root).unwrap();
        assert_eq!(c2.lookup(b"a", &stat), Some(id));
        let mut other = stat;
        other.ctime_nsec ^= 1;
        assert_eq!(c2.lookup(b"a", &other), None);
        assert_eq!(c2.lookup(b"b", &stat), None);
        // A damaged file is ignored.
        let mut bytes = fs::read(&c2.file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&c2.file, &bytes).unwrap();
        let c3 = StatCache::load(&cache_dir, &root).unwrap();
        assert_eq!(c3.lookup(b"a", &stat), None);
    }
}
