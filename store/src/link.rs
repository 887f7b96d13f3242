//! Link modes of a restore: each regular file is cloned from a checkout object (`FICLONE`, a
//! private copy sharing the object's extents), hardlinked to one, or copied, and the fallbacks
//! between them. The objects themselves are `checkout`'s job; the file writes are
//! `materialize`'s.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::blobs::Placement;
use crate::checkout::{Objects, Variant};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::tree::{EntryKind, Meta, Tree};

/// How a restore makes regular files (`cairn get --link=MODE`, `oci extract --link=MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// Write every file's content (the default).
    #[default]
    Copy,
    /// Reflink where DEST's filesystem can, else hardlink, else copy.
    Auto,
    /// Reflink every file from a checkout object (an error where the filesystem cannot).
    Reflink,
    /// Hardlink files to read-only checkout objects where their metadata allows; copy the rest.
    Hardlink,
}

impl std::str::FromStr for LinkMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<LinkMode, String> {
        match s {
            "copy" => Ok(LinkMode::Copy),
            "auto" => Ok(LinkMode::Auto),
            "reflink" => Ok(LinkMode::Reflink),
            "hardlink" => Ok(LinkMode::Hardlink),
            _ => Err(format!(
                "invalid link mode {s:?}: expected auto, reflink, hardlink or copy"
            )),
        }
    }
}

/// What a restore does at a given moment: it only ever moves down this list (reflink turns out
/// unsupported, DEST turns out to be on another filesystem).
const CLONE: u8 = 0;
const LINK: u8 = 1;
const COPY: u8 = 2;

/// How one file was placed.
pub(crate) enum Placed {
    /// Hardlinked to its checkout object: nothing more to do.
    Linked,
    /// Cloned into this new file, whose metadata the caller sets as for a copy.
    Cloned(File),
    /// Not placed: the caller copies it.
    Copy,
}

/// One restore's linking: the checkout objects, the current mode, and which blobs may be
/// hardlinked.
pub(crate) struct Linker<'a> {
    objects: Objects<'a>,
    state: AtomicU8,
    /// `--link=reflink`: a filesystem without reflinks is an error, not a fallback.
    forced_clone: bool,
    /// Objects this restore uses, each made or checked once (the first file that needs it
    /// does that; others needing it at the same time wait).
    cells: HashMap<(Id, Variant), OnceLock<Option<String>>>,
    /// Blobs whose files must be copied in hardlink mode: their paths disagree on owner or
    /// mtime, or carry xattrs or setuid/setgid/sticky bits.
    copy_only: HashSet<Id>,
    /// The owner a restored file gets: the entry's as root, else the restoring user's.
    as_root: bool,
    user: (u32, u32),
    said_exdev: AtomicBool,
    pub(crate) linked: AtomicU64,
    pub(crate) cloned: AtomicU64,
}

