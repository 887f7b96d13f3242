//! `oci export --docker-archive`: one image of a stored layout as a `docker save` archive in the
//! Docker Image Specification v1.2 layout that `docker load` before Docker 25 reads (and podman
//! and skopeo's `docker-archive:` transport):
//!
//! - `manifest.json`: `[{"Config": "<hex>.json", "RepoTags": [TAG] or null, "Layers": [...]}]`;
//! - `<hex>.json`: the image config, its bytes as stored (`<hex>` is its sha256);
//! - `<id>/layer.tar`, `<id>/VERSION` (`1.0`), `<id>/json` (`{"id":…,"parent":…}`) per layer,
//!   `<id>` the layer's chain id (sha256 of the parent's chain id, a space and its diff_id, as
//!   Docker computes it; the first layer's is its diff_id), the tar uncompressed as Docker wants
//!   it: a gzip or zstd layer is decompressed, and every layer's uncompressed stream is checked
//!   against the config's `diff_id` while it is written;
//! - `repositories` (`{"NAME": {"TAG": "<top layer id>"}}`) when the image is tagged.
//!
//! The archive is deterministic like `--archive`: entries sorted by name, mtime 0, owner 0,
//! modes 0644/0755, ustar headers; compressed only if the file name asks (`.tar.gz`/`.tgz`,
//! `.tar.zst`/`.tzst`). It is written to a temp file beside FILE and renamed over it at the
//! end, so a failed export leaves nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use cairn_store::{ArchiveFormat, ReadSession, Store};

use crate::digest::OciDigest;
use crate::error::{OciError, Result};
use crate::image::StoredImage;
use crate::platform::{self, Platform};
use crate::walk::Blobs;

/// Mode of the archive's files.
const FILE_MODE: u32 = 0o644;
/// Mode of its folders.
const DIR_MODE: u32 = 0o755;
/// The content of each layer's `VERSION` file (the v1.0 layer format).
const LAYER_VERSION: &[u8] = b"1.0";
/// Largest uncompressed layer written (a decompression bomb is refused, as `oci extract` does).
const MAX_LAYER_BYTES: u64 = crate::DEFAULT_MAX_LAYER_BYTES;

/// gzip level of a `.tar.gz` archive (as `--archive` uses).
const GZIP_LEVEL: u32 = 6;
/// The gzip header's OS byte: unknown, so the bytes do not depend on the machine.
const GZIP_OS_UNKNOWN: u8 = 255;
/// zstd level of a `.tar.zst` archive (as `--archive` uses).
const ZSTD_LEVEL: i32 = 3;

