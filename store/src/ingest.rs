//! Ingest: turning a folder on disk (or an archive, see `archive`) into trees and blobs.
//!
//! Ingest runs in three steps so that the index is touched only briefly: [`scan`] walks the input
//! into a [`Node`] tree (metadata only), the store hashes and writes the files in parallel, and
//! [`build`] turns the nodes into canonical [`Tree`]s bottom-up.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::key::Root;
use crate::statcache::Stat;
use crate::tree::{Entry, EntryKind, Meta, Tree, check_name};

/// Modes given to normalized entries.
pub mod normal_mode {
    /// Directories, and files whose owner-exec bit is set.
    pub const EXEC: u32 = 0o755;
    /// Other regular files, device nodes and fifos.
    pub const FILE: u32 = 0o644;
    /// Symlinks (Linux reports 0777 for every symlink).
    pub const SYMLINK: u32 = 0o777;
}

/// How to read metadata on ingest.
#[derive(Clone, Copy, Debug)]
pub struct IngestOptions {
    /// Keep owner, full mode, mtime, xattrs and hardlinks instead of normalizing them.
    pub preserve: bool,
    /// The mtime normalized entries get: `SOURCE_DATE_EPOCH` when set, else 0.
    pub epoch: i64,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            preserve: false,
            epoch: source_date_epoch(),
        }
    }
}

/// `SOURCE_DATE_EPOCH` if it is set to an integer, else 0.
pub fn source_date_epoch() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Where a file's content comes from.
#[derive(Clone, Debug)]
pub enum Content {
    /// A file on disk, hashed and stored later; `job` indexes the hash results.
    Path {
        /// The file (empty where the scan's caller keeps the paths in its own list).
        path: PathBuf,
        /// Index into the results handed to [`build`].
        job: usize,
    },
    /// Already stored (archive members are stored as they stream past).
    Stored {
        /// Blob id.
        id: Id,
        /// Content length.
        size: u64,
    },
}

/// One scanned input entry.
#[derive(Clone, Debug)]
pub enum Node {
    /// A regular file. Files with the same `link_group` are one inode (kept as hardlinks only
    /// under `--preserve`).
    File {
        /// Its metadata.
        meta: Meta,
        /// Its content.
        content: Content,
        /// Hardlink group, if the file has other names.
        link_group: Option<u64>,
    },
    /// A directory with children sorted by name bytes.
    Dir {
        /// Its metadata.
        meta: Meta,
        /// Children, sorted by name, names unique.
        children: Vec<(Vec<u8>, Node)>,
    },
    /// Anything else: symlink, device, fifo (the [`EntryKind`] holds the payload).
    Other {
        /// Its metadata.
        meta: Meta,
        /// Its kind.
        kind: EntryKind,
    },
}

impl Node {
    /// Appends the blob of every file below this node to `out`; an error if a file's content
    /// is not [`Content::Stored`] (iterative: nodes may nest deep).
    pub fn stored_blobs(&self, out: &mut Vec<Id>) -> std::result::Result<(), String> {
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            match node {
                Node::File {
                    content: Content::Stored { id, .. },
                    ..
                } => out.push(*id),
                Node::File { .. } => return Err("a file whose content is not stored".into()),
                Node::Other { .. } => {}
                Node::Dir { children, .. } => stack.extend(children.iter().map(|(_, c)| c)),
            }
        }
        Ok(())
    }
}

/// Totals gathered while building.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes of regular-file content, per path.
    pub size: u64,
    /// Regular files and hardlinks.
    pub files: u64,
}

/// The result of [`build`]: the root, every tree it needs (children before parents), totals.
#[derive(Debug)]
pub struct Built {
    /// The root.
    pub root: Root,
    /// (id, encoding) of every tree, each once.
    pub trees: Vec<(Id, Vec<u8>)>,
    /// Totals.
    pub totals: Totals,
}

