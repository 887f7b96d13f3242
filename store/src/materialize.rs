//! Materialize: writing a stored tree out to a destination folder.
//!
//! Every write is relative to a directory handle that cairn created (or the destination's own),
//! opened with `O_NOFOLLOW`, so no write ever passes through a symlink, and names come from
//! validated trees, so nothing lands outside the destination. Each file's content is hashed as
//! it is written; a mismatch deletes the file and fails the whole operation, which then removes
//! everything it created.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::key::Root;
use crate::lock::{GcLock, LockMode};
use crate::progress::Progress;
use crate::store::{Closure, Store};
use crate::tree::{EntryKind, Meta};

/// File writes are run in parallel batches of at most this many files.
const BATCH_FILES: usize = 4096;
/// A batch is also run once it holds this many open directory handles.
const BATCH_DIRS: usize = 256;

/// What a materialize wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MaterializeStats {
    /// Regular files and hardlinks written.
    pub files: u64,
    /// Directories created (the destination itself not counted).
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Device nodes and fifos created.
    pub specials: u64,
    /// Device nodes skipped because the process may not create them.
    pub skipped: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

struct FileJob {
    dir: Arc<OwnedFd>,
    name: Vec<u8>,
    blob: Id,
    size: u64,
    meta: Meta,
    shown: PathBuf,
}

struct Ctx<'a> {
    store: &'a Store,
    closure: &'a Closure,
    root_fd: OwnedFd,
    dest: &'a Path,
    as_root: bool,
    warned_xattr: AtomicBool,
    stats: MaterializeStats,
    bytes: AtomicU64,
    jobs: Vec<FileJob>,
    dirs_in_batch: usize,
    dir_fixups: Vec<(Vec<Vec<u8>>, Meta)>,
    hardlinks: Vec<(Vec<Vec<u8>>, Vec<u8>, Meta)>,
    files_written: HashSet<Vec<u8>>,
    progress: &'a dyn Progress,
}

impl Store {
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
        let lock = self.lock(LockMode::Shared)?;
        self.materialize_locked(root, dest, force, progress, &lock)
    }

    /// As [`Store::materialize`], for a caller that already holds the gc lock (taken with
    /// [`Store::lock_shared`] before it resolved `root`, so that no gc can run in between).
    pub fn materialize_locked(
        &self,
        root: &Root,
        dest: &Path,
        force: bool,
        progress: &dyn Progress,
        _held: &GcLock,
    ) -> Result<MaterializeStats> {
        let closure = self.closure(root)?;
        match root {
            Root::File { id, executable } => self.materialize_file(*id, *executable, dest, force),
            Root::Tree { id } => {
                let created = prepare_dest_dir(dest, force)?;
                let result = self.materialize_tree(*id, &closure, dest, progress);
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
        let written = self
            .blobs
            .read_verified(&id, None, &mut w)
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
            bytes: n,
            ..Default::default()
        })
    }

    fn materialize_tree(
        &self,
        id: Id,
        closure: &Closure,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<MaterializeStats> {
        let root_fd = open_dir_fd(dest)?;
        let mut cx = Ctx {
            store: self,
            closure,
            root_fd,
            dest,
            as_root: rustix::process::geteuid().is_root(),
            warned_xattr: AtomicBool::new(false),
            stats: MaterializeStats::default(),
            bytes: AtomicU64::new(0),
            jobs: Vec::new(),
            dirs_in_batch: 0,
            dir_fixups: Vec::new(),
            hardlinks: Vec::new(),
            files_written: HashSet::new(),
            progress,
        };
        progress.start("writing", 0);
        let root_dir = Arc::new(cx.root_fd.try_clone().map_err(Error::io(dest))?);
        let mut path = Vec::new();
        cx.walk(id, root_dir, &mut path)?;
        cx.run_batch()?;
        cx.link_hardlinks()?;
        cx.fix_dirs()?;
        progress.finish();
        cx.stats.bytes = cx.bytes.load(Ordering::Relaxed);
        Ok(cx.stats)
    }
}

