//! Printing results: plain text for people, `--json` for machines (shapes in docs/cli.md).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Result;
use cairn_store::{
    Added, EntryKind, GcReport, KeyRecord, LogEntry, MaterializeStats, Root, Store, Totals,
    VerifyReport,
};
use serde::Serialize;
use serde_json::json;

/// Where results go: stdout, as text or JSON.
pub struct Out {
    pub json: bool,
}

fn print_json(v: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
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
        println!("{}", added.root.id());
        Ok(())
    }

    pub fn hash(&self, root: &Root, totals: &Totals) -> Result<()> {
        if self.json {
            return print_json(&json!({"root": root, "size": totals.size, "files": totals.files}));
        }
        println!("{}", root.id());
        Ok(())
    }

    pub fn get(&self, root: &Root, dest: &Path, s: &MaterializeStats) -> Result<()> {
        if self.json {
            return print_json(&json!({
                "root": root,
                "dest": dest.display().to_string(),
                "stats": s,
            }));
        }
        tracing::info!(
            "{}: {} files, {} dirs, {} symlinks, {} bytes",
            dest.display(),
            s.files,
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

    pub fn ls(&self, recs: &[KeyRecord]) -> Result<()> {
        if self.json {
            return print_json(&recs);
        }
        for r in recs {
            println!("{}\t{}\t{}\t{}", r.key, r.root.id(), r.size, r.files);
        }
        Ok(())
    }

    pub fn record(&self, r: &KeyRecord) -> Result<()> {
        if self.json {
            return print_json(r);
        }
        println!("key:     {}", r.key);
        match r.root {
            Root::Tree { id } => println!("root:    {id} (tree)"),
            Root::File { id, executable } => println!(
                "root:    {id} ({} file)",
                if executable { "executable" } else { "regular" }
            ),
        }
        println!("created: {}", r.created);
        println!("size:    {}", r.size);
        println!("files:   {}", r.files);
        for (k, v) in &r.labels {
            println!("label:   {k}={v}");
        }
        for (name, a) in &r.attachments {
            println!("attach:  {name} {} ({} bytes)", a.id, a.size);
        }
        for s in &r.signatures {
            println!("signed:  {}", s.key);
        }
        Ok(())
    }

    pub fn tree_listing(&self, store: &Store, root: &Root, recursive: bool) -> Result<()> {
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
                let closure = store.closure(root)?;
                list(&closure, *id, "", recursive, &mut rows);
            }
        }
        if self.json {
            return print_json(&rows);
        }
        for r in rows {
            let tail = r.target.map(|t| format!(" -> {t}")).unwrap_or_default();
            println!(
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
            println!("{}\t{:?}\t{root}{prev}", e.time, e.action);
        }
        Ok(())
    }

    pub fn removed(&self, r: &KeyRecord) -> Result<()> {
        if self.json {
            return print_json(r);
        }
        tracing::info!("unbound {} (was {})", r.key, r.root.id());
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
                "problems": r.problems,
            }));
        }
        for p in &r.problems {
            println!("{:?} {} {}: {}", p.fault, p.object, p.id, p.detail);
        }
        for u in untrusted.unwrap_or_default() {
            println!("Untrusted {u}");
        }
        eprintln!(
            "verified {} blobs ({} bytes), {} trees, {} keys: {}",
            r.blobs,
            r.bytes,
            r.trees,
            r.keys,
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
        println!(
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
        Ok(())
    }
}

impl Out {
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
            println!("{}\t{}", r.key, r.root.id());
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
            println!("{name}\t{}\t{}", a.id, a.size);
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
            println!("{name}\t{}\t{}", r.url, flags.join(","));
        }
        Ok(())
    }
}

/// Lists tree `id` depth first, in name order, with an explicit stack (a tree pulled from
/// elsewhere may be nested arbitrarily deep).
fn list(
    closure: &cairn_store::Closure,
    id: cairn_store::Id,
    prefix: &str,
    recursive: bool,
    rows: &mut Vec<Listed>,
) {
    // (tree, path prefix of its entries, index of its next entry)
    let mut stack = vec![(id, prefix.to_string(), 0usize)];
    while let Some((tid, pre, i)) = stack.pop() {
        let Some(e) = closure.trees.get(&tid).and_then(|t| t.entries.get(i)) else {
            continue;
        };
        stack.push((tid, pre.clone(), i + 1));
        let path = format!(
            "{pre}{}",
            String::from_utf8_lossy(std::ffi::OsStr::from_bytes(&e.name).as_bytes())
        );
        let (size, oid, target) = match &e.kind {
            EntryKind::File { size, blob } => (Some(*size), Some(blob.to_string()), None),
            EntryKind::Dir { tree } => (None, Some(tree.to_string()), None),
            EntryKind::Symlink { target } | EntryKind::Hardlink { target } => (
                None,
                None,
                Some(String::from_utf8_lossy(target).into_owned()),
            ),
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                (None, None, Some(format!("{major}:{minor}")))
            }
            EntryKind::Fifo => (None, None, None),
        };
        rows.push(Listed {
            path: path.clone(),
            kind: e.kind.type_name(),
            mode: format!("{:04o}", e.meta.mode),
            uid: e.meta.uid,
            gid: e.meta.gid,
            mtime: e.meta.mtime,
            size,
            id: oid,
            target,
        });
        if recursive && let EntryKind::Dir { tree } = &e.kind {
            stack.push((*tree, format!("{path}/"), 0));
        }
    }
}
