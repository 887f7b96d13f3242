//! Reading a source (a layout folder, or a tar archive, plain, gzip or zstd) member by member,
//! streaming each regular file straight into the store's temp folder while hashing it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use cairn_store::stream::{self, EofWatch};
use cairn_store::{Id, ImportSession, StagedBlob};

use crate::digest::{Alg, OciDigest, Tap};
use crate::error::{OciError, Result};

/// Deepest path a source may hold (`blobs/<alg>/<hex>`, or docker's `<id>/layer.tar`).
const MAX_DEPTH: usize = 3;

/// One regular file of the source, staged in the store.
pub(crate) struct Member {
    /// Its sha256 digest (and its sha512 digest, for `blobs/sha512/…`).
    pub digest: OciDigest,
    pub sha256: OciDigest,
    pub size: u64,
    /// The first bytes (magic numbers).
    pub head: Vec<u8>,
    /// The content, when it may be a JSON document of at most [`crate::MAX_JSON`] bytes.
    pub json: Option<Vec<u8>>,
    pub id: Id,
    pub blob: StagedBlob,
}

/// Every regular file of a source, by normalized path (`a/b`, no `./`).
pub(crate) struct Collected {
    pub src: PathBuf,
    pub is_dir: bool,
    pub members: BTreeMap<String, Member>,
    /// Bytes of JSON documents kept in `members` so far (at most [`crate::MAX_JSON_TOTAL`]).
    pub json_bytes: usize,
    /// Archive members that are links to other members (`docker save` and skopeo write a
    /// repeated layer as a symlink to its first copy): link path → the regular member it
    /// resolves to.
    pub aliases: BTreeMap<String, String>,
}

impl Collected {
    pub(crate) fn entry_err(&self, entry: &str, reason: impl Into<String>) -> OciError {
        entry_err(&self.src, entry, reason)
    }
}

fn entry_err(src: &Path, entry: &str, reason: impl Into<String>) -> OciError {
    OciError::Source {
        src: src.to_path_buf(),
        entry: Some(entry.to_string()),
        reason: reason.into(),
    }
}

/// Checks a member name: relative, no `..`, valid file names, at most [`MAX_DEPTH`] deep.
/// Returns it normalized (no `./`, no `.` segments, no trailing `/`).
pub(crate) fn normalize(raw: &[u8]) -> Result<String, String> {
    if raw.starts_with(b"/") {
        return Err("absolute names are refused".into());
    }
    let s = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8".to_string())?;
    let mut segs = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => continue,
            ".." => return Err("'..' components are refused".into()),
            s if s.len() > 255 || s.contains('\0') => return Err("invalid name".into()),
            s => segs.push(s),
        }
    }
    if segs.len() > MAX_DEPTH {
        return Err("not part of an image layout or docker archive (too deep)".into());
    }
    Ok(segs.join("/"))
}

/// If `path` is a blob path (`blobs/<alg>/<hex>`), its digest; an error if it is under
/// `blobs/` but malformed.
pub(crate) fn blob_path(path: &str) -> Result<Option<OciDigest>, String> {
    let Some(rest) = path.strip_prefix("blobs/") else {
        return Ok(None);
    };
    let Some((alg, hex)) = rest.split_once('/') else {
        return Err("a file directly under blobs/".into());
    };
    let alg = Alg::from_name(alg)
        .ok_or_else(|| format!("unsupported digest algorithm {alg:?} (sha256 or sha512)"))?;
    OciDigest::from_parts(alg, hex)
        .map(Some)
        .ok_or_else(|| format!("not a {} digest: {hex:?}", alg.name()))
}

