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
    for entry in entries {
        let mut entry =
            entry.map_err(|e| malformed(format!("malformed or truncated archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = normalize(&raw).map_err(|r| entry_err(&src, &shown, r))?;
        match entry.header().entry_type() {
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
    if hit.get() {
        return Err(malformed(
            "truncated: the archive ends without an end-of-archive marker".into(),
        ));
    }
    io::copy(&mut ar.into_inner(), &mut io::sink())
        .map_err(|e| malformed(format!("corrupt or truncated compressed stream: {e}")))?;
    Ok(())
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
