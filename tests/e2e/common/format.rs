//! Readers of cairn's on-disk format, written from `docs/format.md` independently of cairn's
//! code: where a blob's bytes are (its file, or its entry in a pack), and files by content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Env;

impl Env {
    /// Every file that holds objects: blob files under `blobs/` and pack files under `packs/`
    /// (paths relative to the store, with the SHA-256 of their bytes).
    pub fn object_files(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for top in ["blobs", "packs"] {
            for (rel, digest) in files_under(&self.store().join(top)) {
                out.insert(format!("{top}/{rel}"), digest);
            }
        }
        out
    }

    /// Where blob `id` (`blake3:<hex>`) is stored, which must be exactly one place: its own
    /// file (raw or zstd) or an entry of a pack file, found by reading the packs as
    /// `docs/format.md` describes them (independently of cairn's code).
    pub fn stored(&self, id: &str) -> Stored {
        let mut found = self.stored_all(id);
        assert_eq!(found.len(), 1, "blob {id} is stored in {found:?}");
        found.pop().unwrap()
    }

    /// Every place holding bytes of blob `id`: a blob can have dead copies in packs (written
    /// by an import that found it present only at its commit) besides the one the index uses.
    pub fn stored_all(&self, id: &str) -> Vec<Stored> {
        let hex = id.strip_prefix("blake3:").expect("an id");
        let dir = self.store().join("blobs").join(&hex[..2]);
        let mut found = Vec::new();
        for (name, zstd) in [(hex.to_string(), false), (format!("{hex}.zst"), true)] {
            let p = dir.join(name);
            if let Ok(m) = std::fs::metadata(&p) {
                found.push(Stored {
                    path: p,
                    offset: 0,
                    len: m.len(),
                    zstd,
                    packed: false,
                });
            }
        }
        for e in pack_entries(&self.store()) {
            if e.id == hex {
                found.push(e.stored);
            }
        }
        assert!(!found.is_empty(), "blob {id} is not stored");
        found
    }

    /// The ids of all blobs with stored bytes in the store (files and pack entries).
    pub fn stored_ids(&self) -> std::collections::BTreeSet<String> {
        let mut out: std::collections::BTreeSet<String> = pack_entries(&self.store())
            .into_iter()
            .map(|e| format!("blake3:{}", e.id))
            .collect();
        for rel in files_under(&self.store().join("blobs")).keys() {
            let name = rel.rsplit('/').next().unwrap();
            let hex = name.strip_suffix(".zst").unwrap_or(name);
            if hex.len() == 64 {
                out.insert(format!("blake3:{hex}"));
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    /// The stored bytes are a zstd frame.
    pub zstd: bool,
    pub packed: bool,
}

impl Stored {
    /// The stored bytes.
    pub fn read(&self) -> Vec<u8> {
        let all = std::fs::read(&self.path).unwrap();
        all[self.offset as usize..(self.offset + self.len) as usize].to_vec()
    }

    /// Replaces the stored bytes with `bytes`: the whole blob file, or the same number of
    /// bytes in place inside a pack.
    pub fn write(&self, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o644)).unwrap();
        if !self.packed {
            std::fs::write(&self.path, bytes).unwrap();
            return;
        }
        assert_eq!(
            bytes.len() as u64,
            self.len,
            "a pack entry is rewritten in place"
        );
        let mut all = std::fs::read(&self.path).unwrap();
        all[self.offset as usize..(self.offset + self.len) as usize].copy_from_slice(bytes);
        std::fs::write(&self.path, all).unwrap();
    }

    /// Cuts the stored bytes after `keep` bytes: truncates the blob file, or the pack file
    /// (which also cuts off every entry after this one).
    pub fn cut(&self, keep: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap();
        f.set_len(self.offset + keep).unwrap();
    }

    /// The whole file the bytes are in, to put back with [`Stored::restore`].
    pub fn snapshot(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    pub fn restore(&self, file: &[u8]) {
        std::fs::write(&self.path, file).unwrap();
    }
}

/// One entry of a pack file.
pub struct PackEntry {
    pub id: String,
    pub stored: Stored,
}

/// Every entry of every pack file in `store`, parsed as `docs/format.md` ("Pack files")
/// describes them: a 16-byte magic, then entries of id (32 bytes), encoding (1: 0 raw, 1 zstd),
/// content size (u64 LE), stored size (u64 LE) and the stored bytes.
pub fn pack_entries(store: &Path) -> Vec<PackEntry> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(store.join("packs")) else {
        return out;
    };
    for ent in rd {
        let path = ent.unwrap().path();
        if path.extension().is_none_or(|e| e != "pack") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            &bytes[..16],
            b"cairn-pack\n\0\0\0\0\x01",
            "{}",
            path.display()
        );
        let mut pos = 16usize;
        while pos + 49 <= bytes.len() {
            let id = hex::encode(&bytes[pos..pos + 32]);
            let enc = bytes[pos + 32];
            let stored = u64::from_le_bytes(bytes[pos + 41..pos + 49].try_into().unwrap());
            let offset = (pos + 49) as u64;
            assert!(enc <= 1, "{}: bad encoding at {pos}", path.display());
            assert!(
                offset + stored <= bytes.len() as u64,
                "{}: cut entry",
                path.display()
            );
            out.push(PackEntry {
                id,
                stored: Stored {
                    path: path.clone(),
                    offset,
                    len: stored,
                    zstd: enc == 1,
                    packed: true,
                },
            });
            pos = (offset + stored) as usize;
        }
    }
    out
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every regular file under `dir` (recursively), by `/`-separated relative path, with the
/// SHA-256 of its bytes. A missing `dir` gives an empty map.
pub fn files_under(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for ent in rd {
            let p = ent.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                let digest = if md.is_file() {
                    sha256_hex(&std::fs::read(&p).unwrap())
                } else {
                    format!("non-regular {:?}", md.file_type())
                };
                out.insert(rel, digest);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every name under `dir` (recursively, symlinks not followed), `/`-separated and sorted.
pub fn names_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for ent in rd {
            let p = ent.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