impl Collected {
    fn add(
        &mut self,
        store: &ImportSession,
        path: String,
        reader: impl Read,
        want: u64,
    ) -> Result<()> {
        let named = blob_path(&path).map_err(|r| entry_err(&self.src, &path, r))?;
        if self.members.contains_key(&path) {
            return Err(entry_err(&self.src, &path, "duplicate entry"));
        }
        let sha512 = matches!(&named, Some(d) if d.alg == Alg::Sha512);
        let mut tap = Tap::new(reader, sha512);
        let origin = format!("{}: {path}", self.src.display());
        let blob = store.stage_stream(&mut tap, want, None, &origin)?;
        if tap.size != want {
            return Err(entry_err(
                &self.src,
                &path,
                format!("truncated: {} of {want} bytes", tap.size),
            ));
        }
        let sha256 = tap.digest(Alg::Sha256);
        let digest = match named {
            Some(named) => {
                let got = tap.digest(named.alg);
                if got != named {
                    return Err(OciError::Blob {
                        src: self.src.clone(),
                        digest: named.to_string(),
                        reason: format!("content hashes to {got}"),
                    });
                }
                named
            }
            None => sha256.clone(),
        };
        let (size, head) = (tap.size, tap.head.clone());
        let json = tap.json();
        self.json_bytes += json.as_ref().map_or(0, Vec::len);
        if self.json_bytes > crate::MAX_JSON_TOTAL {
            return Err(entry_err(
                &self.src,
                &path,
                format!(
                    "the source's JSON documents exceed {} MiB in all",
                    crate::MAX_JSON_TOTAL >> 20
                ),
            ));
        }
        let member = Member {
            digest,
            sha256,
            size,
            head,
            id: blob.id(),
            json,
            blob,
        };
        self.members.insert(path, member);
        Ok(())
    }
}

/// Reads every regular file of `src` (a folder or an archive) into the store's temp folder.
pub(crate) fn collect(store: &ImportSession, src: &Path) -> Result<Collected> {
    let meta = std::fs::metadata(src).map_err(OciError::io(src))?;
    let mut c = Collected {
        src: src.to_path_buf(),
        is_dir: meta.is_dir(),
        members: BTreeMap::new(),
        json_bytes: 0,
        aliases: BTreeMap::new(),
    };
    if meta.is_dir() {
        collect_dir(store, &mut c, src, "")?;
    } else {
        collect_tar(store, &mut c)?;
    }
    Ok(c)
}

fn collect_dir(store: &ImportSession, c: &mut Collected, dir: &Path, prefix: &str) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(OciError::io(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(OciError::io(dir))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = format!("{prefix}{}", name.to_string_lossy());
        let rel = normalize(rel.as_bytes()).map_err(|r| entry_err(&c.src, &rel, r))?;
        let m = std::fs::symlink_metadata(&path).map_err(OciError::io(&path))?;
        if m.is_dir() {
            collect_dir(store, c, &path, &format!("{rel}/"))?;
        } else if m.is_file() {
            let f = File::open(&path).map_err(OciError::io(&path))?;
            c.add(store, rel, f, m.len())?;
        } else {
            return Err(entry_err(
                &c.src,
                &rel,
                "not a regular file or folder (symlinks are refused)",
            ));
        }
    }
    Ok(())
}

fn collect_tar(store: &ImportSession, c: &mut Collected) -> Result<()> {
    let src = c.src.clone();
    let malformed = |reason: String| OciError::Source {
        src: src.clone(),
        entry: None,
        reason,
    };
    let file = File::open(&src).map_err(OciError::io(&src))?;
    let decompressed = stream::decompressed(BufReader::with_capacity(1 << 20, file))
        .map_err(OciError::io(&src))?;
    let (watched, hit) = EofWatch::new(decompressed);
    let mut ar = tar::Archive::new(watched);
    let entries = ar
        .entries()
        .map_err(|e| malformed(format!("malformed archive: {e}")))?;
    // Link member → (the member it names, as written; whether a symlink).
    let mut links: BTreeMap<String, (Vec<u8>, bool)> = BTreeMap::new();
    let mut first = true;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            if first {
                // Not even one tar header: not an archive at all. (The tar crate's message
                // quotes the bytes it could not parse: none of that belongs in the line.)
                not_an_image(&src, "not a tar archive: its first block is no tar header")
            } else {
                malformed(format!("malformed or truncated archive: {e}"))
            }
        })?;
        first = false;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = normalize(&raw).map_err(|r| entry_err(&src, &shown, r))?;
        let etype = entry.header().entry_type();
        if header_only(etype) && entry.size() != 0 {
            return Err(entry_err(
                &src,
                &shown,
                format!(
                    "a {etype:?} entry whose size field says {} bytes: such entries carry no data",
                    entry.size()
                ),
            ));
        }
        match etype {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| entry_err(&src, &shown, "a link without a target"))?
                    .into_owned();
                if path.is_empty() || links.contains_key(&path) || c.members.contains_key(&path) {
                    return Err(entry_err(&src, &shown, "duplicate entry"));
                }
                links.insert(path, (target, etype == tar::EntryType::Symlink));
            }
            tar::EntryType::Directory => {}
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if path.is_empty() {
                    return Err(entry_err(
                        &src,
                        &shown,
                        "a file cannot name the archive root",
                    ));
                }
                let want = entry.size();
                c.add(store, path, &mut entry, want)?;
            }
            other => {
                return Err(entry_err(
                    &src,
                    &shown,
                    format!("unsupported entry type {other:?} (only files and folders)"),
                ));
            }
        }
    }
    if first {
        return Err(not_an_image(&src, "an empty tar archive"));
    }
    if hit.get() {
        return Err(malformed(
            "truncated: the archive ends without an end-of-archive marker".into(),
        ));
    }
    for (path, (target, symlink)) in &links {
        let real = resolve_link(path, target, *symlink, &links, &c.members)
            .map_err(|r| entry_err(&src, path, r))?;
        c.aliases.insert(path.clone(), real);
    }
    io::copy(&mut ar.into_inner(), &mut io::sink())
        .map_err(|e| malformed(format!("corrupt or truncated compressed stream: {e}")))?;
    Ok(())
}

