//! Printing results: plain text for people, `--json` for machines (shapes in docs/cli.md).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use cairn_store::walk::{self, Step};
use cairn_store::{
    Added, EntryKind, GcReport, Key, KeyRecord, LogEntry, MaterializeStats, ReadSession, Root,
    Totals, VerifyReport,
};
use serde::Serialize;
use serde_json::json;

/// Where results go: stdout, as text or JSON.
pub struct Out {
    pub json: bool,
}

/// `println!` that returns a failed write to stdout as an error instead of panicking: a reader
/// that went away (`cairn ls | head`) is an `io::Error` of kind `BrokenPipe`, which `main`
/// turns into a quiet exit.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::output::stdout_error)?
    }};
}
pub(crate) use outln;

/// stdout's reader went away: not a failure of cairn's, so `main` exits quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// A failed write to stdout as an error: [`StdoutClosed`] for a closed pipe.
pub(crate) fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to stdout")
    }
}

pub(crate) fn print_json(v: &impl Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A record as JSON with `last_used` (epoch seconds; the creation time for a key never read).
fn with_last_used(r: &KeyRecord, last_used: Option<u64>) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("records serialize");
    v["last_used"] = json!(last_used.unwrap_or(r.created).max(r.created));
    v
}

/// Seconds since the epoch as an RFC 3339 UTC time (`2026-11-30T08:15:00Z`).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One line of a tree listing.
#[derive(Serialize)]
struct Listed {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: Option<u64>,
    id: Option<String>,
    target: Option<String>,
}

impl Out {
    pub fn put(&self, added: &Added, rec: Option<&KeyRecord>) -> Result<()> {
        if self.json {
            return print_json(&json!({
                "key": rec.map(|r| r.key.as_str()),
                "root": added.root,
                "size": added.totals.size,
                "files": added.totals.files,
                "new_blobs": added.new_blobs,
                "new_bytes": added.new_bytes,
            }));
        }
        tracing::info!(
            "{} files, {} bytes; {} new blobs ({} bytes on disk)",
            added.totals.files,
            added.totals.size,
            added.new_blobs,
            added.new_bytes
        );
        outln!("{}", added.root.id());
        Ok(())
    }

    pub fn hash(&self, root: &Root, totals: &Totals) -> Result<()> {
        if self.json {
            return print_json(&json!({"root": root, "size": totals.size, "files": totals.files}));
        }
        outln!("{}", root.id());
        Ok(())
    }

    /// `key` is the key restored (`None` for an id); a fallback differs from `target`.
    pub fn get(
        &self,
        root: &Root,
        key: Option<&Key>,
        target: &str,
        dest: &Path,
        s: &MaterializeStats,
    ) -> Result<()> {
        let fallback = key.is_some_and(|k| k.as_str() != target);
        if self.json {
            return print_json(&json!({
                "root": root,
                "key": key,
                "fallback": fallback,
                "dest": dest.display().to_string(),
                "stats": s,
            }));
        }
        if let (true, Some(k)) = (fallback, key) {
            outln!("restored {k} (fallback for {target})");
        }
        tracing::info!(
            "{}: {} files ({} linked, {} cloned, {} copied), {} dirs, {} symlinks, {} bytes",
            dest.display(),
            s.files,
            s.linked,
            s.cloned,
            s.copied,
            s.dirs,
            s.symlinks,
            s.bytes
        );
        Ok(())
    }

    pub fn export(&self, root: &Root, output: &Path, entries: u64) -> Result<()> {
        if self.json {
            return print_json(&json!({
                "root": root,
                "output": output.display().to_string(),
                "entries": entries,
            }));
        }
        tracing::info!("{}: {entries} entries", output.display());
        Ok(())
    }

