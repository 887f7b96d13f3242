//! Materialize: writing a stored tree out to a destination folder.
//!
//! Every write is relative to a directory handle that cairn created (or the destination's own),
//! opened with `O_NOFOLLOW`, so no write ever passes through a symlink, and names come from
//! validated trees, so nothing lands outside the destination. Each file's content is hashed as
//! it is written; a mismatch deletes the file and fails the whole operation, which then removes
//! everything it created.
//!
//! With a link mode (see `link`), regular files are cloned from, or hardlinked to, the store's
//! checkout objects (see `checkout`) instead of being written; the rest of the walk is the same.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::blobs::{Placement, copy_verified};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::key::Root;
use crate::link::{LinkMode, Linker, Placed};
use crate::progress::Progress;
use crate::session::ReadSession;
use crate::store::Store;
use crate::tree::{Entry, EntryKind, Meta};
use crate::walk::{self, Closure, Step};

/// The walk waits while this many file writes are queued...
const MAX_QUEUED_FILES: usize = 4096;
/// ...or while queued writes hold this many folder handles open.
const MAX_OPEN_DIRS: usize = 256;

/// How to materialize.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaterializeOptions {
    /// Replace the contents of a non-empty destination.
    pub force: bool,
    /// How regular files are made (see [`LinkMode`]); a single-file root is always copied.
    pub link: LinkMode,
}

/// What a materialize wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MaterializeStats {
    /// Regular files and hardlinks written.
    pub files: u64,
    /// Regular files hardlinked to a checkout object.
    pub linked: u64,
    /// Regular files cloned (reflinked) from a checkout object.
    pub cloned: u64,
    /// Regular files whose content was written.
    pub copied: u64,
    /// Checkout objects this run made (or checked and recorded).
    pub checkouts_made: u64,
    /// Directories created (the destination itself not counted).
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Device nodes and fifos created.
    pub specials: u64,
    /// Device nodes skipped because the process may not create them.
    pub skipped: u64,
    /// Bytes of file content restored (written, cloned or linked).
    pub bytes: u64,
}

/// A folder handle, counted while open so the walk can bound how many queued writes hold.
struct DirFd<'a> {
    fd: OwnedFd,
    open: &'a AtomicUsize,
}

impl Drop for DirFd<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Release);
    }
}

struct FileJob<'a> {
    dir: Arc<DirFd<'a>>,
    name: Vec<u8>,
    blob: Id,
    size: u64,
    meta: Meta,
    shown: PathBuf,
}

/// State shared by the walk and the file writes running in the pool.
struct Shared<'a> {
    store: &'a Store,
    /// Where each blob is kept, from the index, so each read is one open or one pread.
    placements: HashMap<Id, Placement>,
    /// Running as root: owners are applied.
    as_root: bool,
    /// Owner new files get without a chown (never skipped when DEST is setgid).
    default_owner: Option<(u32, u32)>,
    /// The process umask, if known: files are created with their final mode when it keeps it.
    umask: Option<u32>,
    warned_xattr: AtomicBool,
    /// Clones and links, when a link mode is on and DEST can have them.
    linker: Option<Linker<'a>>,
    /// The destination, as the user named it.
    dest: &'a Path,
    bytes: AtomicU64,
    files: AtomicU64,
    copied: AtomicU64,
    queued: AtomicUsize,
    open_dirs: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    progress: &'a dyn Progress,
}

struct Ctx<'a> {
    sh: &'a Shared<'a>,
    closure: &'a Closure,
    root_fd: OwnedFd,
    dest: &'a Path,
    stats: MaterializeStats,
    dir_fixups: Vec<(Vec<Vec<u8>>, Meta)>,
    hardlinks: Vec<(Vec<Vec<u8>>, Vec<u8>, Meta)>,
    files_written: HashSet<Vec<u8>>,
}