/// Entry types that carry no data (see `cairn_store`'s archive reader): a non-zero size field
/// on one would make tar readers disagree about where the next header is.
fn header_only(t: tar::EntryType) -> bool {
    matches!(
        t,
        tar::EntryType::Link
            | tar::EntryType::Symlink
            | tar::EntryType::Directory
            | tar::EntryType::Char
            | tar::EntryType::Block
            | tar::EntryType::Fifo
    )
}

/// Most links followed to resolve one link member (a chain longer than this is a loop).
const MAX_LINK_HOPS: usize = 8;

/// The regular member that the link member `path` names: a hardlink's target is a path from
/// the archive's root, a symlink's is relative to the link's folder; either may name another
/// link. Errors for a target outside the archive or one the archive lacks.
pub(crate) fn resolve_link(
    path: &str,
    target: &[u8],
    symlink: bool,
    links: &BTreeMap<String, (Vec<u8>, bool)>,
    members: &BTreeMap<String, Member>,
) -> Result<String, String> {
    let (mut at, mut target, mut symlink) = (path.to_string(), target.to_vec(), symlink);
    for _ in 0..MAX_LINK_HOPS {
        let shown = String::from_utf8_lossy(&target).into_owned();
        let outside = || format!("links to {shown:?}, outside the archive");
        if target.starts_with(b"/") {
            return Err(outside());
        }
        let text = std::str::from_utf8(&target).map_err(|_| outside())?;
        let mut segs: Vec<&str> = Vec::new();
        if symlink {
            segs.extend(at.split('/'));
            segs.pop(); // the link's own name
        }
        for seg in text.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segs.pop().ok_or_else(outside)?;
                }
                s => segs.push(s),
            }
        }
        let next = segs.join("/");
        if members.contains_key(&next) {
            return Ok(next);
        }
        match links.get(&next) {
            Some((t, s)) => {
                (at, target, symlink) = (next, t.clone(), *s);
            }
            None => {
                return Err(format!(
                    "links to {shown:?}, which is not a file of the archive"
                ));
            }
        }
    }
    Err(format!(
        "more than {MAX_LINK_HOPS} links in a row (a loop?)"
    ))
}

/// The error for a source that is none of the forms `oci import` reads.
pub(crate) fn not_an_image(src: &Path, why: &str) -> OciError {
    OciError::Source {
        src: src.to_path_buf(),
        entry: None,
        reason: format!(
            "not an OCI image layout, OCI archive, docker-archive or dir: layout ({why})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize(b"./blobs/sha256/x").unwrap(), "blobs/sha256/x");
        assert!(normalize(b"../x").is_err());
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a/b/c/d").is_err());
        assert!(blob_path("blobs/md5/aa").is_err());
        assert!(blob_path("blobs/sha256/zz").is_err());
        assert!(blob_path("blobs/x").is_err());
        assert_eq!(blob_path("index.json").unwrap(), None);
    }
}