    /// Keys with their last use (`None`: never read since it was bound).
    pub fn ls(&self, recs: &[KeyRecord], used: &BTreeMap<String, u64>) -> Result<()> {
        if self.json {
            let rows: Vec<serde_json::Value> = recs
                .iter()
                .map(|r| with_last_used(r, used.get(r.key.as_str()).copied()))
                .collect();
            return print_json(&rows);
        }
        for r in recs {
            let last = used.get(r.key.as_str()).copied().unwrap_or(r.created);
            outln!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.key,
                r.root.id(),
                r.size,
                r.files,
                rfc3339(r.created),
                rfc3339(last)
            );
        }
        Ok(())
    }

    /// A key's record and its last use.
    pub fn record(&self, r: &KeyRecord, last_used: Option<u64>) -> Result<()> {
        if self.json {
            return print_json(&with_last_used(r, last_used));
        }
        outln!("key:     {}", r.key);
        match r.root {
            Root::Tree { id } => outln!("root:    {id} (tree)"),
            Root::File { id, executable } => outln!(
                "root:    {id} ({} file)",
                if executable { "executable" } else { "regular" }
            ),
        }
        outln!("created: {}", rfc3339(r.created));
        outln!(
            "used:    {}",
            last_used.map_or_else(|| "never".to_string(), rfc3339)
        );
        outln!("size:    {}", r.size);
        outln!("files:   {}", r.files);
        for (k, v) in &r.labels {
            outln!("label:   {k}={v}");
        }
        for (name, a) in &r.attachments {
            outln!("attach:  {name} {} ({} bytes)", a.id, a.size);
        }
        for s in &r.signatures {
            outln!("signed:  {}", s.key);
        }
        Ok(())
    }

    pub fn tree_listing(&self, session: &ReadSession, root: &Root, recursive: bool) -> Result<()> {
        let mut rows = Vec::new();
        match root {
            Root::File { id, executable } => rows.push(Listed {
                path: String::new(),
                kind: "file",
                mode: if *executable { "0755" } else { "0644" }.into(),
                uid: 0,
                gid: 0,
                mtime: 0,
                size: None,
                id: Some(id.to_string()),
                target: None,
            }),
            Root::Tree { id } => {
                let closure = session.closure(&[*root])?;
                list(&closure, *id, recursive, &mut rows)?;
            }
        }
        if self.json {
            return print_json(&rows);
        }
        for r in rows {
            let tail = r.target.map(|t| format!(" -> {t}")).unwrap_or_default();
            outln!(
                "{:<8} {} {:>5}:{:<5} {:>12} {} {}{}",
                r.kind,
                r.mode,
                r.uid,
                r.gid,
                r.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                r.id.unwrap_or_else(|| "-".into()),
                r.path,
                tail
            );
        }
        Ok(())
    }

    pub fn log(&self, entries: &[LogEntry]) -> Result<()> {
        if self.json {
            return print_json(&entries);
        }
        for e in entries {
            let root = e
                .root
                .map(|r| r.id().to_string())
                .unwrap_or_else(|| "-".into());
            let prev = e
                .previous
                .map(|r| format!(" (was {})", r.id()))
                .unwrap_or_default();
            outln!("{}\t{:?}\t{root}{prev}", e.time, e.action);
        }
        Ok(())
    }

    /// A key unbound: its old record, or `None` for one that could not be read.
    pub fn removed(&self, key: &Key, r: Option<&KeyRecord>) -> Result<()> {
        if self.json {
            return match r {
                Some(r) => print_json(r),
                None => print_json(&json!({"key": key, "record_unreadable": true})),
            };
        }
        match r {
            Some(r) => tracing::info!("unbound {key} (was {})", r.root.id()),
            None => tracing::info!("unbound {key} (its record was unreadable)"),
        }
        Ok(())
    }

    /// Keys whose records `rm --remote` deleted (`false`: there was none).
    pub fn removed_remote(&self, remote: &str, removed: &[(Key, bool)]) -> Result<()> {
        if self.json {
            let rows: Vec<serde_json::Value> = removed
                .iter()
                .map(|(k, was)| json!({"key": k, "removed": was}))
                .collect();
            return print_json(&json!({"remote": remote, "keys": rows}));
        }
        for (k, was) in removed {
            if *was {
                tracing::info!("removed {k} from {remote}");
            } else {
                tracing::warn!("{k} was not on {remote}");
            }
        }
        Ok(())
    }

    pub fn verify(&self, r: &VerifyReport, untrusted: Option<&[String]>) -> Result<()> {
        if self.json {
            return print_json(&json!({
                "clean": r.is_clean() && untrusted.is_none_or(|u| u.is_empty()),
                "untrusted": untrusted,
                "blobs": r.blobs,
                "bytes": r.bytes,
                "trees": r.trees,
                "keys": r.keys,
                "checkouts": r.checkouts,
                "checkout_bytes": r.checkout_bytes,
                "problems": r.problems,
            }));
        }
        for p in &r.problems {
            let what = match (&p.id, &p.key) {
                (Some(id), _) => id.to_string(),
                (None, Some(key)) => format!("of key {key}"),
                (None, None) => String::new(),
            };
            outln!("{:?} {} {what}: {}", p.fault, p.object, p.detail);
        }
        for u in untrusted.unwrap_or_default() {
            outln!("Untrusted {u}");
        }
        eprintln!(
            "verified {} blobs ({} bytes), {} trees, {} keys, {} checkout objects ({} bytes): {}",
            r.blobs,
            r.bytes,
            r.trees,
            r.keys,
            r.checkouts,
            r.checkout_bytes,
            if r.is_clean() {
                "clean".to_string()
            } else {
                format!("{} problems", r.problems.len())
            }
        );
        Ok(())
    }

    pub fn gc(&self, r: &GcReport) -> Result<()> {
        if self.json {
            return print_json(r);
        }
        for k in &r.removed {
            outln!(
                "{} {}\t{} bytes\t{}",
                if r.dry_run { "would remove" } else { "removed" },
                k.key,
                k.size,
                serde_json::to_value(k.reason)?.as_str().unwrap_or_default()
            );
        }
        outln!(
            "{} {} trees, {} blobs, {} orphan files, {} temp files; {} bytes {}; {} objects kept",
            if r.dry_run { "would delete" } else { "deleted" },
            r.trees,
            r.blobs,
            r.orphan_files,
            r.temp_files,
            r.bytes_freed,
            if r.dry_run { "to free" } else { "freed" },
            r.kept
        );
        outln!(
            "{} {} checkout objects ({} bytes); {} kept",
            if r.dry_run { "would delete" } else { "deleted" },
            r.checkouts_deleted,
            r.checkout_bytes,
            r.checkouts_kept
        );
        if r.incomplete {
            outln!("time budget spent: some garbage is left for the next gc");
        }
        Ok(())
    }

    pub fn usage(&self, u: &cairn_store::StoreUsage) -> Result<()> {
        if self.json {
            return print_json(&json!({
                "blobs": u.blobs,
                "packs": u.packs,
                "checkouts": u.checkouts,
                "checkout_links": u.checkout_links,
                "index": u.index,
                "temp": u.temp,
                "total_bytes": u.total(),
            }));
        }
        for (what, x) in [
            ("blobs", &u.blobs),
            ("packs", &u.packs),
            ("checkouts", &u.checkouts),
            ("index", &u.index),
            ("temp", &u.temp),
        ] {
            outln!("{what:<10} {:>8} files {:>14} bytes", x.files, x.bytes);
        }
        outln!("{:<10} {:>8}       {:>14} bytes", "total", "", u.total());
        if u.checkout_links > 0 {
            outln!(
                "checkout objects have {} links from restored folders (their bytes stay until those go too)",
                u.checkout_links
            );
        }
        Ok(())
    }
}