/// Walks `path` into nodes. The top-level path is followed if it is a symlink; nothing below
/// it is. Returns the nodes and the files to hash, in the order of their `job` numbers.
pub fn scan(path: &Path, opts: &IngestOptions) -> Result<(Node, Vec<PathBuf>)> {
    let (node, files) = scan_files(path, opts, true)?;
    Ok((node, files.into_iter().map(|f| f.path).collect()))
}

/// A regular file found by [`scan_files`].
#[derive(Clone, Debug)]
pub(crate) struct ScannedFile {
    /// Its path (the root joined with the relative path).
    pub path: PathBuf,
    /// Its `lstat` (of the top-level path: `stat`), as the stat cache keys it.
    pub stat: Stat,
    /// Its link count.
    nlink: u64,
}

impl ScannedFile {
    /// The path relative to the ingest root, `/`-separated (empty for a single-file root).
    pub(crate) fn rel<'a>(&'a self, root: &Path) -> &'a [u8] {
        self.path
            .strip_prefix(root)
            .map_or(&[][..], |p| p.as_os_str().as_bytes())
    }
}

/// [`scan`], with each file's stat. Folders are read in parallel (rayon); the result is the
/// same as a sequential depth-first walk in name order. Without `paths_in_nodes`, the nodes'
/// [`Content::Path`] paths are left empty (the returned files hold them; a tree of 200,000
/// files saves tens of MB).
pub(crate) fn scan_files(
    path: &Path,
    opts: &IngestOptions,
    paths_in_nodes: bool,
) -> Result<(Node, Vec<ScannedFile>)> {
    let md = fs::metadata(path).map_err(Error::io(path))?;
    let (mut node, files) = if md.is_dir() {
        scan_dir(path, &md, &(opts, paths_in_nodes), 0)?
    } else if md.is_file() {
        let node = Node::File {
            meta: meta_of(path, &md, opts)?,
            content: Content::Path {
                path: path.to_path_buf(),
                job: 0,
            },
            link_group: None,
        };
        let file = ScannedFile {
            path: path.to_path_buf(),
            stat: Stat::of(&md),
            nlink: md.nlink(),
        };
        (node, vec![file])
    } else {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            reason: "not a regular file or directory".into(),
        });
    };
    if opts.preserve {
        // Hardlink groups, numbered by first appearance in depth-first order.
        let mut groups: HashMap<(u64, u64), u64> = HashMap::new();
        let by_job: Vec<Option<u64>> = files
            .iter()
            .map(|f| {
                (f.nlink > 1).then(|| {
                    let next = groups.len() as u64;
                    *groups.entry((f.stat.dev, f.stat.ino)).or_insert(next)
                })
            })
            .collect();
        set_link_groups(&mut node, &by_job);
    }
    Ok((node, files))
}

fn set_link_groups(node: &mut Node, by_job: &[Option<u64>]) {
    match node {
        Node::File {
            content: Content::Path { job, .. },
            link_group,
            ..
        } => *link_group = by_job[*job],
        Node::Dir { children, .. } => {
            for (_, c) in children {
                set_link_groups(c, by_job);
            }
        }
        _ => {}
    }
}

/// Adds `by` to every file's job number under `node`.
fn shift_jobs(node: &mut Node, by: usize) {
    match node {
        Node::File {
            content: Content::Path { job, .. },
            ..
        } => *job += by,
        Node::Dir { children, .. } => {
            for (_, c) in children {
                shift_jobs(c, by);
            }
        }
        _ => {}
    }
}

