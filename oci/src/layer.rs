//! Decomposing image layers into the store: each layer's tar stream is read once, in parallel
//! across layers, verified against the layer blob's id as it streams and against the config's
//! `diff_id` (its uncompressed sha256, hashed on the thread that decompresses, so it costs no
//! extra pass), and kept as a tree whose files are ordinary blobs (a [`LayerTree`], recorded as a tree derived from the layer blob, so
//! the store keeps it exactly as long as the layer). Later extractions, listings and `--path`
//! reads reuse it and never decompress the layer again (checking the `diff_id` against the one
//! recorded); files shared by layers or images are stored once.
//!
//! A layer tree keeps the layer's own view: whiteout files (`.wh.NAME`, `.wh..wh..opq`) are
//! ordinary entries, and a hardlink's target is a path that may be in a lower layer; merging
//! layers (`merge`) interprets both. Folders the tar never named (made only to hold an entry
//! below them) are listed with the tree, since merging must not let them override a lower
//! layer's folder.

use std::cell::RefCell;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};

use cairn_store::blobs::VerifiedReader;
use cairn_store::{Id, Import, ImportSession, IngestOptions, Progress, TarOptions};
use sha2::{Digest as _, Sha256};

use crate::digest::{Alg, OciDigest};
use crate::error::{OciError, Result};
use crate::image::StoredImage;
use crate::media;
use crate::platform::LayerRef;

/// Media types of layers cairn unpacks: OCI's (plain, gzip, zstd, and their non-distributable
/// forms) and Docker's.
fn is_layer_type(mt: &str) -> bool {
    let oci = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ];
    oci.iter()
        .any(|base| mt == *base || mt == format!("{base}+gzip") || mt == format!("{base}+zstd"))
        || [
            media::DOCKER_LAYER,
            media::DOCKER_LAYER_GZIP,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ]
        .contains(&mt)
}

/// Description of one layer for messages: `TARGET: layer N of M (DIGEST)`.
pub(crate) fn origin(image: &StoredImage, n: usize, of: usize, layer: &LayerRef) -> PathBuf {
    PathBuf::from(format!(
        "{}: layer {} of {of} ({})",
        image.target,
        n + 1,
        layer.digest
    ))
}

/// The decomposed form of each of `layers`, in order, decomposing those the store lacks on up
/// to `jobs` threads; and how many were decomposed.
pub(crate) fn decompose_all(
    image: &StoredImage,
    layers: &[LayerRef],
    max_bytes: u64,
    jobs: usize,
    session: &ImportSession,
    progress: &dyn Progress,
) -> Result<(Vec<LayerTree>, usize)> {
    let mut out: Vec<Option<LayerTree>> = Vec::with_capacity(layers.len());
    let mut todo = Vec::new();
    for (n, l) in layers.iter().enumerate() {
        let (size, id) = image.blob(&l.digest).ok_or_else(|| OciError::Blob {
            src: image.src(),
            digest: l.digest.to_string(),
            reason: "layer is not in the image".into(),
        })?;
        if !is_layer_type(&l.media_type) {
            return Err(OciError::Image {
                src: origin(image, n, layers.len(), l),
                reason: format!(
                    "media type {} is not a layer cairn can unpack",
                    l.media_type
                ),
            });
        }
        let cached = LayerTree::cached(session, &id)?;
        if let Some(row) = &cached {
            // Decomposed before, when its stream hashed to the recorded digest.
            check_diff_id(image, n, layers.len(), l, &row.uncompressed_sha256)?;
        } else {
            todo.push((n, id, size));
        }
        out.push(cached);
    }
    if !todo.is_empty() {
        progress.start("unpacking layers", todo.len() as u64);
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<(usize, Result<LayerTree>)>> = Mutex::new(Vec::new());
        let failed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..jobs.clamp(1, todo.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= todo.len() || failed.load(Ordering::SeqCst) {
                            break;
                        }
                        let (n, id, size) = todo[i];
                        let from = origin(image, n, layers.len(), &layers[n]);
                        let r = decompose(session, &id, size, &layers[n].diff_id, &from, max_bytes);
                        if r.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        progress.advance(1);
                        done.lock().expect("not poisoned").push((n, r));
                    }
                });
            }
        });
        progress.finish();
        let mut done = done.into_inner().expect("not poisoned");
        // Report the lowest failing layer, whatever order the threads finished in.
        done.sort_by_key(|(n, _)| *n);
        for (n, r) in done {
            out[n] = Some(r?);
        }
    }
    let trees = out.into_iter().map(|l| l.expect("every layer decomposed"));
    Ok((trees.collect(), todo.len()))
}

