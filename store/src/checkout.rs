//! Checkout objects: a blob's content as a read-only file of its own under `checkouts/`, which
//! restores hardlink (or reflink) into their destination instead of writing the content again.
//!
//! One file per blob and *variant*: the metadata a hardlink shares with its object (permission
//! bits without write bits, owner, mtime; see [`Variant`]), at
//! `checkouts/<first two hex digits>/<64 hex digits>.<variant name>`. An object is made on first
//! use from the blob's stored copy (pack or blob file), hashed while it is written, given its
//! metadata, and only then published under its name (renamed into place: the name never holds a
//! partial object). Its `checkouts` row, recording its size, mtime and inode, is written only
//! after a `syncfs` made it durable. Until then (or after a crash) a file at that name is
//! trusted only after it has been read and hashed again.
//!
//! Objects are a cache: the packed copy stays the truth. A hardlinked file in a restored folder
//! shares its inode with the object, so writing through it in place changes the object (modes
//! stop everyone but root from doing so by accident; nothing stops root). Every use compares the
//! object's `lstat` (type, size, mtime, inode, mode, owner) with its row and replaces an object
//! that differs; `verify` re-hashes them all and forgets the ones that changed (which the next
//! use then re-checks and replaces); `gc` deletes them freely (`gc --checkouts`: all of them).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use crate::blobs::{BlobError, Placement, copy_verified};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::CheckoutRow;
use crate::store::Store;

/// The store's folder of checkout objects.
pub(crate) const CHECKOUTS_DIR: &str = "checkouts";

/// Name prefix of checkout objects being written (never an object name; gc deletes leftovers).
const TEMP_PREFIX: &str = ".tmp-";

/// Numbers the temp files of this process's checkout objects (names carry the process id too).
static TEMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Size of the buffer objects are written and re-hashed through.
const IO_BUF_LEN: usize = 256 * 1024;

/// The metadata a checkout object carries, which every hardlink to it shares: permission bits
/// (write bits always cleared: objects are read-only), owner and mtime. Named in the object's
/// file name as `<mode in octal>.<uid>.<gid>.<mtime seconds>.<nanoseconds>`: a normalized
/// tree's files need two variants per blob, `444.0.0.0.0` and `555.0.0.0.0` (as root; as
/// another user, with that user's ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    /// Permission bits, within 0o555.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl Variant {
    /// The file name suffix of this variant.
    pub(crate) fn name(&self) -> String {
        format!(
            "{:o}.{}.{}.{}.{}",
            self.mode, self.uid, self.gid, self.mtime, self.mtime_nsec
        )
    }

    /// Parses [`Variant::name`]; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Variant> {
        let mut it = s.split('.');
        let v = Variant {
            mode: u32::from_str_radix(it.next()?, 8).ok()?,
            uid: it.next()?.parse().ok()?,
            gid: it.next()?.parse().ok()?,
            mtime: it.next()?.parse().ok()?,
            mtime_nsec: it.next()?.parse().ok()?,
        };
        (it.next().is_none() && v.mode & !0o555 == 0 && v.mtime_nsec < 1_000_000_000 && {
            // Only the canonical spelling names a variant, so one variant has one file name.
            v.name() == s
        })
        .then_some(v)
    }

    /// Whether `st` shows a file with this variant's metadata and `size` bytes.
    fn matches(&self, st: &Stat, size: u64) -> bool {
        st.st_mode & 0o170000 == 0o100000
            && st.st_mode & 0o7777 == self.mode
            && st.st_uid == self.uid
            && st.st_gid == self.gid
            && st.st_size as u64 == size
            && st.st_mtime == self.mtime
            && st.st_mtime_nsec as u32 == self.mtime_nsec
    }
}

/// The `checkouts` row for an object whose `lstat` is `st`.
fn row_of(st: &Stat) -> CheckoutRow {
    (
        st.st_size as u64,
        st.st_mtime,
        st.st_mtime_nsec as u32,
        st.st_ino,
    )
}

/// A checkout object's name relative to `checkouts/`: `ab/<hex>.<variant>`.
pub(crate) fn rel_name(id: &Id, variant: &Variant) -> String {
    let hex = id.to_hex();
    format!("{}/{hex}.{}", &hex[..2], variant.name())
}