/// Where the tar goes: the file, through the compressor the name asks for. `finish` ends the
/// compressed stream and flushes, reporting errors a drop would swallow.
enum Sink {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl Sink {
    fn finish(self) -> io::Result<()> {
        let mut out = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(g) => g.finish()?,
            Sink::Zstd(z) => z.finish()?,
        };
        out.flush()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

/// What `export_docker_archive` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct DockerExport {
    /// The image's config digest (what `docker load` reports as the image id).
    pub config: String,
    /// The manifest exported.
    pub manifest: String,
    /// The tag written into `RepoTags`, if any.
    pub tag: Option<String>,
    /// Entries in the archive.
    pub entries: u64,
}

/// One `manifest.json` entry, fields in Docker's order.
#[derive(Serialize)]
struct SaveEntry<'a> {
    #[serde(rename = "Config")]
    config: &'a str,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<&'a str>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The content of one archive member.
enum Content {
    Dir,
    Bytes(Vec<u8>),
    /// A layer tar, decompressed into a temp file of this size.
    Spooled(File, u64),
}

/// Whether `tag` is a reference Docker accepts as a RepoTag: `NAME:TAG`, NAME lowercase path
/// components (`[a-z0-9._-]`, with an optional `host[:port]/` first), TAG `[A-Za-z0-9_.-]`, at
/// most 128 characters, not starting with `.` or `-`.
pub fn valid_tag(tag: &str) -> bool {
    let Some((name, t)) = tag.rsplit_once(':') else {
        return false;
    };
    if name.is_empty() || t.is_empty() || t.len() > 128 || t.contains('/') {
        return false;
    }
    let tag_ok = t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !t.starts_with(['.', '-']);
    let mut parts = name.split('/').peekable();
    let mut first = true;
    let mut name_ok = true;
    while let Some(p) = parts.next() {
        let host = first && parts.peek().is_some() && (p.contains('.') || p.contains(':'));
        let ok = if host {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        } else {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        name_ok &= ok;
        first = false;
    }
    tag_ok && name_ok
}

/// Writes image `target`'s manifest for `platform` (the host's when `None`) as a docker-save
/// archive `file`, tagged `tag` (or the manifest's ref name when that is a valid tag, else
/// untagged).
pub fn export_docker_archive(
    store: &Store,
    target: &str,
    file: &Path,
    tag: Option<&str>,
    platform: Option<&Platform>,
) -> Result<DockerExport> {
    let session = store.read()?;
    let image = StoredImage::open(&session, target)?;
    let want = platform.cloned().unwrap_or_else(Platform::host);
    let chosen = platform::choose(&image, &want)?;
    let src = image.src();
    let tag = match tag {
        Some(t) if !valid_tag(t) => {
            return Err(OciError::Image {
                src,
                reason: format!("--tag {t:?} is not a NAME:TAG reference Docker accepts"),
            });
        }
        Some(t) => Some(t.to_string()),
        None => ref_name(&image, &chosen.manifest)?.filter(|r| valid_tag(r)),
    };
    let config = image.json(&chosen.config)?.ok_or_else(|| OciError::Blob {
        src: src.clone(),
        digest: chosen.config.to_string(),
        reason: "image config is missing or too large".into(),
    })?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut members: BTreeMap<String, Content> = BTreeMap::new();
    let mut layer_paths = Vec::new();
    let mut chain: Option<[u8; 32]> = None;
    let mut top = String::new();
    for (n, l) in chosen.layers.iter().enumerate() {
        let diff = hex_bytes(&l.diff_id);
        let id = match chain {
            None => diff,
            Some(prev) => {
                let text = format!("sha256:{} {}", hex::encode(prev), l.diff_id);
                Sha256::digest(text.as_bytes()).into()
            }
        };
        let id_hex = hex::encode(id);
        let from = crate::layer::origin(&image, n, chosen.layers.len(), l);
        let (size, blob) = image.blob(&l.digest).ok_or_else(|| OciError::Blob {
            src: src.clone(),
            digest: l.digest.to_string(),
            reason: "layer is not in the image".into(),
        })?;
        let spooled = spool_layer(&session, &blob, size, &l.diff_id, &from, &parent)?;
        let mut meta = vec![("id", json!(id_hex))];
        if let Some(prev) = chain {
            meta.push(("parent", json!(hex::encode(prev))));
        }
        let meta = serde_json::to_vec(&crate::docker::obj(meta)).expect("JSON values serialize");
        members.insert(format!("{id_hex}/"), Content::Dir);
        members.insert(
            format!("{id_hex}/VERSION"),
            Content::Bytes(LAYER_VERSION.to_vec()),
        );
        members.insert(format!("{id_hex}/json"), Content::Bytes(meta));
        members.insert(format!("{id_hex}/layer.tar"), spooled);
        layer_paths.push(format!("{id_hex}/layer.tar"));
        chain = Some(id);
        top = id_hex;
    }
    let config_name = format!("{}.json", chosen.config.hex);
    members.insert(config_name.clone(), Content::Bytes(config));
    let entry = SaveEntry {
        config: &config_name,
        repo_tags: tag.as_deref().map(|t| vec![t]),
        layers: layer_paths,
    };
    let manifest = serde_json::to_vec(&[entry]).expect("JSON values serialize");
    members.insert("manifest.json".into(), Content::Bytes(manifest));
    if let Some((name, t)) = tag.as_deref().and_then(|t| t.rsplit_once(':')) {
        let mut tags = serde_json::Map::new();
        tags.insert(t.to_string(), json!(top));
        let mut repos = serde_json::Map::new();
        repos.insert(name.to_string(), serde_json::Value::Object(tags));
        let bytes = serde_json::to_vec(&repos).expect("JSON values serialize");
        members.insert("repositories".into(), Content::Bytes(bytes));
    }
    let entries = members.len() as u64;
    write_archive(file, &parent, members)?;
    drop(session);
    Ok(DockerExport {
        config: chosen.config.to_string(),
        manifest: chosen.manifest.to_string(),
        tag,
        entries,
    })
}

/// The ref name of the index entry for `manifest`, if it has one.
fn ref_name(image: &StoredImage, manifest: &OciDigest) -> Result<Option<String>> {
    let (index, _) = image.walk()?;
    Ok(index
        .manifests()
        .iter()
        .filter(|d| d.digest().to_string() == manifest.to_string())
        .find_map(|d| d.annotations().as_ref()?.get(crate::REF_NAME).cloned()))
}

fn hex_bytes(d: &OciDigest) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(b) = hex::decode(&d.hex)
        && b.len() == 32
    {
        out.copy_from_slice(&b);
    }
    out
}

/// Decompresses the layer blob into an unnamed temp file in `dir`, checking the stream's sha256
/// against `diff_id`; returns the file, rewound, and its size.
fn spool_layer(
    session: &ReadSession,
    blob: &cairn_store::Id,
    size: u64,
    diff_id: &OciDigest,
    from: &Path,
    dir: &Path,
) -> Result<Content> {
    let err = |reason: String| OciError::Image {
        src: from.to_path_buf(),
        reason,
    };
    let raw = session.open_blob(blob, Some(size), None)?;
    let decoded = cairn_store::stream::decompressed(BufReader::with_capacity(1 << 20, raw))
        .map_err(|e| err(format!("unreadable: {e}")))?;
    let mut limited = decoded.take(MAX_LAYER_BYTES + 1);
    let mut spool = tempfile::tempfile_in(dir).map_err(OciError::io(dir))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    {
        let mut w = BufWriter::with_capacity(1 << 20, &mut spool);
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(err(format!("unreadable: {e}"))),
            };
            sha.update(&buf[..n]);
            total += n as u64;
            w.write_all(&buf[..n]).map_err(OciError::io(dir))?;
        }
        w.flush().map_err(OciError::io(dir))?;
    }
    if total > MAX_LAYER_BYTES {
        return Err(err(format!(
            "expands past the limit of {MAX_LAYER_BYTES} bytes (a decompression bomb?)"
        )));
    }
    let got: [u8; 32] = sha.finalize().into();
    if got != hex_bytes(diff_id) {
        return Err(err(format!(
            "uncompressed content hashes to sha256:{}, but the config's diff_id is {diff_id}",
            hex::encode(got)
        )));
    }
    spool.rewind().map_err(OciError::io(dir))?;
    Ok(Content::Spooled(spool, total))
}

