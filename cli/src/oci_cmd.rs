//! `cairn oci …`: OCI images in the store (import, byte-identical export, inspect), over
//! `cairn-oci`. Output shapes are in docs/cli.md.

use anyhow::Result;
use cairn_oci::{Inspection, Node};
use cairn_store::{Key, Progress, Store};
use serde_json::json;

use crate::args::OciCommand;
use crate::output::Out;

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn run(cmd: OciCommand, store: &Store, out: &Out, progress: &dyn Progress) -> Result<()> {
    match cmd {
        OciCommand::Import { src, name } => {
            let name = name.as_deref().map(Key::new).transpose()?;
            let done = cairn_oci::import(store, &src, name.as_ref())?;
            let rec = &done.record;
            if !done.dropped.is_empty() {
                tracing::warn!(
                    "{}: left out {} unreferenced file(s): {}",
                    src.display(),
                    done.dropped.len(),
                    done.dropped.join(", ")
                );
            }
            if out.json {
                return print_json(&json!({
                    "key": rec.key.as_str(),
                    "root": rec.root,
                    "source": done.source.name(),
                    "blobs": done.blobs,
                    "manifests": done.manifests,
                    "size": rec.size,
                    "files": rec.files,
                    "dropped": done.dropped,
                }));
            }
            tracing::info!(
                "{}: {} blobs, {} manifests, {} bytes",
                rec.key.as_str(),
                done.blobs,
                done.manifests,
                rec.size
            );
            println!("{}", rec.root.id());
        }
        OciCommand::Export {
            target,
            layout,
            archive,
        } => {
            if let Some(dir) = layout {
                let stats = cairn_oci::export_layout(store, &target, &dir, progress)?;
                if out.json {
                    return print_json(&json!({
                        "target": target,
                        "layout": dir.display().to_string(),
                        "files": stats.files,
                        "bytes": stats.bytes,
                    }));
                }
            } else if let Some(file) = archive {
                let entries = cairn_oci::export_archive(store, &target, &file)?;
                if out.json {
                    return print_json(&json!({
                        "target": target,
                        "archive": file.display().to_string(),
                        "entries": entries,
                    }));
                }
            }
        }
        OciCommand::Inspect { target } => {
            let ins = cairn_oci::inspect(store, &target)?;
            if out.json {
                return print_json(&ins);
            }
            print_text(&target, &ins);
        }
    }
    Ok(())
}

fn print_text(target: &str, ins: &Inspection) {
    println!(
        "{target}  {}  index.json {}",
        ins.root.id(),
        ins.media_type.as_deref().unwrap_or("(no mediaType)")
    );
    for (k, v) in &ins.annotations {
        println!("  @{k}={v}");
    }
    for n in &ins.manifests {
        print_node(n, 1);
    }
}

fn print_node(n: &Node, depth: usize) {
    let pad = "  ".repeat(depth);
    let role = serde_json::to_value(n.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut line = format!("{pad}{role:<8} {} {} {}", n.digest, n.size, n.media_type);
    if let Some(p) = &n.platform {
        line.push_str(&format!(" platform={p}"));
    }
    if let Some(a) = &n.artifact_type {
        line.push_str(&format!(" artifactType={a}"));
    }
    println!("{line}");
    for (k, v) in &n.annotations {
        println!("{pad}  @{k}={v}");
    }
    for c in &n.children {
        print_node(c, depth + 1);
    }
}
