//! Decomposing image layers into the store (see `cairn_store::LayerTree`): each layer's tar
//! stream is read once, in parallel across layers, verified against the layer blob's id as it
//! streams, and kept as a tree whose files are ordinary blobs. Later extractions reuse it.

use std::cell::RefCell;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_store::blobs::VerifiedReader;
use cairn_store::{GcLock, Id, LayerTree, Progress, Store};

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
    held: &GcLock,
    progress: &dyn Progress,
) -> Result<(Vec<LayerTree>, usize)> {
    let store = image.store;
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
        let cached = store.layer_tree(&id)?;
        if cached.is_none() {
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
                        let r = decompose(store, &id, size, &from, max_bytes, held);
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

fn decompose(
    store: &Store,
    id: &Id,
    size: u64,
    from: &std::path::Path,
    max_bytes: u64,
    held: &GcLock,
) -> Result<LayerTree> {
    let raw = Rc::new(RefCell::new(store.open_blob(id, size)?));
    let buffered = BufReader::with_capacity(1 << 20, Shared(raw.clone()));
    let decoded = cairn_store::stream::decompressed(buffered).map_err(|e| OciError::Image {
        src: from.to_path_buf(),
        reason: format!("unreadable: {e}"),
    })?;
    let tar = CheckedToEnd {
        inner: decoded,
        raw,
    };
    Ok(store.decompose_layer(id, tar, from, max_bytes, held)?)
}