/// Reads from a shared [`VerifiedReader`].
struct Shared(Rc<RefCell<VerifiedReader>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// A decompressed stream that, when it ends, reads the rest of the layer blob, so that the
/// blob's hash and size are checked before the end of the tar stream is reported.
struct CheckedToEnd<R> {
    inner: R,
    raw: Rc<RefCell<VerifiedReader>>,
}

impl<R: Read> Read for CheckedToEnd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            io::copy(&mut *self.raw.borrow_mut(), &mut io::sink())?;
        }
        Ok(n)
    }
}

/// The error for a layer whose uncompressed stream hashed to `got` where its config says
/// `diff_id`.
fn diff_id_error(from: PathBuf, diff_id: &OciDigest, got: &[u8; 32]) -> OciError {
    OciError::Image {
        src: from,
        reason: format!(
            "uncompressed content hashes to sha256:{}, but the config's diff_id is {diff_id}",
            hex::encode(got),
        ),
    }
}

fn check_diff_id(
    image: &StoredImage,
    n: usize,
    of: usize,
    layer: &LayerRef,
    got: &[u8; 32],
) -> Result<()> {
    if diff_id_bytes(&layer.diff_id) == Some(*got) {
        return Ok(());
    }
    Err(diff_id_error(
        origin(image, n, of, layer),
        &layer.diff_id,
        got,
    ))
}

/// The 32 bytes of a sha256 digest.
fn diff_id_bytes(d: &OciDigest) -> Option<[u8; 32]> {
    if d.alg != Alg::Sha256 {
        return None;
    }
    hex::decode(&d.hex).ok()?.try_into().ok()
}

/// Whether a layer entry's name is a whiteout (`.wh.NAME`, or the opaque marker
/// `.wh..wh..opq`).
fn is_whiteout(name: &[u8]) -> bool {
    name.starts_with(b".wh.")
}