impl<'a> Linker<'a> {
    /// Prepares `mode` for restoring the trees `trees` into the folder `dest_fd` (`dest` names
    /// it). Returns `None` when nothing will be linked: mode `copy`, or DEST on another
    /// filesystem than the store (said once, as an info line).
    pub(crate) fn new(
        store: &'a crate::store::Store,
        mode: LinkMode,
        trees: &HashMap<Id, Tree>,
        dest_fd: impl AsFd,
        dest: &Path,
        as_root: bool,
        default_owner: Option<(u32, u32)>,
    ) -> Result<Option<Linker<'a>>> {
        let state = match mode {
            LinkMode::Copy => return Ok(None),
            LinkMode::Auto | LinkMode::Reflink => CLONE,
            LinkMode::Hardlink => LINK,
        };
        let user = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        if !as_root && default_owner.is_none() {
            // DEST is setgid: a copy takes its group, a hardlink would keep the object's.
            tracing::info!(
                "{}: setgid folder, so files are copied, not linked",
                dest.display()
            );
            return Ok(None);
        }
        let mut copy_only = HashSet::new();
        let mut first: HashMap<Id, (u32, u32, i64, u32)> = HashMap::new();
        let mut cells = HashMap::new();
        for tree in trees.values() {
            for e in &tree.entries {
                let EntryKind::File { blob, .. } = e.kind else {
                    continue;
                };
                let m = &e.meta;
                let seen = (m.uid, m.gid, m.mtime, m.mtime_nsec);
                if *first.entry(blob).or_insert(seen) != seen
                    || !m.xattrs.is_empty()
                    || m.mode & 0o7000 != 0
                {
                    copy_only.insert(blob);
                }
                cells.insert((blob, plain(user)), OnceLock::new());
                cells.insert((blob, variant_of(m, as_root, user)), OnceLock::new());
            }
        }
        let objects = Objects::open(store, first.keys().copied())?;
        let dest_dev = rustix::fs::fstat(&dest_fd)
            .map_err(|e| Error::io(dest)(e.into()))?
            .st_dev;
        let linker = Linker {
            objects,
            state: AtomicU8::new(state),
            forced_clone: mode == LinkMode::Reflink,
            cells,
            copy_only,
            as_root,
            user,
            said_exdev: AtomicBool::new(false),
            linked: AtomicU64::new(0),
            cloned: AtomicU64::new(0),
        };
        if linker.objects.device()? != dest_dev {
            linker.cross_device(dest);
            return Ok(None);
        }
        if state == CLONE {
            // Asked once, before any object is made: a filesystem without reflinks would
            // otherwise cost the first files an object made only for a failed clone.
            if let Err(e) = reflinks_work(linker.objects.root()) {
                if linker.forced_clone {
                    return Err(Error::Destination {
                        path: dest.to_path_buf(),
                        reason: format!("cannot reflink files there (FICLONE: {e})"),
                    });
                }
                tracing::debug!("{}: no reflinks ({e}); hardlinking", dest.display());
                linker.state.store(LINK, Ordering::Relaxed);
            }
        }
        Ok(Some(linker))
    }

    /// Says, once, that DEST is on another filesystem, and copies from now on.
    fn cross_device(&self, dest: &Path) {
        self.state.store(COPY, Ordering::Relaxed);
        if !self.said_exdev.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "{}: on another filesystem than the store, so files are copied, not linked",
                dest.display()
            );
        }
    }

    /// Places the file `name` in the folder `dir` (`shown` names it) with the content of blob
    /// `id` and the metadata `meta`: cloned or linked per the current mode, or left to the
    /// caller to copy.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn place(
        &self,
        dir: impl AsFd,
        name: &[u8],
        shown: &Path,
        dest: &Path,
        id: &Id,
        size: u64,
        meta: &Meta,
        place: Option<Placement>,
    ) -> Result<Placed> {
        loop {
            match self.state.load(Ordering::Relaxed) {
                CLONE => {
                    let Some(rel) = self.object(id, size, &plain(self.user), place)? else {
                        return Ok(Placed::Copy);
                    };
                    match self.clone_into(&dir, name, shown, &rel)? {
                        Ok(f) => {
                            self.cloned.fetch_add(1, Ordering::Relaxed);
                            return Ok(Placed::Cloned(f));
                        }
                        Err(Errno::XDEV) => self.cross_device(dest),
                        Err(e) if self.forced_clone => {
                            return Err(Error::Destination {
                                path: dest.to_path_buf(),
                                reason: format!("cannot reflink files there (FICLONE: {e})"),
                            });
                        }
                        Err(e) => {
                            if self.state.swap(LINK, Ordering::Relaxed) == CLONE {
                                tracing::debug!(
                                    "{}: no reflinks ({e}); hardlinking instead",
                                    dest.display()
                                );
                            }
                        }
                    }
                }
                LINK => {
                    if self.copy_only.contains(id) || meta.mode & 0o7000 != 0 {
                        return Ok(Placed::Copy);
                    }
                    let variant = variant_of(meta, self.as_root, self.user);
                    let Some(rel) = self.object(id, size, &variant, place)? else {
                        return Ok(Placed::Copy);
                    };
                    match rustix::fs::linkat(
                        self.objects.fd(),
                        rel.as_str(),
                        &dir,
                        name,
                        AtFlags::empty(),
                    ) {
                        Ok(()) => {
                            self.linked.fetch_add(1, Ordering::Relaxed);
                            return Ok(Placed::Linked);
                        }
                        Err(Errno::XDEV) => self.cross_device(dest),
                        // The object has as many links as its filesystem allows (65,000 on
                        // ext4): this one file is copied.
                        Err(Errno::MLINK) => return Ok(Placed::Copy),
                        Err(e) => return Err(Error::io(shown)(e.into())),
                    }
                }
                _ => return Ok(Placed::Copy),
            }
        }
    }

    /// The checkout object `variant` of `id`, made or checked by the first file that needs it.
    /// `None` if making it failed on another thread (the caller copies, and meets the error
    /// itself if the blob is at fault).
    fn object(
        &self,
        id: &Id,
        size: u64,
        variant: &Variant,
        place: Option<Placement>,
    ) -> Result<Option<String>> {
        let Some(cell) = self.cells.get(&(*id, *variant)) else {
            return Ok(None);
        };
        let mut failed = None;
        let got = cell.get_or_init(|| match self.objects.ensure(id, size, variant, place) {
            Ok(rel) => Some(rel),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(got.clone()),
        }
    }

    /// Creates `name` in `dir` and clones the object `rel` into it. The outer error is a
    /// failure of cairn's; the inner one is FICLONE's, after which nothing is left at `name`.
    fn clone_into(
        &self,
        dir: &impl AsFd,
        name: &[u8],
        shown: &Path,
        rel: &str,
    ) -> Result<std::result::Result<File, Errno>> {
        let src = rustix::fs::openat(
            self.objects.fd(),
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(shown)(e.into()))?;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io(shown)(e.into()))?;
        match rustix::fs::ioctl_ficlone(&fd, &src) {
            Ok(()) => Ok(Ok(File::from(fd))),
            Err(e) => {
                let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
                Ok(Err(e))
            }
        }
    }

    /// Records the objects this restore made (see [`Objects::record`]); returns how many.
    pub(crate) fn finish(&self) -> Result<u64> {
        let made = self.objects.made.load(Ordering::Relaxed);
        self.objects.record()?;
        Ok(made)
    }
}