/// A file found under `checkouts/` by [`list`].
#[derive(Clone, Debug)]
pub(crate) enum Listed {
    /// A checkout object: its blob, variant, path, size and link count.
    Object {
        id: Id,
        variant: Variant,
        path: PathBuf,
        size: u64,
        nlink: u64,
    },
    /// Anything else (a leftover temp file, a stray name): gc deletes it.
    Other { path: PathBuf, size: u64 },
}

/// Every file under `root` (`STORE/checkouts`), classified. A missing folder lists nothing.
pub(crate) fn list(root: &Path) -> io::Result<Vec<Listed>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let top = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for fan in top {
        let fan = fan?;
        if !fan.file_type()?.is_dir() {
            out.push(Listed::Other {
                path: fan.path(),
                size: fan.metadata()?.len(),
            });
            continue;
        }
        for ent in std::fs::read_dir(fan.path())? {
            let ent = ent?;
            let md = match ent.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let path = ent.path();
            let parsed = ent.file_name().to_str().and_then(|name| {
                let (hex, variant) = name.split_once('.')?;
                let id = format!("{}{hex}", crate::id::ID_PREFIX)
                    .parse::<Id>()
                    .ok()?;
                let variant = Variant::parse(variant)?;
                (md.is_file() && fan.file_name().to_str() == Some(&hex[..2]))
                    .then_some((id, variant))
            });
            out.push(match parsed {
                Some((id, variant)) => Listed::Object {
                    id,
                    variant,
                    path,
                    size: md.len(),
                    nlink: md.nlink(),
                },
                None => Listed::Other {
                    path,
                    size: md.len(),
                },
            });
        }
    }
    Ok(out)
}

fn check_content(mut f: &File, id: &Id, size: u64) -> std::result::Result<(), String> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; IO_BUF_LEN];
    let mut n = 0u64;
    loop {
        let got = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        hasher.update(&buf[..got]);
        n += got as u64;
    }
    if n != size {
        return Err(format!("{n} bytes where the blob has {size}"));
    }
    let got = Id::from_hash(hasher.finalize());
    if got != *id {
        return Err(format!("content hashes to {got}"));
    }
    Ok(())
}

/// What [`check_object`] found.
pub(crate) enum Checked {
    /// The object is what its row says, and hashes to its blob: its size.
    Good(u64),
    /// No file (gc or a user deleted it): its row is stale.
    Gone,
    /// Modified: why.
    Bad(String),
}

/// Checks the recorded checkout object `variant` of blob `id` (`size` bytes) under `root`
/// against its row, its variant and its blob's hash (what `verify` does for each).
pub(crate) fn check_object(
    root: &Path,
    id: &Id,
    size: u64,
    variant: &str,
    row: &CheckoutRow,
) -> Checked {
    let Some(v) = Variant::parse(variant) else {
        return Checked::Bad(format!("the index records an invalid variant {variant:?}"));
    };
    let path = root.join(rel_name(id, &v));
    let fd = match rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Checked::Gone,
        Err(e) => return Checked::Bad(format!("{}: {e}", path.display())),
    };
    let st = match rustix::fs::fstat(&fd) {
        Ok(st) => st,
        Err(e) => return Checked::Bad(format!("{}: {e}", path.display())),
    };
    if row_of(&st) != *row || !v.matches(&st, size) {
        return Checked::Bad(format!(
            "{}: modified (its size, mtime, mode, owner or inode is not what was recorded)",
            path.display()
        ));
    }
    match check_content(&File::from(fd), id, size) {
        Ok(()) => Checked::Good(size),
        Err(reason) => Checked::Bad(format!("{}: {reason}", path.display())),
    }
}

/// The store's checkout folder as one restore uses it: objects are found, checked against
/// their rows, made when missing or modified, and the new ones recorded by [`Objects::record`].
pub(crate) struct Objects<'a> {
    store: &'a Store,
    root: PathBuf,
    /// `checkouts/`, opened once: links and clones name objects relative to it.
    pub(crate) dir: OwnedFd,
    /// The rows the index held for the blobs of this restore when it started.
    rows: HashMap<(Id, String), CheckoutRow>,
    /// Objects this restore made or checked that have no (valid) row yet.
    new_rows: Mutex<Vec<(Id, String, CheckoutRow)>>,
    /// Objects made by this restore.
    pub(crate) made: std::sync::atomic::AtomicU64,
}