fn decompose(
    session: &ImportSession,
    id: &Id,
    size: u64,
    diff_id: &OciDigest,
    from: &std::path::Path,
    max_bytes: u64,
) -> Result<LayerTree> {
    let want = diff_id_bytes(diff_id).ok_or_else(|| OciError::Image {
        src: from.to_path_buf(),
        reason: format!("diff_id {diff_id} is not a sha256 digest"),
    })?;
    let raw = session
        .reader()
        .open_blob(id, Some(size), None)
        .map_err(|e| OciError::Image {
            src: from.to_path_buf(),
            reason: e.to_string(),
        })?;
    // Decompression (and the hashing of the layer blob) runs on a thread of its own, a few
    // chunks ahead of the thread that parses the tar stream and stores its files, so a single
    // large layer keeps two cores busy. The byte stream, and every error in it, reach the
    // parser in the same order as from a plain reader.
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
    let (tx, rx) = mpsc::sync_channel::<Chunk>(PIPE_CHUNKS);
    std::thread::scope(|s| {
        s.spawn(move || {
            let tar = match open_decoded(raw, from) {
                Ok(tar) => {
                    let _ = ready_tx.send(Ok(()));
                    tar
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            pump(tar, &tx);
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(OciError::Image {
                    src: from.to_path_buf(),
                    reason: "the layer reader stopped".into(),
                });
            }
        }
        let mismatch = Rc::new(RefCell::new(None));
        let piped = Piped {
            rx,
            chunk: Vec::new(),
            pos: 0,
            over: false,
            failed: false,
            want,
            mismatch: mismatch.clone(),
        };
        // Dropping `piped` (at the end of this call) stops the reader thread if the parser
        // ended early.
        let opts = TarOptions {
            ingest: IngestOptions {
                preserve: true,
                epoch: 0,
            },
            // A hardlink's target may be a file of a lower layer: merging resolves it.
            open_hardlinks: true,
            max_bytes: Some(max_bytes),
            level: Some(LAYER_COMPRESSION_LEVEL),
            // Some writers (`umoci insert`) end a layer right after the last member's data;
            // the layer's digest (and diff_id) prove the stream complete.
            complete_at_end: true,
            // `X/.wh.NAME` after this layer made `X` a file or a symlink (`umoci repack` of a
            // folder replaced by a file): nothing of the lower layers' `X/NAME` is left to
            // delete, so it is a no-op, as umoci and containerd apply it.
            skip_below_non_folder: Some(is_whiteout),
        };
        let tar = session.ingest_tar(piped, from, &opts);
        if let Some(got) = mismatch.borrow_mut().take() {
            return Err(diff_id_error(from.to_path_buf(), diff_id, &got));
        }
        let tar = tar?;
        let layer = LayerTree {
            tree: tar.tree,
            uncompressed_sha256: want,
            implicit: tar.implicit,
        };
        let mut import = Import::default();
        import.derive(LAYER_NAMESPACE, *id, layer.tree, layer.encode_payload());
        session.commit(import)?;
        Ok(layer)
    })
}

/// Namespace of layer trees among the trees the store keeps derived from blobs; the version
/// changes with the way layers are decomposed or the payload's format.
pub const LAYER_NAMESPACE: &str = "cairn-oci-layer-v1";

/// zstd level of a decomposed layer's files: the cache is written on an image's first
/// extraction, on its critical path, and read back at once, so speed matters more than size.
pub const LAYER_COMPRESSION_LEVEL: i32 = 1;

/// A layer's decomposed form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerTree {
    /// The tree of the layer's entries.
    pub tree: Id,
    /// The sha256 of the layer's uncompressed tar stream (its OCI `diff_id`), as checked while
    /// it was decomposed: a later image naming the same layer blob is checked against it.
    pub uncompressed_sha256: [u8; 32],
    /// Folders no entry of the layer named, as `/`-joined paths from the layer's root (the empty
    /// path is the root itself), sorted.
    pub implicit: Vec<Vec<u8>>,
}

impl LayerTree {
    /// The decomposed form of layer blob `layer`, if it was made before (and is still there).
    fn cached(session: &ImportSession, layer: &Id) -> Result<Option<LayerTree>> {
        let Some((tree, payload)) = session.reader().derived(LAYER_NAMESPACE, layer)? else {
            return Ok(None);
        };
        // An unreadable payload is a cache miss: the layer is decomposed again and the row
        // replaced.
        Ok(
            LayerTree::decode_payload(&payload).map(|(uncompressed_sha256, implicit)| LayerTree {
                tree,
                uncompressed_sha256,
                implicit,
            }),
        )
    }

    /// The payload kept with the derived tree: the uncompressed sha256 (32 bytes), then each
    /// implicit folder's path followed by a NUL.
    fn encode_payload(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(32 + self.implicit.iter().map(|p| p.len() + 1).sum::<usize>());
        out.extend_from_slice(&self.uncompressed_sha256);
        for p in &self.implicit {
            out.extend_from_slice(p);
            out.push(0);
        }
        out
    }

    fn decode_payload(bytes: &[u8]) -> Option<([u8; 32], Vec<Vec<u8>>)> {
        let (sha, paths) = bytes.split_at_checked(32)?;
        let implicit = match paths.split_last() {
            None => Vec::new(),
            Some((0, rest)) => rest.split(|&b| b == 0).map(<[u8]>::to_vec).collect(),
            Some(_) => return None,
        };
        Some((sha.try_into().ok()?, implicit))
    }
}

/// What the reader thread sends the parser.
enum Chunk {
    /// Decompressed bytes.
    Data(Vec<u8>),
    /// The end of the stream, and the sha256 of all of it.
    End([u8; 32]),
    /// The stream failed.
    Failed(io::Error),
}

/// Chunks of decompressed layer bytes the reader thread may be ahead of the parser by.
const PIPE_CHUNKS: usize = 8;
/// Size of one chunk.
const PIPE_CHUNK: usize = 256 << 10;

/// The decompressed tar stream of a layer blob: the decompressor its first bytes call for, and
/// a check of the whole blob (hash and size) before the end of the stream is reported.
fn open_decoded(raw: VerifiedReader, from: &std::path::Path) -> Result<Box<dyn Read>> {
    let raw = Rc::new(RefCell::new(raw));
    let buffered = BufReader::with_capacity(1 << 20, Shared(raw.clone()));
    let decoded = cairn_store::stream::decompressed(buffered).map_err(|e| OciError::Image {
        src: from.to_path_buf(),
        reason: format!("unreadable: {e}"),
    })?;
    Ok(Box::new(CheckedToEnd {
        inner: decoded,
        raw,
    }))
}

/// Reads `tar` to its end in chunks into `tx`, hashing them (sha256, the layer's `diff_id`);
/// [`Chunk::End`] marks the end, [`Chunk::Failed`] a failure. Stops early when the receiver
/// is gone.
fn pump(mut tar: Box<dyn Read>, tx: &mpsc::SyncSender<Chunk>) {
    let mut sha = Sha256::new();
    loop {
        let mut chunk = vec![0u8; PIPE_CHUNK];
        let mut len = 0;
        let end = loop {
            match tar.read(&mut chunk[len..]) {
                Ok(0) => break true,
                Ok(n) => {
                    len += n;
                    if len == chunk.len() {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if len > 0 {
                        chunk.truncate(len);
                        let _ = tx.send(Chunk::Data(chunk));
                    }
                    let _ = tx.send(Chunk::Failed(e));
                    return;
                }
            }
        };
        chunk.truncate(len);
        sha.update(&chunk);
        if len > 0 && tx.send(Chunk::Data(chunk)).is_err() {
            return;
        }
        if end {
            let _ = tx.send(Chunk::End(sha.finalize().into()));
            return;
        }
    }
}

/// The receiving end of [`pump`], as a reader. At the end of the stream it checks the
/// stream's sha256 against the `diff_id` and, on a mismatch, fails instead of ending (so the
/// parser records nothing) and leaves the digest it got in `mismatch`.
struct Piped {
    rx: mpsc::Receiver<Chunk>,
    chunk: Vec<u8>,
    pos: usize,
    /// The stream ended: every later read returns 0.
    over: bool,
    /// The stream failed: every later read fails too.
    failed: bool,
    /// The sha256 the whole stream must have.
    want: [u8; 32],
    /// The sha256 it had instead, once known.
    mismatch: Rc<RefCell<Option<[u8; 32]>>>,
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.chunk.len() {
            if self.failed {
                return Err(io::Error::other("the layer stream failed earlier"));
            }
            if self.over {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::End(got)) if got != self.want => {
                    self.failed = true;
                    *self.mismatch.borrow_mut() = Some(got);
                    return Err(io::Error::other(
                        "the layer's uncompressed content does not match its diff_id",
                    ));
                }
                Ok(Chunk::End(_)) => self.over = true,
                Ok(Chunk::Data(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Chunk::Failed(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Err(_) => {
                    self.failed = true;
                    return Err(io::Error::other("the layer reader stopped"));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_a_miss() {
        let t = LayerTree {
            tree: Id::of(b"t"),
            uncompressed_sha256: [7; 32],
            implicit: vec![Vec::new(), b"a/b".to_vec(), b"c".to_vec()],
        };
        assert_eq!(
            LayerTree::decode_payload(&t.encode_payload()),
            Some(([7; 32], t.implicit.clone()))
        );
        assert_eq!(
            LayerTree::decode_payload(&[1; 32]),
            Some(([1; 32], Vec::new()))
        );
        assert_eq!(LayerTree::decode_payload(&[1; 31]), None, "too short");
        let mut unterminated = [0u8; 32].to_vec();
        unterminated.extend_from_slice(b"a\0b");
        assert_eq!(LayerTree::decode_payload(&unterminated), None);
    }
}