impl Ctx<'_> {
    fn shown(&self, path: &[Vec<u8>]) -> PathBuf {
        let mut p = self.dest.to_path_buf();
        for seg in path {
            p.push(std::ffi::OsStr::from_bytes(seg));
        }
        p
    }

    fn walk(&mut self, tree_id: Id, dir: Arc<OwnedFd>, path: &mut Vec<Vec<u8>>) -> Result<()> {
        let tree = self
            .closure
            .trees
            .get(&tree_id)
            .ok_or(Error::UnknownObject(tree_id))?;
        self.dirs_in_batch += 1;
        for e in &tree.entries {
            path.push(e.name.clone());
            let shown = self.shown(path);
            let errno = |err: Errno| Error::io(&shown)(err.into());
            match &e.kind {
                EntryKind::Dir { tree } => {
                    rustix::fs::mkdirat(&*dir, e.name.as_slice(), Mode::from_raw_mode(0o700))
                        .map_err(errno)?;
                    let fd = rustix::fs::openat(
                        &*dir,
                        e.name.as_slice(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(errno)?;
                    self.stats.dirs += 1;
                    self.dir_fixups.push((path.clone(), e.meta.clone()));
                    self.walk(*tree, Arc::new(fd), path)?;
                }
                EntryKind::File { size, blob } => {
                    self.files_written.insert(path.join(&b'/'));
                    self.jobs.push(FileJob {
                        dir: dir.clone(),
                        name: e.name.clone(),
                        blob: *blob,
                        size: *size,
                        meta: e.meta.clone(),
                        shown,
                    });
                    if self.jobs.len() >= BATCH_FILES || self.dirs_in_batch >= BATCH_DIRS {
                        self.run_batch()?;
                    }
                }
                EntryKind::Hardlink { target } => {
                    self.hardlinks
                        .push((path.clone(), target.clone(), e.meta.clone()));
                }
                EntryKind::Symlink { target } => {
                    rustix::fs::symlinkat(target.as_slice(), &*dir, e.name.as_slice())
                        .map_err(errno)?;
                    self.stats.symlinks += 1;
                    self.apply_meta_at(&dir, &e.name, &e.meta, &shown)?;
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
                    match rustix::fs::mknodat(&*dir, e.name.as_slice(), ft, mode, dev) {
                        Ok(()) => {
                            self.stats.specials += 1;
                            self.apply_meta_at(&dir, &e.name, &e.meta, &shown)?;
                            // mknod applied the umask; the node was just made here, so
                            // chmod by name cannot reach anything else.
                            rustix::fs::chmodat(
                                &*dir,
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
            path.pop();
        }
        Ok(())
    }

    /// Writes the queued files in parallel.
    fn run_batch(&mut self) -> Result<()> {
        let jobs = std::mem::take(&mut self.jobs);
        self.dirs_in_batch = 0;
        let cx = &*self;
        jobs.par_iter().try_for_each(|job| cx.write_file(job))?;
        self.stats.files += jobs.len() as u64;
        Ok(())
    }

    fn write_file(&self, job: &FileJob) -> Result<()> {
        let errno = |err: Errno| Error::io(&job.shown)(err.into());
        let fd = rustix::fs::openat(
            &*job.dir,
            job.name.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno)?;
        let file = File::from(fd);
        let mut w = BufWriter::with_capacity(256 * 1024, &file);
        let written = self
            .store
            .blobs
            .read_verified(&job.blob, Some(job.size), &mut w)
            .map_err(Error::from)
            .and_then(|n| w.flush().map(|()| n).map_err(Error::io(&job.shown)));
        drop(w);
        match written {
            Ok(n) => {
                self.bytes.fetch_add(n, Ordering::Relaxed);
                self.progress.advance(1);
            }
            Err(e) => {
                let _ = rustix::fs::unlinkat(&*job.dir, job.name.as_slice(), AtFlags::empty());
                return Err(e);
            }
        }
        self.apply_meta_fd(&file, &job.meta, &job.shown)
    }

    /// Owner (as root), mode, xattrs and mtime on an open file or directory.
    fn apply_meta_fd(&self, fd: impl AsFd, meta: &Meta, shown: &Path) -> Result<()> {
        let errno = |err: Errno| Error::io(shown)(err.into());
        if self.as_root {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )
            .map_err(errno)?;
        }
        // After chown, which clears setuid/setgid.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode)).map_err(errno)?;
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
        if self.as_root {
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

    fn open_beneath(&self, segs: &[Vec<u8>]) -> Result<OwnedFd> {
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
                return Err(Error::Unsupported {
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
            self.apply_meta_fd(&fd, &meta, &self.shown(&path))?;
        }
        Ok(())
    }
}

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