impl<'a> Objects<'a> {
    /// Opens (creating it if needed) the checkout folder of `store` and loads the rows of the
    /// blobs in `ids`, in one read transaction.
    pub(crate) fn open(store: &'a Store, ids: impl IntoIterator<Item = Id>) -> Result<Objects<'a>> {
        let root = store.dir().join(CHECKOUTS_DIR);
        std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
        let dir = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(&root)(e.into()))?;
        let rows = store.index.read(|r| {
            let mut rows = HashMap::new();
            for id in ids {
                for (variant, row) in r.checkouts_of(&id)? {
                    rows.insert((id, variant), row);
                }
            }
            Ok(rows)
        })?;
        Ok(Objects {
            store,
            root,
            dir,
            rows,
            new_rows: Mutex::new(Vec::new()),
            made: Default::default(),
        })
    }

    /// The device of the checkout folder's filesystem.
    pub(crate) fn device(&self) -> Result<u64> {
        let st = rustix::fs::fstat(&self.dir).map_err(|e| Error::io(&self.root)(e.into()))?;
        Ok(st.st_dev)
    }

    /// `STORE/checkouts`.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn shown(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Makes sure checkout object `variant` of blob `id` (`size` bytes, kept at `place`) is in
    /// place, complete and verified, and returns its name relative to `checkouts/`. An object
    /// whose `lstat` matches its row is used as it is; one without a row is hashed first; a
    /// missing, modified or wrong one is made (again) from the blob's stored copy.
    pub(crate) fn ensure(
        &self,
        id: &Id,
        size: u64,
        variant: &Variant,
        place: Option<Placement>,
    ) -> Result<String> {
        let rel = rel_name(id, variant);
        let vname = variant.name();
        let recorded = self.rows.get(&(*id, vname.clone()));
        match rustix::fs::statat(&self.dir, rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                if let Some(row) = recorded {
                    if *row == row_of(&st) && variant.matches(&st, size) {
                        return Ok(rel);
                    }
                    tracing::info!(
                        "{}: checkout object was modified (its size, mtime, mode, owner or inode \
                         changed); replacing it from the stored copy",
                        self.shown(&rel).display()
                    );
                } else if self.adopt(id, size, variant, &rel)? {
                    return Ok(rel);
                }
                self.make(id, size, variant, place, &rel, true)?;
            }
            Err(Errno::NOENT) => {
                self.make_fanout(&rel)?;
                self.make(id, size, variant, place, &rel, false)?;
            }
            Err(e) => return Err(Error::io(&self.shown(&rel))(e.into())),
        }
        Ok(rel)
    }

    /// An object at `rel` that has no row (a crash, or another restore, left it): hashes it, and
    /// keeps it (to be recorded) if it is right. Returns whether it was kept.
    fn adopt(&self, id: &Id, size: u64, variant: &Variant, rel: &str) -> Result<bool> {
        let fd = match rustix::fs::openat(
            &self.dir,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP) => return Ok(false),
            Err(e) => return Err(Error::io(&self.shown(rel))(e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(&self.shown(rel))(e.into()))?;
        let file = File::from(fd);
        if !variant.matches(&st, size) || check_content(&file, id, size).is_err() {
            return Ok(false);
        }
        self.new_rows
            .lock()
            .expect("not poisoned")
            .push((*id, variant.name(), row_of(&st)));
        Ok(true)
    }

    /// Creates the fan-out folder of `rel` if it is missing.
    fn make_fanout(&self, rel: &str) -> Result<()> {
        let fan = &rel[..2];
        match rustix::fs::mkdirat(&self.dir, fan, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(Error::io(&self.shown(fan))(e.into())),
        }
    }

    /// Writes the object from the blob's stored copy into a temp file beside its name (hashed
    /// as it is written), gives it its metadata, and publishes it: over the old file when
    /// `replace`, else only if the name is still free (if another restore published it first,
    /// that one is checked and used instead).
    fn make(
        &self,
        id: &Id,
        size: u64,
        variant: &Variant,
        place: Option<Placement>,
        rel: &str,
        replace: bool,
    ) -> Result<()> {
        // A temp name of this process's own in the object's fan-out folder, created relative
        // to the `checkouts/` handle with the object's mode (a file opened for writing stays
        // writable through its descriptor), so no path is resolved and no chmod is needed.
        let (fd, tname) = loop {
            let seq = TEMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tname = format!("{}/{TEMP_PREFIX}{}-{seq}", &rel[..2], std::process::id());
            match rustix::fs::openat(
                &self.dir,
                tname.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(variant.mode),
            ) {
                Ok(fd) => break (fd, tname),
                // Left by a killed process that had this process id: take the next name.
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Error::io(&self.shown(&tname))(e.into())),
            }
        };
        let tshown = self.shown(&tname);
        let errno = |e: Errno| Error::io(&tshown)(e.into());
        let file = File::from(fd);
        let mut temp = TempName {
            dir: &self.dir,
            name: Some(tname.as_str()),
        };
        {
            let mut w = BufWriter::with_capacity(IO_BUF_LEN, &file);
            let n = self
                .store
                .blobs
                .open(id, Some(size), place)
                .and_then(|r| copy_verified(r, &mut w))?;
            w.flush()
                .map_err(|e| BlobError::Sink { id: *id, source: e })?;
            debug_assert_eq!(n, size);
        }
        let (euid, egid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        if (variant.uid, variant.gid) != (euid, egid) {
            rustix::fs::fchown(
                &file,
                Some(rustix::fs::Uid::from_raw(variant.uid)),
                Some(rustix::fs::Gid::from_raw(variant.gid)),
            )
            .map_err(errno)?;
        }
        let t = Timespec {
            tv_sec: variant.mtime,
            tv_nsec: variant.mtime_nsec as _,
        };
        rustix::fs::futimens(
            &file,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )
        .map_err(errno)?;
        let mut st = rustix::fs::fstat(&file).map_err(errno)?;
        if st.st_mode & 0o7777 != variant.mode {
            // The umask took bits away (or a chown cleared some): set them.
            rustix::fs::fchmod(&file, Mode::from_raw_mode(variant.mode)).map_err(errno)?;
            st = rustix::fs::fstat(&file).map_err(errno)?;
        }
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        match rustix::fs::renameat_with(&self.dir, tname.as_str(), &self.dir, rel, flags) {
            Ok(()) => temp.published(),
            Err(Errno::EXIST) => {
                // Another restore published it meanwhile (complete: names only ever hold
                // complete objects). Check it; if it is wrong, ours replaces it.
                if self.adopt(id, size, variant, rel)? {
                    return Ok(());
                }
                rustix::fs::renameat(&self.dir, tname.as_str(), &self.dir, rel)
                    .map_err(|e| Error::io(&self.shown(rel))(e.into()))?;
                temp.published();
            }
            Err(e) => return Err(Error::io(&self.shown(rel))(e.into())),
        }
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.new_rows
            .lock()
            .expect("not poisoned")
            .push((*id, variant.name(), row_of(&st)));
        Ok(())
    }

    /// Records the objects this restore made or checked: one `syncfs` (so each is durable
    /// before its row exists), then one write transaction. A crash before it leaves objects
    /// without rows, which the next use hashes before trusting.
    pub(crate) fn record(&self) -> Result<()> {
        let rows = std::mem::take(&mut *self.new_rows.lock().expect("not poisoned"));
        if rows.is_empty() {
            return Ok(());
        }
        rustix::fs::syncfs(&self.dir).map_err(|e| Error::io(&self.root)(e.into()))?;
        self.store.index.write(|w| {
            for (id, variant, row) in &rows {
                w.put_checkout(id, variant, *row)?;
            }
            Ok(())
        })
    }

    /// The folder's handle, for linking and cloning relative to it.
    pub(crate) fn fd(&self) -> impl AsFd + '_ {
        &self.dir
    }
}

/// A checkout object's temp file, deleted on drop unless it was published (renamed).
struct TempName<'d> {
    dir: &'d OwnedFd,
    name: Option<&'d str>,
}

impl TempName<'_> {
    fn published(&mut self) {
        self.name = None;
    }
}

impl Drop for TempName<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name {
            let _ = rustix::fs::unlinkat(self.dir, name, AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_round_trip_and_only_canonical_ones_parse() {
        for v in [
            Variant {
                mode: 0o444,
                uid: 0,
                gid: 0,
                mtime: 0,
                mtime_nsec: 0,
            },
            Variant {
                mode: 0o555,
                uid: 1000,
                gid: 100,
                mtime: -5,
                mtime_nsec: 999_999_999,
            },
        ] {
            assert_eq!(Variant::parse(&v.name()), Some(v));
        }
        for bad in [
            "",
            "444",
            "644.0.0.0.0",
            "0444.0.0.0.0",
            "444.0.0.0.0.0",
            "444.0.0.0.1000000000",
            "444.+1.0.0.0",
            "x.0.0.0.0",
        ] {
            assert_eq!(Variant::parse(bad), None, "{bad}");
        }
    }
}
