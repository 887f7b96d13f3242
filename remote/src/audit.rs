//! The auditor's path: check keys on a remote without touching any local store. Every object a
//! key reaches is fetched and hashed, and the record's signatures are checked; problems are
//! collected into a report rather than stopping at the first.

use std::collections::{HashMap, HashSet};

use cairn_store::{EntryKind, Id, Key, Root, Tree};
use futures::StreamExt;
use serde::Serialize;

use crate::config::TrustPolicy;
use crate::connection::{Remote, RequestCounts};
use crate::error::Result;
use crate::pack::{self, ObjectKind};
use crate::pull::{Placed, fetch_record, range_jobs};

/// One signature on an audited record.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureAudit {
    /// The signing key's name.
    pub key: String,
    /// `valid` (by a trusted key), `invalid` (a trusted key's name, but the signature does not
    /// verify), or `unknown-key` (no trusted key of that name).
    pub status: &'static str,
}

/// The audit of one key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyAudit {
    /// The key.
    pub key: String,
    /// Its root, if the record was readable.
    pub root: Option<Root>,
    /// Whether a valid signature by a trusted key is present.
    pub trusted: bool,
    /// Each signature found.
    pub signatures: Vec<SignatureAudit>,
    /// Objects fetched and hashed.
    pub objects_checked: u64,
    /// Their content bytes.
    pub bytes_checked: u64,
    /// Missing objects (ids, with where they were looked for).
    pub missing: Vec<String>,
    /// Objects whose bytes do not match their ids.
    pub corrupt: Vec<String>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// The remote's URL.
    pub remote: String,
    /// True if every key is present, complete, uncorrupted, and (when signatures are required)
    /// signed by a trusted key.
    pub clean: bool,
    /// Per key.
    pub keys: Vec<KeyAudit>,
    /// Requests made.
    pub requests: RequestCounts,
}

/// Audits `keys` on `remote`.
pub async fn audit(remote: &Remote, keys: &[Key], trust: &TrustPolicy) -> Result<AuditReport> {
    let mut out = Vec::new();
    for key in keys {
        out.push(audit_key(remote, key, trust).await?);
    }
    let clean = out.iter().all(|k| {
        k.root.is_some()
            && k.missing.is_empty()
            && k.corrupt.is_empty()
            && (k.trusted || !trust.required)
    });
    Ok(AuditReport {
        remote: remote.url().to_string(),
        clean,
        keys: out,
        requests: remote.counts(),
    })
}