impl ReadSession {
    /// Writes `root` to `dest`. A tree goes into the folder `dest` (created if absent; if it
    /// exists it must be empty unless `force`, which first deletes what it holds); a single
    /// file is written as the file `dest`. On error, everything written is removed again.
    pub fn materialize(
        &self,
        root: &Root,
        dest: &Path,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<MaterializeStats> {
        let opts = MaterializeOptions {
            force,
            ..MaterializeOptions::default()
        };
        self.materialize_with(root, dest, &opts, progress)
    }

    /// [`ReadSession::materialize`] with options: `opts.link` clones or hardlinks regular files
    /// from checkout objects (see [`LinkMode`]).
    pub fn materialize_with(
        &self,
        root: &Root,
        dest: &Path,
        opts: &MaterializeOptions,
        progress: &dyn Progress,
    ) -> Result<MaterializeStats> {
        let store = &self.store;
        let force = opts.force;
        match root {
            Root::File { id, executable } => store.materialize_file(*id, *executable, dest, force),
            Root::Tree { id } => {
                let closure = self.closure(&[*root])?;
                let created = prepare_dest_dir(dest, force)?;
                let result = store.materialize_tree(*id, &closure, dest, opts.link, progress);
                if result.is_err() {
                    if created {
                        let _ = std::fs::remove_dir_all(dest);
                    } else {
                        let _ = clear_dir(dest);
                    }
                }
                result
            }
        }
    }
}

impl Store {
    fn materialize_file(
        &self,
        id: Id,
        executable: bool,
        dest: &Path,
        force: bool,
    ) -> Result<MaterializeStats> {
        let dest_err = |reason: &str| Error::Destination {
            path: dest.to_path_buf(),
            reason: reason.to_string(),
        };
        match std::fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {
                return Err(dest_err("is a directory; the root is a single file"));
            }
            Ok(_) if !force => return Err(dest_err("already exists (use --force to replace it)")),
            Ok(_) => std::fs::remove_file(dest).map_err(Error::io(dest))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(dest)(e)),
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(Error::io(dest))?;
        let mut w = BufWriter::new(&file);
        let place = self.placement(&id)?;
        let written = self
            .blobs
            .open(&id, None, place)
            .and_then(|r| copy_verified(r, &mut w))
            .map_err(Error::from)
            .and_then(|n| w.flush().map(|()| n).map_err(Error::io(dest)));
        drop(w);
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(dest);
                return Err(e);
            }
        };
        let mode = if executable { 0o755 } else { 0o644 };
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io(dest)(e.into()))?;
        Ok(MaterializeStats {
            files: 1,
            copied: 1,
            bytes: n,
            ..Default::default()
        })
    }

    fn materialize_tree(
        &self,
        id: Id,
        closure: &Closure,
        dest: &Path,
        link: LinkMode,
        progress: &dyn Progress,
    ) -> Result<MaterializeStats> {
        let root_fd = open_dir_fd(dest)?;
        let dest_md = rustix::fs::fstat(&root_fd).map_err(|e| Error::io(dest)(e.into()))?;
        let as_root = rustix::process::geteuid().is_root();
        let default_owner = (dest_md.st_mode & 0o2000 == 0).then(|| {
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )
        });
        let linker = Linker::new(
            self,
            link,
            &closure.trees,
            &root_fd,
            dest,
            as_root,
            default_owner,
        )?;
        let sh = Shared {
            store: self,
            placements: self.placements(closure.blobs.iter().map(|(id, _)| *id))?,
            as_root,
            default_owner,
            umask: process_umask(),
            warned_xattr: AtomicBool::new(false),
            linker,
            dest,
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            open_dirs: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            progress,
        };
        let mut cx = Ctx {
            sh: &sh,
            closure,
            root_fd,
            dest,
            stats: MaterializeStats::default(),
            dir_fixups: Vec::new(),
            hardlinks: Vec::new(),
            files_written: HashSet::new(),
        };
        progress.start("writing", 0);
        let root_dir = Arc::new(DirFd {
            fd: cx.root_fd.try_clone().map_err(Error::io(dest))?,
            open: &sh.open_dirs,
        });
        sh.open_dirs.fetch_add(1, Ordering::Relaxed);
        // The walk runs on this thread and hands each file to the pool as it meets it.
        let walked = rayon::in_place_scope(|scope| cx.walk(id, root_dir, scope));
        walked?;
        if let Some(e) = sh.error.lock().expect("not poisoned").take() {
            return Err(e);
        }
        cx.stats.files += sh.files.load(Ordering::Relaxed);
        cx.stats.copied = sh.copied.load(Ordering::Relaxed);
        if let Some(l) = &sh.linker {
            cx.stats.checkouts_made = l.finish()?;
            cx.stats.linked = l.linked.load(Ordering::Relaxed);
            cx.stats.cloned = l.cloned.load(Ordering::Relaxed);
        }
        cx.link_hardlinks()?;
        cx.fix_dirs()?;
        progress.finish();
        cx.stats.bytes = sh.bytes.load(Ordering::Relaxed);
        Ok(cx.stats)
    }
}

