//! Export: a stored tree as a deterministic tar archive (plain, zstd or gzip).
//!
//! Entries come in depth-first order with names sorted by bytes, directories before their
//! contents; each header carries only what the tree records (mode, uid, gid, whole-second mtime,
//! no user or group names), and compression uses fixed settings, so an id gives the same archive
//! bytes on every machine. The archive is written to a temporary file beside the output and
//! renamed into place only when every blob has been verified.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{EntryType, Header};

use crate::blobs::Placement;
use crate::error::{Error, Result};
use crate::key::Root;
use crate::session::ReadSession;
use crate::tree::{Entry, EntryKind, Meta};
use crate::walk::{self, Step};

/// zstd level for `.tar.zst` exports (fixed: it is part of what makes the bytes reproducible).
pub const EXPORT_ZSTD_LEVEL: i32 = 3;
/// gzip level for `.tar.gz` exports (fixed, likewise).
pub const EXPORT_GZIP_LEVEL: u32 = 6;

/// The archive formats `export` writes, chosen by the output file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `.tar`
    Tar,
    /// `.tar.zst` or `.tzst`
    TarZstd,
    /// `.tar.gz` or `.tgz`
    TarGzip,
}

impl ArchiveFormat {
    /// The format a file name asks for, if any.
    pub fn from_path(p: &Path) -> Option<ArchiveFormat> {
        let name = p.file_name()?.to_str()?;
        if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
            Some(ArchiveFormat::TarZstd)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(ArchiveFormat::TarGzip)
        } else if name.ends_with(".tar") {
            Some(ArchiveFormat::Tar)
        } else {
            None
        }
    }
}

impl ReadSession {
    /// Writes the tree `root` to `out` as a deterministic archive in `format`: into a temp file
    /// beside `out`, renamed over it only once every blob has been verified. Returns the number
    /// of entries written.
    pub fn export(&self, root: &Root, out: &Path, format: ArchiveFormat) -> Result<u64> {
        let Root::Tree { id } = root else {
            return Err(Error::Destination {
                path: out.to_path_buf(),
                reason: format!(
                    "{} is a single file, not a tree; use `cairn cat` or `cairn get`",
                    root.id()
                ),
            });
        };
        let closure = self.closure(&[*root])?;
        let places = self.placements(closure.blobs.iter().map(|(id, _)| *id))?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".cairn-export-")
            .tempfile_in(parent)
            .map_err(Error::io(parent))?;
        let file = io::BufWriter::with_capacity(
            1 << 20,
            tmp.as_file().try_clone().map_err(Error::io(out))?,
        );
        let sink: Box<dyn Write> = match format {
            ArchiveFormat::Tar => Box::new(file),
            ArchiveFormat::TarZstd => Box::new(
                zstd::Encoder::new(file, EXPORT_ZSTD_LEVEL)
                    .map_err(Error::io(out))?
                    .auto_finish(),
            ),
            ArchiveFormat::TarGzip => Box::new(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(file, flate2::Compression::new(EXPORT_GZIP_LEVEL)),
            ),
        };
        let mut b = tar::Builder::new(sink);
        let mut entries = 0;
        walk::paths(
            id,
            (),
            |t| closure.tree(t),
            |_, path, e| {
                let mut name = path.join(&b'/');
                if matches!(e.kind, EntryKind::Dir { .. }) {
                    name.push(b'/');
                }
                self.append(&mut b, &name, e, &places, out)?;
                entries += 1;
                Ok(Step::Descend(()))
            },
        )?;
        let mut sink = b.into_inner().map_err(Error::io(out))?;
        sink.flush().map_err(Error::io(out))?;
        drop(sink);
        tmp.as_file().sync_all().map_err(Error::io(out))?;
        tmp.persist(out).map_err(|e| Error::io(out)(e.error))?;
        Ok(entries)
    }

    /// Appends the entry `e`, named `name`, to the archive.
    fn append(
        &self,
        b: &mut tar::Builder<Box<dyn Write>>,
        name: &[u8],
        e: &Entry,
        places: &HashMap<crate::Id, Placement>,
        out: &Path,
    ) -> Result<()> {
        let name = Path::new(std::ffi::OsStr::from_bytes(name));
        let mut h = header(&e.meta);
        if !e.meta.xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = e
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| {
                    (
                        format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)),
                        v.as_slice(),
                    )
                })
                .collect();
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(Error::io(out))?;
        }
        let r = match &e.kind {
            EntryKind::Dir { .. } => {
                h.set_entry_type(EntryType::Directory);
                b.append_data(&mut h, name, io::empty())
            }
            EntryKind::File { size, blob } => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(*size);
                let place = places.get(blob).copied();
                let mut reader = self.open_blob(blob, Some(*size), place)?;
                match b.append_data(&mut h, name, &mut reader) {
                    Ok(()) => Ok(()),
                    Err(e) => return Err(reader.into_error(e).into()),
                }
            }
            EntryKind::Symlink { target } | EntryKind::Hardlink { target } => {
                h.set_entry_type(if matches!(e.kind, EntryKind::Symlink { .. }) {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                });
                b.append_link(&mut h, name, Path::new(std::ffi::OsStr::from_bytes(target)))
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                h.set_entry_type(if matches!(e.kind, EntryKind::CharDevice { .. }) {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                h.set_device_major(*major).map_err(Error::io(out))?;
                h.set_device_minor(*minor).map_err(Error::io(out))?;
                b.append_data(&mut h, name, io::empty())
            }
            EntryKind::Fifo => {
                h.set_entry_type(EntryType::Fifo);
                b.append_data(&mut h, name, io::empty())
            }
        };
        r.map_err(Error::io(out))
    }
}

fn header(meta: &Meta) -> Header {
    let mut h = Header::new_gnu();
    h.set_mode(meta.mode);
    h.set_uid(meta.uid.into());
    h.set_gid(meta.gid.into());
    h.set_mtime(meta.mtime.max(0) as u64);
    h.set_size(0);
    h
}