/// Writes `members` as a deterministic tar (compressed as `file`'s name asks) into a temp file
/// in `dir`, then renames it to `file`.
fn write_archive(file: &Path, dir: &Path, members: BTreeMap<String, Content>) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".cairn-docker-archive.")
        .tempfile_in(dir)
        .map_err(OciError::io(dir))?;
    let out = BufWriter::with_capacity(
        1 << 20,
        tmp.as_file().try_clone().map_err(OciError::io(dir))?,
    );
    let format = ArchiveFormat::from_path(file).unwrap_or(ArchiveFormat::Tar);
    let io_err = OciError::io(file);
    let w = match format {
        ArchiveFormat::Tar => Sink::Plain(out),
        ArchiveFormat::TarGzip => Sink::Gzip(
            flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(GZIP_OS_UNKNOWN)
                .write(out, flate2::Compression::new(GZIP_LEVEL)),
        ),
        ArchiveFormat::TarZstd => {
            Sink::Zstd(zstd::Encoder::new(out, ZSTD_LEVEL).map_err(OciError::io(file))?)
        }
    };
    let mut b = tar::Builder::new(w);
    let result = (|| -> io::Result<()> {
        for (name, content) in members {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match content {
                Content::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(DIR_MODE);
                    h.set_size(0);
                    b.append_data(&mut h, &name, io::empty())?;
                }
                Content::Bytes(bytes) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(FILE_MODE);
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, &name, bytes.as_slice())?;
                }
                Content::Spooled(f, size) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(FILE_MODE);
                    h.set_size(size);
                    b.append_data(&mut h, &name, BufReader::with_capacity(1 << 20, f))?;
                }
            }
        }
        b.into_inner()?.finish()
    })();
    result.map_err(io_err)?;
    tmp.as_file().sync_all().map_err(OciError::io(file))?;
    tmp.persist(file).map_err(|e| OciError::Io {
        path: file.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!(valid_tag("app:1"));
        assert!(valid_tag("localhost/img-oci:1"));
        assert!(valid_tag("localhost:5000/a/b:v1.2_x"));
        assert!(!valid_tag("app"));
        assert!(!valid_tag("App:1"));
        assert!(!valid_tag("app@1"));
        assert!(!valid_tag("app:"));
        assert!(!valid_tag("app:-x"));
        assert!(!valid_tag("a//b:1"));
    }
}