/// Whether the filesystem of the folder `dir` can clone: `FICLONE` of a one-byte file into
/// another, both unnamed temp files there. The error is `FICLONE`'s (or a temp file's).
fn reflinks_work(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut src = tempfile::tempfile_in(dir)?;
    src.write_all(b"x")?;
    let dst = tempfile::tempfile_in(dir)?;
    rustix::fs::ioctl_ficlone(&dst, &src)?;
    Ok(())
}

/// The variant clones are made from: plain, owned by the restoring user, mtime 0 (a clone gets
/// its own metadata, so any object with the content would do; this one serves every tree).
fn plain(user: (u32, u32)) -> Variant {
    Variant {
        mode: 0o444,
        uid: user.0,
        gid: user.1,
        mtime: 0,
        mtime_nsec: 0,
    }
}

/// The variant a hardlinked file with `meta` needs: its permission bits without write bits,
/// its owner (as root; otherwise files belong to the restoring user, as copies do), its mtime.
fn variant_of(meta: &Meta, as_root: bool, user: (u32, u32)) -> Variant {
    let (uid, gid) = if as_root { (meta.uid, meta.gid) } else { user };
    Variant {
        mode: meta.mode & 0o555,
        uid,
        gid,
        mtime: meta.mtime,
        mtime_nsec: meta.mtime_nsec,
    }
}