/// The umask of this process, from `/proc/self/status` (reading it with `umask(2)` would
/// change it for a moment, for every thread).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

impl Shared<'_> {
    fn write_file(&self, job: &FileJob) -> Result<()> {
        let place = self.placements.get(&job.blob).copied();
        if let Some(linker) = &self.linker {
            let placed = linker.place(
                &job.dir.fd,
                &job.name,
                &job.shown,
                self.dest,
                &job.blob,
                job.size,
                &job.meta,
                place,
            )?;
            match placed {
                Placed::Copy => {}
                Placed::Linked => {
                    self.placed(job.size);
                    return Ok(());
                }
                Placed::Cloned(file) => {
                    self.placed(job.size);
                    return self.apply_meta_fd(&file, &job.meta, &job.shown, false);
                }
            }
        }
        self.copy_file(job, place)
    }

    /// Counts a file placed (linked or cloned) rather than copied.
    fn placed(&self, size: u64) {
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.files.fetch_add(1, Ordering::Relaxed);
        self.progress.advance(1);
    }

    /// Writes the file's content from the blob's stored copy, checking it against its id.
    fn copy_file(&self, job: &FileJob, place: Option<crate::blobs::Placement>) -> Result<()> {
        let errno = |err: Errno| Error::io(&job.shown)(err.into());
        // Created with its final mode when the umask keeps it and no special bit needs to wait
        // for the chown; otherwise 0600 and fchmod after.
        let final_mode = job.meta.mode & 0o777;
        let mode_now = match self.umask {
            Some(u) if job.meta.mode & 0o7000 == 0 && final_mode & u == 0 => final_mode,
            _ => 0o600,
        };
        let fd = rustix::fs::openat(
            &job.dir.fd,
            job.name.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode_now),
        )
        .map_err(errno)?;
        let file = File::from(fd);
        let mut w = BufWriter::with_capacity(IO_BUF_LEN, &file);
        let written = self
            .store
            .blobs
            .open(&job.blob, Some(job.size), place)
            .and_then(|r| copy_verified(r, &mut w))
            .map_err(Error::from)
            .and_then(|n| w.flush().map(|()| n).map_err(Error::io(&job.shown)));
        drop(w);
        match written {
            Ok(n) => {
                self.bytes.fetch_add(n, Ordering::Relaxed);
                self.progress.advance(1);
            }
            Err(e) => {
                let _ = rustix::fs::unlinkat(&job.dir.fd, job.name.as_slice(), AtFlags::empty());
                return Err(e);
            }
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        self.copied.fetch_add(1, Ordering::Relaxed);
        self.apply_meta_fd(&file, &job.meta, &job.shown, mode_now == final_mode)
    }

    /// Records the first error and stops the walk and the queued writes.
    fn fail(&self, err: Error) {
        let mut slot = self.error.lock().expect("not poisoned");
        if slot.is_none() {
            *slot = Some(err);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Waits until the queued writes hold less than the limits (running queued jobs meanwhile
    /// if this thread belongs to the pool). `walk_held`: the folder handles the walk itself
    /// holds (the root and every folder on the current path), which only the walk can release:
    /// they are not counted, or a path deeper than [`MAX_OPEN_DIRS`] would wait forever.
    fn wait_for_room(&self, walk_held: usize) {
        while self.queued.load(Ordering::Acquire) >= MAX_QUEUED_FILES
            || self
                .open_dirs
                .load(Ordering::Acquire)
                .saturating_sub(walk_held)
                >= MAX_OPEN_DIRS
        {
            if self.failed.load(Ordering::Relaxed) {
                return;
            }
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }

    /// Owner (as root), mode, xattrs and mtime on an open file or directory. `mode_set`: it
    /// was created with `meta.mode` already (then only a chown could change it, and none is
    /// needed for an entry owned by the creator).
    fn apply_meta_fd(
        &self,
        fd: impl AsFd,
        meta: &Meta,
        shown: &Path,
        mode_set: bool,
    ) -> Result<()> {
        let errno = |err: Errno| Error::io(shown)(err.into());
        let owned_already = self.default_owner == Some((meta.uid, meta.gid));
        if self.as_root && !owned_already {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )
            .map_err(errno)?;
        }
        // After chown, which clears setuid/setgid (not set when `mode_set`).
        if !mode_set {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode)).map_err(errno)?;
        }
        for (k, v) in &meta.xattrs {
            let name = std::ffi::OsStr::from_bytes(k);
            if let Err(err) = rustix::fs::fsetxattr(&fd, name, v, rustix::fs::XattrFlags::empty()) {
                self.xattr_failed(shown, k, err);
            }
        }
        rustix::fs::futimens(&fd, &times(meta)).map_err(errno)?;
        Ok(())
    }

    /// Owner (as root) and mtime of a symlink or special file, not following it.
    fn apply_meta_at(&self, dir: &OwnedFd, name: &[u8], meta: &Meta, shown: &Path) -> Result<()> {
        let errno = |err: Errno| Error::io(shown)(err.into());
        if self.as_root && self.default_owner != Some((meta.uid, meta.gid)) {
            rustix::fs::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        rustix::fs::utimensat(dir, name, &times(meta), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        Ok(())
    }

    fn xattr_failed(&self, shown: &Path, name: &[u8], err: Errno) {
        if !self.warned_xattr.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "{}: could not set xattr {} ({err}); further xattr failures are not reported",
                shown.display(),
                String::from_utf8_lossy(name)
            );
        }
    }
}