impl Out {
    pub fn remote_gc(&self, r: &cairn_remote::RemoteGcReport) -> Result<()> {
        if self.json {
            return print_json(r);
        }
        let verb = |done: &'static str, would: &'static str| if r.dry_run { would } else { done };
        for k in &r.removed {
            outln!("{} key {}", verb("removed", "would remove"), k.key);
        }
        for u in &r.deleted {
            outln!("{} {u}", verb("deleted", "would delete"));
        }
        for u in &r.tombstoned {
            outln!("{} {u}", verb("tombstoned", "would tombstone"));
        }
        for u in &r.recovered {
            outln!("{} {u}", verb("recovered", "would recover"));
        }
        for u in &r.repacked {
            outln!("{} {u}", verb("repacked", "would repack"));
        }
        for why in &r.repack_skipped {
            tracing::warn!("left alone: {why}");
        }
        tracing::info!(
            "{} keys, {} live units, {} waiting for the grace period, {} bytes {}",
            r.keys,
            r.live_units,
            r.waiting,
            r.bytes_freed,
            verb("freed", "to free")
        );
        Ok(())
    }

    pub fn push(&self, s: &cairn_remote::PushSummary) -> Result<()> {
        if self.json {
            return print_json(s);
        }
        eprintln!(
            "pushed {} keys: {} objects sent ({} bytes, {} packs, {} large blobs), {} already there; {} requests ({} PUT, {} GET, {} HEAD) in {:.2}s",
            s.keys.len(),
            s.objects_sent,
            s.bytes_sent,
            s.packs,
            s.standalone_blobs,
            s.objects_skipped,
            s.requests.puts + s.requests.gets + s.requests.heads,
            s.requests.puts,
            s.requests.gets,
            s.requests.heads,
            s.seconds
        );
        Ok(())
    }

