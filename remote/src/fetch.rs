//! Reading objects from a remote, shared by pull and audit: packed objects by coalesced ranged
//! GETs, and standalone blobs as verified streams. Both check every object against its id; what
//! to do with a bad one (stop, or note it and go on) is the caller's choice.

use std::collections::HashMap;
use std::io::{Read, Write};

use bytes::Bytes;
use cairn_store::Id;
use futures::{Stream, StreamExt};

use crate::connection::Remote;
use crate::error::Result;
use crate::pack::{self, IndexEntry};

/// Neighbouring objects of one pack are fetched in one ranged GET when the gap between them is
/// at most this many bytes (fewer requests for a little more transfer).
pub const COALESCE_GAP: u64 = 1024 * 1024;
/// A coalesced range never exceeds this many bytes. It bounds memory: each request in flight
/// holds its range and the objects decoded from it (at 32 MiB, `get --remote` of a 1 GB tree
/// peaked at 194 MB RSS: docs/benchmarks.md, R2).
pub const MAX_RANGE: u64 = 16 * 1024 * 1024;
/// Chunks of a standalone blob buffered between the download and the thread that checks it.
const STREAM_CHUNKS_AHEAD: usize = 4;

/// Where a needed object is and what it is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placed {
    pub(crate) pack: Id,
    pub(crate) entry: IndexEntry,
}

/// One coalesced ranged GET: the bytes `start..end` of `pack`, holding `members`.
pub(crate) struct RangeJob {
    pub(crate) pack: Id,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) members: Vec<Placed>,
}

/// What one range request brought: the job, and the bytes or the request's error.
pub(crate) struct FetchedRange {
    pub(crate) job: RangeJob,
    pub(crate) path: String,
    pub(crate) bytes: Result<Bytes>,
}

impl RangeJob {
    /// The stored bytes of `member` (one of the job's) in `bytes` (what the job fetched), and
    /// its content checked against its id and size, or why it is not what its index entry says.
    pub(crate) fn object<'b>(
        &self,
        bytes: &'b [u8],
        member: &Placed,
    ) -> std::result::Result<(&'b [u8], Vec<u8>), String> {
        let at = (member.entry.offset - self.start) as usize;
        let stored = &bytes[at..at + member.entry.len as usize];
        pack::decode_object(&member.entry, stored).map(|content| (stored, content))
    }
}

/// The ranged GETs that fetch `objects`, coalesced per pack: neighbours less than
/// [`COALESCE_GAP`] apart share a request of at most [`MAX_RANGE`] bytes.
pub(crate) fn range_jobs(objects: &[Placed]) -> Vec<RangeJob> {
    let mut by_pack: HashMap<Id, Vec<Placed>> = HashMap::new();
    for p in objects {
        by_pack.entry(p.pack).or_default().push(*p);
    }
    let mut jobs = Vec::new();
    for (pack, mut members) in by_pack {
        members.sort_by_key(|p| p.entry.offset);
        let mut cur: Option<RangeJob> = None;
        for p in members {
            let (s, e) = (p.entry.offset, p.entry.offset + p.entry.len);
            match &mut cur {
                Some(j) if s <= j.end + COALESCE_GAP && e - j.start <= MAX_RANGE => {
                    j.end = j.end.max(e);
                    j.members.push(p);
                }
                _ => {
                    jobs.extend(cur.take());
                    cur = Some(RangeJob {
                        pack,
                        start: s,
                        end: e,
                        members: vec![p],
                    });
                }
            }
        }
        jobs.extend(cur);
    }
    jobs
}

/// Fetches `objects` with the remote's concurrency, yielding each range as it arrives.
pub(crate) fn ranges<'r>(
    remote: &'r Remote,
    objects: &[Placed],
) -> impl Stream<Item = FetchedRange> + 'r {
    futures::stream::iter(range_jobs(objects).into_iter().map(move |job| async move {
        let path = remote.pack_path(&job.pack);
        let bytes = remote.get_range(&path, job.start..job.end).await;
        FetchedRange {
            job,
            path: path.to_string(),
            bytes,
        }
    }))
    .buffer_unordered(remote.options().concurrency)
}