impl<'a> Ctx<'a> {
    fn shown(&self, path: &[Vec<u8>]) -> PathBuf {
        let mut p = self.dest.to_path_buf();
        for seg in path {
            p.push(std::ffi::OsStr::from_bytes(seg));
        }
        p
    }

    /// Walks the tree `root` depth-first on this thread: creates folders, symlinks and
    /// special files at once, and hands each regular file to the pool as it meets it.
    fn walk<'s>(
        &mut self,
        root: Id,
        root_dir: Arc<DirFd<'s>>,
        scope: &rayon::Scope<'s>,
    ) -> Result<()>
    where
        'a: 's,
    {
        let closure = self.closure;
        walk::paths(
            &root,
            root_dir,
            |id| closure.tree(id),
            |dir, path, e| {
                if self.sh.failed.load(Ordering::Relaxed) {
                    return Ok(Step::Stop);
                }
                self.entry(dir, path, e, scope)
            },
        )
    }

    /// Creates the entry `e` at `path` in the folder `dir` (or queues its write).
    fn entry<'s>(
        &mut self,
        dir: &Arc<DirFd<'s>>,
        path: &[Vec<u8>],
        e: &Entry,
        scope: &rayon::Scope<'s>,
    ) -> Result<Step<Arc<DirFd<'s>>>>
    where
        'a: 's,
    {
        let shown = self.shown(path);
        let errno = |err: Errno| Error::io(&shown)(err.into());
        match &e.kind {
            EntryKind::Dir { .. } => {
                rustix::fs::mkdirat(&dir.fd, e.name.as_slice(), Mode::from_raw_mode(0o700))
                    .map_err(errno)?;
                self.sh.wait_for_room(path.len() + 1);
                let fd = rustix::fs::openat(
                    &dir.fd,
                    e.name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno)?;
                self.stats.dirs += 1;
                self.dir_fixups.push((path.to_vec(), e.meta.clone()));
                self.sh.open_dirs.fetch_add(1, Ordering::Relaxed);
                return Ok(Step::Descend(Arc::new(DirFd {
                    fd,
                    open: &self.sh.open_dirs,
                })));
            }
            EntryKind::File { size, blob } => {
                self.files_written.insert(path.join(&b'/'));
                let job = FileJob {
                    dir: dir.clone(),
                    name: e.name.clone(),
                    blob: *blob,
                    size: *size,
                    meta: e.meta.clone(),
                    shown,
                };
                self.sh.wait_for_room(path.len() + 1);
                self.sh.queued.fetch_add(1, Ordering::Relaxed);
                let sh = self.sh;
                scope.spawn(move |_| {
                    if !sh.failed.load(Ordering::Relaxed)
                        && let Err(err) = sh.write_file(&job)
                    {
                        sh.fail(err);
                    }
                    drop(job);
                    sh.queued.fetch_sub(1, Ordering::Release);
                });
            }
            EntryKind::Hardlink { target } => {
                self.hardlinks
                    .push((path.to_vec(), target.clone(), e.meta.clone()));
            }
            EntryKind::Symlink { target } => {
                rustix::fs::symlinkat(target.as_slice(), &dir.fd, e.name.as_slice())
                    .map_err(errno)?;
                self.stats.symlinks += 1;
                self.sh.apply_meta_at(&dir.fd, &e.name, &e.meta, &shown)?;
            }
            EntryKind::Fifo | EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } => {
                let (ft, dev) = match e.kind {
                    EntryKind::CharDevice { major, minor } => (
                        rustix::fs::FileType::CharacterDevice,
                        rustix::fs::makedev(major, minor),
                    ),
                    EntryKind::BlockDevice { major, minor } => (
                        rustix::fs::FileType::BlockDevice,
                        rustix::fs::makedev(major, minor),
                    ),
                    _ => (rustix::fs::FileType::Fifo, 0),
                };
                let mode = Mode::from_raw_mode(e.meta.mode & 0o777);
                match rustix::fs::mknodat(&dir.fd, e.name.as_slice(), ft, mode, dev) {
                    Ok(()) => {
                        self.stats.specials += 1;
                        self.sh.apply_meta_at(&dir.fd, &e.name, &e.meta, &shown)?;
                        // mknod applied the umask; the node was just made here, so
                        // chmod by name cannot reach anything else.
                        rustix::fs::chmodat(
                            &dir.fd,
                            e.name.as_slice(),
                            Mode::from_raw_mode(e.meta.mode & 0o7777),
                            AtFlags::empty(),
                        )
                        .map_err(errno)?;
                    }
                    Err(Errno::PERM) if ft != rustix::fs::FileType::Fifo => {
                        tracing::warn!(
                            "{}: skipped device node (creating it needs root)",
                            shown.display()
                        );
                        self.stats.skipped += 1;
                    }
                    Err(err) => return Err(errno(err)),
                }
            }
        }
        Ok(Step::Next)
    }

    fn open_beneath(&self, segs: &[Vec<u8>]) -> Result<OwnedFd> {
        const DIR_FLAGS: OFlags = OFlags::RDONLY
            .union(OFlags::DIRECTORY)
            .union(OFlags::NOFOLLOW)
            .union(OFlags::CLOEXEC);
        if !segs.is_empty() {
            // One syscall where the kernel has openat2 (5.6+): the kernel refuses any symlink
            // and anything outside the root. On any error, the segment-by-segment walk below
            // decides (and names the failing segment).
            let joined = segs.join(&b'/');
            if let Ok(fd) = rustix::fs::openat2(
                &self.root_fd,
                joined.as_slice(),
                DIR_FLAGS,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                return Ok(fd);
            }
        }
        let mut fd = self.root_fd.try_clone().map_err(Error::io(self.dest))?;
        for (i, seg) in segs.iter().enumerate() {
            fd = rustix::fs::openat(
                &fd,
                seg.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io(&self.shown(&segs[..=i]))(e.into()))?;
        }
        Ok(fd)
    }

    fn link_hardlinks(&mut self) -> Result<()> {
        for (path, target, _meta) in std::mem::take(&mut self.hardlinks) {
            let shown = self.shown(&path);
            if !self.files_written.contains(&target) {
                return Err(Error::Destination {
                    path: shown,
                    reason: format!(
                        "hardlink target {:?} is not a regular file earlier in the tree",
                        String::from_utf8_lossy(&target)
                    ),
                });
            }
            let tsegs: Vec<Vec<u8>> = target.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
            let (tname, tdir) = tsegs.split_last().expect("non-empty target");
            let tdir_fd = self.open_beneath(tdir)?;
            let (name, dir) = path.split_last().expect("non-empty path");
            let dir_fd = self.open_beneath(dir)?;
            rustix::fs::linkat(
                &tdir_fd,
                tname.as_slice(),
                &dir_fd,
                name.as_slice(),
                AtFlags::empty(),
            )
            .map_err(|e| Error::io(&shown)(e.into()))?;
            self.stats.files += 1;
        }
        Ok(())
    }

    /// Sets directory metadata last and deepest first, so writing children does not disturb it.
    fn fix_dirs(&mut self) -> Result<()> {
        for (path, meta) in std::mem::take(&mut self.dir_fixups).into_iter().rev() {
            let fd = self.open_beneath(&path)?;
            self.sh
                .apply_meta_fd(&fd, &meta, &self.shown(&path), false)?;
        }
        Ok(())
    }
}

