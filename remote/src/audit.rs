//! The auditor's path: check keys on a remote without touching any local store. Every object a
//! key reaches is fetched and hashed, and the record's signatures are checked; problems are
//! collected into a report rather than stopping at the first.

use std::collections::{HashMap, HashSet};

use cairn_store::walk::{self, Load};
use cairn_store::{EntryKind, Id, Key, Root, Tree};
use futures::StreamExt;
use serde::Serialize;

use crate::config::TrustPolicy;
use crate::connection::{Remote, RequestCounts};
use crate::error::Result;
use crate::fetch::{self, Placed};
use crate::pack::{self, ObjectKind};
use crate::pull::fetch_record;
use crate::spans::Span;

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
    // Every place of each object (it may sit in several of the packs), for the spans check.
    let mut places: HashMap<Id, Vec<Placed>> = HashMap::new();
    for p in &rr.packs {
        let path = remote.index_path(p);
        match remote.get_opt(&path).await? {
            None => a.missing.push(format!("pack index {path}")),
            Some(bytes) => match pack::decode_index(&bytes, p) {
                Ok((entries, _)) => {
                    for entry in entries {
                        let at = Placed { pack: *p, entry };
                        placed.entry(entry.id).or_insert(at);
                        places.entry(entry.id).or_default().push(at);
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
    if let Root::File { id, .. } = rr.record.root {
        blobs.insert(id, placed.get(&id).map_or(rr.record.size, |p| p.entry.size));
    }
    let roots = match rr.record.root {
        Root::Tree { id } => vec![id],
        Root::File { .. } => vec![],
    };
    let mut problems = Vec::new();
    let mut walked: Vec<Id> = Vec::new();
    walk::closure(
        roots,
        |id| {
            let Some(bytes) = tree_bytes.get(id) else {
                problems.push((*id, None));
                return Ok(Load::Known);
            };
            Ok(match Tree::decode(bytes) {
                Ok(t) => Load::Tree(t),
                Err(e) => {
                    problems.push((*id, Some(e.to_string())));
                    Load::Known
                }
            })
        },
        |id, tree| {
            walked.push(*id);
            for e in &tree.entries {
                if let EntryKind::File { size, blob } = e.kind {
                    blobs.insert(blob, size);
                }
            }
            Ok::<(), std::convert::Infallible>(())
        },
    )
    .unwrap_or_else(|never| match never {});
    for (id, corrupt) in problems {
        match corrupt {
            Some(e) => a.corrupt.push(format!("tree {id}: {e}")),
            // A tree whose fetched bytes were corrupt is reported as such already.
            None if a.corrupt.iter().any(|c| c.contains(&id.to_string())) => {}
            None => a.missing.push(format!("tree {id}")),
        }
    }

    // The record's spans must cover every object of its closure in the packs it gives spans
    // for: remote gc trusts them to tell which objects of a pack are live.
    if !rr.spans.is_empty() {
        let used = walked.iter().chain(blobs.keys()).filter_map(|id| {
            let at = places.get(id)?;
            let covered = at.iter().any(|p| {
                rr.spans.get(&p.pack).is_none_or(|s| {
                    s.contains(Span {
                        offset: p.entry.offset,
                        len: p.entry.len,
                    })
                })
            });
            (!covered).then(|| {
                format!(
                    "key record: its spans of pack {} omit object {id}",
                    at[0].pack
                )
            })
        });
        a.corrupt.extend(used.collect::<Vec<_>>());
        if let Some(p) = rr.spans.keys().find(|p| !rr.packs.contains(p)) {
            a.corrupt.push(format!(
                "key record: spans of pack {p}, which it does not name"
            ));
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
    let mut ranges = fetch::ranges(remote, objects);
    let mut good = Vec::new();
    while let Some(range) = ranges.next().await {
        let bytes = match &range.bytes {
            Ok(b) => b.clone(),
            Err(e) => {
                for p in &range.job.members {
                    a.missing
                        .push(format!("object {} in {}: {e}", p.entry.id, range.path));
                }
                continue;
            }
        };
        for p in &range.job.members {
            match range.job.object(&bytes, p) {
                Ok((_, content)) => {
                    a.objects_checked += 1;
                    a.bytes_checked += content.len() as u64;
                    good.push((*p, content));
                }
                Err(reason) => a
                    .corrupt
                    .push(format!("object {} in {}: {reason}", p.entry.id, range.path)),
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
    if remote.head(&remote.blob_path(&id)).await?.is_none() {
        return Ok(Err("missing".into()));
    }
    Ok(fetch::standalone(remote, id, size, None).await?.map(drop))
}