    pub fn pull(&self, s: &cairn_remote::PullSummary) -> Result<()> {
        if self.json {
            return print_json(s);
        }
        for r in &s.keys {
            outln!("{}\t{}", r.key, r.root.id());
        }
        self.pull_quiet(s);
        Ok(())
    }

    /// The summary line of a pull, on stderr (used where stdout belongs to another result).
    pub fn pull_quiet(&self, s: &cairn_remote::PullSummary) {
        if self.json {
            return;
        }
        eprintln!(
            "pulled {} keys: {} objects received ({} bytes), {} already here; {} requests ({} GET, {} HEAD) in {:.2}s",
            s.keys.len(),
            s.objects_received,
            s.bytes_received,
            s.objects_skipped,
            s.requests.gets + s.requests.heads + s.requests.puts,
            s.requests.gets,
            s.requests.heads,
            s.seconds
        );
    }

    pub fn attachments(&self, rec: &KeyRecord) -> Result<()> {
        if self.json {
            return print_json(&rec.attachments);
        }
        for (name, a) in &rec.attachments {
            outln!("{name}\t{}\t{}", a.id, a.size);
        }
        Ok(())
    }

    pub fn remotes(&self, c: &cairn_remote::Config) -> Result<()> {
        if self.json {
            return print_json(c);
        }
        for (name, r) in &c.remotes {
            let mut flags = Vec::new();
            if c.default_remote.as_deref() == Some(name.as_str()) {
                flags.push("default");
            }
            if r.read_only {
                flags.push("read-only");
            }
            if r.write_only {
                flags.push("write-only");
            }
            outln!("{name}\t{}\t{}", r.url, flags.join(","));
        }
        Ok(())
    }
}

/// Lists tree `id` depth first, in name order (the whole tree with `recursive`, else its top
/// level).
fn list(
    closure: &cairn_store::Closure,
    id: cairn_store::Id,
    recursive: bool,
    rows: &mut Vec<Listed>,
) -> Result<()> {
    walk::paths(
        &id,
        (),
        |t| closure.tree(t),
        |_, path, e| {
            let path = path
                .iter()
                .map(|seg| String::from_utf8_lossy(seg))
                .collect::<Vec<_>>()
                .join("/");
            let (size, oid, target) = match &e.kind {
                EntryKind::File { size, blob } => (Some(*size), Some(blob.to_string()), None),
                EntryKind::Dir { tree } => (None, Some(tree.to_string()), None),
                EntryKind::Symlink { target } | EntryKind::Hardlink { target } => (
                    None,
                    None,
                    Some(String::from_utf8_lossy(target).into_owned()),
                ),
                EntryKind::CharDevice { major, minor }
                | EntryKind::BlockDevice { major, minor } => {
                    (None, None, Some(format!("{major}:{minor}")))
                }
                EntryKind::Fifo => (None, None, None),
            };
            rows.push(Listed {
                path,
                kind: e.kind.type_name(),
                mode: format!("{:04o}", e.meta.mode),
                uid: e.meta.uid,
                gid: e.meta.gid,
                mtime: e.meta.mtime,
                size,
                id: oid,
                target,
            });
            Ok(if recursive {
                Step::Descend(())
            } else {
                Step::Next
            })
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_751_727), "2026-11-27T03:55:27Z");
    }
}