/// Size of the write buffer per file.
const IO_BUF_LEN: usize = 256 * 1024;

fn times(meta: &Meta) -> Timestamps {
    let t = Timespec {
        tv_sec: meta.mtime,
        tv_nsec: meta.mtime_nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn open_dir_fd(dir: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(dir)(e.into()))
}

/// Makes `dest` an empty folder: creates it (returning true) or checks that it is empty, or
/// with `force` empties it.
/// Whether `dest` can take a tree without `force`: absent, or an empty folder. For a caller
/// that wants to refuse early, before fetching what it would write (the check is repeated
/// when writing starts).
pub fn check_dest_dir(dest: &Path, force: bool) -> Result<()> {
    match std::fs::metadata(dest) {
        Ok(m) if !m.is_dir() => Err(Error::Destination {
            path: dest.to_path_buf(),
            reason: "exists and is not a directory".into(),
        }),
        Ok(_)
            if !force
                && std::fs::read_dir(dest)
                    .map_err(Error::io(dest))?
                    .next()
                    .is_some() =>
        {
            Err(Error::Destination {
                path: dest.to_path_buf(),
                reason: "is not empty (use --force to replace its contents)".into(),
            })
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dest)(e)),
    }
}

fn prepare_dest_dir(dest: &Path, force: bool) -> Result<bool> {
    check_dest_dir(dest, force)?;
    let dest_err = |reason: &str| Error::Destination {
        path: dest.to_path_buf(),
        reason: reason.to_string(),
    };
    match std::fs::metadata(dest) {
        Ok(m) if !m.is_dir() => Err(dest_err("exists and is not a directory")),
        Ok(_) => {
            let non_empty = std::fs::read_dir(dest)
                .map_err(Error::io(dest))?
                .next()
                .is_some();
            if non_empty {
                if !force {
                    return Err(dest_err(
                        "is not empty (use --force to replace its contents)",
                    ));
                }
                clear_dir(dest).map_err(Error::io(dest))?;
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest).map_err(Error::io(dest))?;
            Ok(true)
        }
        Err(e) => Err(Error::io(dest)(e)),
    }
}

/// Deletes everything inside `dir` without following symlinks.
fn clear_dir(dir: &Path) -> io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let p = ent.path();
        if ent.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}