async fn audit_key(remote: &Remote, key: &Key, trust: &TrustPolicy) -> Result<KeyAudit> {
    let mut a = KeyAudit {
        key: key.to_string(),
        root: None,
        trusted: false,
        signatures: Vec::new(),
        objects_checked: 0,
        bytes_checked: 0,
        missing: Vec::new(),
        corrupt: Vec::new(),
    };
    let rr = match fetch_record(remote, key).await {
        Ok(Some(rr)) => rr,
        Ok(None) => {
            a.missing
                .push(format!("key record {}", remote.key_path(key)));
            return Ok(a);
        }
        Err(e) => {
            a.corrupt.push(e.to_string());
            return Ok(a);
        }
    };
    a.root = Some(rr.record.root);
    for sig in &rr.record.signatures {
        let status = match trust.trusted.iter().find(|k| k.name() == sig.key) {
            Some(k) if k.verifies(&rr.record, sig) => {
                a.trusted = true;
                "valid"
            }
            Some(_) => "invalid",
            None => "unknown-key",
        };
        a.signatures.push(SignatureAudit {
            key: sig.key.clone(),
            status,
        });
    }

    // Where everything is.
    let mut placed: HashMap<Id, Placed> = HashMap::new();
    for p in &rr.packs {
        let path = remote.index_path(p);
        match remote.get_opt(&path).await? {
            None => a.missing.push(format!("pack index {path}")),
            Some(bytes) => match pack::decode_index(&bytes, p) {
                Ok((entries, _)) => {
                    for entry in entries {
                        placed.entry(entry.id).or_insert(Placed { pack: *p, entry });
                    }
                }
                Err(reason) => a.corrupt.push(format!("pack index {path}: {reason}")),
            },
        }
    }
    let standalone: HashSet<Id> = rr.blobs.iter().copied().collect();

    // Trees: fetch every tree in the packs, then walk from the root.
    let trees: Vec<Placed> = placed
        .values()
        .filter(|p| p.entry.kind == ObjectKind::Tree)
        .copied()
        .collect();
    let mut tree_bytes: HashMap<Id, Vec<u8>> = HashMap::new();
    for (p, content) in fetch_checked(remote, &trees, &mut a).await? {
        tree_bytes.insert(p.entry.id, content);
    }
    let mut blobs: HashMap<Id, u64> = rr
        .record
        .attachments
        .values()
        .map(|x| (x.id, x.size))
        .collect();
    let mut stack = match rr.record.root {
        Root::Tree { id } => vec![id],
        Root::File { id, .. } => {
            blobs.insert(id, placed.get(&id).map_or(rr.record.size, |p| p.entry.size));
            vec![]
        }
    };
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(bytes) = tree_bytes.get(&id) else {
            if !a.corrupt.iter().any(|c| c.contains(&id.to_string())) {
                a.missing.push(format!("tree {id}"));
            }
            continue;
        };
        match Tree::decode(bytes) {
            Ok(t) => {
                for e in t.entries {
                    match e.kind {
                        EntryKind::Dir { tree } => stack.push(tree),
                        EntryKind::File { size, blob } => {
                            blobs.insert(blob, size);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => a.corrupt.push(format!("tree {id}: {e}")),
        }
    }

    // Blobs.
    let mut packed = Vec::new();
    for (id, size) in &blobs {
        match placed.get(id) {
            Some(p) if p.entry.kind == ObjectKind::Blob && p.entry.size == *size => packed.push(*p),
            _ if standalone.contains(id) => match check_standalone(remote, *id, *size).await? {
                Ok(()) => {
                    a.objects_checked += 1;
                    a.bytes_checked += size;
                }
                Err(reason) => a
                    .corrupt
                    .push(format!("blob {id} at {}: {reason}", remote.blob_path(id))),
            },
            _ => a.missing.push(format!("blob {id}")),
        }
    }
    fetch_checked(remote, &packed, &mut a).await?;
    a.missing.sort();
    a.corrupt.sort();
    Ok(a)
}

/// Fetches and hashes packed objects, recording failures in `a`; returns the good contents.
async fn fetch_checked(
    remote: &Remote,
    objects: &[Placed],
    a: &mut KeyAudit,
) -> Result<Vec<(Placed, Vec<u8>)>> {
    let jobs = range_jobs(objects);
    let mut results =
        futures::stream::iter(jobs.into_iter().map(|(pack, s, e, members)| async move {
            let path = remote.pack_path(&pack);
            let got = remote.get_range(&path, s..e).await;
            (path, s, members, got)
        }))
        .buffer_unordered(remote.options().concurrency);
    let mut good = Vec::new();
    while let Some((path, s, members, got)) = results.next().await {
        let bytes = match got {
            Ok(b) => b,
            Err(e) => {
                for p in &members {
                    a.missing
                        .push(format!("object {} in {path}: {e}", p.entry.id));
                }
                continue;
            }
        };
        for p in members {
            let at = (p.entry.offset - s) as usize;
            match pack::decode_object(&p.entry, &bytes[at..at + p.entry.len as usize]) {
                Ok(content) => {
                    a.objects_checked += 1;
                    a.bytes_checked += content.len() as u64;
                    good.push((p, content));
                }
                Err(reason) => a
                    .corrupt
                    .push(format!("object {} in {path}: {reason}", p.entry.id)),
            }
        }
    }
    Ok(good)
}

/// Streams a standalone blob and checks it; the outer error is a failed request.
async fn check_standalone(
    remote: &Remote,
    id: Id,
    size: u64,
) -> Result<std::result::Result<(), String>> {
    let path = remote.blob_path(&id);
    let got = match remote.head(&path).await? {
        None => return Ok(Err("missing".into())),
        Some(_) => remote.get_stream(&path).await?,
    };
    let mut stream = got.into_stream();
    let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(4);
    let checker = tokio::task::spawn_blocking(move || {
        struct ChanReader {
            rx: std::sync::mpsc::Receiver<bytes::Bytes>,
            cur: bytes::Bytes,
        }
        impl std::io::Read for ChanReader {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                while self.cur.is_empty() {
                    match self.rx.recv() {
                        Ok(b) => self.cur = b,
                        Err(_) => return Ok(0),
                    }
                }
                let n = buf.len().min(self.cur.len());
                buf[..n].copy_from_slice(&self.cur[..n]);
                self.cur = self.cur.slice(n..);
                Ok(n)
            }
        }
        let r = ChanReader {
            rx,
            cur: bytes::Bytes::new(),
        };
        let mut dec = zstd::Decoder::new(r).map_err(|e| e.to_string())?;
        let mut h = blake3::Hasher::new();
        let n = std::io::copy(&mut dec, &mut h).map_err(|e| e.to_string())?;
        if n != size {
            return Err(format!("{n} bytes where {size} were recorded"));
        }
        let got = Id::from_hash(h.finalize());
        if got != id {
            return Err(format!("content hashes to {got}"));
        }
        Ok(())
    });
    let mut down = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(remote.request_err(&path))?;
        down += chunk.len() as u64;
        if tx.send(chunk).is_err() {
            break; // the checker stopped early; its verdict says why
        }
    }
    drop(tx);
    remote.add_bytes_down(down);
    Ok(checker.await.expect("join"))
}