/// Downloads the standalone blob `id` (a zstd stream of `size` bytes of content) and checks it
/// as it arrives, on a blocking thread fed through a bounded channel, optionally keeping the
/// stored bytes in `keep` (a file the caller adopts once it checks out). Returns the bytes
/// downloaded, or why the blob is not what it should be; the outer error is a failed request
/// or a failed write to `keep`.
pub(crate) async fn standalone(
    remote: &Remote,
    id: Id,
    size: u64,
    keep: Option<(std::fs::File, std::path::PathBuf)>,
) -> Result<std::result::Result<u64, String>> {
    let path = remote.blob_path(&id);
    let got = remote.get_stream(&path).await?;
    let mut stream = got.into_stream();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_CHUNKS_AHEAD);
    let checker = tokio::task::spawn_blocking(move || check_stream(rx, id, size, keep));
    let mut down = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(remote.request_err(&path))?;
        down += chunk.len() as u64;
        if tx.send(chunk).await.is_err() {
            break; // the checker stopped early; its verdict says why
        }
    }
    drop(tx);
    remote.add_bytes_down(down);
    let verdict = checker.await.expect("checker task panicked")?;
    Ok(verdict.map(|()| down))
}

/// The blocking half of [`standalone`]: writes each chunk to `keep` and decompresses and hashes
/// the stream. The outer error is a failed local write.
fn check_stream(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    id: Id,
    size: u64,
    keep: Option<(std::fs::File, std::path::PathBuf)>,
) -> Result<std::result::Result<(), String>> {
    let (keep, keep_path) = match keep {
        Some((f, p)) => (Some(f), p),
        None => (None, std::path::PathBuf::new()),
    };
    /// Reads the channel's chunks as one stream, copying them to `keep` on the way.
    struct Chunks {
        rx: tokio::sync::mpsc::Receiver<Bytes>,
        cur: Bytes,
        keep: Option<std::fs::File>,
        write_error: Option<std::io::Error>,
    }
    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            while self.cur.is_empty() {
                match self.rx.blocking_recv() {
                    Some(b) => {
                        if let Some(f) = &mut self.keep
                            && let Err(e) = f.write_all(&b)
                        {
                            let msg = e.to_string();
                            self.write_error = Some(e);
                            return Err(std::io::Error::other(msg));
                        }
                        self.cur = b;
                    }
                    None => return Ok(0),
                }
            }
            let n = buf.len().min(self.cur.len());
            buf[..n].copy_from_slice(&self.cur[..n]);
            self.cur = self.cur.slice(n..);
            Ok(n)
        }
    }
    let mut chunks = Chunks {
        rx,
        cur: Bytes::new(),
        keep,
        write_error: None,
    };
    let verdict = (|| {
        let mut dec = zstd::Decoder::new(&mut chunks).map_err(|e| e.to_string())?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = dec.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > size {
                return Err(format!("longer than its {size} bytes"));
            }
            h.update(&buf[..n]);
        }
        if total != size {
            return Err(format!("{total} bytes where {size} were recorded"));
        }
        let got = Id::from_hash(h.finalize());
        if got != id {
            return Err(format!("content hashes to {got}"));
        }
        Ok(())
    })();
    let local = |source| {
        crate::RemoteError::Local(cairn_store::Error::Io {
            path: keep_path.clone(),
            source,
        })
    };
    if let Some(e) = chunks.write_error.take() {
        return Err(local(e));
    }
    // Whatever follows the zstd stream in the object would be trailing garbage: drain it so
    // that the download finishes, and count it as corruption.
    if verdict.is_ok() {
        let mut rest = [0u8; 1];
        if matches!(chunks.read(&mut rest), Ok(n) if n > 0) {
            return Ok(Err("bytes after the end of its zstd stream".into()));
        }
    }
    if let Some(f) = &mut chunks.keep {
        f.flush().map_err(local)?;
    }
    Ok(verdict)
}