/// Scans the folder `dir`, `depth` folders below the root; job numbers in the result count
/// from 0 within it.
fn scan_dir(
    dir: &Path,
    md: &fs::Metadata,
    how: &(&IngestOptions, bool),
    depth: usize,
) -> Result<(Node, Vec<ScannedFile>)> {
    use rayon::prelude::*;
    let meta = meta_of(dir, md, how.0)?;
    let mut names = Vec::new();
    for ent in fs::read_dir(dir).map_err(Error::io(dir))? {
        let ent = ent.map_err(Error::io(dir))?;
        names.push(ent.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let scanned = names
        .into_par_iter()
        .map(|name| scan_entry(dir, name, how, depth + 1))
        .collect::<Result<Vec<_>>>()?;
    let mut children = Vec::with_capacity(scanned.len());
    let mut files = Vec::new();
    for (name, mut node, sub) in scanned {
        if !files.is_empty() && !sub.is_empty() {
            shift_jobs(&mut node, files.len());
        }
        files.extend(sub);
        children.push((name, node));
    }
    Ok((Node::Dir { meta, children }, files))
}

/// Scans one entry of `dir`; `depth` counts the path's segments below the root (archive ingest
/// refuses paths of more than [`crate::tree::MAX_DEPTH`] segments, and so does this).
fn scan_entry(
    dir: &Path,
    name: std::ffi::OsString,
    how: &(&IngestOptions, bool),
    depth: usize,
) -> Result<(Vec<u8>, Node, Vec<ScannedFile>)> {
    let (opts, paths_in_nodes) = (how.0, how.1);
    let path = dir.join(&name);
    let name = name.as_bytes().to_vec();
    check_name(&name).map_err(|e| Error::Unsupported {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if depth > crate::tree::MAX_DEPTH {
        return Err(Error::Unsupported {
            path,
            reason: format!("nested more than {} folders deep", crate::tree::MAX_DEPTH),
        });
    }
    let md = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
    let ft = md.file_type();
    if ft.is_dir() {
        let (node, files) = scan_dir(&path, &md, how, depth)?;
        return Ok((name, node, files));
    }
    if ft.is_file() {
        let file = ScannedFile {
            path: path.clone(),
            stat: Stat::of(&md),
            nlink: md.nlink(),
        };
        let node = Node::File {
            meta: meta_of(&path, &md, opts)?,
            content: Content::Path {
                path: if paths_in_nodes { path } else { PathBuf::new() },
                job: 0,
            },
            link_group: None,
        };
        return Ok((name, node, vec![file]));
    }
    let kind = if ft.is_symlink() {
        let target = fs::read_link(&path).map_err(Error::io(&path))?;
        EntryKind::Symlink {
            target: target.as_os_str().as_bytes().to_vec(),
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = md.rdev();
        let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
        if ft.is_char_device() {
            EntryKind::CharDevice { major, minor }
        } else {
            EntryKind::BlockDevice { major, minor }
        }
    } else {
        return Err(Error::Unsupported {
            path,
            reason: "sockets cannot be stored".into(),
        });
    };
    let node = Node::Other {
        meta: meta_of(&path, &md, opts)?,
        kind,
    };
    Ok((name, node, Vec::new()))
}

/// The metadata to record for an input entry under `opts`.
fn meta_of(path: &Path, md: &fs::Metadata, opts: &IngestOptions) -> Result<Meta> {
    let ft = md.file_type();
    if !opts.preserve {
        let mode = if ft.is_dir() {
            normal_mode::EXEC
        } else if ft.is_symlink() {
            normal_mode::SYMLINK
        } else if ft.is_file() && md.mode() & 0o100 != 0 {
            normal_mode::EXEC
        } else {
            normal_mode::FILE
        };
        return Ok(Meta {
            mode,
            mtime: opts.epoch,
            ..Meta::default()
        });
    }
    Ok(Meta {
        mode: md.mode() & crate::tree::MODE_MASK,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        xattrs: read_xattrs(path)?,
    })
}

/// The extended attributes of `path` (not following a symlink), sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let unsupported =
        |e: rustix::io::Errno| e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM;
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(e) if unsupported(e) => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(path)(e.into())),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cname = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 1024];
        loop {
            match rustix::fs::lgetxattr(path, cname, &mut value[..]) {
                Ok(len) => {
                    value.truncate(len);
                    break;
                }
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 8, 0),
                // Gone between list and get: record what exists.
                Err(rustix::io::Errno::NODATA) => {
                    value.clear();
                    break;
                }
                Err(e) => return Err(Error::io(path)(e.into())),
            }
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

/// Builds the trees for `node`. `hashes[job]` is the (id, size) of each [`Content::Path`] file.
/// `origin` names the input in errors. Under `preserve`, the first name of each hardlink group
/// in depth-first order keeps the content and later names become hardlinks to it.
pub fn build(node: &Node, hashes: &[(Id, u64)], preserve: bool, origin: &Path) -> Result<Built> {
    let mut b = Builder {
        hashes,
        preserve,
        origin,
        trees: Vec::new(),
        seen: HashMap::new(),
        first_of_group: HashMap::new(),
        totals: Totals::default(),
    };
    let root = match node {
        Node::Dir { children, .. } => {
            let mut path = Vec::new();
            Root::Tree {
                id: b.dir(children, &mut path)?,
            }
        }
        Node::File { meta, content, .. } => {
            let (id, size) = b.content(content);
            b.totals.size += size;
            b.totals.files += 1;
            Root::File {
                id,
                executable: meta.mode & 0o100 != 0,
            }
        }
        Node::Other { .. } => {
            return Err(Error::Unsupported {
                path: origin.to_path_buf(),
                reason: "not a regular file or directory".into(),
            });
        }
    };
    Ok(Built {
        root,
        trees: b.trees,
        totals: b.totals,
    })
}

struct Builder<'a> {
    hashes: &'a [(Id, u64)],
    preserve: bool,
    origin: &'a Path,
    trees: Vec<(Id, Vec<u8>)>,
    seen: HashMap<Id, ()>,
    first_of_group: HashMap<u64, Vec<u8>>,
    totals: Totals,
}

impl Builder<'_> {
    fn content(&self, c: &Content) -> (Id, u64) {
        match c {
            Content::Path { job, .. } => self.hashes[*job],
            Content::Stored { id, size } => (*id, *size),
        }
    }

    fn dir(&mut self, children: &[(Vec<u8>, Node)], path: &mut Vec<u8>) -> Result<Id> {
        let mut entries = Vec::with_capacity(children.len());
        for (name, node) in children {
            let mark = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            let entry = match node {
                Node::Dir { meta, children } => Entry {
                    name: name.clone(),
                    meta: meta.clone(),
                    kind: EntryKind::Dir {
                        tree: self.dir(children, path)?,
                    },
                },
                Node::File {
                    meta,
                    content,
                    link_group,
                } => {
                    self.totals.files += 1;
                    let (id, size) = self.content(content);
                    self.totals.size += size;
                    let first = match link_group.filter(|_| self.preserve) {
                        Some(g) => match self.first_of_group.get(&g) {
                            Some(first) => Some(first.clone()),
                            None => {
                                self.first_of_group.insert(g, path.clone());
                                None
                            }
                        },
                        None => None,
                    };
                    let kind = match first {
                        Some(target) => EntryKind::Hardlink { target },
                        None => EntryKind::File { size, blob: id },
                    };
                    Entry {
                        name: name.clone(),
                        meta: meta.clone(),
                        kind,
                    }
                }
                Node::Other { meta, kind } => Entry {
                    name: name.clone(),
                    meta: meta.clone(),
                    kind: kind.clone(),
                },
            };
            path.truncate(mark);
            entries.push(entry);
        }
        let tree = Tree { entries };
        let (id, bytes) = tree.encode_with_id().map_err(|source| Error::Encode {
            path: self.origin.join(String::from_utf8_lossy(path).as_ref()),
            source,
        })?;
        if self.seen.insert(id, ()).is_none() {
            self.trees.push((id, bytes));
        }
        Ok(id)
    }
}
